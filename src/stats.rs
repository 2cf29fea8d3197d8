//! Counters shared between the proxy and (later) the dashboard.
//!
//! 32-bit MIPS and ARMv5 have no 64-bit atomics, and a byte counter must
//! not wrap at 4 GiB, so [`Counter`] is a `u64` behind a `std::sync::Mutex`
//! rather than an `AtomicU64`. The lock is never held across an `.await`
//! and is taken once per relayed buffer, so it is uncontended in practice:
//! one compare-and-swap on the fast path, the same cost as an atomic add.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing 64-bit counter that works without 64-bit
/// atomics.
#[derive(Debug, Default)]
pub struct Counter(Mutex<u64>);

impl Counter {
    pub fn add(&self, n: u64) {
        // A poisoned lock only means another thread panicked mid-add; the
        // count is still a valid number, so keep counting.
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *v = v.wrapping_add(n);
    }

    pub fn get(&self) -> u64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is known about one backend's traffic. Held in an `Arc` so that a
/// config reload can carry it over to the new snapshot.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Client connections currently assigned to this backend (from pick
    /// to close); `least_connections` reads it.
    pub active: AtomicUsize,
    /// Tunnels that reached the relay stage.
    pub connections: Counter,
    /// Client connections tried through this backend (each failover
    /// attempt counts once).
    pub attempts: Counter,
    /// Attempts that failed for the backend's own reasons (not timeouts).
    pub failures: Counter,
    /// Attempts that timed out.
    pub timeouts: Counter,
    /// Tunnels whose client sent data and got no byte back within
    /// `health.first_byte_timeout` (each also a failure for the breaker).
    pub stalls: Counter,
    /// Bytes from clients to this backend.
    pub bytes_up: Counter,
    /// Bytes from this backend to clients.
    pub bytes_down: Counter,
    /// What UDP ASSOCIATE through this backend is known to do: 0 (not
    /// tried yet), [`UDP_WORKS`] or [`UDP_REFUSED`] (a TCP-only proxy,
    /// skipped for UDP from then on).
    pub udp: std::sync::atomic::AtomicU8,
    /// UDP associations relayed through it now.
    pub udp_open: AtomicUsize,
    /// Datagrams and their payload bytes, clients to backend and back.
    pub udp_datagrams_up: Counter,
    pub udp_datagrams_down: Counter,
    pub udp_bytes_up: Counter,
    pub udp_bytes_down: Counter,
    /// Datagrams of its associations dropped, by cause (`UDP_DROPS`).
    pub udp_drops: [Counter; 5],
}

/// [`BackendStats::udp`] starts at 0: not tried yet.
/// [`BackendStats::udp`]: an association was made through it.
pub const UDP_WORKS: u8 = 1;
/// [`BackendStats::udp`]: it answered UDP ASSOCIATE with 0x07.
pub const UDP_REFUSED: u8 = 2;

/// Why a datagram was dropped, in [`DaemonStats::udp_drops`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDrop {
    /// From another address than the client's, or than the backend's relay.
    Foreign,
    /// FRAG was not zero.
    Fragment,
    /// A header that does not parse.
    Malformed,
    /// Too large to send on with its header.
    Oversized,
    /// `deny_destinations` forbids it, or its name did not resolve.
    Refused,
}

/// The names of the [`UdpDrop`] causes, in order.
pub const UDP_DROPS: [&str; 5] = ["foreign", "fragment", "malformed", "oversized", "refused"];

/// Marks a connection as assigned to a backend while it lives.
pub struct ActiveGuard(Arc<BackendStats>);

impl ActiveGuard {
    pub fn new(stats: &Arc<BackendStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(stats))
    }
}

