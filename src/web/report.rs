//! What the dashboard, `/api/stats` and `/metrics` show: one pass over the
//! snapshot into a [`Report`], then rendered as JSON or as Prometheus text.
//!
//! Gathering reads atomics and, per backend, takes its health lock just
//! long enough to copy the windows; it never waits on the proxy.
//!
//! JSON is written by hand: the shapes are fixed and small, and a JSON
//! library would cost the router more flash than these hundred lines.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Target, Uplink};
use crate::context::Snapshot;
use crate::health::{State, Status};
use crate::logging::push_json_string;
use crate::stats::DaemonStats;

/// One backend, as reported.
#[derive(Debug, Clone)]
pub struct BackendReport {
    pub name: String,
    pub address: String,
    pub kind: &'static str,
    pub weight: u32,
    /// Up: circuit closed and it has answered (SocksBalance's `healthy`).
    pub healthy: bool,
    pub circuit: State,
    /// The state in plain words.
    pub status: Status,
    /// When the circuit opened, while it is open.
    pub down_since: Option<SystemTime>,
    /// The last failure's short reason, until a success clears it.
    pub last_error: Option<String>,
    /// Tunnels that sent data and never got a byte back in time.
    pub stalls: u64,
    pub next_probe: Option<SystemTime>,
    pub last_checked: Option<SystemTime>,
    pub success_rate: Option<f64>,
    pub latency_ema: Option<Duration>,
    pub latency_median: Option<Duration>,
    pub latency_recent: Vec<Duration>,
    pub active_connections: usize,
    pub total_connections: u64,
    pub attempts: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// UDP through it: `Some(true)` works, `Some(false)` refused or
    /// `udp: false`, `None` not tried yet.
    pub udp: Option<bool>,
    /// UDP associations open now; datagrams up, down; payload bytes up,
    /// down.
    pub udp_counts: [u64; 5],
    /// Its associations' datagrams dropped, by cause (`stats::UDP_DROPS`).
    pub udp_drops: [u64; 5],
    pub in_active_set: bool,
    /// Uplinks: the interface they are pinned to.
    pub interface: Option<String>,
    /// Uplinks: the source address configured, or the interface's
    /// addresses as last seen.
    pub addresses: Vec<std::net::IpAddr>,
    /// Uplinks with an interface: "up" or "down" as the kernel says;
    /// `None` when unknown (not Linux) or not an uplink.
    pub link: Option<&'static str>,
    /// SOCKS backends pinned to an uplink: its name.
    pub via: Option<String>,
}

/// The whole daemon, as reported.
#[derive(Debug, Clone)]
pub struct Report {
    pub timestamp: SystemTime,
    pub version: &'static str,
    pub uptime: Duration,
    pub mode: String,
    pub algorithm: String,
    pub refresh_interval: u32,
    pub outage: bool,
    /// Health probes in flight now.
    pub probes_in_flight: usize,
    pub connections_total: u64,
    /// Clients served as SOCKS5, HTTP, redirect and tproxy, in
    /// [`INBOUNDS`] order.
    pub inbound: [u64; 4],
    /// The DNS listener's queries, cache hits and failures, if it runs.
    pub dns: Option<[u64; 3]>,
    /// UDP associations open now.
    pub udp_associations: usize,
    /// Datagrams dropped, by cause (`stats::UDP_DROPS`).
    pub udp_drops: [u64; 5],
    pub connections_open: usize,
    /// Clients closed for not being in `allow`.
    pub clients_denied: u64,
    /// Clients refused over a connection limit.
    pub clients_refused: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub rss_bytes: Option<u64>,
    pub throughput: Vec<crate::stats::RateSample>,
    pub backends: Vec<BackendReport>,
    /// `groups:` (empty without them).
    pub groups: Vec<GroupReport>,
    pub rules: usize,
    /// The `learned` table, when a group learns.
    pub learned: Option<LearnedReport>,
}

/// One group: its tiers' backends by name, and the tier in use.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub name: String,
    pub algorithm: String,
    pub tiers: Vec<Vec<String>>,
    /// The first tier with a usable backend; `None`: none has one.
    pub active_tier: Option<usize>,
}

