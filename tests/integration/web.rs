//! The dashboard side: /api/stats, /metrics, /, /healthz, auth, bad
//! requests, and `socksbalance status`, against a live daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

use crate::support::*;

/// A raw HTTP exchange; returns (status, headers in lower case, body).
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

pub fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"))
}

fn web_daemon(extra: &str, backends: &[&Backend]) -> socksbalance::Daemon {
    let mut yaml =
        format!("{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\n{extra}backends:\n");
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&b.yaml(&format!("b{i}")));
    }
    daemon(&yaml)
}

fn stats(addr: SocketAddr) -> Value {
    let (status, head, body) = get(addr, "/api/stats", "");
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_yaml::from_str(&body).unwrap_or_else(|e| panic!("not JSON: {e}\n{body}"))
}

fn is_rfc3339(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

#[test]
fn api_stats_is_socksbalance_compatible_and_counts_real_traffic() {
    let b0 = Backend::start(Behaviour::Proxy);
    let b1 = Backend::start(Behaviour::Proxy);
    let d = web_daemon("", &[&b0, &b1]);
    let web = d.web_addr().unwrap();
    let target = echo_server("127.0.0.1:0");
    wait_for("the start-up probes", IO_TIMEOUT, || stats(web)["healthy_backends"].as_u64() == Some(2));
    // Two round trips each way through b0 (round robin: b0, b1, b0).
    let payload = pattern(50_000, 5);
    for _ in 0..3 {
        let (code, mut s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0);
        s.write_all(&payload).unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).unwrap();
    }
    wait_for("bytes counted and tunnels closed", IO_TIMEOUT, || {
        let s = stats(web);
        s["backends"][0]["bytes_down"].as_u64() == Some(2 * payload.len() as u64)
            && s["open_tunnels"].as_u64() == Some(0)
    });
    let s = stats(web);
    // SocksBalance's fields.
    assert!(is_rfc3339(&s["timestamp"]), "{:?}", s["timestamp"]);
    assert_eq!(s["total_backends"].as_u64(), Some(2));
    assert_eq!(s["healthy_backends"].as_u64(), Some(2));
    let b = &s["backends"][0];
    assert_eq!(b["address"].as_str(), Some(b0.addr.to_string().as_str()));
    assert_eq!(b["name"].as_str(), Some("b0"));
    assert_eq!(b["healthy"].as_bool(), Some(true));
    assert!(b["latency_ms"].as_u64().is_some(), "latency_ms is an integer");
    assert!(is_rfc3339(&b["last_checked"]));
    // Ours.
    assert_eq!(s["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(s["mode"].as_str(), Some("socks5"));
    assert!(s["uptime_seconds"].as_u64().is_some());
    assert_eq!(s["connections_total"].as_u64(), Some(3));
    assert_eq!(s["open_tunnels"].as_u64(), Some(0));
    assert_eq!(s["bytes_up"].as_u64(), Some(3 * payload.len() as u64));
    assert_eq!(s["bytes_down"].as_u64(), Some(3 * payload.len() as u64));
    assert!(s["rss_bytes"].as_u64().unwrap() > 100_000);
    assert_eq!(b["circuit"].as_str(), Some("closed"));
    assert!(is_rfc3339(&b["next_probe"]));
    assert_eq!(b["success_rate"].as_f64(), Some(1.0));
    assert!(b["latency_ema_ms"].as_f64().unwrap() > 0.0);
    assert!(b["latency_median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(b["latency_recent_ms"].as_sequence().unwrap().len(), 2);
    assert_eq!(b["active_connections"].as_u64(), Some(0));
    assert_eq!(b["total_connections"].as_u64(), Some(2));
    assert_eq!(b["attempts"].as_u64(), Some(2));
    assert_eq!(b["failures"].as_u64(), Some(0));
    assert_eq!(b["bytes_up"].as_u64(), Some(2 * payload.len() as u64));
    assert_eq!(b["in_active_set"].as_bool(), Some(true));
    assert_eq!(s["backends"][1]["total_connections"].as_u64(), Some(1));
    // The server samples throughput every 2 s; the first sample covers the
    // transfer above.
    wait_for("a throughput sample", IO_TIMEOUT, || {
        stats(web)["throughput"].as_sequence().is_some_and(|t| !t.is_empty())
    });
    let sample = &stats(web)["throughput"][0];
    assert!(sample[0].as_u64().unwrap() > 1_700_000_000, "unix time");
    assert!(sample[2].as_u64().unwrap() > 0, "bytes down per second");
}

#[test]
fn api_stats_shows_an_open_circuit_and_a_live_tunnel() {
    let good = Backend::start(Behaviour::Proxy);
    let bad = Backend::start(Behaviour::CloseAfterGreeting);
    let d = web_daemon("health:\n  check_interval: 1h\n", &[&bad, &good]);
    let target = echo_server("127.0.0.1:0");
    for _ in 0..4 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let (code, _open) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    let s = stats(d.web_addr().unwrap());
    assert_eq!(s["healthy_backends"].as_u64(), Some(1));
    assert_eq!(s["backends"][0]["circuit"].as_str(), Some("open"));
    assert_eq!(s["backends"][0]["healthy"].as_bool(), Some(false));
    // Found by a client or by the start-up probe, whichever came first.
    assert_eq!(s["backends"][0]["last_error"].as_str(), Some("closed the connection"));
    assert_eq!(s["open_tunnels"].as_u64(), Some(1));
    assert_eq!(s["backends"][1]["active_connections"].as_u64(), Some(1));
}

/// Issue 16: each backend's state in plain words, since when it is down and
/// why, in /api/stats and in /metrics alike.
#[test]
fn api_and_metrics_tell_each_backends_state_and_why() {
    let good = Backend::start(Behaviour::Proxy);
    let silent = Backend::start(Behaviour::Blackhole);
    let refused = closed_port();
    let yaml = format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\nhealth:\n  connect_timeout: 30s\n  \
         check_interval: 1h\n  recovery_interval: 1h\n  max_recovery_interval: 1h\nbackends:\n{}{}  - address: \"{refused}\"\n    name: gone\n",
        good.yaml("good"),
        silent.yaml("silent")
    );
    let d = daemon(&yaml);
    let web = d.web_addr().unwrap();
    wait_for("the refused backend down", IO_TIMEOUT, || {
        stats(web)["backends"][2]["state"].as_str() == Some("down")
    });
    wait_for("the good backend up", IO_TIMEOUT, || stats(web)["backends"][0]["state"].as_str() == Some("up"));
    let s = stats(web);
    let (up, testing, down) = (&s["backends"][0], &s["backends"][1], &s["backends"][2]);
    assert_eq!(s["healthy_backends"].as_u64(), Some(1), "only a backend that answered is healthy");
    assert_eq!(
        (up["healthy"].as_bool(), up["down_since"].as_str(), up["last_error"].as_str()),
        (Some(true), None, None)
    );
    // The blackholed one's first probe waits on its 30 s connect timeout.
    assert_eq!(testing["state"].as_str(), Some("testing"));
    assert_eq!(testing["healthy"].as_bool(), Some(false));
    assert!(is_rfc3339(&down["down_since"]), "{:?}", down["down_since"]);
    assert_eq!(down["last_error"].as_str(), Some("connection refused"));
    assert_eq!(down["healthy"].as_bool(), Some(false));
    assert_eq!(down["circuit"].as_str(), Some("open"));
    assert_eq!(down["stalls"].as_u64(), Some(0));

    let samples = parse_prometheus(&get(web, "/metrics", "").2);
    for (name, state) in [("good", "up"), ("silent", "testing"), ("gone", "down")] {
        let addr =
            s["backends"].as_sequence().unwrap().iter().find(|b| b["name"].as_str() == Some(name)).unwrap()
                ["address"]
                .as_str()
                .unwrap()
                .to_string();
        for each in ["up", "down", "testing", "unknown"] {
            let key = format!(
                "socksbalance_backend_state{{backend=\"{name}\",address=\"{addr}\",state=\"{each}\"}}"
            );
            let want = if each == state { 1.0 } else { 0.0 };
            assert_eq!(samples.get(&key), Some(&want), "{key}");
        }
    }
}

/// Checks Prometheus text format 0.0.4 line by line; returns the samples.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name) && helped.insert(name.to_owned()), "bad or repeated HELP: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "repeated TYPE: {line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
        } else {
            assert!(!line.starts_with('#'), "stray comment: {line}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(valid_name(name), "bad metric name: {line}");
            assert!(typed.contains_key(name), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("braces");
                    // key="value" pairs, values with \\ \" \n escapes only.
                    let mut rest = inner;
                    while !rest.is_empty() {
                        let (key, after) =
                            rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(valid_name(key), "bad label name in {line}");
                        let mut chars = after.char_indices();
                        let end = loop {
                            match chars.next() {
                                Some((_, '\\')) => {
                                    let (_, e) = chars.next().unwrap();
                                    assert!(matches!(e, '\\' | '"' | 'n'), "bad escape in {line}");
                                }
                                Some((i, '"')) => break i,
                                Some(_) => {}
                                None => panic!("unterminated label value: {line}"),
                            }
                        };
                        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                    }
                }
            }
            assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series: {series}");
        }
    }
    for name in typed.keys() {
        assert!(helped.contains(name), "TYPE without HELP: {name}");
    }
    samples
}

