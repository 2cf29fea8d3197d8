//! UDP ASSOCIATE (RFC 1928 §7) for SOCKS5 clients: one relay socket per
//! association, and datagrams relayed through a balanced backend.
//!
//! - The client's relay socket is bound on the address the client reached
//!   us at, and the reply names it. Only datagrams from the client's own
//!   IP are taken: from the port it declared, if it declared one, or else
//!   from the first port seen. A datagram with FRAG set, or a header that
//!   does not parse, is dropped and counted.
//! - A SOCKS5 backend gets our own UDP ASSOCIATE, with its credentials,
//!   over a TCP control connection that lives as long as the association
//!   does there. Datagrams go to the relay address it names (its own
//!   address when it names an unspecified one, as many do) and come back
//!   with their RFC 1928 header, which is the one the client reads: they
//!   pass through as they are, checked, not rebuilt.
//! - `direct` and uplink backends use sockets of their own, one per
//!   address family, pinned to the uplink as its TCP connections are.
//! - A backend that answers UDP ASSOCIATE with 0x07 (microsocks, Tor,
//!   `ssh -D`) is learned as TCP-only and skipped for UDP from then on; so
//!   is one configured `udp: false`.
//! - The association lives as long as the client's TCP connection, and
//!   ends after `limits.udp_idle_timeout` without a datagram either way.
//!   When its backend's control connection dies, it moves to another
//!   backend and keeps the client's relay socket: datagrams in between may
//!   be lost, as UDP allows, but the association does not end.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Instant;

use smol::future::FutureExt;
use smol::io::AsyncReadExt;
use smol::{Async, Timer};

use super::{Ended, Pending};
use crate::balancer::Client;
use crate::config::Target;
use crate::connect::Attempts;
use crate::context::Snapshot;
use crate::health::{Source, Verdict};
use crate::socks5::{self, Address, Command, ReplyCode};
use crate::stats::{ActiveGuard, DaemonStats, UdpDrop, UDP_REFUSED, UDP_WORKS};
use crate::upstream::{self, UpstreamError};

/// The largest datagram: what one IPv4 UDP packet carries.
pub(super) const MAX_DATAGRAM: usize = 65_507;

/// Room kept in front of a received datagram for the RFC 1928 header of
/// an IP address (at most 22 bytes), so that one can be put there.
const HEADROOM: usize = 22;

/// The upstream side of an association.
enum Leg {
    /// A SOCKS5 backend's UDP relay: our control connection to it, and our
    /// socket, connected to the relay address it named.
    Proxy { control: Async<TcpStream>, socket: Async<UdpSocket> },
    /// Sockets of our own (`direct`, uplinks), one per family, made when
    /// a datagram first needs one.
    Native { v4: Option<Async<UdpSocket>>, v6: Option<Async<UdpSocket>> },
}

/// The backend an association goes through now.
pub(super) struct Upstream {
    backend: usize,
    leg: Leg,
    _active: ActiveGuard,
}

/// What woke the association up.
pub(super) enum Event {
    Client,
    Upstream,
    ClientClosed,
    BackendClosed,
    Idle,
}

/// Serves a UDP ASSOCIATE from the client at `ip` (the client's request
/// is answered here) until the association ends; returns why it did.
pub(crate) async fn associate(
    snap: &Snapshot,
    stats: &DaemonStats,
    client: &Async<TcpStream>,
    ip: IpAddr,
    pending: Box<Pending>,
) -> Ended {
    // Datagrams come from the client's IPv4 address even when a dual-stack
    // listener shows it as ::ffff:a.b.c.d: compare with that.
    let ip = ip.to_canonical();
    // Only the declared port matters from here on (the IP must be the
    // client's own).
    let declared_port = match &pending.declared {
        Address::Ip(a) if a.port() != 0 => Some(a.port()),
        _ => None,
    };
    let limit = snap.config.limits.max_udp_associations.get() as usize;
    if !crate::stats::take_slot(&stats.udp_associations, limit) {
        log::debug!("client {ip}: UDP ASSOCIATE refused, limits.max_udp_associations ({limit}) reached");
        return super::socks5::refuse(
            client,
            ReplyCode::GENERAL_FAILURE,
            Ended::Unsupported(Command::UdpAssociate),
        )
        .await;
    }
    // The budget stays boxed: a future keeps its arguments for its life.
    let ended = serve(snap, stats, client, ip, declared_port, pending).await;
    stats.udp_associations.fetch_sub(1, Ordering::Relaxed);
    ended
}

