//! One client connection, from the first byte to the end of its tunnel.
//!
//! Two ways to serve a client, chosen by `mode`:
//!
//! - **socks5**: we end the client's SOCKS5 here (method choice, RFC 1929
//!   login, request), pick a backend, speak SOCKS5 to it ourselves with its
//!   own credentials, and answer the client with the backend's reply.
//! - **transparent**: we pick a backend and pass the client's bytes to it
//!   untouched; the backend answers the client. We still read the
//!   handshake through a [`Recorder`] to learn where each message ends.
//!
//! **Failover.** A backend that fails before the tunnel is up is replaced
//! by another, up to `balancer.max_attempts` backends in all, before the
//! client hears of it. In transparent mode the recorded greeting, login and
//! request are replayed to the next backend, whose answers to what the
//! client was already told are checked and swallowed. Failures the backend
//! is to blame for (refused, unreachable, timeout, broken handshake,
//! rejected login) count against it; a destination failure it merely
//! reports (reply 0x03–0x06) does not, and is retried on one more backend
//! at most.
//!
//! `direct` backends are always served the socks5 way: there is no
//! upstream proxy to do the talking.
//!
//! The command dispatch in [`socks5_session`] is where UDP ASSOCIATE will
//! plug in; until then it gets "command not supported".

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use smol::io::AsyncWriteExt;
use smol::Async;

use crate::balancer::{Client, Via};
use crate::config::{constant_time_eq, Mode, Target};
use crate::health::{Source, Verdict};
use crate::relay;
use crate::server::Snapshot;
use crate::socks5::{self, Address, Command, Greeting, Recorder, ReplyCode, Request};
use crate::stats::{ActiveGuard, Counter};
use crate::upstream::{self, until, UpstreamError};

/// Why a session ended early; logged at debug level by [`serve`].
type Failure = String;

/// The client's side of the handshake, read ahead (see
/// [`socks5::Buffered`]); what it holds past the handshake goes upstream
/// before the relay starts.
type ClientReader<'a> = socks5::Buffered<&'a Async<TcpStream>>;

/// Most attempts per connection (`balancer.max_attempts` is capped to it).
const MAX_ATTEMPTS: usize = 16;

/// Most backends tried for one connection, counting those that failed
/// conclusively at once (refused), which cost no attempt.
const MAX_TRIED: usize = 64;

/// Serves one accepted client until its tunnel closes.
pub async fn serve(snap: Arc<Snapshot>, client: Async<TcpStream>, peer: SocketAddr) {
    let _ = client.get_ref().set_nodelay(true);
    let deadline = Instant::now() + snap.config.limits.handshake_timeout;
    // The handshake runs boxed: its state (read-ahead buffers, parsed
    // messages, connect attempts, timers: 3.8 KB in socks5 mode, 4.5 KB
    // in transparent) is on the heap only while it runs, and the task,
    // which lives as long as the tunnel, is sized for the relay
    // (docs/performance.md, "Memory per idle tunnel").
    let mut ready = match snap.config.mode {
        Mode::Socks5 => Box::pin(socks5_session(&snap, &client, peer.ip(), deadline)).await,
        Mode::Transparent => Box::pin(transparent_session(&snap, &client, peer.ip(), deadline)).await,
    };
    // By reference: the tunnel's state is in the task once, not also
    // moved into the relay's future.
    match &mut ready {
        Ok(ready) => tunnel(&snap, &client, ready).await,
        Err(why) => log::debug!("client {peer}: {why}"),
    }
}

/// A tunnel ready to relay: what a successful handshake hands on.
struct Ready {
    upstream: Async<TcpStream>,
    /// The backend's index in the pool.
    backend: usize,
    /// Counts the tunnel among the backend's active connections.
    _active: ActiveGuard,
    /// The destination, for the debug line when the tunnel ends; kept only
    /// while debug logging is on (an `Address` is 272 bytes, as much as a
    /// fifth of an idle tunnel's memory).
    dest: Option<Box<Address>>,
    /// What either side sent behind its handshake, read ahead with it:
    /// client bytes for the upstream, upstream bytes for the client.
    early_up: Vec<u8>,
    early_down: Vec<u8>,
    /// Whether the first-byte check judges this tunnel (see
    /// `relay::FirstByte`).
    judge_first_byte: bool,
}

