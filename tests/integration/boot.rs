//! The first second: clients are served from the first connection, while
//! the start-up probes are still finding out which backends are alive
//! (issue 16). A SocksBalance-style port range where only some instances
//! run, and the shipped example config on a machine without Tor.
//!
//! The live backends are microsocks (Debian's) when it is installed, as
//! on CI, and the in-process test proxy otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A live SOCKS5 backend on `listener`'s port: microsocks if installed,
/// else the in-process proxy. Returns once it accepts connections.
enum Live {
    Microsocks(Child),
    /// Serves until dropped with the test.
    #[allow(dead_code)]
    InProcess(Backend),
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Live::Microsocks(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn microsocks_installed() -> bool {
    Command::new("microsocks").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn live(listener: TcpListener) -> Live {
    if !microsocks_installed() {
        return Live::InProcess(Backend::serve(listener, Behaviour::Proxy, None));
    }
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let child = Command::new("microsocks")
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("microsocks starts");
    wait_for("microsocks to listen", IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    Live::Microsocks(child)
}

/// `n` client connections, one after another from the moment the daemon
/// listens; each must get through to the echo target and back.
fn failures_among(proxy: SocketAddr, target: SocketAddr, n: usize) -> Vec<String> {
    let mut failed = Vec::new();
    for k in 0..n {
        let result = socks_connect(proxy, &Dest::Ip(target), None).and_then(|(code, mut s)| {
            if code != 0 {
                return Err(std::io::Error::other(format!("reply {code:#04x}")));
            }
            s.write_all(b"ok")?;
            let mut back = [0u8; 2];
            s.read_exact(&mut back)?;
            Ok(())
        });
        if let Err(e) = result {
            failed.push(format!("connection {k}: {e}"));
        }
    }
    failed
}

#[test]
fn four_live_of_twenty_four_in_one_range_fail_no_client_from_the_first_connection() {
    for mode in ["socks5", "transparent"] {
        // Live at 0, 7, 13 and 20; the other twenty ports refuse.
        let (first, backends) = partly_live_range(24, &[0, 7, 13, 20], live);
        let target = echo_server("127.0.0.1:0");
        let start = Instant::now();
        let d = daemon(&format!(
            "{LISTEN}mode: {mode}\nbackends:\n  - address: \"127.0.0.1:{first}-{}\"\n    name: Tor\n",
            first + 23
        ));
        let failed = failures_among(d.local_addrs()[0], target, 600);
        assert!(failed.is_empty(), "{mode}: {} of 600 failed: {failed:?}", failed.len());
        // Every dead one was found out, each by its first failure.
        let snapshot = d.snapshot();
        let dead: Vec<usize> = (0..24).filter(|i| ![0, 7, 13, 20].contains(i)).collect();
        wait_for("every dead backend down", IO_TIMEOUT, || {
            dead.iter()
                .all(|&i| snapshot.pool.backends()[i].health.state() != socksbalance::health::State::Closed)
        });
        for &i in &dead {
            let stats = &snapshot.pool.backends()[i].stats;
            assert!(
                stats.attempts.get() <= 1,
                "{mode}: Tor#{} was tried {} times",
                i + 1,
                stats.attempts.get()
            );
        }
        eprintln!("{mode}: 600 connections in {:?}", start.elapsed());
        drop(backends);
    }
}

#[test]
fn the_example_config_without_tor_serves_every_connection_through_direct() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.example.yaml"))
            .expect("packaging/config.example.yaml");
    // Nothing listens on Tor's ports here (three closed ports stand in for
    // 9060-9062, which this machine might use), and both listeners go to
    // port 0.
    let closed = consecutive_listeners(3);
    let first = closed[0].local_addr().unwrap().port();
    drop(closed);
    let yaml = example
        .replace("127.0.0.1:9060-9062", &format!("127.0.0.1:{first}-{}", first + 2))
        .replace("listen: \"127.0.0.1:1080\"", "listen: \"127.0.0.1:0\"")
        .replace("listen: \"127.0.0.1:8080\"", "listen: \"127.0.0.1:0\"");
    assert!(yaml.contains(&format!("{first}-")), "the example config changed shape:\n{yaml}");
    let d = daemon(&yaml);
    let target = echo_server("127.0.0.1:0");
    let failed = failures_among(d.local_addrs()[0], target, 100);
    assert!(failed.is_empty(), "{} of 100 failed: {failed:?}", failed.len());
}

#[test]
fn a_refused_backend_costs_a_client_under_five_milliseconds() {
    // Ten dead ports before one live backend, round robin: a client whose
    // picks hit dead ports first still connects at once.
    let (first, mut live) = partly_live_range(11, &[10], |l| Backend::serve(l, Behaviour::Proxy, None));
    let live = live.remove(0);
    let target = echo_server("127.0.0.1:0");
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nbackends:\n  - address: \"127.0.0.1:{first}-{}\"\n",
        first + 10
    ));
    let start = Instant::now();
    let failed = failures_among(d.local_addrs()[0], target, 1);
    let took = start.elapsed();
    assert!(failed.is_empty(), "{failed:?}");
    let tried = (0..10).map(|i| d.snapshot().pool.backends()[i].stats.attempts.get()).sum::<u64>();
    // Each refused attempt is a loopback SYN answered by RST; the budget
    // is 5 ms each, plus the one that works and slack for a loaded CI
    // machine (a connect timeout per dead port would be seconds).
    assert!(
        took < Duration::from_millis(5) * (tried as u32 + 1) + Duration::from_millis(200),
        "{tried} refused attempts took {took:?}"
    );
    assert!(live.request_count() >= 1);
}
