//! Adaptive health with real failing backends: failover, circuit breakers
//! on their schedule, probes, outages, and the selection filters.
//!
//! Intervals are shortened (100–300 ms) so the schedule can be watched;
//! assertions on timing have generous upper bounds for a loaded CI box.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socksbalance::health::State;
use socksbalance::Daemon;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Health settings for tests: quick timeouts, no routine probes (an hour
/// between checks), so only failures and recoveries cause probes.
fn health(extra: &str) -> String {
    format!(
        "health:\n  connect_timeout: 300ms\n  request_timeout: 1s\n  check_interval: 1h\n  \
         recovery_interval: 150ms\n  max_recovery_interval: 600ms\n{extra}"
    )
}

/// [`health`] for tests that assert an open circuit: it stays open for the
/// rest of the test, however slow the machine (with [`health`]'s 150 ms it
/// can turn half-open before the assertion).
fn health_no_recovery() -> String {
    health("").replace(
        "recovery_interval: 150ms\n  max_recovery_interval: 600ms",
        "recovery_interval: 1h\n  max_recovery_interval: 1h",
    )
}

/// A daemon over `backends`, returned once its start-up probes are done:
/// these tests are about what happens after (boot.rs is about before).
fn daemon_with(mode: &str, backends: &[&Backend], extra: &str) -> Daemon {
    let mut yaml = format!("{LISTEN}mode: {mode}\n{extra}backends:\n");
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&b.yaml(&format!("b{i}")));
    }
    let d = daemon(&yaml);
    settled(&d);
    d
}

fn state(d: &Daemon, i: usize) -> State {
    d.snapshot().pool.backends()[i].health.state()
}

/// `n` echo round trips through the daemon; every one must succeed.
fn all_succeed(proxy: SocketAddr, target: SocketAddr, n: usize) {
    for k in 0..n {
        let (code, mut s) = socks_connect(proxy, &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0, "connection {k} failed with {code:#04x}");
        use std::io::{Read, Write};
        s.write_all(b"ok").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
    }
}

/// For each failing behaviour, in both modes: clients never see the
/// failure, the bad backend's circuit opens after the threshold, and then
/// it gets no more client traffic.
#[test]
fn clients_never_see_a_failing_backend() {
    let behaviours = [
        ("blackhole", Behaviour::Blackhole),
        ("closes mid-handshake", Behaviour::CloseAfterGreeting),
        ("closes after the request", Behaviour::CloseAfterRequest),
        ("general failure reply", Behaviour::Reply(0x01)),
        ("not allowed reply", Behaviour::Reply(0x02)),
        ("command not supported reply", Behaviour::Reply(0x07)),
        ("address type not supported reply", Behaviour::Reply(0x08)),
    ];
    for mode in ["socks5", "transparent"] {
        for (name, behaviour) in &behaviours {
            let bad = Backend::start(behaviour.clone());
            let good = Backend::start(Behaviour::Proxy);
            let d = daemon_with(mode, &[&bad, &good], &health_no_recovery());
            let target = echo_server("127.0.0.1:0");
            all_succeed(d.local_addrs()[0], target, 12);
            // Clients or the start-up probe find it (a blackholed probe
            // takes its connect_timeout, and clients prefer the backend
            // that has answered meanwhile).
            wait_for(&format!("{mode}/{name}: the circuit to open"), WAIT, || state(&d, 0) == State::Open);
            // circuit_threshold counts consecutive failures of real
            // connections and of the early probes they trigger together.
            let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
            let attempts = stats.attempts.get();
            assert!(
                attempts <= 3,
                "{mode}/{name}: {attempts} real attempts (the start-up probe may have found it first)"
            );
            assert_eq!(stats.failures.get() + stats.timeouts.get(), attempts, "{mode}/{name}");
            if *name == "blackhole" {
                assert_eq!(stats.timeouts.get(), attempts, "{mode}: a blackhole is a timeout");
            }
            assert_eq!(good.request_count(), 12, "{mode}/{name}: every client served by the good backend");
        }
    }
}

