//! Inbounds: how clients talk to us. One module per client protocol, the
//! dispatch on it here, and the relay stage they all end in.
//!
//! - [`socks5`]: `mode: socks5`. We end the client's SOCKS5 here (method
//!   choice, RFC 1929 login, request) and open the upstream with
//!   [`crate::connect`], which speaks SOCKS5 to the backend ourselves with
//!   its own credentials.
//! - [`transparent`]: `mode: transparent`. We pick a backend and pass the
//!   client's bytes to it untouched; the backend answers the client.
//! - [`http`]: `protocol: http`, and a `mixed` port's HTTP clients.
//! - [`gateway`]: `protocol: redirect | tproxy`, connections the firewall
//!   sent us; the kernel knows their destination.
//!
//! An inbound reads its client's request, asks [`crate::connect`] for an
//! upstream stream (or, in transparent mode, drives the backend's own
//! handshake with the same retry budget), answers the client in its own
//! protocol, and hands a [`Ready`] to [`tunnel`]. A new client protocol is
//! a new module here and one arm in [`serve`].
//!
//! `direct` backends are always served the socks5 way: there is no
//! upstream proxy to do the talking.

pub mod dns;
pub(crate) mod gateway;
#[cfg(target_os = "linux")]
pub(crate) mod gateway_udp;
pub(crate) mod http;
pub(crate) mod socks5;
pub(crate) mod transparent;
pub(crate) mod udp;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use smol::io::AsyncWriteExt;
use smol::Async;

use crate::config::{Mode, Protocol};
use crate::connect::{Attempts, ConnectError};
use crate::context::Snapshot;
use crate::relay;
use crate::socks5::{Address, Command};
use crate::stats::{ActiveGuard, Counter, DaemonStats};
use crate::upstream::until;

/// Serves one accepted client of a `protocol` listener until its tunnel
/// closes.
pub async fn serve(
    snap: Arc<Snapshot>,
    client: Async<TcpStream>,
    peer: SocketAddr,
    protocol: Protocol,
    listener: Option<u16>,
    stats: &DaemonStats,
) {
    // As narrow as it is: the task lives as long as the tunnel.
    let listener = listener.map(usize::from);
    crate::tcp::no_delay(client.get_ref());
    let deadline = Instant::now() + snap.config.limits.handshake_timeout;
    let speaks = match protocol {
        Protocol::Mixed => match until(deadline, speaks_http(&client)).await {
            Ok(true) => Protocol::Http,
            Ok(false) => Protocol::Socks5,
            Err(e) => {
                log::debug!("client {peer}: no first byte: {e}");
                return;
            }
        },
        other => other,
    };
    stats.clients_of(speaks).add(1);
    // The handshake runs boxed: its state (read-ahead buffers, parsed
    // messages, connect attempts, timers: 3.8 KB in socks5 mode, 4.5 KB
    // in transparent) is on the heap only while it runs, and the task,
    // which lives as long as the tunnel, is sized for the relay
    // (docs/performance.md, "Memory per idle tunnel").
    let ip = peer.ip();
    let mut ready = match (speaks, snap.config.mode) {
        (Protocol::Http, _) => Box::pin(http::handshake(&snap, &client, ip, listener, deadline)).await,
        (Protocol::Redirect | Protocol::Tproxy, _) => {
            let tproxy = speaks == Protocol::Tproxy;
            Box::pin(gateway::handshake(&snap, &client, (ip, listener), tproxy, deadline)).await
        }
        (_, Mode::Socks5) => Box::pin(socks5::handshake(&snap, stats, &client, ip, listener, deadline)).await,
        (_, Mode::Transparent) => {
            Box::pin(transparent::handshake(&snap, stats, &client, ip, listener, deadline)).await
        }
    };
    // By reference: the tunnel's state is in the task once, not also
    // moved into the relay's future.
    match &mut ready {
        Ok(ready) => tunnel(&snap, &client, ready).await,
        Err(Ended::Associate(_)) => {
            // Taken out of `ready`, whose handshake state is gone by now.
            let Err(Ended::Associate(pending)) =
                std::mem::replace(&mut ready, Err(Ended::Udp(String::new())))
            else {
                return;
            };
            let why = Box::pin(udp::associate(&snap, stats, &client, ip, pending)).await;
            log::debug!("client {peer}: {why}");
        }
        Err(why) => log::debug!("client {peer}: {why}"),
    }
}

