//! What `learned` knows: per site, how each backend did for it.
//!
//! A site is a destination's registrable domain (see [`site_of`]) or its
//! IP address. The table keeps at most [`CAPACITY`] sites in 64 shards
//! of 64, each behind its own lock; a full shard forgets its least
//! recently used site. A shard is a plain list searched by hash (64
//! comparisons at most), which wastes no slot: 4,096 sites take 4,096
//! entries of 152 bytes (608 KiB). Per site it keeps up to [`RECORDS`] backends: successes,
//! failures, a latency EWMA, and, after a failure, when to try that
//! backend for that site again.
//!
//! **Exploring.** A backend that failed for a site is avoided for it for
//! 30 s, then tried once; each failure in a row doubles the wait, up to
//! 32 min, and a success ends it. That is ε-greedy with ε spent per unit
//! of time, not per connection: a per-connection ε wastes the same share
//! of a busy site's first tries forever (1 % of a million), while this
//! spends one try per site per wait, whatever the rate, and still notices
//! within the wait that a backend works for the site again. Thompson
//! sampling would need a Beta draw per candidate per pick; the records
//! here give the same preference without it (docs/routing.md).
//!
//! **No lock on the pick of a new site.** A bit per hashed site in a
//! 64 Kibit filter of atomics says whether the table may know it; a pick
//! for a site whose bit is clear takes no lock. Bits are never cleared (a
//! stale bit costs one shard lock).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::routing::{fnv, lowercase};
use crate::socks5::Address;

/// Sites kept at most.
pub const CAPACITY: usize = 4096;
/// Backends remembered per site.
pub const RECORDS: usize = 6;
const SHARDS: usize = 64;
const FILTER_WORDS: usize = 2048;
/// The first wait after a failure; each failure in a row doubles it.
const FIRST_WAIT: u32 = 30;
const MAX_STRIKES: u8 = 7;
/// Names longer than this are cut for the dashboard.
const NAME_CHARS: usize = 31;

/// How one connection through a backend went for its site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Worked(Duration),
    Failed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    /// The backend, by the low 32 bits of its name's hash (stable across
    /// reloads and restarts).
    backend: u32,
    ok: u16,
    failed: u16,
    latency_ms: u16,
    strikes: u8,
    /// Seconds since the table began; the backend is avoided until then.
    retry_at: u32,
}

#[derive(Debug)]
struct Site {
    key: u64,
    name: SiteName,
    uses: u32,
    last: u32,
    records: heapless::Vec<Record, RECORDS>,
}

#[derive(Debug, Default)]
struct Shard {
    sites: Vec<Site>,
    tick: u32,
}

#[derive(Debug)]
pub struct Learned {
    shards: Vec<Mutex<Shard>>,
    filter: Vec<AtomicU32>,
    start: Instant,
}

/// One site as the dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteView {
    pub site: String,
    pub uses: u32,
    /// The backend with the most successes for it, by name key.
    pub preferred: Option<u32>,
    /// Backends avoided for it now.
    pub avoided: Vec<u32>,
}

/// The table's size and its busiest sites.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    pub sites: usize,
    pub capacity: usize,
    pub bytes: usize,
    pub top: Vec<SiteView>,
}

/// A backend's key in the table.
pub fn backend_key(name: &str) -> u32 {
    fnv(name.as_bytes()) as u32
}

/// Second-level labels under which country-code TLDs register names
/// (`example.co.uk`, `example.com.au`): the public suffix list does not
/// fit the router budget (about 200 KB), and these cover most of its
/// weight.
const SECOND_LEVEL: [&[u8]; 12] =
    [b"co", b"com", b"net", b"org", b"gov", b"edu", b"ac", b"or", b"ne", b"go", b"gob", b"mil"];

/// The site a destination belongs to, as a hash and its name: the last
/// two labels of a name (three under a country code's `co.`, `com.` and
/// the like), or the address itself. `None` for no destination.
pub fn site_of(dest: &Address) -> Option<(u64, SiteName)> {
    match dest {
        Address::Ip(addr) if addr.ip().is_unspecified() => None,
        Address::Ip(addr) => {
            // Written on the stack: the pick path does not allocate.
            let mut buf = [0u8; NAME_CHARS];
            let mut w = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{}", addr.ip()));
            let len = NAME_CHARS - w.len();
            Some((fnv(&buf[..len]), SiteName::from(&buf[..len])))
        }
        Address::Domain(name, _) => {
            let mut buf = [0u8; 255];
            let name = lowercase(name, &mut buf);
            let site = registrable(name);
            Some((fnv(site), SiteName::from(site)))
        }
    }
}

/// A site's name, cut to [`NAME_CHARS`] bytes, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct SiteName {
    bytes: [u8; NAME_CHARS],
    len: u8,
}

