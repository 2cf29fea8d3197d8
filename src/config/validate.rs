//! Stage 2: the raw structs checked and turned into a [`Config`]:
//! defaults filled in, port ranges expanded, the rules that span several
//! keys checked, and the warnings collected.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::raw::{RawAuth, RawBackend, RawConfig};
use super::values::RawThreads;
use super::*;

/// The longest interface name Linux accepts (IFNAMSIZ minus the NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// The most entries a weighted schedule may have (4 bytes each): the
/// weights, divided by their common divisor, add up to at most this.
pub const MAX_SCHEDULE: usize = 65_536;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Checks that a weighted schedule for `weights` stays within
/// [`MAX_SCHEDULE`]; returns the weights' common divisor.
pub fn check_weights(weights: &[u32]) -> Result<u32, String> {
    let divisor = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let total: u64 = weights.iter().map(|&w| u64::from(w / divisor)).sum();
    if total > MAX_SCHEDULE as u64 {
        return Err(format!(
            "the weights add up to {total} (after dividing by their common divisor {divisor}), \
             over the limit of {MAX_SCHEDULE}; use smaller weights"
        ));
    }
    Ok(divisor)
}

fn non_zero(key: &str, value: Option<u32>, default: u32) -> Result<NonZeroU32, ConfigError> {
    NonZeroU32::new(value.unwrap_or(default)).ok_or_else(|| ConfigError::at(key, "must be at least 1"))
}

/// RFC 1929 fields are 1..=255 bytes.
fn credential_field(key: &str, value: &str) -> Result<(), ConfigError> {
    match value.len() {
        0 => Err(ConfigError::at(key, "must not be empty")),
        1..=255 => Ok(()),
        n => Err(ConfigError::at(key, format!("is {n} bytes; SOCKS5 allows at most 255"))),
    }
}

