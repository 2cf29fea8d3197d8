//! Telling every part of the daemon to stop.
//!
//! A closed channel is the signal: [`ShutdownTrigger::trigger`] closes it,
//! and every [`Shutdown`] clone's `wait()` returns at once, now and later.
//! Nothing is global; the trigger is passed to whoever may stop the daemon
//! (the signal handler in `main`, or a test).

use smol::channel::{self, Receiver, Sender};

/// The side that waits for shutdown. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(Receiver<()>);

/// The side that starts the shutdown.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(Sender<()>);

/// A connected trigger and waiter.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = channel::bounded(1);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl Shutdown {
    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent: recv() returns only when the channel closes.
        let _ = self.0.recv().await;
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_closed()
    }
}

impl ShutdownTrigger {
    /// Starts the shutdown; calling it again does nothing.
    pub fn trigger(&self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_wakes_including_late_ones() {
        let (trigger, shutdown) = channel();
        let early = shutdown.clone();
        assert!(!early.is_triggered());
        trigger.trigger();
        trigger.trigger();
        smol::block_on(early.wait());
        smol::block_on(shutdown.clone().wait());
        assert!(shutdown.is_triggered());
    }
}