impl ActiveGuard {
    /// The stats of the backend it counts for.
    pub fn stats(&self) -> &BackendStats {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Daemon-wide figures.
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Client connections accepted since start.
    pub accepted: Counter,
    /// Of those, the ones served as SOCKS5 and as HTTP (a mixed port's
    /// clients count by what they spoke).
    pub socks5_clients: Counter,
    pub http_clients: Counter,
    /// Gateway clients: firewall-redirected and tproxy connections.
    pub redirect_clients: Counter,
    pub tproxy_clients: Counter,
    /// The DNS listener: queries (UDP and TCP), answers from the cache,
    /// and queries no resolver answered (SERVFAIL) or that were malformed
    /// (FORMERR).
    pub dns_queries: Counter,
    pub dns_cache_hits: Counter,
    pub dns_failures: Counter,
    /// UDP associations open now, and datagrams dropped by cause.
    pub udp_associations: AtomicUsize,
    pub udp_drops: [Counter; 5],
    /// Client connections currently open (handshaking or relaying).
    pub open: AtomicUsize,
    /// Recent aggregate throughput, for the dashboard's graph.
    pub throughput: Throughput,
    /// Clients closed at once for not being in `allow`.
    pub denied_clients: Counter,
    /// Clients refused over `max_connections` or the per-client limit.
    pub refused_busy: Counter,
    /// Refusals being answered right now (bounded, see `server`).
    pub refusing: AtomicUsize,
    /// Open connections per client address, with a per-client limit.
    pub per_client: Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// The network interfaces as last seen (Linux), for uplink reports.
    pub links: Mutex<Vec<crate::uplink::Link>>,
}

impl DaemonStats {
    /// Counts a dropped datagram.
    pub fn udp_drop(&self, why: UdpDrop) {
        self.udp_drops[why as usize].add(1);
    }

    /// The counter of clients that spoke `protocol` (a mixed port's
    /// clients count by what they spoke).
    pub fn clients_of(&self, protocol: crate::config::Protocol) -> &Counter {
        use crate::config::Protocol;
        match protocol {
            Protocol::Socks5 | Protocol::Mixed => &self.socks5_clients,
            Protocol::Http => &self.http_clients,
            Protocol::Redirect => &self.redirect_clients,
            Protocol::Tproxy => &self.tproxy_clients,
        }
    }
}

/// Takes one of `limit` slots counted by `taken`; `false` (and nothing
/// taken) when all are. The caller gives the slot back with `fetch_sub`.
pub fn take_slot(taken: &AtomicUsize, limit: usize) -> bool {
    if taken.fetch_add(1, Ordering::Relaxed) >= limit {
        taken.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Throughput samples kept: 120 × [`SAMPLE_EVERY`] = 4 minutes of graph.
pub const THROUGHPUT_SAMPLES: usize = 120;
/// How often the server samples aggregate throughput.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// One aggregate throughput sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSample {
    /// Unix time, seconds.
    pub at: u64,
    /// Bytes per second, clients to backends.
    pub up: u64,
    /// Bytes per second, backends to clients.
    pub down: u64,
}

/// A fixed ring of recent [`RateSample`]s, so a freshly opened dashboard
/// shows minutes of history at once.
#[derive(Debug, Default)]
pub struct Throughput(Mutex<heapless::Deque<RateSample, THROUGHPUT_SAMPLES>>);

impl Throughput {
    pub fn push(&self, sample: RateSample) {
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.is_full() {
            ring.pop_front();
        }
        let _ = ring.push_back(sample);
    }

    /// Oldest first.
    pub fn samples(&self) -> Vec<RateSample> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_passes_four_gib() {
        let c = Counter::default();
        c.add(u64::from(u32::MAX));
        c.add(2);
        assert_eq!(c.get(), u64::from(u32::MAX) + 2);
    }

    #[test]
    fn throughput_ring_keeps_the_newest() {
        let t = Throughput::default();
        for i in 0..(THROUGHPUT_SAMPLES as u64 + 5) {
            t.push(RateSample { at: i, up: i, down: 0 });
        }
        let s = t.samples();
        assert_eq!(s.len(), THROUGHPUT_SAMPLES);
        assert_eq!(s[0].at, 5);
        assert_eq!(s.last().unwrap().at, THROUGHPUT_SAMPLES as u64 + 4);
    }

    #[test]
    fn active_guard_counts_and_releases() {
        let s = Arc::new(BackendStats::default());
        {
            let _a = ActiveGuard::new(&s);
            let _b = ActiveGuard::new(&s);
            assert_eq!(s.active.load(Ordering::Relaxed), 2);
        }
        assert_eq!(s.active.load(Ordering::Relaxed), 0);
    }
}
