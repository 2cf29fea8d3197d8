//! Groups, tiers and rules on real connections, with real microsocks as
//! the backends (the in-process proxy where it is missing). Which backend
//! served a connection is read from the daemon's own per-backend counts;
//! the gateway inbound's routing is tested in gateway.rs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

use crate::support::*;

/// A SOCKS5 backend on a fixed port below the ephemeral range (so that
/// it can be stopped and started again on the same port).
struct Socks {
    port: u16,
    child: Option<Child>,
    /// Without microsocks: the in-process proxy (restarts are then
    /// `set_up`).
    fallback: Option<Backend>,
}

impl Socks {
    fn start() -> Socks {
        let listener = consecutive_listeners(1).remove(0);
        let port = listener.local_addr().unwrap().port();
        if !installed("microsocks", "microsocks as the backends (using the in-process proxy)") {
            return Socks {
                port,
                child: None,
                fallback: Some(Backend::serve(listener, Behaviour::Proxy, None)),
            };
        }
        drop(listener);
        let mut s = Socks { port, child: None, fallback: None };
        s.up();
        s
    }

    fn up(&mut self) {
        if let Some(b) = &self.fallback {
            b.set_up(true);
            return;
        }
        let child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("microsocks starts");
        let port = self.port;
        wait_for("microsocks to listen", IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        self.child = Some(child);
    }

    fn down(&mut self) {
        if let Some(b) = &self.fallback {
            b.set_up(false);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Socks {
    fn drop(&mut self) {
        self.down();
    }
}

/// Connections each backend of the daemon has served (attempts through
/// it), by name.
fn served(d: &socksbalance::Daemon, name: &str) -> u64 {
    let snap = d.snapshot();
    let b =
        snap.pool.backends().iter().find(|b| b.config.name == name).unwrap_or_else(|| panic!("no {name}"));
    b.stats.attempts.get() - b.stats.failures.get() - b.stats.timeouts.get()
}

const HEALTH: &str = "health:\n  check_interval: 1s\n  connect_timeout: 1s\n  recovery_interval: 1s\n  max_recovery_interval: 1s\n";

#[test]
fn tiers_fall_back_to_the_next_and_come_back() {
    let (mut primary, backup) = (Socks::start(), Socks::start());
    let yaml = format!(
        "{LISTEN}mode: socks5\n{HEALTH}backends:\n  - {{name: ssh, address: '{}'}}\n  - {{name: tor, address: '{}'}}\n\
         groups:\n  - {{name: fast, backends: [ssh]}}\n  - {{name: slow, backends: [tor]}}\n  - {{name: main, tiers: [[fast], [slow]]}}\n",
        primary.addr(),
        backup.addr()
    );
    let d = daemon(&yaml);
    settled(&d);
    let proxy = d.local_addrs()[0];
    let target = Dest::Ip(echo_server("127.0.0.1:0"));
    let main = socksbalance::balancer::Route::Group(2);
    for _ in 0..5 {
        assert_echo(proxy, &target, None);
    }
    assert_eq!((served(&d, "ssh"), served(&d, "tor")), (5, 0), "the first tier takes everything");

    // The first tier's only backend dies: the client never sees it, and
    // the next tier takes over.
    primary.down();
    for _ in 0..5 {
        assert_echo(proxy, &target, None);
    }
    assert_eq!((served(&d, "ssh"), served(&d, "tor")), (5, 5));
    wait_for("the first tier to be out", IO_TIMEOUT, || d.snapshot().pool.active_tier(main) == Some(1));

    // Back: its recovery probe closes the circuit, and traffic returns.
    primary.up();
    wait_for("the first tier to be back", IO_TIMEOUT, || d.snapshot().pool.active_tier(main) == Some(0));
    for _ in 0..5 {
        assert_echo(proxy, &target, None);
    }
    assert_eq!((served(&d, "ssh"), served(&d, "tor")), (10, 5));
}

/// SOCKS5 CONNECT to a name: the reply code.
fn socks_code(proxy: SocketAddr, dest: &Dest) -> u8 {
    socks_connect(proxy, dest, None).map(|(code, _)| code).unwrap_or(0xff)
}

/// HTTP CONNECT through an `http` listener: the status code.
fn http_connect(proxy: SocketAddr, authority: &str) -> u16 {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(s, "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).into_owned();
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {line:?}"))
}

#[test]
fn rules_route_by_domain_suffix_cidr_port_and_inbound_in_socks5_and_http() {
    let (a, b) = (Socks::start(), Socks::start());
    let echo = echo_server("127.0.0.1:0");
    // 127.0.0.2 is loopback too: the rules send it direct.
    let local = echo_server("127.0.0.2:0");
    let refused_port = echo_server("127.0.0.1:0").port();
    let yaml = format!(
        "listen:\n  - 127.0.0.1:0\n  - {{address: '127.0.0.3:0', protocol: http}}\nmode: socks5\n{HEALTH}\
         backends:\n  - {{name: a, address: '{}'}}\n  - {{name: b, address: '{}'}}\n\
         groups:\n  - {{name: ga, backends: [a]}}\n  - {{name: gb, backends: [b]}}\n\
         rules:\n\
         \x20 - {{domain_suffix: [blocked.test], action: block}}\n\
         \x20 - {{domain_keyword: [adserver], action: block}}\n\
         \x20 - {{domain: [localhost], group: ga}}\n\
         \x20 - {{cidr: [127.0.0.2/32], action: direct}}\n\
         \x20 - {{port: [{refused_port}], action: block}}\n\
         \x20 - {{inbound: [http], cidr: [127.0.0.0/8], group: ga}}\n\
         \x20 - {{group: gb}}\n",
        a.addr(),
        b.addr()
    );
    let d = daemon(&yaml);
    settled(&d);
    let (socks, http) = (d.local_addrs()[0], d.local_addrs()[1]);
    let count = || (served(&d, "a"), served(&d, "b"), served(&d, "direct"));

    // Exact domain: group ga (microsocks resolves localhost itself).
    assert_echo(socks, &Dest::Name("localhost", echo.port()), None);
    assert_eq!(count(), (1, 0, 0));
    // An IP that no rule names: the catch-all, gb.
    assert_echo(socks, &Dest::Ip(echo), None);
    assert_eq!(count(), (1, 1, 0));
    // CIDR: direct, no backend.
    assert_echo(socks, &Dest::Ip(local), None);
    assert_eq!(count(), (1, 1, 1));
    // Suffix, keyword and port: blocked with "not allowed by ruleset",
    // without a backend tried.
    for dest in [
        Dest::Name("www.blocked.test", 443),
        Dest::Name("blocked.test", 443),
        Dest::Name("eu.adserver.example", 80),
        Dest::Ip(SocketAddr::from(([127, 0, 0, 1], refused_port))),
    ] {
        assert_eq!(socks_code(socks, &dest), 0x02, "{dest:?}");
    }
    assert_eq!(count(), (1, 1, 1));
    let attempts = |n: &str| {
        let snap = d.snapshot();
        let b = snap.pool.backends().iter().find(|b| b.config.name == n).unwrap().stats.attempts.get();
        b
    };
    assert_eq!(attempts("a") + attempts("b"), 2, "a blocked connection tries no backend");
    // A suffix matches whole labels only: this one is not blocked (gb's
    // microsocks cannot resolve it: host unreachable, not 0x02).
    assert_ne!(socks_code(socks, &Dest::Name("notblocked.test", 443)), 0x02);

    // The HTTP listener: the same rules, plus its own `inbound` rule.
    assert_eq!(http_connect(http, "www.blocked.test:443"), 403);
    assert_eq!(http_connect(http, &format!("127.0.0.1:{refused_port}")), 403);
    let before = count();
    assert_eq!(http_connect(http, &echo.to_string()), 200);
    wait_for("the tunnel to be counted", IO_TIMEOUT, || count().0 == before.0 + 1);
    assert_eq!(count().1, before.1, "the http listener's 127.0.0.0/8 goes to ga, socks5's to gb");
    assert_eq!(http_connect(http, &local.to_string()), 200);
    wait_for("the direct tunnel", IO_TIMEOUT, || count().2 == before.2 + 1);
    let open =
        d.snapshot().pool.backends().iter().map(|b| b.stats.active.load(Ordering::Relaxed)).sum::<usize>();
    assert!(open <= 2, "{open}");
}

#[test]
fn a_group_test_url_takes_a_blocked_exit_out_of_that_group_only() {
    // `bad` answers every CONNECT with "not allowed by ruleset", as an
    // exit that a site blocks: its greeting (the global health check)
    // passes, the group's probe of the site does not.
    let good = Socks::start();
    let bad = Backend::start(Behaviour::Reply(0x02));
    let site = http_status_server(204);
    let forbidding = http_status_server(403);
    let yaml = format!(
        "{LISTEN}mode: socks5\n{HEALTH}backends:\n  - {{name: good, address: '{}'}}\n  - {{name: bad, address: '{}'}}\n\
         groups:\n  - {{name: streaming, backends: [good, bad], test_url: 'http://{site}/', expected_status: [204]}}\n\
         \x20 - {{name: all, backends: [good, bad]}}\n\
         \x20 - {{name: picky, backends: [good], test_url: 'http://{forbidding}/', expected_status: [200, 204]}}\n",
        good.addr(),
        bad.addr
    );
    let d = daemon(&yaml);
    settled(&d);
    let route = socksbalance::balancer::Route::Group;
    let picks = |g: usize| -> Vec<usize> {
        let snap = d.snapshot();
        let who = socksbalance::balancer::Client {
            ip: [127, 0, 0, 1].into(),
            destination: &socksbalance::socks5::Address::UNSPECIFIED,
        };
        let mut v: Vec<usize> =
            (0..8).filter_map(|_| snap.pool.select(route(g), who, &|_| false)).map(|p| p.index).collect();
        v.sort();
        v.dedup();
        v
    };
    wait_for("streaming's probe to fail through bad", IO_TIMEOUT, || picks(0) == [0]);
    assert_eq!(picks(1), [0, 1], "bad is still up for a group without the probe");
    // A 403 where only 200 or 204 will do: good is down for picky.
    wait_for("picky's probe", IO_TIMEOUT, || d.snapshot().pool.active_tier(route(2)).is_none());
    assert!(d.snapshot().pool.backends().iter().all(|b| b.health.usable()), "their own health is untouched");
    // Real traffic goes to the default group (streaming, the first):
    // never through the blocked exit.
    let echo = echo_server("127.0.0.1:0");
    let proxy = d.local_addrs()[0];
    for _ in 0..6 {
        assert_echo(proxy, &Dest::Ip(echo), None);
    }
    assert_eq!((served(&d, "good"), served(&d, "bad")), (6, 0));
}

/// An HTTP server answering every request with `status` and no body.
fn http_status_server(status: u16) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if read_request_head(&mut stream).is_some() {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            });
        }
    });
    addr
}

#[test]
fn learned_stops_trying_an_exit_that_refuses_a_site_and_keeps_it_for_the_others() {
    // `picky` refuses every CONNECT with 0x02, as an exit whose ruleset
    // blocks the site; with `learned` that is the site's business.
    let good = Socks::start();
    let picky = Backend::start(Behaviour::Reply(0x02));
    let yaml = format!(
        "{LISTEN}mode: socks5\n{HEALTH}balancer: {{algorithm: learned}}\n\
         backends:\n  - {{name: good, address: '{}'}}\n  - {{name: picky, address: '{}'}}\n",
        good.addr(),
        picky.addr
    );
    let d = daemon(&yaml);
    settled(&d);
    let proxy = d.local_addrs()[0];
    let site = echo_server("127.0.0.1:0");
    for _ in 0..20 {
        assert_echo(proxy, &Dest::Ip(site), None);
    }
    let snap = d.snapshot();
    let tried = snap.pool.backends()[1].stats.attempts.get();
    assert!(tried <= 1, "the refusing exit was tried {tried} times for one site");
    assert!(snap.pool.backends()[1].health.usable(), "and it is still up for every other site");
    let view = snap.pool.learned().unwrap().view(1);
    assert_eq!(view.top[0].site, "127.0.0.1");
}