/// A mixed port's client: whether it speaks HTTP rather than SOCKS5,
/// told by its first byte (SOCKS5 begins with its version byte, an HTTP
/// request with a method's first letter), which stays in the socket for
/// the inbound to read.
async fn speaks_http(client: &Async<TcpStream>) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    match client.read_with(|s| s.peek(&mut byte)).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(byte[0] != crate::socks5::VERSION),
    }
}

/// Why a client is refused before its session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over a connection limit, on a listener of this protocol.
    Busy(Protocol),
    /// Not in `allow` (HTTP listeners answer 403 without reading).
    Forbidden,
}

/// Refuses a client in its protocol's own words, so it fails at once
/// instead of waiting. The caller bounds the time.
pub async fn refuse(client: &Async<TcpStream>, why: Refusal) -> io::Result<()> {
    let status = match why {
        Refusal::Forbidden => 403,
        Refusal::Busy(Protocol::Http) => 503,
        Refusal::Busy(Protocol::Mixed) if speaks_http(client).await? => 503,
        // A gateway's client speaks no proxy protocol: it is closed.
        Refusal::Busy(p) if p.is_gateway() => return Ok(()),
        Refusal::Busy(_) => return socks5::refuse_busy(client).await,
    };
    let body = if status == 403 {
        "not allowed: this address is not in `allow`"
    } else {
        "over a connection limit; try again"
    };
    let mut c = client;
    c.write_all(&crate::http::response(status, "", body)).await
}

/// Why a session ended before its tunnel; logged at debug level by
/// [`serve`].
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client's message at this stage (greeting, login, request) was
    /// malformed, or did not come within the handshake timeout.
    Client(&'static str, crate::socks5::Error),
    /// Writing to the client failed.
    Io(io::Error),
    /// The client offers none of the methods we accept: the one we need.
    NoMethod(u8),
    /// The client's login was wrong.
    LoginFailed,
    /// A command we do not serve (BIND, UDP ASSOCIATE).
    Unsupported(Command),
    /// Transparent mode: the backend rejected the client's own login.
    BackendRejectedLogin,
    /// No upstream could be had; the client was told so.
    Connect(ConnectError),
    /// An HTTP client was answered with this status, for this reason.
    Http(u16, String),
    /// A gateway connection that cannot be served, and why.
    Gateway(String),
    /// A UDP association ended (or could not start), and why.
    Udp(String),
    /// Not an end: a UDP ASSOCIATE to serve once the handshake is gone.
    Associate(Box<Pending>),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Client(stage, crate::socks5::Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                write!(f, "no complete {stage} within the handshake timeout")
            }
            Ended::Client(stage, e) => write!(f, "bad {stage}: {e}"),
            Ended::Io(e) => e.fmt(f),
            Ended::NoMethod(m) => write!(f, "client offers none of the methods we accept (we need {m:#04x})"),
            Ended::LoginFailed => f.write_str("login failed"),
            Ended::Unsupported(c) => write!(f, "{c:?} is not supported"),
            Ended::BackendRejectedLogin => f.write_str("the backend rejected the client's login"),
            Ended::Connect(e) => e.fmt(f),
            Ended::Http(status, why) => write!(f, "answered HTTP {status}: {why}"),
            Ended::Gateway(why) => f.write_str(why),
            Ended::Udp(why) => write!(f, "UDP association: {why}"),
            Ended::Associate(_) => f.write_str("UDP ASSOCIATE"),
        }
    }
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Ended {
        Ended::Io(e)
    }
}

/// A UDP ASSOCIATE request whose handshake is done: what the association
/// needs from it. The handshake hands it on (as [`Ended::Associate`]) to
/// [`udp::associate`], so that its own state, kilobytes of read-ahead and
/// parsed messages, is freed before the association, which may live for
/// hours, begins.
pub(crate) struct Pending {
    /// The address the client said it would send from.
    pub declared: Address,
    pub attempts: Attempts,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UDP ASSOCIATE from {}", self.declared)
    }
}