#[test]
fn a_refusing_backend_fails_over() {
    for mode in ["socks5", "transparent"] {
        let good = Backend::start(Behaviour::Proxy);
        let refused = closed_port();
        let d = daemon(&format!(
            "{LISTEN}mode: {mode}\n{}backends:\n  - address: \"{refused}\"\n{}",
            health_no_recovery(),
            good.yaml("good")
        ));
        let target = echo_server("127.0.0.1:0");
        all_succeed(d.local_addrs()[0], target, 10);
        assert_eq!(state(&d, 0), State::Open, "{mode}");
        assert!(d.snapshot().pool.backends()[0].stats.attempts.get() <= 3, "{mode}");
        assert_eq!(good.request_count(), 10, "{mode}");
    }
}

#[test]
fn destination_failures_do_not_open_the_breaker() {
    for mode in ["socks5", "transparent"] {
        for code in [0x03u8, 0x04, 0x05, 0x06] {
            let backend = Backend::start(Behaviour::Reply(code));
            let d = daemon_with(mode, &[&backend], &health(""));
            for _ in 0..8 {
                let (got, _) =
                    socks_connect(d.local_addrs()[0], &Dest::Name("gone.invalid", 80), None).unwrap();
                assert_eq!(got, code);
            }
            assert_eq!(state(&d, 0), State::Closed, "{mode}: code {code:#04x} opened the breaker");
            let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
            assert_eq!(stats.failures.get(), 0, "{mode}");
            assert_eq!(stats.attempts.get(), 8, "{mode}");
        }
    }
}

#[test]
fn a_destination_failure_is_retried_once_on_another_backend() {
    let refuses = Backend::start(Behaviour::Reply(0x05));
    let works = Backend::start(Behaviour::Proxy);
    let d = daemon_with("socks5", &[&refuses, &works], &health(""));
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 6);
    assert_eq!(works.request_count(), 6);
    assert_eq!(state(&d, 0), State::Closed);
}

/// The recovery probes of an open circuit follow the documented backoff:
/// recovery_interval, doubling, capped at max_recovery_interval.
#[test]
fn breaker_recovery_follows_the_backoff_schedule() {
    let flaky = Backend::start(Behaviour::Proxy);
    let good = Backend::start(Behaviour::Proxy);
    let d = daemon_with("socks5", &[&flaky, &good], &health(""));
    let target = echo_server("127.0.0.1:0");
    settled(&d);
    flaky.set_up(false);
    all_succeed(d.local_addrs()[0], target, 6);
    assert_eq!(state(&d, 0), State::Open);
    // Let any early probe from before the opening finish, then take the
    // opening time from the breaker itself.
    let health = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].health);
    wait_for("early probes to finish", WAIT, || !health.probing());
    let (retry_at, backoff) = (health.report(Instant::now()).next_probe.unwrap(), health.backoff());
    assert_eq!(backoff, Duration::from_millis(150));
    let opened = retry_at - backoff;
    let before = flaky.accept_times.lock().unwrap().len();
    // Expected probe gaps: 150, 300, 600, 600 ms (jitter adds up to 10 %).
    wait_for("four recovery probes", WAIT, || flaky.accept_times.lock().unwrap().len() >= before + 4);
    let times: Vec<Instant> = flaky.accept_times.lock().unwrap()[before..before + 4].to_vec();
    let mut gaps = vec![times[0].saturating_duration_since(opened)];
    gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
    let expected = [150u64, 300, 600, 600];
    for (gap, want) in gaps.iter().zip(expected) {
        let want = Duration::from_millis(want);
        assert!(*gap >= want.mul_f64(0.8), "probe gaps {gaps:?}, expected about {expected:?} ms");
        assert!(
            *gap <= want + Duration::from_millis(400),
            "probe gaps {gaps:?}, expected about {expected:?} ms"
        );
    }
    // Comes back: the next probe closes the circuit and traffic returns.
    flaky.set_up(true);
    wait_for("the circuit to close", WAIT, || state(&d, 0) == State::Closed);
    let served = flaky.request_count();
    all_succeed(d.local_addrs()[0], target, 6);
    assert!(flaky.request_count() > served, "recovered backend got no traffic");
}

#[test]
fn a_flapping_backend_never_costs_a_client_its_connection() {
    let flappy = Backend::start(Behaviour::Proxy);
    let steady = Backend::start(Behaviour::Proxy);
    let d = daemon_with("transparent", &[&flappy, &steady], &health(""));
    let target = echo_server("127.0.0.1:0");
    settled(&d);
    for round in 0..3 {
        flappy.set_up(false);
        all_succeed(d.local_addrs()[0], target, 8);
        assert_eq!(state(&d, 0), State::Open, "round {round}");
        flappy.set_up(true);
        wait_for("recovery", WAIT, || state(&d, 0) == State::Closed);
        all_succeed(d.local_addrs()[0], target, 4);
    }
}

