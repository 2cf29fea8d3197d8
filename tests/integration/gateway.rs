//! The transparent gateway in real network namespaces (Linux, root, nft):
//! a LAN client with no proxy settings at all, a router running the
//! daemon behind the rules `socksbalance-gateway` generates, and an
//! "internet" with the backends (microsocks), origin servers and a DNS
//! resolver (dnsmasq).
//!
//! ```text
//!   ns "…c" (client)        ns "…r" (router)              ns "…i" ("internet")
//!   c0 198.18.10.2/24 ── lan0 198.18.10.1/24
//!      fd00:10::2/64          fd00:10::1/64
//!                          socksbalance, nft rules
//!                          wan0 198.18.20.1/24 ────── w0 198.18.20.2/24 (microsocks :1080, :1081)
//!                               fd00:20::1/64            fd00:20::2/64
//!                                                     lo 198.19.0.1 (HTTP :80, TLS :443, SSH-like :22)
//!                                                        2001:2:0:19::1 (HTTP :80; RFC 5180's range)
//!                                                        198.19.0.53 (dnsmasq :53)
//! ```
//!
//! The backends' own logs prove which way each connection went, and what
//! it asked for (microsocks logs the host of every CONNECT: a name when
//! the request carried one). The origins answer `peer=<source>`.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::netns::{can_run, in_ns, ip, Daemon, TempDir};
use crate::support::{installed, wait_for, IO_TIMEOUT};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openwrt/socksbalance/files/socksbalance-gateway");

/// The three namespaces and what runs in the internet one; all removed
/// when dropped.
struct Lan {
    client: String,
    router: String,
    inet: String,
    dir: TempDir,
    backends: Vec<Option<Child>>,
    others: Vec<Child>,
}

