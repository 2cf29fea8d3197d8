//! The daemon: listeners, the accept loop, and graceful shutdown.
//!
//! [`run`] is the one entry point, used by `main` (through [`Daemon`]) and
//! by the integration tests alike. It takes already-bound listeners, so a
//! test binds `127.0.0.1:0` and reads the port back, and a bind error is
//! reported before anything starts.
//!
//! Shutdown: when [`Shutdown`] fires, the accept loops are cancelled (the
//! listening sockets close, so new clients are refused at once), then open
//! tunnels get up to `shutdown_timeout` to finish. Each connection task
//! holds a clone of a "drain" channel sender; when the last one is dropped
//! the receiver wakes, which is how we know every tunnel is gone without
//! polling a counter.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use smol::channel::{self, Sender};
use smol::future::FutureExt;
use smol::{Async, Executor, Timer};

use crate::balancer::Pool;
use crate::config::{format_duration, Config};
use crate::session;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::stats::{DaemonStats, RateSample, SAMPLE_EVERY};
use crate::web::{self, WebServer};

/// Everything a connection needs to know, fixed for its lifetime. A config
/// reload builds a new snapshot and swaps it in for new connections; open
/// tunnels keep the one they started with.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub pool: Pool,
}

impl Snapshot {
    pub fn new(config: Config) -> Result<Snapshot, String> {
        let pool = Pool::new(&config)?;
        Ok(Snapshot { config, pool })
    }
}

/// Pause after a failed `accept()`. EMFILE/ENFILE do not clear by retrying
/// at once: back off so a full fd table does not become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves clients on `listeners` until `shutdown` fires, then drains.
pub async fn run(
    ex: Arc<Executor<'static>>,
    snapshot: Arc<Snapshot>,
    stats: Arc<DaemonStats>,
    listeners: Vec<Async<TcpListener>>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let (drain_tx, drain_rx) = channel::bounded::<()>(1);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            ex.spawn(accept_loop(
                Arc::clone(&ex),
                listener,
                Arc::clone(&snapshot),
                Arc::clone(&stats),
                drain_tx.clone(),
            ))
        })
        .collect();
    drop(drain_tx);
    let checker = ex.spawn(crate::health::checker::run(Arc::clone(&ex), Arc::clone(&snapshot)));
    let sampler = ex.spawn(sample_throughput(Arc::clone(&snapshot), Arc::clone(&stats)));

    shutdown.wait().await;
    for acceptor in acceptors {
        acceptor.cancel().await;
    }
    checker.cancel().await;
    sampler.cancel().await;
    let open = stats.open.load(Ordering::Relaxed);
    let grace = snapshot.config.shutdown_timeout;
    if open > 0 {
        log::info!("shutting down: waiting up to {} for {open} open connection(s)", format_duration(grace));
    }
    let drained = async {
        // Every sender is gone once every connection task has ended.
        let _ = drain_rx.recv().await;
        true
    };
    let timed_out = async {
        Timer::after(grace).await;
        false
    };
    if !drained.or(timed_out).await {
        log::warn!(
            "shutdown: {} connection(s) still open after {}; closing them",
            stats.open.load(Ordering::Relaxed),
            format_duration(grace)
        );
    }
    Ok(())
}

/// Every [`SAMPLE_EVERY`], records the aggregate byte rates for the
/// dashboard's throughput graph.
async fn sample_throughput(snapshot: Arc<Snapshot>, stats: Arc<DaemonStats>) {
    let totals = || {
        snapshot.pool.backends().iter().fold((0u64, 0u64), |(up, down), b| {
            (up + b.stats.bytes_up.get(), down + b.stats.bytes_down.get())
        })
    };
    let (mut last_up, mut last_down) = totals();
    let mut last_at = std::time::Instant::now();
    loop {
        Timer::after(SAMPLE_EVERY).await;
        let (up, down) = totals();
        let now = std::time::Instant::now();
        let secs = now.duration_since(last_at).as_secs_f64().max(0.001);
        let at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        stats.throughput.push(RateSample {
            at,
            up: ((up - last_up) as f64 / secs) as u64,
            down: ((down - last_down) as f64 / secs) as u64,
        });
        (last_up, last_down, last_at) = (up, down, now);
    }
}

