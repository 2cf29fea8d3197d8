//! Adaptive health: what is known about each backend, and how it changes.
//!
//! Every result, from a client's connection ([`Source::Traffic`]) or from
//! a probe ([`Source::Probe`]), goes through [`BackendHealth::record`]:
//! into the outcome and latency windows and into the circuit breaker.
//! The breaker's state and the latency EMA are mirrored into atomics, so
//! that picking a backend reads them without a lock; the per-backend mutex
//! is taken only to record a result (never across an `.await`).
//!
//! - [`window`]: the bounded windows (success rate, EMA, median).
//! - [`breaker`]: the pure circuit-breaker state machine.
//! - [`probe`]: one health probe through one backend.
//! - [`checker`]: the task that schedules probes.

pub mod breaker;
pub mod checker;
pub mod probe;
pub mod window;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use breaker::{Breaker, BreakerConfig, Source, State, Transition};
pub use window::{LatencyWindow, Outcome, OutcomeWindow};

use crate::config::Health as HealthConfig;

/// Everything that changes under the per-backend lock.
#[derive(Debug)]
pub struct Inner {
    pub breaker: Breaker,
    pub outcomes: OutcomeWindow,
    pub latencies: LatencyWindow,
    /// When a CLOSED backend is next probed (a full check, or with passive
    /// monitoring an occasional latency sample).
    pub next_probe: Instant,
    /// A probe is running; the checker does not start another.
    pub probing: bool,
    /// Wall-clock time of the last result from either source.
    pub last_checked: Option<SystemTime>,
}

/// One backend's health.
#[derive(Debug)]
pub struct BackendHealth {
    inner: Mutex<Inner>,
    /// Mirror of the breaker state (see [`state_from_u8`]).
    state: AtomicU8,
    /// Mirror of the latency EMA in microseconds; 0 = no sample yet.
    latency_us: AtomicU32,
    /// Part of the active set (`balancer.max_active_backends`); always
    /// true without that setting.
    active: AtomicBool,
    /// Uplinks only: the kernel says the interface is down (no carrier,
    /// or gone). Set by the link watcher, not by results.
    link_down: AtomicBool,
}

fn state_to_u8(s: State) -> u8 {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

fn state_from_u8(v: u8) -> State {
    match v {
        0 => State::Closed,
        1 => State::Open,
        _ => State::HalfOpen,
    }
}

impl BackendHealth {
    /// A backend nobody has heard from: closed circuit, empty windows, the
    /// first probe at `first_probe`.
    pub fn new(config: &HealthConfig, first_probe: Instant) -> Self {
        let breaker = Breaker::new(BreakerConfig {
            circuit_threshold: config.circuit_threshold.get(),
            failure_threshold: config.failure_threshold.get(),
            recovery_interval: config.recovery_interval,
            max_recovery_interval: config.max_recovery_interval,
        });
        BackendHealth {
            inner: Mutex::new(Inner {
                breaker,
                outcomes: OutcomeWindow::new(config.metrics_window_size),
                latencies: LatencyWindow::new(config.metrics_window_size),
                next_probe: first_probe,
                probing: false,
                last_checked: None,
            }),
            state: AtomicU8::new(state_to_u8(State::Closed)),
            latency_us: AtomicU32::new(0),
            active: AtomicBool::new(true),
            link_down: AtomicBool::new(false),
        }
    }

    /// The lock on the changing state. Never held across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The breaker state, lock-free.
    pub fn state(&self) -> State {
        state_from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The latency EMA, lock-free; `None` before the first sample.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// Whether new connections may use this backend: circuit closed, in
    /// the active set, and (for an uplink) its link not down.
    pub fn usable(&self) -> bool {
        self.state() == State::Closed && self.is_active() && !self.link_down()
    }

    pub fn link_down(&self) -> bool {
        self.link_down.load(Ordering::Relaxed)
    }

    /// Records the kernel's word on an uplink's interface; true if it
    /// changed. A link that comes back is probed at once, whatever its
    /// circuit's recovery timer says.
    pub(crate) fn set_link_down(&self, down: bool, now: Instant) -> bool {
        if self.link_down.swap(down, Ordering::Relaxed) == down {
            return false;
        }
        if !down {
            let mut inner = self.lock();
            inner.breaker.retry_now(now);
            inner.next_probe = now;
        }
        true
    }

    /// Copies the breaker state and EMA into the atomics after a change.
    pub(crate) fn publish(&self, inner: &Inner) {
        self.state.store(state_to_u8(inner.breaker.state()), Ordering::Relaxed);
        if let Some(ema) = inner.latencies.ema() {
            let us = u32::try_from(ema.as_micros()).unwrap_or(u32::MAX).max(1);
            self.latency_us.store(us, Ordering::Relaxed);
        }
    }

    /// Records one result; returns the breaker transition it caused.
    /// `None` as the outcome is a neutral result (the destination failed,
    /// the backend did its job): it changes no window and no breaker.
    pub fn record(
        &self,
        now: Instant,
        source: Source,
        outcome: Option<Outcome>,
        latency: Option<Duration>,
        hold_backoff: bool,
    ) -> Option<Transition> {
        let outcome = outcome?;
        let mut inner = self.lock();
        inner.last_checked = Some(SystemTime::now());
        inner.outcomes.push(outcome);
        let transition = match outcome {
            Outcome::Success => {
                if let Some(latency) = latency {
                    inner.latencies.push(latency);
                }
                inner.breaker.on_success(now, source)
            }
            Outcome::Failure | Outcome::Timeout => inner.breaker.on_failure(now, source, hold_backoff),
        };
        self.publish(&inner);
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn health() -> BackendHealth {
        let c = Config::from_yaml("backends:\n  - direct: true\n").unwrap();
        BackendHealth::new(&c.health, Instant::now())
    }

    #[test]
    fn records_feed_windows_breaker_and_mirrors() {
        let h = health();
        let now = Instant::now();
        assert_eq!(h.latency(), None);
        assert!(h.usable());
        h.record(now, Source::Traffic, Some(Outcome::Success), Some(Duration::from_millis(40)), false);
        assert_eq!(h.latency(), Some(Duration::from_millis(40)));
        for _ in 0..2 {
            assert_eq!(h.record(now, Source::Traffic, Some(Outcome::Timeout), None, false), None);
        }
        let t = h.record(now, Source::Traffic, Some(Outcome::Failure), None, false);
        assert_eq!(t, Some(Transition { from: State::Closed, to: State::Open }));
        assert_eq!(h.state(), State::Open);
        assert!(!h.usable());
        assert_eq!(h.lock().outcomes.success_rate(), Some(0.25));
    }

    #[test]
    fn neutral_results_change_nothing() {
        let h = health();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(h.record(now, Source::Traffic, None, None, false), None);
        }
        assert!(h.lock().outcomes.is_empty());
        assert_eq!(h.state(), State::Closed);
    }

    #[test]
    fn inactive_backends_are_not_usable() {
        let h = health();
        h.set_active(false);
        assert!(!h.usable());
    }
}
