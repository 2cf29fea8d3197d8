//! The probe scheduler: the task that decides when each backend is
//! probed (the probe itself is `health::probe`).
//!
//! Which backends get probes, and how often:
//!
//! | circuit | `passive_monitoring: true` (default) | `false` (SocksBalance) |
//! |---|---|---|
//! | never answered | a probe at start | same |
//! | CLOSED | every `check_interval` unless real traffic judged it within the last one; at once after a failed real connection | every `check_interval` |
//! | OPEN | none until the recovery timer fires | same |
//! | HALF_OPEN | one recovery probe, at once | same |
//!
//! The loop sleeps until the earliest due probe, or until the pool kicks it
//! (a failure or a state change). Probes run as their own tasks, at most
//! [`MAX_CONCURRENT_PROBES`] at a time, so the start-up round over a
//! thousand backends never stampedes and never delays the listener. Each
//! routine probe lands up to a tenth of its interval (at most 1 s)
//! *early*, never late, which spreads the rounds apart while keeping the
//! promise that an idle backend that dies is reported down within
//! `check_interval + connect_timeout`; recovery probes of circuits that
//! opened together are spread the same way, late. Probes due within
//! [`BATCH`] of each other start in one wake-up, so the loop wakes a
//! bounded number of times per interval whatever the number of backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::lock::Semaphore;
use smol::{Executor, Timer};

use crate::context::Snapshot;
use crate::health::{probe, Claim, Source, MAX_CONCURRENT_PROBES};
use crate::rng::Rng;

/// Probes due this soon after the one that wakes the loop start with it.
pub const BATCH: Duration = Duration::from_millis(200);

/// Runs until cancelled (the server cancels it on shutdown), with the
/// group probes beside it.
pub async fn run(ex: Arc<Executor<'static>>, snapshot: Arc<Snapshot>) {
    let groups = group_probes(Arc::clone(&ex), Arc::clone(&snapshot));
    backends(ex, snapshot).or(groups).await
}

/// Groups with their own `test_url`: every `check_interval`, that URL
/// through each of their usable backends. A backend that fails it is down
/// for that group only (its gate closes); the next round that it passes
/// opens it again. A backend down for everyone is left to its breaker.
async fn group_probes(ex: Arc<Executor<'static>>, snapshot: Arc<Snapshot>) {
    let pool = &snapshot.pool;
    if pool.group_probes().is_empty() {
        return smol::future::pending().await;
    }
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    loop {
        for probe in pool.group_probes() {
            let group = &snapshot.config.groups[probe.group];
            let health = Arc::new(crate::config::Health {
                test_url: group.test_url.clone(),
                expected_status: group.expected_status.clone(),
                ..snapshot.config.health.clone()
            });
            for (i, gate) in pool.probe_members(probe) {
                if !pool.usable(i) {
                    continue;
                }
                let (snapshot, permits, health) =
                    (Arc::clone(&snapshot), Arc::clone(&permits), Arc::clone(&health));
                let g = probe.group;
                ex.spawn(async move {
                    let _permit = permits.acquire().await;
                    let pool = &snapshot.pool;
                    let backend = &pool.backends()[i];
                    let verdict = probe::probe(&backend.config, pool.uplink_of(i), &health).await;
                    let failed = matches!(verdict, crate::health::Verdict::Failed(_));
                    if pool.set_gate(gate, failed) {
                        let (name, group) = (&backend.config.name, pool.group_name(g));
                        if failed {
                            log::warn!("backend {name}: down for group {group} ({verdict})");
                        } else {
                            log::info!("backend {name}: up again for group {group}");
                        }
                    }
                })
                .detach();
            }
        }
        Timer::after(snapshot.config.health.check_interval).await;
    }
}