/// The `learned` table: its size, its cost and its busiest sites.
#[derive(Debug, Clone)]
pub struct LearnedReport {
    pub sites: usize,
    pub capacity: usize,
    pub bytes: usize,
    /// Site, connections, preferred backend, backends avoided for it.
    pub top: Vec<(String, u32, Option<String>, Vec<String>)>,
}

/// Sites the dashboard lists from the `learned` table.
pub const TOP_SITES: usize = 10;

fn groups_of(snapshot: &Snapshot) -> Vec<GroupReport> {
    let pool = &snapshot.pool;
    let name = |i: usize| pool.backends()[i].config.name.clone();
    snapshot
        .config
        .groups
        .iter()
        .zip(pool.group_names())
        .enumerate()
        .map(|(g, (group, (_, tiers)))| GroupReport {
            name: group.name.clone(),
            algorithm: group.algorithm.to_string(),
            tiers: tiers.into_iter().map(|t| t.into_iter().map(name).collect()).collect(),
            active_tier: pool.active_tier(crate::balancer::Route::Group(g)),
        })
        .collect()
}

fn learned_of(snapshot: &Snapshot) -> Option<LearnedReport> {
    let pool = &snapshot.pool;
    let view = pool.learned()?.view(TOP_SITES);
    let keys: Vec<(u32, &str)> = pool
        .backends()
        .iter()
        .map(|b| (crate::balancer::learned::backend_key(&b.config.name), b.config.name.as_str()))
        .collect();
    let name = |k: u32| keys.iter().find(|(key, _)| *key == k).map(|(_, n)| (*n).to_owned());
    let top = view
        .top
        .into_iter()
        .map(|s| {
            (s.site, s.uses, s.preferred.and_then(name), s.avoided.into_iter().filter_map(name).collect())
        })
        .collect();
    Some(LearnedReport { sites: view.sites, capacity: view.capacity, bytes: view.bytes, top })
}

impl Report {
    pub fn healthy_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.healthy).count()
    }
}

/// `Instant` → wall clock, for times the breaker keeps as instants.
fn wall(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    match at.checked_duration_since(now) {
        Some(ahead) => wall_now + ahead,
        None => wall_now - now.duration_since(at),
    }
}

