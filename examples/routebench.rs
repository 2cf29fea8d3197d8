//! What routing costs: a rule list with a 10,000-entry `domain_suffix_file`
//! (its memory, and the time per match for hits and misses), and the
//! `learned` table filled to its 4,096 sites.
//!
//!     cargo run --release --example routebench [SUFFIXES]
//!
//! Prints one line per figure; docs/performance.md ("Routing") records
//! them. Memory is the process's resident size before and after (Linux
//! /proc/self/status), so it includes the allocator's overhead.

use std::hint::black_box;
use std::time::{Duration, Instant};

use socksbalance::balancer::learned::{self, Learned, Outcome};
use socksbalance::config::routing::{decide, Query};
use socksbalance::socks5::{Address, Domain};
use socksbalance::Config;

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn name(text: &str, port: u16) -> Address {
    Address::Domain(Domain::from_slice(text.as_bytes()).expect("a name"), port)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("routebench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let list = dir.join("direct.txt");
    let text: String = (0..n).map(|i| format!("site{i}.example{}\n", i % 7)).collect();
    std::fs::write(&list, text).expect("write the list");
    let yaml = format!(
        "mode: socks5\nbackends:\n  - {{name: a, address: '127.0.0.1:1'}}\ngroups:\n  - {{name: g, backends: [a]}}\n\
         rules:\n  - {{domain: [exact.example], action: block}}\n  - {{cidr: [10.0.0.0/8], action: direct}}\n\
         \x20 - {{domain_suffix_file: {}, action: direct}}\n  - {{port: [25, 465], action: block}}\n  - {{group: g}}\n",
        list.display()
    );
    let before = rss();
    let config = Config::from_yaml(&yaml).expect("valid config");
    let after = rss();
    let _ = std::fs::remove_dir_all(&dir);
    let suffixes: usize = config.rules.iter().map(|r| r.suffixes.len()).sum();
    println!(
        "rules: {} rules, {suffixes} domain suffixes, {} KiB resident for them",
        config.rules.len(),
        (after.saturating_sub(before)) / 1024
    );

    // Names as clients send them: a hit deep under a listed suffix, a miss
    // of the same length, an IP (matched by cidr only).
    let cases = [
        ("hit", name(&format!("cdn.img.site{}.example{}", n / 2, (n / 2) % 7), 443)),
        ("miss", name("cdn.img.site-unlisted.example3", 443)),
        ("long miss", name("a.b.c.d.e.f.g.h.i.j.k.l.very-long-subdomain.unlisted.example.org", 443)),
        ("ip", Address::Ip("93.184.216.34:443".parse().unwrap())),
    ];
    const ROUNDS: u32 = 1_000_000;
    for (what, dest) in &cases {
        let q = Query {
            destination: Some(dest),
            dialled: None,
            source: [192, 168, 1, 2].into(),
            inbound: Some(0),
        };
        let start = Instant::now();
        let mut hits = 0usize;
        for _ in 0..ROUNDS {
            hits += decide(black_box(&config.rules), black_box(&q)).unwrap_or(0);
        }
        let per = start.elapsed() / ROUNDS;
        black_box(hits);
        println!("match ({what}): {:.3} µs, rule {:?}", per.as_secs_f64() * 1e6, decide(&config.rules, &q));
    }

    let sites: Vec<Address> =
        (0..learned::CAPACITY).map(|i| name(&format!("www.site{i}.com"), 443)).collect();
    let before = rss();
    let table = Learned::new();
    for (i, site) in sites.iter().enumerate() {
        let site = learned::site_of(site).expect("a site");
        for b in 0..learned::RECORDS as u32 {
            let outcome = if (i as u32 + b) % 5 == 0 {
                Outcome::Failed
            } else {
                Outcome::Worked(Duration::from_millis(20))
            };
            table.record(site, b, outcome);
        }
    }
    let after = rss();
    let view = table.view(0);
    println!(
        "learned: {} sites × {} backends, {} KiB by its own count, {} KiB resident",
        view.sites,
        learned::RECORDS,
        view.bytes / 1024,
        after.saturating_sub(before) / 1024
    );
    let lookups: Vec<u64> = sites.iter().map(|s| learned::site_of(s).unwrap().0).collect();
    let start = Instant::now();
    let mut avoided = 0usize;
    for _ in 0..100 {
        for &site in &lookups {
            avoided += table.avoided(black_box(site)).len();
        }
    }
    let per = start.elapsed() / (100 * lookups.len() as u32);
    println!(
        "learned lookup (known site, shard lock): {:.3} µs ({avoided} avoided)",
        per.as_secs_f64() * 1e6
    );
    let unseen = learned::site_of(&name("never.seen.example.net", 443)).unwrap().0;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        black_box(table.avoided(black_box(unseen)));
    }
    println!(
        "learned lookup (unseen site, no lock{}): {:.3} µs",
        if table.may_know(unseen) { ", but its filter bit is set" } else { "" },
        (start.elapsed() / ROUNDS).as_secs_f64() * 1e6
    );
}
