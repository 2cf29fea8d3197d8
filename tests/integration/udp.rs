//! UDP ASSOCIATE on loopback, through real third-party backends: Debian's
//! dante-server (`danted`, a UDP-capable SOCKS5 proxy) and microsocks
//! (TCP only), with PySocks and a SOCKS5 UDP client of our own (written
//! from RFC 1928 §7 with hand-built bytes, as `support`'s TCP client is).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::web::get;

/// A Dante server on a fixed port below 32768; killed when dropped.
struct Dante {
    child: Option<Child>,
    port: u16,
    _dir: TempDir,
    /// The system user it checks logins against, removed when dropped.
    user: Option<String>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dante {
    /// `None` (the test skips) when danted is not installed or we are not
    /// root (it starts as root and drops to nobody).
    fn start() -> Option<Dante> {
        Dante::start_with(None)
    }

    /// Dante that wants a username and password: those of a throwaway
    /// system user (Dante checks logins against the system's users), made
    /// here and removed when dropped.
    fn start_with_login(password: &str) -> Option<Dante> {
        if !installed("useradd", "Dante with a login") {
            return None;
        }
        let user = format!("sbudp{}", std::process::id());
        let made = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", &user])
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("NOTICE: cannot add a system user; skipping Dante with a login");
            return None;
        }
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        chpasswd.stdin.take().unwrap().write_all(format!("{user}:{password}\n").as_bytes()).unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd");
        let mut dante = Dante::start_with(Some(user.clone()));
        match &mut dante {
            Some(d) => d.user = Some(user),
            None => {
                let _ = Command::new("userdel").arg(&user).status();
            }
        }
        dante
    }