pub fn gather(snapshot: &Snapshot, stats: &DaemonStats, started: Instant) -> Report {
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let links = stats.links.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let backends: Vec<BackendReport> = snapshot
        .pool
        .backends()
        .iter()
        .map(|b| {
            let uplink = match &b.config.target {
                Target::Uplink(u) => Some(u),
                _ => None,
            };
            let health = b.health.report(now);
            let report = BackendReport {
                name: b.config.name.clone(),
                address: b.config.target.to_string(),
                kind: match b.config.target {
                    Target::Proxy { .. } => "proxy",
                    Target::Direct => "direct",
                    Target::Uplink(_) => "uplink",
                },
                weight: b.config.weight.get(),
                healthy: health.status == Status::Up,
                circuit: health.circuit,
                status: health.status,
                down_since: health.down_at.map(|t| wall(t, now, wall_now)),
                last_error: health.last_error,
                stalls: b.stats.stalls.get(),
                next_probe: health.next_probe.map(|t| wall(t, now, wall_now)),
                last_checked: health.last_checked,
                success_rate: health.success_rate,
                latency_ema: health.latency_ema,
                latency_median: health.latency_median,
                latency_recent: health.latency_recent,
                active_connections: b.stats.active.load(Ordering::Relaxed),
                total_connections: b.stats.connections.get(),
                attempts: b.stats.attempts.get(),
                failures: b.stats.failures.get(),
                timeouts: b.stats.timeouts.get(),
                bytes_up: b.stats.bytes_up.get(),
                bytes_down: b.stats.bytes_down.get(),
                udp: match b.stats.udp.load(Ordering::Relaxed) {
                    _ if !b.config.udp => Some(false),
                    crate::stats::UDP_WORKS => Some(true),
                    crate::stats::UDP_REFUSED => Some(false),
                    _ => None,
                },
                udp_counts: [
                    b.stats.udp_open.load(Ordering::Relaxed) as u64,
                    b.stats.udp_datagrams_up.get(),
                    b.stats.udp_datagrams_down.get(),
                    b.stats.udp_bytes_up.get(),
                    b.stats.udp_bytes_down.get(),
                ],
                udp_drops: b.stats.udp_drops.each_ref().map(|c| c.get()),
                in_active_set: b.health.is_active(),
                interface: uplink.and_then(|u| u.interface.clone()),
                addresses: match uplink {
                    Some(Uplink { bind: Some(ip), .. }) => vec![*ip],
                    Some(Uplink { interface: Some(dev), .. }) => {
                        links.iter().find(|l| l.name == *dev).map(|l| l.addrs.clone()).unwrap_or_default()
                    }
                    _ => Vec::new(),
                },
                link: match uplink {
                    Some(Uplink { interface: Some(_), .. }) if !links.is_empty() => {
                        Some(if b.health.link_down() { "down" } else { "up" })
                    }
                    _ => None,
                },
                via: b.config.via.clone(),
            };
            report
        })
        .collect();
    Report {
        timestamp: wall_now,
        version: crate::VERSION,
        uptime: now.duration_since(started),
        mode: snapshot.config.mode.to_string(),
        algorithm: snapshot.config.balancer.algorithm.to_string(),
        refresh_interval: snapshot.config.web.refresh_interval.get(),
        outage: snapshot.pool.outage(),
        probes_in_flight: snapshot.pool.probes().in_flight(),
        connections_total: stats.accepted.get(),
        inbound: [&stats.socks5_clients, &stats.http_clients, &stats.redirect_clients, &stats.tproxy_clients]
            .map(|c| c.get()),
        dns: snapshot
            .config
            .dns
            .as_ref()
            .map(|_| [&stats.dns_queries, &stats.dns_cache_hits, &stats.dns_failures].map(|c| c.get())),
        udp_associations: stats.udp_associations.load(Ordering::Relaxed),
        udp_drops: stats.udp_drops.each_ref().map(|c| c.get()),
        connections_open: stats.open.load(Ordering::Relaxed),
        clients_denied: stats.denied_clients.get(),
        clients_refused: stats.refused_busy.get(),
        bytes_up: backends.iter().map(|b| b.bytes_up).sum(),
        bytes_down: backends.iter().map(|b| b.bytes_down).sum(),
        rss_bytes: resident_memory(),
        throughput: stats.throughput.samples(),
        backends,
        groups: groups_of(snapshot),
        rules: snapshot.config.rules.len(),
        learned: learned_of(snapshot),
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux);
/// `None` elsewhere.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// RFC 3339 in UTC with second precision: `2026-11-22T02:50:07Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The inverse of [`rfc3339`], for `socksbalance status`: `None` for
/// anything but that exact shape.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Appends `"key":` to a JSON object under construction.
/// The inbound protocols clients are counted by.
pub const INBOUNDS: [&str; 4] = ["socks5", "http", "redirect", "tproxy"];
/// A backend's UDP figures, in `BackendReport::udp_counts` order.
pub const UDP_COUNTS: [&str; 5] =
    ["udp_associations", "udp_datagrams_up", "udp_datagrams_down", "udp_bytes_up", "udp_bytes_down"];
/// The DNS listener's counters.
pub const DNS_COUNTERS: [&str; 3] = ["queries", "cache_hits", "failures"];

/// `{"name":n,...}`.
fn counters(out: &mut String, names: &[&str], values: &[u64]) {
    out.push('{');
    for (i, (name, n)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{name}\":{n}");
    }
    out.push('}');
}

fn key(out: &mut String, k: &str) {
    if !out.ends_with('{') && !out.ends_with('[') {
        out.push(',');
    }
    push_json_string(out, k);
    out.push(':');
}

fn opt_f64(out: &mut String, v: Option<f64>, decimals: usize) {
    match v {
        Some(v) if v.is_finite() => {
            let _ = write!(out, "{v:.decimals$}");
        }
        _ => out.push_str("null"),
    }
}

fn opt_time(out: &mut String, t: Option<SystemTime>) {
    match t {
        Some(t) => push_json_string(out, &rfc3339(t)),
        None => out.push_str("null"),
    }
}

