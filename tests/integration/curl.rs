//! Real curl as the client. Skipped with a notice where curl is missing;
//! .ci/run installs it, so CI always runs these.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;

use crate::support::*;

fn have_curl() -> bool {
    installed("curl", "the curl test")
}

/// A one-file HTTP server: answers every request with `body`.
fn http_server(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let body = body.clone();
            thread::spawn(move || {
                if read_request_head(&mut stream).is_none() {
                    return;
                }
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    addr
}

fn curl(proxy_url: &str, url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--proxy", proxy_url, url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn curl_downloads_through_every_mode() {
    if !have_curl() {
        return;
    }
    let body = pattern(300_000, 11);
    let web = http_server(body.clone());
    let url = format!("http://localhost:{}/file", web.port());

    // The embedded default's shape: a direct backend.
    let direct = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let got = curl(&format!("socks5h://{}", direct.local_addrs()[0]), &url);
    assert!(got == body, "direct: body differs ({} bytes)", got.len());

    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = daemon(&format!("{LISTEN}mode: {mode}\nbackends:\n{}", backend.yaml("b")));
        let got = curl(&format!("socks5h://{}", d.local_addrs()[0]), &url);
        assert!(got == body, "{mode}: body differs ({} bytes)", got.len());
        assert_eq!(
            backend.requests.lock().unwrap()[0],
            format!("localhost:{}", web.port()),
            "curl sent the name"
        );
    }

    let authed = daemon(&format!(
        "{LISTEN}mode: socks5\nauth:\n  users: [{{username: alice, password: wonderland}}]\nbackends:\n  - direct: true\n"
    ));
    let got = curl(&format!("socks5h://alice:wonderland@{}", authed.local_addrs()[0]), &url);
    assert!(got == body, "auth: body differs");
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "20", "--proxy"])
        .arg(format!("socks5h://alice:wrong@{}", authed.local_addrs()[0]))
        .arg(&url)
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl succeeded with a wrong password");
}
