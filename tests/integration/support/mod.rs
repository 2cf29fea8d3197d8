//! Test peers: SOCKS5 backends, destination servers and a SOCKS5 client,
//! all on real loopback sockets.
//!
//! The backend and the client here are written with blocking `std` I/O
//! and hand-built bytes, independent of the crate's own codec, so that a
//! bug in `socksbalance::socks5` cannot cancel itself out.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socksbalance::{Config, Daemon};

#[cfg(target_os = "linux")]
pub mod netns;

/// Every blocking read in the tests gives up after this, so a bug shows
/// as a failed assertion rather than a hung test run.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `program` is there to run (`program --version` starts; its
/// exit status does not count: `openssl` has no `--version`); if not,
/// says that `what` is skipped. .ci/run installs every program the tests
/// use.
pub fn installed(program: &str, what: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("NOTICE: {program} not on PATH; skipping {what} (.ci/run installs it)");
    }
    found
}

/// Starts the daemon from YAML on its own threads.
pub fn daemon(yaml: &str) -> Daemon {
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
    Daemon::start(config, 2).expect("daemon starts")
}

/// Waits for the start-up probe round: every backend has been heard from
/// (answered, or found down). Until then a backend that has answered is
/// picked before one that has not, so tests of exact spreads wait.
pub fn settled(d: &Daemon) {
    let snapshot = d.snapshot();
    wait_for("the start-up probes", IO_TIMEOUT, || {
        snapshot
            .pool
            .backends()
            .iter()
            .all(|b| b.health.answered() || b.health.state() != socksbalance::health::State::Closed)
    });
}

/// The YAML `listen:` line every test daemon uses.
pub const LISTEN: &str = "listen: 127.0.0.1:0\n";

