//! A small lock-free random source: xorshift32 on one `AtomicU32`, seeded
//! from the clock. Plenty for spreading load and probe jitter; not for
//! anything secret.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Rng(AtomicU32);

impl Rng {
    /// Seeded from the clock's nanoseconds (never zero, which xorshift
    /// cannot leave).
    pub fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.subsec_nanos())
            | 1;
        Rng(AtomicU32::new(seed))
    }

    pub fn next_u32(&self) -> u32 {
        let step = |mut x: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        step(self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))).unwrap_or(1))
    }

    /// A uniformly random duration in `[0, max)`.
    pub fn up_to(&self, max: Duration) -> Duration {
        max.mul_f64(f64::from(self.next_u32()) / (f64::from(u32::MAX) + 1.0))
    }
}

impl Default for Rng {
    fn default() -> Rng {
        Rng::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_sticks_and_stays_in_range() {
        let r = Rng::new();
        let draws: Vec<u32> = (0..100).map(|_| r.next_u32()).collect();
        assert!(draws.windows(2).all(|w| w[0] != w[1]));
        for _ in 0..100 {
            assert!(r.up_to(Duration::from_millis(10)) < Duration::from_millis(10));
        }
        assert_eq!(r.up_to(Duration::ZERO), Duration::ZERO);
    }
}
