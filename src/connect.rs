//! The connect-with-failover core that every inbound uses.
//!
//! Given a destination, the client's address (for sticky picks) and a
//! deadline, [`connect`] opens an upstream stream through a balanced
//! backend: a SOCKS5 backend with our own handshake and its credentials,
//! or `direct` and uplink backends straight to the destination. A backend
//! that fails before the stream is up is replaced by another, up to
//! `balancer.max_attempts` in all, and every result is reported to the
//! pool's health. It knows nothing of how the client asked and writes
//! nothing to it: the inbound maps a [`ConnectError`] to its own protocol
//! (a SOCKS5 reply code, an HTTP status).
//!
//! Failures the backend is to blame for (refused, unreachable, timeout,
//! broken handshake, rejected login) count against it; a destination
//! failure it merely reports (reply 0x03–0x06) does not, and is retried on
//! one more backend at most. [`Attempts`], the retry budget, is also what
//! transparent mode uses for its own attempts, which replay the client's
//! handshake instead of making ours.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use smol::Async;

use crate::balancer::learned::Outcome;
use crate::balancer::{Client, Decision, Route, Via};
use crate::config::routing::Query;
use crate::config::Target;
use crate::context::Snapshot;
use crate::health::{Source, Verdict};
use crate::socks5::Address;
use crate::stats::ActiveGuard;
use crate::upstream::{self, UpstreamError};

/// Most attempts per connection (`balancer.max_attempts` is capped to it).
const MAX_ATTEMPTS: usize = 16;

/// Most backends tried for one connection, counting those that failed
/// conclusively at once (refused), which cost no attempt.
const MAX_TRIED: usize = 64;

/// Plain-HTTP ports: a long poll there may hold its first answer back for
/// minutes, so the first-byte check leaves them alone.
const LONG_POLL_PORTS: [u16; 3] = [80, 8000, 8080];

/// An upstream stream, ready for the inbound to answer its client and
/// relay.
pub(crate) struct Established {
    pub upstream: Async<TcpStream>,
    /// The backend's index in the pool.
    pub backend: usize,
    /// Counts the stream among the backend's active connections.
    pub active: ActiveGuard,
    /// The address the backend (or our own socket, for `direct`) bound
    /// for the destination: what a SOCKS5 client is told.
    pub bound: Address,
    /// What the backend sent behind its reply, for the client.
    pub early_down: Vec<u8>,
    /// Whether the relay's first-byte check judges this tunnel.
    pub judge_first_byte: bool,
}

