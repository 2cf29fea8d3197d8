//! Picking a backend for each new connection, and what picking learns.
//!
//! [`Pool::select`] takes no global lock: the algorithms read and bump one
//! `AtomicUsize` (round robin, weighted), step an `AtomicU32` xorshift
//! (random), or read each backend's atomics (active count, latency EMA,
//! circuit state). The only locks on the way are a sticky-table shard
//! (one of 64, only with `sticky_session_ttl`) and nothing else.
//!
//! Filters, in order:
//! 1. Sticky: a client (or destination) seen within `sticky_session_ttl`
//!    goes back to its backend while that backend is usable.
//! 2. Usable: circuit CLOSED and in the active set (`max_active_backends`),
//!    and not already tried for this connection. When no backend is usable,
//!    every untried backend is (panic mode): refusing everyone would make an
//!    uplink outage last until the next probe instead of the next attempt.
//! 3. `max_latency`: skip backends whose latency EMA is higher; if that
//!    leaves none, take the fastest.
//! 4. The algorithm.
//!
//! Results come back through [`Pool::report`], which feeds the backend's
//! health, detects uplink outages, recomputes the active set on a circuit
//! change, and asks the health checker for an early probe after a failure.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::channel::{self, Receiver, Sender};

use crate::config::{Algorithm, BackendConfig, Config, Health as HealthConfig, StickyKey, Target, Uplink};
use crate::health::{BackendHealth, Outcome, Source, State, Transition};
use crate::rng::Rng;
use crate::socks5::Address;
use crate::stats::BackendStats;

/// The most entries a weighted schedule may have (4 bytes each).
pub const MAX_SCHEDULE: usize = 65_536;

/// One backend: its settings, its traffic counters and its health.
#[derive(Debug)]
pub struct Backend {
    pub config: BackendConfig,
    pub stats: Arc<BackendStats>,
    pub health: Arc<BackendHealth>,
}

/// How a backend reaches its proxy: directly, or through an uplink of the
/// same pool (`via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    /// Through the uplink at this index.
    Uplink(usize),
    /// `via` names an uplink that does not exist now (an `interfaces:
    /// auto` interface that is down or gone): the backend is not picked.
    Missing,
}

/// What a connection offers for sticky lookups.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub destination: &'a Address,
}

/// The backends of one config snapshot and the state to pick among them.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    /// Per backend, how it reaches its proxy.
    via: Vec<Via>,
    algorithm: Algorithm,
    /// Round-robin position (also the position in `schedule`).
    next: AtomicUsize,
    /// For `random`.
    rng: Rng,
    /// Smooth-weighted-round-robin order, precomputed: picking is then an
    /// index bump. Empty unless the algorithm is `weighted`.
    schedule: Vec<u32>,
    max_latency: Option<Duration>,
    max_active: Option<usize>,
    sticky: Option<StickyTable>,
    sticky_key: StickyKey,
    /// Serializes active-set recomputation (never on the pick path).
    active_set: Mutex<()>,
    outage: OutageDetector,
    /// Wakes the health checker early (after a failure, a state change).
    kick_tx: Sender<()>,
    kick_rx: Receiver<()>,
    /// Health probes in flight (the checker bounds them).
    probes: ProbeGauge,
}

