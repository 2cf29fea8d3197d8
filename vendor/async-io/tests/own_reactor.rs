//! socksbalance patch: a reactor per thread (`use_own_reactor`).

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use async_io::{block_on, use_own_reactor, Async, Timer};
use futures_lite::{future, FutureExt};

/// Runs `f` on a new thread that has its own reactor.
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        use_own_reactor().unwrap();
        f()
    })
}

#[test]
fn sources_and_timers_work_on_an_own_reactor() {
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = on_own_thread(move || {
        block_on(async {
            let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            addr_tx.send(listener.get_ref().local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let start = Instant::now();
            Timer::after(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            let mut buf = [0u8; 5];
            future::poll_fn(|cx| {
                use futures_lite::AsyncRead;
                std::pin::Pin::new(&mut &stream).poll_read(cx, &mut buf)
            })
            .await
            .unwrap();
            buf
        })
    });
    let addr = addr_rx.recv().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut client, b"hello").unwrap();
    assert_eq!(&server.join().unwrap(), b"hello");
}

#[test]
fn an_own_reactor_is_driven_only_by_its_thread() {
    // A socket registered on thread A's own reactor, while A is not in
    // `block_on`: nothing drives that reactor, not even the "async-io"
    // thread, so waiting on it from here does not complete.
    let (sock_tx, sock_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let a = on_own_thread(move || {
        let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        sock_tx.send(socket).unwrap();
        go_rx.recv().unwrap();
        block_on(async { stop_rx.recv().await.ok() });
    });
    let socket = sock_rx.recv().unwrap();
    let to = socket.get_ref().local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"x", to).unwrap();
    let mut buf = [0u8; 8];
    // The datagram is there, so the first try reads it without waiting.
    assert_eq!(block_on(socket.recv(&mut buf)).unwrap(), 1);
    let timed_out = block_on(
        // `readable` (not `recv`, which tries again whenever it is polled)
        // completes only when a reactor reports the socket.
        async { socket.readable().await.map(|_| false) }
            .or(async {
                sender.send_to(b"y", to).ok();
                Timer::after(Duration::from_millis(100)).await;
                // The datagram is waiting now; only a reaction could say so.
                Timer::after(Duration::from_millis(200)).await;
                Ok(true)
            }),
    )
    .unwrap();
    assert!(timed_out, "a source of thread A's reactor was woken while A did not drive it");
    assert_eq!(socket.get_ref().recv(&mut buf).unwrap(), 1, "the datagram waits to be read");
    // Once A drives its reactor, a wait here completes.
    go_tx.send(()).unwrap();
    let got = block_on(async { socket.readable().await.ok().map(|_| 1) }.or(async {
        Timer::after(Duration::from_millis(20)).await;
        sender.send_to(b"z", to).ok();
        Timer::after(Duration::from_secs(5)).await;
        None
    }));
    assert_eq!(got, Some(1), "thread A's reactor did not wake a task polled on another thread");
    stop_tx.send_blocking(()).unwrap();
    a.join().unwrap();
}

#[test]
fn a_wake_from_another_reactor_reaches_a_thread_blocked_on_its_own() {
    // Thread B registers a socket on its own reactor and hands it to thread
    // A, which has its own reactor too and waits on the socket with nothing
    // else to do: A sleeps in its own epoll. B's reactor sees the datagram
    // and wakes A's task from inside B's `react`, which must notify A's
    // reactor, not skip it as "this thread is polling".
    let (sock_tx, sock_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let b = on_own_thread(move || {
        sock_tx.send(Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap()).unwrap();
        block_on(async { stop_rx.recv().await.ok() });
    });
    let socket: Async<UdpSocket> = sock_rx.recv().unwrap();
    let to = socket.get_ref().local_addr().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let a = on_own_thread(move || {
        let mut buf = [0u8; 8];
        let n = block_on(async {
            ready_tx.send(()).unwrap();
            socket.recv(&mut buf).await
        });
        done_tx.send(n.map_err(|e| e.to_string())).unwrap();
    });
    ready_rx.recv().unwrap();
    // Give A time to fall asleep in its epoll (a bounded pause, not a wait
    // for readiness: the test passes either way if the wake works).
    thread::sleep(Duration::from_millis(50));
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"hey", to).unwrap();
    let got = done_rx.recv_timeout(Duration::from_secs(5));
    assert_eq!(got, Ok(Ok(3)), "thread A was never woken");
    a.join().unwrap();
    stop_tx.send_blocking(()).unwrap();
    b.join().unwrap();
}

/// A connected pair: the far end (blocking) and the near end, not yet
/// registered anywhere.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let far = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (near, _) = listener.accept().unwrap();
    (far, near)
}

