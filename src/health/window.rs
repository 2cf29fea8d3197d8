//! Sliding windows of recent results in fixed memory.
//!
//! Both windows hold at most [`CAPACITY`] entries in a `heapless::Deque`
//! and are told their logical size (`health.metrics_window_size`) at
//! creation, so a backend's metrics cost the same few hundred bytes
//! whatever the traffic.

use std::time::Duration;

use heapless::Deque;

/// The largest window; `health.metrics_window_size` may not exceed it.
pub const CAPACITY: usize = crate::config::MAX_METRICS_WINDOW;

/// How one attempt through a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Timeout,
}

/// The last `size` outcomes.
#[derive(Debug, Clone)]
pub struct OutcomeWindow {
    recent: Deque<Outcome, CAPACITY>,
    size: usize,
}

impl OutcomeWindow {
    pub fn new(size: usize) -> Self {
        OutcomeWindow { recent: Deque::new(), size: size.clamp(1, CAPACITY) }
    }

    pub fn push(&mut self, outcome: Outcome) {
        if self.recent.len() == self.size {
            self.recent.pop_front();
        }
        // Cannot fail: we just made room, and size <= CAPACITY.
        let _ = self.recent.push_back(outcome);
    }

    /// Successes over outcomes in the window; `None` before the first.
    pub fn success_rate(&self) -> Option<f64> {
        if self.recent.is_empty() {
            return None;
        }
        let ok = self.recent.iter().filter(|&&o| o == Outcome::Success).count();
        Some(ok as f64 / self.recent.len() as f64)
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

/// The last `size` latencies, with their exponential moving average.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    /// Microseconds; u32 holds 71 minutes, far past any timeout.
    recent: Deque<u32, CAPACITY>,
    size: usize,
    /// EMA in microseconds, over roughly `size` samples.
    ema: Option<f64>,
}

impl LatencyWindow {
    pub fn new(size: usize) -> Self {
        LatencyWindow { recent: Deque::new(), size: size.clamp(1, CAPACITY), ema: None }
    }

    pub fn push(&mut self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if self.recent.len() == self.size {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back(us);
        // The usual N-sample smoothing factor: 2 / (N + 1).
        let alpha = 2.0 / (self.size as f64 + 1.0);
        self.ema = Some(match self.ema {
            None => f64::from(us),
            Some(prev) => alpha * f64::from(us) + (1.0 - alpha) * prev,
        });
    }

    pub fn ema(&self) -> Option<Duration> {
        self.ema.map(|us| Duration::from_micros(us.round() as u64))
    }

    /// The median of the window (the mean of the two middle values when
    /// the count is even); robust against one slow outlier.
    pub fn median(&self) -> Option<Duration> {
        if self.recent.is_empty() {
            return None;
        }
        let mut sorted: heapless::Vec<u32, CAPACITY> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len();
        let us = if n % 2 == 1 {
            u64::from(sorted[n / 2])
        } else {
            (u64::from(sorted[n / 2 - 1]) + u64::from(sorted[n / 2])) / 2
        };
        Some(Duration::from_micros(us))
    }

    /// Oldest first, for sparklines.
    pub fn recent(&self) -> impl Iterator<Item = Duration> + '_ {
        self.recent.iter().map(|&us| Duration::from_micros(u64::from(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn outcome_window_keeps_only_the_last_n() {
        let mut w = OutcomeWindow::new(4);
        assert_eq!(w.success_rate(), None);
        for _ in 0..10 {
            w.push(Outcome::Failure);
        }
        assert_eq!(w.success_rate(), Some(0.0));
        w.push(Outcome::Success);
        w.push(Outcome::Timeout);
        w.push(Outcome::Success);
        assert_eq!(w.len(), 4);
        assert_eq!(w.success_rate(), Some(0.5));
    }

    #[test]
    fn window_size_is_clamped_to_capacity() {
        let mut w = OutcomeWindow::new(10_000);
        for _ in 0..1000 {
            w.push(Outcome::Success);
        }
        assert_eq!(w.len(), CAPACITY);
    }

    #[test]
    fn median_is_robust_to_an_outlier() {
        let mut w = LatencyWindow::new(5);
        for n in [10, 12, 11, 5000, 13] {
            w.push(ms(n));
        }
        assert_eq!(w.median(), Some(ms(12)));
        w.push(ms(14)); // drops the 10
        assert_eq!(w.median(), Some(ms(13)));
        let mut even = LatencyWindow::new(4);
        for n in [10, 20, 30, 40] {
            even.push(ms(n));
        }
        assert_eq!(even.median(), Some(ms(25)));
    }

    #[test]
    fn ema_starts_at_the_first_sample_and_moves_toward_new_ones() {
        let mut w = LatencyWindow::new(3); // alpha = 0.5
        assert_eq!(w.ema(), None);
        w.push(ms(100));
        assert_eq!(w.ema(), Some(ms(100)));
        w.push(ms(200));
        assert_eq!(w.ema(), Some(ms(150)));
        w.push(ms(200));
        assert_eq!(w.ema(), Some(ms(175)));
        let recent: Vec<Duration> = w.recent().collect();
        assert_eq!(recent, [ms(100), ms(200), ms(200)]);
    }
}
