//! The load generator and target server of `scripts/bench.sh`: blocking
//! sockets and std threads only, so it measures the proxies and not
//! itself. Everything stays on 127.0.0.1, every loop is bounded in count
//! and time, and every byte moved is checked.
//!
//! ```text
//! loadgen serve PORTFILE            the target: echo, source, sink, hold
//! loadgen bulk  PROXY TARGET STREAMS up|down MIB [PID]
//! loadgen rate  PROXY TARGET CONCURRENCY SECONDS [MAX_CONNS]
//! loadgen rtt   PROXY TARGET COUNT
//! loadgen idle  PROXY HOLD COUNT PID
//! loadgen udp-echo PORTFILE          a UDP echo server (its port to PORTFILE)
//! loadgen udp   PROXY TARGET COUNT  datagram round trips through a SOCKS5
//!                                   UDP ASSOCIATE to the echo at TARGET
//! loadgen cpu   PID SECONDS
//! ```
//!
//! Every client command speaks SOCKS5 (no auth, CONNECT to an IPv4
//! address) to PROXY, or HTTP `CONNECT` when PROXY is written
//! `http://ADDR`, and prints one line of `key=value` results. PROXY
//! written `redirect://IP` speaks no proxy protocol at all: each tunnel
//! connects straight to TARGET from source address IP, for a firewall
//! rule to redirect to a gateway listener (scripts/bench.sh's "sbr").
//!
//! The target server's protocol, chosen by the first byte a tunnel sends:
//! `E` echoes everything until EOF; `D` + u64 length streams that many
//! pattern bytes and closes; `U` + u64 length reads that many bytes,
//! checks them against the pattern and answers one byte, 1 for intact.
//! The hold port accepts tunnels and keeps them open without a byte.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "shared/latency.rs"]
mod latency;
use latency::percentile;

/// Length of the repeating test pattern: a prime, so that chunk and
/// buffer boundaries never line up with it.
const PATTERN_LEN: usize = 131_071;
/// Transfer chunk size for bulk runs.
const CHUNK: usize = 64 * 1024;
/// Worker threads of the target server (each serves one tunnel at a time).
const SERVER_WORKERS: usize = 96;
/// Every socket operation gives up after this, so a broken proxy ends a
/// run with an error instead of hanging the benchmark.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The target server exits on its own after this, should the script that
/// started it die without killing it.
const SERVER_LIFETIME: Duration = Duration::from_secs(3 * 3600);

/// The pattern, with its first [`CHUNK`] bytes repeated at the end so
/// that any window of up to `CHUNK` bytes is one slice.
fn pattern() -> Vec<u8> {
    // xorshift32: cheap, and no short period a bug could hide in.
    let mut x: u32 = 0x9E37_79B9;
    let mut pat: Vec<u8> = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    pat.extend_from_within(..CHUNK);
    pat
}

/// The pattern bytes at stream offset `at`, `len` long (len ≤ CHUNK).
fn expected(pat: &[u8], at: u64, len: usize) -> &[u8] {
    let start = (at % PATTERN_LEN as u64) as usize;
    &pat[start..start + len]
}

/// The proxy is an HTTP proxy (`http://ADDR` on the command line):
/// tunnels open with `CONNECT` instead of SOCKS5.
static HTTP_PROXY: AtomicBool = AtomicBool::new(false);

