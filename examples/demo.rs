//! A live dashboard with something to show, for screenshots and manual
//! checks: five backends (four socksbalance daemons with a `direct`
//! backend each, one dead port), a balancer in front with the dashboard on
//! 127.0.0.1:PORT, and bounded background traffic. Runs for SECONDS, then
//! exits. Everything stays on 127.0.0.1.
//!
//! Usage: demo [PORT, default 8080] [SECONDS, default 60]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use socksbalance::{Config, Daemon};

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8080);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60).min(3600);

    let direct = || {
        let c =
            Config::from_yaml("listen: 127.0.0.1:0\nmode: socks5\nbackends:\n  - direct: true\n").unwrap();
        Daemon::start(c, 1).unwrap()
    };
    let upstreams: Vec<Daemon> = (0..4).map(|_| direct()).collect();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let names = ["tor-1", "tor-2", "ssh-tunnel", "vpn-exit"];
    let mut yaml = format!(
        "listen: 127.0.0.1:0\nmode: socks5\nhealth:\n  check_interval: 2s\n  connect_timeout: 1s\n\
         web:\n  enabled: true\n  listen: 127.0.0.1:{port}\n  refresh_interval: 1\nbackends:\n"
    );
    for (d, name) in upstreams.iter().zip(names) {
        yaml.push_str(&format!("  - {{address: \"{}\", name: {name}}}\n", d.local_addrs()[0]));
    }
    yaml.push_str(&format!("  - {{address: \"{dead}\", name: dead-proxy}}\n"));
    let balancer = Daemon::start(Config::from_yaml(&yaml).unwrap(), 2).unwrap();
    let proxy = balancer.local_addrs()[0];

    // A sink that sends whatever size the client asks for.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in sink.incoming().flatten() {
            thread::spawn(move || {
                let mut want = [0u8; 4];
                if s.read_exact(&mut want).is_ok() {
                    let _ = s.write_all(&vec![7u8; u32::from_be_bytes(want) as usize]);
                }
            });
        }
    });
    println!("dashboard on http://{}/ for {seconds} s", balancer.web_addr().unwrap());

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut round = 0u32;
    while Instant::now() < end {
        round = round.wrapping_add(1);
        if let Ok(mut s) = TcpStream::connect(proxy) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
            req.extend_from_slice(&sink_port.to_be_bytes());
            let size: u32 = 64 * 1024 * (1 + round % 16);
            let mut reply = [0u8; 12];
            if s.write_all(&req).is_ok() && s.read_exact(&mut reply).is_ok() && reply[3] == 0 {
                let _ = s.write_all(&size.to_be_bytes());
                let mut sink_buf = vec![0u8; size as usize];
                let _ = s.read_exact(&mut sink_buf);
            }
        }
        thread::sleep(Duration::from_millis(150));
    }
}
