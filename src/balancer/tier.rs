//! A tier: the backends one pick chooses among, and the algorithm that
//! chooses. The pool has one per group that lists backends, one per tier
//! of a group with `tiers:` that is not a single such group, and one for
//! the rules' `direct` action; without `groups:`, one of every backend.
//!
//! Positions in a tier index its members; every algorithm works on
//! positions and hands back a backend index.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{smooth_weighted_schedule, Backend, Pool, LATENCY_BAND};
use crate::config::Algorithm;

/// No group probe gates this member.
pub(super) const NO_GATE: u32 = u32::MAX;

#[derive(Debug)]
pub(super) enum Members {
    /// Backends `0..n`, in order (the implicit group).
    All(usize),
    List(Vec<u32>),
}

#[derive(Debug)]
pub(crate) struct Tier {
    members: Members,
    pub(super) algorithm: Algorithm,
    /// Round-robin position (also the position in `schedule`).
    next: AtomicUsize,
    /// Smooth-weighted-round-robin order of positions, precomputed.
    /// Empty unless the algorithm is `weighted`.
    schedule: Vec<u32>,
    /// Per position, the backend's name hashed: `sticky_destination`'s
    /// rendezvous scores and `learned`'s keys. Empty for the others.
    keys: Vec<u64>,
    /// Per position, the group-probe gate ([`Pool::gate_open`]) or
    /// [`NO_GATE`]; empty when no member has one.
    pub(super) gates: Vec<u32>,
}

impl Tier {
    pub(super) fn new(members: Members, algorithm: Algorithm, backends: &[Backend], gates: Vec<u32>) -> Tier {
        let mut tier = Tier {
            members,
            algorithm,
            next: AtomicUsize::new(0),
            schedule: Vec::new(),
            keys: Vec::new(),
            gates,
        };
        if algorithm == Algorithm::Weighted {
            let weights: Vec<u32> =
                (0..tier.len()).map(|p| backends[tier.backend(p)].config.weight.get()).collect();
            tier.schedule = smooth_weighted_schedule(&weights);
        }
        if matches!(algorithm, Algorithm::StickyDestination | Algorithm::Learned) {
            tier.keys = (0..tier.len())
                .map(|p| crate::config::routing::fnv(backends[tier.backend(p)].config.name.as_bytes()))
                .collect();
        }
        tier
    }

    pub fn len(&self) -> usize {
        match &self.members {
            Members::All(n) => *n,
            Members::List(v) => v.len(),
        }
    }

    /// The backend at position `p`.
    pub fn backend(&self, p: usize) -> usize {
        match &self.members {
            Members::All(_) => p,
            Members::List(v) => v[p] as usize,
        }
    }

    /// Whether backend `i` is a member.
    pub fn contains(&self, i: usize) -> bool {
        match &self.members {
            Members::All(n) => i < *n,
            Members::List(v) => v.contains(&(i as u32)),
        }
    }