/// No proxy protocol (`redirect://IP`): connect to the target from IP.
static REDIRECTED: AtomicBool = AtomicBool::new(false);

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(addr) = args.get(1).and_then(|a| a.strip_prefix("http://")).map(str::to_owned) {
        HTTP_PROXY.store(true, Ordering::Relaxed);
        args[1] = addr;
    }
    if let Some(ip) = args.get(1).and_then(|a| a.strip_prefix("redirect://")).map(str::to_owned) {
        REDIRECTED.store(true, Ordering::Relaxed);
        args[1] = format!("{ip}:0");
    }
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let num = |i: usize| a(i).parse::<u64>().unwrap_or_else(|_| usage());
    let addr = |i: usize| a(i).parse::<SocketAddr>().unwrap_or_else(|_| usage());
    let opt_pid = |i: usize| args.get(i).map(|p| p.parse::<u32>().unwrap_or_else(|_| usage()));
    let result = match a(0) {
        "serve" => serve(a(1)),
        "bulk" => {
            let up = match a(4) {
                "up" => true,
                "down" => false,
                _ => usage(),
            };
            bulk(addr(1), addr(2), num(3).clamp(1, 64) as usize, up, num(5).clamp(1, 65_536), opt_pid(6))
        }
        "rate" => rate(addr(1), addr(2), num(3).clamp(1, 256) as usize, num(4).clamp(1, 120), args.get(5)),
        "rtt" => rtt(addr(1), addr(2), num(3).clamp(1, 1_000_000) as usize),
        "idle" => idle(addr(1), addr(2), num(3).clamp(1, 30_000) as usize, num(4) as u32),
        "cpu" => cpu(num(1) as u32, num(2).clamp(1, 600)),
        "udp-echo" => udp_echo(a(1)),
        "udp" => udp(addr(1), addr(2), num(3).clamp(1, 1_000_000) as usize),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("loadgen {}: {e}", a(0));
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: see the header of examples/loadgen.rs");
    std::process::exit(2);
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

// ---------------------------------------------------------------- server

fn serve(port_file: &str) -> io::Result<()> {
    let main = TcpListener::bind("127.0.0.1:0")?;
    let hold = TcpListener::bind("127.0.0.1:0")?;
    let pat = Arc::new(pattern());
    for _ in 0..SERVER_WORKERS {
        let (listener, pat) = (main.try_clone()?, Arc::clone(&pat));
        thread::Builder::new().stack_size(128 * 1024).spawn(move || loop {
            if let Ok((s, _)) = listener.accept() {
                let _ = serve_one(s, &pat);
            }
        })?;
    }
    // Held tunnels: accepted and kept, never read; a client closing them
    // is noticed only when the process ends, which is what an idle
    // tunnel's far end looks like.
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        let hold = hold.try_clone()?;
        thread::spawn(move || {
            for s in hold.incoming().flatten() {
                held.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        });
    }
    let text = format!("{} {}\n", main.local_addr()?, hold.local_addr()?);
    std::fs::write(port_file, text)?;
    // The script kills us when it is done; this bounds a forgotten server.
    thread::sleep(SERVER_LIFETIME);
    Ok(())
}

fn serve_one(mut s: TcpStream, pat: &[u8]) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut kind = [0u8; 1];
    s.read_exact(&mut kind)?;
    match kind[0] {
        b'E' => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n])?;
            }
        }
        b'D' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let total = u64::from_be_bytes(len);
            let mut at = 0u64;
            while at < total {
                let n = (total - at).min(CHUNK as u64) as usize;
                s.write_all(expected(pat, at, n))?;
                at += n as u64;
            }
            s.shutdown(Shutdown::Write)
        }
        b'U' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let total = u64::from_be_bytes(len);
            let ok = receive_checked(&mut s, pat, total)?;
            s.write_all(&[ok as u8])
        }
        other => Err(fail(format!("unknown request {other:#x}"))),
    }
}

/// Reads exactly `total` bytes and compares them with the pattern.
fn receive_checked(s: &mut TcpStream, pat: &[u8], total: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    let (mut at, mut ok) = (0u64, true);
    while at < total {
        let want = (total - at).min(CHUNK as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Err(fail(format!("EOF after {at} of {total} bytes")));
        }
        if ok && buf[..n] != *expected(pat, at, n) {
            let i = (0..n).find(|&i| buf[i] != expected(pat, at, n)[i]).unwrap_or(0);
            eprintln!("first difference at byte {} of {total}", at + i as u64);
            ok = false;
        }
        at += n as u64;
    }
    Ok(ok)
}

// ---------------------------------------------------------------- client

/// Opens a tunnel through the SOCKS5 proxy to `target`.
/// `IP_BIND_ADDRESS_NO_PORT` (Linux): a socket bound to an address with
/// port 0 gets its port at connect time.
#[allow(unsafe_code)]
fn bind_address_no_port(fd: &rustix::fd::OwnedFd) -> io::Result<()> {
    use rustix::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: an open socket, and an int option passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn tunnel(proxy: SocketAddr, target: SocketAddr) -> io::Result<TcpStream> {
    if REDIRECTED.load(Ordering::Relaxed) {
        // From `proxy`'s address (port 0), straight to the target.
        let family = if target.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let fd = rustix::net::socket(family, rustix::net::SocketType::STREAM, None)?;
        // The port is chosen at connect, for the whole 4-tuple: bound
        // with port 0 alone, 10,000 connections a round would use up the
        // ephemeral ports with TIME_WAIT sockets.
        bind_address_no_port(&fd)?;
        rustix::net::bind(&fd, &proxy)?;
        rustix::net::connect(&fd, &target)?;
        let s = TcpStream::from(fd);
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        return Ok(s);
    }
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    if HTTP_PROXY.load(Ordering::Relaxed) {
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())?;
        // The one answer a tunnel gets, read exactly: no body follows.
        const OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let mut answer = [0u8; OK.len()];
        s.read_exact(&mut answer)?;
        if answer != OK {
            return Err(fail(format!("CONNECT refused: {:?}", String::from_utf8_lossy(&answer))));
        }
        return Ok(s);
    }
    let SocketAddr::V4(v4) = target else { return Err(fail("target must be IPv4")) };
    // Greeting, then the request once the method is chosen, as curl does:
    // microsocks takes one recv() for one message, so it cannot take both
    // in one write.
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(fail(format!("SOCKS5 method refused: {choice:?}")));
    }
    let mut msg = vec![5, 1, 0, 1];
    msg.extend_from_slice(&v4.ip().octets());
    msg.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&msg)?;
    let mut answer = [0u8; 10];
    s.read_exact(&mut answer)?;
    if answer[0] != 5 || answer[1] != 0 {
        return Err(fail(format!("SOCKS5 CONNECT refused: {answer:?}")));
    }
    if answer[3] != 1 {
        return Err(fail("reply with a non-IPv4 bound address"));
    }
    Ok(s)
}

fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| fail("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let f = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| fail("bad stat"));
    Ok(f(14)? + f(15)?)
}

/// USER_HZ: 100 on every Linux we run on.
const TICKS_PER_SEC: f64 = 100.0;

fn bulk(
    proxy: SocketAddr,
    target: SocketAddr,
    streams: usize,
    up: bool,
    mib: u64,
    pid: Option<u32>,
) -> io::Result<()> {
    let per_stream = (mib << 20) / streams as u64;
    let pat = Arc::new(pattern());
    let mut socks = Vec::new();
    for _ in 0..streams {
        let mut s = tunnel(proxy, target)?;
        s.write_all(&[if up { b'U' } else { b'D' }])?;
        s.write_all(&per_stream.to_be_bytes())?;
        socks.push(s);
    }
    let ticks0 = pid.map(cpu_ticks).transpose()?;
    let start = Instant::now();
    let workers: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            let pat = Arc::clone(&pat);
            thread::spawn(move || -> io::Result<bool> {
                if up {
                    let mut at = 0u64;
                    while at < per_stream {
                        let n = (per_stream - at).min(CHUNK as u64) as usize;
                        s.write_all(expected(&pat, at, n))?;
                        at += n as u64;
                    }
                    let mut ok = [0u8; 1];
                    s.read_exact(&mut ok)?;
                    Ok(ok[0] == 1)
                } else {
                    let ok = receive_checked(&mut s, &pat, per_stream)?;
                    let mut extra = [0u8; 1];
                    // The source closes after the last byte: EOF, not more.
                    Ok(ok && s.read(&mut extra)? == 0)
                }
            })
        })
        .collect();
    let mut intact = true;
    for w in workers {
        intact &= w.join().map_err(|_| fail("worker panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    if !intact {
        return Err(fail("data corrupted in transit"));
    }
    let bytes = per_stream * streams as u64;
    let mut line = format!("mib_s={:.1} bytes={bytes} secs={secs:.3}", bytes as f64 / secs / 1048576.0);
    if let (Some(pid), Some(t0)) = (pid, ticks0) {
        line += &format!(" cpu_ticks={}", cpu_ticks(pid)? - t0);
    }
    println!("{line}");
    Ok(())
}

/// One short connection: handshake, CONNECT, 32-byte echo, close.
fn one_connection(proxy: SocketAddr, target: SocketAddr) -> io::Result<()> {
    let mut s = tunnel(proxy, target)?;
    let mut msg = [0x42u8; 33];
    msg[0] = b'E';
    s.write_all(&msg)?;
    let mut back = [0u8; 32];
    s.read_exact(&mut back)?;
    if back != msg[1..] {
        return Err(fail("echo corrupted"));
    }
    Ok(())
}

fn rate(
    proxy: SocketAddr,
    target: SocketAddr,
    concurrency: usize,
    seconds: u64,
    max_conns: Option<&String>,
) -> io::Result<()> {
    let max: usize = max_conns.and_then(|m| m.parse().ok()).unwrap_or(1_000_000);
    let started = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs(seconds);
    let begin = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (started, failed) = (Arc::clone(&started), Arc::clone(&failed));
            thread::spawn(move || -> (Vec<Duration>, Option<io::Error>) {
                let mut lat = Vec::new();
                while Instant::now() < end && started.fetch_add(1, Ordering::Relaxed) < max {
                    let t = Instant::now();
                    if let Err(e) = one_connection(proxy, target) {
                        failed.store(true, Ordering::Relaxed);
                        return (lat, Some(e));
                    }
                    lat.push(t.elapsed());
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                }
                (lat, None)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        let (lat, err) = w.join().map_err(|_| fail("worker panicked"))?;
        if let Some(e) = err {
            return Err(e);
        }
        all.extend(lat);
    }
    let secs = begin.elapsed().as_secs_f64();
    latency::print_rate(all, secs);
    Ok(())
}

fn rtt(proxy: SocketAddr, target: SocketAddr, count: usize) -> io::Result<()> {
    let mut s = tunnel(proxy, target)?;
    s.write_all(b"E")?;
    let mut msg = [0u8; 32];
    let mut back = [0u8; 32];
    let mut lat = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        // The first tenth warms caches and the scheduler; not counted.
        if i >= count / 10 {
            lat.push(t.elapsed());
        }
        if back != msg {
            return Err(fail("echo corrupted"));
        }
    }
    lat.sort();
    println!("p50_us={:.1} p99_us={:.1} count={count}", percentile(&lat, 0.5), percentile(&lat, 0.99));
    Ok(())
}

fn udp_echo(port_file: &str) -> io::Result<()> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std::fs::write(port_file, format!("{}\n", s.local_addr()?))?;
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 65_536];
    while started.elapsed() < SERVER_LIFETIME {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
    Ok(())
}