fn run_in(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

fn sh_in(ns: &str, script: &str) {
    let out = run_in(ns, &["sh", "-c", script]);
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lan {
    fn new(tag: &str) -> Option<Lan> {
        if !can_run()
            || !installed("nft", "the gateway tests")
            || !installed("microsocks", "the gateway tests")
        {
            return None;
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("socksbalance-gw-{pid}-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lan = Lan {
            client: format!("sbg{tag}{pid}c"),
            router: format!("sbg{tag}{pid}r"),
            inet: format!("sbg{tag}{pid}i"),
            dir: TempDir(dir),
            backends: Vec::new(),
            others: Vec::new(),
        };
        let (c, r, i) = (&lan.client, &lan.router, &lan.inet);
        for ns in [c, r, i] {
            ip(&format!("netns add {ns}"));
            ip(&format!("-n {ns} link set lo up"));
        }
        ip(&format!("link add c0 netns {c} type veth peer name lan0 netns {r}"));
        ip(&format!("link add wan0 netns {r} type veth peer name w0 netns {i}"));
        for (ns, dev, v4, v6) in [
            (c, "c0", "198.18.10.2/24", "fd00:10::2/64"),
            (r, "lan0", "198.18.10.1/24", "fd00:10::1/64"),
            (r, "wan0", "198.18.20.1/24", "fd00:20::1/64"),
            (i, "w0", "198.18.20.2/24", "fd00:20::2/64"),
        ] {
            ip(&format!("-n {ns} addr add {v4} dev {dev}"));
            ip(&format!("-n {ns} addr add {v6} dev {dev} nodad"));
            ip(&format!("-n {ns} link set {dev} up"));
        }
        for addr in ["198.19.0.1/32", "198.19.0.53/32", "2001:2:0:19::1/128"] {
            ip(&format!("-n {i} addr add {addr} dev lo"));
        }
        ip(&format!("-n {c} route add default via 198.18.10.1"));
        ip(&format!("-n {c} -6 route add default via fd00:10::1"));
        ip(&format!("-n {r} route add default via 198.18.20.2"));
        ip(&format!("-n {r} -6 route add default via fd00:20::2"));
        ip(&format!("-n {i} route add 198.18.10.0/24 via 198.18.20.1"));
        ip(&format!("-n {i} -6 route add fd00:10::/64 via fd00:20::1"));
        // The router forwards: without our rules, the client goes direct.
        sh_in(r, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        // microsocks resolves names with the internet namespace's hosts
        // file (ip netns exec bind-mounts /etc/netns/NAME/hosts).
        let hosts = format!("/etc/netns/{i}");
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(format!("{hosts}/hosts"), "127.0.0.1 localhost\n198.19.0.1 origin.test\n").unwrap();
        Some(lan)
    }

    /// Starts microsocks backend `n` on 198.18.20.2:108n, logging to a file.
    fn start_backend(&mut self, n: usize) {
        let log = std::fs::File::create(self.backend_log(n)).unwrap();
        let port = (1080 + n).to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.inet, "microsocks", "-i", "198.18.20.2", "-p", &port])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start microsocks");
        self.wait_listening("microsocks", &format!("198.18.20.2:{port}"));
        if self.backends.len() <= n {
            self.backends.resize_with(n + 1, || None);
        }
        self.backends[n] = Some(child);
    }

    /// Runs `argv` in the internet namespace, quiet, and waits until it
    /// listens on `addr`.
    fn spawn_listening(&self, what: &str, argv: &[&str], addr: &str) -> Child {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.inet])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        self.wait_listening(what, addr);
        child
    }

    /// Waits (bounded) until something in the internet namespace accepts
    /// connections on `addr`.
    fn wait_listening(&self, what: &str, addr: &str) {
        let (inet, addr) = (self.inet.clone(), addr.to_owned());
        wait_for(&format!("{what} listening on {addr}"), IO_TIMEOUT, || {
            let (inet, addr) = (inet.clone(), addr.clone());
            in_ns(&inet, move || TcpStream::connect(addr.as_str()).is_ok())
        });
    }

    fn stop_backend(&mut self, n: usize) {
        if let Some(mut child) = self.backends[n].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn backend_log(&self, n: usize) -> std::path::PathBuf {
        self.dir.0.join(format!("microsocks{n}.log"))
    }

    /// What backend `n` logged: one `connected to HOST:PORT` line per
    /// CONNECT.
    fn connects(&self, n: usize) -> Vec<String> {
        std::fs::read_to_string(self.backend_log(n))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split("connected to ").nth(1).map(str::to_owned))
            .collect()
    }

    /// The origin servers: HTTP on both families, a server that speaks
    /// first, and TLS (openssl s_server, with a throwaway certificate).
    fn start_origins(&mut self) {
        in_ns(&self.inet, || {
            for addr in ["198.19.0.1:80", "[2001:2:0:19::1]:80"] {
                let l = TcpListener::bind(addr).expect("bind origin");
                thread::spawn(move || serve_http(l));
            }
            let banner = TcpListener::bind("198.19.0.1:22").expect("bind banner server");
            thread::spawn(move || serve_banner(banner));
        });
        if installed("openssl", "the TLS origin") {
            let (key, cert) = (self.dir.0.join("key.pem"), self.dir.0.join("cert.pem"));
            let made = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=origin.test",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl req");
            assert!(made.success());
            let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
            let tls = [
                "openssl",
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                "198.19.0.1:443",
                "-cert",
                cert,
                "-key",
                key,
            ];
            let server = self.spawn_listening("the TLS origin", &tls, "198.19.0.1:443");
            self.others.push(server);
        }
    }

    /// A UDP echo on 198.19.0.1:7 in the internet namespace.
    fn start_udp_echo(&self) {
        in_ns(&self.inet, || {
            let s = std::net::UdpSocket::bind("198.19.0.1:7").expect("bind UDP echo");
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            });
        });
    }

    /// dnsmasq on 198.19.0.53 (UDP and TCP), answering for `example.test`.
    fn start_resolver(&mut self) -> bool {
        if !installed("dnsmasq", "the DNS tests") {
            return false;
        }
        let dnsmasq = [
            "dnsmasq",
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=198.19.0.53",
            "--bind-interfaces",
            "--port=53",
            "--user=root",
            "--address=/example.test/198.19.0.7",
            "--local-ttl=300",
            "--pid-file=",
        ];
        let server = self.spawn_listening("dnsmasq", &dnsmasq, "198.19.0.53:53");
        self.others.push(server);
        true
    }

    /// Puts the generated rules (`args` for socksbalance-gateway) in force
    /// in the router, in a table of their own.
    fn apply_rules(&self, args: &str) {
        let rules = Command::new("sh")
            .arg(RULES)
            .args(["rules", "--table", "socksbalance", "--lan", "lan0"])
            .args(args.split_whitespace())
            .output()
            .expect("run socksbalance-gateway");
        assert!(rules.status.success(), "{}", String::from_utf8_lossy(&rules.stderr));
        let file = self.dir.0.join("rules.nft");
        std::fs::write(&file, &rules.stdout).unwrap();
        let out = run_in(&self.router, &["nft", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The daemon with a tproxy listener on [::]:7894 and `backends`,
    /// behind tproxy rules (`args` added) and their policy route.
    fn start_tproxy(&self, backends: &str, args: &str) -> Daemon {
        let yaml = settings(backends)
            .replace("protocol: redirect", "protocol: tproxy")
            .replace("[::]:7893", "[::]:7894");
        let daemon = Daemon::start(&self.router, &yaml);
        self.apply_tproxy_rules(args);
        daemon
    }

    fn apply_tproxy_rules(&self, args: &str) {
        self.apply_rules(&format!("--mode tproxy --port 7894 {args}"));
        let route = run_in(&self.router, &["sh", RULES, "route", "add"]);
        assert!(route.status.success(), "{}", String::from_utf8_lossy(&route.stderr));
    }

    fn remove_rules(&self) {
        let out = run_in(&self.router, &["nft", "delete", "table", "inet", "socksbalance"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn ruleset(&self) -> String {
        String::from_utf8_lossy(&run_in(&self.router, &["nft", "list", "ruleset"]).stdout).into_owned()
    }

    /// `curl` in the client namespace: the body, or the error.
    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let out = run_in(&self.client, &[&["curl", "-sS", "--max-time", "10"][..], args].concat());
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `/api/stats` from inside the router.
    fn stats(&self) -> String {
        in_ns(&self.router, || {
            let Ok(mut s) = TcpStream::connect("127.0.0.1:18080") else { return String::new() };
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let _ = s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body
        })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for mut child in self.backends.drain(..).flatten().chain(self.others.drain(..)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.router, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.inet));
    }
}

/// Answers each request with `peer=<source address>`.
fn serve_http(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        thread::spawn(move || {
            let peer = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = crate::support::read_request_head(&mut s);
            let body = format!("peer={peer}\n");
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
    }
}

/// Speaks first, as SSH and SMTP servers do, then echoes.
fn serve_banner(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        thread::spawn(move || {
            let _ = s.write_all(b"SSH-2.0-origin\r\n");
            let mut buf = [0u8; 256];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn settings(backends: &str) -> String {
    format!(
        "\
listen:
  - 127.0.0.1:11080
  - {{address: \"[::]:7893\", protocol: redirect}}
mode: socks5
allow: [198.18.0.0/15, fd00::/8, 127.0.0.0/8]
health:
  check_interval: 1s
  connect_timeout: 1s
  recovery_interval: 1s
web:
  enabled: true
  listen: 127.0.0.1:18080
log:
  level: debug
dns:
  listen: \"0.0.0.0:5353\"
  upstreams: [\"198.19.0.54:53\", \"198.19.0.53:53\"]
backends:
{backends}"
    )
}

/// What the origin sees of a connection that came through microsocks: it
/// runs beside the origin, and its connections come from the origin's
/// own address.
const VIA_BACKEND: &str = "peer=198.19.0.1\n";

const TWO_BACKENDS: &str = concat!(
    "  - {address: \"198.18.20.2:1080\", name: one}\n",
    "  - {address: \"198.18.20.2:1081\", name: two}\n",
);

#[test]
fn a_lan_client_without_proxy_settings_goes_through_the_backends() {
    let Some(mut lan) = Lan::new("a") else { return };
    lan.start_backend(0);
    lan.start_backend(1);
    lan.start_origins();
    // Before the rules: the router only routes, and the origin sees the
    // client itself.
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), "peer=198.18.10.2\n");

    let daemon = Daemon::start(&lan.router, &settings(TWO_BACKENDS));
    lan.apply_rules("--port 7893");

    // Plain HTTP to an IP: through a backend, which the origin sees, and
    // which logged the CONNECT (round robin: both get one of two).
    for _ in 0..2 {
        assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), VIA_BACKEND);
    }
    assert_eq!(lan.connects(0), ["198.19.0.1:80"]);
    assert_eq!(lan.connects(1), ["198.19.0.1:80"]);

    // A name in the request (HTTP Host, TLS SNI) reaches the backend as a
    // name: the CONNECT carried ATYP domain, and the backend resolved it.
    let resolve = "origin.test:80:198.19.0.1";
    assert_eq!(lan.curl(&["--resolve", resolve, "http://origin.test/"]).unwrap(), VIA_BACKEND);
    daemon.wait_for_line("198.19.0.1:80 is origin.test:80 (sniffed)");
    if !lan.others.is_empty() {
        let page = lan.curl(&["-k", "--resolve", "origin.test:443:198.19.0.1", "https://origin.test/"]);
        assert!(page.as_ref().is_ok_and(|p| p.contains("s_server")), "{page:?}");
        daemon.wait_for_line("198.19.0.1:443 is origin.test:443 (sniffed)");
    }
    let named: Vec<String> =
        lan.connects(0).into_iter().chain(lan.connects(1)).filter(|c| c.starts_with("origin.test")).collect();
    let want = if lan.others.is_empty() { 1 } else { 2 };
    assert_eq!(named.len(), want, "backend logs: {:?} {:?}", lan.connects(0), lan.connects(1));

    // IPv6, the same way.
    assert_eq!(lan.curl(&["-6", "http://[2001:2:0:19::1]/"]).unwrap(), "peer=2001:2:0:19::1\n");
    assert!(lan.connects(0).into_iter().chain(lan.connects(1)).any(|c| c == "2001:2:0:19::1:80"));

    // A server that speaks first gets through without stalling: its
    // banner arrives once the sniffing gives up (300 ms) and the tunnel
    // is up.
    let (banner, took) = in_ns(&lan.client, || {
        let start = Instant::now();
        let mut s = TcpStream::connect("198.19.0.1:22").expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let banner = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(b"ping\n").unwrap();
        let n = s.read(&mut buf).unwrap_or(0);
        (format!("{banner}{}", String::from_utf8_lossy(&buf[..n])), start.elapsed())
    });
    assert_eq!(banner, "SSH-2.0-origin\r\nping\n");
    assert!(took < Duration::from_secs(3), "the banner took {took:?}");

    // A dead backend: no client sees a failure.
    lan.stop_backend(1);
    for i in 0..10 {
        assert_eq!(lan.curl(&["http://198.19.0.1/"]), Ok(VIA_BACKEND.to_owned()), "request {i}");
    }
    let stats = lan.stats();
    assert!(counter(&stats, "redirect").is_some_and(|n| n >= 16), "{stats}");

    // Stopped: the rules go with it, and the client goes direct again.
    drop(daemon);
    lan.remove_rules();
    assert!(!lan.ruleset().contains("socksbalance"), "{}", lan.ruleset());
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), "peer=198.18.10.2\n");
}

#[test]
fn bypass_and_source_lists_decide_who_is_taken() {
    let Some(mut lan) = Lan::new("s") else { return };
    lan.start_backend(0);
    lan.start_origins();
    let _daemon = Daemon::start(&lan.router, &settings("  - {address: \"198.18.20.2:1080\", name: one}\n"));
    // Each setting, and where the client's request then goes: through the
    // backend, or direct (the router forwards what the rules leave).
    let direct = "peer=198.18.10.2\n";
    for (args, want) in [
        ("--port 7893", VIA_BACKEND),
        ("--port 7893 --bypass 198.19.0.0/24", direct),
        ("--port 7893 --skip-source 198.18.10.2", direct),
        ("--port 7893 --only-source 198.18.10.99", direct),
        ("--port 7893 --only-source 198.18.10.0/28", VIA_BACKEND),
    ] {
        lan.apply_rules(args);
        assert_eq!(lan.curl(&["http://198.19.0.1/"]).as_deref(), Ok(want), "{args}");
    }
    // A MAC in a source list is matched as one.
    let mac = String::from_utf8_lossy(&run_in(&lan.client, &["cat", "/sys/class/net/c0/address"]).stdout)
        .trim()
        .to_owned();
    lan.apply_rules(&format!("--port 7893 --skip-source {mac}"));
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).as_deref(), Ok(direct), "skip {mac}");
    // Bad options are refused with a reason, and nothing is printed.
    for bad in
        ["--port x", "--port 1 --mode nat", "--port 1 --mark 'a b'", "--port 1 --dns-hijack", "--bogus 1"]
    {
        let out = Command::new("sh").arg(RULES).arg("rules").args(bad.split(' ')).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(out.stdout.is_empty() && out.stderr.starts_with(b"socksbalance-gateway: "), "{bad}");
    }
}

#[test]
fn tproxy_mode_takes_the_lans_tcp_with_the_destination_left_as_it_was() {
    let Some(mut lan) = Lan::new("t") else { return };
    lan.start_backend(0);
    lan.start_origins();
    let _daemon = lan.start_tproxy("  - {address: \"198.18.20.2:1080\", name: one}\n", "");
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), VIA_BACKEND);
    assert_eq!(lan.curl(&["-6", "http://[2001:2:0:19::1]/"]).unwrap(), "peer=2001:2:0:19::1\n");
    assert_eq!(lan.connects(0), ["198.19.0.1:80", "2001:2:0:19::1:80"]);
    assert_eq!(counter(&lan.stats(), "tproxy"), Some(2));
}

#[test]
fn a_direct_backend_with_the_routers_own_traffic_taken_too_does_not_loop() {
    let Some(mut lan) = Lan::new("d") else { return };
    lan.start_origins();
    let daemon = Daemon::start(&lan.router, &settings("  - direct: true\n"));
    lan.apply_rules("--port 7893 --router-traffic");
    // The client's connection is redirected; the daemon's own connection
    // to the origin carries routing_mark, which the output rule skips.
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), "peer=198.18.20.1\n");
    // The router's own connection is taken too, and gets out the same way.
    let own = run_in(&lan.router, &["curl", "-sS", "--max-time", "10", "http://198.19.0.1/"]);
    assert_eq!(String::from_utf8_lossy(&own.stdout), "peer=198.18.20.1\n");
    let stats = lan.stats();
    assert_eq!(counter(&stats, "redirect"), Some(2), "{stats}");
    drop(daemon);
}

