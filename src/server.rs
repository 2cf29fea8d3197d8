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
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Executor, Task, Timer};

use crate::balancer::Pool;
use crate::config::Protocol;
use crate::config::{format_duration, Config};
use crate::context::{Current, Snapshot};
use crate::inbound::{self, Refusal};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::stats::{DaemonStats, RateSample, SAMPLE_EVERY};
use crate::watch::{self, uplinks};
use crate::web::{self, WebServer};

/// A reload request for [`run`]: the new configuration, and where to send
/// the outcome (a summary, or why nothing changed).
pub struct Reload {
    pub config: Config,
    pub reply: Sender<Result<String, ReloadError>>,
}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// A new listen address could not be bound.
    Listen(io::Error),
    /// The daemon is stopping.
    ShuttingDown,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Listen(e) => e.fmt(f),
            ReloadError::ShuttingDown => f.write_str("the daemon is shutting down"),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Listen(e) => Some(e),
            ReloadError::ShuttingDown => None,
        }
    }
}

/// Pause after a failed `accept()`. EMFILE/ENFILE do not clear by retrying
/// at once: back off so a full fd table does not become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the daemon's tasks share.
pub struct Context {
    /// The first executor thread's: the accept loops of a single listener,
    /// the health checker, DNS, the gateway's UDP and the reload loop.
    pub ex: Arc<Executor<'static>>,
    /// Every executor thread's, `ex` first: each has its own reactor, and
    /// a connection's task stays on the thread that accepted it.
    pub executors: Executors,
    pub current: Arc<Current>,
    pub stats: Arc<DaemonStats>,
    /// The addresses actually bound, in `listen` order, for `local_addrs`.
    pub bound: Arc<Mutex<Vec<SocketAddr>>>,
    /// Where the dashboard listens (it is not rebound on reload).
    pub web_bound: Option<SocketAddr>,
}

/// The executors of a daemon's threads, the first one's first.
pub type Executors = Arc<[Arc<Executor<'static>>]>;

/// One listen address's accept tasks: one per listener of its group.
struct Acceptor {
    /// As configured (may have port 0).
    configured: SocketAddr,
    /// As bound.
    bound: SocketAddr,
    tasks: Vec<Task<()>>,
}

impl Acceptor {
    async fn cancel(self) {
        for task in self.tasks {
            task.cancel().await;
        }
    }
}

impl Context {
    /// Starts accepting on `listener`'s group: listener `i` on executor
    /// thread `i`, so each thread registers its own in its own reactor.
    fn spawn_acceptor(&self, configured: SocketAddr, listener: Listening, drain: &Sender<()>) -> Acceptor {
        let bound = listener.as_ref().and_then(|g| g.first()).and_then(|l| l.local_addr().ok());
        let group: Vec<Option<TcpListener>> = match listener {
            Some(group) => group.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let tasks = group
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (executors, current, stats, drain) = (
                    Arc::clone(&self.executors),
                    Arc::clone(&self.current),
                    Arc::clone(&self.stats),
                    drain.clone(),
                );
                let own = i % executors.len();
                self.executors[own].spawn(async move {
                    let listener = match listener {
                        Some(listener) => listener,
                        #[cfg(not(target_os = "linux"))]
                        None => address_appears(configured).await,
                        // Linux listens on a missing address at once (tcp::listen).
                        #[cfg(target_os = "linux")]
                        None => return,
                    };
                    match Async::new(listener) {
                        Ok(listener) => {
                            accept_loop(executors, own, listener, configured, current, stats, drain).await
                        }
                        Err(e) => log::error!("cannot accept on {configured}: {e}"),
                    }
                })
            })
            .collect();
        Acceptor { configured, bound: bound.unwrap_or(configured), tasks }
    }

    fn publish_bound(&self, acceptors: &[Acceptor]) {
        *self.bound.lock().unwrap_or_else(|e| e.into_inner()) = acceptors.iter().map(|a| a.bound).collect();
    }
}

