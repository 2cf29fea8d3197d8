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

/// A SOCKS5 backend that sends its CONNECT reply and the destination's
/// first words (`banner`) in one write, then echoes; it dials nothing.
fn backend_with_banner(banner: &'static [u8]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || -> std::io::Result<()> {
                let mut s = s;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                let mut head = [0u8; 2];
                s.read_exact(&mut head)?;
                s.read_exact(&mut vec![0u8; usize::from(head[1])])?;
                s.write_all(&[5, 0])?;
                let mut request = [0u8; 4];
                s.read_exact(&mut request)?;
                let rest = match request[3] {
                    1 => 6,
                    4 => 18,
                    _ => {
                        let mut len = [0u8; 1];
                        s.read_exact(&mut len)?;
                        usize::from(len[0]) + 2
                    }
                };
                s.read_exact(&mut vec![0u8; rest])?;
                let mut reply = vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80];
                reply.extend_from_slice(banner);
                s.write_all(&reply)?;
                std::io::copy(&mut s.try_clone()?, &mut s)?;
                Ok(())
            });
        }
    });
    addr
}

/// Bytes that arrive in the same segment as a handshake message are read
/// with it (the handshake reads ahead); they must still reach the other
/// side, first and counted: a client's payload pipelined behind its
/// request, and a server's banner right behind the backend's reply.
#[test]
fn bytes_behind_a_handshake_are_relayed_first() {
    const BANNER: &[u8] = b"220 ready\r\n";
    for mode in ["socks5", "transparent"] {
        let backend = backend_with_banner(BANNER);
        let d = daemon(&format!("{LISTEN}mode: {mode}\nbackends:\n  - address: \"{backend}\"\n"));
        let mut s = connect(d.local_addrs()[0]);
        let early = b"EHLO pipelined";
        let mut first = vec![5, 1, 0];
        first.extend(connect_request(&Dest::Ip("127.0.0.1:9".parse().unwrap())));
        first.extend_from_slice(early);
        s.write_all(&first).unwrap();
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).unwrap();
        assert_eq!(choice, [5, 0], "{mode}");
        let (code, _) = read_reply(&mut s).unwrap();
        assert_eq!(code, 0, "{mode}");
        let mut banner = vec![0u8; BANNER.len()];
        s.read_exact(&mut banner).unwrap();
        assert_eq!(banner, BANNER, "{mode}: the banner behind the reply");
        let mut echoed = vec![0u8; early.len()];
        s.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, early, "{mode}: the payload behind the request");
        // The tunnel goes on as usual after them.
        s.write_all(b"more").unwrap();
        let mut more = [0u8; 4];
        s.read_exact(&mut more).unwrap();
        assert_eq!(&more, b"more", "{mode}");
        drop(s);

        let stats = std::sync::Arc::clone(&d.snapshot().pool.backends()[0].stats);
        let (up, down) = (early.len() + 4, BANNER.len() + early.len() + 4);
        wait_for("the tunnel's counters", IO_TIMEOUT, || {
            stats.bytes_up.get() == up as u64 && stats.bytes_down.get() == down as u64
        });
    }
}