fn client_error(stage: &str, e: socks5::Error) -> Failure {
    match e {
        socks5::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("no complete {stage} within the handshake timeout")
        }
        e => format!("bad {stage}: {e}"),
    }
}

/// The backends tried for one client connection, and the retry budget.
///
/// A client gives up only when every eligible backend has failed for it,
/// when its handshake deadline passes, or when `max_attempts` backends
/// have failed in ways that cost time. A refused connection costs none
/// (it fails at once and opens that backend's circuit), so a port range
/// full of dead ports never uses up a client's budget. Panic mode (every
/// circuit open) gets one attempt, so that the client hears at once.
struct Attempts {
    tried: heapless::Vec<u32, MAX_TRIED>,
    /// Failed attempts that count against `max`.
    counted: usize,
    max: usize,
    panicked: bool,
    deadline: Instant,
    destination_failures: u32,
    last: Option<UpstreamError>,
}

impl Attempts {
    fn new(snap: &Snapshot, deadline: Instant) -> Self {
        let max = (snap.config.balancer.max_attempts.get() as usize).min(MAX_ATTEMPTS);
        Attempts {
            tried: heapless::Vec::new(),
            counted: 0,
            max,
            panicked: false,
            deadline,
            destination_failures: 0,
            last: None,
        }
    }

    /// The next backend to try, if the budget allows one.
    fn next(
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
        let pick = snap.pool.select(client, &|i| self.tried.contains(&(i as u32)) || also_skip(i))?;
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
    fn failed(&mut self, snap: &Snapshot, i: usize, dest: &Address, e: UpstreamError) {
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
            snap.pool.report(u, Source::Traffic, &e.verdict(timeout));
            snap.pool.report(i, Source::Traffic, &Verdict::Neutral);
            self.last = Some(e);
            return;
        }
        if e.blames_backend() {
            log::debug!("backend {}: {e}{}; trying another", backend.config.name, For(dest));
        } else {
            self.destination_failures += 1;
            log::debug!("backend {}: {e}{}", backend.config.name, For(dest));
        }
        snap.pool.report(i, Source::Traffic, &e.verdict(timeout));
        self.last = Some(e);
    }

    /// The error the client gets when every attempt failed. Giving up
    /// because no backend could serve is logged here, once, at info; a
    /// destination's own failure or a refused destination is the client's
    /// business and stays at debug.
    fn into_error(self, ip: IpAddr, dest: &Address) -> UpstreamError {
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

impl std::fmt::Display for For<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self.0 == Address::UNSPECIFIED {
            Ok(())
        } else {
            write!(f, " (for {})", self.0)
        }
    }
}

async fn socks5_session(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    ip: IpAddr,
    deadline: Instant,
) -> Result<Ready, Failure> {
    let mut reader = socks5::Buffered::new(client);
    let greeting =
        until(deadline, socks5::read_greeting(&mut reader)).await.map_err(|e| client_error("greeting", e))?;
    let request = negotiate(snap, client, &mut reader, &greeting, deadline).await?;
    open_tunnel(snap, client, ip, request, Attempts::new(snap, deadline), None, reader.into_leftover()).await
}

/// Ends the client's handshake here: method choice, login when `auth` is
/// configured, then the request.
async fn negotiate(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    greeting: &Greeting,
    deadline: Instant,
) -> Result<Request, Failure> {
    let mut c = client;
    let method = match snap.config.auth {
        Some(_) => socks5::METHOD_USER_PASS,
        None => socks5::METHOD_NO_AUTH,
    };
    if !greeting.offers(method) {
        let _ = socks5::write_method_choice(&mut c, socks5::METHOD_NONE_ACCEPTABLE).await;
        if method == socks5::METHOD_USER_PASS && once_a_minute(&NO_LOGIN_LOGGED) {
            // The usual cause is a browser: none can send a SOCKS5
            // username and password. Said at info, at most once a minute.
            log::info!(
                "client {}: refused, it offers no username/password login and `auth` is set \
                 (browsers cannot log in to a SOCKS5 proxy)",
                client.get_ref().peer_addr().map_or("?".into(), |a| a.ip().to_string())
            );
        }
        return Err(format!("client offers none of the methods we accept (we need {method:#04x})"));
    }
    socks5::write_method_choice(&mut c, method).await.map_err(|e| e.to_string())?;
    if let Some(users) = &snap.config.auth {
        let login =
            until(deadline, socks5::read_user_pass(reader)).await.map_err(|e| client_error("login", e))?;
        let accepted = users.iter().any(|u| {
            constant_time_eq(u.username.as_bytes(), &login.username) & u.password.matches(&login.password)
        });
        let status = if accepted { 0x00 } else { 0x01 };
        let _ = socks5::write_auth_status(&mut c, status).await;
        if !accepted {
            log::info!(
                "client {}: login failed for user {:?}",
                client.get_ref().peer_addr().map_or("?".into(), |a| a.to_string()),
                String::from_utf8_lossy(&login.username)
            );
            return Err("login failed".into());
        }
    }
    read_request(client, reader, deadline, None).await
}

