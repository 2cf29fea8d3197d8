//! Start-up, handshake timeout and graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nlimits:\n  handshake_timeout: 300ms\nbackends:\n  - direct: true\n"
    ));
    let start = Instant::now();
    let mut silent = connect(d.local_addrs()[0]);
    assert!(is_closed(&mut silent));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn shutdown_stops_accepting_but_lets_open_tunnels_finish() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nshutdown_timeout: 10s\nbackends:\n  - direct: true\n"));
    let proxy = d.local_addrs()[0];
    let target = echo_server("127.0.0.1:0");
    let (code, mut tunnel) = socks_connect(proxy, &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);

    let trigger = d.trigger();
    let stopper = thread::spawn(move || {
        let start = Instant::now();
        d.join().unwrap();
        start.elapsed()
    });
    trigger.trigger();
    // The listener closes: new clients are refused.
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(proxy).is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting after shutdown");
        thread::yield_now();
    }
    // The open tunnel still carries data both ways.
    tunnel.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    assert!(!stopper.is_finished(), "daemon stopped while a tunnel was open");
    drop(tunnel);
    let took = stopper.join().unwrap();
    assert!(took < Duration::from_secs(8), "daemon took {took:?} to drain one closed tunnel");
}

#[test]
fn shutdown_closes_tunnels_still_open_after_the_grace_period() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nshutdown_timeout: 300ms\nbackends:\n  - direct: true\n"));
    let target = echo_server("127.0.0.1:0");
    let (code, mut tunnel) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    let start = Instant::now();
    d.shutdown().unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
    assert!(is_closed(&mut tunnel), "tunnel left open after the grace period");
}

#[test]
fn a_port_in_use_is_a_start_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config =
        socksbalance::Config::from_yaml(&format!("listen: \"{addr}\"\nbackends:\n  - direct: true\n"))
            .unwrap();
    let err = match socksbalance::Daemon::start(config, 1) {
        Err(e) => e,
        Ok(_) => panic!("second bind on {addr} succeeded"),
    };
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn finished_closes_once_the_daemon_has_drained() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let finished = d.finished();
    assert!(finished.try_recv().is_err() && !finished.is_closed(), "closed while running");
    let trigger = d.trigger();
    let joiner = thread::spawn(move || d.join());
    trigger.trigger();
    let closed = smol::block_on(async {
        use smol::future::FutureExt;
        let recv = async { finished.recv().await.is_err() };
        recv.or(async {
            smol::Timer::after(IO_TIMEOUT).await;
            false
        })
        .await
    });
    assert!(closed, "finished did not close after shutdown");
    joiner.join().unwrap().unwrap();
}

/// What the Windows console handler does on a console close, logoff or
/// shutdown (`socksbalance::console`), run here against a real daemon:
/// it starts the drain, the open tunnel keeps working, and it returns only
/// once the daemon has finished. Windows ends the process when it returns.
#[test]
fn a_console_close_drains_open_tunnels_before_the_handler_returns() {
    use socksbalance::console::{CloseHook, Event};
    let d = daemon(&format!("{LISTEN}mode: socks5\nshutdown_timeout: 4s\nbackends:\n  - direct: true\n"));
    let proxy = d.local_addrs()[0];
    let target = echo_server("127.0.0.1:0");
    let (code, mut tunnel) = socks_connect(proxy, &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    let hook = CloseHook::new(d.trigger(), d.finished(), Duration::from_secs(4));
    assert!(!hook.handle(Event::CtrlC), "Ctrl-C is async-signal's");
    let joiner = thread::spawn(move || d.join());
    let handler = thread::spawn(move || hook.handle(Event::Close));
    // Draining: new clients are refused, the open tunnel carries on, and
    // the handler has not returned.
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(proxy).is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting after the close event");
        thread::yield_now();
    }
    tunnel.write_all(b"draining").unwrap();
    let mut back = [0u8; 8];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"draining");
    assert!(!handler.is_finished(), "the handler returned while a tunnel was open");
    drop(tunnel);
    assert!(handler.join().unwrap(), "a close event is handled");
    // The daemon had finished when the handler returned.
    joiner.join().unwrap().unwrap();
}

#[test]
fn a_console_close_handler_gives_up_within_the_windows_limit() {
    use socksbalance::console::{CloseHook, Event, MAX_WAIT};
    // A tunnel that never closes and a grace period longer than Windows
    // allows: the handler must still return, at about MAX_WAIT.
    let d = daemon(&format!("{LISTEN}mode: socks5\nshutdown_timeout: 1h\nbackends:\n  - direct: true\n"));
    let target = echo_server("127.0.0.1:0");
    let (code, tunnel) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    let hook = CloseHook::new(d.trigger(), d.finished(), Duration::from_secs(3600));
    let start = Instant::now();
    assert!(hook.handle(Event::Shutdown));
    let took = start.elapsed();
    assert!(took >= MAX_WAIT && took < MAX_WAIT + Duration::from_secs(5), "{took:?}");
    // Closing the tunnel lets the daemon finish its (long) drain.
    drop(tunnel);
    d.join().unwrap();
}
