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
pub mod probe;
pub mod window;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use smol::channel::{self, Receiver, Sender};

use crate::upstream::UpstreamError;

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

impl Failure {
    /// A failed connection as the health layer records it (a timeout or
    /// not, conclusive or not, and its short reason), whoever is to blame:
    /// a probe counts a destination it cannot reach as its own failure.
    /// `timeout` is the limit that applied, for the reason.
    pub fn of(e: &UpstreamError, timeout: Duration) -> Failure {
        let reason = e.brief(timeout);
        let failure = if e.timed_out() { Failure::timed_out(reason) } else { Failure::new(reason) };
        Failure { conclusive: e.conclusive(), ..failure }
    }
}

impl Verdict {
    /// What a failed connection means for the backend's health: a failure
    /// with a short reason, or nothing ([`Verdict::Neutral`], when the
    /// backend is not to blame).
    pub fn of(e: &UpstreamError, timeout: Duration) -> Verdict {
        if !e.blames_backend() {
            return Verdict::Neutral;
        }
        Verdict::Failed(Failure::of(e, timeout))
    }
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
pub(crate) struct Inner {
    breaker: Breaker,
    outcomes: OutcomeWindow,
    latencies: LatencyWindow,
    /// When a CLOSED backend is next probed (passive monitoring skips the
    /// probe if real traffic judged the backend since).
    next_probe: Instant,
    /// A probe is running; the checker does not start another.
    probing: bool,
    /// Wall-clock time of the last result from either source.
    last_checked: Option<SystemTime>,
    /// When real traffic last got a verdict on this backend: with passive
    /// monitoring, traffic this recent stands in for a probe.
    last_traffic: Option<Instant>,
    /// That last verdict of real traffic was a success.
    traffic_ok: bool,
    /// When the circuit last opened, while it is open: for the outage
    /// detector, the log, and (as wall-clock time) the API's `down_since`.
    down_at: Option<Instant>,
    /// It went down on a refusal: its host answered, so the path to it
    /// works, and its going down says nothing about an uplink outage.
    down_refused: bool,
    /// Why the last failure failed; cleared when the backend comes back
    /// from down, kept through later successes while it stays up (what
    /// went wrong last is worth showing).
    last_error: Option<String>,
    /// Taken down by an uplink outage: failed recovery probes keep the
    /// base interval instead of backing off (see `balancer::Pool::report`).
    held: bool,
    /// Failures since the circuit opened or the last summary line.
    failures_while_down: u32,
    last_summary: Option<Instant>,
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

/// Wakes the checker before its timer: after a failure or a state change
/// (a bounded channel of one, so a burst of kicks is one wake-up).
#[derive(Debug)]
pub struct Kicks {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Kicks {
    pub fn new() -> Kicks {
        let (tx, rx) = channel::bounded(1);
        Kicks { tx, rx }
    }

    /// A no-op if a wake-up is already pending.
    pub fn kick(&self) {
        let _ = self.tx.try_send(());
    }

    /// Waits for the next kick.
    pub(crate) async fn wait(&self) {
        let _ = self.rx.recv().await;
    }
}

impl Default for Kicks {
    fn default() -> Kicks {
        Kicks::new()
    }
}

/// Probes in flight at once, across all backends (the scheduler in
/// `watch::backends` holds to it).
pub const MAX_CONCURRENT_PROBES: usize = 16;

/// The checker's answer from [`BackendHealth::claim_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A probe of it is running.
    Busy,
    /// Not yet: look again at `at`.
    NotDue { at: Instant },
    /// Probe it now, after a random delay of up to `spread`;
    /// `half_opened`: its recovery timer just turned the circuit half-open.
    Due { spread: Duration, half_opened: bool },
}

/// One backend's health as the API shows it, read at once.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub circuit: State,
    pub status: Status,
    /// When it is next probed (a recovery probe's timer while open).
    pub next_probe: Option<Instant>,
    /// When the circuit opened, while it is open.
    pub down_at: Option<Instant>,
    pub last_error: Option<String>,
    pub last_checked: Option<SystemTime>,
    pub success_rate: Option<f64>,
    pub latency_ema: Option<Duration>,
    pub latency_median: Option<Duration>,
    pub latency_recent: Vec<Duration>,
}

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