async fn serve(
    snap: &Snapshot,
    stats: &DaemonStats,
    client: &Async<TcpStream>,
    ip: IpAddr,
    declared_port: Option<u16>,
    mut pending: Box<Pending>,
) -> Ended {
    // On the address the client reached us at, so that the reply names
    // one it can send to.
    let local = match client.get_ref().local_addr() {
        Ok(a) => a.ip().to_canonical(),
        Err(e) => return Ended::Io(e),
    };
    let relay = match UdpSocket::bind((local, 0)).and_then(Async::new) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("client {ip}: cannot bind a UDP relay socket on {local}: {e}");
            return Box::pin(super::socks5::refuse(client, ReplyCode::GENERAL_FAILURE, Ended::Io(e))).await;
        }
    };
    // Boxed here and below: opening holds a SOCKS5 handshake's buffers,
    // which the association, sized for its idle hours, should not.
    let opened = Box::pin(open(snap, ip, &mut pending.attempts)).await;
    drop(pending);
    let mut up = match opened {
        Ok(up) => up,
        Err(e) => {
            let code = e.reply();
            let why = Ended::Udp(format!("no backend for UDP: {e}"));
            return Box::pin(super::socks5::refuse(client, code, why)).await;
        }
    };
    let bound = relay.get_ref().local_addr().map_or(Address::UNSPECIFIED, Address::Ip);
    let mut c = client;
    // Boxed, as below: one-time work whose state the association need not
    // keep.
    if let Err(e) = Box::pin(socks5::write_reply(&mut c, ReplyCode::SUCCEEDED, &bound)).await {
        return Ended::Io(e);
    }
    // The client's address for datagrams: its IP always, and the port it
    // declared (0: the first one seen).
    let mut peer = declared_port.map(|port| SocketAddr::new(ip, port));
    let idle = snap.config.limits.udp_idle_timeout;
    let mut last = Instant::now();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let event = {
            let closed = closed(client, Event::ClientClosed);
            let from_client = async {
                let _ = relay.readable().await;
                Event::Client
            };
            let from_upstream = up.readable();
            let timer = async {
                Timer::at(last + idle).await;
                Event::Idle
            };
            closed.or(from_client).or(from_upstream).or(timer).await
        };
        match event {
            Event::ClientClosed => return Ended::Udp("the client closed its control connection".into()),
            Event::Idle => return Ended::Udp(format!("no datagram for {}", crate::config::human(idle))),
            Event::BackendClosed => {
                let name = &snap.pool.backends()[up.backend].config.name;
                log::debug!("client {ip}: UDP through {name}: the backend closed the association; moving");
                match Box::pin(up.replacement(snap, ip)).await {
                    Ok(next) => up = next,
                    Err(e) => {
                        return Ended::Udp(format!(
                            "the backend closed the association, and no other took it: {e}"
                        ))
                    }
                }
            }
            Event::Client => {
                last = Instant::now();
                let buf = take_buffer(&mut buf);
                while let Ok((n, from)) = relay.get_ref().recv_from(buf) {
                    if from.ip().to_canonical() != ip || peer.is_some_and(|p| p.port() != from.port()) {
                        up.dropped(snap, stats, UdpDrop::Foreign);
                        continue;
                    }
                    peer.get_or_insert(from);
                    if let Some((name, port, at)) = up.send(snap, stats, &buf[..n]) {
                        // Boxed: a lookup's state is large, and rare here.
                        let found = Box::pin(smol::net::resolve((name.as_str(), port))).await;
                        match found.ok().and_then(|a| a.first().copied()) {
                            Some(a) if snap.config.denied(a).is_none() => {
                                up.send_native(snap, stats, &buf[at..n], a)
                            }
                            _ => up.dropped(snap, stats, UdpDrop::Refused),
                        }
                    }
                }
            }
            Event::Upstream => {
                last = Instant::now();
                let buf = take_buffer(&mut buf);
                up.receive(snap, stats, buf, |datagram, _| {
                    if datagram.len() > MAX_DATAGRAM {
                        up.dropped(snap, stats, UdpDrop::Oversized);
                        return false;
                    }
                    peer.is_some_and(|peer| relay.get_ref().send_to(datagram, peer).is_ok())
                });
            }
        }
        // Freed while no datagram moves: an idle association costs no buffer.
        buf = Vec::new();
    }
}

