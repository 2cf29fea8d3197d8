//! Access control and resource limits: who may connect, where to, how
//! many, and that abusive clients cannot starve a normal one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn direct(extra: &str) -> socksbalance::Daemon {
    daemon(&format!("{LISTEN}mode: socks5\n{extra}backends:\n  - direct: true\n"))
}

#[test]
fn clients_outside_allow_are_closed_before_a_byte_is_read() {
    let d = daemon(
        "listen: ['127.0.0.1:0', '[::1]:0']\nmode: socks5\nallow: ['::1/128']\nbackends:\n  - direct: true\n",
    );
    let target = echo_server("127.0.0.1:0");
    let (v4, v6) = (d.local_addrs()[0], d.local_addrs()[1]);
    let mut refused = connect(v4);
    let _ = refused.write_all(&[5, 1, 0]);
    let mut buf = [0u8; 2];
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "a client outside `allow` got an answer");
    assert_echo(v6, &Dest::Ip(target), None);
    assert_eq!(d.stats().denied_clients.get(), 1);
}

#[test]
fn deny_destinations_are_answered_with_not_allowed() {
    let target = echo_server("127.0.0.1:0");
    let other = echo_server("127.0.0.1:0");
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = daemon(&format!(
            "{LISTEN}mode: {mode}\ndeny_destinations: ['127.0.0.1:{}']\nbackends:\n{}",
            target.port(),
            backend.yaml("b")
        ));
        let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0x02, "{mode}: not allowed by ruleset");
        let (code, _) =
            socks_connect(d.local_addrs()[0], &Dest::Name("localhost", target.port()), None).unwrap();
        assert_eq!(code, 0x02, "{mode}: localhost is checked too");
        assert_echo(d.local_addrs()[0], &Dest::Ip(other), None);
        assert_eq!(
            backend.requests.lock().unwrap().len(),
            1,
            "{mode}: denied requests never reach the backend"
        );
    }
}

#[test]
fn a_direct_backend_resolves_then_checks_the_rules() {
    let target = echo_server("127.0.0.1:0");
    let d = direct("deny_destinations: ['127.0.0.0/8']\n");
    // A name that resolves into a denied block: only direct backends can see it.
    let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Name("localhost", target.port()), None).unwrap();
    assert_eq!(code, 0x02);
}

#[test]
fn the_proxy_never_connects_to_itself() {
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nweb:\n  enabled: true\n  listen: 127.0.0.1:0\nbackends:\n  - direct: true\n"
    ));
    let own = d.local_addrs()[0];
    let web = d.web_addr().unwrap();
    for dest in [Dest::Ip(own), Dest::Ip(web), Dest::Name("localhost", own.port())] {
        let (code, _) = socks_connect(own, &dest, None).unwrap();
        assert_eq!(code, 0x02);
    }
    let target = echo_server("127.0.0.1:0");
    assert_echo(own, &Dest::Ip(target), None);
    assert_eq!(d.stats().accepted.get(), 4, "no looped connection came back in");
}

#[test]
fn over_max_connections_clients_get_a_general_failure_at_once() {
    let d = direct("limits:\n  max_connections: 2\n");
    let target = echo_server("127.0.0.1:0");
    let (_, t1) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    let (_, t2) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    let start = Instant::now();
    let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0x01);
    assert!(start.elapsed() < Duration::from_secs(2), "refusal took {:?}", start.elapsed());
    assert_eq!(d.stats().refused_busy.get(), 1);
    let report = socksbalance::web::report::gather(&d.snapshot(), d.stats(), Instant::now());
    assert!(socksbalance::web::report::to_json(&report).contains("\"clients_refused\":1"));
    drop((t1, t2));
    wait_for("the tunnels to close", IO_TIMEOUT, || {
        d.stats().open.load(std::sync::atomic::Ordering::Relaxed) == 0
    });
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
}

#[test]
fn max_connections_per_client_limits_one_address_only() {
    let d = daemon(
        "listen: ['127.0.0.1:0', '[::1]:0']\nmode: socks5\nlimits:\n  max_connections_per_client: 1\nbackends:\n  - direct: true\n",
    );
    let target = echo_server("127.0.0.1:0");
    let (v4, v6) = (d.local_addrs()[0], d.local_addrs()[1]);
    let (code, held) = socks_connect(v4, &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    let (code, _) = socks_connect(v4, &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0x01, "a second connection from 127.0.0.1");
    assert_echo(v6, &Dest::Ip(target), None);
    drop(held);
    wait_for("the slot to free", IO_TIMEOUT, || {
        socks_connect(v4, &Dest::Ip(target), None).map(|(c, _)| c == 0).unwrap_or(false)
    });
}

#[test]
fn a_thousand_silent_or_slow_clients_do_not_delay_a_normal_one() {
    let d = direct("limits:\n  max_connections: 2048\n  handshake_timeout: 30s\n");
    let proxy = d.local_addrs()[0];
    let target = echo_server("127.0.0.1:0");
    let mut abusers = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = TcpStream::connect(proxy).unwrap();
        if i % 2 == 1 {
            // The first byte of a greeting, and then nothing more.
            s.write_all(&[5]).unwrap();
        }
        abusers.push(s);
    }
    wait_for("all abusers accepted", IO_TIMEOUT, || d.stats().accepted.get() >= 1000);
    let start = Instant::now();
    assert_echo(proxy, &Dest::Ip(target), None);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "a normal client waited {took:?} behind 1,000 slow ones");
    drop(abusers);
}