impl SiteName {
    fn from(s: &[u8]) -> SiteName {
        let mut bytes = [0u8; NAME_CHARS];
        let len = s.len().min(NAME_CHARS);
        bytes[..len].copy_from_slice(&s[..len]);
        SiteName { bytes, len: len as u8 }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.len as usize]).into_owned()
    }
}

fn registrable(name: &[u8]) -> &[u8] {
    let dots: Vec<usize> = name.iter().enumerate().filter(|(_, &b)| b == b'.').map(|(i, _)| i).collect();
    let from_label = |k: usize| if dots.len() >= k { dots[dots.len() - k] + 1 } else { 0 };
    if dots.len() >= 2 {
        let tld = &name[dots[dots.len() - 1] + 1..];
        let second = &name[dots[dots.len() - 2] + 1..dots[dots.len() - 1]];
        if tld.len() == 2 && SECOND_LEVEL.contains(&second) {
            return &name[from_label(3)..];
        }
    }
    &name[from_label(2)..]
}

impl Default for Learned {
    fn default() -> Self {
        Learned::new()
    }
}

impl Learned {
    pub fn new() -> Learned {
        Learned {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            filter: (0..FILTER_WORDS).map(|_| AtomicU32::new(0)).collect(),
            start: Instant::now(),
        }
    }

    fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    fn bit(site: u64) -> (usize, u32) {
        let b = (site >> 20) as usize % (FILTER_WORDS * 32);
        (b / 32, 1 << (b % 32))
    }

