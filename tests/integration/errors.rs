//! Failures get the right SOCKS5 reply, and bad clients don't hurt others.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use crate::support::*;

fn single_backend(mode: &str, addr: std::net::SocketAddr) -> socksbalance::Daemon {
    daemon(&format!(
        "{LISTEN}mode: {mode}\nhealth:\n  connect_timeout: 2s\nbackends:\n  - address: \"{addr}\"\n"
    ))
}

#[test]
fn a_refusing_backend_gives_a_general_failure_reply() {
    for mode in ["socks5", "transparent"] {
        let d = single_backend(mode, closed_port());
        let target = echo_server("127.0.0.1:0");
        let (code, mut s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0x01, "{mode}");
        assert!(is_closed(&mut s), "{mode}");
        assert_eq!(d.snapshot().pool.backends()[0].stats.failures.get(), 1, "{mode}");
    }
}

#[test]
fn a_backend_closing_mid_handshake_gives_a_general_failure_reply() {
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::CloseAfterGreeting);
        let d = single_backend(mode, backend.addr);
        let target = echo_server("127.0.0.1:0");
        let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0x01, "{mode}");
    }
}

#[test]
fn destination_failure_codes_reach_the_client_unchanged() {
    for mode in ["socks5", "transparent"] {
        for code in [0x02u8, 0x03, 0x04, 0x05, 0x06] {
            let backend = Backend::start(Behaviour::Reply(code));
            let d = single_backend(mode, backend.addr);
            let (got, _) =
                socks_connect(d.local_addrs()[0], &Dest::Name("example.invalid", 80), None).unwrap();
            assert_eq!(got, code, "{mode}");
            let failures = d.snapshot().pool.backends()[0].stats.failures.get();
            let blames = code == 0x02; // not a destination problem
            assert_eq!(failures, u64::from(blames), "{mode} code {code:#04x}");
        }
    }
}

#[test]
fn direct_connect_to_a_closed_port_is_connection_refused() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(closed_port()), None).unwrap();
    assert_eq!(code, 0x05);
}

#[test]
fn a_client_sending_one_byte_at_a_time_is_served() {
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = single_backend(mode, backend.addr);
        let target = echo_server("127.0.0.1:0");
        let mut s = connect(d.local_addrs()[0]);
        s.set_nodelay(true).unwrap();
        let trickle = |s: &mut std::net::TcpStream, bytes: &[u8]| {
            for b in bytes {
                s.write_all(&[*b]).unwrap();
                thread::sleep(Duration::from_millis(2));
            }
        };
        trickle(&mut s, &[5, 2, 0, 2]);
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).unwrap();
        assert_eq!(choice, [5, 0], "{mode}");
        trickle(&mut s, &connect_request(&Dest::Name("localhost", target.port())));
        let (code, _) = read_reply(&mut s).unwrap();
        assert_eq!(code, 0, "{mode}");
        trickle(&mut s, b"slow");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"slow");
    }
}

/// Sends `bytes` as a client and returns what the daemon answered before
/// closing.
fn answer_to(proxy: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(proxy);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn malformed_clients_are_closed_and_the_daemon_keeps_serving() {
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = single_backend(mode, backend.addr);
        let proxy = d.local_addrs()[0];
        let target = echo_server("127.0.0.1:0");
        // Garbage and foreign protocols: closed without a reply.
        assert_eq!(answer_to(proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), b"", "{mode}: HTTP");
        assert_eq!(answer_to(proxy, &[4, 1, 0, 80, 127, 0, 0, 1, 0]), b"", "{mode}: SOCKS4");
        assert_eq!(answer_to(proxy, &[5, 0]), b"", "{mode}: zero methods");
        assert_eq!(answer_to(proxy, &[5]), b"", "{mode}: truncated greeting");
        assert_eq!(answer_to(proxy, &[]), b"", "{mode}: nothing");
        // Bad requests after a good greeting: the protocol's reply, then close.
        let unknown_atyp = answer_to(proxy, &[5, 1, 0, 5, 1, 0, 9, 1, 2, 3]);
        assert_eq!(unknown_atyp, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0], "{mode}: unknown ATYP");
        let unknown_cmd = answer_to(proxy, &[5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(unknown_cmd, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0], "{mode}: unknown CMD");
        let truncated_request = answer_to(proxy, &[5, 1, 0, 5, 1, 0, 3, 200, b'a']);
        assert_eq!(truncated_request, [5, 0], "{mode}: truncated request");
        // And a well-behaved client is still served.
        assert_echo(proxy, &Dest::Ip(target), None);
    }
}

#[test]
fn bind_gets_command_not_supported_in_socks5_mode() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let reply = answer_to(d.local_addrs()[0], &[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]);
    assert_eq!(reply, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    // UDP ASSOCIATE is served (tests/integration/udp.rs).
}

#[test]
fn a_255_byte_domain_is_carried_whole() {
    let backend = Backend::start(Behaviour::Reply(0x04));
    let d = single_backend("socks5", backend.addr);
    let name = "a".repeat(255);
    let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Name(&name, 443), None).unwrap();
    assert_eq!(code, 0x04);
    assert_eq!(backend.requests.lock().unwrap()[0], format!("{name}:443"));
}

#[test]
fn a_client_offering_only_login_to_a_dead_backend_in_transparent_mode_gets_no_acceptable_method() {
    let d = single_backend("transparent", closed_port());
    let reply = answer_to(d.local_addrs()[0], &[5, 1, 2]);
    assert_eq!(reply, [5, 0xFF]);
}
