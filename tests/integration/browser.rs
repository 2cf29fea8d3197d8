//! The dashboard in a real browser: headless Chromium renders the page
//! against live data and dumps the DOM. Skipped with a notice where
//! Chromium is missing; .ci/run installs it, so CI always runs these.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::web::get;

pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        eprintln!("NOTICE: chromium not on PATH; skipping the browser test (.ci/run installs it)");
    }
    found
}

/// Loads `url` headless, lets the page run for `budget_ms` of virtual
/// time, and returns the serialized DOM. Bounded by a wall-clock limit.
fn dump_dom(browser: &str, url: &str, budget_ms: u32) -> String {
    dump_dom_with(browser, url, budget_ms, &[])
}

/// [`dump_dom`] with more command-line switches (a proxy, say).
pub fn dump_dom_with(browser: &str, url: &str, budget_ms: u32, extra: &[&str]) -> String {
    // A profile of its own per run: two Chromiums on one profile make the
    // second hand over to the first and exit with nothing (tests run in
    // parallel).
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("socksbalance-chromium-{}-{run}", std::process::id()));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(profile);
    reader.join().unwrap()
}

#[test]
fn dashboard_renders_backend_rows_and_sparklines() {
    let Some(browser) = chromium() else { return };
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let mut yaml = format!("{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\nbackends:\n");
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&b.yaml(&format!("proxy-{i}")));
    }
    let d = daemon(&yaml);
    let target = echo_server("127.0.0.1:0");
    let web = d.web_addr().unwrap();
    wait_for("every backend up", IO_TIMEOUT, || {
        get(web, "/api/stats", "").2.contains("\"healthy_backends\":3")
    });
    // Three samples per backend, so each sparkline has a line to draw.
    for _ in 0..9 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let dom = dump_dom(browser, &format!("http://{}/", d.web_addr().unwrap()), 4000);
    // Only the rendered table counts (the inline script holds the same tags
    // as string literals).
    let rows = dom
        .split("<tbody id=\"rows\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no rendered table:\n{dom}"));
    assert_eq!(rows.matches("<tr class=\"backend").count(), 3, "backend rows:\n{rows}");
    for i in 0..3 {
        assert!(rows.contains(&format!("data-name=\"proxy-{i}\"")), "row for proxy-{i} missing");
    }
    let sparklines = rows.matches("<svg class=\"spark\"").count();
    let drawn = rows
        .split("<svg class=\"spark\"")
        .skip(1)
        .filter(|s| s.split("</svg>").next().unwrap().contains("<polyline"))
        .count();
    assert_eq!((sparklines, drawn), (3, 3), "every backend has a drawn sparkline");
    assert_eq!(rows.matches("badge up").count(), 3, "state badges");
    assert!(dom.contains("3 / 3"), "healthy tile");
    assert!(dom.contains("id=\"dot\" class=\"ok\""), "all up: a green indicator");
    assert!(!dom.contains("id=\"banner\" class=\"show\""), "no disconnected banner");
}

