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