/// When a client without a login was last logged (seconds since the Unix
/// epoch; a u32 lasts until 2106).
static NO_LOGIN_LOGGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether a line throttled by `last` is due, and if so, marks it logged.
fn once_a_minute(last: &std::sync::atomic::AtomicU32) -> bool {
    use std::sync::atomic::Ordering;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
    let before = last.load(Ordering::Relaxed);
    (before == 0 || now.wrapping_sub(before) >= 60)
        && last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Reads the client's request; on a malformed one, sends the reply the
/// protocol has for it before failing. With `copy`, keeps the raw bytes.
async fn read_request(
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    deadline: Instant,
    copy: Option<&mut Vec<u8>>,
) -> Result<Request, Failure> {
    let mut c = client;
    let result = match copy {
        Some(copy) => until(deadline, socks5::read_request(&mut Recorder::new(reader, copy))).await,
        None => until(deadline, socks5::read_request(reader)).await,
    };
    match result {
        Ok(request) => Ok(request),
        Err(e) => {
            if let Some(code) = e.reply() {
                let _ = socks5::write_reply(&mut c, code as u8, &Address::UNSPECIFIED).await;
            }
            Err(client_error("request", e))
        }
    }
}

/// Over a connection limit: a general-failure reply to whatever the client
/// asks, so it fails at once instead of waiting. The caller bounds the time.
pub async fn refuse_busy(client: &Async<TcpStream>) -> io::Result<()> {
    let mut c = client;
    let mut reader = socks5::Buffered::new(client);
    let greeting = socks5::read_greeting(&mut reader).await.map_err(|e| io::Error::other(e.to_string()))?;
    if !greeting.offers(socks5::METHOD_NO_AUTH) {
        return socks5::write_method_choice(&mut c, socks5::METHOD_NONE_ACCEPTABLE).await;
    }
    socks5::write_method_choice(&mut c, socks5::METHOD_NO_AUTH).await?;
    socks5::read_request(&mut reader).await.map_err(|e| io::Error::other(e.to_string()))?;
    socks5::write_reply(&mut c, ReplyCode::GeneralFailure as u8, &Address::UNSPECIFIED).await
}

/// The `deny_destinations` rule a request breaks, if any. Names other
/// than `localhost` cannot be checked before the backend resolves them;
/// `direct` backends check the addresses they resolve (open_upstream).
fn denied_destination(snap: &Snapshot, dest: &Address) -> Option<String> {
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

/// Sends a failure reply; returns why, to end the session with.
async fn refuse(client: &Async<TcpStream>, code: u8, why: impl Into<String>) -> Failure {
    let mut c = client;
    let _ = socks5::write_reply(&mut c, code, &Address::UNSPECIFIED).await;
    why.into()
}

/// Ends the client's request here: opens an upstream for it (with
/// failover) and answers the client. `first`, already counted in
/// `attempts`, is tried before any other. `early` is what the client sent
/// behind its request, for the destination.
async fn open_tunnel(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    ip: IpAddr,
    request: Request,
    mut attempts: Attempts,
    mut first: Option<usize>,
    early: Vec<u8>,
) -> Result<Ready, Failure> {
    match request.command {
        Command::Connect => {}
        Command::Bind | Command::UdpAssociate => {
            let why = format!("{:?} is not supported", request.command);
            return Err(refuse(client, ReplyCode::CommandNotSupported as u8, why).await);
        }
    }
    let dest = &request.address;
    if let Some(rule) = denied_destination(snap, dest) {
        let why = format!("CONNECT to {dest} refused by deny_destinations ({rule})");
        return Err(refuse(client, ReplyCode::NotAllowed as u8, why).await);
    }
    let who = Client { ip, destination: dest };
    while let Some(i) = first.take().or_else(|| attempts.next(snap, who, |_| false)) {
        let active = ActiveGuard::new(&snap.pool.backends()[i].stats);
        let start = Instant::now();
        match open_upstream(snap, i, dest).await {
            Ok((upstream, bound, early_down)) => {
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(start.elapsed())));
                let mut c = client;
                socks5::write_reply(&mut c, ReplyCode::Succeeded as u8, &bound)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Ready {
                    upstream,
                    backend: i,
                    _active: active,
                    dest: for_debug_log(dest),
                    early_up: early,
                    early_down,
                    judge_first_byte: judges_first_byte(snap, i, dest),
                });
            }
            Err(e) => attempts.failed(snap, i, dest, e),
        }
    }
    let e = attempts.into_error(ip, dest);
    Err(refuse(client, e.reply(), e.to_string()).await)
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
            let stream = upstream::connect_backend(host, *port, health.connect_timeout, via).await?;
            let (bound, early) = upstream::socks5_connect(
                &stream,
                backend.config.credentials.as_ref(),
                dest,
                health.connect_timeout,
                health.request_timeout,
            )
            .await?;
            Ok((stream, bound, early))
        }
    }
}

