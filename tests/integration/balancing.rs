//! How connections spread over backends, measured on real connections.

use crate::support::*;

fn spread(algorithm: &str, weights: &[u32], connections: usize) -> Vec<usize> {
    let backends: Vec<Backend> = weights.iter().map(|_| Backend::start(Behaviour::Proxy)).collect();
    let mut yaml = format!("{LISTEN}mode: socks5\nbalancer:\n  algorithm: {algorithm}\nbackends:\n");
    for (b, w) in backends.iter().zip(weights) {
        yaml.push_str(&format!("  - {{address: \"{}\", weight: {w}}}\n", b.addr));
    }
    let d = daemon(&yaml);
    let target = echo_server("127.0.0.1:0");
    for _ in 0..connections {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    backends.iter().map(Backend::request_count).collect()
}

#[test]
fn round_robin_spreads_evenly() {
    assert_eq!(spread("roundrobin", &[1, 1, 1, 1], 40), [10, 10, 10, 10]);
}

#[test]
fn weighted_follows_the_weights() {
    assert_eq!(spread("weighted", &[3, 1], 40), [30, 10]);
}

#[test]
fn least_connections_spreads_sequential_connections() {
    // With one connection at a time every backend is idle, so ties rotate.
    let counts = spread("least_connections", &[1, 1, 1], 30);
    assert_eq!(counts, [10, 10, 10]);
}

#[test]
fn random_reaches_every_backend() {
    let counts = spread("random", &[1, 1, 1], 60);
    assert_eq!(counts.iter().sum::<usize>(), 60);
    assert!(counts.iter().all(|&n| n >= 5), "{counts:?}");
}

#[test]
fn port_range_expands_to_one_backend_per_port() {
    let listeners = consecutive_listeners(3);
    let first = listeners[0].local_addr().unwrap().port();
    let backends: Vec<Backend> =
        listeners.into_iter().map(|l| Backend::serve(l, Behaviour::Proxy, None)).collect();
    let d = daemon(&format!(
        "{LISTEN}mode: transparent\nbackends:\n  - address: \"127.0.0.1:{first}-{}\"\n    name: Range\n",
        first + 2
    ));
    let target = echo_server("127.0.0.1:0");
    for _ in 0..9 {
        assert_echo(d.local_addrs()[0], &Dest::Ip(target), None);
    }
    let counts: Vec<usize> = backends.iter().map(Backend::request_count).collect();
    assert_eq!(counts, [3, 3, 3]);
}
