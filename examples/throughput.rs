//! Relay throughput through an in-process daemon, for comparing build
//! settings (see scripts/measure-opt-levels.sh). Everything stays on
//! 127.0.0.1 and the transfer is bounded.
//!
//! Usage: throughput [MiB per run, default 512] [runs, default 3]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use socksbalance::{Config, Daemon};

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512).clamp(1, 8192);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).clamp(1, 20);
    let total = mib << 20;

    // A sink that streams `total` bytes to whoever connects.
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let source_addr = source.local_addr().unwrap();
    thread::spawn(move || {
        for mut s in source.incoming().flatten() {
            thread::spawn(move || {
                let chunk = vec![0x5Au8; 64 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });

    let config =
        Config::from_yaml("listen: 127.0.0.1:0\nmode: socks5\nbackends:\n  - direct: true\n").unwrap();
    let daemon = Daemon::start(config, 1).unwrap();
    let proxy = daemon.local_addrs()[0];

    let mut best = 0.0f64;
    for _ in 0..runs {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.write_all(&[5, 1, 0]).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
        req.extend_from_slice(&source_addr.port().to_be_bytes());
        s.write_all(&req).unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[1], 0, "CONNECT failed");
        let start = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got, total, "short transfer");
        let mibs = mib as f64 / start.elapsed().as_secs_f64();
        best = best.max(mibs);
    }
    println!("{best:.0} MiB/s (best of {runs} x {mib} MiB, 1 executor thread)");
}