/// A copy of `dest` for [`Ready`], if debug lines are logged.
fn for_debug_log(dest: &Address) -> Option<Box<Address>> {
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

/// The relay stage, shared by both modes. What either side sent behind
/// its handshake goes first.
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

/// Plain-HTTP ports: a long poll there may hold its first answer back for
/// minutes, so the first-byte check leaves them alone.
const LONG_POLL_PORTS: [u16; 3] = [80, 8000, 8080];

/// Whether a tunnel through backend `i` to `dest` gets the first-byte
/// check: a proxy backend (a `direct` one has no middleman to stall), the
/// check on, and not a plain-HTTP port.
fn judges_first_byte(snap: &Snapshot, i: usize, dest: &Address) -> bool {
    !snap.config.health.first_byte_timeout.is_zero()
        && matches!(snap.pool.backends()[i].config.target, Target::Proxy { .. })
        && !LONG_POLL_PORTS.contains(&dest.port())
}

/// Transparent mode: what the client has sent (recorded) and what it has
/// been told, so that a second backend can be brought up to the same
/// point without the client noticing.
struct Conversation {
    greeting: Greeting,
    greeting_bytes: Vec<u8>,
    /// The method the client was told, once a backend chose one.
    method: Option<u8>,
    login: Option<Vec<u8>>,
    /// The client has been told its login's status.
    login_answered: bool,
    request: Option<(Request, Vec<u8>)>,
}

/// The destination before the client has named one.
static NOT_YET_KNOWN: Address = Address::UNSPECIFIED;

impl Conversation {
    /// The client's destination, once its request has been read.
    fn destination(&self) -> &Address {
        self.request.as_ref().map_or(&NOT_YET_KNOWN, |(r, _)| &r.address)
    }
}

/// How one transparent-mode attempt ended, short of a working tunnel.
enum Stop {
    /// The backend failed; another may be tried.
    Backend(UpstreamError),
    /// The session is over (the client misbehaved, went away, or was
    /// refused by the backend with the protocol's own answer).
    Session(Failure),
}

/// What a successful transparent attempt hands to the relay.
struct Opened {
    upstream: Async<TcpStream>,
    /// The backend's reply to forward; `None` for methods we cannot frame
    /// (the bytes then flow blind from the method choice on).
    reply_bytes: Option<Vec<u8>>,
    /// What the backend sent behind that, read ahead with it.
    early_down: Vec<u8>,
}

async fn transparent_session(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    ip: IpAddr,
    deadline: Instant,
) -> Result<Ready, Failure> {
    let mut c = client;
    let mut reader = socks5::Buffered::new(client);
    let mut greeting_bytes = Vec::with_capacity(8);
    let greeting =
        until(deadline, socks5::read_greeting(&mut Recorder::new(&mut reader, &mut greeting_bytes)))
            .await
            .map_err(|e| client_error("greeting", e))?;
    let mut talk = Conversation {
        greeting,
        greeting_bytes,
        method: None,
        login: None,
        login_answered: false,
        request: None,
    };
    let mut attempts = Attempts::new(snap, deadline);
    loop {
        let answered = talk.method.is_some();
        let who = Client { ip, destination: talk.destination() };
        // Once a proxy has answered the client, only proxies can take over.
        let is_direct = |i: usize| snap.pool.backends()[i].config.target.is_local();
        let Some(i) = attempts.next(snap, who, |i| answered && is_direct(i)) else { break };
        let backend = &snap.pool.backends()[i];
        let Target::Proxy { host, port } = &backend.config.target else {
            // A direct backend has nobody upstream to do the talking: end
            // the handshake here (the client has not been answered yet).
            let request = negotiate(snap, client, &mut reader, &talk.greeting, deadline).await?;
            return open_tunnel(snap, client, ip, request, attempts, Some(i), reader.into_leftover()).await;
        };
        let active = ActiveGuard::new(&backend.stats);
        let start = Instant::now();
        let via = snap.pool.uplink_of(i);
        match transparent_attempt(snap, client, &mut reader, &mut talk, (host, *port, via), deadline).await {
            Ok(opened) => {
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(start.elapsed())));
                if let Some(reply) = &opened.reply_bytes {
                    c.write_all(reply).await.map_err(|e| e.to_string())?;
                }
                // Only a CONNECT has a destination that answers.
                let connect = talk.request.as_ref().is_some_and(|(r, _)| r.command == Command::Connect);
                return Ok(Ready {
                    upstream: opened.upstream,
                    backend: i,
                    _active: active,
                    dest: for_debug_log(talk.destination()),
                    early_up: reader.into_leftover(),
                    early_down: opened.early_down,
                    judge_first_byte: connect && judges_first_byte(snap, i, talk.destination()),
                });
            }
            Err(Stop::Session(why)) => return Err(why),
            Err(Stop::Backend(e)) => {
                attempts.failed(snap, i, talk.destination(), e);
            }
        }
    }
    let error = attempts.into_error(ip, talk.destination());
    Err(give_up(client, &mut reader, &mut talk, deadline, error).await)
}