/// `GET /api/stats`. SocksBalance's fields come first with its meanings
/// (`latency_ms` an integer, 0 before the first measurement); ours follow.
pub fn to_json(r: &Report) -> String {
    let mut out = String::with_capacity(512 + r.backends.len() * 640);
    out.push('{');
    key(&mut out, "timestamp");
    push_json_string(&mut out, &rfc3339(r.timestamp));
    key(&mut out, "total_backends");
    let _ = write!(out, "{}", r.backends.len());
    key(&mut out, "healthy_backends");
    let _ = write!(out, "{}", r.healthy_backends());
    key(&mut out, "version");
    push_json_string(&mut out, r.version);
    key(&mut out, "uptime_seconds");
    let _ = write!(out, "{}", r.uptime.as_secs());
    key(&mut out, "mode");
    push_json_string(&mut out, &r.mode);
    key(&mut out, "algorithm");
    push_json_string(&mut out, &r.algorithm);
    key(&mut out, "refresh_interval");
    let _ = write!(out, "{}", r.refresh_interval);
    key(&mut out, "outage");
    let _ = write!(out, "{}", r.outage);
    key(&mut out, "connections_total");
    let _ = write!(out, "{}", r.connections_total);
    key(&mut out, "inbound");
    counters(&mut out, &INBOUNDS, &r.inbound);
    key(&mut out, "dns");
    match &r.dns {
        Some(dns) => counters(&mut out, &DNS_COUNTERS, dns),
        None => out.push_str("null"),
    }
    key(&mut out, "udp");
    let _ = write!(out, "{{\"associations\":{},\"drops\":", r.udp_associations);
    counters(&mut out, &crate::stats::UDP_DROPS, &r.udp_drops);
    out.push('}');
    key(&mut out, "open_tunnels");
    let _ = write!(out, "{}", r.connections_open);
    key(&mut out, "clients_denied");
    let _ = write!(out, "{}", r.clients_denied);
    key(&mut out, "clients_refused");
    let _ = write!(out, "{}", r.clients_refused);
    key(&mut out, "bytes_up");
    let _ = write!(out, "{}", r.bytes_up);
    key(&mut out, "bytes_down");
    let _ = write!(out, "{}", r.bytes_down);
    key(&mut out, "rss_bytes");
    match r.rss_bytes {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
    key(&mut out, "throughput");
    out.push('[');
    for (i, t) in r.throughput.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{},{}]", t.at, t.up, t.down);
    }
    out.push(']');
    key(&mut out, "backends");
    out.push('[');
    for (i, b) in r.backends.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        key(&mut out, "address");
        push_json_string(&mut out, &b.address);
        key(&mut out, "name");
        push_json_string(&mut out, &b.name);
        key(&mut out, "healthy");
        let _ = write!(out, "{}", b.healthy);
        key(&mut out, "latency_ms");
        let _ =
            write!(out, "{}", b.latency_ema.map_or(0, |l| l.as_millis().min(u128::from(u64::MAX)) as u64));
        key(&mut out, "last_checked");
        opt_time(&mut out, b.last_checked);
        key(&mut out, "kind");
        push_json_string(&mut out, b.kind);
        key(&mut out, "weight");
        let _ = write!(out, "{}", b.weight);
        key(&mut out, "state");
        push_json_string(&mut out, b.status.as_str());
        key(&mut out, "down_since");
        opt_time(&mut out, b.down_since);
        key(&mut out, "last_error");
        match &b.last_error {
            Some(e) => push_json_string(&mut out, e),
            None => out.push_str("null"),
        }
        key(&mut out, "circuit");
        push_json_string(&mut out, b.circuit.as_str());
        key(&mut out, "next_probe");
        opt_time(&mut out, b.next_probe);
        key(&mut out, "in_active_set");
        let _ = write!(out, "{}", b.in_active_set);
        key(&mut out, "success_rate");
        opt_f64(&mut out, b.success_rate, 4);
        key(&mut out, "latency_ema_ms");
        opt_f64(&mut out, b.latency_ema.map(ms), 3);
        key(&mut out, "latency_median_ms");
        opt_f64(&mut out, b.latency_median.map(ms), 3);
        key(&mut out, "latency_recent_ms");
        out.push('[');
        for (k, l) in b.latency_recent.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "{:.3}", ms(*l));
        }
        out.push(']');
        for (name, v) in [
            ("active_connections", b.active_connections as u64),
            ("total_connections", b.total_connections),
            ("attempts", b.attempts),
            ("failures", b.failures),
            ("timeouts", b.timeouts),
            ("stalls", b.stalls),
            ("bytes_up", b.bytes_up),
            ("bytes_down", b.bytes_down),
        ]
        .into_iter()
        .chain(UDP_COUNTS.into_iter().zip(b.udp_counts))
        {
            key(&mut out, name);
            let _ = write!(out, "{v}");
        }
        key(&mut out, "udp");
        out.push_str(match b.udp {
            Some(true) => "true",
            Some(false) => "false",
            None => "null",
        });
        key(&mut out, "udp_drops");
        counters(&mut out, &crate::stats::UDP_DROPS, &b.udp_drops);
        let opt_str = |out: &mut String, k: &str, v: Option<&str>| {
            key(out, k);
            match v {
                Some(v) => push_json_string(out, v),
                None => out.push_str("null"),
            }
        };
        opt_str(&mut out, "interface", b.interface.as_deref());
        key(&mut out, "addresses");
        out.push('[');
        for (k, ip) in b.addresses.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            push_json_string(&mut out, &ip.to_string());
        }
        out.push(']');
        opt_str(&mut out, "link", b.link);
        opt_str(&mut out, "via", b.via.as_deref());
        out.push('}');
    }
    out.push(']');
    key(&mut out, "groups");
    out.push('[');
    for (i, g) in r.groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        key(&mut out, "name");
        push_json_string(&mut out, &g.name);
        key(&mut out, "algorithm");
        push_json_string(&mut out, &g.algorithm);
        key(&mut out, "tiers");
        out.push('[');
        for (t, tier) in g.tiers.iter().enumerate() {
            out.push_str(if t > 0 { ",[" } else { "[" });
            string_list(&mut out, tier);
            out.push(']');
        }
        out.push(']');
        key(&mut out, "active_tier");
        match g.active_tier {
            Some(t) => {
                let _ = write!(out, "{t}");
            }
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push(']');
    key(&mut out, "rules");
    let _ = write!(out, "{}", r.rules);
    key(&mut out, "learned");
    match &r.learned {
        None => out.push_str("null"),
        Some(l) => {
            let _ = write!(
                out,
                "{{\"sites\":{},\"capacity\":{},\"bytes\":{},\"top\":[",
                l.sites, l.capacity, l.bytes
            );
            for (i, (site, uses, preferred, avoided)) in l.top.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('{');
                key(&mut out, "site");
                push_json_string(&mut out, site);
                key(&mut out, "connections");
                let _ = write!(out, "{uses}");
                key(&mut out, "preferred");
                match preferred {
                    Some(p) => push_json_string(&mut out, p),
                    None => out.push_str("null"),
                }
                key(&mut out, "avoided");
                out.push('[');
                string_list(&mut out, avoided);
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
    out.push('}');
    out
}

/// `"a","b"` (no brackets).
fn string_list(out: &mut String, items: &[String]) {
    for (k, s) in items.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        push_json_string(out, s);
    }
}

/// A Prometheus label value, escaped per the text exposition format.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The help of `socksbalance_probes_in_flight`; a test keeps its number
/// equal to the checker's limit.
const PROBES_HELP: &str = "Health probes in flight now (at most 16).";

/// `GET /metrics`: the Prometheus text exposition format, version 0.0.4.
pub fn to_prometheus(r: &Report) -> String {
    let mut out = String::with_capacity(2048 + r.backends.len() * 1400);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP socksbalance_{name} {help}");
        let _ = writeln!(out, "# TYPE socksbalance_{name} {kind}");
    };
    family(&mut out, "info", "gauge", "Version and settings of this daemon; always 1.");
    let _ = writeln!(
        out,
        "socksbalance_info{{version=\"{}\",mode=\"{}\",algorithm=\"{}\"}} 1",
        label(r.version),
        label(&r.mode),
        label(&r.algorithm)
    );
    let globals: [(&str, &str, &str, f64); 11] = [
        ("uptime_seconds", "gauge", "Seconds since the daemon started.", r.uptime.as_secs_f64()),
        ("connections_total", "counter", "Client connections accepted.", r.connections_total as f64),
        ("open_tunnels", "gauge", "Client connections open now.", r.connections_open as f64),
        (
            "clients_denied_total",
            "counter",
            "Clients closed for not being in `allow`.",
            r.clients_denied as f64,
        ),
        (
            "clients_refused_total",
            "counter",
            "Clients refused over a connection limit.",
            r.clients_refused as f64,
        ),
        ("backends", "gauge", "Configured backends.", r.backends.len() as f64),
        ("backends_healthy", "gauge", "Backends that are up.", r.healthy_backends() as f64),
        (
            "uplink_outage",
            "gauge",
            "1 during an uplink outage: every backend went down together.",
            f64::from(u8::from(r.outage)),
        ),
        ("probes_in_flight", "gauge", PROBES_HELP, r.probes_in_flight as f64),
        ("bytes_up_total", "counter", "Bytes relayed from clients to backends.", r.bytes_up as f64),
        ("bytes_down_total", "counter", "Bytes relayed from backends to clients.", r.bytes_down as f64),
    ];
    for (name, kind, help, v) in globals {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "socksbalance_{name} {v}");
    }
    family(&mut out, "inbound_clients_total", "counter", "Clients served, by the protocol they spoke.");
    for (name, n) in INBOUNDS.iter().zip(r.inbound) {
        let _ = writeln!(out, "socksbalance_inbound_clients_total{{protocol=\"{name}\"}} {n}");
    }
    family(&mut out, "udp_associations", "gauge", "UDP associations open.");
    let _ = writeln!(out, "socksbalance_udp_associations {}", r.udp_associations);
    family(&mut out, "udp_drops_total", "counter", "UDP datagrams dropped, by cause.");
    for (why, n) in crate::stats::UDP_DROPS.iter().zip(r.udp_drops) {
        let _ = writeln!(out, "socksbalance_udp_drops_total{{cause=\"{why}\"}} {n}");
    }
    if let Some(dns) = &r.dns {
        let help = [
            "DNS queries received (UDP and TCP).",
            "DNS queries answered from the cache.",
            "DNS queries answered SERVFAIL or FORMERR.",
        ];
        for ((name, help), n) in DNS_COUNTERS.iter().zip(help).zip(dns) {
            family(&mut out, &format!("dns_{name}_total"), "counter", help);
            let _ = writeln!(out, "socksbalance_dns_{name}_total {n}");
        }
    }
    if let Some(rss) = r.rss_bytes {
        family(&mut out, "resident_memory_bytes", "gauge", "Resident memory of the daemon.");
        let _ = writeln!(out, "socksbalance_resident_memory_bytes {rss}");
    }

    let labels: Vec<String> = r
        .backends
        .iter()
        .map(|b| format!("backend=\"{}\",address=\"{}\"", label(&b.name), label(&b.address)))
        .collect();
    type Series = fn(&BackendReport) -> Option<f64>;
    let per_backend: [(&str, &str, &str, Series); 20] = [
        ("backend_up", "gauge", "1 if the backend is up: circuit closed and it has answered.", |b| {
            Some(f64::from(u8::from(b.healthy)))
        }),
        ("backend_in_active_set", "gauge", "1 if the backend is in the active set.", |b| {
            Some(f64::from(u8::from(b.in_active_set)))
        }),
        ("backend_link_up", "gauge", "Uplinks: 1 if the kernel reports the interface up, 0 if down.", |b| {
            b.link.map(|l| f64::from(u8::from(l == "up")))
        }),
        ("backend_success_ratio", "gauge", "Successes over the recent outcome window.", |b| b.success_rate),
        ("backend_latency_seconds", "gauge", "Latency EMA over the recent window.", |b| {
            b.latency_ema.map(|l| l.as_secs_f64())
        }),
        ("backend_latency_median_seconds", "gauge", "Median latency over the recent window.", |b| {
            b.latency_median.map(|l| l.as_secs_f64())
        }),
        ("backend_active_connections", "gauge", "Client connections using the backend now.", |b| {
            Some(b.active_connections as f64)
        }),
        ("backend_connections_total", "counter", "Tunnels established through the backend.", |b| {
            Some(b.total_connections as f64)
        }),
        ("backend_attempts_total", "counter", "Client connections tried through the backend.", |b| {
            Some(b.attempts as f64)
        }),
        ("backend_failures_total", "counter", "Attempts that failed for the backend's own reasons.", |b| {
            Some(b.failures as f64)
        }),
        ("backend_timeouts_total", "counter", "Attempts that timed out.", |b| Some(b.timeouts as f64)),
        ("backend_stalls_total", "counter", "Tunnels that sent data and got no byte back in time.", |b| {
            Some(b.stalls as f64)
        }),
        ("backend_bytes_up_total", "counter", "Bytes relayed from clients to the backend.", |b| {
            Some(b.bytes_up as f64)
        }),
        ("backend_bytes_down_total", "counter", "Bytes relayed from the backend to clients.", |b| {
            Some(b.bytes_down as f64)
        }),
        (
            "backend_udp",
            "gauge",
            "UDP through the backend: 1 works, 0 refused or off (unknown: absent).",
            |b| b.udp.map(|u| f64::from(u8::from(u))),
        ),
        ("backend_udp_associations", "gauge", "UDP associations relayed through the backend now.", |b| {
            Some(b.udp_counts[0] as f64)
        }),
        ("backend_udp_datagrams_up_total", "counter", "Datagrams from clients sent through it.", |b| {
            Some(b.udp_counts[1] as f64)
        }),
        ("backend_udp_datagrams_down_total", "counter", "Datagrams through it to clients.", |b| {
            Some(b.udp_counts[2] as f64)
        }),
        ("backend_udp_bytes_up_total", "counter", "UDP payload bytes from clients.", |b| {
            Some(b.udp_counts[3] as f64)
        }),
        ("backend_udp_bytes_down_total", "counter", "UDP payload bytes to clients.", |b| {
            Some(b.udp_counts[4] as f64)
        }),
    ];
    for (name, kind, help, value) in per_backend {
        family(&mut out, name, kind, help);
        for (b, l) in r.backends.iter().zip(&labels) {
            if let Some(v) = value(b) {
                let _ = writeln!(out, "socksbalance_{name}{{{l}}} {v}");
            }
        }
    }
    family(
        &mut out,
        "backend_udp_drops_total",
        "counter",
        "Datagrams of the backend's UDP associations dropped, by cause.",
    );
    for (b, l) in r.backends.iter().zip(&labels) {
        for (why, n) in crate::stats::UDP_DROPS.iter().zip(b.udp_drops) {
            let _ = writeln!(out, "socksbalance_backend_udp_drops_total{{{l},cause=\"{why}\"}} {n}");
        }
    }
    family(&mut out, "backend_state", "gauge", "1 for the backend's state: up, down, testing or unknown.");
    for (b, l) in r.backends.iter().zip(&labels) {
        for status in Status::ALL {
            let on = u8::from(b.status == status);
            let _ = writeln!(out, "socksbalance_backend_state{{{l},state=\"{}\"}} {on}", status.as_str());
        }
    }
    family(&mut out, "backend_circuit_state", "gauge", "1 for the state the backend's circuit is in.");
    for (b, l) in r.backends.iter().zip(&labels) {
        for state in [State::Closed, State::Open, State::HalfOpen] {
            let on = u8::from(b.circuit == state);
            let _ =
                writeln!(out, "socksbalance_backend_circuit_state{{{l},state=\"{}\"}} {on}", state.as_str());
        }
    }
    if !r.groups.is_empty() {
        family(
            &mut out,
            "group_active_tier",
            "gauge",
            "The tier of each group in use (0 first); -1 when none has a usable backend.",
        );
        for g in &r.groups {
            let tier = g.active_tier.map_or(-1, |t| t as i64);
            let _ = writeln!(out, "socksbalance_group_active_tier{{group=\"{}\"}} {tier}", label(&g.name));
        }
    }
    if let Some(l) = &r.learned {
        family(&mut out, "learned_sites", "gauge", "Sites in the learned table.");
        let _ = writeln!(out, "socksbalance_learned_sites {}", l.sites);
        family(&mut out, "learned_bytes", "gauge", "Memory the learned table takes, estimated.");
        let _ = writeln!(out, "socksbalance_learned_bytes {}", l.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_315_807)), "2026-11-22T02:50:07Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "2099-12-31T23:59:59Z");
        for secs in [0, 951_782_400, 1_795_315_807, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn the_probes_help_names_the_checkers_limit() {
        let limit = crate::health::MAX_CONCURRENT_PROBES;
        assert!(PROBES_HELP.contains(&format!("(at most {limit})")), "{PROBES_HELP}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory().unwrap() > 0);
        }
    }
}
