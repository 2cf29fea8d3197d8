//! Picking a backend for each new connection.
//!
//! [`Pool::pick`] never takes a lock: round robin and weighted read and
//! bump one `AtomicUsize`, random steps an `AtomicU32` xorshift state,
//! least-connections reads each backend's active count. The pool itself is
//! immutable and lives in the config snapshot, so a reload swaps it whole.
//!
//! Every algorithm takes an `eligible` filter, so the health layer can
//! skip backends whose circuit is open, and failover can skip backends
//! already tried for this connection, without another code path.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Algorithm, BackendConfig};
use crate::stats::BackendStats;

/// The most entries a weighted schedule may have (4 bytes each).
pub const MAX_SCHEDULE: usize = 65_536;

/// One backend: its settings and its live figures.
#[derive(Debug)]
pub struct Backend {
    pub config: BackendConfig,
    pub stats: Arc<BackendStats>,
}

/// The backends of one config snapshot and the state to pick among them.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    algorithm: Algorithm,
    /// Round-robin position (also the position in `schedule`).
    next: AtomicUsize,
    /// xorshift32 state for `random`; never zero.
    rng: AtomicU32,
    /// Smooth-weighted-round-robin order, precomputed: picking is then an
    /// index bump. Empty unless the algorithm is `weighted`.
    schedule: Vec<u32>,
}

impl Pool {
    /// Builds a pool. Fails only for a weighted schedule that would be too
    /// large, which names the offending total.
    pub fn new(configs: Vec<BackendConfig>, algorithm: Algorithm) -> Result<Pool, String> {
        let schedule = if algorithm == Algorithm::Weighted {
            let weights: Vec<u32> = configs.iter().map(|b| b.weight.get()).collect();
            smooth_weighted_schedule(&weights)?
        } else {
            Vec::new()
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.subsec_nanos())
            | 1;
        Ok(Pool {
            backends: configs.into_iter().map(|config| Backend { config, stats: Arc::default() }).collect(),
            algorithm,
            next: AtomicUsize::new(0),
            rng: AtomicU32::new(seed),
            schedule,
        })
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Picks a backend among those `eligible` accepts; `None` when it
    /// accepts none.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        match self.algorithm {
            Algorithm::Roundrobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start.wrapping_add(k)) % n).find(|&i| eligible(i))
            }
            Algorithm::Random => {
                let start = self.random() as usize % n;
                (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
            }
            Algorithm::LeastConnections => {
                // Start the scan at a rotating offset so that ties spread
                // out instead of all landing on the first backend.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .filter(|&i| eligible(i))
                    .min_by_key(|&i| self.backends[i].stats.active.load(Ordering::Relaxed))
            }
            Algorithm::Weighted => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len).map(|k| self.schedule[(start.wrapping_add(k)) % len] as usize).find(|&i| eligible(i))
            }
        }
    }

    /// xorshift32: fast, lock-free, and plenty for spreading load.
    fn random(&self) -> u32 {
        let step = |mut x: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let prev =
            self.rng.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))).unwrap_or(1);
        step(prev)
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
    use crate::config::Target;
    use std::num::NonZeroU32;

    fn pool(weights: &[u32], algorithm: Algorithm) -> Pool {
        let configs = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| BackendConfig {
                name: format!("b{i}"),
                target: Target::Direct,
                credentials: None,
                weight: NonZeroU32::new(w).unwrap(),
            })
            .collect();
        Pool::new(configs, algorithm).unwrap()
    }

    fn counts(p: &Pool, picks: usize) -> Vec<usize> {
        let mut c = vec![0; p.backends().len()];
        for _ in 0..picks {
            c[p.pick(|_| true).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_exactly_even() {
        assert_eq!(counts(&pool(&[1, 1, 1, 1], Algorithm::Roundrobin), 400), [100; 4]);
    }

    #[test]
    fn weighted_follows_weights_exactly_per_period() {
        assert_eq!(counts(&pool(&[5, 1, 1], Algorithm::Weighted), 700), [500, 100, 100]);
    }

    #[test]
    fn weighted_schedule_is_smooth() {
        // nginx's documented example: weights 5,1,1 give a a a b a c a,
        // rotated; never the 5 a's in a row of plain weighted RR.
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
            assert_eq!(p.pick(|_| true), Some(1));
        }
    }

    #[test]
    fn eligibility_filter_skips_and_can_exclude_all() {
        for algorithm in
            [Algorithm::Roundrobin, Algorithm::Random, Algorithm::LeastConnections, Algorithm::Weighted]
        {
            let p = pool(&[1, 2, 3], algorithm);
            for _ in 0..20 {
                assert_eq!(p.pick(|i| i == 1), Some(1), "{algorithm}");
            }
            assert_eq!(p.pick(|_| false), None, "{algorithm}");
        }
    }
}