pub(super) fn validate(raw: RawConfig, base: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let mode = raw.mode.unwrap_or(defaults::MODE);

    let (listen, protocols): (Vec<SocketAddr>, Vec<Protocol>) = match raw.listen {
        Some(OneOrMany(entries)) if entries.is_empty() => {
            return Err(ConfigError::at("listen", "the list is empty"));
        }
        Some(OneOrMany(entries)) => entries.into_iter().map(|e| (e.0, e.1)).unzip(),
        None => (vec![defaults::LISTEN], vec![Protocol::Socks5]),
    };
    for (i, addr) in listen.iter().enumerate() {
        if listen[..i].contains(addr) {
            return Err(ConfigError::at(format!("listen[{i}]"), format!("{addr} is listed twice")));
        }
        if cfg!(not(target_os = "linux")) && protocols[i].is_gateway() {
            return Err(ConfigError::at(
                format!("listen[{i}].protocol"),
                format!("{} needs Linux's netfilter; use socks5, http or mixed here", protocols[i]),
            ));
        }
    }
    let gateway = protocols.iter().any(|p| p.is_gateway());
    let dns = match raw.dns {
        None => None,
        Some(d) => Some(dns(d)?),
    };

    let mut warnings = Vec::new();
    let raw_backends = raw.backends.unwrap_or_default();
    // Entries with a weight other than 1 (only `weighted` reads weights).
    let weighted: Vec<usize> = raw_backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight.is_some_and(|w| w != 1))
        .map(|(i, _)| i)
        .collect();
    let (backends, auto_uplinks) = expand_backends(raw_backends, mode, &mut warnings)?;

    let h = raw.health.unwrap_or_default();
    let health = Health {
        test_url: h.test_url,
        check_interval: h.check_interval.map_or(defaults::CHECK_INTERVAL, |d| d.0),
        connect_timeout: h.connect_timeout.map_or(defaults::CONNECT_TIMEOUT, |d| d.0),
        request_timeout: h.request_timeout.map_or(defaults::REQUEST_TIMEOUT, |d| d.0),
        first_byte_timeout: match h.first_byte_timeout.as_deref().map(str::trim) {
            Some("off") => Duration::ZERO,
            Some(text) => {
                text.parse::<GoDuration>()
                    .map_err(|e| ConfigError::at("health.first_byte_timeout", format!("{e}, or off")))?
                    .0
            }
            None => h.request_timeout.map_or(defaults::REQUEST_TIMEOUT, |d| d.0),
        },
        failure_threshold: non_zero(
            "health.failure_threshold",
            h.failure_threshold,
            defaults::FAILURE_THRESHOLD,
        )?,
        circuit_threshold: non_zero(
            "health.circuit_threshold",
            h.circuit_threshold,
            defaults::CIRCUIT_THRESHOLD,
        )?,
        recovery_interval: h.recovery_interval.map_or(defaults::RECOVERY_INTERVAL, |d| d.0),
        max_recovery_interval: h.max_recovery_interval.map_or(defaults::MAX_RECOVERY_INTERVAL, |d| d.0),
        metrics_window_size: non_zero(
            "health.metrics_window_size",
            h.metrics_window_size,
            defaults::METRICS_WINDOW_SIZE,
        )?
        .get() as usize,
        passive_monitoring: h.passive_monitoring.unwrap_or(defaults::PASSIVE_MONITORING),
        uplink_probe: match h.uplink_probe {
            None => None,
            Some(a) if a.first_port != a.last_port => {
                return Err(ConfigError::at("health.uplink_probe", "takes one port, not a range"));
            }
            Some(a) => Some((a.host, a.first_port)),
        },
        expected_status: routing::status_codes("health.expected_status", h.expected_status)?,
    };
    if !health.expected_status.is_empty() && health.test_url.is_none() {
        warnings.push(ConfigError::at("health.expected_status", "has no effect without health.test_url"));
    }
    if health.metrics_window_size > MAX_METRICS_WINDOW {
        return Err(ConfigError::at(
            "health.metrics_window_size",
            format!("{} is over the limit of {MAX_METRICS_WINDOW}", health.metrics_window_size),
        ));
    }
    if health.recovery_interval > health.max_recovery_interval {
        return Err(ConfigError::at(
            "health.recovery_interval",
            format!(
                "{} is longer than health.max_recovery_interval ({})",
                format_duration(health.recovery_interval),
                format_duration(health.max_recovery_interval)
            ),
        ));
    }

    let b = raw.balancer.unwrap_or_default();
    let balancer = Balancer {
        algorithm: b.algorithm.unwrap_or(defaults::ALGORITHM),
        max_latency: b.max_latency.map(|d| d.0),
        sticky_session_ttl: b.sticky_session_ttl.map(|d| d.0),
        max_active_backends: b.max_active_backends.and_then(NonZeroU32::new),
        max_attempts: non_zero("balancer.max_attempts", b.max_attempts, defaults::MAX_ATTEMPTS)?,
        sticky_key: b.sticky_key.unwrap_or(defaults::STICKY_KEY),
        latency_decay: b.latency_decay.map_or(defaults::LATENCY_DECAY, |d| d.0),
    };
    if balancer.latency_decay.is_zero() {
        return Err(ConfigError::at("balancer.latency_decay", "must be longer than 0s"));
    }
    if balancer.algorithm == Algorithm::Weighted {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight.get()).collect();
        check_weights(&weights).map_err(|e| ConfigError::at("backends", e))?;
    }
    if balancer.max_attempts.get() > 16 {
        return Err(ConfigError::at("balancer.max_attempts", "must be at most 16"));
    }
    let weighted_group = raw.groups.iter().flatten().any(|g| g.algorithm == Some(Algorithm::Weighted));
    if balancer.algorithm != Algorithm::Weighted && !weighted_group {
        for i in weighted {
            warnings.push(ConfigError::at(
                format!("backends[{i}].weight"),
                format!(
                    "has no effect with `algorithm: {}`; only `weighted` reads weights",
                    balancer.algorithm
                ),
            ));
        }
    }
    if b.sticky_key.is_some() && balancer.sticky_session_ttl.is_none() {
        warnings.push(ConfigError::at(
            "balancer.sticky_key",
            "has no effect without balancer.sticky_session_ttl, which turns stickiness on",
        ));
    }

    let w = raw.web.unwrap_or_default();
    let basic = match (w.username, w.password) {
        (None, None) => None,
        (Some(username), Some(password)) => {
            if username.is_empty() || username.contains(':') {
                return Err(ConfigError::at("web.username", "must be non-empty and contain no ':'"));
            }
            if password.expose().is_empty() {
                return Err(ConfigError::at("web.password", "must not be empty"));
            }
            Some(Credentials { username, password })
        }
        (Some(_), None) => return Err(ConfigError::at("web.password", "missing (web.username is set)")),
        (None, Some(_)) => return Err(ConfigError::at("web.username", "missing (web.password is set)")),
    };
    if w.token.as_ref().is_some_and(|t| t.expose().len() < 8) {
        return Err(ConfigError::at("web.token", "must be at least 8 characters"));
    }
    let web = Web {
        enabled: w.enabled.unwrap_or(defaults::WEB_ENABLED),
        listen: w.listen.map_or(defaults::WEB_LISTEN, |a| a.0),
        refresh_interval: non_zero("web.refresh_interval", w.refresh_interval, defaults::REFRESH_INTERVAL)?,
        token: w.token,
        basic,
    };
    if web.enabled && !web.listen.ip().is_loopback() && web.token.is_none() && web.basic.is_none() {
        return Err(ConfigError::at(
            "web.listen",
            format!(
                "{} is reachable from other hosts; set web.token, or web.username and web.password, \
                 or listen on 127.0.0.1",
                web.listen
            ),
        ));
    }

    let l = raw.log.unwrap_or_default();
    let log = Log {
        level: l.level.unwrap_or(defaults::LOG_LEVEL),
        format: l.format.unwrap_or(defaults::LOG_FORMAT),
    };

    let auth = match raw.auth {
        None => None,
        Some(RawAuth { users, .. }) => {
            let users = users.unwrap_or_default();
            if users.is_empty() {
                return Err(ConfigError::at(
                    "auth.users",
                    "needs at least one user (remove `auth:` to allow anyone)",
                ));
            }
            let mut out: Vec<Credentials> = Vec::with_capacity(users.len());
            for (i, u) in users.into_iter().enumerate() {
                let missing = |field: &str| {
                    ConfigError::at(format!("auth.users[{i}]"), format!("missing field `{field}`"))
                };
                let (username, password) = (
                    u.username.ok_or_else(|| missing("username"))?,
                    u.password.ok_or_else(|| missing("password"))?,
                );
                let u = Credentials { username, password };
                credential_field(&format!("auth.users[{i}].username"), &u.username)?;
                credential_field(&format!("auth.users[{i}].password"), u.password.expose())?;
                if out.iter().any(|c| c.username == u.username) {
                    return Err(ConfigError::at(
                        format!("auth.users[{i}].username"),
                        format!("{:?} is listed twice", u.username),
                    ));
                }
                out.push(u);
            }
            if mode == Mode::Transparent {
                return Err(ConfigError::at(
                    "auth",
                    "client authentication needs `mode: socks5`; in transparent mode the client's \
                     greeting goes to the backend unchanged, so the backend authenticates",
                ));
            }
            Some(out)
        }
    };

    let lim = raw.limits.unwrap_or_default();
    let limits = Limits {
        idle_timeout: lim.idle_timeout.map_or(defaults::IDLE_TIMEOUT, |d| d.0),
        handshake_timeout: lim.handshake_timeout.map_or(defaults::HANDSHAKE_TIMEOUT, |d| d.0),
        max_connections: non_zero("limits.max_connections", lim.max_connections, defaults::MAX_CONNECTIONS)?,
        max_connections_per_client: match lim.max_connections_per_client {
            None => None,
            Some(n) => Some(non_zero("limits.max_connections_per_client", Some(n), 0)?),
        },
        udp_idle_timeout: lim.udp_idle_timeout.map_or(defaults::UDP_IDLE_TIMEOUT, |d| d.0),
        max_udp_associations: non_zero(
            "limits.max_udp_associations",
            lim.max_udp_associations,
            defaults::MAX_UDP_ASSOCIATIONS,
        )?,
    };

    let allow = match raw.allow {
        None => DEFAULT_ALLOW.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(ConfigError::at(
                "allow",
                "an empty list would refuse every client; write 0.0.0.0/0 and ::/0 to allow all",
            ));
        }
        Some(list) => list,
    };
    let threads = match raw.threads {
        None => None,
        Some(RawThreads::Auto) => Some(Threads::Auto),
        Some(RawThreads::Count(n @ 1..=MAX_THREADS)) => NonZeroU32::new(n).map(Threads::Count),
        Some(RawThreads::Count(_)) => {
            return Err(ConfigError::at("threads", format!("must be 1 to {MAX_THREADS}, or auto")))
        }
    };
    if auth.is_none() {
        // A gateway listener is no open proxy: it serves only connections
        // the firewall redirected, to where their client dialled.
        for (i, addr) in listen.iter().enumerate().filter(|(i, _)| !protocols[*i].is_gateway()) {
            let open = addr.ip().is_unspecified() || !DEFAULT_ALLOW.iter().any(|c| c.contains(addr.ip()));
            if open {
                let what = if addr.ip().is_unspecified() {
                    "every network this host is on"
                } else {
                    "the internet (it is a public address)"
                };
                let guard = match mode {
                    Mode::Socks5 => "set auth.users, or listen on a LAN or loopback address",
                    Mode::Transparent => {
                        "listen on a LAN or loopback address, or let the backends authenticate"
                    }
                };
                warnings.push(ConfigError::at(
                    format!("listen[{i}]"),
                    format!(
                        "{addr} takes clients from {what} and no `auth` is set: only `allow` keeps others \
                         out ({guard})"
                    ),
                ));
            }
        }
    }
    let mut deny_destinations = raw.deny_destinations.unwrap_or_default();
    // Never connect to ourselves: that loop would eat every fd. Port 0 is
    // chosen at bind time; the daemon adds those rules once it knows.
    let own = listen
        .iter()
        .copied()
        .chain(web.enabled.then_some(web.listen))
        .chain(dns.as_ref().map(|d| d.listen))
        .filter(|a| a.port() != 0);
    deny_destinations.extend(own_address_rules(own));

    let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
    let groups =
        routing::groups(raw.groups.unwrap_or_default(), &names, auto_uplinks.is_some(), balancer.algorithm)?;
    let rules = routing::rules(raw.rules.unwrap_or_default(), &groups, &listen, &protocols, base)?;
    let mut backends = backends;
    if rules.iter().any(|r| r.action == routing::Action::Direct)
        && !backends.iter().any(|b| b.target == Target::Direct)
    {
        let name = if names.iter().any(|n| n == "direct") { "direct (rules)" } else { "direct" };
        backends.push(BackendConfig {
            name: name.to_owned(),
            target: Target::Direct,
            credentials: None,
            weight: NonZeroU32::MIN,
            via: None,
            hidden: true,
            discovered: false,
            udp: true,
        });
    }
    if mode == Mode::Transparent
        && protocols.iter().any(|p| matches!(p, Protocol::Socks5 | Protocol::Mixed))
        && rules.iter().any(routing::Rule::needs_destination)
    {
        warnings.push(ConfigError::at(
            "rules",
            "in transparent mode a SOCKS5 client's backend is picked before it names its destination,              so rules on domain, cidr or port apply only to its retries (HTTP and gateway listeners              are routed in full); use `mode: socks5` to route SOCKS5 clients by destination",
        ));
    }
    if let Some(i) = groups.iter().position(|g| g.algorithm == Algorithm::Weighted) {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight.get()).collect();
        check_weights(&weights).map_err(|e| ConfigError::at(format!("groups[{i}].algorithm"), e))?;
    }

    Ok(Config {
        listen,
        protocols,
        mode,
        backends,
        health,
        balancer,
        web,
        log,
        auth,
        limits,
        shutdown_timeout: raw.shutdown_timeout.map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
        threads,
        allow,
        deny_destinations,
        auto_uplinks,
        sniff: raw.sniff.unwrap_or(defaults::SNIFF),
        routing_mark: match raw.routing_mark {
            Some(mark) => mark,
            None if gateway => defaults::ROUTING_MARK,
            None => 0,
        },
        dns,
        groups,
        rules,
        warnings,
    })
}

