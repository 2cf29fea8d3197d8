//! The per-backend circuit breaker: a pure state machine driven by
//! results and an explicit `now`, so its tests never sleep.
//!
//! ```text
//!            failures ≥ circuit_threshold, or
//!            failed probes ≥ failure_threshold
//!   CLOSED ─────────────────────────────────────▶ OPEN
//!     ▲                                          │  ▲
//!     │ probe succeeds                 timer     │  │ probe fails:
//!     │ (or real traffic succeeds)     fires     ▼  │ backoff doubles
//!     └────────────────────────────────────── HALF_OPEN
//! ```
//!
//! Probe failures count toward both thresholds; a probe success while
//! CLOSED clears only the probe count (see [`Breaker::on_success`]). A
//! *conclusive* failure opens a CLOSED circuit at once, whatever the
//! counts: the caller decides what is conclusive (a refused connection,
//! a backend that has never answered; see `BackendHealth::record`).
//!
//! The recovery timer starts at `recovery_interval` and doubles on every
//! failed half-open probe up to `max_recovery_interval` (10 s → 20 s →
//! 40 s → 60 s by default). A success resets it. During an uplink outage
//! the caller passes `hold_backoff`, so every breaker keeps probing at the
//! base interval instead of being pushed to the maximum by a failure that
//! is not the backends' fault.

use std::time::{Duration, Instant};

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client's connection.
    Traffic,
    /// A health probe.
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures of any kind that open the circuit.
    pub circuit_threshold: u32,
    /// Consecutive failed probes that open it (SocksBalance's
    /// `failure_threshold`: "failed probes that mark a backend unhealthy").
    pub failure_threshold: u32,
    pub recovery_interval: Duration,
    pub max_recovery_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    consecutive_failures: u32,
    consecutive_probe_failures: u32,
    /// The wait that the current (or next) opening uses.
    backoff: Duration,
    /// When an OPEN circuit may be tried again.
    retry_at: Option<Instant>,
}