#[test]
fn metrics_are_valid_prometheus_text_with_per_backend_series() {
    let b0 = Backend::start(Behaviour::Proxy);
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\nbackends:\n  - {{address: \"{}\", name: 'quote\"back\\slash'}}\n",
        b0.addr
    ));
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    let web = d.web_addr().unwrap();
    wait_for("bytes counted", IO_TIMEOUT, || {
        get(web, "/metrics", "").2.contains("socksbalance_bytes_down_total 25")
    });
    let (status, head, body) = get(web, "/metrics", "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    let samples = parse_prometheus(&body);
    let l = format!("backend=\"quote\\\"back\\\\slash\",address=\"{}\"", b0.addr);
    assert_eq!(samples[&format!("socksbalance_backend_up{{{l}}}")], 1.0);
    assert_eq!(samples[&format!("socksbalance_backend_bytes_up_total{{{l}}}")], 25.0);
    assert_eq!(samples[&format!("socksbalance_backend_connections_total{{{l}}}")], 1.0);
    assert_eq!(samples[&format!("socksbalance_backend_circuit_state{{{l},state=\"closed\"}}")], 1.0);
    assert_eq!(samples[&format!("socksbalance_backend_circuit_state{{{l},state=\"open\"}}")], 0.0);
    assert_eq!(samples["socksbalance_connections_total"], 1.0);
    assert_eq!(samples["socksbalance_backends_healthy"], 1.0);
    assert!(samples[&format!("socksbalance_backend_latency_seconds{{{l}}}")] > 0.0);
}

#[test]
fn dashboard_healthz_404_405_and_head() {
    let d = web_daemon("", &[&Backend::start(Behaviour::Proxy)]);
    let web = d.web_addr().unwrap();
    let (status, head, body) = get(web, "/", "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html; charset=utf-8"));
    assert!(body.len() <= 32 * 1024 && body.contains("<svg") && body.contains("prefers-color-scheme:dark"));
    let (status, _, body) = get(web, "/healthz", "");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(web, "/nope", "").0, 404);
    assert_eq!(get(web, "/api/stats/../../etc/passwd", "").0, 404);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let (status, head, _) = http(
            web,
            &format!(
                "{method} /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            ),
        );
        assert_eq!(status, 405, "{method}");
        assert!(head.contains("allow: get, head"), "{head}");
    }
    let (status, _, body) = http(web, "HEAD /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
}

