//! Multipath uplinks in real network namespaces (Linux, root).
//!
//! Topology, created and removed by each test:
//!
//! ```text
//!   ns "…b" (balancer)                         ns "…i" ("internet")
//!   socksbalance on 127.0.0.1:1080
//!   wan1 198.18.1.1/24  ── veth ──  p1 198.18.1.2/24
//!   wan2 198.18.2.1/24  ── veth ──  p2 198.18.2.2/24    target 198.19.0.1:7
//!   (wan3 198.18.3.1/24 ── veth ──  p3 198.18.3.2/24, added mid-test)
//!   default routes: via p1 metric 10, via p2 metric 20 (and p3 metric 30)
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range), so
//! nothing can be confused with a real network. The target answers every
//! connection with `peer=<source address>\n` and then echoes, which tells
//! the test which link each connection left through; the veth packet
//! counters say the same from the kernel's side.
//!
//! The daemon is the real binary, started with `ip netns exec`; the test's
//! own client and target run on threads moved into the namespaces with
//! setns(2). Without root or iproute2 the tests skip with a notice.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::netns::{can_run, enter, in_ns, ip, Daemon};
use crate::support::{socks_connect, wait_for, Dest, IO_TIMEOUT};

const TARGET: &str = "198.19.0.1:7";
const TARGET_V6: &str = "[fd00:19::1]:7";
const PROXY: &str = "127.0.0.1:1080";
const API: &str = "127.0.0.1:8080";

/// The two namespaces; deleted when dropped (after the daemon is gone).
struct Net {
    bal: String,
    inet: String,
}

impl Net {
    fn new(tag: &str) -> Net {
        let pid = std::process::id();
        let net = Net { bal: format!("sb{tag}{pid}b"), inet: format!("sb{tag}{pid}i") };
        ip(&format!("netns add {}", net.bal));
        ip(&format!("netns add {}", net.inet));
        ip(&format!("-n {} link set lo up", net.bal));
        ip(&format!("-n {} link set lo up", net.inet));
        ip(&format!("-n {} addr add 198.19.0.1/32 dev lo", net.inet));
        ip(&format!("-n {} addr add fd00:19::1/128 dev lo", net.inet));
        net
    }

    /// Adds uplink `wanN` (and its peer `pN`) with its default route.
    fn add_link(&self, n: u8) {
        let (b, i) = (&self.bal, &self.inet);
        ip(&format!("link add wan{n} netns {b} type veth peer name p{n} netns {i}"));
        ip(&format!("-n {i} addr add 198.18.{n}.2/24 dev p{n}"));
        ip(&format!("-n {i} link set p{n} up"));
        ip(&format!("-n {b} addr add 198.18.{n}.1/24 dev wan{n}"));
        // IPv6 too (fd00::/8), without duplicate address detection so the
        // addresses are usable at once.
        ip(&format!("-n {i} addr add fd00:{n}::2/64 dev p{n} nodad"));
        ip(&format!("-n {b} addr add fd00:{n}::1/64 dev wan{n} nodad"));
        ip(&format!("-n {b} link set wan{n} up"));
        // ARP as an ISP's gateway does it: answer only for p{n}'s own
        // address, and ask from it too. Otherwise the namespace answers
        // for the target (and teaches wan{n} the target's "MAC" when it
        // asks for a client), and a socket bound to wan{n} would reach the
        // target with no route at all.
        let conf = format!("/proc/sys/net/ipv4/conf/p{n}");
        let arp = format!("echo 1 > {conf}/arp_ignore && echo 2 > {conf}/arp_announce");
        let status = Command::new("ip").args(["netns", "exec", i, "sh", "-c", &arp]).status().expect("sh");
        assert!(status.success(), "arp_ignore on p{n}");
        self.add_route(n);
    }

    fn add_route(&self, n: u8) {
        let metric = u32::from(n) * 10;
        ip(&format!("-n {} route replace default via 198.18.{n}.2 dev wan{n} metric {metric}", self.bal));
        ip(&format!("-n {} -6 route replace default via fd00:{n}::2 dev wan{n} metric {metric}", self.bal));
    }