/// Why no upstream stream could be had, and whose fault it was.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// `deny_destinations` forbids the destination: the rule, and where
    /// the client wanted to go. No backend was tried.
    Denied { destination: String, rule: String },
    /// A rule with `action: block` matched (its index in `rules`).
    Blocked { destination: String, rule: usize },
    /// Every backend tried failed, or none could be: the last failure
    /// (`NoBackend` when none was tried).
    Upstream(UpstreamError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Denied { destination, rule } => {
                write!(f, "CONNECT to {destination} refused by deny_destinations ({rule})")
            }
            ConnectError::Blocked { destination, rule } => {
                write!(f, "CONNECT to {destination} blocked by rules[{rule}]")
            }
            ConnectError::Upstream(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The backends tried for one client connection, and the retry budget.
///
/// A client gives up only when every eligible backend has failed for it,
/// when its handshake deadline passes, or when `max_attempts` backends
/// have failed in ways that cost time. A refused connection costs none
/// (it fails at once and opens that backend's circuit), so a port range
/// full of dead ports never uses up a client's budget. Panic mode (every
/// circuit open) gets one attempt, so that the client hears at once.
pub(crate) struct Attempts {
    tried: heapless::Vec<u32, MAX_TRIED>,
    /// Failed attempts that count against `max`.
    counted: usize,
    max: usize,
    panicked: bool,
    deadline: Instant,
    destination_failures: u32,
    last: Option<UpstreamError>,
    /// Where the backends come from, as the rules decided.
    route: Route,
    /// The listener the client came in on (index into `listen`).
    listener: Option<usize>,
    /// Gateway: the address the client dialled, when the destination is
    /// a sniffed name. Rules' `cidr` match it, and a connection from this
    /// host goes to it (the client resolved the name already).
    dialled: Option<SocketAddr>,
}

impl Attempts {
    pub fn new(snap: &Snapshot, deadline: Instant) -> Self {
        let max = (snap.config.balancer.max_attempts.get() as usize).min(MAX_ATTEMPTS);
        Attempts {
            tried: heapless::Vec::new(),
            counted: 0,
            max,
            panicked: false,
            deadline,
            destination_failures: 0,
            last: None,
            route: snap.pool.default_route(),
            listener: None,
            dialled: None,
        }
    }

    /// For a gateway client that dialled `addr`.
    pub fn dialled(mut self, addr: SocketAddr) -> Self {
        self.dialled = Some(addr);
        self
    }

    /// For a client of listener `listener` (rules may match on it).
    pub fn on(mut self, listener: Option<usize>) -> Self {
        self.listener = listener;
        self
    }

    /// Lets the rules choose where the backends come from, for a client
    /// at `ip` going to `destination` (`None`: not known yet). `Err`
    /// names the blocking rule.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn decide(
        &mut self,
        snap: &Snapshot,
        ip: IpAddr,
        destination: Option<&Address>,
    ) -> Result<(), usize> {
        if snap.config.rules.is_empty() {
            return Ok(());
        }
        let destination = destination.filter(|d| **d != Address::UNSPECIFIED);
        let dialled = self.dialled.map(|a| a.ip());
        match snap
            .pool
            .decide(&snap.config, &Query { destination, dialled, source: ip, inbound: self.listener })
        {
            Decision::Route(route) => {
                self.route = route;
                Ok(())
            }
            Decision::Block(rule) => Err(rule),
        }
    }

    /// The next backend to try, if the budget allows one.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn next(
        &mut self,
        snap: &Snapshot,
        client: Client<'_>,
        also_skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.counted >= self.max
            || self.tried.is_full()
            || self.last.as_ref().is_some_and(|e| !self.worth_retrying(e))
            || Instant::now() >= self.deadline
        {
            return None;
        }
        let pick =
            snap.pool.select(self.route, client, &|i| self.tried.contains(&(i as u32)) || also_skip(i))?;
        if pick.panic {
            if self.panicked {
                return None;
            }
            self.panicked = true;
        }
        let _ = self.tried.push(pick.index as u32);
        Some(pick.index)
    }

    fn worth_retrying(&self, e: &UpstreamError) -> bool {
        match e {
            // The rules are the same whichever backend is tried.
            UpstreamError::NotAllowed => false,
            UpstreamError::MethodMismatch(_) => true,
            e if e.blames_backend() => true,
            // About the destination: one more backend at most.
            _ => self.destination_failures <= 1,
        }
    }

    /// Reports a failed attempt on backend `i` and keeps the error.
    // One copy for every inbound that calls it (binary size).
    #[inline(never)]
    pub fn failed(&mut self, snap: &Snapshot, i: usize, dest: &Address, e: UpstreamError) {
        let backend = &snap.pool.backends()[i];
        let timeout = snap.config.health.connect_timeout;
        if !e.conclusive() {
            self.counted += 1;
        }
        if let (UpstreamError::Uplink(_), Via::Uplink(u)) = (&e, snap.pool.via(i)) {
            // The link to the proxy failed, not the proxy: the uplink
            // takes the blame, and another backend is tried.
            let uplink = &snap.pool.backends()[u].config.name;
            log::debug!(
                "backend {} via uplink {uplink}: {e}{}; trying another",
                backend.config.name,
                For(dest)
            );
            snap.pool.report(u, Source::Traffic, &Verdict::of(&e, timeout));
            snap.pool.report(i, Source::Traffic, &Verdict::Neutral);
            self.last = Some(e);
            return;
        }
        if matches!(e, UpstreamError::BackendReply(2..=6) | UpstreamError::Destination(_)) {
            // It failed for this destination: the per-site table learns.
            snap.pool.learn(i, dest, Outcome::Failed);
        }
        if e.blames_backend() {
            log::debug!("backend {}: {e}{}; trying another", backend.config.name, For(dest));
        } else {
            self.destination_failures += 1;
            log::debug!("backend {}: {e}{}", backend.config.name, For(dest));
        }
        // "Not allowed by ruleset" from a backend that others serve: with
        // a learned table, that site's business (the table avoids the
        // backend for it), not the backend's health for everyone.
        let per_site = snap.pool.learned().is_some() && matches!(e, UpstreamError::BackendReply(0x02));
        let verdict = if per_site { Verdict::Neutral } else { Verdict::of(&e, timeout) };
        snap.pool.report(i, Source::Traffic, &verdict);
        self.last = Some(e);
    }

    /// The error the client gets when every attempt failed. Giving up
    /// because no backend could serve is logged here, once, at info; a
    /// destination that failed through working backends is the client's
    /// business and stays at debug.
    pub fn into_error(self, ip: IpAddr, dest: &Address) -> UpstreamError {
        let e = self.last.unwrap_or(UpstreamError::NoBackend);
        if e.blames_backend() || matches!(e, UpstreamError::NoBackend | UpstreamError::MethodMismatch(_)) {
            let why = if Instant::now() >= self.deadline {
                "the handshake timeout passed"
            } else if self.panicked {
                "every backend is down"
            } else if self.counted >= self.max {
                "max_attempts reached"
            } else {
                "no other backend to try"
            };
            let on = if *dest == Address::UNSPECIFIED { String::new() } else { format!(" on {dest}") };
            log::info!("client {ip}: gave up{on} after {} backend(s), {why}; last: {e}", self.tried.len());
        }
        e
    }
}

