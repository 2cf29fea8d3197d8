//! Both modes, all three address types, and the credentials on each hop.

use crate::support::*;

fn config(mode: &str, backend: &Backend) -> String {
    format!("{LISTEN}mode: {mode}\nbackends:\n{}", backend.yaml("b"))
}

fn every_address_type(mode: &str) {
    let backend = Backend::start(Behaviour::Proxy);
    let d = daemon(&config(mode, &backend));
    let proxy = d.local_addrs()[0];
    let v4 = echo_server("127.0.0.1:0");
    let v6 = echo_server("[::1]:0");
    assert_echo(proxy, &Dest::Ip(v4), None);
    assert_echo(proxy, &Dest::Ip(v6), None);
    assert_echo(proxy, &Dest::Name("localhost", v4.port()), None);
    // The backend, not us, saw (and would resolve) the name.
    let seen = backend.requests.lock().unwrap().clone();
    assert_eq!(seen, [v4.to_string(), v6.to_string(), format!("localhost:{}", v4.port())]);
}

#[test]
fn socks5_mode_serves_ipv4_ipv6_and_domain() {
    every_address_type("socks5");
}

#[test]
fn transparent_mode_serves_ipv4_ipv6_and_domain() {
    every_address_type("transparent");
}

#[test]
fn direct_backend_resolves_names_itself() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let proxy = d.local_addrs()[0];
    let v4 = echo_server("127.0.0.1:0");
    let v6 = echo_server("[::1]:0");
    assert_echo(proxy, &Dest::Ip(v4), None);
    assert_echo(proxy, &Dest::Ip(v6), None);
    assert_echo(proxy, &Dest::Name("localhost", v4.port()), None);
}

#[test]
fn direct_backend_works_in_transparent_mode_too() {
    let d = daemon(&format!("{LISTEN}mode: transparent\nbackends:\n  - direct: true\n"));
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Name("localhost", target.port()), None);
}

#[test]
fn client_auth_accepts_the_right_password() {
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nauth:\n  users:\n    - {{username: alice, password: wonderland}}\n    - {{username: bob, password: builder}}\nbackends:\n  - direct: true\n"
    ));
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), Some(("bob", "builder")));
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), Some(("alice", "wonderland")));
}

#[test]
fn client_auth_rejects_a_wrong_password_with_status_1_and_closes() {
    use std::io::{Read, Write};
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nauth:\n  users: [{{username: alice, password: wonderland}}]\nbackends:\n  - direct: true\n"
    ));
    let mut s = connect(d.local_addrs()[0]);
    s.write_all(&[5, 1, 2]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 2]);
    s.write_all(b"\x01\x05alice\x05wrong").unwrap();
    let mut status = [0u8; 2];
    s.read_exact(&mut status).unwrap();
    assert_eq!(status, [1, 1], "RFC 1929 failure status");
    assert!(is_closed(&mut s), "connection closed after a failed login");
}

#[test]
fn client_auth_refuses_clients_that_offer_no_login() {
    use std::io::{Read, Write};
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nauth:\n  users: [{{username: a, password: b}}]\nbackends:\n  - direct: true\n"
    ));
    let mut s = connect(d.local_addrs()[0]);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0xFF], "no acceptable methods");
    assert!(is_closed(&mut s));
}

#[test]
fn backend_credentials_are_presented_in_socks5_mode() {
    let backend = Backend::start_with(Behaviour::Proxy, Some(("upstream-user", "upstream-pass")));
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nbackends:\n  - {{address: \"{}\", username: upstream-user, password: upstream-pass}}\n",
        backend.addr
    ));
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
}

#[test]
fn wrong_backend_credentials_give_the_client_a_general_failure() {
    let backend = Backend::start_with(Behaviour::Proxy, Some(("upstream-user", "upstream-pass")));
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nbackends:\n  - {{address: \"{}\", username: upstream-user, password: nope}}\n",
        backend.addr
    ));
    let target = echo_server("127.0.0.1:0");
    let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0x01);
}

#[test]
fn transparent_mode_passes_the_clients_own_login_to_the_backend() {
    let backend = Backend::start_with(Behaviour::Proxy, Some(("carol", "secret")));
    let d = daemon(&config("transparent", &backend));
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), Some(("carol", "secret")));
    let err = socks_connect(d.local_addrs()[0], &Dest::Ip(target), Some(("carol", "wrong"))).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
}

#[test]
fn socks5_mode_reports_the_backends_bound_address() {
    let backend = Backend::start(Behaviour::Proxy);
    for mode in ["socks5", "transparent"] {
        let d = daemon(&config(mode, &backend));
        let target = echo_server("127.0.0.1:0");
        let mut s = connect(d.local_addrs()[0]);
        use std::io::{Read, Write};
        s.write_all(&[5, 1, 0]).unwrap();
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).unwrap();
        s.write_all(&connect_request(&Dest::Ip(target))).unwrap();
        let (code, reply) = read_reply(&mut s).unwrap();
        assert_eq!(code, 0);
        assert_eq!(reply, [5, 0, 0, 1, 10, 9, 8, 7, 0x12, 0x34], "{mode}");
    }
}

#[test]
fn listen_on_several_addresses() {
    let d = daemon("listen: ['127.0.0.1:0', '[::1]:0']\nmode: socks5\nbackends:\n  - direct: true\n");
    assert_eq!(d.local_addrs().len(), 2);
    let target = echo_server("127.0.0.1:0");
    for addr in d.local_addrs() {
        assert_echo(addr, &Dest::Ip(target), None);
    }
}