#[test]
fn all_backends_down_is_an_outage_not_a_race_to_max_backoff() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Behaviour::Proxy)).collect();
    for b in &backends {
        b.set_up(false);
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let d = daemon_with("socks5", &refs, &health(""));
    let target = echo_server("127.0.0.1:0");
    // Clients get a prompt general failure, not a hang.
    for _ in 0..4 {
        let start = Instant::now();
        let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0x01);
        assert!(start.elapsed() < Duration::from_secs(3));
    }
    let snapshot = d.snapshot();
    let pool = &snapshot.pool;
    wait_for("every circuit open", WAIT, || (0..3).all(|i| state(&d, i) != State::Closed));
    // The outage window is 1 s here (2 × connect_timeout, at least 1 s).
    wait_for("outage detection", WAIT, || pool.outage());
    // Several failed recovery probes later, backoff is still the base.
    let probes_before: usize = backends.iter().map(Backend::accepted).sum();
    wait_for("more recovery probes", WAIT, || {
        backends.iter().map(Backend::accepted).sum::<usize>() >= probes_before + 9
    });
    for (i, b) in pool.backends().iter().enumerate() {
        assert_eq!(b.health.backoff(), Duration::from_millis(150), "backend {i} backed off");
    }
    // One comes back: the outage ends and clients are served again.
    backends[1].set_up(true);
    wait_for("backend 1 recovers", WAIT, || state(&d, 1) == State::Closed);
    assert!(!pool.outage());
    all_succeed(d.local_addrs()[0], target, 3);
}

#[test]
fn a_failed_real_connection_triggers_an_early_probe() {
    let sick = Backend::start(Behaviour::Proxy);
    let good = Backend::start(Behaviour::Proxy);
    // A high circuit threshold: the breaker alone would not react yet.
    let d = daemon_with("socks5", &[&sick, &good], &health("  circuit_threshold: 10\n"));
    let target = echo_server("127.0.0.1:0");
    settled(&d);
    sick.set_up(false);
    let before = sick.accepted();
    all_succeed(d.local_addrs()[0], target, 1);
    // The client's attempt, then a probe that nothing else would send (no
    // routine probes for an hour, the circuit far from its threshold).
    wait_for("an early probe", WAIT, || sick.accepted() >= before + 2);
    assert_eq!(d.snapshot().pool.backends()[0].stats.attempts.get(), 1, "one real attempt");
    drop(d);
}

#[test]
fn http_probes_check_the_test_url_through_the_backend() {
    let web = http_status_server(200);
    let backend = Backend::start(Behaviour::Proxy);
    let d = daemon_with(
        "socks5",
        &[&backend],
        &format!(
            "health:\n  test_url: http://localhost:{}/generate_204\n  check_interval: 200ms\n  \
             passive_monitoring: false\n",
            web.port()
        ),
    );
    wait_for("two probes", WAIT, || backend.request_count() >= 2);
    assert_eq!(backend.requests.lock().unwrap()[0], format!("localhost:{}", web.port()));
    let health = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].health);
    wait_for("a latency sample", WAIT, || health.latency().is_some());
    assert_eq!(health.state(), State::Closed);
}

#[test]
fn a_failing_test_url_marks_the_backend_unhealthy_after_failure_threshold() {
    // SocksBalance's way (no passive monitoring): a backend that has
    // worked is marked down after failure_threshold failed probes.
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
    let web = http_status_server_with(std::sync::Arc::clone(&status));
    let backend = Backend::start(Behaviour::Proxy);
    let d = daemon_with(
        "socks5",
        &[&backend],
        &format!(
            "health:\n  test_url: http://127.0.0.1:{}/\n  check_interval: 100ms\n  passive_monitoring: false\n  \
             failure_threshold: 2\n  circuit_threshold: 50\n  recovery_interval: 1h\n  max_recovery_interval: 1h\n",
            web.port()
        ),
    );
    settled(&d);
    assert_eq!(state(&d, 0), State::Closed);
    status.store(503, std::sync::atomic::Ordering::SeqCst);
    let before = backend.request_count();
    wait_for("the circuit to open", WAIT, || state(&d, 0) == State::Open);
    // A probe may have been on its way when the status changed.
    let failed = backend.request_count() - before;
    assert!((2..=3).contains(&failed), "opened after {failed} probes, failure_threshold is 2");
}