    fn set_link(&self, n: u8, up: bool) {
        ip(&format!("-n {} link set wan{n} {}", self.bal, if up { "up" } else { "down" }));
        if up {
            // Linux drops IPv6 addresses when a link goes down.
            ip(&format!("-n {} addr replace fd00:{n}::1/64 dev wan{n} nodad", self.bal));
        }
    }

    /// Packets sent through `wanN`, from the kernel's counters.
    fn tx_packets(&self, n: u8) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.bal,
                "cat",
                &format!("/sys/class/net/wan{n}/statistics/tx_packets"),
            ])
            .output()
            .expect("read counters");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a packet count")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.bal, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The target in the "internet" namespace: tells each client its source
/// address, then echoes.
fn start_target(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let (ready_tx, ready) = mpsc::channel();
    thread::spawn(move || {
        enter(&path);
        let listener = TcpListener::bind(TARGET).expect("bind target");
        let v6 = TcpListener::bind(TARGET_V6).expect("bind IPv6 target");
        thread::spawn(move || serve_target(v6));
        ready_tx.send(()).unwrap();
        serve_target(listener);
    });
    ready.recv_timeout(IO_TIMEOUT).expect("target listening");
}

fn serve_target(listener: TcpListener) {
    {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                let peer = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                let _ = s.write_all(format!("peer={peer}\n").as_bytes());
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// One client connection through the balancer to the target, from inside
/// the balancer's namespace: the source address the target saw, or what
/// went wrong.
fn through(proxy: SocketAddr) -> Result<String, String> {
    through_to(proxy, &Dest::Ip(TARGET.parse().unwrap()))
}

fn through_to(proxy: SocketAddr, dest: &Dest) -> Result<String, String> {
    let (code, mut s) = socks_connect(proxy, dest, None).map_err(|e| format!("handshake: {e}"))?;
    if code != 0 {
        return Err(format!("SOCKS reply {code:#04x}"));
    }
    let mut lines = BufReader::new(s.try_clone().unwrap());
    let mut peer = String::new();
    lines.read_line(&mut peer).map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").map_err(|e| e.to_string())?;
    let mut echo = String::new();
    lines.read_line(&mut echo).map_err(|e| e.to_string())?;
    if echo != "ping\n" {
        return Err(format!("echo came back as {echo:?}"));
    }
    Ok(peer.trim().trim_start_matches("peer=").to_owned())
}

/// `count` connections from inside namespace `ns`: the source addresses
/// seen, and the errors.
fn connections(ns: &str, count: usize) -> (Vec<String>, Vec<String>) {
    in_ns(ns, move || {
        let proxy: SocketAddr = PROXY.parse().unwrap();
        let (mut seen, mut errors) = (Vec::new(), Vec::new());
        for _ in 0..count {
            match through(proxy) {
                Ok(peer) => seen.push(peer),
                Err(e) => errors.push(e),
            }
        }
        (seen, errors)
    })
}

/// `/api/stats` from inside namespace `ns`.
fn api_stats(ns: &str) -> String {
    in_ns(ns, || {
        let Ok(mut s) = TcpStream::connect(API) else { return String::new() };
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    })
}

/// The JSON object of backend `name` in a stats body, as text.
fn backend<'a>(stats: &'a str, name: &str) -> Option<&'a str> {
    stats.split("{\"address\"").find(|b| b.contains(&format!("\"name\":\"{name}\"")))
}

/// Copies `from` to `to` on a thread until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

const SETTINGS: &str = "\
listen: 127.0.0.1:1080
mode: socks5
health:
  uplink_probe: 198.19.0.1:7
  check_interval: 1s
  connect_timeout: 1s
  recovery_interval: 1s
web:
  enabled: true
  listen: 127.0.0.1:8080
log:
  level: debug
";

