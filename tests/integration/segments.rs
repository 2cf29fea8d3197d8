//! Delayed ACKs through the handshake (src/tcp.rs): the ACKs the daemon
//! owes during a SOCKS5 handshake ride on its answers instead of going
//! out alone. Counted with `TCP_INFO`'s `tcpi_segs_in` on the peers'
//! sockets, each against the same exchange with a plain socket, which
//! acknowledges at once. Linux only (`tcpi_segs_in` is Linux ≥ 4.2).
//!
//! An ACK held back goes out alone after the kernel's delayed-ACK timer
//! (40 ms and more) when no answer came first; on a machine loaded
//! enough to stall the daemon that long the count can come out as a
//! plain socket's, so each check gets three tries and must hold once.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::support::*;

/// Segments this socket has received (`tcpi_segs_in`).
#[allow(unsafe_code)]
fn segs_in(s: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `info` is a plain C struct the kernel fills in, at most
    // `len` bytes of it; the socket is open for the call.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

const GREETING: [u8; 3] = [5, 1, 0];
/// CONNECT 127.0.0.1:9 (the test backend only reads it).
const REQUEST: [u8; 10] = [5, 1, 0, 1, 127, 0, 0, 1, 0, 9];
const SUCCEEDED: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 1, 0, 9];

fn read_n<const N: usize>(s: &mut TcpStream) -> [u8; N] {
    let mut buf = [0u8; N];
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Segments a backend received after the greeting and after the request,
/// and the client's stream. `open` starts the connection the backend is
/// to accept.
fn backend_side(backend: &TcpListener, open: impl FnOnce() -> TcpStream) -> (u32, u32, TcpStream) {
    let client = open();
    let mut b = loop {
        let (mut b, _) = backend.accept().unwrap();
        let head = read_n::<2>(&mut b);
        let mut methods = vec![0u8; usize::from(head[1])];
        b.read_exact(&mut methods).unwrap();
        if [head[0], head[1], methods[0]] == GREETING && methods.len() == 1 {
            break b;
        }
        // The daemon's start-up probe of this backend: answer, move on.
        b.write_all(&[5, 0]).unwrap();
    };
    let after_greeting = segs_in(&b);
    b.write_all(&[5, 0]).unwrap();
    assert_eq!(read_n::<10>(&mut b), REQUEST);
    let after_request = segs_in(&b);
    b.write_all(&SUCCEEDED).unwrap();
    drop(b);
    (after_greeting, after_request, client)
}

fn holds_in_one_of_three(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let mut last = String::new();
    for _ in 0..3 {
        match check() {
            Ok(()) => return,
            Err(e) => last = e,
        }
    }
    panic!("{what}: {last}");
}

#[test]
fn the_daemon_acknowledges_the_handshake_with_its_answers() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - address: {baddr}\n"));
    let proxy: SocketAddr = d.local_addrs()[0];

    // The client's side: the daemon's answer to the greeting carries the
    // ACK of it; a plain server sends the ACK first, then the answer.
    holds_in_one_of_three("client side", || {
        let mut plain = TcpStream::connect(baddr).unwrap();
        plain.write_all(&GREETING).unwrap();
        let (mut b, _) = backend.accept().unwrap();
        assert_eq!(read_n::<3>(&mut b), GREETING);
        b.write_all(&[5, 0]).unwrap();
        assert_eq!(read_n::<2>(&mut plain), [5, 0]);
        let from_plain = segs_in(&plain);

        let mut c = TcpStream::connect(proxy).unwrap();
        c.write_all(&GREETING).unwrap();
        assert_eq!(read_n::<2>(&mut c), [5, 0]);
        let from_daemon = segs_in(&c);
        if from_daemon < from_plain {
            Ok(())
        } else {
            Err(format!("{from_daemon} segments from the daemon, {from_plain} from a plain server"))
        }
    });

    // The backend's side: the handshake's last ACK rides on the daemon's
    // greeting, and the ACK of the method choice on its request.
    holds_in_one_of_three("backend side", || {
        let (plain_greeting, plain_request, _plain) = backend_side(&backend, || {
            let mut p = TcpStream::connect(baddr).unwrap();
            p.write_all(&GREETING).unwrap();
            // The request goes once the method choice is in, as the
            // daemon's does; a thread, since the backend runs here.
            let mut q = p.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = read_n::<2>(&mut q);
                let _ = q.write_all(&REQUEST);
            });
            p
        });
        let (greeting, request, mut client) = backend_side(&backend, || {
            let mut c = TcpStream::connect(proxy).unwrap();
            c.write_all(&GREETING).unwrap();
            assert_eq!(read_n::<2>(&mut c), [5, 0]);
            c.write_all(&REQUEST).unwrap();
            c
        });
        assert_eq!(read_n::<10>(&mut client)[..2], [5, 0], "the daemon passes the reply on");
        if greeting < plain_greeting && request - greeting < plain_request - plain_greeting {
            Ok(())
        } else {
            Err(format!(
                "segments at the greeting and the request: {greeting} and {request} from the daemon, \
                 {plain_greeting} and {plain_request} from a plain client"
            ))
        }
    });
}