/// The datagram buffer, allocated for a burst: room for a header, and for
/// one byte more than the largest datagram, so that a longer one shows.
pub(super) fn take_buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(HEADROOM + MAX_DATAGRAM + 1, 0);
    }
    buf
}

/// Resolves to `then` when `stream` is closed (or fails); what it sends
/// meanwhile is read and dropped: a control connection carries nothing.
async fn closed(mut stream: &Async<TcpStream>, then: Event) -> Event {
    let mut sink = [0u8; 64];
    while let Ok(1..) = stream.read(&mut sink).await {}
    then
}

fn closed_error() -> UpstreamError {
    UpstreamError::BackendUnreachable(io::ErrorKind::ConnectionReset.into())
}

/// [`open`] with a budget of its own (a handshake timeout), all on the
/// heap while it runs.
pub(super) async fn open_anew(snap: &Snapshot, ip: IpAddr) -> Result<Upstream, UpstreamError> {
    let mut attempts = Box::new(Attempts::new(snap, Instant::now() + snap.config.limits.handshake_timeout));
    Box::pin(async move { open(snap, ip, &mut attempts).await }).await
}

/// Opens the upstream side on the next backend that takes UDP, with the
/// failover of a CONNECT. A backend that refuses UDP ASSOCIATE is learned
/// as TCP-only and costs no attempt.
async fn open(snap: &Snapshot, ip: IpAddr, attempts: &mut Attempts) -> Result<Upstream, UpstreamError> {
    let who = Client { ip, destination: &Address::UNSPECIFIED };
    let usable = |i: usize| {
        let b = &snap.pool.backends()[i];
        b.config.udp && b.stats.udp.load(Ordering::Relaxed) != UDP_REFUSED
    };
    let health = &snap.config.health;
    // One association carries datagrams to many destinations: only rules
    // on the client and the listener can route it (docs/routing.md).
    if let Err(rule) = attempts.decide(snap, ip, None) {
        log::debug!("client {ip}: UDP association blocked by rules[{rule}]");
        return Err(UpstreamError::NotAllowed);
    }
    while let Some(i) = attempts.next(snap, who, |i| !usable(i)) {
        let backend = &snap.pool.backends()[i];
        let active = ActiveGuard::new(&backend.stats);
        let start = Instant::now();
        let leg = match &backend.config.target {
            Target::Direct | Target::Uplink(_) => Ok(Leg::Native { v4: None, v6: None }),
            Target::Proxy { host, port } => {
                let opened = async {
                    let credentials = backend.config.credentials.as_ref();
                    let control = upstream::connect_backend(
                        host,
                        *port,
                        health.connect_timeout,
                        snap.pool.uplink_of(i),
                        upstream::greeting(credentials),
                    )
                    .await?;
                    let (bound, _) = upstream::socks5_request(
                        &control,
                        credentials,
                        Command::UdpAssociate,
                        &Address::UNSPECIFIED,
                        health.connect_timeout,
                        health.request_timeout,
                    )
                    .await?;
                    let relay = relay_address(&control, &bound)?;
                    let socket = crate::uplink::udp_socket(None, relay.is_ipv6())
                        .and_then(|s| s.connect(relay).map(|()| s))
                        .and_then(Async::new)
                        .map_err(UpstreamError::BackendUnreachable)?;
                    Ok::<_, UpstreamError>(Leg::Proxy { control, socket })
                };
                opened.await
            }
        };
        match leg {
            Ok(leg) => {
                backend.stats.udp.store(UDP_WORKS, Ordering::Relaxed);
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(start.elapsed())));
                backend.stats.udp_open.fetch_add(1, Ordering::Relaxed);
                return Ok(Upstream { backend: i, leg, _active: active });
            }
            Err(UpstreamError::BackendReply(7)) => {
                if backend.stats.udp.swap(UDP_REFUSED, Ordering::Relaxed) != UDP_REFUSED {
                    log::info!(
                        "backend {}: refuses UDP ASSOCIATE (0x07); it serves TCP only",
                        backend.config.name
                    );
                }
                // It answered: its health is not in question.
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(start.elapsed())));
            }
            Err(e) => attempts.failed(snap, i, &Address::UNSPECIFIED, e),
        }
    }
    Err(std::mem::replace(attempts, Attempts::new(snap, Instant::now()))
        .into_error(ip, &Address::UNSPECIFIED))
}