/// The namespaces with wan1 and wan2 up and the target running; `None`
/// (the test skips) without root or iproute2.
fn two_wans(tag: &str) -> Option<Net> {
    if !can_run() {
        return None;
    }
    let net = Net::new(tag);
    net.add_link(1);
    net.add_link(2);
    start_target(&net.inet);
    Some(net)
}

fn from(n: u8) -> String {
    format!("198.18.{n}.1")
}

#[test]
fn auto_uplinks_spread_fail_over_recover_and_pick_up_new_interfaces() {
    let Some(net) = two_wans("a") else { return };
    let _daemon = Daemon::start(&net.bal, &format!("{SETTINGS}backends:\n  - interfaces: auto\n"));
    let limit = Duration::from_secs(10);
    wait_for("two uplinks found", limit, || {
        let stats = api_stats(&net.bal);
        backend(&stats, "wan1").is_some() && backend(&stats, "wan2").is_some()
    });

    // Spread: round robin over both links, seen by the target and by the
    // kernel's packet counters.
    let before = (net.tx_packets(1), net.tx_packets(2));
    let (seen, errors) = connections(&net.bal, 20);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(seen.iter().filter(|s| **s == from(1)).count(), 10, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == from(2)).count(), 10, "{seen:?}");
    assert!(net.tx_packets(1) >= before.0 + 10 * 3, "wan1 carried traffic");
    assert!(net.tx_packets(2) >= before.1 + 10 * 3, "wan2 carried traffic");

    // wan1 goes down: once the daemon has seen it, every connection takes
    // wan2, and no client sees an error.
    net.set_link(1, false);
    wait_for("wan1 dropped from the pool", limit, || backend(&api_stats(&net.bal), "wan1").is_none());
    let (seen, errors) = connections(&net.bal, 20);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.iter().all(|s| *s == from(2)), "{seen:?}");

    // Back up (with its route, as the DHCP client or netifd would add it):
    // wan1 takes connections again.
    net.set_link(1, true);
    net.add_route(1);
    wait_for("wan1 back in the pool and healthy", limit, || {
        backend(&api_stats(&net.bal), "wan1")
            .is_some_and(|b| b.contains("\"circuit\":\"closed\"") && b.contains("\"link\":\"up\""))
    });
    let (seen, errors) = connections(&net.bal, 20);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.contains(&from(1)) && seen.contains(&from(2)), "{seen:?}");

    // A third WAN appears while running: picked up without a reload.
    net.add_link(3);
    wait_for("wan3 found", limit, || backend(&api_stats(&net.bal), "wan3").is_some());
    let (seen, errors) = connections(&net.bal, 30);
    assert!(errors.is_empty(), "{errors:?}");
    for n in 1..=3 {
        assert!(seen.contains(&from(n)), "no connection left through wan{n}: {seen:?}");
    }
    let stats = api_stats(&net.bal);
    let wan3 = backend(&stats, "wan3").unwrap();
    assert!(wan3.contains("\"kind\":\"uplink\"") && wan3.contains("\"interface\":\"wan3\""), "{wan3}");
    assert!(
        wan3.contains("\"addresses\":[\"198.18.3.1\",\"fd00:3::1\"]") && wan3.contains("\"link\":\"up\""),
        "{wan3}"
    );
}

#[test]
fn udp_through_an_uplink_leaves_through_its_interface() {
    let Some(net) = two_wans("u") else { return };
    // A UDP target that answers with the sender's address.
    in_ns(&net.inet, || {
        let s = std::net::UdpSocket::bind(TARGET).expect("bind UDP target");
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(format!("peer={}", from.ip()).as_bytes(), from);
            }
        });
    });
    let _daemon = Daemon::start(&net.bal, &format!("{SETTINGS}backends:\n  - interface: wan2\n"));
    // wan2 has the worse default route: only the uplink's binding sends
    // the datagram that way.
    let seen = in_ns(&net.bal, || {
        let a = crate::udp::Association::open(PROXY.parse().unwrap()).expect("associated");
        let target: SocketAddr = TARGET.parse().unwrap();
        let mut seen = None;
        for _ in 0..5 {
            a.send(target, b"which link?");
            if let Ok((_, data)) = a.receive() {
                seen = Some(String::from_utf8_lossy(&data).into_owned());
                break;
            }
        }
        seen
    });
    assert_eq!(seen.as_deref(), Some("peer=198.18.2.1"));
}

