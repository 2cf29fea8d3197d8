//! Outbound connections: to a backend proxy, through it with our own
//! SOCKS5 handshake (socks5 mode), or straight to the destination
//! (`direct` backends).
//!
//! Failures are kept apart by who is to blame, because the health layer
//! must count a dead backend against that backend but not a destination
//! that refused: [`UpstreamError::blames_backend`].

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::{Async, Timer};

use crate::config::{Credentials, Host, Uplink};
use crate::socks5::{self, Address, ReplyCode};
use crate::tcp::{self, FirstWord};

/// Runs `fut` until `deadline`; past it, fails with `TimedOut`.
pub async fn until<T, E: From<io::Error>>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    fut.or(async {
        Timer::at(deadline).await;
        Err(io::Error::from(io::ErrorKind::TimedOut).into())
    })
    .await
}

/// Why an outbound connection failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The backend could not be reached: refused, unreachable, timed out.
    BackendUnreachable(io::Error),
    /// The backend answered, but not with valid SOCKS5, or closed mid-way.
    BackendProtocol(socks5::Error),
    /// The backend accepted none of the methods we offered.
    BackendNoMethod,
    /// Transparent mode: the backend chose an auth method the client did
    /// not offer. A broken or misconfigured backend; another is tried.
    BackendUnofferedMethod(u8),
    /// The backend rejected our username and password.
    BackendAuthFailed,
    /// The backend answered the CONNECT with a failure code.
    BackendReply(u8),
    /// A direct connect to the destination failed.
    Destination(io::Error),
    /// An uplink cannot carry traffic: no route, link down, its address
    /// gone, or (connecting to a destination through it) a timeout.
    Uplink(io::Error),
    /// The destination's name could not be resolved.
    Resolve(io::Error),
    /// Transparent mode: the backend accepts none of the client's methods,
    /// or not the one another backend already agreed with the client. A
    /// mismatch of settings, not a sign of ill health.
    MethodMismatch(u8),
    /// No backend could be tried at all.
    NoBackend,
    /// The destination is one `deny_destinations` forbids (found once its
    /// name was resolved), or this daemon itself.
    NotAllowed,
}

impl UpstreamError {
    /// The reply code the client gets.
    pub fn reply(&self) -> ReplyCode {
        match self {
            UpstreamError::BackendReply(code) => ReplyCode(*code),
            UpstreamError::Destination(e) | UpstreamError::Uplink(e) => ReplyCode::from_io(e),
            UpstreamError::Resolve(_) => ReplyCode::HOST_UNREACHABLE,
            UpstreamError::NotAllowed => ReplyCode::NOT_ALLOWED,
            // The client asked for a destination; the hop in between
            // failing is a server failure, not the destination's refusal.
            _ => ReplyCode::GENERAL_FAILURE,
        }
    }

    /// Whether the failure says something about the backend's health. A
    /// backend that relays "host unreachable" or "connection refused" from
    /// the destination is working fine.
    pub fn blames_backend(&self) -> bool {
        match self {
            UpstreamError::BackendUnreachable(_)
            | UpstreamError::BackendProtocol(_)
            | UpstreamError::BackendNoMethod
            | UpstreamError::BackendUnofferedMethod(_)
            | UpstreamError::BackendAuthFailed
            | UpstreamError::Uplink(_) => true,
            UpstreamError::BackendReply(code) => !matches!(
                *code,
                c if c == ReplyCode::NETWORK_UNREACHABLE.0
                    || c == ReplyCode::HOST_UNREACHABLE.0
                    || c == ReplyCode::CONNECTION_REFUSED.0
                    || c == ReplyCode::TTL_EXPIRED.0
            ),
            UpstreamError::Destination(_)
            | UpstreamError::Resolve(_)
            | UpstreamError::MethodMismatch(_)
            | UpstreamError::NoBackend
            | UpstreamError::NotAllowed => false,
        }
    }