#[test]
fn a_backend_that_never_answered_is_down_at_its_first_failed_probe() {
    let web = http_status_server(503);
    let backend = Backend::start(Behaviour::Proxy);
    let d = daemon_with(
        "socks5",
        &[&backend],
        &format!(
            "health:\n  test_url: http://127.0.0.1:{}/\n  check_interval: 1h\n  passive_monitoring: false\n  \
             recovery_interval: 1h\n  max_recovery_interval: 1h\n",
            web.port()
        ),
    );
    wait_for("the circuit to open", WAIT, || state(&d, 0) == State::Open);
    assert_eq!(backend.request_count(), 1, "one probe, at start");
    let inner = d.snapshot().pool.backends()[0].health.last_error();
    assert_eq!(inner.as_deref(), Some("test URL answered 503"));
}

#[test]
fn https_test_url_probes_only_the_connect() {
    let backend = Backend::start(Behaviour::Reply(0x00));
    let d = daemon_with(
        "socks5",
        &[&backend],
        "health:\n  test_url: https://www.example.com\n  check_interval: 100ms\n  passive_monitoring: false\n",
    );
    wait_for("a probe", WAIT, || backend.request_count() >= 1);
    assert_eq!(backend.requests.lock().unwrap()[0], "www.example.com:443");
    wait_for("a latency sample", WAIT, || d.snapshot().pool.backends()[0].health.latency().is_some());
}

#[test]
fn passive_mode_sends_no_routine_probes_to_backends_that_carry_traffic() {
    let busy = Backend::start(Behaviour::Proxy);
    let idle = Backend::start(Behaviour::Proxy);
    // Passive (the default) with a 200 ms interval: a backend that real
    // traffic reaches within every interval gets no probe after the one
    // at start, and an idle one is probed every interval.
    let d = daemon_with(
        "socks5",
        &[&busy, &idle],
        "balancer:\n  max_active_backends: 1\nhealth:\n  check_interval: 200ms\n",
    );
    settled(&d);
    let target = echo_server("127.0.0.1:0");
    let start = Instant::now();
    let probes = |b: &Backend| b.accepted() - b.request_count();
    let idle_before = probes(&idle);
    // Traffic for 1.4 s (seven intervals), only to the busy backend:
    // the idle one is out of the active set.
    for _ in 0..5_000 {
        if start.elapsed() >= Duration::from_millis(1400) {
            break;
        }
        let (code, _s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0);
    }
    assert!(probes(&busy) <= 2, "the busy backend was probed {} times", probes(&busy));
    assert!(
        probes(&idle) >= idle_before + 4,
        "the idle backend was probed {} times",
        probes(&idle) - idle_before
    );
    drop(d);
}

#[test]
fn transparent_failover_replays_the_clients_login_and_request() {
    for first in [Behaviour::CloseAfterGreeting, Behaviour::CloseAfterRequest, Behaviour::Reply(0x01)] {
        let bad = Backend::start_with(first.clone(), Some(("dora", "explorer")));
        let good = Backend::start_with(Behaviour::Proxy, Some(("dora", "explorer")));
        let d = daemon_with("transparent", &[&bad, &good], &health(""));
        let target = echo_server("127.0.0.1:0");
        assert_echo(d.local_addrs()[0], &Dest::Name("localhost", target.port()), Some(("dora", "explorer")));
        assert_eq!(good.request_count(), 1, "{first:?}");
        assert_eq!(good.requests.lock().unwrap()[0], format!("localhost:{}", target.port()), "{first:?}");
    }
}

#[test]
fn sticky_sessions_keep_each_client_on_its_backend() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let mut yaml =
        "listen: ['127.0.0.1:0', '[::1]:0']\nmode: socks5\nbalancer:\n  sticky_session_ttl: 1m\nbackends:\n"
            .to_owned();
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&b.yaml(&format!("b{i}")));
    }
    let d = daemon(&yaml);
    let target = echo_server("127.0.0.1:0");
    // Two clients: one from 127.0.0.1, one from ::1.
    for _ in 0..5 {
        for proxy in d.local_addrs() {
            all_succeed(proxy, target, 1);
        }
    }
    let mut counts: Vec<usize> = backends.iter().map(Backend::request_count).collect();
    counts.sort();
    assert_eq!(counts, [0, 5, 5], "each client stuck to one backend");
}