/// ` (for DEST)` in a log line, or nothing where the destination is not
/// known (transparent mode: the backend reads the client's request).
struct For<'a>(&'a Address);

impl fmt::Display for For<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self.0 == Address::UNSPECIFIED {
            Ok(())
        } else {
            write!(f, " (for {})", self.0)
        }
    }
}

/// Opens an upstream stream to `dest` for the client at `ip`, with
/// failover. `first`, already counted in `attempts`, is tried before any
/// other (transparent mode hands over a `direct` backend it picked).
pub(crate) async fn connect(
    snap: &Snapshot,
    ip: IpAddr,
    dest: &Address,
    mut attempts: Attempts,
    mut first: Option<usize>,
) -> Result<Established, ConnectError> {
    if let Some(rule) = denied_destination(snap, dest) {
        return Err(ConnectError::Denied { destination: dest.to_string(), rule });
    }
    if let Err(rule) = attempts.decide(snap, ip, Some(dest)) {
        log::debug!("client {ip}: {dest} blocked by rules[{rule}]");
        return Err(ConnectError::Blocked { destination: dest.to_string(), rule });
    }
    let who = Client { ip, destination: dest };
    while let Some(i) = first.take().or_else(|| attempts.next(snap, who, |_| false)) {
        let active = ActiveGuard::new(&snap.pool.backends()[i].stats);
        let start = Instant::now();
        // From this host, a sniffed name goes where the client dialled.
        let local = snap.pool.backends()[i].config.target.is_local();
        let dialled = attempts.dialled.filter(|_| local).map(Address::Ip);
        match open_upstream(snap, i, dialled.as_ref().unwrap_or(dest)).await {
            Ok((upstream, bound, early_down)) => {
                let took = start.elapsed();
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(took)));
                snap.pool.learn(i, dest, Outcome::Worked(took));
                return Ok(Established {
                    upstream,
                    backend: i,
                    active,
                    bound,
                    early_down,
                    judge_first_byte: judges_first_byte(snap, i, dest),
                });
            }
            Err(e) => attempts.failed(snap, i, dest, e),
        }
    }
    Err(ConnectError::Upstream(attempts.into_error(ip, dest)))
}

/// The `deny_destinations` rule a request breaks, if any. Names other
/// than `localhost` cannot be checked before the backend resolves them;
/// `direct` backends check the addresses they resolve (open_upstream).
pub(crate) fn denied_destination(snap: &Snapshot, dest: &Address) -> Option<String> {
    let config = &snap.config;
    match dest {
        Address::Ip(addr) => config.denied(*addr).map(|rule| rule.to_string()),
        Address::Domain(name, port) => {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let name = name.trim_end_matches('.');
            if name == "localhost" || name.ends_with(".localhost") {
                let loopback = [
                    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), *port),
                    SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), *port),
                ];
                loopback.into_iter().find_map(|a| config.denied(a)).map(|rule| rule.to_string())
            } else {
                None
            }
        }
    }
}