    fn start_with(login: Option<String>) -> Option<Dante> {
        if !installed("danted", "the UDP tests with Dante") {
            return None;
        }
        let method = if login.is_some() { "username" } else { "none" };
        let port = consecutive_listeners(1)[0].local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("socksbalance-dante-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 clientmethod: none\nsocksmethod: {method}\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate udpreply }}\n"
            ),
        )
        .unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("danted")
            .arg("-f")
            .arg(&conf)
            .args(["-N", "1"])
            // Its own process group: it forks a child per client, which
            // a kill of the group takes too.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start danted");
        wait_for("danted listening", IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        Some(Dante { child: Some(child), port, _dir: TempDir(dir), user: None })
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The server's process group, then whatever process still
            // holds a connection on its port: Dante's children rename
            // themselves, and the one relaying for a client may show up a
            // moment later. Look until it has been clear for a while.
            let _ = Command::new("kill").args(["-9", "--", &format!("-{}", c.id())]).status();
            let _ = c.wait();
            let mut clear = 0;
            for _ in 0..100 {
                let ss = Command::new("ss").args(["-Htanp", &format!("sport = :{}", self.port)]).output();
                let text = ss.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                let pids: Vec<&str> =
                    text.split("pid=").skip(1).filter_map(|p| p.split(',').next()).collect();
                if pids.is_empty() {
                    clear += 1;
                    if clear == 10 {
                        break;
                    }
                } else {
                    clear = 0;
                    let _ = Command::new("kill").arg("-9").args(&pids).status();
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn yaml(&self, name: &str) -> String {
        format!("  - {{address: \"127.0.0.1:{}\", name: {name}}}\n", self.port)
    }
}

impl Drop for Dante {
    fn drop(&mut self) {
        self.kill();
        if let Some(user) = &self.user {
            let _ = Command::new("userdel").arg(user).status();
        }
    }
}

/// microsocks on a fixed port: a SOCKS5 proxy that answers UDP ASSOCIATE
/// with 0x07.
struct Microsocks(Child, u16);

impl Microsocks {
    fn start() -> Option<Microsocks> {
        if !installed("microsocks", "the TCP-only backend") {
            return None;
        }
        let port = consecutive_listeners(1)[0].local_addr().unwrap().port();
        let child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start microsocks");
        wait_for("microsocks listening", IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        Some(Microsocks(child, port))
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP echo server on 127.0.0.1:0.
fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Our SOCKS5 UDP client: the control connection, the relay address the
/// proxy named, and the client's own UDP socket.
pub(crate) struct Association {
    control: TcpStream,
    relay: SocketAddr,
    socket: UdpSocket,
}

impl Association {
    /// UDP ASSOCIATE at `proxy`, declaring the socket's own address; the
    /// reply code on failure.
    pub(crate) fn open(proxy: SocketAddr) -> Result<Association, u8> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut control = TcpStream::connect(proxy).unwrap();
        control.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        control.write_all(&[5, 1, 0]).unwrap();
        let mut choice = [0u8; 2];
        control.read_exact(&mut choice).unwrap();
        assert_eq!(choice, [5, 0]);
        let port = socket.local_addr().unwrap().port().to_be_bytes();
        control.write_all(&[5, 3, 0, 1, 127, 0, 0, 1, port[0], port[1]]).unwrap();
        let (code, bound) = read_reply(&mut control).map_err(|_| 0xFFu8)?;
        if code != 0 {
            return Err(code);
        }
        let relay = match bound[3..] {
            [1, a, b, c, d, p1, p2] => SocketAddr::from(([a, b, c, d], u16::from_be_bytes([p1, p2]))),
            _ => panic!("a bound address that is not IPv4: {bound:?}"),
        };
        Ok(Association { control, relay, socket })
    }

    /// Sends `data` to `to` through the relay, with the RFC 1928 header.
    pub(crate) fn send(&self, to: SocketAddr, data: &[u8]) {
        let SocketAddr::V4(v4) = to else { panic!("IPv4 only") };
        let mut d = vec![0, 0, 0, 1];
        d.extend_from_slice(&v4.ip().octets());
        d.extend_from_slice(&v4.port().to_be_bytes());
        d.extend_from_slice(data);
        self.socket.send_to(&d, self.relay).unwrap();
    }

    /// The next datagram back: where it came from and its data.
    pub(crate) fn receive(&self) -> std::io::Result<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 65_536];
        let (n, from) = self.socket.recv_from(&mut buf)?;
        assert_eq!(from, self.relay, "a datagram from the relay");
        let d = &buf[..n];
        assert_eq!(&d[..4], &[0, 0, 0, 1], "header {:?}", &d[..4.min(n)]);
        let src = SocketAddr::from(([d[4], d[5], d[6], d[7]], u16::from_be_bytes([d[8], d[9]])));
        Ok((src, d[10..].to_vec()))
    }

    /// An echo of `data` through `target`, retried over datagram loss.
    fn echo(&self, target: SocketAddr, data: &[u8]) -> Result<(), String> {
        for _ in 0..5 {
            self.send(target, data);
            match self.receive() {
                Ok((src, got)) if src == target && got == data => return Ok(()),
                Ok(other) => return Err(format!("wrong datagram back: {other:?}")),
                Err(_) => continue,
            }
        }
        Err("no echo in 5 tries".into())
    }
}

fn stats_of(d: &socksbalance::Daemon) -> String {
    get(d.web_addr().unwrap(), "/api/stats", "").2
}

/// The JSON object of backend `name` in a stats body, as text.
fn backend<'a>(stats: &'a str, name: &str) -> &'a str {
    stats.split("{\"address\"").find(|b| b.contains(&format!("\"name\":\"{name}\""))).unwrap_or("")
}

const WEB: &str = "web:\n  enabled: true\n  listen: 127.0.0.1:0\nmode: socks5\n";

#[test]
fn udp_goes_through_dante_and_a_tcp_only_backend_is_learned_and_skipped() {
    let (Some(dante), Some(micro)) = (Dante::start(), Microsocks::start()) else { return };
    // A dead backend too, which the start-up probes have not judged yet.
    let yaml = format!(
        "{LISTEN}{WEB}backends:\n  - {{address: \"127.0.0.1:{}\", name: micro}}\n  - {{address: \"{}\", name: dead}}\n{}",
        micro.1,
        closed_port(),
        dante.yaml("dante")
    );
    let d = daemon(&yaml);
    let proxy = d.local_addrs()[0];
    let echo = udp_echo();
    // Round robin would give microsocks and the dead one their turns:
    // microsocks refuses (0x07) and is learned as TCP-only, the dead one
    // refuses the connection, and neither costs the client anything.
    for i in 0..4 {
        let a = Association::open(proxy).unwrap_or_else(|code| panic!("association {i}: reply {code:#04x}"));
        assert_eq!(a.relay.ip(), std::net::Ipv4Addr::LOCALHOST, "the relay is where the client reached us");
        a.echo(echo, format!("datagram {i}").as_bytes()).unwrap();
        a.echo(echo, &vec![7u8; 8_000]).unwrap();
    }
    let stats = stats_of(&d);
    assert!(backend(&stats, "micro").contains("\"udp\":false"), "{stats}");
    // The dashboard says it too.
    if let Some(browser) = crate::browser::chromium() {
        let dom =
            crate::browser::dump_dom_with(browser, &format!("http://{}/", d.web_addr().unwrap()), 2000, &[]);
        assert!(dom.contains(&format!("127.0.0.1:{} · TCP only</td>", micro.1)), "{dom}");
        assert!(dom.contains(&format!("127.0.0.1:{} · UDP</td>", dante.port)), "{dom}");
    }
    let dante_json = backend(&stats, "dante");
    assert!(dante_json.contains("\"udp\":true"), "{stats}");
    assert!(
        dante_json.contains("\"udp_datagrams_up\":8,") && dante_json.contains("\"udp_datagrams_down\":8,"),
        "{dante_json}"
    );
    // A real client: PySocks.
    let script = format!(
        "import socks, socket\n\
         s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.set_proxy(socks.SOCKS5, '127.0.0.1', {})\n\
         s.settimeout(5)\n\
         s.sendto(b'from pysocks', ('127.0.0.1', {}))\n\
         print(s.recvfrom(100)[0].decode())\n",
        proxy.port(),
        echo.port()
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("python3");
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'socks'") {
        eprintln!("NOTICE: PySocks not installed; skipping its part (.ci/run installs it)");
    } else {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "from pysocks\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_direct_backend_relays_udp_from_its_own_socket() {
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n  - direct: true\n"));
    let echo = udp_echo();
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    a.echo(echo, b"direct").unwrap();
    a.echo(echo, &vec![1u8; 60_000]).unwrap();
    assert!(backend(&stats_of(&d), "direct").contains("\"udp\":true"));
}

#[test]
fn foreign_fragmented_and_garbage_datagrams_are_dropped_and_counted() {
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n  - direct: true\n"));
    let echo = udp_echo();
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    a.echo(echo, b"first").unwrap();
    // From another port than the one declared.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&[0, 0, 0, 1, 127, 0, 0, 1, 0, 7, b'x'], a.relay).unwrap();
    // FRAG set; garbage.
    a.socket.send_to(&[0, 0, 1, 1, 127, 0, 0, 1, 0, 7, b'x'], a.relay).unwrap();
    a.socket.send_to(b"\xff\xff garbage", a.relay).unwrap();
    a.socket.send_to(&[0, 0, 0], a.relay).unwrap();
    // The association carries on.
    a.echo(echo, b"after").unwrap();
    let stats = stats_of(&d);
    assert!(stats.contains("\"drops\":{\"foreign\":1,\"fragment\":1,\"malformed\":2,"), "{stats}");
    // And for the backend the association goes through.
    assert!(
        backend(&stats, "direct").contains("\"udp_drops\":{\"foreign\":1,\"fragment\":1,\"malformed\":2,"),
        "{stats}"
    );
    assert!(stranger.set_read_timeout(Some(Duration::from_millis(200))).is_ok());
    assert!(stranger.recv_from(&mut [0u8; 64]).is_err(), "nothing goes back to a stranger");
}

#[test]
fn an_association_whose_dante_dies_moves_to_another_and_lives_on() {
    let (Some(mut first), Some(second)) = (Dante::start(), Dante::start()) else { return };
    let yaml = format!(
        "{LISTEN}{WEB}balancer:\n  algorithm: roundrobin\nbackends:\n{}{}",
        first.yaml("one"),
        second.yaml("two")
    );
    let d = daemon(&yaml);
    settled(&d);
    let echo = udp_echo();
    // Associations until one goes through "one".
    let mut on_one = None;
    for _ in 0..4 {
        let a = Association::open(d.local_addrs()[0]).expect("associated");
        a.echo(echo, b"which").unwrap();
        if backend(&stats_of(&d), "one").contains("\"udp_associations\":1,") {
            on_one = Some(a);
            break;
        }
    }
    let a = on_one.expect("an association through backend one");
    first.kill();

    // The same association (same control connection, same relay socket)
    // moves to "two" once the daemon sees "one" go (its processes take a
    // moment to die after the signal), and datagrams get through again.
    wait_for("the association on backend two", IO_TIMEOUT, || {
        backend(&stats_of(&d), "two").contains("\"udp_associations\":1,")
    });
    a.echo(echo, b"after the failover").unwrap_or_else(|e| panic!("{e}: {}", stats_of(&d)));
    assert!(backend(&stats_of(&d), "one").contains("\"udp_associations\":0,"), "{}", stats_of(&d));
    let mut c = a.control.try_clone().unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let e = c.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "the control connection is still open");
}

#[test]
fn idle_associations_end_and_the_association_limit_refuses_more() {
    let d = daemon(&format!(
        "{LISTEN}{WEB}limits:\n  udp_idle_timeout: 1s\n  max_udp_associations: 1\nbackends:\n  - direct: true\n"
    ));
    let mut a = Association::open(d.local_addrs()[0]).expect("associated");
    assert_eq!(Association::open(d.local_addrs()[0]).err(), Some(0x01), "over the limit: general failure");
    // Idle for the timeout: we close the control connection.
    let start = Instant::now();
    assert_eq!(a.control.read(&mut [0u8; 1]).unwrap_or(0), 0);
    assert!(start.elapsed() < Duration::from_secs(5), "closed after {:?}", start.elapsed());
    wait_for("the association counted out", IO_TIMEOUT, || {
        stats_of(&d).contains("\"udp\":{\"associations\":0")
    });
    assert!(Association::open(d.local_addrs()[0]).is_ok(), "room again");
}

/// A SOCKS5 backend that answers UDP ASSOCIATE with an unspecified
/// BND.ADDR (`0.0.0.0` and a port), as many do, and whose relay sends
/// every datagram straight back, header and all: to its client that reads
/// as an echo from the destination. On 127.0.0.2, so that a datagram sent
/// to `0.0.0.0` (which Linux delivers to 127.0.0.1) would not reach it.
/// With `login`, it takes only that username and password (RFC 1929).
fn unspecified_bnd_backend(login: Option<&'static str>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for control in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut c = control;
                let mut buf = [0u8; 262];
                // Greeting (one method), then the login, then the request
                // (IPv4 form).
                let method = if login.is_some() { 2 } else { 0 };
                if c.read_exact(&mut buf[..3]).is_err()
                    || buf[2] != method
                    || c.write_all(&[5, method]).is_err()
                {
                    let _ = c.write_all(&[5, 0xFF]);
                    return;
                }
                if let Some(secret) = login {
                    // VER ULEN USER PLEN PASS, as "user" / secret.
                    let mut head = [0u8; 2];
                    let _ = c.read_exact(&mut head);
                    let mut user = vec![0u8; head[1] as usize];
                    let _ = c.read_exact(&mut user);
                    let mut plen = [0u8; 1];
                    let _ = c.read_exact(&mut plen);
                    let mut pass = vec![0u8; plen[0] as usize];
                    let _ = c.read_exact(&mut pass);
                    let ok = user == b"user" && pass == secret.as_bytes();
                    let _ = c.write_all(&[1, u8::from(!ok)]);
                    if !ok {
                        return;
                    }
                }
                if c.read_exact(&mut buf[..10]).is_err() || buf[1] != 3 {
                    let _ = c.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
                    return;
                }
                let relay = UdpSocket::bind("127.0.0.2:0").unwrap();
                let port = relay.local_addr().unwrap().port().to_be_bytes();
                let _ = c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, port[0], port[1]]);
                relay.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                c.set_nonblocking(true).unwrap();
                let mut d = [0u8; 65_536];
                // Until the control connection closes.
                while !matches!(c.read(&mut buf), Ok(0)) {
                    if let Ok((n, from)) = relay.recv_from(&mut d) {
                        let _ = relay.send_to(&d[..n], from);
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_backend_naming_an_unspecified_relay_address_is_reached_at_its_own() {
    let backend = unspecified_bnd_backend(None);
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n  - {{address: \"{backend}\", name: zero}}\n"));
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    // Reflected by the backend's relay at 127.0.0.2 (its own address),
    // which its reply named 0.0.0.0.
    let target: SocketAddr = "198.19.0.1:53".parse().unwrap();
    a.echo(target, b"reflected").unwrap();
    assert!(backend_json_has(&stats_of(&d), "zero", "\"udp_datagrams_down\":1,"));
}

fn backend_json_has(stats: &str, name: &str, needle: &str) -> bool {
    backend(stats, name).contains(needle)
}

#[test]
fn our_udp_associate_to_a_backend_logs_in_with_its_credentials() {
    let backend = unspecified_bnd_backend(Some("s3cret"));
    let d = daemon(&format!(
        "{LISTEN}{WEB}backends:\n  - {{address: \"{backend}\", name: login, username: user, password: s3cret}}\n"
    ));
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    a.echo("198.19.0.1:53".parse().unwrap(), b"with a login").unwrap();
    // A wrong password: the backend refuses, and the client is told.
    let wrong = unspecified_bnd_backend(Some("other"));
    let d = daemon(&format!(
        "{LISTEN}{WEB}backends:\n  - {{address: \"{wrong}\", name: login, username: user, password: s3cret}}\n"
    ));
    assert!(Association::open(d.local_addrs()[0]).is_err());
}

#[test]
fn transparent_mode_serves_udp_associate_itself() {
    let Some(dante) = Dante::start() else { return };
    let d = daemon(&format!(
        "{LISTEN}web:\n  enabled: true\n  listen: 127.0.0.1:0\nmode: transparent\nbackends:\n{}",
        dante.yaml("dante")
    ));
    settled(&d);
    let echo = udp_echo();
    // The relay is ours (on the address the client reached), not Dante's.
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    assert_eq!(a.relay.ip(), std::net::Ipv4Addr::LOCALHOST);
    a.echo(echo, b"transparent").unwrap();
    let stats = stats_of(&d);
    assert!(backend(&stats, "dante").contains("\"udp_datagrams_up\":1,"), "{stats}");
}

#[test]
fn udp_through_a_dante_that_wants_a_login() {
    let Some(dante) = Dante::start_with_login("Pw-4-udp") else { return };
    let user = dante.user.clone().unwrap();
    let entry = |password: &str| {
        format!(
            "  - {{address: \"127.0.0.1:{}\", name: dante, username: {user}, password: {password}}}\n",
            dante.port
        )
    };
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n{}", entry("Pw-4-udp")));
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    a.echo(udp_echo(), b"logged in").unwrap();
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n{}", entry("wrong")));
    assert!(Association::open(d.local_addrs()[0]).is_err(), "a wrong password fails the request");
}

#[test]
fn a_backend_with_udp_false_is_never_used_for_udp() {
    let Some(dante) = Dante::start() else { return };
    let entry = format!("  - {{address: \"127.0.0.1:{}\", name: off, udp: false}}\n", dante.port);
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n{entry}  - direct: true\n"));
    let echo = udp_echo();
    for _ in 0..3 {
        Association::open(d.local_addrs()[0]).expect("associated").echo(echo, b"not via off").unwrap();
    }
    let stats = stats_of(&d);
    let off = backend(&stats, "off");
    assert!(off.contains("\"udp\":false") && off.contains("\"udp_datagrams_up\":0,"), "{stats}");
    assert!(backend(&stats, "direct").contains("\"udp_datagrams_up\":3,"), "{stats}");
}

#[test]
fn a_dual_stack_listener_serves_an_ipv4_client_its_association() {
    // On [::], an IPv4 client's address arrives as ::ffff:127.0.0.1.
    let d = daemon(&format!("listen: \"[::]:0\"\n{WEB}backends:\n  - direct: true\n"));
    let port = d.local_addrs()[0].port();
    let a = Association::open(SocketAddr::from(([127, 0, 0, 1], port))).expect("associated");
    assert_eq!(a.relay.ip(), std::net::Ipv4Addr::LOCALHOST);
    a.echo(udp_echo(), b"dual stack").unwrap();
}

#[test]
fn an_answer_too_large_to_send_on_with_its_header_is_dropped_and_counted() {
    // Answers every datagram with 65,500 bytes: room for it alone in an
    // IPv4 datagram, not with the 10-byte header in front.
    let big = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = big.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = big.recv_from(&mut buf) {
            let _ = big.send_to(&vec![9u8; 65_500], from);
        }
    });
    let d = daemon(&format!("{LISTEN}{WEB}backends:\n  - direct: true\n"));
    let a = Association::open(d.local_addrs()[0]).expect("associated");
    a.send(target, b"send me a lot");
    assert!(a.receive().is_err(), "nothing arrives cut short");
    wait_for("the drop counted", IO_TIMEOUT, || stats_of(&d).contains("\"oversized\":1,"));
    // And the association still works.
    a.echo(udp_echo(), b"after").unwrap();
}