/// Resolves when `socket`, if there is one, has a datagram.
async fn readable(socket: Option<&Async<UdpSocket>>) -> Event {
    match socket {
        Some(s) => {
            let _ = s.readable().await;
            Event::Upstream
        }
        None => smol::future::pending().await,
    }
}

/// Where a backend's relay listens: the address it named, or its own
/// address when it named an unspecified one (many do: redsocks#194).
fn relay_address(control: &Async<TcpStream>, bound: &Address) -> Result<SocketAddr, UpstreamError> {
    let peer = control.get_ref().peer_addr().map_err(UpstreamError::BackendUnreachable)?;
    match bound {
        Address::Ip(a) if a.ip().is_unspecified() => Ok(SocketAddr::new(peer.ip(), a.port())),
        Address::Ip(a) => Ok(*a),
        // A name for its relay: unusual; its own address is the best guess.
        Address::Domain(_, port) => Ok(SocketAddr::new(peer.ip(), *port)),
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The counter of open associations, kept with the backend's stats
        // by the guard's Arc.
        self._active.stats().udp_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Resolves when the upstream side has a datagram, or its control
    /// connection closed.
    pub(super) async fn readable(&self) -> Event {
        match &self.leg {
            Leg::Proxy { control, socket } => {
                let closed = closed(control, Event::BackendClosed);
                let data = async {
                    let _ = socket.readable().await;
                    Event::Upstream
                };
                closed.or(data).await
            }
            Leg::Native { v4, v6 } => readable(v4.as_ref()).or(readable(v6.as_ref())).await,
        }
    }

    /// Sends a client's datagram (header and data) on, at once: nothing
    /// here waits, so the association's future holds no state for it.
    /// A name to resolve first (a `direct` or uplink backend) is handed
    /// back instead, with where the data starts.
    fn send(
        &mut self,
        snap: &Snapshot,
        stats: &DaemonStats,
        datagram: &[u8],
    ) -> Option<(String, u16, usize)> {
        let (address, at) = match socks5::parse_udp_header(datagram) {
            Ok(parsed) => parsed,
            Err(socks5::UdpError::Fragment) => {
                self.dropped(snap, stats, UdpDrop::Fragment);
                return None;
            }
            Err(e) => {
                log::debug!(
                    "a client's datagram dropped: {e:?} ({:02x?})",
                    &datagram[..datagram.len().min(12)]
                );
                self.dropped(snap, stats, UdpDrop::Malformed);
                return None;
            }
        };
        if let Address::Ip(dest) = &address {
            if snap.config.denied(*dest).is_some() {
                self.dropped(snap, stats, UdpDrop::Refused);
                return None;
            }
        }
        match (&self.leg, address) {
            // The backend reads the same header.
            (Leg::Proxy { socket, .. }, _) => {
                if socket.get_ref().send(datagram).is_ok() {
                    self.count_up(snap, datagram.len() - at);
                }
                None
            }
            (Leg::Native { .. }, Address::Ip(dest)) => {
                self.send_native(snap, stats, &datagram[at..], dest);
                None
            }
            (Leg::Native { .. }, Address::Domain(name, port)) => {
                Some((String::from_utf8_lossy(&name).into_owned(), port, at))
            }
        }
    }

    /// Sends `data` to `dest` from our own socket of its family, made now
    /// if there is none yet.
    fn send_native(&mut self, snap: &Snapshot, stats: &DaemonStats, data: &[u8], dest: SocketAddr) {
        let backend = &snap.pool.backends()[self.backend];
        let Leg::Native { v4, v6 } = &mut self.leg else { return };
        let slot = if dest.is_ipv4() { v4 } else { v6 };
        if slot.is_none() {
            let uplink = match &backend.config.target {
                Target::Uplink(u) => Some(u),
                _ => None,
            };
            match crate::uplink::udp_socket(uplink, dest.is_ipv6()).and_then(Async::new) {
                Ok(s) => *slot = Some(s),
                Err(e) => {
                    log::debug!("backend {}: no UDP socket for {dest}: {e}", backend.config.name);
                    return self.dropped(snap, stats, UdpDrop::Refused);
                }
            }
        }
        if slot.as_ref().is_some_and(|s| s.get_ref().send_to(data, dest).is_ok()) {
            self.count_up(snap, data.len());
        }
    }

    /// Counts a dropped datagram of this association, for the daemon and
    /// for its backend.
    fn dropped(&self, snap: &Snapshot, stats: &DaemonStats, why: UdpDrop) {
        stats.udp_drop(why);
        snap.pool.backends()[self.backend].stats.udp_drops[why as usize].add(1);
    }

    fn count_up(&self, snap: &Snapshot, bytes: usize) {
        let stats = &snap.pool.backends()[self.backend].stats;
        stats.udp_datagrams_up.add(1);
        stats.udp_bytes_up.add(bytes as u64);
    }

    /// Takes the datagrams waiting upstream and hands each to `deliver`
    /// with its RFC 1928 header in front (a SOCKS5 backend's as it came,
    /// one made here for our own sockets) and where its data starts;
    /// `deliver` says whether it went out, and what did is counted.
    pub(super) fn receive(
        &self,
        snap: &Snapshot,
        stats: &DaemonStats,
        buf: &mut [u8],
        mut deliver: impl FnMut(&[u8], usize) -> bool,
    ) {
        let backend = &snap.pool.backends()[self.backend].stats;
        let mut counted = |datagram: &[u8], at: usize| {
            if deliver(datagram, at) {
                backend.udp_datagrams_down.add(1);
                backend.udp_bytes_down.add((datagram.len() - at) as u64);
            }
        };
        match &self.leg {
            Leg::Proxy { socket, .. } => {
                // Connected to the relay: nothing else arrives here.
                while let Ok(n) = socket.get_ref().recv(&mut buf[HEADROOM..]) {
                    let datagram = &buf[HEADROOM..HEADROOM + n];
                    match socks5::parse_udp_header(datagram) {
                        Ok((_, at)) => counted(datagram, at),
                        Err(_) => self.dropped(snap, stats, UdpDrop::Malformed),
                    }
                }
            }
            Leg::Native { v4, v6 } => {
                for s in [v4, v6].into_iter().flatten() {
                    while let Ok((n, from)) = s.get_ref().recv_from(&mut buf[HEADROOM..]) {
                        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                        let header = socks5::udp_header(&Address::Ip(from));
                        let start = HEADROOM - header.len();
                        buf[start..HEADROOM].copy_from_slice(&header);
                        counted(&buf[start..HEADROOM + n], header.len());
                    }
                }
            }
        }
    }

    /// Sends `data` for `dest` on: to a SOCKS5 backend's relay behind the
    /// header that names `dest`, or from our own socket (gateway flows).
    #[cfg(target_os = "linux")]
    pub(super) fn send_to(&mut self, snap: &Snapshot, stats: &DaemonStats, data: &[u8], dest: SocketAddr) {
        match &self.leg {
            Leg::Proxy { socket, .. } => {
                let mut datagram = socks5::udp_header(&Address::Ip(dest)).to_vec();
                datagram.extend_from_slice(data);
                if socket.get_ref().send(&datagram).is_ok() {
                    self.count_up(snap, data.len());
                }
            }
            Leg::Native { .. } => self.send_native(snap, stats, data, dest),
        }
    }

    /// The upstream to move to when this one's backend closed the
    /// association: the backend is reported, and another one opened with a
    /// budget of its own.
    pub(super) async fn replacement(&self, snap: &Snapshot, ip: IpAddr) -> Result<Upstream, UpstreamError> {
        let timeout = snap.config.health.connect_timeout;
        snap.pool.report(self.backend, Source::Traffic, &Verdict::of(&closed_error(), timeout));
        open_anew(snap, ip).await
    }
}

/// An idle association's memory is mostly this future (boxed by
/// `inbound::serve`), its sockets' registrations and the session's task
/// (`scripts/mem_tunnels.py BIN 1000 --udp`: 3.8 KiB per association in
/// all; docs/performance.md). Opening, the one-time replies and name
/// lookups are boxed, sending and receiving never wait, and the retry
/// budget stays boxed, so that none of their state is kept here for the
/// association's life: 1,176 bytes (3,720 before).
#[cfg(all(test, target_pointer_width = "64"))]
mod size {
    #[test]
    fn an_associations_future_stays_small() {
        let c = crate::Config::from_yaml("backends:\n  - direct: true\n").unwrap();
        let snap = crate::context::Snapshot::new(c);
        let stats = crate::stats::DaemonStats::default();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let client = smol::Async::new(s).unwrap();
        let pending = Box::new(super::Pending {
            declared: crate::socks5::Address::UNSPECIFIED,
            attempts: crate::connect::Attempts::new(&snap, std::time::Instant::now()),
        });
        let f = super::associate(&snap, &stats, &client, "127.0.0.1".parse().unwrap(), pending);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1_200, "the association's future is {size} bytes");
    }
}