/// A tunnel ready to relay: what a successful handshake hands on.
pub(crate) struct Ready {
    pub upstream: Async<TcpStream>,
    /// The backend's index in the pool.
    pub backend: usize,
    /// Counts the tunnel among the backend's active connections.
    pub _active: ActiveGuard,
    /// The destination, for the debug line when the tunnel ends; kept only
    /// while debug logging is on (an `Address` is 272 bytes, as much as a
    /// fifth of an idle tunnel's memory).
    pub dest: Option<Box<Address>>,
    /// What either side sent behind its handshake, read ahead with it:
    /// client bytes for the upstream, upstream bytes for the client.
    pub early_up: Vec<u8>,
    pub early_down: Vec<u8>,
    /// Whether the first-byte check judges this tunnel (see
    /// `relay::FirstByte`).
    pub judge_first_byte: bool,
}

/// A copy of `dest` for [`Ready`], if debug lines are logged.
pub(crate) fn for_debug_log(dest: &Address) -> Option<Box<Address>> {
    log::log_enabled!(log::Level::Debug).then(|| Box::new(dest.clone()))
}

/// Sends bytes read ahead with a handshake on to `to`, counting them.
async fn forward_early(mut to: &Async<TcpStream>, bytes: &[u8], counter: &Counter) -> io::Result<()> {
    if !bytes.is_empty() {
        to.write_all(bytes).await?;
        counter.add(bytes.len() as u64);
    }
    Ok(())
}

/// The relay stage, shared by every inbound. What either side sent
/// behind its handshake goes first.
async fn tunnel(snap: &Snapshot, client: &Async<TcpStream>, ready: &mut Ready) {
    let backend = &snap.pool.backends()[ready.backend];
    backend.stats.connections.add(1);
    if forward_early(&ready.upstream, &ready.early_up, &backend.stats.bytes_up).await.is_err()
        || forward_early(client, &ready.early_down, &backend.stats.bytes_down).await.is_err()
    {
        return;
    }
    let client_spoke = !ready.early_up.is_empty();
    let answered = !ready.early_down.is_empty();
    // Freed now, not when the tunnel ends.
    (ready.early_up, ready.early_down) = (Vec::new(), Vec::new());
    // Small on purpose: this lives as long as the tunnel (two references).
    let on_stall = || {
        let timeout = snap.config.health.first_byte_timeout;
        let name = &snap.pool.backends()[ready.backend].config.name;
        log::debug!(
            "backend {name}: a tunnel stalled (no byte back within {})",
            crate::config::human(timeout)
        );
        snap.pool.report_stall(ready.backend, timeout);
    };
    let first_byte = (ready.judge_first_byte && !answered).then_some(relay::FirstByte {
        timeout: snap.config.health.first_byte_timeout,
        client_spoke,
        on_stall: &on_stall,
    });
    let idle = snap.config.limits.idle_timeout;
    let totals = relay::relay(client, &ready.upstream, idle, &backend.stats, first_byte.as_ref()).await;
    // No destination if debug logging came on (a reload) after the handshake.
    let to = ready.dest.as_ref().map(|dest| format!(" to {dest}")).unwrap_or_default();
    log::debug!(
        "tunnel{to} via {} ended ({:?}): {} bytes up, {} down",
        backend.config.name,
        totals.end,
        totals.up,
        totals.down
    );
}

/// The task of a tunnel lives as long as the tunnel: its size is most of
/// what an idle tunnel costs beyond its sockets (docs/performance.md,
/// "Memory per idle tunnel"). 1,160 bytes before the first-byte check,
/// 1,256 with it, 1,288 with the listener's protocol and the per-inbound
/// counters (2,485 bytes per idle tunnel in all, scripts/mem_tunnels.py),
/// 1,304 with the hand-over of a UDP ASSOCIATE to its own boxed task
/// state (2,416 bytes per idle tunnel measured after it), 1,328 with
/// routing (the listener's index, the route in the retry budget), 1,336
/// with a reactor per thread (a timer keeps the reactor it is set in),
/// 1,272 with the relay's directions holding one reference each to what
/// they share (`relay::Flow`) instead of three.
#[cfg(all(test, target_pointer_width = "64"))]
mod task_size {
    #[test]
    fn a_tunnels_task_stays_small() {
        let c = crate::Config::from_yaml("backends:\n  - direct: true\n").unwrap();
        let snap = std::sync::Arc::new(crate::context::Snapshot::new(c));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let stats = crate::stats::DaemonStats::default();
        let task = super::serve(
            snap,
            smol::Async::new(s).unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            crate::config::Protocol::Mixed,
            None,
            &stats,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1_272, "the session task is {size} bytes");
    }
}