#[test]
fn a_proxy_pinned_via_an_uplink_leaves_through_it_and_is_not_blamed_when_it_is_down() {
    let Some(net) = two_wans("v") else { return };
    // A SOCKS5 proxy in the "internet" namespace, behind a forwarder that
    // notes where each connection to it came from.
    let (proxy, callers) = in_ns(&net.inet, || {
        let backend = crate::support::Backend::start(crate::support::Behaviour::Proxy);
        let listener = TcpListener::bind("198.19.0.1:1080").expect("bind proxy");
        let callers = Arc::new(Mutex::new(Vec::new()));
        let (inner, noted) = (backend.addr, Arc::clone(&callers));
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let peer = client.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                noted.lock().unwrap().push(peer);
                let Ok(upstream) = TcpStream::connect(inner) else { continue };
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        (backend, callers)
    });
    let yaml = format!(
        "{SETTINGS}backends:\n  - interface: wan1\n  - interface: wan2\n  - name: proxy\n    address: 198.19.0.1:1080\n    via: wan2\n"
    );
    let _daemon = Daemon::start(&net.bal, &yaml);
    let limit = Duration::from_secs(10);
    wait_for("link states known", limit, || {
        backend(&api_stats(&net.bal), "wan2").is_some_and(|b| b.contains("\"link\":\"up\""))
    });

    // Round robin over wan1, wan2 and the proxy; the proxy's connections
    // reach it from wan2's address, so they too leave through wan2.
    let (seen, errors) = connections(&net.bal, 30);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(seen.iter().filter(|s| **s == from(1)).count(), 10, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == "198.19.0.1").count(), 10, "proxy connections: {seen:?}");
    let came_from = callers.lock().unwrap().clone();
    assert!(!came_from.is_empty() && came_from.iter().all(|c| *c == from(2)), "{came_from:?}");
    assert!(proxy.request_count() >= 10);
    let stats = api_stats(&net.bal);
    assert!(backend(&stats, "proxy").unwrap().contains("\"via\":\"wan2\""));

    // wan2 down: neither wan2 nor the proxy behind it is used, nobody sees
    // an error, and the proxy's record stays clean.
    net.set_link(2, false);
    wait_for("wan2 reported down", limit, || {
        backend(&api_stats(&net.bal), "wan2").is_some_and(|b| b.contains("\"link\":\"down\""))
    });
    let (seen, errors) = connections(&net.bal, 20);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.iter().all(|s| *s == from(1)), "{seen:?}");
    let stats = api_stats(&net.bal);
    let pinned = backend(&stats, "proxy").unwrap();
    assert!(pinned.contains("\"failures\":0") && pinned.contains("\"timeouts\":0"), "{pinned}");
    assert!(pinned.contains("\"circuit\":\"closed\""), "{pinned}");
}

