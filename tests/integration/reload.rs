//! Reloading the configuration under load: tunnels carry on, unchanged
//! backends keep their state, listeners move without a gap, and a reload
//! that cannot be applied changes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use socksbalance::health::State;
use socksbalance::Config;

use crate::support::*;

fn config(listen: &str, backends: &[&Backend], extra: &str) -> Config {
    let mode = if extra.contains("mode:") { "" } else { "mode: socks5\n" };
    let mut yaml = format!("listen: {listen}\n{mode}health:\n  check_interval: 1h\n{extra}backends:\n");
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&b.yaml(&format!("b{i}")));
    }
    Config::from_yaml(&yaml).unwrap()
}

fn echo_once(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).unwrap();
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, what);
}

#[test]
fn a_reload_adds_a_backend_which_then_takes_traffic() {
    let b0 = Backend::start(Behaviour::Proxy);
    let b1 = Backend::start(Behaviour::Proxy);
    let d = socksbalance::Daemon::start(config("127.0.0.1:0", &[&b0], ""), 2).unwrap();
    let target = echo_server("127.0.0.1:0");
    for _ in 0..3 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let summary = d.reload(config("127.0.0.1:0", &[&b0, &b1], "")).unwrap();
    assert!(summary.contains("1 kept, 1 new, 0 removed"), "{summary}");
    for _ in 0..4 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    assert_eq!(b1.request_count(), 2, "the new backend takes its share");
    assert_eq!(b0.request_count(), 5);
    assert_eq!(d.snapshot().pool.backends()[0].stats.connections.get(), 5, "b0's counters carried over");
}

#[test]
fn a_tunnel_keeps_transferring_across_a_reload_that_removes_its_backend() {
    for mode_yaml in ["", "mode: transparent\n"] {
        let old = Backend::start(Behaviour::Proxy);
        let new = Backend::start(Behaviour::Proxy);
        let d = socksbalance::Daemon::start(config("127.0.0.1:0", &[&old], mode_yaml), 2).unwrap();
        let target = echo_server("127.0.0.1:0");
        let (code, mut tunnel) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0);
        echo_once(&mut tunnel, b"before");
        d.reload(config("127.0.0.1:0", &[&new], mode_yaml)).unwrap();
        // The open tunnel still runs through the removed backend...
        for i in 0..20 {
            echo_once(&mut tunnel, &pattern(10_000, i));
        }
        // ...while new clients go to the new one.
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
        assert_eq!((old.request_count(), new.request_count()), (1, 1), "{mode_yaml:?}");
        drop(tunnel);
    }
}

#[test]
fn breaker_state_and_counters_survive_for_unchanged_backends() {
    let bad = Backend::start(Behaviour::CloseAfterGreeting);
    let good = Backend::start(Behaviour::Proxy);
    let extra = Backend::start(Behaviour::Proxy);
    let d = socksbalance::Daemon::start(config("127.0.0.1:0", &[&bad, &good], ""), 2).unwrap();
    let target = echo_server("127.0.0.1:0");
    for _ in 0..6 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let before = d.snapshot();
    assert_eq!(before.pool.backends()[0].health.state(), State::Open);
    d.reload(config("127.0.0.1:0", &[&bad, &good, &extra], "")).unwrap();
    let after = d.snapshot();
    assert_eq!(after.pool.backends()[0].health.state(), State::Open, "the open circuit stays open");
    assert!(Arc::ptr_eq(&before.pool.backends()[1].stats, &after.pool.backends()[1].stats));
    assert!(Arc::ptr_eq(&before.pool.backends()[1].health, &after.pool.backends()[1].health));
    assert_eq!(after.pool.backends()[2].stats.connections.get(), 0);
    for _ in 0..6 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    assert_eq!(bad.request_count(), 0, "the broken backend still gets no clients");
}

#[test]
fn a_listen_change_binds_the_new_address_before_closing_the_old() {
    let b = Backend::start(Behaviour::Proxy);
    let d = socksbalance::Daemon::start(config("127.0.0.1:0", &[&b], ""), 2).unwrap();
    let old_addr = d.local_addrs()[0];
    let target = echo_server("127.0.0.1:0");
    let (code, mut tunnel) = socks_connect(old_addr, &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    d.reload(config("'[::1]:0'", &[&b], "")).unwrap();
    let new_addr = d.local_addrs()[0];
    assert!(new_addr.is_ipv6(), "{new_addr}");
    assert_echo(new_addr, &Dest::Ip(target), None);
    assert!(TcpStream::connect(old_addr).is_err(), "the old listener still accepts");
    echo_once(&mut tunnel, b"tunnels on the old listener carry on");
}

#[test]
fn a_reload_that_cannot_bind_changes_nothing() {
    let b0 = Backend::start(Behaviour::Proxy);
    let b1 = Backend::start(Behaviour::Proxy);
    let d = socksbalance::Daemon::start(config("127.0.0.1:0", &[&b0], ""), 2).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = format!("['127.0.0.1:0', '{}']", taken.local_addr().unwrap());
    let err = d.reload(config(&listen, &[&b1], "")).unwrap_err();
    assert!(matches!(err, socksbalance::server::ReloadError::Listen(_)), "{err}");
    assert!(err.to_string().contains(&taken.local_addr().unwrap().to_string()), "{err}");
    let target = echo_server("127.0.0.1:0");
    assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    assert_eq!((b0.request_count(), b1.request_count()), (1, 0), "the old backends still serve");
    assert_eq!(d.local_addrs().len(), 1);
}

/// The regression: a reload that changed only weights reported every
/// backend as removed and added again, and wiped their counters and
/// health.
#[test]
fn a_changed_weight_keeps_the_backends_counters_and_health() {
    let b0 = Backend::start(Behaviour::Proxy);
    let b1 = Backend::start(Behaviour::Proxy);
    let weighted = |w: u32| {
        let yaml = format!(
            "listen: 127.0.0.1:0\nmode: socks5\nbalancer:\n  algorithm: weighted\nhealth:\n  check_interval: 1h\n\
             backends:\n  - {{address: \"{}\", name: b0, weight: {w}}}\n  - {{address: \"{}\", name: b1}}\n",
            b0.addr, b1.addr
        );
        Config::from_yaml(&yaml).unwrap()
    };
    let d = socksbalance::Daemon::start(weighted(1), 1).unwrap();
    let target = echo_server("127.0.0.1:0");
    for _ in 0..2 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let before = d.snapshot();
    let summary = d.reload(weighted(3)).unwrap();
    assert!(summary.contains("2 kept, 0 new, 0 removed"), "{summary}");
    let after = d.snapshot();
    for i in 0..2 {
        assert!(
            Arc::ptr_eq(&before.pool.backends()[i].stats, &after.pool.backends()[i].stats),
            "b{i} counters"
        );
        assert!(
            Arc::ptr_eq(&before.pool.backends()[i].health, &after.pool.backends()[i].health),
            "b{i} health"
        );
    }
    assert_eq!(after.pool.backends()[0].config.weight.get(), 3, "the new weight applies");
    assert_eq!(
        after.pool.backends()[0].stats.connections.get() + after.pool.backends()[1].stats.connections.get(),
        2
    );
}