#[test]
fn sticky_destination_keeps_each_site_on_its_backend() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let d = daemon_with("socks5", &refs, "balancer:\n  sticky_session_ttl: 1m\n  sticky_key: destination\n");
    let sites = [echo_server("127.0.0.1:0"), echo_server("127.0.0.1:0")];
    for _ in 0..4 {
        for site in sites {
            all_succeed(d.local_addrs()[0], site, 1);
        }
    }
    for b in &backends {
        let seen: std::collections::BTreeSet<String> = b.requests.lock().unwrap().iter().cloned().collect();
        assert!(seen.len() <= 1, "one backend served two sites: {seen:?}");
    }
}

#[test]
fn max_active_backends_uses_the_best_and_brings_in_the_next() {
    let backends: Vec<Backend> = (0..4).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let d = daemon_with("socks5", &refs, &format!("balancer:\n  max_active_backends: 2\n{}", health("")));
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 10);
    let used = |b: &[Backend]| b.iter().filter(|b| b.request_count() > 0).count();
    assert_eq!(used(&backends), 2, "only two backends in use");
    let active: Vec<usize> = (0..4).filter(|&i| backends[i].request_count() > 0).collect();
    backends[active[0]].set_up(false);
    all_succeed(d.local_addrs()[0], target, 12);
    let now_used: Vec<usize> = (0..4).filter(|&i| backends[i].request_count() > 0).collect();
    assert_eq!(now_used.len(), 3, "a third backend was brought in: {now_used:?}");
}

#[test]
fn max_latency_skips_slow_backends() {
    let slow = Backend::start(Behaviour::Slow(Duration::from_millis(250)));
    let fast = Backend::start(Behaviour::Proxy);
    let d =
        daemon_with("socks5", &[&slow, &fast], &format!("balancer:\n  max_latency: 100ms\n{}", health("")));
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 2); // one each: both measured
    all_succeed(d.local_addrs()[0], target, 10);
    assert_eq!(slow.request_count(), 1, "the slow backend was used after its latency was known");
    assert_eq!(fast.request_count(), 11);
}

#[test]
fn max_latency_uses_the_fastest_when_all_are_slow() {
    let slower = Backend::start(Behaviour::Slow(Duration::from_millis(300)));
    let slow = Backend::start(Behaviour::Slow(Duration::from_millis(120)));
    let d =
        daemon_with("socks5", &[&slower, &slow], &format!("balancer:\n  max_latency: 50ms\n{}", health("")));
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 2);
    all_succeed(d.local_addrs()[0], target, 6);
    assert_eq!(slower.request_count(), 1);
    assert_eq!(slow.request_count(), 7);
}

#[test]
fn lowest_latency_prefers_the_fastest_backend() {
    let slow = Backend::start(Behaviour::Slow(Duration::from_millis(150)));
    let fast = Backend::start(Behaviour::Proxy);
    let d = daemon_with(
        "socks5",
        &[&slow, &fast],
        &format!("balancer:\n  algorithm: lowest_latency\n{}", health("")),
    );
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 10);
    assert_eq!(slow.request_count(), 1, "measured once, then avoided");
}