/// Serves clients on `listeners` (each with the address it was configured
/// as) until `shutdown` fires, applying reloads as they come; then drains.
pub async fn run(
    cx: Context,
    listeners: Vec<(SocketAddr, Listening)>,
    dns: Option<inbound::dns::Sockets>,
    tproxy_udp: Vec<std::net::UdpSocket>,
    reloads: Receiver<Reload>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let (drain_tx, drain_rx) = channel::bounded::<()>(1);
    let mut acceptors: Vec<Acceptor> =
        listeners.into_iter().map(|(configured, l)| cx.spawn_acceptor(configured, l, &drain_tx)).collect();
    cx.publish_bound(&acceptors);
    let mut checker = cx.ex.spawn(watch::backends::run(Arc::clone(&cx.ex), cx.current.get()));
    let sampler = cx.ex.spawn(sample_throughput(Arc::clone(&cx.current), Arc::clone(&cx.stats)));
    #[cfg(target_os = "linux")]
    let tproxy_udp: Vec<Task<()>> = tproxy_udp
        .into_iter()
        .map(|socket| {
            let (ex, current, stats) = (Arc::clone(&cx.ex), Arc::clone(&cx.current), Arc::clone(&cx.stats));
            cx.ex.spawn(inbound::gateway_udp::serve(ex, socket, current, stats))
        })
        .collect();
    #[cfg(not(target_os = "linux"))]
    let tproxy_udp: Vec<Task<()>> = {
        drop(tproxy_udp);
        Vec::new()
    };
    let dns = dns.map(|sockets| {
        let (ex, current, stats) = (Arc::clone(&cx.ex), Arc::clone(&cx.current), Arc::clone(&cx.stats));
        cx.ex.spawn(inbound::dns::serve(ex, sockets, current, stats))
    });
    let (rediscover_tx, rediscover_rx) = channel::bounded::<()>(1);
    #[cfg(any(target_os = "linux", windows))]
    let links = cx.ex.spawn(uplinks::follow_links(
        Arc::clone(&cx.current),
        Arc::clone(&cx.stats),
        rediscover_tx.clone(),
    ));
    #[cfg(not(any(target_os = "linux", windows)))]
    let links = cx.ex.spawn(async {});

    loop {
        let stop = async {
            shutdown.wait().await;
            None
        };
        let reload = async {
            match reloads.recv().await {
                Ok(reload) => Some(Some(reload)),
                // Nobody can ask for a reload any more; wait for shutdown.
                Err(_) => smol::future::pending().await,
            }
        };
        let rediscover = async {
            let _ = rediscover_rx.recv().await;
            Some(None)
        };
        match stop.or(reload).or(rediscover).await {
            None => break,
            Some(Some(Reload { config, reply })) => {
                let outcome = apply_reload(&cx, config, &mut acceptors, &mut checker, &drain_tx).await;
                if let Ok(summary) = &outcome {
                    log::debug!("reloaded: {summary}");
                }
                let _ = reply.try_send(outcome);
            }
            Some(None) => {
                // The interfaces changed under `interfaces: auto`: the
                // same config, rebuilt over the uplinks there are now.
                let config = cx.current.get().config.clone();
                match apply_reload(&cx, config, &mut acceptors, &mut checker, &drain_tx).await {
                    Ok(summary) => log::info!("uplinks changed: {summary}"),
                    Err(e) => log::warn!("uplinks changed, but the pool was not rebuilt: {e}"),
                }
            }
        }
        // The new pool's uplinks get the link states as they are now.
        let links = crate::uplink::current_links();
        uplinks::mark_links(&cx.current.get(), &links, true);
        *cx.stats.links.lock().unwrap_or_else(|e| e.into_inner()) = links;
    }
    drop(rediscover_tx);
    links.cancel().await;

    drop(drain_tx);
    for acceptor in acceptors {
        acceptor.cancel().await;
    }
    checker.cancel().await;
    sampler.cancel().await;
    if let Some(dns) = dns {
        dns.cancel().await;
    }
    for task in tproxy_udp {
        task.cancel().await;
    }
    let stats = &cx.stats;
    let open = stats.open.load(Ordering::Relaxed);
    let grace = cx.current.get().config.shutdown_timeout;
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

/// Switches to `config`: new backends, settings and listeners for new
/// connections; open tunnels carry on with what they started with. All or
/// nothing: if a new listen address cannot be bound, nothing changes.
async fn apply_reload(
    cx: &Context,
    config: Config,
    acceptors: &mut Vec<Acceptor>,
    checker: &mut Task<()>,
    drain: &Sender<()>,
) -> Result<String, ReloadError> {
    let old = cx.current.get();
    let links = crate::uplink::current_links();
    let mut config = uplinks::discover(config, &links);
    let added: Vec<SocketAddr> =
        config.listen.iter().filter(|a| !acceptors.iter().any(|x| x.configured == **a)).copied().collect();
    let fresh = bind(&added, &config, cx.executors.len()).map_err(ReloadError::Listen)?;
    // Deny our own port-0 listeners (kept and new) and dashboard, as at start.
    let mut own = Vec::new();
    for a in acceptors.iter().filter(|a| config.listen.contains(&a.configured)) {
        own.extend(bound_rules(&[a.configured], &[a.bound]));
    }
    for (configured, listener) in added.iter().zip(&fresh) {
        if let Some(Ok(bound)) = listener.as_ref().and_then(|g| g.first()).map(|l| l.local_addr()) {
            own.extend(bound_rules(&[*configured], &[bound]));
        }
    }
    if let (true, Some(web)) = (config.web.enabled, cx.web_bound) {
        own.extend(bound_rules(&[config.web.listen], &[web]));
    }
    // A rebuild of the running config already has them.
    for rule in own {
        if !config.deny_destinations.contains(&rule) {
            config.deny_destinations.push(rule);
        }
    }
    let pool = Pool::reloaded(&config, Some((&old.pool, &old.config.health)));
    let mut notes = Vec::new();
    if config.web.enabled != old.config.web.enabled || config.web.listen != old.config.web.listen {
        notes.push("web.enabled and web.listen take effect after a restart");
    }
    if config.log.format != old.config.log.format {
        notes.push("log.format takes effect after a restart");
    }
    if config.threads != old.config.threads {
        notes.push("threads takes effect after a restart");
    }
    let transparent = |c: &Config, a: &SocketAddr| c.protocol_of(*a) == Protocol::Tproxy;
    if config
        .listen
        .iter()
        .any(|a| old.config.listen.contains(a) && transparent(&config, a) != transparent(&old.config, a))
    {
        notes.push("a listener turned to or from tproxy takes effect after a restart");
    }
    if config.dns.as_ref().map(|d| d.listen) != old.config.dns.as_ref().map(|d| d.listen) {
        notes.push("dns.listen takes effect after a restart");
    }
    let carried = pool
        .backends()
        .iter()
        .filter(|b| old.pool.backends().iter().any(|o| Arc::ptr_eq(&o.stats, &b.stats)))
        .count();
    let summary = format!(
        "{} backend(s) ({} kept, {} new, {} removed), listening on {}{}{}",
        pool.backends().len(),
        carried,
        pool.backends().len() - carried,
        old.pool.backends().len() - carried,
        config.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        if notes.is_empty() { "" } else { "; " },
        notes.join("; ")
    );
    let snapshot = Arc::new(Snapshot { config, pool });
    cx.current.replace(Arc::clone(&snapshot));

    // New listeners are up before old ones close.
    for (configured, listener) in added.into_iter().zip(fresh) {
        acceptors.push(cx.spawn_acceptor(configured, listener, drain));
    }
    let mut kept = Vec::with_capacity(acceptors.len());
    for acceptor in acceptors.drain(..) {
        if snapshot.config.listen.contains(&acceptor.configured) {
            kept.push(acceptor);
        } else {
            log::info!("no longer listening on {}", acceptor.bound);
            acceptor.cancel().await;
        }
    }
    kept.sort_by_key(|a| snapshot.config.listen.iter().position(|l| *l == a.configured));
    *acceptors = kept;
    cx.publish_bound(acceptors);

    let old_checker =
        std::mem::replace(checker, cx.ex.spawn(watch::backends::run(Arc::clone(&cx.ex), snapshot)));
    old_checker.cancel().await;
    Ok(summary)
}

/// Every [`SAMPLE_EVERY`], records the aggregate byte rates for the
/// dashboard's throughput graph.
async fn sample_throughput(current: Arc<Current>, stats: Arc<DaemonStats>) {
    let totals = || {
        current.get().pool.backends().iter().fold((0u64, 0u64), |(up, down), b| {
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
        // A reload that removes a backend removes its bytes from the total:
        // that sample reads low rather than negative.
        stats.throughput.push(RateSample {
            at,
            up: (up.saturating_sub(last_up) as f64 / secs) as u64,
            down: (down.saturating_sub(last_down) as f64 / secs) as u64,
        });
        (last_up, last_down, last_at) = (up, down, now);
    }
}

/// Refusals answered at once (with a SOCKS5 failure reply) while over a
/// connection limit; past this, extra clients are just closed.
const MAX_REFUSING: usize = 64;

/// Repeated warnings (refused clients, failing accepts) are logged at
/// most once per this interval, with a count.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts events and says when one is due to be logged.
#[derive(Default)]
struct Throttle {
    last: Option<std::time::Instant>,
    count: u32,
}

impl Throttle {
    /// Counts one event; returns the count to log when a line is due.
    fn hit(&mut self) -> Option<u32> {
        self.count = self.count.saturating_add(1);
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// Accepts on `listener` (executor thread `own`'s) and runs each
/// connection on that thread. Where one listener serves every thread (not
/// Linux, which gives each thread its own: [`bind`]), the connections go
/// round the threads instead, each registered on its thread's reactor.
async fn accept_loop(
    executors: Executors,
    own: usize,
    listener: Async<TcpListener>,
    configured: SocketAddr,
    current: Arc<Current>,
    stats: Arc<DaemonStats>,
    drain: Sender<()>,
) {
    let local = listener.get_ref().local_addr().ok();
    let (mut generation, mut snapshot) = (current.generation(), current.get());
    // What this listener speaks, as the snapshot in force says (a reload
    // may change it for the same address).
    let protocol_in = |s: &Snapshot| s.config.protocol_of(configured);
    let listener_in = |s: &Snapshot| {
        s.config.listen.iter().position(|a| *a == configured).and_then(|i| u16::try_from(i).ok())
    };
    let (mut protocol, mut listen_index) = (protocol_in(&snapshot), listener_in(&snapshot));
    let (mut deny_log, mut error_log) = (Throttle::default(), Throttle::default());
    let ex = &executors[own];
    #[cfg(not(target_os = "linux"))]
    let mut next = own;
    loop {
        match crate::tcp::accept(&listener).await {
            Ok((stream, peer)) => {
                stats.accepted.add(1);
                if current.generation() != generation {
                    (generation, snapshot) = (current.generation(), current.get());
                    (protocol, listen_index) = (protocol_in(&snapshot), listener_in(&snapshot));
                }
                let limits = &snapshot.config.limits;
                if !snapshot.config.allows_client(peer.ip()) {
                    // Closed before a byte is read. Logged at most every
                    // 10 s, so a scan cannot flood the log.
                    stats.denied_clients.add(1);
                    if let Some(count) = deny_log.hit() {
                        log::warn!("refused {count} client(s) not in `allow`, the last from {peer}");
                    }
                    // An HTTP client gets its 403 without a byte read.
                    if protocol == Protocol::Http {
                        refuse(ex, &stats, stream, Refusal::Forbidden);
                    }
                    continue;
                }
                if stats.open.load(Ordering::Relaxed) >= limits.max_connections.get() as usize {
                    refuse_busy(ex, &stats, stream, protocol, "max_connections");
                    continue;
                }
                let slot = match limits.max_connections_per_client {
                    None => None,
                    Some(limit) => match ClientSlot::take(&stats, peer.ip(), limit.get()) {
                        Some(slot) => Some(slot),
                        None => {
                            refuse_busy(ex, &stats, stream, protocol, "max_connections_per_client");
                            continue;
                        }
                    },
                };
                let open = OpenConnection::new(&stats, &drain);
                let snapshot = Arc::clone(&snapshot);
                let stats = Arc::clone(&stats);
                let serve = async move |stream| {
                    let _open = (open, slot);
                    inbound::serve(snapshot, stream, peer, protocol, listen_index, &stats).await;
                };
                #[cfg(not(target_os = "linux"))]
                if executors.len() > 1 {
                    next = (next + 1) % executors.len();
                    if next != own {
                        // Off this thread's reactor, onto the other's.
                        match stream.into_inner() {
                            Ok(stream) => executors[next]
                                .spawn(async move {
                                    match Async::new(stream) {
                                        Ok(stream) => serve(stream).await,
                                        Err(e) => log::warn!("a connection from {peer} was dropped: {e}"),
                                    }
                                })
                                .detach(),
                            Err(e) => log::warn!("a connection from {peer} was dropped: {e}"),
                        }
                        continue;
                    }
                }
                ex.spawn(serve(stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: pause instead of spinning, and say so
                // at most once per interval however long it lasts.
                if let Some(count) = error_log.hit() {
                    log::warn!(
                        "accept on {local:?} failed {count} time(s): {e}; retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Over a limit: answer the client's handshake with a general failure (so
/// it does not hang), within 2 s, or just close when too many refusals are
/// already in flight.
fn refuse_busy(
    ex: &Executor<'static>,
    stats: &Arc<DaemonStats>,
    stream: Async<std::net::TcpStream>,
    protocol: Protocol,
    limit: &str,
) {
    stats.refused_busy.add(1);
    log::debug!("refusing a client: {limit} reached");
    refuse(ex, stats, stream, Refusal::Busy(protocol));
}

/// Answers a refused client in its protocol, within 2 s, or just closes
/// it when too many refusals are already in flight.
fn refuse(
    ex: &Executor<'static>,
    stats: &Arc<DaemonStats>,
    stream: Async<std::net::TcpStream>,
    why: Refusal,
) {
    if !crate::stats::take_slot(&stats.refusing, MAX_REFUSING) {
        return;
    }
    let stats = Arc::clone(stats);
    ex.spawn(async move {
        let _ = crate::upstream::until(
            std::time::Instant::now() + Duration::from_secs(2),
            inbound::refuse(&stream, why),
        )
        .await;
        stats.refusing.fetch_sub(1, Ordering::Relaxed);
    })
    .detach();
}

/// One client address's share of `max_connections_per_client`, given back
/// when the connection ends.
struct ClientSlot {
    stats: Arc<DaemonStats>,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(stats: &Arc<DaemonStats>, ip: std::net::IpAddr, limit: u32) -> Option<ClientSlot> {
        let mut map = stats.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot { stats: Arc::clone(stats), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.stats.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
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

/// Deny rules for addresses configured with port 0, now that binding has
/// chosen their ports (the others were added by config validation).
fn bound_rules(configured: &[SocketAddr], bound: &[SocketAddr]) -> Vec<crate::config::DestRule> {
    let chosen = configured.iter().zip(bound).filter(|(c, _)| c.port() == 0).map(|(_, b)| *b);
    crate::config::own_address_rules(chosen)
}

/// The listeners of one address: on Linux one per executor thread (an
/// `SO_REUSEPORT` group, [`crate::tcp::listen_group`]), elsewhere one for
/// all; or `None` while the address does not exist on this host (where
/// the system cannot listen on it beforehand: not Linux). Each joins a
/// reactor on the thread that accepts on it.
pub type Listening = Option<Vec<TcpListener>>;

/// Binds every configured listen address for `threads` executor
/// threads, or says which one failed. The listeners delay ACKs
/// ([`crate::tcp::listening`]). An address this host does not have yet is
/// not a failure: on Linux it is listened on at once (`IP_FREEBIND`),
/// elsewhere it is waited for ([`address_appears`]).
pub fn bind(addrs: &[SocketAddr], config: &Config, threads: usize) -> io::Result<Vec<Listening>> {
    addrs
        .iter()
        .map(|addr| {
            #[cfg(target_os = "linux")]
            let listened = match (config.protocol_of(*addr), threads) {
                (protocol, 2..) => crate::tcp::listen_group(*addr, protocol == Protocol::Tproxy, threads),
                // IP_TRANSPARENT binds any address, there or not.
                (Protocol::Tproxy, _) => crate::tcp::listen_transparent(*addr).map(|l| (vec![l], false)),
                _ => crate::tcp::listen(*addr).map(|(l, missing)| (vec![l], missing)),
            };
            #[cfg(not(target_os = "linux"))]
            let listened = {
                let _ = (config, threads);
                crate::tcp::listen(*addr).map(|(l, missing)| (vec![l], missing))
            };
            let (group, missing) = match listened {
                Ok(bound) => bound,
                Err(e) if cfg!(not(target_os = "linux")) && e.kind() == io::ErrorKind::AddrNotAvailable => {
                    log::warn!(
                        "listen {addr}: this host has no such address yet; serving it as soon as an \
                         interface gets it (checked every {} s)",
                        ADDRESS_RETRY.as_secs()
                    );
                    return Ok(None);
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))),
            };
            if missing {
                log::warn!(
                    "listen {addr}: this host has no such address yet; listening anyway, \
                     and serving it as soon as an interface gets it"
                );
            }
            group.iter().for_each(crate::tcp::listening);
            Ok(Some(group))
        })
        .collect()
}

/// How often a listen address the host lacks is tried again (not Linux).
const ADDRESS_RETRY: Duration = Duration::from_secs(2);

/// Waits until `addr` can be listened on, trying every [`ADDRESS_RETRY`].
/// Another error than a missing address is said once and tried again too.
#[cfg(not(target_os = "linux"))]
async fn address_appears(addr: SocketAddr) -> TcpListener {
    let mut said = false;
    loop {
        Timer::after(ADDRESS_RETRY).await;
        let error = match crate::tcp::listen(addr) {
            Ok((listener, _)) => {
                crate::tcp::listening(&listener);
                log::info!("listen {addr}: the address is here now; serving it");
                return listener;
            }
            Err(e) => e,
        };
        if error.kind() != io::ErrorKind::AddrNotAvailable && !said {
            log::warn!("listen {addr}: {error}; trying again every {} s", ADDRESS_RETRY.as_secs());
            said = true;
        }
    }
}

/// Gives the calling executor thread its own reactor. Without one (the
/// system refuses another epoll) it shares the global one, which works,
/// only with events handed between threads.
fn own_reactor() {
    if let Err(e) = async_io::use_own_reactor() {
        log::warn!("an executor thread shares the global reactor: {e}");
    }
}

/// Stack size of executor threads. Tasks live on the heap; a thread only
/// needs stack for one poll at a time, and routers have little RAM.
const WORKER_STACK: usize = 256 * 1024;

/// A running daemon on its own threads: what `main` starts and what the
/// integration tests drive.
pub struct Daemon {
    bound: Arc<Mutex<Vec<SocketAddr>>>,
    web: Option<WebServer>,
    /// Where the DNS listener is bound, if there is one.
    dns_bound: Option<SocketAddr>,
    current: Arc<Current>,
    reloads: Sender<Reload>,
    trigger: ShutdownTrigger,
    stats: Arc<DaemonStats>,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
    /// Closed when the daemon thread ends (see [`Daemon::finished`]).
    finished: Receiver<()>,
}

impl Daemon {
    /// Binds the listeners and starts serving on `threads` executor threads
    /// (at least one). Bind errors are returned here, before any thread
    /// starts.
    pub fn start(config: Config, threads: usize) -> io::Result<Daemon> {
        let threads = threads.max(1);
        let listeners = bind(&config.listen, &config, threads)?;
        let addrs = listeners
            .iter()
            .zip(&config.listen)
            .map(|(l, configured)| {
                l.as_ref().and_then(|g| g.first()).map_or(Ok(*configured), |l| l.local_addr())
            })
            .collect::<io::Result<Vec<_>>>()?;
        // A tproxy listener takes UDP too, on the same address and port.
        #[cfg(target_os = "linux")]
        let tproxy_udp = config
            .listen
            .iter()
            .zip(&addrs)
            .filter(|(configured, _)| config.protocol_of(**configured) == Protocol::Tproxy)
            .map(|(_, bound)| {
                crate::tproxy::udp_socket(*bound, true)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for UDP on {bound}: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        #[cfg(not(target_os = "linux"))]
        let tproxy_udp: Vec<std::net::UdpSocket> = Vec::new();
        let mut config = config;
        let listeners: Vec<(SocketAddr, Listening)> = config.listen.iter().copied().zip(listeners).collect();
        let mut own = bound_rules(&config.listen, &addrs);
        // The dashboard binds first too, so that a port-0 dashboard's real
        // port can be denied as a destination in the one snapshot built.
        let web_listener = config.web.enabled.then(|| WebServer::bind(&config.web)).transpose()?;
        let web_bound = web_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        if let Some(addr) = web_bound {
            own.extend(bound_rules(&[config.web.listen], &[addr]));
        }
        let dns = config.dns.as_ref().map(|d| inbound::dns::Sockets::bind(d.listen)).transpose()?;
        let dns_bound = dns.as_ref().map(|d| d.local_addr()).transpose()?;
        if let (Some(d), Some(addr)) = (&config.dns, dns_bound) {
            own.extend(bound_rules(&[d.listen], &[addr]));
            log::info!("DNS on {addr} (UDP and TCP), forwarded through the backends");
        }
        config.deny_destinations.extend(own);
        let snapshot = Arc::new(Snapshot::new(uplinks::discover(config, &crate::uplink::current_links())));
        let stats = Arc::new(DaemonStats::default());
        let current = Arc::new(Current::new(snapshot));
        let web = match web_listener {
            Some(listener) => {
                let state = Arc::new(web::State {
                    current: Arc::clone(&current),
                    stats: Arc::clone(&stats),
                    started: std::time::Instant::now(),
                });
                Some(WebServer::start(listener, state)?)
            }
            None => None,
        };
        let (trigger, shutdown) = shutdown::channel();
        let (reloads, reload_rx) = channel::bounded::<Reload>(1);
        let (finished_tx, finished) = channel::bounded::<()>(1);
        let bound = Arc::new(Mutex::new(addrs));
        let (thread_stats, thread_current, thread_bound) =
            (Arc::clone(&stats), Arc::clone(&current), Arc::clone(&bound));
        // An executor per thread, each thread with its own reactor: what a
        // thread accepts, it runs and polls itself (docs/performance.md,
        // "A reactor per thread and `threads: auto`"). The first thread runs the rest too.
        let executors: Executors = (0..threads).map(|_| Arc::new(Executor::new())).collect();
        let (stop_workers, workers_stop) = channel::bounded::<()>(1);
        let mut workers = Vec::with_capacity(threads - 1);
        for (i, ex) in executors.iter().enumerate().skip(1) {
            let (ex, stop) = (Arc::clone(ex), workers_stop.clone());
            workers.push(
                thread::Builder::new().name(format!("socksbalance-{i}")).stack_size(WORKER_STACK).spawn(
                    move || {
                        own_reactor();
                        smol::block_on(ex.run(stop.recv()))
                    },
                )?,
            );
        }
        let thread =
            thread::Builder::new().name("socksbalance".into()).stack_size(WORKER_STACK).spawn(move || {
                // Dropped when this thread ends, which closes `finished`.
                let _finished = finished_tx;
                own_reactor();
                let ex = Arc::clone(&executors[0]);
                let cx = Context {
                    ex: Arc::clone(&ex),
                    executors: Arc::clone(&executors),
                    current: thread_current,
                    stats: thread_stats,
                    bound: thread_bound,
                    web_bound,
                };
                let result = smol::block_on(ex.run(run(cx, listeners, dns, tproxy_udp, reload_rx, shutdown)));
                drop(stop_workers);
                for worker in workers {
                    let _ = worker.join();
                }
                // Dropping the executors cancels any tunnel still open after
                // the grace period, closing its sockets.
                drop((ex, executors));
                result
            })?;
        Ok(Daemon { bound, web, dns_bound, current, reloads, trigger, stats, thread: Some(thread), finished })
    }

    /// Switches to `config` without dropping open tunnels: new and changed
    /// backends and settings apply to new connections, unchanged backends
    /// keep their counters and breaker state, new listen addresses are
    /// bound before removed ones close. On error nothing changes. Returns
    /// a one-line summary of what changed.
    pub fn reload(&self, config: Config) -> Result<String, ReloadError> {
        let (reply, outcome) = channel::bounded(1);
        smol::block_on(async {
            self.reloads.send(Reload { config, reply }).await.map_err(|_| ReloadError::ShuttingDown)?;
            outcome.recv().await.map_err(|_| ReloadError::ShuttingDown)?
        })
    }

    /// The addresses actually bound (port 0 resolved), in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where the dashboard listens, when it is enabled.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(WebServer::local_addr)
    }

    /// The DNS listener's address, if `dns:` is configured.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_bound
    }

    /// The configuration and backends new connections get, with their
    /// live counters.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    pub fn stats(&self) -> &DaemonStats {
        &self.stats
    }

    /// A channel that closes when the daemon has stopped (drained), for
    /// waiting from a thread that cannot join it.
    pub fn finished(&self) -> Receiver<()> {
        self.finished.clone()
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