/// The `events:` mask of `fd` in this process's epoll sets, from
/// /proc/self/fdinfo: one entry per set the descriptor is in.
#[cfg(target_os = "linux")]
fn epoll_masks(fd: i32) -> Vec<u32> {
    let mut masks = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_epoll = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().contains("eventpoll"));
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy()))
        else {
            continue;
        };
        if !is_epoll {
            continue;
        }
        for line in info.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("tfd:") && words.next().and_then(|w| w.parse().ok()) == Some(fd) {
                let mask = line.split("events:").nth(1).and_then(|w| w.split_whitespace().next()).unwrap();
                masks.push(u32::from_str_radix(mask, 16).unwrap());
            }
        }
    }
    masks
}

#[cfg(target_os = "linux")]
#[test]
fn on_linux_an_own_reactors_sources_are_edge_triggered_for_good() {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;
    const EPOLLONESHOT: u32 = 1 << 30;
    const EPOLLET: u32 = 1 << 31;
    let edge = on_own_thread(|| {
        let (mut far, near) = tcp_pair();
        let near = Async::new(near).unwrap();
        let fd = near.get_ref().as_raw_fd();
        let registered = epoll_masks(fd);
        // Waits after a drain, which re-arm a one-shot source: the
        // registration stays as it was made.
        block_on(async {
            for round in 0..3u8 {
                far.write_all(&[round]).unwrap();
                let mut byte = [0u8; 1];
                futures_lite::AsyncReadExt::read_exact(&mut &near, &mut byte).await.unwrap();
                assert_eq!(byte, [round]);
            }
        });
        (registered, epoll_masks(fd))
    });
    let (registered, after) = edge.join().unwrap();
    assert_eq!(registered.len(), 1, "in one epoll set: {registered:x?}");
    let mask = registered[0];
    assert_eq!(mask & (EPOLLET | EPOLLONESHOT | EPOLLIN | EPOLLOUT), EPOLLET | EPOLLIN | EPOLLOUT, "{mask:#x}");
    assert_eq!(after, registered, "the registration changed");

    // On the global reactor, a source is one-shot, as upstream makes it.
    let (_far, near) = tcp_pair();
    let near = Async::new(near).unwrap();
    let masks = epoll_masks(near.get_ref().as_raw_fd());
    assert_eq!(masks.len(), 1);
    assert_eq!(masks[0] & (EPOLLET | EPOLLONESHOT), EPOLLONESHOT, "{:#x}", masks[0]);
}

/// `readable()` on an edge-triggered source, where the edge it waits for
/// came before: bytes, or a FIN behind bytes a read took.
fn a_level_wait_after(prepare: impl FnOnce(&mut TcpStream, &Async<TcpStream>) + Send + 'static) -> bool {
    on_own_thread(move || {
        let (mut far, near) = tcp_pair();
        let near = Async::new(near).unwrap();
        prepare(&mut far, &near);
        block_on(async {
            // Once the timer fired, the reactor has reacted since the
            // bytes came, so their event went by with nobody waiting.
            Timer::after(Duration::from_millis(10)).await;
            async { near.readable().await.is_ok() }
                .or(async {
                    Timer::after(Duration::from_secs(5)).await;
                    false
                })
                .await
        })
    })
    .join()
    .unwrap()
}

#[test]
fn a_level_wait_hears_of_bytes_that_came_while_nobody_waited() {
    let heard = a_level_wait_after(|far, _| std::io::Write::write_all(far, b"early").unwrap());
    assert!(heard, "readable() missed bytes that were there");
}

#[test]
fn a_level_wait_hears_of_a_fin_behind_bytes_already_read() {
    let heard = a_level_wait_after(|far, near| {
        std::io::Write::write_all(far, b"last").unwrap();
        far.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = [0u8; 64];
        // Ask until the bytes are there; the FIN stays behind them.
        loop {
            match std::io::Read::read(&mut near.get_ref(), &mut buf) {
                Ok(n) => {
                    assert_eq!(&buf[..n], b"last");
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(heard, "readable() missed a FIN that was there");
}

#[test]
fn a_wait_after_a_drain_wakes_on_the_next_bytes() {
    let got = on_own_thread(|| {
        let (mut far, near) = tcp_pair();
        let near = Async::new(near).unwrap();
        block_on(async {
            let mut got = Vec::new();
            for chunk in [&b"one"[..], b"two", b"three"] {
                // The far end writes from another thread while this one
                // waits (each read below drains, then waits).
                let mut writer = far.try_clone().unwrap();
                let chunk = chunk.to_vec();
                let w = thread::spawn(move || std::io::Write::write_all(&mut writer, &chunk).unwrap());
                let mut buf = [0u8; 16];
                let n = async { futures_lite::AsyncReadExt::read(&mut &near, &mut buf).await.ok() }
                    .or(async {
                        Timer::after(Duration::from_secs(5)).await;
                        None
                    })
                    .await;
                w.join().unwrap();
                got.extend_from_slice(&buf[..n.expect("no wake for bytes sent after the drain")]);
            }
            std::io::Write::flush(&mut far).unwrap();
            got
        })
    });
    assert_eq!(got.join().unwrap(), b"onetwothree");
}
