//! A second load generator for the connection-rate test of
//! `scripts/bench.sh`, of another design than `loadgen rate`: one thread,
//! non-blocking sockets and one poller (the `polling` crate, epoll on
//! Linux) drive all the connections as state machines, where loadgen runs
//! a blocking thread per connection. A ratio between proxies that holds
//! under both is the proxies', not the load generator's.
//!
//! ```text
//! epollgen PROXY TARGET CONCURRENCY SECONDS
//! ```
//!
//! Each connection does what loadgen's does: the SOCKS5 greeting, then
//! (once the method is chosen) a CONNECT to TARGET (IPv4), then 32 bytes
//! echoed by the target (`loadgen serve`'s `E`), checked, and close; or
//! HTTP `CONNECT` when PROXY is written `http://ADDR`. It prints one line
//! as loadgen does: `conns_s=… conns=… p50_us=… p99_us=…`. Everything is
//! bounded: the run lasts SECONDS, and a connection that takes longer
//! than 20 s fails the run (exit 1).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use polling::{Event, Events, Poller};

#[path = "shared/latency.rs"]
mod latency;

/// A connection that takes longer than this fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One step of a connection's exchange.
enum Step {
    /// Wait until the non-blocking connect is done.
    Connected,
    /// Write these bytes.
    Send(Vec<u8>),
    /// Read exactly this many bytes and check them.
    Recv(usize, fn(&[u8]) -> bool),
}

struct Conn {
    sock: TcpStream,
    step: usize,
    /// Bytes of the current step written or read so far.
    done: usize,
    buf: [u8; 64],
    started: Instant,
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The exchange every connection goes through.
fn script(target: SocketAddr, http: bool) -> io::Result<Vec<Step>> {
    let mut steps = vec![Step::Connected];
    if http {
        steps.push(Step::Send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()));
        const OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        steps.push(Step::Recv(OK.len(), |b| b == OK));
    } else {
        let SocketAddr::V4(v4) = target else { return Err(fail("target must be IPv4")) };
        steps.push(Step::Send(vec![5, 1, 0]));
        steps.push(Step::Recv(2, |b| b == [5, 0]));
        let mut request = vec![5, 1, 0, 1];
        request.extend_from_slice(&v4.ip().octets());
        request.extend_from_slice(&v4.port().to_be_bytes());
        steps.push(Step::Send(request));
        steps.push(Step::Recv(10, |b| b[0] == 5 && b[1] == 0 && b[3] == 1));
    }
    let mut echo = vec![0x42u8; 33];
    echo[0] = b'E';
    steps.push(Step::Send(echo));
    steps.push(Step::Recv(32, |b| b.iter().all(|&x| x == 0x42)));
    Ok(steps)
}

/// A non-blocking connect to `proxy`, under way.
fn start(proxy: SocketAddr) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if proxy.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, &proxy) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sock = TcpStream::from(fd);
    sock.set_nodelay(true)?;
    Ok(sock)
}

enum Progress {
    /// Waiting: re-arm for reading (true) or writing (false).
    Wait(bool),
    Finished,
}

/// Takes `conn` as far as it goes without blocking.
fn advance(conn: &mut Conn, steps: &[Step]) -> io::Result<Progress> {
    loop {
        let Some(step) = steps.get(conn.step) else { return Ok(Progress::Finished) };
        match step {
            Step::Connected => {
                if let Some(e) = conn.sock.take_error()? {
                    return Err(e);
                }
                // Not connected yet: peer_addr fails with ENOTCONN.
                if conn.sock.peer_addr().is_err() {
                    return Ok(Progress::Wait(false));
                }
            }
            Step::Send(bytes) => {
                while conn.done < bytes.len() {
                    match conn.sock.write(&bytes[conn.done..]) {
                        Ok(n) => conn.done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait(false)),
                        Err(e) => return Err(e),
                    }
                }
            }
            Step::Recv(len, check) => {
                while conn.done < *len {
                    match conn.sock.read(&mut conn.buf[conn.done..*len]) {
                        Ok(0) => return Err(fail(format!("the proxy closed at step {}", conn.step))),
                        Ok(n) => conn.done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait(true)),
                        Err(e) => return Err(e),
                    }
                }
                if !check(&conn.buf[..*len]) {
                    return Err(fail(format!(
                        "unexpected answer at step {}: {:?}",
                        conn.step,
                        &conn.buf[..*len]
                    )));
                }
            }
        }
        conn.step += 1;
        conn.done = 0;
    }
}

fn run(proxy: &str, target: SocketAddr, concurrency: usize, seconds: u64) -> io::Result<()> {
    let (proxy, http) = match proxy.strip_prefix("http://") {
        Some(addr) => (addr, true),
        None => (proxy, false),
    };
    let proxy: SocketAddr = proxy.parse().map_err(|_| fail("PROXY must be IP:PORT or http://IP:PORT"))?;
    let steps = script(target, http)?;
    let poller = Poller::new()?;
    let mut conns: Vec<Option<Conn>> = (0..concurrency).map(|_| None).collect();
    let open = |poller: &Poller, key: usize| -> io::Result<Conn> {
        let sock = start(proxy)?;
        // SAFETY: the socket is deleted from the poller before it closes.
        unsafe { poller.add(&sock, Event::writable(key))? };
        Ok(Conn { sock, step: 0, done: 0, buf: [0; 64], started: Instant::now() })
    };
    for (key, slot) in conns.iter_mut().enumerate() {
        *slot = Some(open(&poller, key)?);
    }
    let begin = Instant::now();
    let end = begin + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut events = Events::new();
    let mut live = concurrency;
    while live > 0 {
        events.clear();
        poller.wait(&mut events, Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        for ev in events.iter() {
            let Some(conn) = conns[ev.key].as_mut() else { continue };
            match advance(conn, &steps)? {
                Progress::Wait(read) => {
                    let interest = if read { Event::readable(ev.key) } else { Event::writable(ev.key) };
                    poller.modify(&conn.sock, interest)?;
                }
                Progress::Finished => {
                    latencies.push(conn.started.elapsed());
                    poller.delete(&conn.sock)?;
                    conns[ev.key] = None;
                    if Instant::now() < end {
                        conns[ev.key] = Some(open(&poller, ev.key)?);
                    } else {
                        live -= 1;
                    }
                }
            }
        }
        if let Some(stuck) = conns.iter().flatten().find(|c| now.duration_since(c.started) > IO_TIMEOUT) {
            return Err(fail(format!(
                "a connection made no progress for {IO_TIMEOUT:?} (step {})",
                stuck.step
            )));
        }
    }
    let secs = begin.elapsed().as_secs_f64();
    latency::print_rate(latencies, secs);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [proxy, target, concurrency, seconds] => target
            .parse()
            .ok()
            .zip(concurrency.parse().ok())
            .zip(seconds.parse().ok())
            .map(|((t, c), s)| (proxy, t, c, s)),
        _ => None,
    };
    let Some((proxy, target, concurrency, seconds)) = parsed else {
        eprintln!("usage: epollgen PROXY TARGET CONCURRENCY SECONDS");
        std::process::exit(2);
    };
    if let Err(e) = run(proxy, target, concurrency, seconds) {
        eprintln!("epollgen: {e}");
        std::process::exit(1);
    }
}
