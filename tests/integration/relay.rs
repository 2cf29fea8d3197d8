//! The relay stage: data integrity, half-close, idle timeout, counters.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_megabyte_each_way_arrives_intact() {
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = daemon(&format!("{LISTEN}mode: {mode}\nbackends:\n{}", backend.yaml("b")));
        let target = echo_server("127.0.0.1:0");
        let (code, s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0);
        let data = pattern(1 << 20, 7);
        let mut writer = s.try_clone().unwrap();
        let sent = data.clone();
        let t = thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        let mut reader = s;
        reader.read_to_end(&mut back).unwrap();
        t.join().unwrap();
        assert_eq!(back.len(), data.len(), "{mode}");
        assert!(back == data, "{mode}: echoed bytes differ");

        let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
        // The tunnel's counters are final once the relay returns; the
        // client sees EOF a moment before, so wait for the count.
        let deadline = Instant::now() + IO_TIMEOUT;
        while stats.bytes_down.get() < data.len() as u64 && Instant::now() < deadline {
            thread::yield_now();
        }
        assert_eq!(stats.bytes_up.get(), data.len() as u64, "{mode}");
        assert_eq!(stats.bytes_down.get(), data.len() as u64, "{mode}");
        assert_eq!(stats.connections.get(), 1, "{mode}");
    }
}

#[test]
fn half_close_forwards_fin_and_keeps_the_other_direction() {
    for mode in ["socks5", "transparent"] {
        let backend = Backend::start(Behaviour::Proxy);
        let d = daemon(&format!("{LISTEN}mode: {mode}\nbackends:\n{}", backend.yaml("b")));
        let target = count_then_reply_server();
        let (code, mut s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
        assert_eq!(code, 0);
        s.write_all(&pattern(100_000, 3)).unwrap();
        // The server answers only after it sees our FIN.
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "got 100000 bytes", "{mode}");
    }
}

#[test]
fn direct_backend_half_close() {
    let d = daemon(&format!("{LISTEN}mode: socks5\nbackends:\n  - direct: true\n"));
    let target = count_then_reply_server();
    let (code, mut s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    s.write_all(b"12345").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 5 bytes");
}

#[test]
fn idle_tunnels_are_closed_after_the_idle_timeout() {
    let d = daemon(&format!(
        "{LISTEN}mode: socks5\nlimits:\n  idle_timeout: 300ms\nbackends:\n  - direct: true\n"
    ));
    let target = echo_server("127.0.0.1:0");
    let (code, mut s) = socks_connect(d.local_addrs()[0], &Dest::Ip(target), None).unwrap();
    assert_eq!(code, 0);
    // Activity keeps it open past the timeout...
    let start = Instant::now();
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(150));
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    assert!(start.elapsed() > Duration::from_millis(500));
    // ...and silence closes it.
    let quiet = Instant::now();
    assert!(is_closed(&mut s), "idle tunnel was not closed");
    let waited = quiet.elapsed();
    assert!(waited >= Duration::from_millis(250), "closed too early: {waited:?}");
    assert!(waited < Duration::from_secs(3), "closed too late: {waited:?}");
}
