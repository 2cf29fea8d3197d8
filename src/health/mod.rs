//! Adaptive health: what is known about each backend, and how it changes.
//!
//! Every result, from a client's connection ([`Source::Traffic`]) or from
//! a probe ([`Source::Probe`]), is a [`Verdict`] and goes through
//! [`BackendHealth::record`]: into the outcome and latency windows and into
//! the circuit breaker. What the API and the dashboard call a backend's
//! state ([`Status`]: up, down, testing, unknown) follows from the breaker
//! and from whether the backend has ever answered: one that has not is
//! not presumed healthy (docs/health.md).
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

/// How often a backend that stays down gets one summary line in the log
/// (its failed recovery probes are not logged one by one).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(3600);

/// A failed attempt, as the health layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Timed out (counted as a timeout), rather than failed outright.
    pub timeout: bool,
    /// Says all there is to say on its own (nobody listens on the port):
    /// opens a closed circuit without waiting for the thresholds.
    pub conclusive: bool,
    /// A short reason for the log, the API and the dashboard:
    /// "connection refused", "timed out after 5s", "SOCKS reply 0x01".
    pub reason: String,
}

impl Failure {
    pub fn new(reason: impl Into<String>) -> Self {
        Failure { timeout: false, conclusive: false, reason: reason.into() }
    }

    pub fn timed_out(reason: impl Into<String>) -> Self {
        Failure { timeout: true, conclusive: false, reason: reason.into() }
    }

    pub fn outcome(&self) -> Outcome {
        if self.timeout {
            Outcome::Timeout
        } else {
            Outcome::Failure
        }
    }
}

/// What one attempt through a backend says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It worked; the latency, when this kind of attempt measures one.
    Success(Option<Duration>),
    Failed(Failure),
    /// The destination failed and the backend said so properly: it did
    /// its job. Changes no window and no breaker.
    Neutral,
}

/// As a log line says it: `ok in 0.37 ms`, `failed: connection refused`.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Success(Some(latency)) => write!(f, "ok in {:.2} ms", latency.as_secs_f64() * 1e3),
            Verdict::Success(None) => f.write_str("ok"),
            Verdict::Failed(failure) => write!(f, "failed: {}", failure.reason),
            Verdict::Neutral => f.write_str("the destination failed, the backend answered properly"),
        }
    }
}

/// A backend's state in plain words, as the API and the dashboard show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Circuit closed and it has answered.
    Up,
    /// Circuit open.
    Down,
    /// Half-open, or its first probe is running.
    Testing,
    /// Never answered yet, and no probe running.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Testing => "testing",
            Status::Unknown => "unknown",
        }
    }

    pub const ALL: [Status; 4] = [Status::Up, Status::Down, Status::Testing, Status::Unknown];
}

/// Everything that changes under the per-backend lock.
#[derive(Debug)]
pub struct Inner {
    pub breaker: Breaker,
    pub outcomes: OutcomeWindow,
    pub latencies: LatencyWindow,
    /// When a CLOSED backend is next probed (passive monitoring skips the
    /// probe if real traffic judged the backend since).
    pub next_probe: Instant,
    /// A probe is running; the checker does not start another.
    pub probing: bool,
    /// Wall-clock time of the last result from either source.
    pub last_checked: Option<SystemTime>,
    /// When real traffic last got a verdict on this backend: with passive
    /// monitoring, traffic this recent stands in for a probe.
    pub last_traffic: Option<Instant>,
    /// That last verdict of real traffic was a success.
    pub traffic_ok: bool,
    /// When the circuit last opened, while it is open: for the outage
    /// detector, the log, and (as wall-clock time) the API's `down_since`.
    pub down_at: Option<Instant>,
    /// It went down on a refusal: its host answered, so the path to it
    /// works, and its going down says nothing about an uplink outage.
    pub down_refused: bool,
    /// Why the last failure failed; cleared when the backend comes back
    /// from down, kept through later successes while it stays up (what
    /// went wrong last is worth showing).
    pub last_error: Option<String>,
    /// Taken down by an uplink outage: failed recovery probes keep the
    /// base interval instead of backing off (see `balancer::Pool::report`).
    pub held: bool,
    /// Failures since the circuit opened or the last summary line.
    pub failures_while_down: u32,
    pub last_summary: Option<Instant>,
}

/// What [`BackendHealth::record`] changed, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    pub transition: Option<Transition>,
    /// On a transition to CLOSED from OPEN or HALF_OPEN: how long it was down.
    pub down_for: Option<Duration>,
    /// The backend answered for the first time.
    pub first_answer: bool,
    /// A backend that stays down is due its hourly summary: the failures
    /// since the last one.
    pub still_down: Option<u32>,
}

/// What the health layer needs from the config to judge a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judging {
    pub passive_monitoring: bool,
    pub check_interval: Duration,
}