    /// The lock on the changing state. Never held across an `.await`;
    /// only this module's verbs take it.
    fn lock(&self) -> MutexGuard<'_, Inner> {
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

    /// The state in plain words.
    pub fn status(&self) -> Status {
        self.status_of(&self.lock())
    }

    /// The state in plain words; `inner` is this backend's locked state.
    fn status_of(&self, inner: &Inner) -> Status {
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
            self.retry_now(now);
        }
        true
    }

    /// Copies the breaker state and EMA into the atomics after a change.
    fn publish(&self, inner: &Inner) {
        self.state.store(state_to_u8(inner.breaker.state()), Ordering::Relaxed);
        if let Some(ema) = inner.latencies.ema() {
            let us = u32::try_from(ema.as_micros()).unwrap_or(u32::MAX).max(1);
            self.latency_us.store(us, Ordering::Relaxed);
        }
    }

    /// A check of this backend soon: at once if its circuit is closed (a
    /// failed real connection); an open one keeps its recovery timer.
    pub(crate) fn probe_soon(&self, now: Instant) {
        let mut inner = self.lock();
        if inner.breaker.state() == State::Closed {
            inner.next_probe = now;
        }
    }

    /// A probe now, whatever the recovery timer says: the path to the
    /// backend changed (its uplink came back, a reload asked).
    pub(crate) fn retry_now(&self, now: Instant) {
        let mut inner = self.lock();
        inner.breaker.retry_now(now);
        if inner.breaker.state() == State::Closed {
            inner.next_probe = now;
        }
    }

    /// A probe of it is running.
    pub fn probing(&self) -> bool {
        self.lock().probing
    }

    /// The current wait before the next recovery probe.
    pub fn backoff(&self) -> Duration {
        self.lock().breaker.backoff()
    }

    /// Why the last failure failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The checker's question: should this backend be probed now?
    /// `soon` is how far ahead a routine probe may start early (the
    /// batch); `passive` is `check_interval` with passive monitoring on.
    /// On [`Due`](Claim::Due) the backend is marked as probing until
    /// [`probe_done`](Self::probe_done).
    pub(crate) fn claim_probe(&self, now: Instant, soon: Instant, passive: Option<Duration>) -> Claim {
        let mut inner = self.lock();
        if inner.probing {
            return Claim::Busy;
        }
        let half_opened = inner.breaker.poll(now).is_some();
        if half_opened {
            self.publish(&inner);
        }
        // Routine probes carry their jitter in `next_probe` already, and
        // an early probe after a failure should not wait; recovery
        // probes of circuits that opened together get spread here.
        let (due, spread) = match inner.breaker.state() {
            State::HalfOpen => (now, inner.breaker.backoff() / 10),
            State::Open => (inner.breaker.retry_at().unwrap_or(now), Duration::ZERO),
            State::Closed => (inner.next_probe, Duration::ZERO),
        };
        // Routine probes due soon start with this batch; a recovery
        // probe waits for its timer (the breaker turns half-open then).
        let closed = inner.breaker.state() == State::Closed;
        if due > if closed { soon } else { now } {
            return Claim::NotDue { at: due };
        }
        // Passive monitoring: real traffic got through this backend
        // within the last interval, which says more than a probe would.
        if let (true, Some(every)) = (closed, passive) {
            let judged =
                inner.last_traffic.filter(|&t| inner.traffic_ok && now.saturating_duration_since(t) < every);
            if let Some(t) = judged {
                inner.next_probe = t + every;
                return Claim::NotDue { at: inner.next_probe };
            }
        }
        inner.probing = true;
        Claim::Due { spread, half_opened }
    }

    /// A probe claimed with [`claim_probe`](Self::claim_probe) has ended;
    /// the next routine one is at `next`. Returns whether the circuit is
    /// closed now.
    pub(crate) fn probe_done(&self, next: Instant) -> bool {
        let mut inner = self.lock();
        inner.probing = false;
        inner.next_probe = next;
        inner.breaker.state() == State::Closed
    }

    /// For the outage detector: the circuit opened within `window` of
    /// `now`, and not on a refusal (a refusal says the path works).
    pub(crate) fn went_down_within(&self, now: Instant, window: Duration) -> bool {
        let inner = self.lock();
        !inner.down_refused && inner.down_at.is_some_and(|at| now.saturating_duration_since(at) <= window)
    }

    /// Taken down by an outage: failed recovery probes keep the base
    /// interval, which starts over now.
    pub(crate) fn hold(&self, now: Instant) {
        let mut inner = self.lock();
        inner.held = true;
        inner.breaker.reset_backoff(now);
    }

    /// The outage is over: recovery probes back off again.
    pub(crate) fn release(&self) {
        self.lock().held = false;
    }

    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.lock().held
    }

    /// Tests: as if the circuit had opened at `at`.
    #[cfg(test)]
    pub(crate) fn set_down_at(&self, at: Instant) {
        self.lock().down_at = Some(at);
    }

    /// What the dashboard and the API show, read under one lock.
    pub fn report(&self, now: Instant) -> HealthReport {
        let inner = self.lock();
        let circuit = inner.breaker.state();
        HealthReport {
            circuit,
            status: self.status_of(&inner),
            next_probe: match circuit {
                State::Open => inner.breaker.retry_at(),
                State::HalfOpen => Some(now),
                State::Closed => Some(inner.next_probe),
            },
            down_at: inner.down_at,
            last_error: inner.last_error.clone(),
            last_checked: inner.last_checked,
            success_rate: inner.outcomes.success_rate(),
            latency_ema: inner.latencies.ema(),
            latency_median: inner.latencies.median(),
            latency_recent: inner.latencies.recent().collect(),
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
    use crate::socks5;
    use std::io;

    #[test]
    fn verdicts_tell_timeouts_refusals_and_neutral_results_apart() {
        let five = Duration::from_secs(5);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            Verdict::of(&UpstreamError::BackendUnreachable(timeout), five),
            Verdict::Failed(Failure::timed_out("timed out after 5s"))
        );
        let timeout = socks5::Error::Io(io::Error::from(io::ErrorKind::TimedOut));
        assert!(
            matches!(Verdict::of(&UpstreamError::BackendProtocol(timeout), five), Verdict::Failed(f) if f.timeout)
        );
        assert_eq!(
            Verdict::of(&UpstreamError::BackendAuthFailed, five),
            Verdict::Failed(Failure::new("rejected our credentials"))
        );
        assert_eq!(Verdict::of(&UpstreamError::BackendReply(5), five), Verdict::Neutral);
        // A probe's view: a destination it cannot reach is its failure.
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        let unreachable = UpstreamError::Destination(timeout);
        assert_eq!(Verdict::of(&unreachable, five), Verdict::Neutral);
        assert_eq!(Failure::of(&unreachable, five), Failure::timed_out("timed out after 5s"));
        assert_eq!(
            Verdict::of(&UpstreamError::BackendReply(1), five),
            Verdict::Failed(Failure::new("SOCKS reply 0x01"))
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let verdict = Verdict::of(&UpstreamError::BackendUnreachable(refused), five);
        assert_eq!(
            verdict,
            Verdict::Failed(Failure { conclusive: true, ..Failure::new("connection refused") })
        );
        assert_eq!(
            Verdict::of(&UpstreamError::BackendUnofferedMethod(2), five),
            Verdict::Failed(Failure::new("chose auth method 0x02, not offered"))
        );
    }

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
        assert_eq!(h.status(), Status::Up);
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
        assert_eq!(h.status_of(&inner), Status::Down);
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
        assert_eq!(h.status(), Status::Unknown);
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