/// Binds `n` consecutive ports below the ephemeral range, retrying on
/// collisions, so that one `host:first-last` entry covers them.
pub fn consecutive_listeners(n: u16) -> Vec<TcpListener> {
    // Each call starts elsewhere: tests run in parallel, and a port one of
    // them let go of for a child process to take must not be found free
    // by another in between.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::SeqCst) as u16;
    let seed = (std::process::id() as u16).wrapping_add(call.wrapping_mul(1_009));
    for attempt in 0..200u16 {
        let first = 20_000 + (seed.wrapping_add(attempt.wrapping_mul(97)) % 12_000);
        let bound: Vec<TcpListener> =
            (first..first + n).map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if bound.len() == n as usize {
            return bound;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// A port range of `n` consecutive ports where only the positions in
/// `live` serve (each started by `start` on its bound listener) and every
/// other port refuses: a SocksBalance-style Tor range with some instances
/// down. Returns the first port and the live servers.
pub fn partly_live_range<T>(n: u16, live: &[usize], start: impl Fn(TcpListener) -> T) -> (u16, Vec<T>) {
    let listeners = consecutive_listeners(n);
    let first = listeners[0].local_addr().unwrap().port();
    let mut servers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        if live.contains(&i) {
            servers.push(start(listener));
        }
        // The others drop here: their ports refuse.
    }
    (first, servers)
}

/// What a test backend does with a connection.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A working SOCKS5 proxy.
    Proxy,
    /// Completes method selection, then answers every CONNECT with this
    /// failure code.
    Reply(u8),
    /// Reads the greeting, then closes without a word.
    CloseAfterGreeting,
    /// Answers the greeting (and login), reads the request, then closes.
    CloseAfterRequest,
    /// Accepts and never says anything (a blackholed backend).
    Blackhole,
    /// A working proxy that waits this long before answering CONNECT.
    Slow(Duration),
    /// Chooses this auth method whatever the client offered.
    ChoosesMethod(u8),
    /// Answers CONNECT with success, then reads and never sends a byte.
    Stall,
}

/// An in-process SOCKS5 proxy on 127.0.0.1:0.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// When each connection was accepted.
    pub accept_times: Arc<Mutex<Vec<Instant>>>,
    /// Destinations requested, as `host:port` text.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Cleared, the backend closes every connection at once (down but
    /// still listening, as a crashed proxy behind a port forward is).
    pub up: Arc<AtomicBool>,
    /// Connections open right now, and the most ever open at once.
    pub open: Arc<AtomicUsize>,
    pub max_open: Arc<AtomicUsize>,
    /// Set, the backend accepts and then says nothing (its host went
    /// away behind a NAT that still answers SYNs, say).
    pub silent: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(behaviour: Behaviour) -> Backend {
        Backend::start_with(behaviour, None)
    }

    pub fn start_with(behaviour: Behaviour, login: Option<(&str, &str)>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Backend::serve(listener, behaviour, login)
    }

    /// Serves on an already-bound listener (for fixed-port ranges).
    pub fn serve(listener: TcpListener, behaviour: Behaviour, login: Option<(&str, &str)>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept_times = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let login = login.map(|(u, p)| (u.as_bytes().to_vec(), p.as_bytes().to_vec()));
        let (acc, times, reqs, is_up) =
            (Arc::clone(&accepted), Arc::clone(&accept_times), Arc::clone(&requests), Arc::clone(&up));
        let (open_now, most) = (Arc::clone(&open), Arc::clone(&max_open));
        let silent = Arc::new(AtomicBool::new(false));
        let is_silent = Arc::clone(&silent);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                acc.fetch_add(1, Ordering::SeqCst);
                times.lock().unwrap().push(Instant::now());
                if !is_up.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let behaviour =
                    if is_silent.load(Ordering::SeqCst) { Behaviour::Blackhole } else { behaviour.clone() };
                let (login, reqs) = (login.clone(), Arc::clone(&reqs));
                let now_open = open_now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now_open, Ordering::SeqCst);
                let open_now = Arc::clone(&open_now);
                thread::spawn(move || {
                    let _ = proxy_one(stream, &behaviour, login.as_ref(), &reqs);
                    open_now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend { addr, accepted, accept_times, requests, up, open, max_open, silent }
    }

    /// Makes the backend accept and then say nothing, or work again.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Takes the backend down (every connection closed at once) or up.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// CONNECT requests seen so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The YAML backend entry for this backend.
    pub fn yaml(&self, name: &str) -> String {
        format!("  - address: \"{}\"\n    name: {name}\n", self.addr)
    }
}

fn read_n(s: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn proxy_one(
    mut client: TcpStream,
    behaviour: &Behaviour,
    login: Option<&(Vec<u8>, Vec<u8>)>,
    requests: &Mutex<Vec<String>>,
) -> io::Result<()> {
    if let Behaviour::Blackhole = behaviour {
        // Hold the connection open, silent, until the peer gives up.
        let mut sink = [0u8; 64];
        while client.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        return Ok(());
    }
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    let head = read_n(&mut client, 2)?;
    assert_eq!(head[0], 5, "test backend got a non-SOCKS5 greeting");
    let methods = read_n(&mut client, head[1] as usize)?;
    if let Behaviour::CloseAfterGreeting = behaviour {
        return Ok(());
    }
    if let Behaviour::ChoosesMethod(m) = behaviour {
        client.write_all(&[5, *m])?;
        // Whatever comes next is not what this method would need.
        let mut sink = [0u8; 64];
        while client.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        return Ok(());
    }
    let wanted = if login.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        client.write_all(&[5, 0xFF])?;
        return Ok(());
    }
    client.write_all(&[5, wanted])?;
    if let Some((user, pass)) = login {
        let ver_ulen = read_n(&mut client, 2)?;
        let u = read_n(&mut client, ver_ulen[1] as usize)?;
        let plen = read_n(&mut client, 1)?;
        let p = read_n(&mut client, plen[0] as usize)?;
        let ok = &u == user && &p == pass;
        client.write_all(&[1, if ok { 0 } else { 1 }])?;
        if !ok {
            return Ok(());
        }
    }
    let head = read_n(&mut client, 4)?;
    let dest = match head[3] {
        1 => {
            let b = read_n(&mut client, 6)?;
            format!("{}.{}.{}.{}:{}", b[0], b[1], b[2], b[3], u16::from_be_bytes([b[4], b[5]]))
        }
        4 => {
            let b = read_n(&mut client, 18)?;
            let ip: [u8; 16] = b[..16].try_into().unwrap();
            format!("[{}]:{}", std::net::Ipv6Addr::from(ip), u16::from_be_bytes([b[16], b[17]]))
        }
        3 => {
            let len = read_n(&mut client, 1)?[0] as usize;
            let name = read_n(&mut client, len)?;
            let port = read_n(&mut client, 2)?;
            format!("{}:{}", String::from_utf8_lossy(&name), u16::from_be_bytes([port[0], port[1]]))
        }
        _ => return Ok(()),
    };
    requests.lock().unwrap().push(dest.clone());
    match behaviour {
        Behaviour::Reply(code) => {
            client.write_all(&[5, *code, 0, 1, 0, 0, 0, 0, 0, 0])?;
            return Ok(());
        }
        Behaviour::CloseAfterRequest => return Ok(()),
        Behaviour::Stall => {
            client.write_all(&[5, 0, 0, 1, 10, 9, 8, 7, 0x12, 0x34])?;
            client.set_read_timeout(None)?;
            let mut sink = [0u8; 1024];
            while client.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
            return Ok(());
        }
        Behaviour::Slow(delay) => thread::sleep(*delay),
        _ => {}
    }
    let upstream = match dest.to_socket_addrs().ok().and_then(|mut a| a.next()).map(TcpStream::connect) {
        Some(Ok(s)) => s,
        _ => {
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0])?;
            return Ok(());
        }
    };
    // Reply with a recognisable bound address so tests can see it pass through.
    client.write_all(&[5, 0, 0, 1, 10, 9, 8, 7, 0x12, 0x34])?;
    client.set_read_timeout(None)?;
    pump(client, upstream);
    Ok(())
}