/// One backend, brought to the point the client is at, then to the reply.
async fn transparent_attempt(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    talk: &mut Conversation,
    (host, port, via): (&crate::config::Host, u16, Option<&crate::config::Uplink>),
    deadline: Instant,
) -> Result<Opened, Stop> {
    let health = &snap.config.health;
    let mut c = client;
    let upstream =
        upstream::connect_backend(host, port, health.connect_timeout, via).await.map_err(Stop::Backend)?;
    let mut u = &upstream;
    let mut ur = socks5::Buffered::new(&upstream);
    let protocol = |e: socks5::Error| Stop::Backend(UpstreamError::BackendProtocol(e));
    let backend_deadline = Instant::now() + health.connect_timeout;

    let method = until(backend_deadline, async {
        u.write_all(&talk.greeting_bytes).await?;
        socks5::read_method_choice(&mut ur).await
    })
    .await
    .map_err(protocol)?;
    match talk.method {
        None if method == socks5::METHOD_NONE_ACCEPTABLE => {
            return Err(Stop::Backend(UpstreamError::MethodMismatch(method)));
        }
        // Regression: a backend answering 0x02 to a client that offered
        // only 0x00 was passed through, and the client's CONNECT was then
        // parsed as a login. Such a backend is broken, like one that
        // accepts none of our methods in socks5 mode: another is tried,
        // and it counts against this one.
        None if !talk.greeting.offers(method) => {
            return Err(Stop::Backend(UpstreamError::BackendUnofferedMethod(method)));
        }
        None => {
            c.write_all(&[socks5::VERSION, method]).await.map_err(|e| Stop::Session(e.to_string()))?;
            talk.method = Some(method);
        }
        Some(told) if told != method => return Err(Stop::Backend(UpstreamError::MethodMismatch(method))),
        Some(_) => {}
    }

    match method {
        socks5::METHOD_NO_AUTH => {}
        socks5::METHOD_USER_PASS => {
            if talk.login.is_none() {
                let mut login = Vec::with_capacity(64);
                until(deadline, socks5::read_user_pass(&mut Recorder::new(&mut *reader, &mut login)))
                    .await
                    .map_err(|e| Stop::Session(client_error("login", e)))?;
                talk.login = Some(login);
            }
            let login = talk.login.as_deref().unwrap_or_default();
            let status = until(backend_deadline, async {
                u.write_all(login).await?;
                socks5::read_auth_status(&mut ur).await
            })
            .await
            .map_err(protocol)?;
            if !talk.login_answered {
                c.write_all(&[socks5::AUTH_VERSION, status])
                    .await
                    .map_err(|e| Stop::Session(e.to_string()))?;
                talk.login_answered = true;
                if status != 0 {
                    return Err(Stop::Session("the backend rejected the client's login".into()));
                }
            } else if status != 0 {
                return Err(Stop::Backend(UpstreamError::BackendAuthFailed));
            }
        }
        _ => {
            // GSSAPI or a private method: its messages have no framing we
            // know, so from here on the bytes just flow (no failover).
            let early_down = ur.into_leftover();
            return Ok(Opened { upstream, reply_bytes: None, early_down });
        }
    }

    if talk.request.is_none() {
        let mut bytes = Vec::with_capacity(32);
        let request =
            read_request(client, reader, deadline, Some(&mut bytes)).await.map_err(Stop::Session)?;
        if let Some(rule) = denied_destination(snap, &request.address) {
            let why = format!("CONNECT to {} refused by deny_destinations ({rule})", request.address);
            let _ = socks5::write_reply(&mut c, ReplyCode::NotAllowed as u8, &Address::UNSPECIFIED).await;
            return Err(Stop::Session(why));
        }
        talk.request = Some((request, bytes));
    }
    let request_bytes = talk.request.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default();
    let mut reply_bytes = Vec::with_capacity(32);
    let reply = until(Instant::now() + health.request_timeout, async {
        u.write_all(request_bytes).await?;
        socks5::read_reply(&mut Recorder::new(&mut ur, &mut reply_bytes)).await
    })
    .await
    .map_err(protocol)?;
    if reply.code != ReplyCode::Succeeded as u8 {
        return Err(Stop::Backend(UpstreamError::BackendReply(reply.code)));
    }
    if talk.request.as_ref().is_some_and(|(r, _)| r.command != Command::Connect) {
        // BIND and UDP ASSOCIATE go to the backend as they came; after its
        // first reply everything is the backend's business.
        log::debug!("passing a non-CONNECT command through to the backend");
    }
    let early_down = ur.into_leftover();
    Ok(Opened { upstream, reply_bytes: Some(reply_bytes), early_down })
}

