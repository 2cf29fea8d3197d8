'use strict';
'require view';
'require form';
'require uci';

// Checks that match the daemon's (src/config/values.rs): the form refuses
// what `socksbalance check` would, before anything is saved.

var PROTOCOLS = [ 'socks5', 'http', 'mixed', 'redirect', 'tproxy' ];
var ALGORITHMS = [ 'roundrobin', 'random', 'least_connections', 'weighted',
	'lowest_latency', 'p2c', 'sticky_destination', 'learned' ];

function hostname(name) {
	return name.length <= 253 && name.split('.').every(function(label) {
		return /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label);
	});
}

function ipv4(text) {
	var m = text.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
	return m != null && m.slice(1).every(function(o) { return +o <= 255 && !(o.length > 1 && o[0] == '0'); });
}

function ipv6(text) {
	return /^[0-9A-Fa-f:.]+$/.test(text) && text.indexOf(':') >= 0 &&
		(text.match(/::/g) || []).length <= 1;
}

function port(text) {
	if (!/^\d+$/.test(text))
		return _('"%s" is not a port number').format(text);
	var n = +text;
	if (n == 0)
		return _('port 0 is not a valid port');
	if (n > 65535)
		return _('port %d is over 65535').format(n);
	return n;
}

// HOST:PORT or HOST:FIRST-LAST, IPv6 in brackets (a backend's address).
function backendAddress(text) {
	var host, ports, m;
	if (text.charAt(0) == '[') {
		m = text.match(/^\[([^\]]*)\]:(.*)$/);
		if (!m)
			return _('IPv6 addresses go in brackets, followed by :PORT, e.g. [::1]:1080');
		if (!ipv6(m[1]))
			return _('"%s" is not an IPv6 address').format(m[1]);
		ports = m[2];
	}
	else {
		var at = text.lastIndexOf(':');
		if (at < 0)
			return _('expected HOST:PORT or HOST:FIRST-LAST');
		host = text.substring(0, at);
		ports = text.substring(at + 1);
		if (host.indexOf(':') >= 0)
			return _('IPv6 addresses need brackets, e.g. [::1]:1080');
		if (host == '')
			return _('missing host');
		if (!ipv4(host) && !hostname(host))
			return _('"%s" is neither an IPv4 address nor a host name').format(host);
	}
	var range = ports.split('-');
	if (range.length > 2)
		return _('"%s" is not a port number').format(ports);
	var first = port(range[0]), last = range.length == 2 ? port(range[1]) : first;
	if (typeof(first) == 'string')
		return first;
	if (typeof(last) == 'string')
		return last;
	if (first > last)
		return _('port range %d-%d is reversed').format(first, last);
	if (last - first + 1 > 4096)
		return _('port range has %d ports, more than the limit of 4096').format(last - first + 1);
	return true;
}

// IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT (a listen address).
function listenAddress(text) {
	var m = text.match(/^\[([^\]]*)\]:(\d+)$/);
	if (m) {
		if (!ipv6(m[1]))
			return _('"%s" is not an IPv6 address').format(m[1]);
		return typeof(port(m[2])) == 'string' ? port(m[2]) : true;
	}
	m = text.match(/^([^:]*):(\d+)$/);
	if (!m || (m[1] != '' && m[1] != 'localhost' && !ipv4(m[1])))
		return _('expected IP:PORT, [IPv6]:PORT or :PORT, e.g. 192.168.1.1:1080');
	return typeof(port(m[2])) == 'string' ? port(m[2]) : true;
}

function validateListen(section_id, value) {
	if (value == null || value == '')
		return true;
	var parts = value.trim().split(/\s+/);
	if (parts.length > 2 || (parts.length == 2 && PROTOCOLS.indexOf(parts[1]) < 0))
		return _('an address, optionally followed by one of: %s').format(PROTOCOLS.join(', '));
	return listenAddress(parts[0]);
}