/// A state change, for logging and for recomputing the active set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: State::Closed,
            consecutive_failures: 0,
            consecutive_probe_failures: 0,
            backoff: config.recovery_interval,
            retry_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When an OPEN circuit's recovery timer fires.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The wait the next (or current) opening uses.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    fn go(&mut self, to: State) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        (from != to).then_some(Transition { from, to })
    }

    /// Fires the recovery timer: OPEN → HALF_OPEN once `now` reaches it.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        match (self.state, self.retry_at) {
            (State::Open, Some(at)) if now >= at => {
                self.retry_at = None;
                self.go(State::HalfOpen)
            }
            _ => None,
        }
    }

    /// An uplink outage began: back to the base interval, so that the
    /// recovery is noticed within `recovery_interval` once the uplink is
    /// back, however long the backoff had grown.
    pub fn reset_backoff(&mut self, now: Instant) {
        self.backoff = self.config.recovery_interval;
        if let Some(at) = self.retry_at {
            self.retry_at = Some(at.min(now + self.backoff));
        }
    }

    /// Something changed that may have healed the backend (its link came
    /// back): an OPEN circuit's recovery probe is due now, at the base
    /// interval should it fail again.
    pub fn retry_now(&mut self, now: Instant) {
        self.backoff = self.config.recovery_interval;
        if self.retry_at.is_some() {
            self.retry_at = Some(now);
        }
    }

    /// A success. While CLOSED, a probe's success clears only the probe
    /// count: a probe that gets a greeting through says nothing about a
    /// backend that fails every real request, so only real traffic clears
    /// the count of real failures.
    pub fn on_success(&mut self, _now: Instant, source: Source) -> Option<Transition> {
        self.consecutive_probe_failures = 0;
        if source == Source::Traffic || self.state != State::Closed {
            self.consecutive_failures = 0;
        }
        match (self.state, source) {
            (State::Closed, _) => None,
            // A probe that started before the circuit opened and finished
            // after: stale. Only the recovery probe may close it.
            (State::Open, Source::Probe) => None,
            // A half-open probe, or real traffic that reached an open
            // backend because nothing else was usable: it works again.
            (State::HalfOpen, _) | (State::Open, Source::Traffic) => {
                self.backoff = self.config.recovery_interval;
                self.retry_at = None;
                self.go(State::Closed)
            }
        }
    }

    pub fn on_failure(
        &mut self,
        now: Instant,
        source: Source,
        conclusive: bool,
        hold_backoff: bool,
    ) -> Option<Transition> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if source == Source::Probe {
            self.consecutive_probe_failures = self.consecutive_probe_failures.saturating_add(1);
        }
        match self.state {
            State::Closed => {
                let tripped = conclusive
                    || self.consecutive_failures >= self.config.circuit_threshold
                    || self.consecutive_probe_failures >= self.config.failure_threshold;
                if !tripped {
                    return None;
                }
                self.backoff = self.config.recovery_interval;
                self.retry_at = Some(now + self.backoff);
                self.go(State::Open)
            }
            State::HalfOpen => {
                if !hold_backoff {
                    self.backoff = (self.backoff * 2).min(self.config.max_recovery_interval);
                }
                self.retry_at = Some(now + self.backoff);
                self.go(State::Open)
            }
            // Already open; the timer already runs.
            State::Open => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            circuit_threshold: 3,
            failure_threshold: 3,
            recovery_interval: 10 * S,
            max_recovery_interval: 60 * S,
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.on_failure(t0, Source::Traffic, false, false), None);
        assert_eq!(b.on_failure(t0, Source::Traffic, false, false), None);
        let t = b.on_failure(t0, Source::Traffic, false, false);
        assert_eq!(t, Some(Transition { from: State::Closed, to: State::Open }));
        assert_eq!(b.retry_at(), Some(t0 + 10 * S));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0, Source::Traffic, false, false);
        b.on_failure(t0, Source::Traffic, false, false);
        b.on_success(t0, Source::Traffic);
        b.on_failure(t0, Source::Traffic, false, false);
        b.on_failure(t0, Source::Traffic, false, false);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_probe_success_does_not_excuse_failing_traffic() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0, Source::Traffic, false, false);
        b.on_success(t0, Source::Probe);
        b.on_failure(t0, Source::Traffic, false, false);
        b.on_success(t0, Source::Probe);
        assert_eq!(b.on_failure(t0, Source::Traffic, false, false).map(|t| t.to), Some(State::Open));
    }

    #[test]
    fn failure_threshold_counts_probes_only() {
        let t0 = Instant::now();
        let mut b =
            Breaker::new(BreakerConfig { circuit_threshold: 10, failure_threshold: 2, ..breaker().config });
        b.on_failure(t0, Source::Probe, false, false);
        assert_eq!(b.state(), State::Closed);
        b.on_failure(t0, Source::Probe, false, false);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn recovery_schedule_doubles_to_the_cap_then_resets() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(now, Source::Traffic, false, false);
        }
        let mut waits = Vec::new();
        for _ in 0..5 {
            let at = b.retry_at().unwrap();
            waits.push((at - now).as_secs());
            // Not a moment early...
            assert_eq!(b.poll(at - Duration::from_millis(1)), None);
            now = at;
            // ...and half-open exactly on time.
            assert_eq!(b.poll(now), Some(Transition { from: State::Open, to: State::HalfOpen }));
            b.on_failure(now, Source::Probe, false, false);
            assert_eq!(b.state(), State::Open);
        }
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        now = b.retry_at().unwrap();
        b.poll(now);
        assert_eq!(
            b.on_success(now, Source::Probe),
            Some(Transition { from: State::HalfOpen, to: State::Closed })
        );
        assert_eq!(b.backoff(), 10 * S, "a recovery resets the backoff");
    }

    #[test]
    fn hold_backoff_keeps_the_base_interval() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(now, Source::Traffic, false, true);
        }
        for _ in 0..4 {
            now = b.retry_at().unwrap();
            b.poll(now);
            b.on_failure(now, Source::Probe, false, true);
            assert_eq!(b.retry_at(), Some(now + 10 * S));
        }
    }

    #[test]
    fn reset_backoff_returns_to_the_base_and_pulls_the_timer_in() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(now, Source::Traffic, false, false);
        }
        for _ in 0..3 {
            now = b.retry_at().unwrap();
            b.poll(now);
            b.on_failure(now, Source::Probe, false, false);
        }
        assert_eq!(b.backoff(), 60 * S);
        b.reset_backoff(now);
        assert_eq!(b.backoff(), 10 * S);
        assert_eq!(b.retry_at(), Some(now + 10 * S));
    }

    #[test]
    fn traffic_success_on_an_open_circuit_closes_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0, Source::Traffic, false, false);
        }
        assert_eq!(
            b.on_success(t0, Source::Traffic),
            Some(Transition { from: State::Open, to: State::Closed })
        );
        assert_eq!(b.retry_at(), None);
    }

    #[test]
    fn a_conclusive_failure_opens_at_once() {
        let t0 = Instant::now();
        let mut b = breaker();
        let t = b.on_failure(t0, Source::Probe, true, false);
        assert_eq!(t, Some(Transition { from: State::Closed, to: State::Open }));
        assert_eq!(b.retry_at(), Some(t0 + 10 * S), "the usual first wait");
    }

    #[test]
    fn a_stale_probe_success_does_not_close_an_open_circuit() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0, Source::Traffic, true, false);
        assert_eq!(b.on_success(t0, Source::Probe), None);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn failures_while_open_change_nothing() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0, Source::Traffic, false, false);
        }
        let at = b.retry_at();
        assert_eq!(b.on_failure(t0 + S, Source::Traffic, false, false), None);
        assert_eq!(b.retry_at(), at);
    }
}