async fn accept_loop(
    ex: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    snapshot: Arc<Snapshot>,
    stats: Arc<DaemonStats>,
    drain: Sender<()>,
) {
    let local = listener.get_ref().local_addr().ok();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                stats.accepted.add(1);
                let open = OpenConnection::new(&stats, &drain);
                let snapshot = Arc::clone(&snapshot);
                ex.spawn(async move {
                    let _open = open;
                    session::serve(snapshot, stream, peer).await;
                })
                .detach();
            }
            Err(e) => {
                log::warn!("accept on {local:?} failed: {e}; pausing {} ms", ACCEPT_BACKOFF.as_millis());
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Held by each connection task: counts it as open and keeps the drain
/// channel alive. Dropped when the task ends or is cancelled.
struct OpenConnection {
    stats: Arc<DaemonStats>,
    _drain: Sender<()>,
}

impl OpenConnection {
    fn new(stats: &Arc<DaemonStats>, drain: &Sender<()>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { stats: Arc::clone(stats), _drain: drain.clone() }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds every configured listen address, or says which one failed.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<Async<TcpListener>>> {
    addrs
        .iter()
        .map(|addr| {
            TcpListener::bind(addr)
                .and_then(Async::new)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        })
        .collect()
}

/// Stack size of executor threads. Tasks live on the heap; a thread only
/// needs stack for one poll at a time, and routers have little RAM.
const WORKER_STACK: usize = 256 * 1024;

/// A running daemon on its own threads: what `main` starts and what the
/// integration tests drive.
pub struct Daemon {
    addrs: Vec<SocketAddr>,
    web: Option<WebServer>,
    snapshot: Arc<Snapshot>,
    trigger: ShutdownTrigger,
    stats: Arc<DaemonStats>,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Daemon {
    /// Binds the listeners and starts serving on `threads` executor threads
    /// (at least one). Bind errors are returned here, before any thread
    /// starts.
    pub fn start(config: Config, threads: usize) -> io::Result<Daemon> {
        let listeners = bind(&config.listen)?;
        let addrs = listeners.iter().map(|l| l.get_ref().local_addr()).collect::<io::Result<Vec<_>>>()?;
        let snapshot =
            Arc::new(Snapshot::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?);
        let stats = Arc::new(DaemonStats::default());
        let web = match snapshot.config.web.enabled {
            true => {
                let state = Arc::new(web::State {
                    snapshot: Arc::clone(&snapshot),
                    stats: Arc::clone(&stats),
                    started: std::time::Instant::now(),
                });
                Some(WebServer::start(&snapshot.config.web, state)?)
            }
            false => None,
        };
        let (trigger, shutdown) = shutdown::channel();
        let thread_stats = Arc::clone(&stats);
        let thread_snapshot = Arc::clone(&snapshot);
        let thread =
            thread::Builder::new().name("socksbalance".into()).stack_size(WORKER_STACK).spawn(move || {
                let ex = Arc::new(Executor::new());
                let (stop_workers, workers_stop) = channel::bounded::<()>(1);
                let workers: Vec<_> = (1..threads.max(1))
                    .filter_map(|i| {
                        let (ex, stop) = (Arc::clone(&ex), workers_stop.clone());
                        thread::Builder::new()
                            .name(format!("socksbalance-{i}"))
                            .stack_size(WORKER_STACK)
                            .spawn(move || smol::block_on(ex.run(stop.recv())))
                            .ok()
                    })
                    .collect();
                let result = smol::block_on(ex.run(run(
                    Arc::clone(&ex),
                    thread_snapshot,
                    thread_stats,
                    listeners,
                    shutdown,
                )));
                drop(stop_workers);
                for worker in workers {
                    let _ = worker.join();
                }
                // Dropping the executor cancels any tunnel still open after
                // the grace period, closing its sockets.
                drop(ex);
                result
            })?;
        Ok(Daemon { addrs, web, snapshot, trigger, stats, thread: Some(thread) })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the dashboard listens, when it is enabled.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(WebServer::local_addr)
    }

    /// The configuration and backends in use, with their live counters.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn stats(&self) -> &DaemonStats {
        &self.stats
    }

    /// A handle that can stop the daemon from another thread.
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Starts a graceful shutdown and waits for it to finish.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.trigger.trigger();
        self.join_thread()
    }

    /// Waits until the daemon stops (after someone triggers shutdown).
    pub fn join(mut self) -> io::Result<()> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> io::Result<()> {
        let result = match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("daemon thread panicked"))),
            None => Ok(()),
        };
        // The dashboard goes last, so it can show the drain.
        if let Some(web) = self.web.take() {
            web.stop();
        }
        result
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.trigger.trigger();
        let _ = self.join_thread();
    }
}