#[test]
fn a_token_protects_everything_but_healthz() {
    let d = web_daemon("  token: s3cret-t0ken\n", &[&Backend::start(Behaviour::Proxy)]);
    let web = d.web_addr().unwrap();
    let (status, head, _) = get(web, "/api/stats", "");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(get(web, "/", "").0, 401);
    assert_eq!(get(web, "/metrics", "").0, 401);
    assert_eq!(get(web, "/api/stats", "Authorization: Bearer wrong-token\r\n").0, 401);
    assert_eq!(get(web, "/api/stats?token=wrong", "").0, 401);
    assert_eq!(get(web, "/api/stats", "Authorization: Bearer s3cret-t0ken\r\n").0, 200);
    assert_eq!(get(web, "/api/stats?token=s3cret-t0ken", "").0, 200);
    assert_eq!(get(web, "/?token=s3cret%2Dt0ken", "").0, 200, "percent-encoded");
    assert_eq!(get(web, "/healthz", "").0, 200);
}

#[test]
fn basic_auth_protects_the_dashboard() {
    let d = web_daemon("  username: admin\n  password: hunter22\n", &[&Backend::start(Behaviour::Proxy)]);
    let web = d.web_addr().unwrap();
    let (status, head, _) = get(web, "/", "");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic realm=\"socksbalance\""), "{head}");
    // admin:hunter22 and admin:wrong
    assert_eq!(get(web, "/", "Authorization: Basic YWRtaW46aHVudGVyMjI=\r\n").0, 200);
    assert_eq!(get(web, "/", "Authorization: Basic YWRtaW46d3Jvbmc=\r\n").0, 401);
    assert_eq!(get(web, "/", "Authorization: Basic !!!\r\n").0, 401);
}