#[test]
fn rules_route_the_lans_connections_by_sniffed_name_address_and_port() {
    let Some(mut lan) = Lan::new("r") else { return };
    lan.start_backend(0);
    lan.start_backend(1);
    lan.start_origins();
    let routed = format!(
        "{TWO_BACKENDS}groups:\n  - {{name: g1, backends: [one]}}\n  - {{name: g2, backends: [two]}}\n\
         rules:\n\
         \x20 - {{domain: [direct.test], action: direct}}\n\
         \x20 - {{domain_suffix: [origin.test], group: g2}}\n\
         \x20 - {{port: 22, action: block}}\n\
         \x20 - {{cidr: [198.19.0.0/16], group: g1}}\n"
    );
    let daemon = Daemon::start(&lan.router, &settings(&routed));
    lan.apply_rules("--port 7893");
    // An address: the cidr rule, g1.
    assert_eq!(lan.curl(&["http://198.19.0.1/"]).unwrap(), VIA_BACKEND);
    assert_eq!((lan.connects(0), lan.connects(1)), (vec!["198.19.0.1:80".to_owned()], vec![]));
    // The name the client's request carries (sniffed): the suffix rule, g2,
    // though its address matches g1's cidr too (the earlier rule wins).
    let resolve = "origin.test:80:198.19.0.1";
    assert_eq!(lan.curl(&["--resolve", resolve, "http://origin.test/"]).unwrap(), VIA_BACKEND);
    assert_eq!(lan.connects(1), ["origin.test:80"]);
    // `direct` from the router: to the address the client dialled (the
    // router cannot resolve direct.test), and the origin sees the router.
    let resolve = "direct.test:80:198.19.0.1";
    assert_eq!(lan.curl(&["--resolve", resolve, "http://direct.test/"]).unwrap(), "peer=198.18.20.1\n");
    // Blocked by port: the connection is closed, no backend asked.
    let got = in_ns(&lan.client, || {
        let mut s = TcpStream::connect("198.19.0.1:22").expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf).unwrap_or(0)
    });
    assert_eq!(got, 0, "a blocked connection gets no banner");
    daemon.wait_for_line("blocked by rules[2]");
    assert_eq!(lan.connects(0).len() + lan.connects(1).len(), 2);
    drop(daemon);
}

