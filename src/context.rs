//! What every part of the running daemon shares: the [`Snapshot`] a
//! connection runs on (the validated config and the backend pool built
//! for it) and [`Current`], the one new connections get.
//!
//! It sits low in the house, below the server, the inbounds, the health
//! checker, the link watcher and the dashboard, which all read it; only
//! the server replaces it (a reload).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::balancer::Pool;
use crate::config::Config;

/// Everything a connection needs to know, fixed for its lifetime. A config
/// reload builds a new snapshot and swaps it in for new connections; open
/// tunnels keep the one they started with.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub pool: Pool,
}

impl Snapshot {
    /// Builds the pool for `config` (whose `interfaces: auto` uplinks the
    /// caller has already discovered: `watch::uplinks::discover`).
    pub fn new(config: Config) -> Snapshot {
        let pool = Pool::new(&config);
        Snapshot { config, pool }
    }
}

/// The snapshot new connections get. A reload replaces it whole and bumps
/// the generation; accept loops compare generations (an atomic load) and
/// take the lock only when it changed, so accepting stays lock-free.
#[derive(Debug)]
pub struct Current {
    snapshot: Mutex<Arc<Snapshot>>,
    generation: AtomicUsize,
}

impl Current {
    pub fn new(snapshot: Arc<Snapshot>) -> Current {
        crate::tcp::set_routing_mark(snapshot.config.routing_mark);
        Current { snapshot: Mutex::new(snapshot), generation: AtomicUsize::new(0) }
    }

    /// The snapshot in force. The lock is held only to clone an `Arc`.
    pub fn get(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn generation(&self) -> usize {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `snapshot` in force for new connections (a reload).
    pub(crate) fn replace(&self, snapshot: Arc<Snapshot>) {
        crate::tcp::set_routing_mark(snapshot.config.routing_mark);
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        self.generation.fetch_add(1, Ordering::Release);
    }
}