impl Judging {
    pub fn new(config: &HealthConfig) -> Self {
        Judging { passive_monitoring: config.passive_monitoring, check_interval: config.check_interval }
    }
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
    /// It has succeeded at least once: picking prefers backends known to
    /// work over those never heard from.
    answered: AtomicBool,
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
                last_traffic: None,
                traffic_ok: false,
                down_at: None,
                down_refused: false,
                last_error: None,
                held: false,
                failures_while_down: 0,
                last_summary: None,
            }),
            state: AtomicU8::new(state_to_u8(State::Closed)),
            latency_us: AtomicU32::new(0),
            active: AtomicBool::new(true),
            link_down: AtomicBool::new(false),
            answered: AtomicBool::new(false),
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

    /// Whether it has ever succeeded, lock-free.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// The state in plain words; `inner` is this backend's locked state.
    pub fn status(&self, inner: &Inner) -> Status {
        match inner.breaker.state() {
            State::Open => Status::Down,
            State::HalfOpen => Status::Testing,
            State::Closed if self.answered() => Status::Up,
            State::Closed if inner.probing => Status::Testing,
            State::Closed => Status::Unknown,
        }
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

    /// Records one result and returns what it changed.
    ///
    /// A failure is conclusive, and opens a closed circuit at once, when
    /// the failure says so itself (a refused connection), when the backend
    /// has never answered (nothing to give the benefit of the doubt to),
    /// or, with passive monitoring, when it is a probe's and no real
    /// traffic has judged the backend within a check interval (the probe
    /// is the only witness; a false alarm costs one `recovery_interval`).
    pub fn record(&self, now: Instant, source: Source, verdict: &Verdict, judging: Judging) -> Recorded {
        let mut inner = self.lock();
        let traffic_recently =
            inner.last_traffic.is_some_and(|t| now.saturating_duration_since(t) < judging.check_interval);
        if source == Source::Traffic {
            inner.last_traffic = Some(now);
            inner.traffic_ok = !matches!(verdict, Verdict::Failed(_));
        }
        let was = inner.breaker.state();
        let mut recorded = Recorded::default();
        match verdict {
            Verdict::Neutral => return recorded,
            Verdict::Success(latency) => {
                inner.last_checked = Some(SystemTime::now());
                inner.outcomes.push(Outcome::Success);
                if let Some(latency) = latency {
                    inner.latencies.push(*latency);
                }
                recorded.transition = inner.breaker.on_success(now, source);
                recorded.first_answer = !self.answered.swap(true, Ordering::Relaxed);
                if recorded.transition.is_some_and(|t| t.to == State::Closed) {
                    recorded.down_for = inner.down_at.map(|at| now.saturating_duration_since(at));
                    inner.down_at = None;
                    inner.held = false;
                    inner.failures_while_down = 0;
                    inner.last_summary = None;
                    inner.last_error = None;
                }
            }
            Verdict::Failed(failure) => {
                inner.last_checked = Some(SystemTime::now());
                inner.outcomes.push(failure.outcome());
                let conclusive = failure.conclusive
                    || !self.answered()
                    || (source == Source::Probe && judging.passive_monitoring && !traffic_recently);
                let held = inner.held;
                recorded.transition = inner.breaker.on_failure(now, source, conclusive, held);
                inner.last_error = Some(failure.reason.clone());
                if was == State::Closed && inner.breaker.state() == State::Open {
                    inner.down_refused = failure.conclusive;
                    inner.down_at = Some(now);
                    inner.failures_while_down = 0;
                    inner.last_summary = Some(now);
                } else if was != State::Closed {
                    inner.failures_while_down = inner.failures_while_down.saturating_add(1);
                    let since = inner.last_summary.or(inner.down_at).unwrap_or(now);
                    if now.saturating_duration_since(since) >= SUMMARY_EVERY {
                        recorded.still_down = Some(inner.failures_while_down);
                        inner.failures_while_down = 0;
                        inner.last_summary = Some(now);
                    }
                }
            }
        }
        self.publish(&inner);
        recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_reads_as_words_in_a_log_line() {
        assert_eq!(Verdict::Success(Some(Duration::from_nanos(365_625))).to_string(), "ok in 0.37 ms");
        assert_eq!(Verdict::Success(None).to_string(), "ok");
        assert_eq!(
            Verdict::Failed(Failure::new("connection refused")).to_string(),
            "failed: connection refused"
        );
    }
    use crate::config::Config;

    fn health() -> BackendHealth {
        let c = Config::from_yaml("backends:\n  - direct: true\n").unwrap();
        BackendHealth::new(&c.health, Instant::now())
    }

    const PASSIVE: Judging = Judging { passive_monitoring: true, check_interval: Duration::from_secs(10) };
    const ACTIVE: Judging = Judging { passive_monitoring: false, check_interval: Duration::from_secs(10) };

    fn ok(ms: u64) -> Verdict {
        Verdict::Success(Some(Duration::from_millis(ms)))
    }

    fn failed() -> Verdict {
        Verdict::Failed(Failure::new("closed the connection"))
    }

    #[test]
    fn records_feed_windows_breaker_and_mirrors() {
        let h = health();
        let now = Instant::now();
        assert_eq!(h.latency(), None);
        assert!(h.usable());
        assert!(h.record(now, Source::Traffic, &ok(40), PASSIVE).first_answer);
        assert_eq!(h.latency(), Some(Duration::from_millis(40)));
        assert_eq!(h.status(&h.lock()), Status::Up);
        let timeout = Verdict::Failed(Failure::timed_out("timed out after 5s"));
        for _ in 0..2 {
            assert_eq!(h.record(now, Source::Traffic, &timeout, PASSIVE).transition, None);
        }
        let r = h.record(now, Source::Traffic, &failed(), PASSIVE);
        assert_eq!(r.transition, Some(Transition { from: State::Closed, to: State::Open }));
        assert_eq!(h.state(), State::Open);
        assert!(!h.usable());
        let inner = h.lock();
        assert_eq!(inner.outcomes.success_rate(), Some(0.25));
        assert_eq!(inner.last_error.as_deref(), Some("closed the connection"));
        assert!(inner.down_at.is_some());
        assert_eq!(h.status(&inner), Status::Down);
    }

    #[test]
    fn neutral_results_change_nothing() {
        let h = health();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(h.record(now, Source::Traffic, &Verdict::Neutral, PASSIVE), Recorded::default());
        }
        assert!(h.lock().outcomes.is_empty());
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.status(&h.lock()), Status::Unknown);
    }

    #[test]
    fn a_backend_that_never_answered_is_down_at_its_first_failure() {
        let h = health();
        let r = h.record(Instant::now(), Source::Traffic, &failed(), PASSIVE);
        assert_eq!(r.transition.map(|t| t.to), Some(State::Open));
    }

    #[test]
    fn a_refusal_is_conclusive_for_a_backend_that_worked() {
        let h = health();
        let now = Instant::now();
        h.record(now, Source::Traffic, &ok(5), PASSIVE);
        let refused = Verdict::Failed(Failure { conclusive: true, ..Failure::new("connection refused") });
        assert_eq!(
            h.record(now, Source::Traffic, &refused, PASSIVE).transition.map(|t| t.to),
            Some(State::Open)
        );
    }

    #[test]
    fn a_failed_probe_of_an_idle_backend_is_conclusive_with_passive_monitoring() {
        let now = Instant::now();
        // Idle: only probes have seen it.
        let h = health();
        h.record(now, Source::Probe, &ok(5), PASSIVE);
        assert_eq!(
            h.record(now, Source::Probe, &failed(), PASSIVE).transition.map(|t| t.to),
            Some(State::Open)
        );
        // Busy: real traffic judged it a moment ago, so the thresholds apply.
        let h = health();
        h.record(now, Source::Traffic, &ok(5), PASSIVE);
        assert_eq!(h.record(now, Source::Probe, &failed(), PASSIVE).transition, None);
        // SocksBalance's way (no passive monitoring): failure_threshold.
        let h = health();
        h.record(now, Source::Probe, &ok(5), ACTIVE);
        assert_eq!(h.record(now, Source::Probe, &failed(), ACTIVE).transition, None);
        assert_eq!(h.record(now, Source::Probe, &failed(), ACTIVE).transition, None);
        assert_eq!(
            h.record(now, Source::Probe, &failed(), ACTIVE).transition.map(|t| t.to),
            Some(State::Open)
        );
    }

    #[test]
    fn recovery_reports_how_long_it_was_down_and_a_long_outage_is_summarised_hourly() {
        let h = health();
        let t0 = Instant::now();
        h.record(t0, Source::Probe, &failed(), PASSIVE);
        let mut now = t0;
        let mut summaries = Vec::new();
        // Recovery probes every 10 minutes for three hours.
        for _ in 0..18 {
            now += Duration::from_secs(600);
            h.lock().breaker.poll(now);
            if let Some(n) = h.record(now, Source::Probe, &failed(), PASSIVE).still_down {
                summaries.push(n);
            }
        }
        assert_eq!(summaries, [6, 6, 6], "one line an hour, each counting the hour's failures");
        now += Duration::from_secs(600);
        h.lock().breaker.poll(now);
        let r = h.record(now, Source::Probe, &ok(5), PASSIVE);
        assert_eq!(r.transition.map(|t| t.to), Some(State::Closed));
        assert_eq!(r.down_for, Some(now - t0));
        assert_eq!(h.lock().last_error, None);
    }

    #[test]
    fn inactive_backends_are_not_usable() {
        let h = health();
        h.set_active(false);
        assert!(!h.usable());
    }
}