#[test]
fn a_thousand_backends_start_and_serve() {
    let real: Vec<Backend> = (0..4).map(|_| Backend::start(Behaviour::Proxy)).collect();
    let mut yaml = format!("{LISTEN}mode: socks5\nbackends:\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  - {{address: \"{}\", name: n{i}}}\n", real[i % 4].addr));
    }
    let start = Instant::now();
    let d = daemon(&yaml);
    assert_eq!(d.snapshot().pool.backends().len(), 1000);
    let target = echo_server("127.0.0.1:0");
    // The start-up probe round, 16 probes at a time; clients are served
    // meanwhile (boot.rs), but the exact spread is for a settled pool.
    settled(&d);
    all_succeed(d.local_addrs()[0], target, 40);
    let per_backend: Vec<usize> = real.iter().map(Backend::request_count).collect();
    assert_eq!(per_backend, [10, 10, 10, 10], "round robin over 1000 entries");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn probes_are_bounded_so_many_backends_never_stampede() {
    let hole = Backend::start(Behaviour::Blackhole);
    let mut yaml = format!(
        "{LISTEN}mode: socks5\nhealth:\n  passive_monitoring: false\n  check_interval: 500ms\n  \
         connect_timeout: 300ms\n  request_timeout: 300ms\nbackends:\n"
    );
    for i in 0..200 {
        yaml.push_str(&format!("  - {{address: \"{}\", name: n{i}}}\n", hole.addr));
    }
    let d = daemon(&yaml);
    // Each probe hangs for the whole connect timeout; unbounded, ~100
    // would be open at once.
    wait_for("a hundred probes", WAIT, || hole.accepted() >= 100);
    let limit = socksbalance::health::MAX_CONCURRENT_PROBES;
    // The daemon's own count is exact.
    let peak = d.snapshot().pool.probes().peak();
    assert!(peak <= limit, "{peak} probes at once");
    // The backend's count is independent of that bookkeeping but lags: it
    // sees a close only once its handler thread has read the EOF, after
    // the daemon has started the next probe. Unbounded it would be near
    // 100, so twice the limit still tells the two apart.
    let seen = hole.max_open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(seen <= 2 * limit, "the backend saw {seen} probes at once");
    assert!(seen >= 4, "probes did not run concurrently at all ({seen})");
    drop(d);
}

/// An HTTP server answering every request with `status`.
fn http_status_server(status: u16) -> SocketAddr {
    http_status_server_with(std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status)))
}

/// An HTTP server answering every request with the status `status` holds.
fn http_status_server_with(status: std::sync::Arc<std::sync::atomic::AtomicU16>) -> SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let status = status.load(std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                if read_request_head(&mut s).is_none() {
                    return;
                }
                let _ = s.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
            });
        }
    });
    addr
}

/// Issue 16: an idle backend that dies is reported down within
/// check_interval + connect_timeout, with no client involved.
#[test]
fn an_idle_backend_that_dies_is_reported_down_within_an_interval() {
    for how in ["closes at once", "goes silent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let spare = Backend::start(Behaviour::Proxy);
        let d = daemon(&format!(
            "{LISTEN}mode: socks5\nhealth:\n  check_interval: 300ms\n  connect_timeout: 200ms\n  \
             recovery_interval: 1h\n  max_recovery_interval: 1h\nbackends:\n{}{}",
            backend.yaml("idle"),
            spare.yaml("spare")
        ));
        settled(&d);
        assert_eq!(state(&d, 0), State::Closed);
        let died = Instant::now();
        match how {
            "closes at once" => backend.set_up(false),
            _ => backend.set_silent(true),
        }
        wait_for("the idle backend to be reported down", WAIT, || state(&d, 0) == State::Open);
        let took = died.elapsed();
        // 500 ms, and some slack for a loaded machine.
        assert!(
            took < Duration::from_millis(1_200),
            "{how}: down after {took:?}, check_interval + connect_timeout is 500 ms"
        );
        assert_eq!(d.snapshot().pool.backends()[0].stats.attempts.get(), 0, "{how}: no client was involved");
    }
}

/// Issue 16: with 20 dead and 4 live idle backends, no uplink outage is
/// ever declared, and the dead ones back off as usual.
#[test]
fn dead_backends_beside_live_idle_ones_are_no_outage_and_back_off() {
    let (first, _live) =
        partly_live_range(24, &[0, 7, 13, 20], |l| Backend::serve(l, Behaviour::Proxy, None));
    let d = daemon(&format!(
        "{LISTEN}mode: transparent\nhealth:\n  check_interval: 150ms\n  connect_timeout: 100ms\n  \
         recovery_interval: 100ms\n  max_recovery_interval: 400ms\nbackends:\n  - address: \"127.0.0.1:{first}-{}\"\n",
        first + 23
    ));
    let snapshot = d.snapshot();
    let pool = &snapshot.pool;
    let backed_off =
        || pool.backends().iter().filter(|b| b.health.backoff() == Duration::from_millis(400)).count();
    wait_for("the dead backends to reach the longest backoff", WAIT, || {
        assert!(!pool.outage(), "an outage was declared while four backends are up");
        backed_off() == 20
    });
    assert_eq!(pool.backends().iter().filter(|b| b.health.state() == State::Closed).count(), 4);
}

