//! `socksbalance status`: the backend table in a terminal, read from a
//! running daemon's `/api/stats` (netmix's console dashboard).
//!
//! A blocking HTTP/1.1 GET over std's `TcpStream` is all it needs. The
//! JSON is read by the crate's own small reader (`json`): no JSON library,
//! and no derived visitors, which cost the router binary more.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::ProbeUrl;
use crate::json::{self, Value};

const TIMEOUT: Duration = Duration::from_secs(5);
/// More than any stats document of 65,536 backends needs.
const MAX_RESPONSE: u64 = 64 << 20;

#[derive(Debug)]
pub struct Stats {
    pub timestamp: Option<String>,
    pub version: String,
    pub mode: String,
    pub algorithm: String,
    pub uptime_seconds: u64,
    pub total_backends: usize,
    pub healthy_backends: usize,
    pub open_tunnels: usize,
    pub outage: bool,
    /// `web.refresh_interval`, seconds (older daemons: absent).
    pub refresh_interval: Option<u64>,
    pub backends: Vec<BackendRow>,
}

#[derive(Debug)]
pub struct BackendRow {
    pub name: String,
    pub address: String,
    pub circuit: String,
    /// Older daemons have no `state`: the circuit stands in.
    pub state: Option<String>,
    pub down_since: Option<String>,
    pub last_error: Option<String>,
    pub latency_ema_ms: Option<f64>,
    pub success_rate: Option<f64>,
    pub active_connections: u64,
    pub total_connections: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub in_active_set: bool,
    /// `proxy`, `direct` or `uplink` (older daemons: absent).
    pub kind: Option<String>,
    /// An uplink's interface state, `up` or `down` (Linux).
    pub link: Option<String>,
}

/// A required member of an object, read with `read`.
fn field<'v, 'a, T>(
    obj: &'v Value<'a>,
    key: &str,
    read: impl Fn(&'v Value<'a>) -> Option<T>,
) -> Result<T, String> {
    let value = obj.get(key).ok_or_else(|| format!("missing field `{key}`"))?;
    read(value).ok_or_else(|| format!("field `{key}` has the wrong type"))
}

/// An optional member: absent or null is `None`.
fn optional<'v, 'a, T>(
    obj: &'v Value<'a>,
    key: &str,
    read: impl Fn(&'v Value<'a>) -> Option<T>,
) -> Result<Option<T>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v).map(Some).ok_or_else(|| format!("field `{key}` has the wrong type")),
    }
}

fn text(v: &Value<'_>) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl Stats {
    /// The stats document `/api/stats` returns.
    pub fn from_json(body: &str) -> Result<Stats, String> {
        let v = json::parse(body)?;
        let count = |key| field(&v, key, |v| v.as_u64().map(|n| n as usize));
        let backends = field(&v, "backends", Value::as_array)?
            .iter()
            .map(BackendRow::from_json)
            .collect::<Result<_, _>>()?;
        Ok(Stats {
            timestamp: optional(&v, "timestamp", text)?,
            version: field(&v, "version", text)?,
            mode: field(&v, "mode", text)?,
            algorithm: field(&v, "algorithm", text)?,
            uptime_seconds: field(&v, "uptime_seconds", Value::as_u64)?,
            total_backends: count("total_backends")?,
            healthy_backends: count("healthy_backends")?,
            open_tunnels: count("open_tunnels")?,
            outage: optional(&v, "outage", Value::as_bool)?.unwrap_or(false),
            refresh_interval: optional(&v, "refresh_interval", Value::as_u64)?,
            backends,
        })
    }
}

impl BackendRow {
    fn from_json(v: &Value<'_>) -> Result<BackendRow, String> {
        let number = |key| field(v, key, Value::as_u64);
        Ok(BackendRow {
            name: field(v, "name", text)?,
            address: field(v, "address", text)?,
            circuit: field(v, "circuit", text)?,
            state: optional(v, "state", text)?,
            down_since: optional(v, "down_since", text)?,
            last_error: optional(v, "last_error", text)?,
            latency_ema_ms: optional(v, "latency_ema_ms", Value::as_f64)?,
            success_rate: optional(v, "success_rate", Value::as_f64)?,
            active_connections: number("active_connections")?,
            total_connections: number("total_connections")?,
            failures: number("failures")?,
            timeouts: number("timeouts")?,
            bytes_up: number("bytes_up")?,
            bytes_down: number("bytes_down")?,
            in_active_set: field(v, "in_active_set", Value::as_bool)?,
            kind: optional(v, "kind", text)?,
            link: optional(v, "link", text)?,
        })
    }
}

impl BackendRow {
    /// `up`, `down` or `testing`; older daemons have no `state`, and
    /// their circuit stands in.
    pub(crate) fn shown_state(&self) -> String {
        self.state.clone().unwrap_or_else(|| match self.circuit.as_str() {
            "closed" => "up".into(),
            "open" => "down".into(),
            _ => "testing".into(),
        })
    }

