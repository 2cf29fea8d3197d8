'use strict';
'require view';
'require rpc';
'require poll';
'require uci';

// The daemon's state from its /api/stats, through rpcd (the plugin
// /usr/libexec/rpcd/luci.socksbalance runs `socksbalance status --json`
// on the router): the browser never talks to the daemon itself.

var callStatus = rpc.declare({
	object: 'luci.socksbalance',
	method: 'status',
	expect: { '': {} }
});

function bytes(n) {
	var units = [ 'B', 'KiB', 'MiB', 'GiB', 'TiB' ], i = 0;
	while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
	return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function since(iso) {
	if (!iso)
		return '';
	var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
	if (s < 60) return _('%ds').format(s);
	if (s < 3600) return _('%dm%02ds').format(Math.floor(s / 60), s % 60);
	if (s < 86400) return _('%dh%02dm').format(Math.floor(s / 3600), Math.floor(s % 3600 / 60));
	return _('%dd%dh').format(Math.floor(s / 86400), Math.floor(s % 86400 / 3600));
}

var STATE_COLORS = { up: '#2e7d32', down: '#c62828' };

function badge(state) {
	return E('span', {
		'class': 'sb-state',
		'data-state': state,
		'style': 'display:inline-block;padding:0 .5em;border-radius:.8em;color:#fff;background:' + (STATE_COLORS[state] || '#757575')
	}, [ state ]);
}

function summary(st) {
	var parts = [
		_('%d of %d backends up').format(st.healthy_backends, st.total_backends),
		_('%d open tunnels').format(st.open_tunnels),
		_('%s mode').format(st.mode),
		st.algorithm,
		_('version %s').format(st.version)
	];
	return E('p', { 'id': 'sb-summary' }, parts.join(' · '));
}

function outage(st) {
	if (!st.outage)
		return E('div', { 'id': 'sb-outage' });
	return E('div', { 'id': 'sb-outage', 'class': 'alert-message warning' }, [
		E('strong', _('Uplink outage: ')), _('every backend is failing at once, so the trouble is most likely the router\'s own connection; backends are not taken out for it.')
	]);
}

function table(st) {
	var rows = (st.backends || []).map(function(b) {
		var why = b.state == 'up' ? '' : [ b.last_error || b.state, b.down_since ? _('down %s').format(since(b.down_since)) : '' ].filter(String).join(', ');
		// data-title: the column's name, which LuCI's themes show beside
		// each cell when a narrow screen stacks the table's rows.
		return E('tr', { 'class': 'tr', 'data-backend': b.name }, [
			E('td', { 'class': 'td', 'data-title': _('Name') }, b.name),
			E('td', { 'class': 'td', 'data-title': _('Address') }, b.address),
			E('td', { 'class': 'td', 'data-title': _('State') }, badge(b.state)),
			E('td', { 'class': 'td sb-why', 'data-title': _('Why') }, why),
			E('td', { 'class': 'td', 'data-title': _('Latency') }, b.state == 'up' && b.latency_ms != null ? _('%d ms').format(b.latency_ms) : '–'),
			E('td', { 'class': 'td', 'data-title': _('Active') }, String(b.active_connections)),
			E('td', { 'class': 'td', 'data-title': _('Traffic') }, '↑ ' + bytes(b.bytes_up) + ' ↓ ' + bytes(b.bytes_down))
		]);
	});
	return E('table', { 'class': 'table', 'id': 'sb-backends' }, [
		E('tr', { 'class': 'tr table-titles' }, [
			E('th', { 'class': 'th' }, _('Name')),
			E('th', { 'class': 'th' }, _('Address')),
			E('th', { 'class': 'th' }, _('State')),
			E('th', { 'class': 'th' }, _('Why')),
			E('th', { 'class': 'th' }, _('Latency')),
			E('th', { 'class': 'th' }, _('Active')),
			E('th', { 'class': 'th' }, _('Traffic'))
		])
	].concat(rows));
}

// The dashboard's address as the browser can reach it: a wildcard listen
// address is the router's own name; loopback is reachable only over SSH.
function dashboardLink() {
	var listen = uci.get_first('socksbalance', 'web', 'listen') || '127.0.0.1:8080';
	var m = listen.match(/^(.*):(\d+)$/);
	if (!m)
		return E('p');
	var host = m[1];
	if (host == '' || host == '0.0.0.0' || host == '[::]')
		host = window.location.hostname;
	if (/^(127\.|localhost|\[::1\])/.test(host))
		return E('p', { 'class': 'cbi-section-descr' },
			_('The full dashboard listens on %s, on the router only: ssh -L 8080:%s root@%s, then open http://127.0.0.1:8080/.').format(listen, listen, window.location.hostname));
	return E('p', {}, E('a', { 'href': 'http://' + host + ':' + m[2] + '/', 'target': '_blank' }, _('Open the full dashboard')));
}

function body(st) {
	if (st.error)
		return E('div', { 'id': 'sb-body' }, [
			E('div', { 'class': 'alert-message', 'id': 'sb-error' }, [ _('socksbalance is not answering: %s').format(st.error) ])
		]);
	return E('div', { 'id': 'sb-body' }, [ outage(st), summary(st), table(st) ]);
}

return view.extend({
	load: function() {
		return Promise.all([ callStatus(), uci.load('socksbalance') ]);
	},

	render: function(data) {
		var view = E('div', { 'class': 'cbi-map' }, [
			E('h2', _('socksbalance')),
			E('div', { 'class': 'cbi-section' }, [ body(data[0]) ]),
			dashboardLink()
		]);
		poll.add(function() {
			return callStatus().then(function(st) {
				var old = document.getElementById('sb-body');
				if (old)
					old.parentNode.replaceChild(body(st), old);
			});
		}, 5);
		return view;
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