/// Whether a tunnel through backend `i` to `dest` gets the first-byte
/// check: a proxy backend (a `direct` one has no middleman to stall), the
/// check on, and not a plain-HTTP port.
pub(crate) fn judges_first_byte(snap: &Snapshot, i: usize, dest: &Address) -> bool {
    !snap.config.health.first_byte_timeout.is_zero()
        && matches!(snap.pool.backends()[i].config.target, Target::Proxy { .. })
        && !LONG_POLL_PORTS.contains(&dest.port())
}

/// Connects to `dest` through `backend`; returns the stream, the bound
/// address to report to the client, and any bytes the backend sent behind
/// its reply (for the client).
async fn open_upstream(
    snap: &Snapshot,
    index: usize,
    dest: &Address,
) -> Result<(Async<TcpStream>, Address, Vec<u8>), UpstreamError> {
    let backend = &snap.pool.backends()[index];
    let health = &snap.config.health;
    let uplink = match &backend.config.target {
        Target::Uplink(u) => Some(u),
        _ => None,
    };
    match &backend.config.target {
        Target::Direct | Target::Uplink(_) => {
            let config = &snap.config;
            let allowed = |addr: SocketAddr| config.denied(addr).is_none();
            // Through an uplink, a dead link must fail over within one
            // connect timeout; a direct connect may wait for a slow host.
            let timeout = if uplink.is_some() { health.connect_timeout } else { health.request_timeout };
            let stream = upstream::connect_direct(dest, timeout, &allowed, uplink).await?;
            let (local, peer) = (stream.get_ref().local_addr(), stream.get_ref().peer_addr());
            if let (Ok(local), Ok(peer)) = (&local, &peer) {
                // Connected to one of this host's own addresses, on one of
                // our own ports: a loop through 0.0.0.0 that the address
                // rules could not see (the LAN address, say).
                let own_port = config
                    .listen
                    .iter()
                    .chain(config.web.enabled.then_some(&config.web.listen))
                    .any(|a| a.port() == peer.port());
                if local.ip() == peer.ip() && own_port {
                    return Err(UpstreamError::NotAllowed);
                }
            }
            let bound = local.map_or(Address::UNSPECIFIED, Address::Ip);
            Ok((stream, bound, Vec::new()))
        }
        Target::Proxy { host, port } => {
            let via = snap.pool.uplink_of(index);
            let credentials = backend.config.credentials.as_ref();
            let greeting = upstream::greeting(credentials);
            let stream =
                upstream::connect_backend(host, *port, health.connect_timeout, via, greeting).await?;
            let (bound, early) = upstream::socks5_connect(
                &stream,
                credentials,
                dest,
                health.connect_timeout,
                health.request_timeout,
            )
            .await?;
            Ok((stream, bound, early))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Attempts, UpstreamError};
    use std::io;

    fn attempts(destination_failures: u32) -> Attempts {
        Attempts {
            tried: heapless::Vec::new(),
            counted: 0,
            max: 3,
            panicked: false,
            deadline: std::time::Instant::now(),
            destination_failures,
            last: None,
            route: crate::balancer::Route::Group(0),
            listener: None,
            dialled: None,
        }
    }

    #[test]
    fn retry_policy() {
        // Regression: operator precedence let NotAllowed through the
        // "one more backend for a destination failure" arm.
        assert!(!attempts(0).worth_retrying(&UpstreamError::NotAllowed));
        assert!(!attempts(1).worth_retrying(&UpstreamError::NotAllowed));
        let refused = || UpstreamError::BackendUnreachable(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(attempts(5).worth_retrying(&refused()), "backend failures always retry");
        assert!(attempts(5).worth_retrying(&UpstreamError::MethodMismatch(0xFF)));
        assert!(
            attempts(1).worth_retrying(&UpstreamError::BackendReply(0x05)),
            "one more after a destination failure"
        );
        assert!(!attempts(2).worth_retrying(&UpstreamError::BackendReply(0x05)), "but not two");
    }
}