    /// The latency of an up backend (`12 ms`), else `-`: a down one's is
    /// stale.
    pub(crate) fn latency_text(&self, up: bool) -> String {
        match self.latency_ema_ms {
            Some(l) if up => format!("{l:.0} ms"),
            _ => "-".into(),
        }
    }

    pub(crate) fn success_text(&self) -> String {
        self.success_rate.map_or("-".into(), |s| format!("{:.0}%", s * 100.0))
    }
}

/// One table row: the cells of `columns`, each padded to its width in
/// `widths` (on the right where `left(column)`, else on the left, so that
/// numbers line up), two spaces apart.
pub(crate) fn layout_row(
    row: &[String],
    columns: impl IntoIterator<Item = usize>,
    widths: &[usize],
    left: impl Fn(usize) -> bool,
) -> String {
    let mut line = String::new();
    for c in columns {
        let pad = " ".repeat(widths[c] - row[c].chars().count());
        if left(c) {
            line.push_str(&row[c]);
            line.push_str(&pad);
        } else {
            line.push_str(&pad);
            line.push_str(&row[c]);
        }
        line.push_str("  ");
    }
    line
}

/// The widest cell of each of `n` columns.
pub(crate) fn column_widths<R: AsRef<[String]>>(rows: &[R], n: usize) -> Vec<usize> {
    (0..n).map(|c| rows.iter().map(|r| r.as_ref()[c].chars().count()).max().unwrap_or(0)).collect()
}

/// Where a daemon's dashboard is, and how to log in to it, from its config
/// (`socksbalance status -c FILE`): a wildcard listen address is reached
/// on loopback.
pub fn target_of(config: &crate::Config) -> Result<(String, Option<String>, Option<String>), String> {
    let web = &config.web;
    if !web.enabled {
        return Err("the dashboard is off in this config (web.enabled: false)".into());
    }
    let mut addr = web.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let token = web.token.as_ref().map(|t| t.expose().to_string());
    let login = web.basic.as_ref().map(|c| format!("{}:{}", c.username, c.password.expose()));
    Ok((format!("http://{addr}"), token, login))
}

/// An I/O error in words a user reads without a manual.
fn plainly(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        WouldBlock | TimedOut => format!("no answer within {}s", TIMEOUT.as_secs()),
        ConnectionRefused => "connection refused".into(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            "the connection was closed".into()
        }
        _ => e.to_string().split(" (os error").next().unwrap_or_default().to_string(),
    }
}

/// Fetches `/api/stats` from the daemon at `base` and renders the table.
pub fn run(base: &str, token: Option<&str>, login: Option<&str>) -> Result<String, String> {
    table_of(base, &fetch(base, token, login)?)
}

/// Fetches `/api/stats` from the daemon at `base`: the document as the
/// daemon wrote it (`status --json`, for scripts such as the LuCI app's
/// rpcd plugin), once it has been checked to be one.
pub fn document(base: &str, token: Option<&str>, login: Option<&str>) -> Result<String, String> {
    let body = fetch(base, token, login)?;
    Stats::from_json(&body).map_err(|e| format!("{base}: not a socksbalance stats document: {e}"))?;
    Ok(body)
}

/// The table for a stats document, or why it is not one.
pub fn table_of(base: &str, body: &str) -> Result<String, String> {
    let stats =
        Stats::from_json(body).map_err(|e| format!("{base}: not a socksbalance stats document: {e}"))?;
    Ok(render(&stats))
}

fn fetch(base: &str, token: Option<&str>, login: Option<&str>) -> Result<String, String> {
    let url: ProbeUrl = base.parse()?;
    if url.https {
        return Err(format!("{base}: https is not supported; the dashboard speaks plain HTTP"));
    }
    let path = format!("{}/api/stats", url.path.trim_end_matches('/'));
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("{base}: cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        let why = last.as_ref().map_or("no address".into(), plainly);
        format!("cannot reach {base}: {why} (is socksbalance running, with web.enabled?)")
    })?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nAccept: application/json\r\nConnection: close\r\n",
        url.port
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    } else if let Some(login) = login {
        request.push_str(&format!("Authorization: Basic {}\r\n", base64_encode(login.as_bytes())));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("{base}: {}", plainly(&e)))?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).map_err(|e| format!("{base}: {}", plainly(&e)))?;
    body_of(base, &response)
}