async fn backends(ex: Arc<Executor<'static>>, snapshot: Arc<Snapshot>) {
    let config = &snapshot.config.health;
    let pool = &snapshot.pool;
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    let jitter = Arc::new(Rng::new());
    let batch = BATCH.min(config.check_interval / 50);
    loop {
        let now = Instant::now();
        let mut wake = now + config.check_interval;
        let soon = now + batch;
        let mut changed = false;
        for (i, backend) in pool.backends().iter().enumerate() {
            // A proxy behind a down uplink waits for it: probing it would
            // judge the link, not the proxy. The uplink's recovery kicks
            // this loop.
            if pool.cut_off(i) {
                continue;
            }
            let passive = config.passive_monitoring.then_some(config.check_interval);
            let spread = match backend.health.claim_probe(now, soon, passive) {
                Claim::Busy => continue,
                Claim::NotDue { at } => {
                    wake = wake.min(at);
                    continue;
                }
                Claim::Due { spread, half_opened } => {
                    if half_opened {
                        log::debug!("backend {}: circuit half-open, probing", backend.config.name);
                        changed = true;
                    }
                    spread
                }
            };
            let delay = jitter.up_to(spread.min(Duration::from_secs(1)));
            let (snapshot, permits, jitter) =
                (Arc::clone(&snapshot), Arc::clone(&permits), Arc::clone(&jitter));
            ex.spawn(routine_probe(snapshot, permits, jitter, i, delay)).detach();
        }
        if changed {
            pool.recompute_active_set();
        }
        pool.finish_first_round();
        let kicked = pool.kicks().wait();
        let timer = async {
            Timer::at(wake).await;
        };
        kicked.or(timer).await;
    }
}

/// The task of one scheduled probe: waits for a permit and its delay,
/// then probes. A start-up round over 1,000 backends spawns 1,000 of them
/// at once, so it must be small while it waits: the probe boxes its own
/// state ([`probe::probe`]; unboxed, they took 5.5 MB: docs/performance.md,
/// "Probes wait small").
async fn routine_probe(
    snapshot: Arc<Snapshot>,
    permits: Arc<Semaphore>,
    jitter: Arc<Rng>,
    i: usize,
    delay: Duration,
) {
    let _permit = permits.acquire().await;
    let _counted = snapshot.pool.probes().start();
    Timer::after(delay).await;
    probe_one(&snapshot, i, &jitter).await;
}

async fn probe_one(snapshot: &Snapshot, i: usize, jitter: &Rng) {
    let config = &snapshot.config.health;
    let pool = &snapshot.pool;
    let backend = &pool.backends()[i];
    // The uplink may have gone down since the probe was scheduled.
    if !pool.cut_off(i) {
        let verdict = probe::probe(&backend.config, pool.uplink_of(i), config).await;
        log::trace!("backend {}: probe {verdict}", backend.config.name);
        pool.report(i, Source::Probe, &verdict);
    }
    let every = config.check_interval;
    let closed = backend
        .health
        .probe_done(Instant::now() + every - jitter.up_to((every / 10).min(Duration::from_secs(1))));
    // A closed circuit's next probe is at least a check interval away, and
    // the checker wakes within one anyway: no rescan needed (kicking after
    // every probe rescanned all backends per probe, 1,000 x 1,000 locks for
    // a round over 1,000 backends). An open or half-open circuit may be due
    // sooner than that wake-up, and the kick of its transition came while
    // it was still marked as probing, so the checker must look again.
    if !closed {
        snapshot.pool.kick();
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// A waiting probe task holds its `Arc`s, the permit it waits for and
    /// a timer, not the probe: 136 bytes, 5,464 before the box.
    #[test]
    fn a_probe_that_waits_is_small() {
        let c = crate::Config::from_yaml("backends:\n  - address: 127.0.0.1:1\n").unwrap();
        let snap = Arc::new(Snapshot::new(c));
        let task = routine_probe(snap, Arc::new(Semaphore::new(1)), Arc::new(Rng::new()), 0, Duration::ZERO);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "a waiting probe task is {size} bytes");
    }
}