#[test]
fn garbage_and_oversized_requests_leave_the_proxy_serving() {
    let backend = Backend::start(Behaviour::Proxy);
    let d = web_daemon("", &[&backend]);
    let web = d.web_addr().unwrap();
    let target = echo_server("127.0.0.1:0");
    let hostile: Vec<Vec<u8>> = vec![
        pattern(10_000, 9),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200_000)).into_bytes(),
        format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(1_000_000)).into_bytes(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
        b"GET".to_vec(),
    ];
    for bytes in &hostile {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    assert_eq!(get(web, "/healthz", "").0, 200, "the dashboard still answers too");
}

#[test]
fn status_subcommand_prints_the_backend_table() {
    let b0 = Backend::start(Behaviour::Proxy);
    let dead = closed_port();
    let yaml = format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\n  token: t0ken-for-cli\n\
         health:\n  recovery_interval: 1h\n  max_recovery_interval: 1h\nbackends:\n{}  - address: \"{dead}\"\n    name: gone\n",
        b0.yaml("b0")
    );
    let d = daemon(&yaml);
    let web = d.web_addr().unwrap();
    let target = echo_server("127.0.0.1:0");
    wait_for("the start-up probes", IO_TIMEOUT, || {
        let (_, _, body) = get(web, "/api/stats?token=t0ken-for-cli", "");
        body.contains("\"state\":\"up\"") && body.contains("\"state\":\"down\"")
    });
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    let url = format!("http://{web}");
    let bin = env!("CARGO_BIN_EXE_socksbalance");
    let out = Command::new(bin).args(["status", "--url", &url, "--token", "t0ken-for-cli"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("1/2 up"), "{table}");
    assert!(
        lines[1].starts_with("NAME") && lines[1].contains("STATE") && lines[1].contains("WHY"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("b0") && lines[2].contains(&b0.addr.to_string()) && lines[2].contains(" up "),
        "{table}"
    );
    assert!(lines[3].starts_with("gone") && lines[3].contains("down"), "{table}");
    assert!(lines[3].contains("connection refused, down "), "the reason and for how long: {table}");

    // --json: the document itself, for scripts (the LuCI app's rpcd plugin).
    let out = Command::new(bin)
        .args(["status", "--json", "--url", &url, "--token", "t0ken-for-cli"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_yaml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(doc["backends"][1]["name"].as_str(), Some("gone"));
    assert_eq!(doc["backends"][1]["state"].as_str(), Some("down"));
    assert_eq!(doc["healthy_backends"].as_u64(), Some(1));

    // -c FILE: the address and the token come from the daemon's config.
    let dir = std::env::temp_dir().join(format!("socksbalance-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("daemon.yaml");
    std::fs::write(&config, yaml.replace("listen: 127.0.0.1:0\n  token", &format!("listen: {web}\n  token")))
        .unwrap();
    let out = Command::new(bin).arg("status").arg("-c").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = String::from_utf8(out.stdout).unwrap();
    let row = again.lines().nth(3).unwrap_or_default();
    assert!(row.starts_with("gone") && row.contains("connection refused, down "), "{again}");
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(bin).args(["status", "--url", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"), "says how to authenticate");

    // Plain words for a refusal and for a daemon that does not answer.
    let closed = closed_port();
    let out = Command::new(bin).args(["status", "--url", &format!("http://{closed}")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach") && stderr.contains("connection refused"), "{stderr}");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(bin)
        .args(["status", "--url", &format!("http://{}", silent.local_addr().unwrap())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no answer within 5s") && !stderr.contains("os error"), "{stderr}");
}

#[test]
fn the_gate_bounds_head_size_time_and_connections() {
    use socksbalance::web::gate::{HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD};
    let d = web_daemon("", &[&Backend::start(Behaviour::Proxy)]);
    let web = d.web_addr().unwrap();
    let target = echo_server("127.0.0.1:0");

    // A head over the limit is refused without reading further.
    let (status, _, _) = get(web, &format!("/?{}", "a".repeat(MAX_HEAD + 10)), "");
    assert_eq!(status, 431);

    // Slow clients: each holds one of the gate's places until the head
    // timeout; past the limit, clients are turned away at once.
    let start = std::time::Instant::now();
    let mut slow: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect(web).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s
        })
        .collect();
    wait_for("the gate to be full", IO_TIMEOUT, || get(web, "/healthz", "").0 == 503);
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    let mut answer = String::new();
    slow[0].read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(start.elapsed() >= HEAD_TIMEOUT.mul_f64(0.9), "408 came after {:?}", start.elapsed());
    drop(slow);
    wait_for("the gate to have room again", IO_TIMEOUT, || get(web, "/healthz", "").0 == 200);
}