#[test]
fn a_link_whose_gateway_goes_silent_fails_over_and_opens_its_circuit() {
    let Some(net) = two_wans("s") else { return };
    let yaml = format!("{SETTINGS}backends:\n  - interface: wan1\n  - interface: wan2\n");
    let _daemon = Daemon::start(&net.bal, &yaml);
    let limit = Duration::from_secs(10);
    wait_for("link states known", limit, || {
        backend(&api_stats(&net.bal), "wan1").is_some_and(|b| b.contains("\"link\":\"up\""))
    });
    let (seen, errors) = connections(&net.bal, 4);
    assert!(errors.is_empty() && seen.contains(&from(1)), "{seen:?} {errors:?}");

    // The far end of wan1 disappears, but the link keeps its carrier: no
    // kernel event, connects through it just go unanswered. Each client
    // that lands on wan1 is moved to wan2 after one connect timeout (1 s
    // here), and after circuit_threshold of those wan1 is taken out.
    ip(&format!("-n {} addr del 198.18.1.2/24 dev p1", net.inet));
    let (seen, errors) = connections(&net.bal, 10);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.iter().all(|s| *s == from(2)), "{seen:?}");
    let stats = api_stats(&net.bal);
    let wan1 = backend(&stats, "wan1").unwrap();
    // Taken out: open, or already half-open if the 1 s recovery interval
    // ran out while the clients were served (a loaded machine); with the
    // gateway still gone, that probe cannot close it.
    let out = wan1.contains("\"circuit\":\"open\"") || wan1.contains("\"circuit\":\"half_open\"");
    assert!(out && wan1.contains("\"link\":\"up\""), "{wan1}");
    assert!(!wan1.contains("\"timeouts\":0"), "timeouts counted against the uplink: {wan1}");
    let wan2 = backend(&stats, "wan2").unwrap();
    assert!(wan2.contains("\"circuit\":\"closed\"") && wan2.contains("\"failures\":0"), "{wan2}");

    // The gateway comes back: the recovery probe closes the circuit.
    ip(&format!("-n {} addr add 198.18.1.2/24 dev p1", net.inet));
    wait_for("wan1 recovered", limit, || {
        backend(&api_stats(&net.bal), "wan1").is_some_and(|b| b.contains("\"circuit\":\"closed\""))
    });
    let (seen, errors) = connections(&net.bal, 6);
    assert!(errors.is_empty() && seen.contains(&from(1)), "{seen:?} {errors:?}");

    // No route through wan1 (carrier still up). For a socket bound to a
    // device Linux then assumes the destination is on the link and asks
    // for it by ARP, which the gateway does not answer: connects time out,
    // count against wan1, and clients move to wan2.
    ip(&format!("-n {} route del default dev wan1", net.bal));
    let timeouts_before = count(&api_stats(&net.bal), "wan1", "timeouts");
    let (seen, errors) = connections(&net.bal, 10);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.iter().all(|s| *s == from(2)), "{seen:?}");
    assert!(count(&api_stats(&net.bal), "wan1", "timeouts") > timeouts_before);
    // The route returns: the route event re-probes wan1.
    net.add_route(1);
    wait_for("wan1 back after its route", limit, || {
        backend(&api_stats(&net.bal), "wan1").is_some_and(|b| b.contains("\"circuit\":\"closed\""))
    });
    let (seen, errors) = connections(&net.bal, 6);
    assert!(errors.is_empty() && seen.contains(&from(1)), "{seen:?} {errors:?}");
}