/// Issue 16, point 7: in transparent mode a backend that picks a method
/// the client did not offer is failed over and blamed, as in socks5 mode.
#[test]
fn transparent_mode_fails_over_from_a_backend_choosing_an_unoffered_method() {
    let bad = Backend::start(Behaviour::ChoosesMethod(0x02));
    let good = Backend::start(Behaviour::Proxy);
    let d = daemon_with("transparent", &[&bad, &good], &health_no_recovery());
    let target = echo_server("127.0.0.1:0");
    all_succeed(d.local_addrs()[0], target, 30);
    assert_eq!(good.request_count(), 30);
    let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
    assert!(stats.failures.get() >= 1, "the bad backend took no blame");
    wait_for("its circuit to open", WAIT, || state(&d, 0) == State::Open);
    let error = d.snapshot().pool.backends()[0].health.last_error();
    assert_eq!(error.as_deref(), Some("chose auth method 0x02, not offered"));
}

/// Issue 16, point 8: with every circuit open, a client hears its failure
/// after one attempt at most, and service resumes within
/// recovery_interval once the backends return.
#[test]
fn all_backends_blackholed_means_a_prompt_failure_and_a_prompt_recovery() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Behaviour::Proxy)).collect();
    for b in &backends {
        b.set_silent(true);
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let connect_timeout = Duration::from_millis(300);
    let d = daemon_with(
        "socks5",
        &refs,
        "health:\n  connect_timeout: 300ms\n  request_timeout: 1s\n  check_interval: 1h\n  \
         recovery_interval: 400ms\n  max_recovery_interval: 10s\n",
    );
    wait_for("every circuit open", WAIT, || (0..3).all(|i| state(&d, i) == State::Open));
    let target = echo_server("127.0.0.1:0");
    for _ in 0..3 {
        let start = Instant::now();
        let (code, _) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        let took = start.elapsed();
        assert_eq!(code, 0x01);
        // One attempt (three would be 900 ms), and slack for a loaded machine.
        assert!(took < connect_timeout + Duration::from_millis(400), "failure reply after {took:?}");
    }
    for b in &backends {
        b.set_silent(false);
    }
    let back = Instant::now();
    wait_for("a backend back in service", WAIT, || (0..3).any(|i| state(&d, i) == State::Closed));
    // recovery_interval, its jitter (a tenth) and a probe.
    // (The doubled backoff would be 800 ms and more.)
    assert!(back.elapsed() < Duration::from_millis(400 + 40 + 300 + 500), "back after {:?}", back.elapsed());
    all_succeed(d.local_addrs()[0], target, 3);
}

/// Issue 16, point 9: a backend that answers CONNECT and then relays
/// nothing is noticed (one stall, fed to its breaker); a silent client, and
/// a plain-HTTP port where long polls live, are not judged.
#[test]
fn a_backend_that_accepts_and_then_stalls_is_counted_against() {
    let staller = Backend::start(Behaviour::Stall);
    let d = daemon_with(
        "socks5",
        &[&staller],
        "health:\n  first_byte_timeout: 200ms\n  check_interval: 1h\n  recovery_interval: 1h\n  \
         max_recovery_interval: 1h\n",
    );
    settled(&d);
    let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
    use std::io::Write;
    // TLS-like: the client speaks first and waits.
    let (code, mut tls) = socks_connect(d.local_addrs()[0], &Dest::Name("example.test", 443), None).unwrap();
    assert_eq!(code, 0);
    tls.write_all(b"\x16\x03\x01 client hello").unwrap();
    // A long poll on port 80, and a client that says nothing.
    let (_, mut poll) = socks_connect(d.local_addrs()[0], &Dest::Name("example.test", 80), None).unwrap();
    poll.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
    let (_, _quiet) = socks_connect(d.local_addrs()[0], &Dest::Name("example.test", 25), None).unwrap();
    wait_for("the stall to be counted", WAIT, || stats.stalls.get() >= 1);
    // Twice the timeout: the other two tunnels are past judging.
    let judged = Instant::now();
    wait_for("the check window to pass", WAIT, || judged.elapsed() >= Duration::from_millis(450));
    assert_eq!(stats.stalls.get(), 1, "only the tunnel that spoke and got nothing back");
    let inner = d.snapshot().pool.backends()[0].health.last_error();
    assert_eq!(inner.as_deref(), Some("stalled: no reply within 200ms"));
    assert_eq!(stats.timeouts.get(), 0, "the CONNECT itself succeeded");
}