/// Counts the health probes in flight, and the most there ever were at
/// once. `usize` atomics only: 32-bit MIPS has no 64-bit ones.
#[derive(Debug, Default)]
pub struct ProbeGauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl ProbeGauge {
    /// Counts one probe until the returned guard drops.
    pub fn start(&self) -> ProbeGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        ProbeGuard(self)
    }

    /// Probes in flight now.
    pub fn in_flight(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// The most probes that were ever in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// One probe in flight; see [`ProbeGauge::start`].
#[derive(Debug)]
pub struct ProbeGuard<'a>(&'a ProbeGauge);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// Builds a pool for `config`. Fails only for a weighted schedule that
    /// would be too large (config validation already rejects that).
    pub fn new(config: &Config) -> Result<Pool, String> {
        Pool::reloaded(config, None)
    }

    /// Builds a pool for a reloaded `config`. A backend whose settings did
    /// not change keeps its traffic counters, and also its health (breaker
    /// state, windows) when the health settings did not change either.
    pub fn reloaded(config: &Config, previous: Option<(&Pool, &HealthConfig)>) -> Result<Pool, String> {
        let algorithm = config.balancer.algorithm;
        let schedule = if algorithm == Algorithm::Weighted {
            let weights: Vec<u32> = config.backends.iter().map(|b| b.weight.get()).collect();
            smooth_weighted_schedule(&weights)?
        } else {
            Vec::new()
        };
        let now = Instant::now();
        let n = config.backends.len().max(1) as u32;
        // Each old backend is carried over at most once (a config may list
        // the same backend twice).
        let mut taken = vec![false; previous.map_or(0, |(p, _)| p.backends.len())];
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let old = previous.and_then(|(pool, health)| {
                    let k = (0..pool.backends.len()).find(|&k| !taken[k] && pool.backends[k].config == *b)?;
                    taken[k] = true;
                    Some((&pool.backends[k], *health == config.health))
                });
                // Spread the first probes evenly over (0, check_interval] so
                // that a thousand backends never start probing at once.
                let first_probe = now + config.health.check_interval * (i as u32 % n + 1) / n;
                let fresh_health = || Arc::new(BackendHealth::new(&config.health, first_probe));
                match old {
                    Some((old, same_health)) => Backend {
                        config: b.clone(),
                        stats: Arc::clone(&old.stats),
                        health: if same_health { Arc::clone(&old.health) } else { fresh_health() },
                    },
                    None => Backend { config: b.clone(), stats: Arc::default(), health: fresh_health() },
                }
            })
            .collect();
        let via = backends
            .iter()
            .map(|b| match &b.config.via {
                None => Via::Direct,
                Some(name) => backends
                    .iter()
                    .position(|u| matches!(u.config.target, Target::Uplink(_)) && u.config.name == *name)
                    .map_or(Via::Missing, Via::Uplink),
            })
            .collect();
        let max_active = config.balancer.max_active_backends.map(|n| n.get() as usize);
        match (max_active, previous.is_some()) {
            (None, _) => backends.iter().for_each(|b| b.health.set_active(true)),
            (Some(limit), false) => {
                for (i, b) in backends.iter().enumerate() {
                    b.health.set_active(i < limit);
                }
            }
            // Carried-over members stay in; recompute_active_set (at the
            // end) fills or trims to the limit.
            (Some(_), true) => {}
        }
        let (kick_tx, kick_rx) = channel::bounded(1);
        let pool = Pool {
            backends,
            via,
            algorithm,
            next: AtomicUsize::new(0),
            rng: Rng::new(),
            schedule,
            max_latency: config.balancer.max_latency,
            max_active,
            sticky: config.balancer.sticky_session_ttl.map(StickyTable::new),
            sticky_key: config.balancer.sticky_key,
            active_set: Mutex::new(()),
            outage: OutageDetector::new(now, outage_window(config)),
            kick_tx,
            kick_rx,
            probes: ProbeGauge::default(),
        };
        if previous.is_some() {
            pool.recompute_active_set();
        }
        Ok(pool)
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// How backend `i` reaches its proxy.
    pub fn via(&self, i: usize) -> Via {
        self.via.get(i).copied().unwrap_or(Via::Direct)
    }

    /// The uplink backend `i` is pinned to, if any and if it exists now.
    pub fn uplink_of(&self, i: usize) -> Option<&Uplink> {
        match self.via(i) {
            Via::Uplink(u) => match &self.backends[u].config.target {
                Target::Uplink(uplink) => Some(uplink),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether backend `i` can be reached at all: not through a missing
    /// uplink, nor one whose link is down. Even panic mode skips the rest.
    fn reachable(&self, i: usize) -> bool {
        match self.via(i) {
            Via::Direct => !self.backends[i].health.link_down(),
            Via::Uplink(u) => !self.backends[u].health.link_down() && !self.backends[i].health.link_down(),
            Via::Missing => false,
        }
    }

    /// Whether backend `i` is a proxy behind an uplink that is down, open
    /// or missing: it can be neither used nor judged until the uplink is
    /// back (the uplink's own probes run meanwhile).
    pub fn cut_off(&self, i: usize) -> bool {
        match self.via(i) {
            Via::Direct => false,
            Via::Uplink(u) => !self.backends[u].health.usable(),
            Via::Missing => true,
        }
    }

    /// Whether backend `i` may take new connections: its own health and
    /// that of the uplink it is pinned to.
    fn usable(&self, i: usize) -> bool {
        self.backends[i].health.usable()
            && match self.via(i) {
                Via::Direct => true,
                Via::Uplink(u) => self.backends[u].health.usable(),
                Via::Missing => false,
            }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether an uplink outage is in progress (see [`OutageDetector`]).
    pub fn outage(&self) -> bool {
        self.outage.active.load(Ordering::Relaxed)
    }

    /// The health probes in flight.
    pub fn probes(&self) -> &ProbeGauge {
        &self.probes
    }

    /// The receiver the health checker waits on besides its timer.
    pub(crate) fn kicks(&self) -> &Receiver<()> {
        &self.kick_rx
    }

    /// Wakes the health checker (a no-op if a wake-up is already pending).
    pub(crate) fn kick(&self) {
        let _ = self.kick_tx.try_send(());
    }

    /// Picks a backend for a client connection, never one `skip` names
    /// (those already tried for it).
    pub fn select(&self, client: Client<'_>, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let now = Instant::now();
        let key = self.sticky.as_ref().map(|_| sticky_hash(self.sticky_key, &client));
        let usable = |i: usize| !skip(i) && self.usable(i);
        if let (Some(table), Some(key)) = (&self.sticky, key) {
            if let Some(i) = table.get(key, now).filter(|&i| i < self.backends.len() && usable(i)) {
                return Some(i);
            }
        }
        let picked =
            self.pick_filtered(&usable).or_else(|| self.pick_filtered(&|i| !skip(i) && self.reachable(i)));
        if let (Some(table), Some(key), Some(i)) = (&self.sticky, key, picked) {
            table.put(key, i, now);
        }
        picked
    }

    /// `max_latency`, then the algorithm.
    fn pick_filtered(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let Some(max) = self.max_latency else {
            return self.pick(eligible);
        };
        let fast = |i: usize| eligible(i) && self.backends[i].health.latency().is_none_or(|l| l <= max);
        self.pick(&fast).or_else(|| {
            // Every eligible backend is slower than max_latency: the
            // fastest of them beats refusing the client.
            (0..self.backends.len())
                .filter(|&i| eligible(i))
                .min_by_key(|&i| self.backends[i].health.latency())
        })
    }

    /// Picks a backend among those `eligible` accepts with the configured
    /// algorithm alone; `None` when it accepts none.
    pub fn pick(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        // Scans start at a rotating offset so that ties spread out.
        let rotating = |start: usize| (0..n).map(move |k| start.wrapping_add(k) % n);
        match self.algorithm {
            // On a miss, draw the next position rather than scanning on
            // from this one: scanning would hand a dead backend's turns to
            // its neighbour, doubling that one's load.
            Algorithm::Roundrobin => {
                (0..n).map(|_| self.next.fetch_add(1, Ordering::Relaxed) % n).find(|&i| eligible(i))
            }
            Algorithm::Random => rotating(self.rng.next_u32() as usize).find(|&i| eligible(i)),
            Algorithm::LeastConnections => rotating(self.next.fetch_add(1, Ordering::Relaxed))
                .filter(|&i| eligible(i))
                .min_by_key(|&i| self.backends[i].stats.active.load(Ordering::Relaxed)),
            Algorithm::LowestLatency => rotating(self.next.fetch_add(1, Ordering::Relaxed))
                .filter(|&i| eligible(i))
                // No sample yet sorts first, so new backends get measured.
                .min_by_key(|&i| self.backends[i].health.latency()),
            Algorithm::Weighted => {
                let len = self.schedule.len();
                (0..len)
                    .map(|_| self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % len] as usize)
                    .find(|&i| eligible(i))
            }
        }
    }

    /// Records a result for backend `i`. `outcome: None` is neutral (the
    /// destination failed; the backend did its job).
    pub fn report(
        &self,
        i: usize,
        source: Source,
        outcome: Option<Outcome>,
        latency: Option<Duration>,
    ) -> Option<Transition> {
        let backend = &self.backends[i];
        let now = Instant::now();
        if source == Source::Traffic {
            backend.stats.attempts.add(1);
            match outcome {
                Some(Outcome::Failure) => backend.stats.failures.add(1),
                Some(Outcome::Timeout) => backend.stats.timeouts.add(1),
                _ => {}
            }
        }
        let failed = matches!(outcome, Some(Outcome::Failure | Outcome::Timeout));
        if failed {
            if self.outage.failure(i, now, &self.backends) {
                for b in &self.backends {
                    b.health.lock().breaker.reset_backoff(now);
                }
                self.kick();
            }
        } else if outcome == Some(Outcome::Success) {
            self.outage.success(now);
        }
        let transition = backend.health.record(now, source, outcome, latency, self.outage());
        if let Some(t) = transition {
            let name = &backend.config.name;
            match t.to {
                State::Open => log::warn!(
                    "backend {name}: circuit open; next probe in {} ms",
                    backend.health.lock().breaker.backoff().as_millis()
                ),
                State::Closed => log::info!("backend {name}: circuit closed, back in service"),
                State::HalfOpen => log::debug!("backend {name}: circuit half-open, probing"),
            }
            self.recompute_active_set();
        }
        if failed && source == Source::Traffic {
            // A failed real connection: check this backend now rather than
            // at its next scheduled probe.
            let mut inner = backend.health.lock();
            if inner.breaker.state() == State::Closed {
                inner.next_probe = now;
            }
            drop(inner);
            self.kick();
        } else if transition.is_some() {
            self.kick();
        }
        transition
    }

    /// With `max_active_backends`: keep the members whose circuit is still
    /// closed, fill free places with the best other closed backends, and
    /// let a clearly better outsider (half the latency and 20 ms less)
    /// replace the slowest member. Without the setting, does nothing.
    pub fn recompute_active_set(&self) {
        let Some(limit) = self.max_active else { return };
        let _one_at_a_time = self.active_set.lock().unwrap_or_else(|e| e.into_inner());
        let health = |i: usize| &self.backends[i].health;
        // Unmeasured backends rank after measured ones, then config order.
        let rank = |i: usize| (health(i).latency().unwrap_or(Duration::MAX), i);
        let closed = |i: usize| health(i).state() == State::Closed;
        let mut members: Vec<usize> =
            (0..self.backends.len()).filter(|&i| health(i).is_active() && closed(i)).collect();
        let mut outsiders: Vec<usize> =
            (0..self.backends.len()).filter(|&i| !health(i).is_active() && closed(i)).collect();
        outsiders.sort_by_key(|&i| rank(i));
        if members.len() > limit {
            // The limit went down (a reload): keep the best.
            members.sort_by_key(|&i| rank(i));
            members.truncate(limit);
        }
        let mut outsiders = outsiders.into_iter().peekable();
        while members.len() < limit {
            match outsiders.next() {
                Some(i) => members.push(i),
                None => break,
            }
        }
        if let (Some(&best), Some(&worst)) = (outsiders.peek(), members.iter().max_by_key(|&&i| rank(i))) {
            if let (Some(b), Some(w)) = (health(best).latency(), health(worst).latency()) {
                if b * 2 < w && b + Duration::from_millis(20) < w {
                    members.retain(|&i| i != worst);
                    members.push(best);
                }
            }
        }
        for i in 0..self.backends.len() {
            health(i).set_active(members.contains(&i));
        }
    }
}

/// How long "all backends failing" must last to count as an outage:
/// twice the connect timeout (10 s by default), and at least 1 s.
fn outage_window(config: &Config) -> Duration {
    (config.health.connect_timeout * 2).max(Duration::from_secs(1))
}

/// Tells an uplink outage from sick backends: when no backend has
/// succeeded within the window and at least three (or all, if fewer)
/// distinct backends have failed in it, the problem is upstream of all of
/// them. It is logged once; while it lasts, breakers keep probing at their
/// base interval instead of backing off toward the maximum.
#[derive(Debug)]
struct OutageDetector {
    epoch: Instant,
    window: Duration,
    /// Seconds since `epoch` of the last success anywhere.
    last_success: AtomicU32,
    /// Per backend: 1 + seconds since `epoch` of its last failure; 0 = never.
    last_failure: Mutex<Vec<u32>>,
    active: AtomicBool,
}

impl OutageDetector {
    fn new(epoch: Instant, window: Duration) -> Self {
        OutageDetector {
            epoch,
            window,
            last_success: AtomicU32::new(0),
            last_failure: Mutex::new(Vec::new()),
            active: AtomicBool::new(false),
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn success(&self, now: Instant) {
        self.last_success.store(self.secs(now), Ordering::Relaxed);
        if self.active.swap(false, Ordering::Relaxed) {
            log::info!("uplink outage over: a backend answered again");
        }
    }

    /// Notes a failure; true when it starts an outage.
    fn failure(&self, i: usize, now: Instant, backends: &[Backend]) -> bool {
        let now_s = self.secs(now);
        let window = self.window.as_secs() as u32;
        // Only failures take this lock, and only briefly.
        let mut last = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() != backends.len() {
            last.resize(backends.len(), 0);
        }
        last[i] = now_s + 1;
        if now_s.saturating_sub(self.last_success.load(Ordering::Relaxed)) < window {
            return false;
        }
        let failing = last.iter().filter(|&&t| t != 0 && now_s + 1 - t <= window).count();
        if failing < backends.len().min(3) || self.active.swap(true, Ordering::Relaxed) {
            return false;
        }
        log::warn!(
            "uplink outage: {failing} backend(s) failed and none succeeded in the last {} s; \
             probing every backend at the base recovery interval until one answers",
            self.window.as_secs()
        );
        true
    }
}

/// Shards of the sticky table: a connection locks one shard, never the
/// whole table.
const STICKY_SHARDS: usize = 64;
/// Entries per shard: 64 × 64 = 4,096 sticky sessions in at most ~100 KiB.
const STICKY_PER_SHARD: usize = 64;

#[derive(Debug, Clone, Copy)]
struct StickyEntry {
    key: u64,
    backend: u32,
    last_used: Instant,
}

/// Bounded client → backend memory with least-recently-used eviction.
/// An entry lives `ttl` past its last use.
#[derive(Debug)]
struct StickyTable {
    ttl: Duration,
    shards: Vec<Mutex<heapless::Vec<StickyEntry, STICKY_PER_SHARD>>>,
}

fn sticky_hash(kind: StickyKey, client: &Client<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    match kind {
        StickyKey::Client => client.ip.hash(&mut h),
        StickyKey::Destination => client.destination.hash(&mut h),
    }
    h.finish()
}

impl StickyTable {
    fn new(ttl: Duration) -> Self {
        StickyTable { ttl, shards: (0..STICKY_SHARDS).map(|_| Mutex::new(heapless::Vec::new())).collect() }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, heapless::Vec<StickyEntry, STICKY_PER_SHARD>> {
        self.shards[(key % STICKY_SHARDS as u64) as usize].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: u64, now: Instant) -> Option<usize> {
        let mut shard = self.shard(key);
        let pos = shard.iter().position(|e| e.key == key)?;
        if now.saturating_duration_since(shard[pos].last_used) > self.ttl {
            shard.swap_remove(pos);
            return None;
        }
        shard[pos].last_used = now;
        Some(shard[pos].backend as usize)
    }

    fn put(&self, key: u64, backend: usize, now: Instant) {
        let mut shard = self.shard(key);
        let entry = StickyEntry { key, backend: backend as u32, last_used: now };
        if let Some(e) = shard.iter_mut().find(|e| e.key == key) {
            *e = entry;
            return;
        }
        if shard.is_full() {
            // Least recently used goes (expired entries are the oldest).
            if let Some(lru) = (0..shard.len()).min_by_key(|&i| shard[i].last_used) {
                shard.swap_remove(lru);
            }
        }
        let _ = shard.push(entry);
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Checks that a weighted schedule for `weights` stays within
/// [`MAX_SCHEDULE`]; returns the weights' common divisor.
pub fn check_weights(weights: &[u32]) -> Result<u32, String> {
    let divisor = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let total: u64 = weights.iter().map(|&w| u64::from(w / divisor)).sum();
    if total > MAX_SCHEDULE as u64 {
        return Err(format!(
            "the weights add up to {total} (after dividing by their common divisor {divisor}), \
             over the limit of {MAX_SCHEDULE}; use smaller weights"
        ));
    }
    Ok(divisor)
}

/// nginx's smooth weighted round robin, run for one full period: each
/// step adds every weight to its backend's running score, picks the
/// highest score, and takes the total off the winner. Weights are divided
/// by their common divisor first, so `[2, 2]` costs two entries, not four.
pub fn smooth_weighted_schedule(weights: &[u32]) -> Result<Vec<u32>, String> {
    let divisor = check_weights(weights)?;
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut score = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            score[i] += w;
            if score[i] > score[best] {
                best = i;
            }
        }
        score[best] -= total;
        order.push(best as u32);
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Source;

    fn pool_yaml(extra: &str, weights: &[u32], algorithm: &str) -> Pool {
        let mut yaml = format!("mode: socks5\nbalancer:\n  algorithm: {algorithm}\n{extra}backends:\n");
        for w in weights {
            yaml.push_str(&format!("  - {{direct: true, weight: {w}}}\n"));
        }
        Pool::new(&Config::from_yaml(&yaml).unwrap()).unwrap()
    }

    fn pool(weights: &[u32], algorithm: Algorithm) -> Pool {
        pool_yaml("", weights, &algorithm.to_string())
    }

    fn counts(p: &Pool, picks: usize) -> Vec<usize> {
        let mut c = vec![0; p.backends().len()];
        for _ in 0..picks {
            c[p.pick(&|_| true).unwrap()] += 1;
        }
        c
    }

    const LOCAL: Address = Address::UNSPECIFIED;

    #[test]
    fn a_proxy_behind_a_down_uplink_is_cut_off_and_never_picked() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - interface: wan1\n  - interface: wan2\n  - {address: 127.0.0.1:1080, via: wan2}\n",
        )
        .unwrap();
        let p = Pool::new(&c).unwrap();
        let who = Client { ip: [127, 0, 0, 1].into(), destination: &LOCAL };
        assert_eq!((p.via(2), p.via(0)), (Via::Uplink(1), Via::Direct));
        assert!(!p.cut_off(2));
        let picks: Vec<usize> = (0..6).filter_map(|_| p.select(who, &|_| false)).collect();
        assert!(picks.contains(&2), "{picks:?}");
        // wan2's link goes down: neither it nor the proxy behind it is
        // picked, even when nothing else is usable (panic mode).
        assert!(p.backends()[1].health.set_link_down(true, Instant::now()));
        assert!(p.cut_off(2));
        for _ in 0..6 {
            assert_eq!(p.select(who, &|_| false), Some(0));
        }
        p.backends()[0].health.set_active(false);
        assert_eq!(p.select(who, &|i| i == 0), None, "panic mode skips unreachable backends");
        // Back up: the proxy returns.
        assert!(p.backends()[1].health.set_link_down(false, Instant::now()));
        assert!(!p.cut_off(2));
        assert!(p.select(who, &|i| i != 2).is_some() && p.select(who, &|i| i != 1).is_some());
    }

    #[test]
    fn via_an_uplink_auto_has_not_found_is_missing() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - interfaces: auto\n  - {address: 127.0.0.1:1080, via: wan9}\n",
        );
        // `interfaces: auto` is Linux-only; elsewhere the config is refused.
        let Ok(c) = c else { return };
        let p = Pool::new(&c.with_discovered(&["wan1".into()])).unwrap();
        assert_eq!(p.via(1), Via::Missing);
        assert!(p.cut_off(1));
    }

    fn client(ip: [u8; 4]) -> Client<'static> {
        Client { ip: IpAddr::from(ip), destination: &LOCAL }
    }

    fn fail(p: &Pool, i: usize, times: usize) {
        for _ in 0..times {
            p.report(i, Source::Traffic, Some(Outcome::Failure), None);
        }
    }

    #[test]
    fn round_robin_is_exactly_even() {
        assert_eq!(counts(&pool(&[1, 1, 1, 1], Algorithm::Roundrobin), 400), [100; 4]);
    }

    #[test]
    fn round_robin_spreads_a_dead_backends_share_evenly() {
        // Regression: scanning on from a dead backend's slot gave its turn
        // to the next backend, which then carried twice the load.
        let p = pool(&[1, 1, 1, 1, 1], Algorithm::Roundrobin);
        let mut c = [0usize; 5];
        for _ in 0..400 {
            c[p.pick(&|i| i != 2).unwrap()] += 1;
        }
        assert_eq!(c, [100, 100, 0, 100, 100]);
    }

    #[test]
    fn weighted_follows_weights_exactly_per_period() {
        assert_eq!(counts(&pool(&[5, 1, 1], Algorithm::Weighted), 700), [500, 100, 100]);
    }

    #[test]
    fn weighted_schedule_is_smooth() {
        // nginx's documented example: weights 5,1,1 give a a b a c a a;
        // never the 5 a's in a row of plain weighted round robin.
        let order = smooth_weighted_schedule(&[5, 1, 1]).unwrap();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_schedule_reduces_by_gcd_and_caps_size() {
        assert_eq!(smooth_weighted_schedule(&[4, 2]).unwrap().len(), 3);
        let big = vec![1000; 100];
        assert_eq!(smooth_weighted_schedule(&big).unwrap().len(), 100);
        let mut uneven = vec![999; 100];
        uneven[0] = 1000;
        assert!(smooth_weighted_schedule(&uneven).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn random_covers_every_backend_roughly_evenly() {
        let c = counts(&pool(&[1, 1, 1, 1], Algorithm::Random), 4000);
        for n in c {
            assert!((700..1300).contains(&n), "{n} of 4000 is far from 1000");
        }
    }

    #[test]
    fn least_connections_prefers_idle_backends() {
        let p = pool(&[1, 1, 1], Algorithm::LeastConnections);
        let _busy0 = crate::stats::ActiveGuard::new(&p.backends()[0].stats);
        let _busy2 = crate::stats::ActiveGuard::new(&p.backends()[2].stats);
        for _ in 0..5 {
            assert_eq!(p.pick(&|_| true), Some(1));
        }
    }

    #[test]
    fn lowest_latency_tries_unmeasured_then_the_fastest() {
        let p = pool(&[1, 1, 1], Algorithm::LowestLatency);
        p.report(0, Source::Probe, Some(Outcome::Success), Some(Duration::from_millis(50)));
        p.report(1, Source::Probe, Some(Outcome::Success), Some(Duration::from_millis(5)));
        assert_eq!(p.pick(&|_| true), Some(2), "unmeasured first");
        p.report(2, Source::Probe, Some(Outcome::Success), Some(Duration::from_millis(30)));
        for _ in 0..5 {
            assert_eq!(p.pick(&|_| true), Some(1));
        }
    }

    #[test]
    fn eligibility_filter_skips_and_can_exclude_all() {
        for algorithm in [
            Algorithm::Roundrobin,
            Algorithm::Random,
            Algorithm::LeastConnections,
            Algorithm::Weighted,
            Algorithm::LowestLatency,
        ] {
            let p = pool(&[1, 2, 3], algorithm);
            for _ in 0..20 {
                assert_eq!(p.pick(&|i| i == 1), Some(1), "{algorithm}");
            }
            assert_eq!(p.pick(&|_| false), None, "{algorithm}");
        }
    }

    #[test]
    fn select_skips_open_circuits_and_tried_backends() {
        let p = pool(&[1, 1, 1], Algorithm::Roundrobin);
        fail(&p, 1, 3);
        assert_eq!(p.backends()[1].health.state(), State::Open);
        for _ in 0..10 {
            let i = p.select(client([127, 0, 0, 1]), &|i| i == 0).unwrap();
            assert_eq!(i, 2);
        }
    }

    #[test]
    fn select_falls_back_to_open_circuits_when_nothing_is_usable() {
        let p = pool(&[1, 1], Algorithm::Roundrobin);
        fail(&p, 0, 3);
        fail(&p, 1, 3);
        assert!(p.select(client([127, 0, 0, 1]), &|_| false).is_some(), "panic mode");
        assert_eq!(p.select(client([127, 0, 0, 1]), &|i| i < 2), None);
    }

    #[test]
    fn max_latency_skips_slow_backends_but_never_all() {
        let p = pool_yaml("  max_latency: 100ms\n", &[1, 1, 1], "roundrobin");
        let ms = Duration::from_millis;
        p.report(0, Source::Probe, Some(Outcome::Success), Some(ms(300)));
        p.report(1, Source::Probe, Some(Outcome::Success), Some(ms(20)));
        p.report(2, Source::Probe, Some(Outcome::Success), Some(ms(200)));
        for _ in 0..6 {
            assert_eq!(p.select(client([127, 0, 0, 1]), &|_| false), Some(1));
        }
        // All too slow: the fastest of the rest.
        assert_eq!(p.select(client([127, 0, 0, 1]), &|i| i == 1), Some(2));
    }

    #[test]
    fn sticky_clients_stay_put_until_their_backend_fails() {
        let p = pool_yaml("  sticky_session_ttl: 1m\n", &[1, 1, 1], "roundrobin");
        let first = p.select(client([10, 0, 0, 1]), &|_| false).unwrap();
        let other = p.select(client([10, 0, 0, 2]), &|_| false).unwrap();
        assert_ne!(first, other);
        for _ in 0..10 {
            assert_eq!(p.select(client([10, 0, 0, 1]), &|_| false), Some(first));
        }
        fail(&p, first, 3);
        let moved = p.select(client([10, 0, 0, 1]), &|_| false).unwrap();
        assert_ne!(moved, first);
        assert_eq!(p.select(client([10, 0, 0, 1]), &|_| false), Some(moved), "sticks to the new one");
    }

    #[test]
    fn sticky_table_expires_and_evicts_least_recently_used() {
        let t = StickyTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.put(7, 1, t0);
        assert_eq!(t.get(7, t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(t.get(7, t0 + Duration::from_secs(18)), Some(1), "use refreshes the entry");
        assert_eq!(t.get(7, t0 + Duration::from_secs(29)), None, "expired");
        // Fill one shard past capacity: keys k * SHARDS share shard 0.
        let key = |k: u64| k * STICKY_SHARDS as u64;
        for k in 0..STICKY_PER_SHARD as u64 {
            t.put(key(k), k as usize, t0 + Duration::from_millis(k));
        }
        t.get(key(0), t0 + Duration::from_secs(1)); // 0 is now recent
        t.put(key(1000), 5, t0 + Duration::from_secs(2));
        assert_eq!(t.get(key(1), t0 + Duration::from_secs(3)), None, "LRU evicted");
        assert_eq!(t.get(key(0), t0 + Duration::from_secs(3)), Some(0));
        assert_eq!(t.get(key(1000), t0 + Duration::from_secs(3)), Some(5));
    }

    #[test]
    fn max_active_backends_uses_the_best_n_and_replaces_failures() {
        let p = pool_yaml("  max_active_backends: 2\n", &[1, 1, 1, 1], "roundrobin");
        let picked: std::collections::BTreeSet<usize> =
            (0..20).map(|_| p.select(client([127, 0, 0, 1]), &|_| false).unwrap()).collect();
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), [0, 1], "config order before any data");
        fail(&p, 0, 3);
        let picked: std::collections::BTreeSet<usize> =
            (0..20).map(|_| p.select(client([127, 0, 0, 1]), &|_| false).unwrap()).collect();
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), [1, 2], "the next best came in");
    }

    #[test]
    fn a_reload_carries_over_unchanged_backends_only() {
        let old_config = Config::from_yaml(
            "mode: socks5\nbackends:\n  - {address: 127.0.0.1:1001}\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let old = Pool::new(&old_config).unwrap();
        old.backends[0].stats.connections.add(7);
        fail(&old, 1, 3);
        // 1002 stays, 1001 goes, 1003 is new.
        let new_config = Config::from_yaml(
            "mode: socks5\nbackends:\n  - {address: 127.0.0.1:1003}\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let new = Pool::reloaded(&new_config, Some((&old, &old_config.health))).unwrap();
        assert!(Arc::ptr_eq(&new.backends[1].stats, &old.backends[1].stats));
        assert_eq!(new.backends[1].health.state(), State::Open, "breaker state survives");
        assert_eq!(new.backends[0].stats.connections.get(), 0, "a new backend starts fresh");
        // Changed health settings: counters survive, health starts over.
        let retuned = Config::from_yaml(
            "mode: socks5\nhealth:\n  circuit_threshold: 9\nbackends:\n  - {address: 127.0.0.1:1002}\n",
        )
        .unwrap();
        let again = Pool::reloaded(&retuned, Some((&new, &new_config.health))).unwrap();
        assert!(Arc::ptr_eq(&again.backends[0].stats, &old.backends[1].stats));
        assert_eq!(again.backends[0].health.state(), State::Closed);
    }

    #[test]
    fn outage_is_detected_when_everything_fails_and_cleared_by_a_success() {
        let p = pool(&[1, 1, 1], Algorithm::Roundrobin);
        // Within the first window after start nothing counts as an outage.
        fail(&p, 0, 1);
        assert!(!p.outage());
        let later = Instant::now() + Duration::from_secs(60);
        p.outage.last_success.store(0, Ordering::Relaxed);
        assert!(!p.outage.failure(0, later, p.backends()));
        assert!(!p.outage.failure(1, later, p.backends()));
        assert!(!p.outage(), "two of three is not everything");
        assert!(p.outage.failure(2, later, p.backends()), "the third starts it");
        assert!(p.outage());
        assert!(!p.outage.failure(2, later, p.backends()), "logged once");
        p.outage.success(later);
        assert!(!p.outage());
    }
}