function validateBackend(section_id, value) {
	if (value == null || value == '')
		return true;
	return backendAddress(value);
}

function validateName(section_id, value) {
	if (value != null && /[\s'"]/.test(value))
		return _('a name without spaces or quotes');
	return true;
}

function validateBlock(section_id, value) {
	if (value == null || value == '')
		return true;
	var m = value.match(/^([^/]+)(\/(\d+))?$/);
	if (!m || !(ipv4(m[1]) || ipv6(m[1])))
		return _('an address block such as 192.168.0.0/16');
	if (m[3] != null && +m[3] > (ipv4(m[1]) ? 32 : 128))
		return _('prefix /%s is too long').format(m[3]);
	return true;
}

function validatePorts(section_id, value) {
	if (value == null || value == '')
		return true;
	var range = value.split('-');
	var first = port(range[0]), last = range.length == 2 ? port(range[1]) : first;
	if (range.length > 2 || typeof(first) == 'string' || typeof(last) == 'string')
		return _('a port or a range such as 8000-8100');
	return first <= last ? true : _('port range %d-%d is reversed').format(first, last);
}

// A grid of UCI sections of one type, added and removed in the page.
function grid(m, type, title, description, sortable) {
	var s = m.section(form.GridSection, type, title, description);
	s.addremove = true;
	s.anonymous = true;
	s.sortable = sortable;
	s.nodescriptions = true;
	return s;
}

// The grid's Enabled column: ticked by default, editable in the row.
function enabledFlag(s) {
	var o = s.option(form.Flag, 'enabled', _('Enabled'));
	o.default = '1';
	o.editable = true;
	o.rmempty = false;
	return o;
}

function algorithms(o) {
	ALGORITHMS.forEach(function(a) { o.value(a); });
}

return view.extend({
	load: function() {
		return uci.load('socksbalance');
	},

	render: function() {
		var m, s, o;

		m = new form.Map('socksbalance', _('socksbalance'),
			_('A SOCKS5 load balancer: clients use this router as their proxy, and their connections are spread over the backends below, with health checks and failover.'));

		s = m.section(form.NamedSection, 'main', 'socksbalance', _('Service'));
		s.addremove = false;
		s.tab('general', _('General'));
		s.tab('gateway', _('Gateway'));
		s.tab('advanced', _('Advanced'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'));
		o.rmempty = false;
		o.default = '1';

		o = s.taboption('general', form.ListValue, 'source', _('Configuration'),
			_('<em>These settings</em>: the backends, users, groups and rules on this page. <em>YAML file</em>: the file below, and every section on this page but this one is ignored.'));
		o.value('uci', _('These settings'));
		o.value('yaml', _('YAML file'));
		o.default = 'yaml';
		o.rmempty = false;

		o = s.taboption('general', form.Value, 'config', _('YAML file'));
		o.depends('source', 'yaml');
		o.placeholder = '/etc/socksbalance/config.yaml';

		o = s.taboption('general', form.ListValue, 'mode', _('Mode'),
			_('<em>socks5</em>: the router ends the client\'s SOCKS5 and speaks to the backend itself (needed for rules by name and client logins). <em>transparent</em>: the client\'s bytes go to the backend untouched.'));
		o.value('socks5', 'socks5');
		o.value('transparent', 'transparent');
		o.default = 'socks5';
		o.depends('source', 'uci');

		o = s.taboption('general', form.ListValue, 'algorithm', _('Balancing'));
		algorithms(o);
		o.default = 'roundrobin';
		o.depends('source', 'uci');

		o = s.taboption('general', form.DynamicList, 'listen', _('Listen on'),
			_('An address, and optionally a protocol: <code>192.168.1.1:1080</code>, <code>192.168.1.1:7890 mixed</code> (%s).').format(PROTOCOLS.join(', ')));
		o.validate = validateListen;
		o.depends('source', 'uci');

		o = s.taboption('general', form.ListValue, 'log_level', _('Log level'));
		[ 'error', 'warn', 'info', 'debug' ].forEach(function(l) { o.value(l); });
		o.default = 'info';
		o.depends('source', 'uci');

		o = s.taboption('gateway', form.Flag, 'gateway', _('Transparent gateway'),
			_('Every LAN device\'s TCP goes through the backends, with no setting on the device.'));
		o = s.taboption('gateway', form.ListValue, 'gateway_mode', _('Gateway mode'));
		o.value('redirect', 'redirect');
		o.value('tproxy', _('tproxy (TCP and UDP; needs kmod-nft-tproxy)'));
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.Value, 'gateway_port', _('Gateway port'));
		o.datatype = 'port';
		o.placeholder = '7893';
		o.depends({ gateway: '1', source: 'uci' });
		o = s.taboption('gateway', form.DynamicList, 'lan_interface', _('LAN interfaces'));
		o.placeholder = 'br-lan';
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.Flag, 'udp', _('UDP too'));
		o.depends('gateway_mode', 'tproxy');
		o = s.taboption('gateway', form.DynamicList, 'bypass', _('Never take destinations'),
			_('Besides private, link-local and multicast ranges and the router\'s own addresses, which are always bypassed.'));
		o.validate = validateBlock;
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.DynamicList, 'only_source', _('Take only these devices'),
			_('IP, address block or MAC; empty: every LAN device.'));
		o.datatype = 'or(cidr,ipaddr,macaddr)';
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.DynamicList, 'skip_source', _('Never take these devices'));
		o.datatype = 'or(cidr,ipaddr,macaddr)';
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.Flag, 'router_traffic', _('The router\'s own traffic too'));
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.Flag, 'dnsmasq', _('dnsmasq forwards to the DNS listener'),
			_('So that the router\'s own lookups do not leak either.'));
		o = s.taboption('gateway', form.Flag, 'dns_hijack', _('Take LAN DNS'),
			_('LAN DNS queries go to the DNS listener, which forwards them through the backends.'));
		o.depends('gateway', '1');
		o = s.taboption('gateway', form.Value, 'dns_listen', _('DNS listener'));
		o.validate = function(id, v) { return v ? listenAddress(v) : true; };
		o.placeholder = '127.0.0.1:5353';
		o.depends('source', 'uci');
		o = s.taboption('gateway', form.DynamicList, 'dns_upstream', _('DNS upstreams'));
		o.datatype = 'or(ipaddr,ipaddrport(1))';
		o.depends('source', 'uci');

		o = s.taboption('advanced', form.DynamicList, 'allow', _('Clients allowed'),
			_('Address blocks; empty: loopback and the private ranges.'));
		o.validate = validateBlock;
		o.depends('source', 'uci');
		o = s.taboption('advanced', form.Value, 'custom_yaml', _('Custom YAML'),
			_('A YAML file appended as it is, for what this page does not cover (health:, limits:, interfaces: auto). Its keys must not be ones this page writes.'));
		o.placeholder = '/etc/socksbalance/custom.yaml';
		o.depends('source', 'uci');

		s = grid(m, 'backend', _('Backends'),
			_('Upstream SOCKS5 proxies, or this router itself (direct). An address with a port range (<code>127.0.0.1:9050-9059</code>) is one backend per port.'), true);
		enabledFlag(s);
		o = s.option(form.Value, 'name', _('Name'));
		o.validate = validateName;
		o = s.option(form.Value, 'address', _('Address'));
		o.validate = validateBackend;
		o.placeholder = '127.0.0.1:9050';
		o.depends('direct', '0');
		o = s.option(form.Flag, 'direct', _('Direct'));
		o.rmempty = false;
		o.default = '0';
		o = s.option(form.Value, 'username', _('Username'));
		o.modalonly = true;
		o.depends('direct', '0');
		o = s.option(form.Value, 'password', _('Password'));
		o.password = true;
		o.modalonly = true;
		o.depends('direct', '0');
		o = s.option(form.Value, 'weight', _('Weight'));
		o.datatype = 'range(1,1000)';
		o.placeholder = '1';
		o.textvalue = function(section_id) { return this.cfgvalue(section_id) || '1'; };
		o = s.option(form.Value, 'via', _('Via uplink'));
		o.modalonly = true;
		o = s.option(form.Value, 'interface', _('Uplink: interface'),
			_('An uplink instead of a proxy: connect to destinations through this interface (multipath).'));
		o.datatype = 'maxlength(15)';
		o.modalonly = true;
		o.depends({ direct: '0', address: '' });
		o = s.option(form.Value, 'bind', _('Uplink: source address'));
		o.datatype = 'ipaddr';
		o.modalonly = true;
		o.depends({ direct: '0', address: '' });
		o = s.option(form.Flag, 'udp', _('Use for UDP'));
		o.default = '1';
		o.modalonly = true;

		s = grid(m, 'user', _('Client logins'),
			_('With any, clients must log in (SOCKS5 username/password; mode socks5).'), false);
		o = s.option(form.Value, 'username', _('Username'));
		o.rmempty = false;
		o.validate = function(id, v) { return (v && v.length <= 255 && v.indexOf(':') < 0) ? true : _('1 to 255 characters, no colon'); };
		o = s.option(form.Value, 'password', _('Password'));
		o.password = true;
		o.rmempty = false;

		s = m.section(form.TypedSection, 'web', _('Dashboard'),
			_('Without one, the dashboard listens on 127.0.0.1:8080, where the status page reads it.'));
		s.addremove = true;
		s.anonymous = true;
		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;
		o = s.option(form.Value, 'listen', _('Listen on'),
			_('Off loopback, a token is needed.'));
		o.validate = function(id, v) { return v ? listenAddress(v) : true; };
		o.placeholder = '127.0.0.1:8080';
		o = s.option(form.Value, 'token', _('Token'));
		o.password = true;
		o.validate = function(id, v) { return (!v || v.length >= 8) ? true : _('at least 8 characters'); };

		s = grid(m, 'group', _('Groups'),
			_('Backends balanced together. <em>Tiers</em>: groups or backends, one tier per entry (names separated by spaces); the first tier with a backend up takes the connection.'), false);
		o = s.option(form.Value, 'name', _('Name'));
		o.rmempty = false;
		o.validate = validateName;
		o = s.option(form.DynamicList, 'backend', _('Backends'));
		o = s.option(form.DynamicList, 'tier', _('Tiers'));
		o = s.option(form.ListValue, 'algorithm', _('Balancing'));
		o.value('', _('as the service'));
		algorithms(o);

		s = grid(m, 'rule', _('Rules'),
			_('In order; the first that matches decides. A name matches only rules by name; an IP address only rules by address.'), true);
		enabledFlag(s);
		o = s.option(form.DynamicList, 'domain_suffix', _('Domain suffixes'));
		o = s.option(form.DynamicList, 'domain', _('Domains'));
		o.modalonly = true;
		o = s.option(form.DynamicList, 'domain_keyword', _('Domain keywords'));
		o.modalonly = true;
		o = s.option(form.DynamicList, 'cidr', _('Destination blocks'));
		o.validate = validateBlock;
		o = s.option(form.DynamicList, 'port', _('Ports'));
		o.validate = validatePorts;
		o = s.option(form.DynamicList, 'source', _('Clients'));
		o.validate = validateBlock;
		o.modalonly = true;
		o = s.option(form.ListValue, 'action', _('Action'));
		o.value('', _('to a group'));
		o.value('direct', _('direct'));
		o.value('block', _('block'));
		o = s.option(form.Value, 'group', _('Group'));
		o.depends('action', '');

		return m.render();
	}
});