/// `dig` in namespace `ns`: its output, `+short` unless `args` say more.
fn dig(ns: &str, args: &[&str]) -> String {
    let out = run_in(ns, &[&["dig", "+time=5", "+tries=1"][..], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn counter(stats: &str, name: &str) -> Option<u64> {
    stats
        .split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn dns_goes_over_tcp_through_a_backend_is_cached_and_survives_a_dead_resolver() {
    let Some(mut lan) = Lan::new("n") else { return };
    if !lan.start_resolver() || !installed("dig", "the DNS tests") {
        return;
    }
    lan.start_backend(0);
    let daemon = Daemon::start(&lan.router, &settings("  - {address: \"198.18.20.2:1080\", name: one}\n"));
    let r = lan.router.clone();
    // The first resolver (198.19.0.54) is down (the backend says so); the
    // second answers, over TCP through the backend, which logged the
    // CONNECT.
    assert_eq!(dig(&r, &["@127.0.0.1", "-p", "5353", "+short", "example.test"]), "198.19.0.7\n");
    daemon.wait_for_line("dns: resolver 198.19.0.54:53: backend replied");
    assert_eq!(lan.connects(0), ["198.19.0.53:53"]);
    // Asked again: from the cache, no new CONNECT.
    let again = dig(&r, &["@127.0.0.1", "-p", "5353", "+noall", "+answer", "example.test"]);
    assert!(again.contains("198.19.0.7"), "{again}");
    assert_eq!(lan.connects(0).len(), 1);
    // Over TCP too, and the same cache.
    assert_eq!(dig(&r, &["@127.0.0.1", "-p", "5353", "+tcp", "+short", "example.test"]), "198.19.0.7\n");
    let stats = lan.stats();
    assert_eq!(counter(&stats, "queries"), Some(3), "{stats}");
    assert_eq!(counter(&stats, "cache_hits"), Some(2), "{stats}");

    // Garbage gets FORMERR, and the listener carries on.
    let formerr = in_ns(&r, || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.send_to(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exa", "127.0.0.1:5353").unwrap();
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).expect("an answer to garbage");
        buf[..n].to_vec()
    });
    assert_eq!((&formerr[..2], formerr[3] & 0x0F), (&[0x12u8, 0x34][..], 1), "{formerr:?}");
    assert_eq!(counter(&lan.stats(), "failures"), Some(1));

    // A LAN client's DNS to anywhere is taken by --dns-hijack.
    lan.apply_rules("--port 7893 --dns-hijack --dns-port 5353");
    assert_eq!(dig(&lan.client, &["@198.19.0.99", "+short", "example.test"]), "198.19.0.7\n");
    assert_eq!(counter(&lan.stats(), "queries"), Some(5));
}

#[test]
fn a_tproxy_listener_without_cap_net_admin_says_what_it_needs() {
    if !can_run() || !installed("setpriv", "the capability test") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("socksbalance-gw-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = TempDir(dir.clone());
    let config = dir.join("config.yaml");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "listen:\n  - {{address: \"127.0.0.1:{port}\", protocol: tproxy}}\nbackends:\n  - direct: true\n"
    );
    std::fs::write(&config, yaml).unwrap();
    // Root without CAP_NET_ADMIN and CAP_NET_RAW (either allows IP_TRANSPARENT).
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_admin,-net_raw", "--inh-caps", "-net_admin,-net_raw", "--"])
        .arg(env!("CARGO_BIN_EXE_socksbalance"))
        .arg("-c")
        .arg(&config)
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a tproxy listener needs CAP_NET_ADMIN"), "{stderr}");
}

#[test]
fn tproxy_mode_takes_the_lans_udp_too() {
    let Some(mut lan) = Lan::new("p") else { return };
    if !lan.start_resolver() || !installed("dig", "the gateway UDP test") {
        return;
    }
    lan.start_udp_echo();
    let _daemon = lan.start_tproxy("  - direct: true\n", "--udp");
    // The client's plain dig to a resolver on the internet, and a UDP echo:
    // both answered from the address they were sent to.
    assert_eq!(dig(&lan.client, &["@198.19.0.53", "+short", "example.test"]), "198.19.0.7\n");
    let echoed = in_ns(&lan.client, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"over the gateway", "198.19.0.1:7").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).expect("an echo");
        (from, buf[..n].to_vec())
    });
    assert_eq!(echoed, ("198.19.0.1:7".parse().unwrap(), b"over the gateway".to_vec()));
    // They went through the daemon: its backend relayed both datagrams
    // both ways.
    let stats = lan.stats();
    assert!(
        stats.contains("\"udp_datagrams_up\":2,") && stats.contains("\"udp_datagrams_down\":2,"),
        "{stats}"
    );
    // With --dns-hijack, DNS is the DNS listener's: the tproxy rule leaves
    // port 53 to the hijack rule, and the query is answered over TCP
    // through the backend, not relayed as a datagram.
    lan.apply_tproxy_rules("--udp --dns-hijack --dns-port 5353");
    assert_eq!(dig(&lan.client, &["@198.19.0.53", "+short", "example.test"]), "198.19.0.7\n");
    let stats = lan.stats();
    assert_eq!(counter(&stats, "queries"), Some(1), "{stats}");
    assert!(stats.contains("\"udp_datagrams_up\":2,"), "no datagram relayed for DNS: {stats}");
}