/// Copies both ways with half-close, on two threads.
fn pump(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || {
        let mut b = b;
        let mut a = a;
        let _ = io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut b2, &mut a2);
    let _ = a2.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// A destination that echoes everything back, and half-closes when the
/// client does.
pub fn echo_server(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut r = stream.try_clone().unwrap();
                let mut w = stream;
                let _ = io::copy(&mut r, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A destination that reads until the client's FIN, then answers with
/// "got N bytes" and closes: it only works if half-close is relayed.
pub fn count_then_reply_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut all = Vec::new();
                let _ = stream.read_to_end(&mut all);
                let _ = stream.write_all(format!("got {} bytes", all.len()).as_bytes());
            });
        }
    });
    addr
}

/// A closed TCP port on loopback: bound, then released.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Destination forms a client can ask for.
#[derive(Debug)]
pub enum Dest<'a> {
    Ip(SocketAddr),
    Name(&'a str, u16),
}

/// Encodes a CONNECT request by hand.
pub fn connect_request(dest: &Dest) -> Vec<u8> {
    let mut req = vec![5, 1, 0];
    match dest {
        Dest::Ip(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Name(name, port) => {
            req.push(3);
            req.push(name.len() as u8);
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
    }
    req
}

/// A connected client socket with the test timeout set.
pub fn connect(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(proxy).expect("connect to daemon");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads a SOCKS5 reply; returns (REP, the whole reply).
pub fn read_reply(s: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = read_n(s, 4)?;
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        3 => read_n(s, 1)?[0] as usize + 2,
        t => panic!("reply with address type {t}"),
    };
    let code = head[1];
    head.extend(read_n(s, rest)?);
    Ok((code, head))
}

/// Runs the whole client side of a SOCKS5 CONNECT; returns the reply code
/// and the stream (ready for payload when the code is 0).
pub fn socks_connect(
    proxy: SocketAddr,
    dest: &Dest,
    login: Option<(&str, &str)>,
) -> io::Result<(u8, TcpStream)> {
    let mut s = connect(proxy);
    let method = if login.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method])?;
    let choice = read_n(&mut s, 2)?;
    if choice[1] != method {
        return Err(io::Error::other(format!("server chose method {:#04x}", choice[1])));
    }
    if let Some((u, p)) = login {
        let mut msg = vec![1, u.len() as u8];
        msg.extend_from_slice(u.as_bytes());
        msg.push(p.len() as u8);
        msg.extend_from_slice(p.as_bytes());
        s.write_all(&msg)?;
        let status = read_n(&mut s, 2)?;
        if status[1] != 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "login rejected"));
        }
    }
    s.write_all(&connect_request(dest))?;
    let (code, _) = read_reply(&mut s)?;
    Ok((code, s))
}