    /// Whether the failure came at once and says all there is to say:
    /// nobody listens on the backend's port. Such a failure opens the
    /// backend's circuit at once, and costs a client no attempt from its
    /// `max_attempts` budget.
    pub fn conclusive(&self) -> bool {
        matches!(self, UpstreamError::BackendUnreachable(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// The limit that applied ran out.
    pub fn timed_out(&self) -> bool {
        match self {
            UpstreamError::BackendUnreachable(e)
            | UpstreamError::Uplink(e)
            | UpstreamError::Destination(e) => e.kind() == io::ErrorKind::TimedOut,
            UpstreamError::BackendProtocol(socks5::Error::Io(e)) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// The reason in a few words, for the dashboard and the API:
    /// "connection refused", "timed out after 5s", "SOCKS reply 0x01".
    pub fn brief(&self, timeout: Duration) -> String {
        let io_brief = |e: &io::Error| match e.kind() {
            io::ErrorKind::TimedOut => format!("timed out after {}", crate::config::human(timeout)),
            io::ErrorKind::ConnectionRefused => "connection refused".into(),
            io::ErrorKind::ConnectionReset => "connection reset".into(),
            io::ErrorKind::UnexpectedEof => "closed the connection".into(),
            _ => match e.raw_os_error() {
                Some(_) => e.to_string().split(" (os error").next().unwrap_or_default().to_ascii_lowercase(),
                None => e.to_string(),
            },
        };
        match self {
            UpstreamError::BackendUnreachable(e)
            | UpstreamError::Uplink(e)
            | UpstreamError::Destination(e) => io_brief(e),
            UpstreamError::BackendProtocol(socks5::Error::Io(e)) => io_brief(e),
            UpstreamError::BackendProtocol(e) => format!("not SOCKS5: {e}"),
            UpstreamError::BackendNoMethod => "accepted none of our auth methods".into(),
            UpstreamError::BackendUnofferedMethod(m) => format!("chose auth method {m:#04x}, not offered"),
            UpstreamError::BackendAuthFailed => "rejected our credentials".into(),
            UpstreamError::BackendReply(c) => format!("SOCKS reply {c:#04x}"),
            e => e.to_string(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::BackendUnreachable(e) => write!(f, "backend unreachable: {e}"),
            UpstreamError::BackendProtocol(e) => write!(f, "backend handshake failed: {e}"),
            UpstreamError::BackendNoMethod => f.write_str("backend accepted none of our auth methods"),
            UpstreamError::BackendUnofferedMethod(m) => {
                write!(f, "backend chose auth method {m:#04x}, which the client did not offer")
            }
            UpstreamError::BackendAuthFailed => f.write_str("backend rejected our credentials"),
            UpstreamError::BackendReply(c) => {
                write!(f, "backend replied {c:#04x} ({})", ReplyCode::describe(*c))
            }
            UpstreamError::Destination(e) => write!(f, "destination: {e}"),
            UpstreamError::Uplink(e) => write!(f, "uplink: {e}"),
            UpstreamError::Resolve(e) => write!(f, "cannot resolve destination: {e}"),
            UpstreamError::MethodMismatch(m) => {
                write!(f, "backend chose auth method {m:#04x}, which does not fit this client")
            }
            UpstreamError::NoBackend => f.write_str("no backend available"),
            UpstreamError::NotAllowed => f.write_str("destination refused by deny_destinations"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::BackendUnreachable(e)
            | UpstreamError::Destination(e)
            | UpstreamError::Uplink(e)
            | UpstreamError::Resolve(e) => Some(e),
            _ => None,
        }
    }
}

/// Resolves a host name with the system resolver, off the executor
/// threads (`getaddrinfo` blocks).
async fn resolve(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs = smol::net::resolve((name, port)).await?;
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{name} has no addresses")));
    }
    Ok(addrs)
}

/// RFC 8305's "connection attempt delay": how long one address gets to
/// answer before the next is tried alongside it.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Orders addresses for happy eyeballs: the resolver's first family first,
/// then alternating families, each family in resolver order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(|a| a.is_ipv6());
    let (mut first, mut second): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    first.reverse();
    second.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !first.is_empty() || !second.is_empty() {
        out.extend(first.pop());
        out.extend(second.pop());
    }
    out
}

async fn connect_one(
    addr: SocketAddr,
    uplink: Option<&Uplink>,
    first: FirstWord<'_>,
) -> io::Result<Async<TcpStream>> {
    match uplink {
        Some(u) => crate::uplink::connect(u, addr, first).await,
        None => tcp::connect(tcp::socket(addr)?, addr, first).await,
    }
}

/// Connects to one of `addrs` (through `uplink`, if given), happy-eyeballs
/// style: addresses of both families in turn, each next one started
/// [`ATTEMPT_DELAY`] after the previous or as soon as it fails; the first
/// to connect wins and the others are dropped. All within `deadline`.
///
/// When every attempt fails, the error kept is the most telling: one from
/// the destination (refused, say) over one that only says this path lacks
/// a route, e.g. IPv6 on a link that has only IPv4. `first` says who
/// speaks first on the connection ([`tcp`]'s delayed ACKs).
async fn connect_any(
    addrs: &[SocketAddr],
    uplink: Option<&Uplink>,
    first: FirstWord<'_>,
    deadline: Instant,
) -> io::Result<Async<TcpStream>> {
    type Attempt<'a> = Pin<Box<dyn Future<Output = io::Result<Async<TcpStream>>> + Send + 'a>>;
    if let [addr] = addrs {
        // Nothing to race (a backend or destination given as an IP): the
        // same outcome without the race's allocations.
        return until(deadline, connect_one(*addr, uplink, first)).await;
    }
    let order = interleave(addrs);
    let mut pending: Vec<Attempt<'_>> = Vec::new();
    let mut next = 0;
    let mut timer = Timer::never();
    let mut last: Option<io::Error> = None;
    let race = std::future::poll_fn(|cx| loop {
        let start_next =
            next < order.len() && (pending.is_empty() || Pin::new(&mut timer).poll(cx).is_ready());
        if start_next {
            pending.push(Box::pin(connect_one(order[next], uplink, first)));
            next += 1;
            timer.set_after(ATTEMPT_DELAY);
            continue;
        }
        let mut failed = false;
        let mut i = 0;
        while i < pending.len() {
            match pending[i].as_mut().poll(cx) {
                Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                Poll::Ready(Err(e)) => {
                    drop(pending.swap_remove(i));
                    if last.as_ref().is_none_or(crate::uplink::link_failure) {
                        last = Some(e);
                    }
                    failed = true;
                }
                Poll::Pending => i += 1,
            }
        }
        if pending.is_empty() && next >= order.len() {
            let e = last.take();
            return Poll::Ready(Err(
                e.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses to connect to"))
            ));
        }
        if failed && next < order.len() {
            // A failure hands its turn to the next address at once.
            timer.set_after(Duration::ZERO);
            continue;
        }
        if next < order.len() {
            // Register the timer's waker for the next head start.
            if Pin::new(&mut timer).poll(cx).is_ready() {
                continue;
            }
        }
        return Poll::Pending;
    });
    until(deadline, race).await
}

/// Opens a TCP connection to a backend proxy, through `via` if it is
/// pinned to an uplink, and sends it `greeting` (our [`greeting`], or a
/// client's): a backend that cannot take it is as unreachable as one that
/// refused ([`tcp::connect`] learns the connect's outcome from that send).
/// A failure of the uplink itself (no route, link down) is
/// [`UpstreamError::Uplink`]: the proxy is not to blame.
pub async fn connect_backend(
    host: &Host,
    port: u16,
    timeout: Duration,
    via: Option<&Uplink>,
    greeting: &[u8],
) -> Result<Async<TcpStream>, UpstreamError> {
    let deadline = Instant::now() + timeout;
    let (one, resolved);
    let addrs: &[SocketAddr] = match host {
        Host::Ip(ip) => {
            one = [SocketAddr::new(*ip, port)];
            &one
        }
        Host::Name(name) => {
            resolved =
                until(deadline, resolve(name, port)).await.map_err(UpstreamError::BackendUnreachable)?;
            &resolved
        }
    };
    connect_any(addrs, via, FirstWord::Ours(greeting), deadline).await.map_err(|e| match via {
        Some(_) if crate::uplink::link_failure(&e) => UpstreamError::Uplink(e),
        _ => UpstreamError::BackendUnreachable(e),
    })
}

/// Connects straight to the destination, resolving a name ourselves with
/// the system resolver, to a resolved address `allowed` accepts; through
/// `uplink` when given. For an uplink, a link failure or a timeout is
/// [`UpstreamError::Uplink`] (the link is to blame; its probe will tell
/// if it was only this destination), a refusal is the destination's.
pub async fn connect_direct(
    dest: &Address,
    timeout: Duration,
    allowed: &(dyn Fn(SocketAddr) -> bool + Sync),
    uplink: Option<&Uplink>,
) -> Result<Async<TcpStream>, UpstreamError> {
    let deadline = Instant::now() + timeout;
    let mut addrs = match dest {
        Address::Ip(addr) => vec![*addr],
        Address::Domain(name, port) => {
            let name = std::str::from_utf8(name).map_err(|_| {
                UpstreamError::Resolve(io::Error::new(io::ErrorKind::InvalidInput, "domain is not UTF-8"))
            })?;
            until(deadline, resolve(name, *port)).await.map_err(UpstreamError::Resolve)?
        }
    };
    addrs.retain(|a| allowed(*a));
    if addrs.is_empty() {
        return Err(UpstreamError::NotAllowed);
    }
    // A source address of one family cannot reach the other.
    if let Some(ip) = uplink.and_then(|u| u.bind) {
        addrs.retain(|a| a.is_ipv4() == ip.is_ipv4());
    }
    connect_any(&addrs, uplink, FirstWord::Theirs, deadline).await.map_err(|e| match uplink {
        Some(_) if crate::uplink::link_failure(&e) || e.kind() == io::ErrorKind::TimedOut => {
            UpstreamError::Uplink(e)
        }
        _ => UpstreamError::Destination(e),
    })
}

/// Our SOCKS5 client handshake with a backend: greeting, optional
/// RFC 1929 login, CONNECT. Returns the backend's bound address and any
/// bytes it sent behind its reply (the destination's first words, for the
/// client).
///
/// The greeting and login must finish within `connect_timeout`; the
/// CONNECT reply, which waits on the backend's own connect to the
/// destination, within `request_timeout`.
pub async fn socks5_connect(
    stream: &Async<TcpStream>,
    credentials: Option<&Credentials>,
    dest: &Address,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<(Address, Vec<u8>), UpstreamError> {
    socks5_request(stream, credentials, socks5::Command::Connect, dest, connect_timeout, request_timeout)
        .await
}

/// The greeting our SOCKS5 handshake with a backend opens with: the one
/// method we can use, a login with `credentials`, else none. It goes to
/// [`connect_backend`], which sends it as the connection comes up.
pub fn greeting(credentials: Option<&Credentials>) -> &'static [u8] {
    match credentials {
        Some(_) => &[socks5::VERSION, 1, socks5::METHOD_USER_PASS],
        None => &[socks5::VERSION, 1, socks5::METHOD_NO_AUTH],
    }
}

/// Our SOCKS5 handshake with a backend for `command` (CONNECT to a
/// destination, or UDP ASSOCIATE from an address), on a connection that
/// [`connect_backend`] opened with our [`greeting`] for `credentials`:
/// the method choice, login, request; returns the bound address and what
/// the backend sent behind its reply.
pub async fn socks5_request(
    stream: &Async<TcpStream>,
    credentials: Option<&Credentials>,
    command: socks5::Command,
    dest: &Address,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<(Address, Vec<u8>), UpstreamError> {
    let mut s = stream;
    let mut reader = socks5::Buffered::new(stream);
    // A backend that stops answering mid-handshake is as unreachable as
    // one that never answered; other bad bytes are protocol failures.
    let fail = |e: socks5::Error| match e {
        socks5::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => UpstreamError::BackendUnreachable(e),
        other => UpstreamError::BackendProtocol(other),
    };
    let deadline = Instant::now() + connect_timeout;
    let method = match credentials {
        Some(_) => socks5::METHOD_USER_PASS,
        None => socks5::METHOD_NO_AUTH,
    };
    let chosen = until(deadline, socks5::read_method_choice(&mut reader)).await.map_err(fail)?;
    if chosen != method {
        return Err(UpstreamError::BackendNoMethod);
    }
    if let Some(c) = credentials {
        let status = until(deadline, async {
            socks5::write_user_pass(&mut s, c.username.as_bytes(), c.password.expose().as_bytes()).await?;
            socks5::read_auth_status(&mut reader).await
        })
        .await
        .map_err(fail)?;
        if status != 0 {
            return Err(UpstreamError::BackendAuthFailed);
        }
    }
    let reply = until(Instant::now() + request_timeout, async {
        match command {
            socks5::Command::UdpAssociate => socks5::write_udp_associate(&mut s, dest).await?,
            _ => socks5::write_connect(&mut s, dest).await?,
        }
        socks5::read_reply(&mut reader).await
    })
    .await
    .map_err(fail)?;
    if reply.code != ReplyCode::SUCCEEDED.0 {
        return Err(UpstreamError::BackendReply(reply.code));
    }
    Ok((reply.bound, reader.into_leftover()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_failures_do_not_blame_the_backend() {
        for code in [3u8, 4, 5, 6] {
            assert!(!UpstreamError::BackendReply(code).blames_backend(), "{code}");
            assert_eq!(UpstreamError::BackendReply(code).reply(), ReplyCode(code));
        }
        assert!(UpstreamError::BackendReply(1).blames_backend());
        assert!(UpstreamError::BackendAuthFailed.blames_backend());
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(UpstreamError::BackendUnreachable(refused).blames_backend());
        assert!(!UpstreamError::MethodMismatch(0xFF).blames_backend());
    }

    #[test]
    fn happy_eyeballs_alternates_families_from_the_resolvers_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let resolved = [a("[::1]:1"), a("[::2]:1"), a("10.0.0.1:1"), a("[::3]:1"), a("10.0.0.2:1")];
        let order: Vec<String> = interleave(&resolved).iter().map(|x| x.to_string()).collect();
        assert_eq!(order, ["[::1]:1", "10.0.0.1:1", "[::2]:1", "10.0.0.2:1", "[::3]:1"]);
        assert_eq!(interleave(&[a("10.0.0.1:1")]), [a("10.0.0.1:1")]);
        assert!(interleave(&[]).is_empty());
    }

    /// A listening socket whose accept queue is full: Linux drops
    /// further SYNs, so a connect to it hangs like one into a black hole.
    #[cfg(target_os = "linux")]
    fn black_hole() -> (SocketAddr, rustix::fd::OwnedFd, TcpStream) {
        use rustix::net::{AddressFamily, SocketType};
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        rustix::net::listen(&fd, 0).unwrap();
        let addr = match rustix::net::getsockname(&fd).unwrap().try_into() {
            Ok(std::net::SocketAddr::V4(v4)) => SocketAddr::V4(v4),
            other => panic!("not IPv4: {other:?}"),
        };
        // Backlog 0 admits one connection; it is never accepted.
        let filler = TcpStream::connect(addr).unwrap();
        (addr, fd, filler)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_silent_address_does_not_hold_up_the_next_one() {
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good_addr = good.local_addr().unwrap();
        let (hole, _fd, _filler) = black_hole();
        // The deadline is far beyond the head start: only the race can
        // make the second address win before it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = smol::block_on(connect_any(&[hole, good_addr], None, FirstWord::Theirs, deadline))
            .expect("connects");
        assert_eq!(stream.get_ref().peer_addr().unwrap(), good_addr);
        // And alone, the hole times out at the deadline rather than failing.
        let deadline = Instant::now() + ATTEMPT_DELAY * 2;
        let e = smol::block_on(connect_any(&[hole], None, FirstWord::Theirs, deadline)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_refusal_beats_a_link_failure_as_the_reported_error() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        // Through an uplink bound to 127.0.0.1, the IPv6 address fails as
        // a link failure (no source address of that family); the IPv4 one
        // is refused by the destination. Whichever fails last, the client
        // hears about the refusal.
        let uplink = Uplink { interface: None, bind: Some("127.0.0.1".parse().unwrap()) };
        let v6 = SocketAddr::new("::1".parse().unwrap(), closed.port());
        for addrs in [[v6, closed], [closed, v6]] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let e =
                smol::block_on(connect_any(&addrs, Some(&uplink), FirstWord::Theirs, deadline)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{addrs:?}: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = smol::block_on(connect_any(&[v6], Some(&uplink), FirstWord::Theirs, deadline)).unwrap_err();
        assert!(crate::uplink::link_failure(&e), "{e}");
    }

    #[test]
    fn an_unreachable_backend_is_a_general_failure_for_the_client() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(UpstreamError::BackendUnreachable(refused).reply(), ReplyCode::GENERAL_FAILURE);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(UpstreamError::Destination(refused).reply(), ReplyCode::CONNECTION_REFUSED);
    }
}