/// Most answers `dns.cache_size` may ask to keep.
const MAX_DNS_CACHE: u32 = 10_000;

fn dns(d: super::raw::RawDns) -> Result<Dns, ConfigError> {
    let listen = d.listen.ok_or_else(|| ConfigError::at("dns.listen", "is required, e.g. 127.0.0.1:5353"))?.0;
    let upstreams = d.upstreams.unwrap_or_default();
    if upstreams.is_empty() {
        return Err(ConfigError::at("dns.upstreams", "needs at least one resolver, e.g. [\"1.1.1.1:53\"]"));
    }
    let upstreams = upstreams
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<SocketAddr>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    ConfigError::at(
                        format!("dns.upstreams[{i}]"),
                        format!("{text:?} is not an IP address with an optional port (a name would need a resolver)"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cache_size = d.cache_size.unwrap_or(defaults::DNS_CACHE_SIZE as u32);
    if cache_size > MAX_DNS_CACHE {
        return Err(ConfigError::at("dns.cache_size", format!("must be at most {MAX_DNS_CACHE}")));
    }
    Ok(Dns { listen, upstreams, cache_size: cache_size as usize })
}

fn expand_backends(
    raw: Vec<RawBackend>,
    mode: Mode,
    warnings: &mut Vec<ConfigError>,
) -> Result<(Vec<BackendConfig>, Option<AutoUplinks>), ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::at("backends", "at least one backend is required"));
    }
    let mut out = Vec::new();
    let mut auto = None;
    // `via` is checked once every uplink is known: (entry, name).
    let mut vias: Vec<(usize, String)> = Vec::new();
    // The entry each backend came from, to name it in a warning.
    let mut entry_of: Vec<usize> = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        // One entry may make several backends (a port range) or none
        // (`interfaces: auto`); each backend made here is entry i's.
        'entry: {
            let key = |field: &str| format!("backends[{i}].{field}");
            let weight = non_zero(&key("weight"), b.weight, defaults::WEIGHT)?;
            let udp = b.udp.unwrap_or(defaults::BACKEND_UDP);
            if weight.get() > MAX_WEIGHT {
                return Err(ConfigError::at(
                    key("weight"),
                    format!("{weight} is over the limit of {MAX_WEIGHT}"),
                ));
            }
            let credentials = match (b.username, b.password) {
                (None, None) => None,
                (Some(username), Some(password)) => {
                    credential_field(&key("username"), &username)?;
                    credential_field(&key("password"), password.expose())?;
                    Some(Credentials { username, password })
                }
                (Some(_), None) => return Err(ConfigError::at(key("password"), "missing (username is set)")),
                (None, Some(_)) => return Err(ConfigError::at(key("username"), "missing (password is set)")),
            };
            if credentials.is_some() && mode == Mode::Transparent {
                return Err(ConfigError::at(
                    key("username"),
                    "backend credentials need `mode: socks5`; in transparent mode the client's own \
                 SOCKS5 handshake reaches the backend unchanged",
                ));
            }
            // The keys that make this entry something other than a proxy; each
            // such entry takes none of the proxy's keys.
            let local = if b.interfaces.is_some() {
                Some("interfaces")
            } else if b.direct == Some(true) {
                Some("direct")
            } else if b.interface.is_some() || b.bind.is_some() {
                Some(if b.interface.is_some() { "interface" } else { "bind" })
            } else {
                None
            };
            if let Some(kind) = local {
                let what = match kind {
                    "interfaces" => "an `interfaces: auto` entry",
                    "direct" => "a `direct: true` backend",
                    _ => "an uplink (interface/bind)",
                };
                let conflict = [
                    ("address", b.address.is_some()),
                    ("username", credentials.is_some()),
                    ("via", b.via.is_some()),
                    ("direct", kind != "direct" && b.direct.is_some()),
                    ("interface", kind != "interface" && b.interface.is_some()),
                    ("bind", kind != "interface" && kind != "bind" && b.bind.is_some()),
                    ("name", kind == "interfaces" && b.name.is_some()),
                ];
                if let Some((field, _)) = conflict.iter().find(|(_, set)| *set) {
                    let hint = match *field {
                        "via" => "; `via` pins a SOCKS backend (one with an address) to an uplink",
                        "name" => "; discovered uplinks are named after their interface",
                        _ => "",
                    };
                    return Err(ConfigError::at(key(field), format!("{what} takes no {field}{hint}")));
                }
            }
            match local {
                Some("interfaces") => {
                    if auto.is_some() {
                        return Err(ConfigError::at(key("interfaces"), "`interfaces: auto` is listed twice"));
                    }
                    if !cfg!(any(target_os = "linux", windows)) {
                        return Err(ConfigError::at(
                            key("interfaces"),
                            "`interfaces: auto` needs Linux or Windows (it reads the interfaces from the \
                         system); list each uplink with `interface:` or `bind:` instead",
                        ));
                    }
                    auto = Some(AutoUplinks { position: out.len(), weight });
                    break 'entry;
                }
                Some("direct") => {
                    let name = b.name.unwrap_or_else(|| "direct".to_owned());
                    out.push(BackendConfig {
                        name,
                        target: Target::Direct,
                        credentials,
                        weight,
                        via: None,
                        hidden: false,
                        discovered: false,
                        udp,
                    });
                    break 'entry;
                }
                Some(_) => {
                    if let Some(dev) = &b.interface {
                        interface_name(&key("interface"), dev)?;
                    }
                    let uplink = Uplink { interface: b.interface, bind: b.bind };
                    let name = match (b.name, &uplink.interface, uplink.bind) {
                        (Some(name), _, _) => name,
                        (None, Some(dev), _) => dev.clone(),
                        (None, None, Some(ip)) => ip.to_string(),
                        (None, None, None) => unreachable!("an uplink has an interface or a bind address"),
                    };
                    out.push(BackendConfig {
                        name,
                        target: Target::Uplink(uplink),
                        credentials,
                        weight,
                        via: None,
                        hidden: false,
                        discovered: false,
                        udp,
                    });
                    break 'entry;
                }
                None => {}
            }
            let addr = b.address.ok_or_else(|| {
                ConfigError::at(key("address"), "missing (or set `direct: true`, `interface:` or `bind:`)")
            })?;
            if let Some(via) = &b.via {
                vias.push((i, via.clone()));
            }
            let is_range = addr.first_port != addr.last_port;
            for (n, port) in (addr.first_port..=addr.last_port).enumerate() {
                let target = Target::Proxy { host: addr.host.clone(), port };
                let name = match &b.name {
                    Some(name) if is_range => format!("{name}#{}", n + 1),
                    Some(name) => name.clone(),
                    None => target.to_string(),
                };
                out.push(BackendConfig {
                    name,
                    target,
                    credentials: credentials.clone(),
                    weight,
                    via: b.via.clone(),
                    hidden: false,
                    discovered: false,
                    udp,
                });
            }
            if out.len() > MAX_BACKENDS {
                return Err(ConfigError::at(
                    "backends",
                    format!("more than {MAX_BACKENDS} backends after expansion"),
                ));
            }
        }
        entry_of.resize(out.len(), i);
    }
    let mut seen: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(out.len());
    for (b, &i) in out.iter().zip(&entry_of) {
        match seen.get(b.name.as_str()) {
            Some(&first) => warnings.push(ConfigError::at(
                format!("backends[{i}].name"),
                format!(
                    "{:?} is also the name of backends[{first}]; the dashboard, the API and `via` \
                     tell backends apart by name, so give each its own",
                    b.name
                ),
            )),
            None => {
                seen.insert(&b.name, i);
            }
        }
    }
    let uplinks: Vec<&str> =
        out.iter().filter(|b| matches!(b.target, Target::Uplink(_))).map(|b| b.name.as_str()).collect();
    for (i, via) in vias {
        // With `interfaces: auto`, an uplink may appear later, named after
        // its interface; until then the backend is simply not picked.
        if auto.is_none() && !uplinks.contains(&via.as_str()) {
            let known = if uplinks.is_empty() { "none is configured".to_owned() } else { uplinks.join(", ") };
            return Err(ConfigError::at(
                format!("backends[{i}].via"),
                format!("no uplink is named {via:?} (uplinks: {known})"),
            ));
        }
    }
    Ok((out, auto))
}

/// Interface names as Linux accepts them: 1 to 15 bytes, no `/`, no
/// whitespace (Windows names are checked when used).
fn interface_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME && cfg!(not(windows)) {
        return Err(ConfigError::at(
            key,
            format!("{name:?}: an interface name is 1 to {MAX_INTERFACE_NAME} bytes"),
        ));
    }
    if name.contains('/') || name.chars().any(char::is_whitespace) && cfg!(not(windows)) {
        return Err(ConfigError::at(key, format!("{name:?} is not an interface name")));
    }
    Ok(())
}
