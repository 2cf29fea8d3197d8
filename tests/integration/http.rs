//! The HTTP proxy and mixed inbounds, with real clients where they are
//! installed (curl, Python's urllib, wget, Chromium: .ci/run installs
//! them) and a raw socket for every status code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::support::*;

fn have(program: &str) -> bool {
    installed(program, "its part of the HTTP proxy test")
}

/// A web server: answers every request with `body` and echoes the
/// request's path and body length in headers, for the tests to check.
fn web_server(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let body = body.clone();
            thread::spawn(move || {
                let Some(head) = read_request_head(&mut stream) else { return };
                // A request body, by Content-Length only (what the tests send).
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Content-Length: ").or_else(|| l.strip_prefix("content-length: "))
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let mut got = vec![0u8; length];
                if stream.read_exact(&mut got).is_err() {
                    return;
                }
                let line = head.lines().next().unwrap_or_default().to_owned();
                let hop = head.lines().any(|l| l.to_ascii_lowercase().starts_with("proxy-"));
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Request: {line}\r\nX-Body: {}\r\nX-Hop: {hop}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    got.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    addr
}

fn http_daemon(extra: &str, backends: &str) -> socksbalance::Daemon {
    daemon(&format!(
        "listen:\n  - {{address: \"127.0.0.1:0\", protocol: http}}\n  - {{address: \"127.0.0.2:0\", protocol: mixed}}\n\
         mode: socks5\n{extra}backends:\n{backends}"
    ))
}

fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One raw exchange: sends `request`, returns everything until the proxy
/// closes (or the timeout).
fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn curl_fetches_through_the_http_proxy_in_absolute_form_and_through_connect() {
    if !have("curl") {
        return;
    }
    let body = pattern(500_000, 3);
    let web = web_server(body.clone());
    let backend = Backend::start(Behaviour::Proxy);
    let d = http_daemon("", &backend.yaml("b"));
    let url = format!("http://localhost:{}/file?x=1", web.port());
    for proxy in d.local_addrs() {
        let proxy = format!("http://{proxy}");
        let (ok, got, err) = curl(&["--proxy", &proxy, &url]);
        assert!(ok && got == body, "absolute form via {proxy}: {err} ({} bytes)", got.len());
        let (ok, got, err) = curl(&["--proxytunnel", "--proxy", &proxy, &url]);
        assert!(ok && got == body, "CONNECT via {proxy}: {err} ({} bytes)", got.len());
    }
    // The name went to the backend, as socks5h would send it.
    assert!(backend.requests.lock().unwrap().iter().all(|r| *r == format!("localhost:{}", web.port())));
    // The origin saw origin-form and no proxy headers.
    let (_, head, _) = curl(&["--head", "--proxy", &format!("http://{}", d.local_addrs()[0]), &url]);
    let head = String::from_utf8_lossy(&head);
    assert!(head.contains("X-Request: HEAD /file?x=1 HTTP/1.1"), "{head}");
    assert!(head.contains("X-Hop: false"), "{head}");
    // A request body goes through intact.
    let (ok, got, err) = curl(&[
        "--include",
        "--data-binary",
        "0123456789",
        "--proxy",
        &format!("http://{}", d.local_addrs()[0]),
        &url,
    ]);
    assert!(
        ok && String::from_utf8_lossy(&got).contains("X-Body: 10"),
        "{err} {}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn curl_reaches_a_tls_server_through_connect() {
    if !have("curl") || !have("openssl") || !have("python3") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("socksbalance-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made no certificate");
    std::fs::write(dir.join("index.html"), "hello over tls\n").unwrap();
    // Python's own TLS server on port 0; it prints the port when ready.
    let script = "import http.server, ssl, sys, os\n\
                  os.chdir(sys.argv[1])\n\
                  s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
                  c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                  c.load_cert_chain('cert.pem', 'key.pem')\n\
                  s.socket = c.wrap_socket(s.socket, server_side=True)\n\
                  print(s.server_address[1], flush=True)\n\
                  s.serve_forever()\n";
    let mut server = Command::new("python3")
        .args(["-c", script])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    let mut out = server.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        port.push(byte[0] as char);
    }
    let d = http_daemon("", "  - direct: true\n");
    let (ok, got, err) = curl(&[
        "--insecure",
        "--proxy",
        &format!("http://{}", d.local_addrs()[0]),
        &format!("https://localhost:{}/index.html", port.trim()),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&got), "hello over tls\n");
}

#[test]
fn proxy_authorization_basic_gates_http_clients() {
    if !have("curl") {
        return;
    }
    let web = web_server(b"ok".to_vec());
    let d = http_daemon("auth:\n  users: [{username: alice, password: wonderland}]\n", "  - direct: true\n");
    let proxy = format!("http://{}", d.local_addrs()[0]);
    let url = format!("http://127.0.0.1:{}/", web.port());
    let code = |extra: &[&str]| {
        let mut args = vec!["--output", "/dev/null", "--write-out", "%{http_code}", "--proxy", &proxy];
        args.extend_from_slice(extra);
        args.push(&url);
        String::from_utf8(curl(&args).1).unwrap()
    };
    assert_eq!(code(&[]), "407");
    assert_eq!(code(&["--proxy-user", "alice:wrong"]), "407");
    assert_eq!(code(&["--proxy-user", "alice:wonderland"]), "200");
    let answer = exchange(d.local_addrs()[0], format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert!(answer.contains("Proxy-Authenticate: Basic realm=\"socksbalance\""), "{answer}");
    // CONNECT too.
    let (ok, _, _) = curl(&["--proxytunnel", "--fail", "--proxy", &proxy, &url]);
    assert!(!ok, "CONNECT without a login");
    let (ok, got, err) =
        curl(&["--proxytunnel", "--proxy-user", "alice:wonderland", "--proxy", &proxy, &url]);
    assert!(ok && got == b"ok", "{err}");
}

#[test]
fn python_urllib_and_wget_use_it_as_their_http_proxy() {
    let web = web_server(pattern(100_000, 9));
    let d = http_daemon("", "  - direct: true\n");
    let proxy = format!("http://{}", d.local_addrs()[0]);
    let url = format!("http://127.0.0.1:{}/py", web.port());
    if have("python3") {
        let script = "import sys, urllib.request, hashlib\n\
                      o = urllib.request.build_opener(urllib.request.ProxyHandler({'http': sys.argv[1]}))\n\
                      print(len(o.open(sys.argv[2], timeout=20).read()))\n";
        let out = Command::new("python3").args(["-c", script, &proxy, &url]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
    }
    if have("wget") {
        let out = Command::new("wget")
            .args(["-q", "-O", "-", "--timeout=20", "--tries=1", "-e", "use_proxy=yes", "-e"])
            .arg(format!("http_proxy={proxy}"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, pattern(100_000, 9));
    }
}

#[test]
fn chromium_loads_a_page_through_the_http_proxy() {
    let Some(browser) = crate::browser::chromium() else { return };
    let web = web_server(b"<html><body><p id=x>through the proxy</p></body></html>".to_vec());
    let d = http_daemon("", "  - direct: true\n");
    let before = d.stats().accepted.get();
    let proxy = format!("--proxy-server=http://{}", d.local_addrs()[0]);
    // Chromium sends loopback around any proxy unless told not to.
    let dom = crate::browser::dump_dom_with(
        browser,
        &format!("http://127.0.0.1:{}/", web.port()),
        2000,
        &[&proxy, "--proxy-bypass-list=<-loopback>"],
    );
    assert!(dom.contains("through the proxy"), "{dom}");
    assert!(d.stats().accepted.get() > before, "the page did not come through the proxy");
}

#[test]
fn a_mixed_port_serves_socks5_and_http_clients() {
    if !have("curl") {
        return;
    }
    let body = pattern(50_000, 5);
    let web = web_server(body.clone());
    let d = http_daemon("web:\n  enabled: true\n  listen: 127.0.0.1:0\n", "  - direct: true\n");
    let mixed = d.local_addrs()[1];
    let url = format!("http://127.0.0.1:{}/", web.port());
    for proxy in [format!("socks5h://{mixed}"), format!("http://{mixed}")] {
        let (ok, got, err) = curl(&["--proxy", &proxy, &url]);
        assert!(ok && got == body, "{proxy}: {err}");
    }
    assert_echo(mixed, &Dest::Ip(echo_server("127.0.0.1:0")), None);
    // Counted by what each client spoke, in the API and the metrics.
    let api = d.web_addr().unwrap();
    let (_, _, stats) = crate::web::get(api, "/api/stats", "");
    assert!(stats.contains("\"inbound\":{\"socks5\":2,\"http\":1,\"redirect\":0,\"tproxy\":0}"), "{stats}");
    assert!(stats.contains("\"dns\":null"), "{stats}");
    let (_, _, metrics) = crate::web::get(api, "/metrics", "");
    assert!(metrics.contains("socksbalance_inbound_clients_total{protocol=\"http\"} 1"), "{metrics}");
}

#[test]
fn bytes_pipelined_behind_connect_are_not_lost() {
    let target = echo_server("127.0.0.1:0");
    let d = http_daemon("", "  - direct: true\n");
    let mut s = TcpStream::connect(d.local_addrs()[0]).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The head and the first payload in one write.
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nhello, pipelined").as_bytes())
        .unwrap();
    let expect = "HTTP/1.1 200 Connection established\r\n\r\nhello, pipelined";
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expect);
}

#[test]
fn a_dead_and_a_blackholed_backend_cost_http_clients_nothing() {
    let web = web_server(b"fine".to_vec());
    let live: Vec<Backend> = (0..2).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let black = Backend::start(Behaviour::Blackhole);
    let dead = closed_port();
    let backends = format!(
        "{}{}{}  - address: \"{dead}\"\n    name: dead\n",
        live[0].yaml("live0"),
        black.yaml("black"),
        live[1].yaml("live1")
    );
    let d = http_daemon("health:\n  connect_timeout: 500ms\n", &backends);
    for i in 0..20 {
        let answer = exchange(
            d.local_addrs()[i % 2],
            format!("GET http://{web}/ HTTP/1.1\r\nHost: {web}\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("fine"), "request {i}: {answer}");
    }
}

#[test]
fn every_refusal_is_an_http_answer_with_its_status() {
    let closed = closed_port();
    let slow = Backend::start(Behaviour::Slow(Duration::from_secs(3)));
    let target = echo_server("127.0.0.1:0");
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or_default().to_owned();

    let d = http_daemon(
        "limits:\n  handshake_timeout: 1s\ndeny_destinations: [\"192.0.2.0/24\"]\n",
        "  - direct: true\n",
    );
    let p = d.local_addrs()[0];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("400", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("400", b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
        ("403", b"CONNECT 192.0.2.7:443 HTTP/1.1\r\n\r\n".to_vec()),
        ("431", format!("GET http://{target}/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)).into_bytes()),
        ("431", format!("GET http://{target}/ HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(101)).into_bytes()),
        ("502", format!("CONNECT {closed} HTTP/1.1\r\n\r\n").into_bytes()),
        ("408", b"GET http://127.0.0.1/ HTTP/1.1\r\nHost:".to_vec()),
    ];
    for (want, request) in cases {
        let answer = exchange(p, &request);
        assert_eq!(
            status(&answer),
            want,
            "{}: {answer}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert!(answer.contains("Content-Length: ") && answer.contains("Connection: close"), "{answer}");
    }
    let refused = exchange(p, format!("CONNECT {closed} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(refused.ends_with("connection refused\n"), "the reason is in the body: {refused}");

    // 504: the backend takes longer than request_timeout to answer.
    let d = http_daemon("health:\n  request_timeout: 1s\n", &slow.yaml("slow"));
    let answer = exchange(d.local_addrs()[0], format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(status(&answer), "504", "{answer}");

    // 502: no backend at all can be reached.
    let d = http_daemon("", &format!("  - address: \"{closed}\"\n"));
    let answer = exchange(d.local_addrs()[0], format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(status(&answer), "502", "{answer}");

    // 403 for a client outside `allow`, before a byte is read.
    let d = http_daemon("allow: [10.0.0.0/8]\n", "  - direct: true\n");
    let answer = exchange(d.local_addrs()[0], b"");
    assert_eq!(status(&answer), "403", "{answer}");

    // 503 over max_connections: one tunnel is held open.
    let d = http_daemon("limits:\n  max_connections: 1\n", "  - direct: true\n");
    let mut held = TcpStream::connect(d.local_addrs()[0]).unwrap();
    held.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    let mut ok = [0u8; 39];
    held.read_exact(&mut ok).unwrap();
    let answer = exchange(d.local_addrs()[0], format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(status(&answer), "503", "{answer}");
}
