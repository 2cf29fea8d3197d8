//! The patched timerfd (vendor/README.md): set only when it would not wake
//! a wait in time, unset when a wait has no deadline. Not upstream's.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use polling::{Events, Poller};

/// A wait that a notification ends leaves the timer set for its deadline;
/// a later wait with an earlier deadline must still wake in time.
#[test]
fn an_earlier_deadline_sets_the_timer_again() -> io::Result<()> {
    let poller = Poller::new()?;
    let mut events = Events::new();
    poller.notify()?;
    let start = Instant::now();
    poller.wait(&mut events, Some(Duration::from_secs(10)))?;
    assert!(start.elapsed() < Duration::from_secs(5), "the notification did not wake it");

    let dur = Duration::from_millis(20);
    let start = Instant::now();
    events.clear();
    poller.wait(&mut events, Some(dur))?;
    let elapsed = start.elapsed();
    assert!(elapsed >= dur, "{elapsed:?} < {dur:?}");
    assert!(elapsed < Duration::from_secs(5), "slept {elapsed:?} for a 20 ms deadline");
    Ok(())
}

/// A later deadline than the one the timer is set for keeps the timer:
/// the wait may wake early (at the earlier deadline), never late.
#[test]
fn a_later_deadline_wakes_early_or_in_time() -> io::Result<()> {
    let poller = Poller::new()?;
    let mut events = Events::new();
    let first = Duration::from_millis(30);
    let start = Instant::now();
    poller.wait(&mut events, Some(first))?;
    assert!(start.elapsed() >= first);

    // The timer has expired: a new deadline sets it again.
    let dur = Duration::from_millis(40);
    let start = Instant::now();
    events.clear();
    poller.wait(&mut events, Some(dur))?;
    let elapsed = start.elapsed();
    assert!(elapsed >= dur, "{elapsed:?} < {dur:?}");
    assert!(elapsed < Duration::from_secs(5));
    Ok(())
}

/// A wait without a deadline unsets the timer a notified wait left set:
/// it sleeps until the next notification, past the old deadline.
#[test]
fn no_deadline_unsets_the_timer() -> io::Result<()> {
    let poller = Arc::new(Poller::new()?);
    let mut events = Events::new();
    poller.notify()?;
    poller.wait(&mut events, Some(Duration::from_millis(50)))?;

    let waker = {
        let poller = poller.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            poller.notify()
        })
    };
    let start = Instant::now();
    events.clear();
    poller.wait(&mut events, None)?;
    let elapsed = start.elapsed();
    waker.join().unwrap()?;
    assert!(elapsed >= Duration::from_millis(250), "woke after {elapsed:?}, at the old deadline");
    Ok(())
}

/// Every notification wakes a wait, with the notifier edge-triggered and
/// read only when it fired.
#[test]
fn each_notification_wakes_a_wait() -> io::Result<()> {
    let poller = Poller::new()?;
    let mut events = Events::new();
    for _ in 0..1_000 {
        poller.notify()?;
        events.clear();
        let start = Instant::now();
        poller.wait(&mut events, Some(Duration::from_secs(10)))?;
        assert!(start.elapsed() < Duration::from_secs(5), "a notification was lost");
    }
    Ok(())
}
