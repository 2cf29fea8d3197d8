//! Peak-EWMA latency, as Finagle and Linkerd keep it for `p2c`: a sample
//! above the estimate replaces it at once (a slowdown is seen at the next
//! connection), a sample below it is blended in with the weight of the
//! time since the last one, and a read decays the estimate toward zero
//! with the same time constant, so that a backend left alone because it
//! was slow is tried again once its bad news is old.
//!
//! Two `AtomicU32`s (no 64-bit atomics on 32-bit MIPS): the estimate in
//! microseconds and the time of the last sample in milliseconds since the
//! process started. Two racing samples may lose one; that costs nothing a
//! load balancer notices.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct PeakEwma {
    micros: AtomicU32,
    stamp: AtomicU32,
}

fn now_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

/// `e^(-elapsed/decay)`, the weight an old estimate keeps.
fn kept(elapsed_ms: u32, decay: Duration) -> f64 {
    (-(f64::from(elapsed_ms)) / (decay.as_secs_f64() * 1000.0)).exp()
}

impl PeakEwma {
    /// Takes a latency sample.
    pub fn observe(&self, rtt: Duration, decay: Duration) {
        self.observe_at(rtt, decay, now_ms());
    }

    fn observe_at(&self, rtt: Duration, decay: Duration, now: u32) {
        let sample = rtt.as_micros().min(u128::from(u32::MAX)) as f64;
        let old = f64::from(self.micros.load(Ordering::Relaxed));
        let elapsed = now.wrapping_sub(self.stamp.load(Ordering::Relaxed));
        let next = if sample > old || old == 0.0 {
            sample
        } else {
            let w = kept(elapsed, decay);
            old * w + sample * (1.0 - w)
        };
        self.micros.store(next as u32, Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// The estimate now, in microseconds: 0 before the first sample.
    pub fn estimate(&self, decay: Duration) -> f64 {
        self.estimate_at(decay, now_ms())
    }

    fn estimate_at(&self, decay: Duration, now: u32) -> f64 {
        let old = f64::from(self.micros.load(Ordering::Relaxed));
        if old == 0.0 {
            return 0.0;
        }
        old * kept(now.wrapping_sub(self.stamp.load(Ordering::Relaxed)), decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_blends_down() {
        let e = PeakEwma::default();
        let decay = Duration::from_secs(10);
        assert_eq!(e.estimate_at(decay, 0), 0.0);
        e.observe_at(Duration::from_millis(10), decay, 1000);
        e.observe_at(Duration::from_millis(200), decay, 1000);
        assert_eq!(e.estimate_at(decay, 1000), 200_000.0, "a peak replaces the estimate");
        // A fast sample right after barely moves it (little time passed)...
        e.observe_at(Duration::from_millis(1), decay, 1100);
        let after = e.estimate_at(decay, 1100);
        assert!((195_000.0..200_000.0).contains(&after), "{after}");
        // ...one a time constant later keeps only 1/e of the old estimate.
        e.observe_at(Duration::from_millis(1), decay, 11_100);
        let later = e.estimate_at(decay, 11_100);
        assert!(
            (after / std::f64::consts::E - 1000.0..after / std::f64::consts::E + 2000.0).contains(&later),
            "{later}"
        );
        // Left alone, it decays toward zero: the slow backend is tried again.
        assert!(e.estimate_at(decay, 111_100) < later / 20_000.0);
    }
}