#[test]
fn dashboard_tiles_split_connections_by_protocol_and_show_dns() {
    let Some(browser) = chromium() else { return };
    let yaml = "listen:\n  - 127.0.0.1:0\n  - {address: \"127.0.0.2:0\", protocol: http}\nmode: socks5\n\
        web:\n  enabled: true\n  listen: 127.0.0.1:0\ndns:\n  listen: 127.0.0.1:0\n  upstreams: [127.0.0.1]\n\
        backends:\n  - direct: true\n";
    let d = daemon(yaml);
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    let mut http = std::net::TcpStream::connect(d.local_addrs()[1]).unwrap();
    std::io::Write::write_all(&mut http, format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    http.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut http, &mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Garbage to the DNS listener: one query, one failure (FORMERR).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    udp.send_to(b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03ab", d.dns_addr().unwrap()).unwrap();
    udp.recv(&mut [0u8; 512]).expect("FORMERR");
    let dom = dump_dom(browser, &format!("http://{}/", d.web_addr().unwrap()), 3000);
    assert!(dom.contains("<span>Connections</span><b>2<small>SOCKS5 1 · HTTP 1</small></b>"), "{dom}");
    assert!(dom.contains("<span>DNS</span><b>1<small>0 cached · 1 failed</small></b>"), "{dom}");
}

/// A stand-in daemon: serves the real dashboard page, and /api/stats with
/// a canned document, except that the first `fail` requests for it get no
/// answer at all (the daemon is "gone").
fn flaky_stats_server(stats_json: String, fail: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let head = read_request_head(&mut s).unwrap_or_default();
            let line = head.lines().next().unwrap_or("").to_owned();
            let (ctype, body) = if line.starts_with("GET /api/stats") {
                if seen.fetch_add(1, Ordering::SeqCst) < fail {
                    continue; // drop the connection unanswered
                }
                ("application/json", stats_json.clone())
            } else if line.starts_with("GET / ") {
                ("text/html; charset=utf-8", socksbalance::web::DASHBOARD.to_owned())
            } else {
                ("text/plain", String::new())
            };
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
    (addr, calls)
}

#[test]
fn dashboard_shows_disconnected_and_recovers_by_itself() {
    let Some(browser) = chromium() else { return };
    let backend = Backend::start(Behaviour::Proxy);
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\n  refresh_interval: 1\nbackends:\n{}",
        backend.yaml("only")
    ));
    let (_, _, stats) = get(d.web_addr().unwrap(), "/api/stats", "");

    // Gone for good: the page says so.
    let (down, _) = flaky_stats_server(stats.clone(), usize::MAX);
    let dom = dump_dom(browser, &format!("http://{down}/"), 3000);
    assert!(dom.contains("id=\"banner\" class=\"show\""), "no disconnected banner:\n{dom}");
    assert!(dom.contains("id=\"dot\" class=\"down\""));

    // Gone for the first three polls, then back: the page recovers alone.
    let (flaky, calls) = flaky_stats_server(stats, 3);
    let dom = dump_dom(browser, &format!("http://{flaky}/"), 12_000);
    assert!(calls.load(Ordering::SeqCst) >= 4, "the page stopped polling");
    assert!(!dom.contains("id=\"banner\" class=\"show\""), "still disconnected:\n{dom}");
    assert!(dom.contains("data-name=\"only\""), "rows not rendered after recovery");
}

/// Uplinks in the table: interface and address in the address column, a
/// "link down" badge for an interface the kernel reports down (here: one
/// that does not exist), and a proxy pinned to it shown "via" it.
#[cfg(target_os = "linux")]
#[test]
fn dashboard_shows_uplinks_with_interface_address_and_link_state() {
    let Some(browser) = chromium() else { return };
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\nbackends:\n  \
         - {{name: wan-up, interface: lo, bind: 127.0.0.1}}\n  - {{name: wan-gone, interface: sbnone0}}\n  \
         - {{name: pinned, address: \"127.0.0.1:9\", via: wan-gone}}\n"
    ));
    let web = d.web_addr().unwrap();
    wait_for("the link states", IO_TIMEOUT, || get(web, "/api/stats", "").2.contains("\"link\":\"down\""));
    let dom = dump_dom(browser, &format!("http://{web}/"), 3000);
    let rows = dom
        .split("<tbody id=\"rows\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no rendered table:\n{dom}"));
    let row = |name: &str| {
        rows.split("<tr ")
            .find(|r| r.contains(&format!("data-name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{rows}"))
    };
    assert!(row("wan-up").contains(">lo 127.0.0.1<"), "{}", row("wan-up"));
    assert!(row("wan-up").contains("badge up"), "{}", row("wan-up"));
    assert!(
        row("wan-gone").contains("badge down\"") && row("wan-gone").contains(">link down<"),
        "{}",
        row("wan-gone")
    );
    assert!(
        row("wan-gone").contains("interface down") && !row("wan-gone").contains("100%"),
        "{}",
        row("wan-gone")
    );
    assert!(row("wan-gone").contains(">sbnone0 no address<"), "{}", row("wan-gone"));
    assert!(row("pinned").contains(">127.0.0.1:9 via wan-gone<"), "{}", row("pinned"));
}

