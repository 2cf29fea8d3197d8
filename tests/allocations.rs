//! Heap allocations per proxied connection (#7: "look at the accept path
//! and the handshake path for … allocations per connection").
//!
//! A counting global allocator wraps the system one. The daemon runs in
//! this process (one executor thread) in front of a SOCKS5 backend and an
//! echo target, and a client opens connections one after another, each a
//! full one: greeting, CONNECT, a 32-byte echo, close. The backend, the
//! target and the client are written to allocate nothing per connection
//! (blocking `std` sockets, one thread each, buffers on the stack), and
//! `the_peers_allocate_nothing_per_connection` holds them to it, so what
//! is counted is the daemon's: accept, the session task, the handshake
//! on both sides, the backend connect and the relay.
//!
//! Counts, not times: the figures are the same on a loaded machine. The
//! budgets are the counts measured when they were set plus a little room;
//! `cargo test --test allocations -- --nocapture` prints the figures
//! (docs/performance.md, "Allocations per connection").
//!
//! The tests take a lock: the counter is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` with the same arguments;
// the counters are plain atomics and allocate nothing.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing Vec: one more allocation, of the new size.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections before counting: pools, slabs and queues reach their
/// working size.
const WARM_UP: usize = 200;
const COUNTED: usize = 1000;
const ECHO: usize = 32;

/// Serves connections one after another on a thread of its own.
fn one_at_a_time(handle: fn(&mut TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            handle(&mut conn);
        }
    });
    addr
}

/// Echoes one message per connection, then waits for the client's end.
fn target() -> SocketAddr {
    one_at_a_time(|s| {
        let mut buf = [0u8; ECHO];
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            let _ = s.read(&mut buf);
        }
    })
}

/// A SOCKS5 proxy for one connection at a time, IPv4 CONNECT without
/// login, that relays exactly one echo exchange.
fn backend() -> SocketAddr {
    one_at_a_time(|c| {
        let _ = serve_one(c);
    })
}

fn serve_one(c: &mut TcpStream) -> std::io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut head = [0u8; 2];
    c.read_exact(&mut head)?;
    let mut methods = [0u8; 255];
    c.read_exact(&mut methods[..usize::from(head[1])])?;
    assert!(head[0] == 5 && methods[..usize::from(head[1])].contains(&0), "greeting");
    c.write_all(&[5, 0])?;
    let mut request = [0u8; 10];
    // The daemon's start-up probe ends after the method choice.
    c.read_exact(&mut request)?;
    assert_eq!(request[..4], [5, 1, 0, 1], "IPv4 CONNECT");
    let ip = std::net::Ipv4Addr::new(request[4], request[5], request[6], request[7]);
    let dest = SocketAddr::from((ip, u16::from_be_bytes([request[8], request[9]])));
    let mut t = TcpStream::connect(dest)?;
    t.set_read_timeout(Some(IO_TIMEOUT))?;
    c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    let mut buf = [0u8; ECHO];
    c.read_exact(&mut buf)?;
    t.write_all(&buf)?;
    t.read_exact(&mut buf)?;
    c.write_all(&buf)?;
    // The client's end, passed on; then the target's.
    let _ = c.read(&mut buf)?;
    t.shutdown(Shutdown::Write)?;
    let _ = t.read(&mut buf)?;
    Ok(())
}

/// One whole client connection through the SOCKS5 server at `proxy`.
fn one_connection(proxy: SocketAddr, dest: SocketAddr) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    let SocketAddr::V4(v4) = dest else { unreachable!("the target is on 127.0.0.1") };
    let [a, b, c, d] = v4.ip().octets();
    let [p, q] = v4.port().to_be_bytes();
    s.write_all(&[5, 1, 0, 1, a, b, c, d, p, q]).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [5, 0], "CONNECT succeeded");
    let msg = [0x5au8; ECHO];
    s.write_all(&msg).unwrap();
    let mut back = [0u8; ECHO];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut back).unwrap(), 0, "the tunnel ends after the client's end");
}

/// Allocations and bytes per connection over [`COUNTED`] connections,
/// after [`WARM_UP`] more.
fn per_connection(proxy: SocketAddr, dest: SocketAddr) -> (f64, f64) {
    for _ in 0..WARM_UP {
        one_connection(proxy, dest);
    }
    let (a0, b0) = (ALLOCATIONS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    for _ in 0..COUNTED {
        one_connection(proxy, dest);
    }
    let (a1, b1) = (ALLOCATIONS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    ((a1 - a0) as f64 / COUNTED as f64, (b1 - b0) as f64 / COUNTED as f64)
}

fn daemon(mode: &str, backend: SocketAddr) -> socksbalance::Daemon {
    // Probes far apart: the checker allocates nothing while counting.
    let yaml = format!(
        "listen: 127.0.0.1:0\nmode: {mode}\nhealth:\n  check_interval: 1h\n\
         backends:\n  - address: {backend}\n"
    );
    let config = socksbalance::Config::from_yaml(&yaml).expect("valid config");
    socksbalance::Daemon::start(config, 1).expect("daemon starts")
}

#[test]
fn the_peers_allocate_nothing_per_connection() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dest, proxy) = (target(), backend());
    let (allocs, _) = per_connection(proxy, dest);
    assert!(allocs < 0.01, "the test's own peers allocate {allocs:.2} times per connection");
}

fn check(mode: &str, budget: f64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dest = target();
    let d = daemon(mode, backend());
    let (allocs, bytes) = per_connection(d.local_addrs()[0], dest);
    eprintln!("{mode}: {allocs:.2} allocations, {bytes:.0} bytes allocated per connection");
    assert!(allocs <= budget, "{mode}: {allocs:.2} allocations per connection, budget {budget}");
}

#[test]
fn a_socks5_mode_connection_stays_within_its_allocation_budget() {
    check("socks5", 10.0);
}

#[test]
fn a_transparent_mode_connection_stays_within_its_allocation_budget() {
    check("transparent", 13.0);
}