    pub fn backends(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).map(|p| self.backend(p))
    }

    /// Picks a backend among the members `eligible` accepts (and their
    /// group probes let through); `None` when there is none. `site` is
    /// the destination's site hash, for the algorithms that read it.
    ///
    /// Every algorithm spreads the share of a backend that is not
    /// eligible evenly over the others (weighted: in proportion to their
    /// weights). Scanning on from an ineligible backend's position to the
    /// next eligible one would hand all of its share to its neighbour; so
    /// a miss draws again instead (a new counter position, a new random
    /// number), and ties are broken by the round-robin counter.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn pick(&self, pool: &Pool, site: Option<u64>, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let ok = |p: usize| {
            pool.gate_open(self.gates.get(p).copied().unwrap_or(NO_GATE)) && eligible(self.backend(p))
        };
        let b = |p: usize| &pool.backends[self.backend(p)];
        let position = match self.algorithm {
            Algorithm::Roundrobin => self.draw(&ok),
            Algorithm::Random => self.random(pool, &ok),
            Algorithm::LeastConnections => {
                let active = |p: usize| b(p).stats.active.load(Ordering::Relaxed);
                let least = (0..n).filter(|&p| ok(p)).map(active).min()?;
                self.draw(&|p| ok(p) && active(p) <= least).or_else(|| (0..n).find(|&p| ok(p)))
            }
            Algorithm::LowestLatency => {
                let latency = |p: usize| b(p).health.latency();
                // No sample yet sorts first, so new backends get measured.
                let best = (0..n).filter(|&p| ok(p)).map(latency).min()?;
                let band = best.map(|b| b + (b / 5).max(LATENCY_BAND));
                let within = |p: usize| match (latency(p), band) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(l), Some(band)) => l <= band,
                };
                self.draw(&|p| ok(p) && within(p)).or_else(|| (0..n).find(|&p| ok(p)))
            }
            Algorithm::Weighted => {
                let len = self.schedule.len();
                (0..len)
                    .map(|_| self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % len] as usize)
                    .find(|&p| ok(p))
            }
            Algorithm::P2c => self.p2c(pool, &ok),
            Algorithm::StickyDestination => match site {
                Some(site) => self.rendezvous(pool, site, &ok),
                None => self.p2c(pool, &ok),
            },
            Algorithm::Learned => {
                let avoided = match (site, &pool.learned) {
                    (Some(site), Some(table)) => table.avoided(site),
                    _ => heapless::Vec::new(),
                };
                if avoided.is_empty() {
                    self.p2c(pool, &ok)
                } else {
                    let liked = |p: usize| ok(p) && !avoided.contains(&(self.keys[p] as u32));
                    // Everything usable failed for this site: the best of
                    // them beats refusing the client.
                    self.p2c(pool, &liked).or_else(|| self.p2c(pool, &ok))
                }
            }
        }?;
        Some(self.backend(position))
    }

    /// The next eligible position in round-robin order: each miss takes a
    /// turn of its own, so an ineligible backend's turns go round.
    fn draw(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.len();
        (0..n).map(|_| self.next.fetch_add(1, Ordering::Relaxed) % n).find(|&p| ok(p))
    }

    /// A uniformly random eligible position.
    fn random(&self, pool: &Pool, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.len();
        // A few draws find an eligible one almost always; when most are
        // out, count the eligible ones and take one of them uniformly.
        for _ in 0..4 {
            let p = pool.rng.next_u32() as usize % n;
            if ok(p) {
                return Some(p);
            }
        }
        let count = (0..n).filter(|&p| ok(p)).count();
        if count == 0 {
            return None;
        }
        let nth = pool.rng.next_u32() as usize % count;
        (0..n).filter(|&p| ok(p)).nth(nth)
    }

    /// Power of two choices: two random eligible members, and the one
    /// with the lower peak-EWMA latency × (active connections + 1). An
    /// unmeasured backend costs nothing, so it is measured first.
    fn p2c(&self, pool: &Pool, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let a = self.random(pool, ok)?;
        let Some(b) = self.random(pool, &|p| p != a && ok(p)) else { return Some(a) };
        let cost = |p: usize| {
            let i = self.backend(p);
            let active = pool.backends[i].stats.active.load(Ordering::Relaxed) as f64;
            pool.ewma[i].estimate(pool.latency_decay) * (active + 1.0)
        };
        Some(if cost(b) < cost(a) { b } else { a })
    }

    /// Consistent hashing with bounded load: the eligible member with the
    /// highest rendezvous score for `site` among those with fewer active
    /// connections than 1.25 × the mean (plus the one to come), rounded
    /// up. A member leaving moves only its own sites; one coming back
    /// takes back only those.
    fn rendezvous(&self, pool: &Pool, site: u64, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let active = |p: usize| pool.backends[self.backend(p)].stats.active.load(Ordering::Relaxed);
        let (mut total, mut count) = (0usize, 0usize);
        for p in (0..self.len()).filter(|&p| ok(p)) {
            total += active(p);
            count += 1;
        }
        if count == 0 {
            return None;
        }
        let cap = ((total + 1) * 5).div_ceil(count * 4);
        let score = |p: usize| mix(site ^ self.keys[p]);
        (0..self.len())
            .filter(|&p| ok(p) && active(p) < cap)
            .max_by_key(|&p| score(p))
            .or_else(|| (0..self.len()).filter(|&p| ok(p)).max_by_key(|&p| score(p)))
    }
}

/// SplitMix64's finalizer: a site's hash mixed with a backend's.
pub(super) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