    fn shard(&self, site: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[site as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the table may know `site` (no lock).
    pub fn may_know(&self, site: u64) -> bool {
        let (word, mask) = Learned::bit(site);
        self.filter[word].load(Ordering::Relaxed) & mask != 0
    }

    /// The backends (by key) to avoid for `site` now. Takes no lock for a
    /// site the table has never seen.
    pub fn avoided(&self, site: u64) -> heapless::Vec<u32, RECORDS> {
        let mut out = heapless::Vec::new();
        if !self.may_know(site) {
            return out;
        }
        let now = self.now();
        if let Some(s) = self.shard(site).sites.iter().find(|s| s.key == site) {
            for r in s.records.iter().filter(|r| r.strikes > 0 && now < r.retry_at) {
                let _ = out.push(r.backend);
            }
        }
        out
    }

    /// Feeds one connection's outcome through backend `backend` for `site`.
    pub fn record(&self, (site, name): (u64, SiteName), backend: u32, outcome: Outcome) {
        let now = self.now();
        let mut shard = self.shard(site);
        shard.tick = shard.tick.wrapping_add(1);
        let tick = shard.tick;
        let at = match shard.sites.iter().position(|s| s.key == site) {
            Some(at) => at,
            None => {
                let fresh = Site { key: site, name, uses: 0, last: tick, records: heapless::Vec::new() };
                if shard.sites.len() >= CAPACITY / SHARDS {
                    let oldest =
                        (0..shard.sites.len()).max_by_key(|&k| tick.wrapping_sub(shard.sites[k].last));
                    let oldest = oldest.unwrap_or(0);
                    shard.sites[oldest] = fresh;
                    oldest
                } else {
                    if shard.sites.capacity() == 0 {
                        shard.sites.reserve_exact(4);
                    }
                    shard.sites.push(fresh);
                    shard.sites.len() - 1
                }
            }
        };
        let entry = &mut shard.sites[at];
        entry.uses = entry.uses.saturating_add(1);
        entry.last = tick;
        let at = match entry.records.iter().position(|r| r.backend == backend) {
            Some(at) => at,
            None => {
                let fresh = Record { backend, ..Record::default() };
                if entry.records.push(fresh).is_err() {
                    // Full: replace the least telling record that is not
                    // being avoided (what failed is what must be kept).
                    let weakest = (0..RECORDS)
                        .filter(|&k| entry.records[k].strikes == 0)
                        .min_by_key(|&k| u32::from(entry.records[k].ok) + u32::from(entry.records[k].failed))
                        .unwrap_or(0);
                    entry.records[weakest] = fresh;
                    weakest
                } else {
                    entry.records.len() - 1
                }
            }
        };
        let r = &mut entry.records[at];
        if r.ok == u16::MAX || r.failed == u16::MAX {
            (r.ok, r.failed) = (r.ok / 2, r.failed / 2);
        }
        match outcome {
            Outcome::Worked(latency) => {
                r.ok += 1;
                r.strikes = 0;
                r.retry_at = 0;
                let ms = latency.as_millis().min(u128::from(u16::MAX)) as u16;
                r.latency_ms = if r.latency_ms == 0 {
                    ms
                } else {
                    ((u32::from(r.latency_ms) * 3 + u32::from(ms)) / 4) as u16
                };
            }
            Outcome::Failed => {
                r.failed += 1;
                r.strikes = (r.strikes + 1).min(MAX_STRIKES);
                r.retry_at = now.saturating_add(FIRST_WAIT << (r.strikes - 1));
            }
        }
        drop(shard);
        let (word, mask) = Learned::bit(site);
        self.filter[word].fetch_or(mask, Ordering::Relaxed);
    }

    /// The table's size, what it costs, and its `top` busiest sites.
    pub fn view(&self, top: usize) -> View {
        let now = self.now();
        let mut view = View {
            capacity: CAPACITY,
            bytes: FILTER_WORDS * 4 + SHARDS * std::mem::size_of::<Mutex<Shard>>(),
            ..View::default()
        };
        let mut all = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            view.sites += shard.sites.len();
            // hashbrown: a control byte per bucket besides the entry.
            view.bytes += shard.sites.capacity() * std::mem::size_of::<Site>();
            for s in &shard.sites {
                if top == 0 {
                    continue;
                }
                let preferred = s.records.iter().filter(|r| r.ok > 0).max_by_key(|r| r.ok).map(|r| r.backend);
                let avoided = s
                    .records
                    .iter()
                    .filter(|r| r.strikes > 0 && now < r.retry_at)
                    .map(|r| r.backend)
                    .collect();
                all.push(SiteView { site: s.name.text(), uses: s.uses, preferred, avoided });
            }
        }
        all.sort_by(|a, b| b.uses.cmp(&a.uses).then_with(|| a.site.cmp(&b.site)));
        all.truncate(top);
        view.top = all;
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::Domain;

    fn dest(name: &str) -> Address {
        Address::Domain(Domain::from_slice(name.as_bytes()).unwrap(), 443)
    }

    #[test]
    fn sites_are_registrable_domains() {
        let site = |n: &str| site_of(&dest(n)).unwrap().1.text();
        assert_eq!(site("www.example.com"), "example.com");
        assert_eq!(site("a.b.c.EXAMPLE.com."), "example.com");
        assert_eq!(site("news.bbc.co.uk"), "bbc.co.uk");
        assert_eq!(site("shop.example.com.au"), "example.com.au");
        assert_eq!(site("localhost"), "localhost");
        assert_eq!(site("x.io"), "x.io");
        assert_eq!(site_of(&dest("cdn.example.com")).unwrap().0, site_of(&dest("example.com")).unwrap().0);
        let ip = Address::Ip("203.0.113.9:443".parse().unwrap());
        assert_eq!(site_of(&ip).unwrap().1.text(), "203.0.113.9");
        assert!(site_of(&Address::UNSPECIFIED).is_none());
    }

    #[test]
    fn a_failure_is_avoided_until_its_wait_ends_and_a_success_clears_it() {
        let t = Learned::new();
        let site = site_of(&dest("blocked.example")).unwrap();
        assert!(!t.may_know(site.0), "nothing known: the pick takes no lock");
        t.record(site, 1, Outcome::Failed);
        t.record(site, 2, Outcome::Worked(Duration::from_millis(20)));
        assert_eq!(t.avoided(site.0).as_slice(), &[1]);
        // Its wait over (pretend time passed), backend 1 is tried again.
        t.shard(site.0).sites.iter_mut().find(|s| s.key == site.0).unwrap().records[0].retry_at = 0;
        assert!(t.avoided(site.0).is_empty());
        t.record(site, 1, Outcome::Failed);
        let r = t.shard(site.0).sites.iter().find(|s| s.key == site.0).unwrap().records[0];
        assert_eq!(
            (r.strikes, r.retry_at - t.now()),
            (2, 60),
            "the second failure in a row waits twice as long"
        );
        t.record(site, 1, Outcome::Worked(Duration::from_millis(5)));
        assert!(t.avoided(site.0).is_empty());
        let v = t.view(5);
        assert_eq!((v.sites, v.top[0].preferred), (1, Some(2)));
    }

    #[test]
    fn bounded_at_capacity() {
        let t = Learned::new();
        for i in 0..CAPACITY * 2 {
            let site = site_of(&dest(&format!("s{i}.example"))).unwrap();
            t.record(site, 7, Outcome::Worked(Duration::from_millis(1)));
        }
        let v = t.view(0);
        assert!(v.sites <= CAPACITY, "{}", v.sites);
        assert!(v.sites > CAPACITY * 3 / 4, "{}", v.sites);
        assert!(v.bytes < 700 << 10, "{} bytes", v.bytes);
        assert_eq!(std::mem::size_of::<Site>(), 152, "the entry size docs/routing.md gives");
    }
}