/// A backend's integer field from a stats body.
fn count(stats: &str, name: &str, field: &str) -> u64 {
    let b = backend(stats, name).unwrap_or_else(|| panic!("no {name} in {stats}"));
    let at =
        b.find(&format!("\"{field}\":")).unwrap_or_else(|| panic!("no {field} in {b}")) + field.len() + 3;
    b[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Names resolve with the system resolver (here a hosts file that `ip
/// netns exec` gives the daemon), and the two IP versions are raced. The
/// resolver puts the name's IPv6 address first, and it is silent, so the
/// IPv4 one must win, through the uplink, well before the connect timeout
/// (which covers all attempts: one after the other, they would fail). A
/// literal IPv6 destination goes through each uplink too.
#[test]
fn dual_stack_names_fall_back_between_families_through_an_uplink() {
    let Some(net) = two_wans("d") else { return };
    // fd00:19::99 is nobody: packets to it are dropped without an answer.
    let _hosts = HostsFile::new(&net.bal, "fd00:19::99 dual.test\n198.19.0.1 dual.test\n");
    let order =
        Command::new("ip").args(["netns", "exec", &net.bal, "getent", "ahosts", "dual.test"]).output();
    let order = String::from_utf8_lossy(&order.expect("getent").stdout).into_owned();
    assert!(order.starts_with("fd00:19::99"), "the silent IPv6 address must come first:\n{order}");
    let yaml = format!("{SETTINGS}backends:\n  - interface: wan1\n  - interface: wan2\n");
    let _daemon = Daemon::start(&net.bal, &yaml);
    let (by_name, literal) = in_ns(&net.bal, || {
        let proxy: SocketAddr = PROXY.parse().unwrap();
        let v6: SocketAddr = TARGET_V6.parse().unwrap();
        let by_name: Vec<_> = (0..4).map(|_| through_to(proxy, &Dest::Name("dual.test", 7))).collect();
        let literal: Vec<_> = (0..4).map(|_| through_to(proxy, &Dest::Ip(v6))).collect();
        (by_name, literal)
    });
    let peers = |results: &[Result<String, String>]| -> Vec<String> {
        results.iter().map(|r| r.clone().expect("connected")).collect()
    };
    let (by_name, literal) = (peers(&by_name), peers(&literal));
    assert!(by_name.contains(&from(1)) && by_name.contains(&from(2)), "{by_name:?}");
    assert!(
        literal.contains(&"fd00:1::1".to_owned()) && literal.contains(&"fd00:2::1".to_owned()),
        "{literal:?}"
    );
}

/// `/etc/netns/NS/hosts`, which `ip netns exec NS` mounts over /etc/hosts
/// for the programs it starts; removed when dropped.
struct HostsFile(std::path::PathBuf);

impl HostsFile {
    fn new(ns: &str, text: &str) -> HostsFile {
        let dir = std::path::Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{text}")).unwrap();
        HostsFile(dir)
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A router's LAN bridge often gets its address after the daemon starts
/// (or is renumbered). The regression: a listen address the host did not
/// have stopped the daemon, and procd restarted it into a crash loop, so
/// even the loopback listener was never served.
#[test]
fn a_listen_address_missing_at_start_is_served_once_it_appears() {
    let Some(net) = two_wans("la") else { return };
    let late = "198.18.7.1:1080";
    let daemon = Daemon::start(
        &net.bal,
        &format!(
            "listen: [\"{PROXY}\", \"{late}\"]\nmode: socks5\nallow: [127.0.0.0/8, 198.18.0.0/15]\n\
             backends:\n  - direct: true\n"
        ),
    );
    let warned: Vec<&String> =
        daemon.start_lines.iter().filter(|l| l.contains(late) && l.contains("no such address")).collect();
    assert_eq!(warned.len(), 1, "one line about the missing address: {:?}", daemon.start_lines);
    assert!(warned[0].starts_with("WARN") && warned[0].contains("no such address yet"), "{}", warned[0]);
    let late: SocketAddr = late.parse().unwrap();
    // The loopback listener serves at once; the late one is unreachable.
    assert_eq!(in_ns(&net.bal, || through(PROXY.parse().unwrap())).map(|_| ()), Ok(()));
    // (No host has it: the SYN goes out the default route and is lost.)
    assert!(in_ns(&net.bal, move || TcpStream::connect_timeout(&late, Duration::from_secs(1))).is_err());
    ip(&format!("-n {} addr add {}/32 dev lo", net.bal, late.ip()));
    assert_eq!(in_ns(&net.bal, move || through(late)).map(|_| ()), Ok(()), "served once the address exists");
    drop(daemon);
}

/// The regression: `interfaces: auto` that found nothing started with
/// "0 backend(s)" at info and no word of why.
#[test]
fn auto_discovery_that_finds_no_link_says_so() {
    if !can_run() {
        return;
    }
    // No links at all, only loopback: nothing with a default route.
    let net = Net::new("no");
    let daemon =
        Daemon::start(&net.bal, &format!("listen: {PROXY}\nmode: socks5\nbackends:\n  - interfaces: auto\n"));
    assert!(
        daemon
            .start_lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("interfaces: auto found no interface")),
        "{:?}",
        daemon.start_lines
    );
}