/// The rendered `<tbody>` of a dashboard DOM.
fn rendered_rows(dom: &str) -> &str {
    dom.split("<tbody id=\"rows\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no rendered table:\n{dom}"))
}

/// Issue 16: the indicator is red with no backend up and amber with some
/// down; a down backend's row says why and since when, with no stale
/// latency; rows stay in config order; no backends is said in words.
#[test]
fn dashboard_tells_down_backends_and_their_reasons_at_a_glance() {
    let Some(browser) = chromium() else { return };
    let (dead1, dead2) = (closed_port(), closed_port());
    let health = "health:\n  recovery_interval: 1h\n  max_recovery_interval: 1h\n";
    let web_yaml = "web:\n  enabled: true\n  listen: 127.0.0.1:0\n";
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\n{web_yaml}{health}backends:\n  - {{address: \"{dead1}\", name: Dead#10}}\n  \
         - {{address: \"{dead2}\", name: Dead#2}}\n"
    ));
    let web = d.web_addr().unwrap();
    wait_for("both down", IO_TIMEOUT, || {
        get(web, "/api/stats", "").2.matches("\"state\":\"down\"").count() == 2
    });
    let dom = dump_dom(browser, &format!("http://{web}/"), 3000);
    assert!(dom.contains("id=\"dot\" class=\"bad\""), "red at 0 up:\n{dom}");
    let rows = rendered_rows(&dom);
    assert!(rows.contains("badge down"), "{rows}");
    assert!(rows.contains("<b>connection refused</b>"), "the reason:\n{rows}");
    assert!(rows.contains("title=\"since ") && rows.contains(">down "), "since when:\n{rows}");
    assert!(!rows.contains(" ms<"), "no latency for a down backend:\n{rows}");
    assert!(rows.contains("next probe in"), "{rows}");
    // Config order, not text order (Dead#10 before Dead#2 in the config).
    assert!(rows.find("Dead#10").unwrap() < rows.find("Dead#2").unwrap(), "{rows}");

    let good = Backend::start(Behaviour::Proxy);
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\n{web_yaml}{health}backends:\n{}  - {{address: \"{dead1}\", name: gone}}\n",
        good.yaml("good")
    ));
    let web = d.web_addr().unwrap();
    wait_for("one up, one down", IO_TIMEOUT, || {
        get(web, "/api/stats", "").2.contains("\"healthy_backends\":1")
    });
    wait_for("one down", IO_TIMEOUT, || get(web, "/api/stats", "").2.contains("\"state\":\"down\""));
    let dom = dump_dom(browser, &format!("http://{web}/"), 3000);
    assert!(dom.contains("id=\"dot\" class=\"warn\""), "amber with some down:\n{dom}");

    // No backends at all (`interfaces: auto` on a host with no usable
    // interface): the stats document with its list emptied.
    let (_, _, stats) = get(web, "/api/stats", "");
    let cut = stats.find("\"backends\":[").unwrap();
    let empty = format!("{}\"backends\":[]}}", &stats[..cut])
        .replace("\"total_backends\":2", "\"total_backends\":0")
        .replace("\"healthy_backends\":1", "\"healthy_backends\":0");
    let (canned, _) = flaky_stats_server(empty, 0);
    let dom = dump_dom(browser, &format!("http://{canned}/"), 3000);
    assert!(rendered_rows(&dom).contains("No backends configured"), "{dom}");
    assert!(dom.contains("id=\"dot\" class=\"bad\""), "{dom}");
}