/// The body of the dashboard's HTTP response, or why there is none.
/// Public for the fuzz target: it reads bytes from the network.
pub fn body_of(base: &str, response: &[u8]) -> Result<String, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{base}: malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = &response[split + 4..];
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    match status {
        200 => {}
        401 => return Err(format!("{base}: unauthorized; pass --token TOKEN or --user USER:PASSWORD")),
        404 => return Err(format!("{base}: no /api/stats here; is this socksbalance's dashboard address?")),
        other => return Err(format!("{base}: HTTP status {other}")),
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| format!("{base}: bad chunked body"))?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| format!("{base}: response is not UTF-8"))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {s}s"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// How long ago `since` was, as of `now` (both RFC 3339 from the daemon).
fn ago(since: &str, now: Option<&str>) -> Option<String> {
    let since = crate::web::parse_rfc3339(since)?;
    let now = crate::web::parse_rfc3339(now?)?;
    Some(crate::config::human(now.duration_since(since).unwrap_or_default()))
}

/// The table, in config order as the dashboard shows it by default. A
/// backend that is not up shows why instead of a stale latency.
pub fn render(stats: &Stats) -> String {
    let mut out = format!(
        "socksbalance {} · {} mode · {} · up {} · {}/{} up · {} open tunnel(s){}\n",
        stats.version,
        stats.mode,
        stats.algorithm,
        uptime(stats.uptime_seconds),
        stats.healthy_backends,
        stats.total_backends,
        stats.open_tunnels,
        if stats.outage { " · UPLINK OUTAGE" } else { "" }
    );
    if stats.backends.is_empty() {
        out.push_str("no backends configured\n");
        return out;
    }
    const COLUMNS: usize = 11;
    let header = [
        "NAME", "ADDRESS", "STATE", "LATENCY", "SUCCESS", "ACTIVE", "TOTAL", "FAILED", "↑ UP", "↓ DOWN",
        "WHY",
    ];
    let mut table: Vec<[String; COLUMNS]> = vec![header.map(String::from)];
    for r in &stats.backends {
        let state = r.shown_state();
        let up = state == "up";
        let why = match (&r.last_error, &r.down_since) {
            (Some(e), Some(since)) => match ago(since, stats.timestamp.as_deref()) {
                Some(ago) => format!("{e}, down {ago}"),
                None => e.clone(),
            },
            (Some(e), None) if !up => e.clone(),
            _ => String::new(),
        };
        table.push([
            if r.in_active_set { r.name.clone() } else { format!("{} (spare)", r.name) },
            r.address.clone(),
            state,
            r.latency_text(up),
            r.success_text(),
            r.active_connections.to_string(),
            r.total_connections.to_string(),
            (r.failures + r.timeouts).to_string(),
            bytes(r.bytes_up),
            bytes(r.bytes_down),
            why,
        ]);
    }
    let widths = column_widths(&table, COLUMNS);
    for row in &table {
        // Text columns to the left, numbers to the right.
        let line = layout_row(row, 0..COLUMNS, &widths, |c| c < 3 || c == COLUMNS - 1);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes_rfc4648_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert!(dechunk(b"ff\r\nshort\r\n").is_none());
    }

    #[test]
    fn renders_a_table_in_config_order_with_reasons() {
        let json = r#"{"timestamp":"2026-12-02T10:05:00Z","version":"1.0","mode":"socks5","algorithm":"roundrobin",
            "uptime_seconds":3725,"total_backends":2,"healthy_backends":1,"open_tunnels":3,"outage":false,"backends":[
            {"name":"slow","address":"10.0.0.1:1080","circuit":"open","state":"down","down_since":"2026-12-02T10:01:48Z",
             "last_error":"connection refused","latency_ema_ms":420.5,"success_rate":0.5,
             "active_connections":0,"total_connections":7,"failures":2,"timeouts":1,"bytes_up":10,"bytes_down":2048,"in_active_set":true},
            {"name":"fast","address":"10.0.0.2:1080","circuit":"closed","state":"up","down_since":null,"last_error":null,
             "latency_ema_ms":12.0,"success_rate":1.0,
             "active_connections":3,"total_connections":90,"failures":0,"timeouts":0,"bytes_up":5,"bytes_down":3145728,"in_active_set":true}]}"#;
        let stats = Stats::from_json(json).unwrap();
        let table = render(&stats);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("up 1h 2m") && lines[0].contains("1/2 up"), "{table}");
        assert!(lines[1].starts_with("NAME"), "{table}");
        assert!(lines[2].starts_with("slow") && lines[2].contains("down"), "{table}");
        assert!(lines[2].ends_with("connection refused, down 3m12s"), "{table}");
        assert!(!lines[2].contains("420"), "no stale latency for a down backend: {table}");
        assert!(
            lines[3].starts_with("fast") && lines[3].contains("3.0 MiB") && lines[3].contains("12 ms"),
            "{table}"
        );
    }

    #[test]
    fn says_so_when_there_are_no_backends() {
        let json = r#"{"version":"1.0","mode":"socks5","algorithm":"roundrobin","uptime_seconds":5,
            "total_backends":0,"healthy_backends":0,"open_tunnels":0,"backends":[]}"#;
        let stats = Stats::from_json(json).unwrap();
        assert!(render(&stats).ends_with("no backends configured\n"));
    }
}