/// Connects through the proxy to an echo server and checks a round trip.
pub fn assert_echo(proxy: SocketAddr, dest: &Dest, login: Option<(&str, &str)>) {
    let (code, mut s) = socks_connect(proxy, dest, login).expect("handshake");
    assert_eq!(code, 0, "CONNECT failed with reply {code:#04x}");
    s.write_all(b"ping through socksbalance").unwrap();
    let mut back = [0u8; 25];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping through socksbalance");
}

/// Whether the peer closed the connection (EOF or reset), within the test
/// timeout.
pub fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Deterministic pseudo-random bytes, so transfers can be checked exactly.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
/// For state that changes on the daemon's own schedule (a breaker that
/// opens, a probe that lands), where there is no event to wait on.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads an HTTP request head (through the blank line), one byte at a
/// time so nothing past it is consumed; `None` if the peer closes first.
pub fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The daemon binary, running from a config file. Its stderr is drained
/// on a thread (as procd would), so a chatty daemon never blocks on a full
/// pipe; lines arrive on `lines`.
#[cfg(unix)]
pub struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The address it listens on, from its log.
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
    /// Every line read so far (by `wait_for_line`), in order.
    read: Vec<String>,
}

#[cfg(unix)]
impl Running {
    /// Starts it with `yaml` (in a directory named after `name`) and
    /// `args`; returns once it has logged the address it listens on.
    pub fn start(name: &str, yaml: &str, args: &[&str]) -> Running {
        let dir = std::env::temp_dir().join(format!("socksbalance-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("run.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_socksbalance"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in io::BufRead::lines(stderr).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running { child, lines, addr: "0.0.0.0:0".parse().unwrap(), dir, read: Vec::new() };
        // Readiness is the log line that names the bound address.
        let line = running.wait_for_line("listening on ");
        let rest = line.split("listening on ").nth(1).unwrap();
        let addr = rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap();
        running.addr = addr.parse().unwrap();
        running
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.join("run.yaml")
    }

    /// Sends `signal` and returns at once.
    pub fn signal(&self, signal: &str) {
        let status =
            std::process::Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Reads stderr until a line contains `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) if line.contains(needle) => {
                    self.read.push(line.clone());
                    return line;
                }
                Ok(line) => self.read.push(line),
                Err(_) => panic!("no log line with {needle:?} within {IO_TIMEOUT:?}"),
            }
        }
    }

    /// Like [`Running::stop`], but returns every line it ever logged.
    pub fn stop_all(mut self, signal: &str) -> (Option<i32>, Vec<String>) {
        let mut all = std::mem::take(&mut self.read);
        let (code, rest) = self.stop(signal);
        all.extend(rest);
        (code, all)
    }

    /// Sends `signal`, waits for exit, returns the exit code and the rest of stderr.
    pub fn stop(mut self, signal: &str) -> (Option<i32>, Vec<String>) {
        self.signal(signal);
        let code = self.child.wait().unwrap().code();
        // The reader thread ends at end of input, closing the channel.
        let rest = self.lines.iter().collect();
        let _ = std::fs::remove_dir_all(&self.dir);
        (code, rest)
    }
}

/// A failed assertion must not leave the daemon running: it would hold the
/// test's output open and hang the run instead of failing it.
#[cfg(unix)]
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