#[test]
fn socksify_sends_its_udp_through_our_udp_associate() {
    let Some(mut lan) = Lan::new("x") else { return };
    if !installed("socksify", "the socksify test") || !lan.start_resolver() {
        return;
    }
    lan.start_udp_echo();
    let _daemon = Daemon::start(&lan.router, &settings("  - direct: true\n"));
    // Dante's client library routes every UDP and TCP destination through
    // our SOCKS5 listener; a Python program's plain sendto and recvfrom.
    let conf = lan.dir.0.join("socks.conf");
    std::fs::write(
        &conf,
        "route {\n  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = 11080\n  protocol: tcp udp\n  \
         proxyprotocol: socks_v5\n  method: none\n}\n",
    )
    .unwrap();
    let script = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(5)\n\
                  s.sendto(b'socksified', ('198.19.0.1', 7))\nprint(s.recvfrom(100)[0].decode())\n";
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.router, "env"])
        .arg(format!("SOCKS_CONF={}", conf.display()))
        .args(["socksify", "python3", "-c", script])
        .output()
        .expect("socksify python3");
    let stats = lan.stats();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "socksified\n", "{stderr}\n{stats}");
    assert!(
        stats.contains("\"udp_datagrams_up\":1,") && stats.contains("\"udp_datagrams_down\":1,"),
        "{stats}"
    );
}