/// One UDP association at `proxy`, then `count` round trips of a 64-byte
/// datagram to the echo at `target`, one at a time (a lost one is sent
/// again after 200 ms, and counted). Prints the round trip's p50 and p99
/// and the datagrams per second both ways.
fn udp(proxy: SocketAddr, target: SocketAddr, count: usize) -> io::Result<()> {
    let SocketAddr::V4(v4) = target else { return Err(fail("target must be IPv4")) };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut control = TcpStream::connect(proxy)?;
    control.set_read_timeout(Some(IO_TIMEOUT))?;
    control.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    control.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(fail(format!("SOCKS5 method refused: {choice:?}")));
    }
    let port = socket.local_addr()?.port().to_be_bytes();
    control.write_all(&[5, 3, 0, 1, 127, 0, 0, 1, port[0], port[1]])?;
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply)?;
    if reply[1] != 0 || reply[3] != 1 {
        return Err(fail(format!("UDP ASSOCIATE refused: {reply:?}")));
    }
    let ip = [reply[4], reply[5], reply[6], reply[7]];
    let relay = if ip == [0, 0, 0, 0] { SocketAddr::new(proxy.ip(), 0) } else { SocketAddr::from((ip, 0)) };
    let relay = SocketAddr::new(relay.ip(), u16::from_be_bytes([reply[8], reply[9]]));
    let mut msg = vec![0, 0, 0, 1];
    msg.extend_from_slice(&v4.ip().octets());
    msg.extend_from_slice(&v4.port().to_be_bytes());
    let head = msg.len();
    msg.resize(head + 64, 0);
    let mut back = [0u8; 256];
    let (mut lat, mut lost) = (Vec::with_capacity(count), 0u64);
    let start = Instant::now();
    for i in 0..count + count / 10 {
        msg[head..head + 8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        loop {
            socket.send_to(&msg, relay)?;
            match socket.recv_from(&mut back) {
                Ok((n, _)) if back[..n].ends_with(&msg[head..]) => break,
                Ok(_) => continue,
                Err(_) if lost < 1000 => lost += 1,
                Err(e) => return Err(e),
            }
        }
        if i >= count / 10 {
            lat.push(t.elapsed());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "p50_us={:.1} p99_us={:.1} dgrams_s={:.0} lost={lost} count={count}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        2.0 * (count + count / 10) as f64 / secs
    );
    Ok(())
}

fn rss_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| fail(format!("no {key} for {pid}")))
}

fn idle(proxy: SocketAddr, hold: SocketAddr, count: usize, pid: u32) -> io::Result<()> {
    let before = rss_kib(pid, "VmRSS:")?;
    let mut tunnels = Vec::with_capacity(count);
    for i in 0..count {
        tunnels.push(tunnel(proxy, hold).map_err(|e| fail(format!("tunnel {i}: {e}")))?);
    }
    // Each tunnel proved itself with the proxy's success reply; its relay
    // task exists by then. Give the allocator a beat to settle, bounded.
    let mut after = rss_kib(pid, "VmRSS:")?;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(50));
        let now = rss_kib(pid, "VmRSS:")?;
        if now == after {
            break;
        }
        after = now;
    }
    println!(
        "tunnels={count} rss_before_kib={before} rss_after_kib={after} kib_per_tunnel={:.2}",
        (after.saturating_sub(before)) as f64 / count as f64
    );
    drop(tunnels);
    Ok(())
}

fn cpu(pid: u32, seconds: u64) -> io::Result<()> {
    let t0 = cpu_ticks(pid)?;
    thread::sleep(Duration::from_secs(seconds));
    let t1 = cpu_ticks(pid)?;
    println!(
        "cpu_ticks={} secs={seconds} cpu_pct={:.2}",
        t1 - t0,
        (t1 - t0) as f64 / TICKS_PER_SEC / seconds as f64 * 100.0
    );
    Ok(())
}
