//! `socksbalance status`: the backend table in a terminal, read from a
//! running daemon's `/api/stats` (netmix's console dashboard).
//!
//! A blocking HTTP/1.1 GET over std's `TcpStream` is all it needs. The
//! JSON is parsed with serde_yaml, since YAML 1.2 reads JSON, so the binary
//! carries no JSON library.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ProbeUrl;

const TIMEOUT: Duration = Duration::from_secs(5);
/// More than any stats document of 65,536 backends needs.
const MAX_RESPONSE: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
pub struct Stats {
    pub version: String,
    pub mode: String,
    pub algorithm: String,
    pub uptime_seconds: u64,
    pub total_backends: usize,
    pub healthy_backends: usize,
    pub open_tunnels: usize,
    #[serde(default)]
    pub outage: bool,
    pub backends: Vec<BackendRow>,
}

#[derive(Debug, Deserialize)]
pub struct BackendRow {
    pub name: String,
    pub address: String,
    pub circuit: String,
    pub latency_ema_ms: Option<f64>,
    pub success_rate: Option<f64>,
    pub active_connections: u64,
    pub total_connections: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub in_active_set: bool,
}

/// Fetches `/api/stats` from the daemon at `base` and renders the table.
pub fn run(base: &str, token: Option<&str>, login: Option<&str>) -> Result<String, String> {
    let body = fetch(base, token, login)?;
    let stats: Stats =
        serde_yaml::from_str(&body).map_err(|e| format!("{base}: not a socksbalance stats document: {e}"))?;
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
    let mut stream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, TIMEOUT).ok())
        .ok_or_else(|| format!("{base}: cannot connect (is socksbalance running with web.enabled?)"))?;
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
    stream.write_all(request.as_bytes()).map_err(|e| format!("{base}: {e}"))?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).map_err(|e| format!("{base}: {e}"))?;
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

fn bytes(n: u64) -> String {
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

/// The table, sorted by latency as the dashboard sorts it.
pub fn render(stats: &Stats) -> String {
    let mut out = format!(
        "socksbalance {} · {} mode · {} · up {} · {}/{} healthy · {} open tunnel(s){}\n",
        stats.version,
        stats.mode,
        stats.algorithm,
        uptime(stats.uptime_seconds),
        stats.healthy_backends,
        stats.total_backends,
        stats.open_tunnels,
        if stats.outage { " · UPLINK OUTAGE" } else { "" }
    );
    let mut rows: Vec<&BackendRow> = stats.backends.iter().collect();
    rows.sort_by(|a, b| {
        let key = |r: &BackendRow| r.latency_ema_ms.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    let header =
        ["NAME", "ADDRESS", "CIRCUIT", "LATENCY", "SUCCESS", "ACTIVE", "TOTAL", "FAILED", "UP", "DOWN"];
    let mut table: Vec<[String; 10]> = vec![header.map(String::from)];
    for r in rows {
        table.push([
            if r.in_active_set { r.name.clone() } else { format!("{} (spare)", r.name) },
            r.address.clone(),
            r.circuit.replace('_', "-"),
            r.latency_ema_ms.map_or("-".into(), |l| format!("{l:.0} ms")),
            r.success_rate.map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
            r.active_connections.to_string(),
            r.total_connections.to_string(),
            (r.failures + r.timeouts).to_string(),
            bytes(r.bytes_up),
            bytes(r.bytes_down),
        ]);
    }
    let widths: Vec<usize> =
        (0..10).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text columns to the left, numbers to the right.
            if c < 3 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str("  ");
        }
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
    fn renders_a_table_sorted_by_latency() {
        let json = r#"{"version":"1.0","mode":"socks5","algorithm":"roundrobin","uptime_seconds":3725,
            "total_backends":2,"healthy_backends":1,"open_tunnels":3,"outage":false,"backends":[
            {"name":"slow","address":"10.0.0.1:1080","circuit":"open","latency_ema_ms":420.5,"success_rate":0.5,
             "active_connections":0,"total_connections":7,"failures":2,"timeouts":1,"bytes_up":10,"bytes_down":2048,"in_active_set":true},
            {"name":"fast","address":"10.0.0.2:1080","circuit":"closed","latency_ema_ms":12.0,"success_rate":1.0,
             "active_connections":3,"total_connections":90,"failures":0,"timeouts":0,"bytes_up":5,"bytes_down":3145728,"in_active_set":true}]}"#;
        let stats: Stats = serde_yaml::from_str(json).unwrap();
        let table = render(&stats);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("up 1h 2m") && lines[0].contains("1/2 healthy"), "{table}");
        assert!(lines[1].starts_with("NAME"), "{table}");
        assert!(
            lines[2].starts_with("fast") && lines[2].contains("3.0 MiB") && lines[2].contains("12 ms"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("slow") && lines[3].contains("open") && lines[3].contains("50%"),
            "{table}"
        );
    }
}