/// Transparent mode, when every attempt failed: finish the handshake
/// ourselves just far enough to give the client a SOCKS5 failure instead
/// of a bare close. Returns why the session ends.
async fn give_up(
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    talk: &mut Conversation,
    deadline: Instant,
    error: UpstreamError,
) -> Failure {
    let mut c = client;
    let why = error.to_string();
    match talk.method {
        None if matches!(error, UpstreamError::MethodMismatch(_))
            || !talk.greeting.offers(socks5::METHOD_NO_AUTH) =>
        {
            // "No acceptable methods" is the only refusal the protocol has
            // at this stage (answering a login we cannot check would be a
            // lie).
            let _ = socks5::write_method_choice(&mut c, socks5::METHOD_NONE_ACCEPTABLE).await;
            return why;
        }
        None => {
            let _ = socks5::write_method_choice(&mut c, socks5::METHOD_NO_AUTH).await;
        }
        Some(socks5::METHOD_USER_PASS) if !talk.login_answered => {
            // The client waits for its login's status, which no backend
            // gave; let it through to the request so that it hears the real
            // failure, as a reply code.
            let _ = socks5::write_auth_status(&mut c, 0x00).await;
        }
        Some(_) => {}
    }
    if talk.request.is_none() {
        if let Err(failure) = read_request(client, reader, deadline, None).await {
            return failure;
        }
    }
    refuse(client, error.reply(), why).await
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
/// The task of a tunnel lives as long as the tunnel: its size is most of
/// what an idle tunnel costs beyond its sockets (docs/performance.md,
/// "Memory per idle tunnel"). 1,160 bytes before the first-byte check,
/// 1,256 with it.
#[cfg(all(test, target_pointer_width = "64"))]
mod task_size {
    #[test]
    fn a_tunnels_task_stays_small() {
        let c = crate::Config::from_yaml("backends:\n  - direct: true\n").unwrap();
        let snap = std::sync::Arc::new(crate::server::Snapshot::new(c).unwrap());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let task = super::serve(snap, smol::Async::new(s).unwrap(), "127.0.0.1:1".parse().unwrap());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1_280, "the session task is {size} bytes");
    }
}
