//! The DNS listener (`dns:`): queries over UDP and TCP, answered from a
//! small cache or forwarded over TCP (RFC 7766's two-byte length framing)
//! through the balanced backends to `dns.upstreams`, tried in order.
//!
//! No query leaves the host in the clear and none goes to a local
//! resolver: each upstream exchange is a connection to the resolver
//! through a backend, opened by [`crate::connect`] with its failover, as
//! a SOCKS5 CONNECT to it would be. A query that does not parse gets
//! FORMERR (NOTIMP for an opcode other than QUERY); one no resolver
//! answers gets SERVFAIL. An answer larger than a UDP client takes goes
//! back truncated (TC), and the client asks again over TCP.
//!
//! The cache keeps at most `dns.cache_size` answers, each for the least
//! TTL of its records, and serves them with their TTLs aged.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer};

use crate::connect::{self, Attempts};
use crate::context::Current;
use crate::dns::{self, Query, Refused};
use crate::socks5::Address;
use crate::stats::DaemonStats;
use crate::upstream::until;

/// How long one resolver has to answer through a backend, the connect
/// included; then the next is tried. Stub resolvers give up after about
/// 5 s, so two resolvers get their chance.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2_500);

/// When "no resolver answered" was last logged.
static UNANSWERED_LOGGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// UDP queries being answered at once; more are dropped (the client
/// asks again) rather than queued without bound.
const MAX_IN_FLIGHT: usize = 256;

/// TCP clients at once, and how long one may sit idle between queries.
const MAX_TCP_CLIENTS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The DNS listener's sockets, bound at start (so that a port in use is
/// an error then), on the same address and port for UDP and TCP. They join
/// a reactor in [`serve`], on the thread that serves them.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    pub fn bind(addr: SocketAddr) -> io::Result<Sockets> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen for DNS on {addr}: {e}"));
        // Port 0: TCP takes the port UDP was given, which a TCP socket may
        // hold already; then another port is tried.
        let mut tries = if addr.port() == 0 { 16 } else { 1 };
        loop {
            let udp = UdpSocket::bind(addr).map_err(named)?;
            match TcpListener::bind(udp.local_addr()?) {
                Ok(tcp) => return Ok(Sockets { udp, tcp }),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
                Err(e) => return Err(named(e)),
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Answers kept, looked up by question. A list, not a map: at most a few
/// hundred entries on a router, where a scan costs microseconds, and a
/// map of its own would cost the binary kilobytes.
#[derive(Default)]
struct Cache(Mutex<Vec<Cached>>);

struct Cached {
    key: Vec<u8>,
    answer: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

impl Cache {
    /// A copy of the answer to `q`, its TTLs aged, if one is fresh.
    fn get(&self, q: &Query) -> Option<Vec<u8>> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = list.iter().position(|c| c.key == q.key)?;
        let entry = &list[at];
        let elapsed = entry.stored.elapsed().as_secs().min(u64::from(u32::MAX)) as u32;
        if elapsed >= entry.ttl {
            list.swap_remove(at);
            return None;
        }
        let mut answer = entry.answer.clone();
        dns::age(&mut answer, q.key.len(), elapsed);
        Some(answer)
    }

    /// Keeps `answer` if it may be cached, making room in a full cache:
    /// expired answers go first, then the one closest to expiring.
    fn put(&self, q: &Query, answer: &[u8], size: usize) {
        let Some(ttl) = dns::cache_ttl(answer, q.key.len()) else { return };
        if size == 0 {
            return;
        }
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|c| c.key != q.key);
        if list.len() >= size {
            let now = Instant::now();
            let left = |c: &Cached| u64::from(c.ttl).saturating_sub(now.duration_since(c.stored).as_secs());
            list.retain(|c| left(c) > 0);
            // A reload may have made the cache smaller.
            while list.len() >= size {
                let Some(soonest) = (0..list.len()).min_by_key(|&i| left(&list[i])) else { break };
                list.swap_remove(soonest);
            }
        }
        list.push(Cached { key: q.key.clone(), answer: answer.to_vec(), stored: Instant::now(), ttl });
    }
}

/// What every query's task shares.
struct Service {
    current: Arc<Current>,
    stats: Arc<DaemonStats>,
    cache: Cache,
}

/// Serves DNS on `sockets` until cancelled.
pub async fn serve(
    ex: Arc<Executor<'static>>,
    sockets: Sockets,
    current: Arc<Current>,
    stats: Arc<DaemonStats>,
) {
    let service = Arc::new(Service { current, stats, cache: Cache::default() });
    let Sockets { udp, tcp } = sockets;
    let (udp, tcp) = match (Async::new(udp), Async::new(tcp)) {
        (Ok(udp), Ok(tcp)) => (Arc::new(udp), tcp),
        (Err(e), _) | (_, Err(e)) => return log::error!("dns: cannot serve: {e}"),
    };
    let tcp_loop = {
        let (ex, service) = (Arc::clone(&ex), Arc::clone(&service));
        async move { serve_tcp(&ex, &tcp, &service).await }
    };
    smol::future::or(serve_udp(&ex, udp, &service), tcp_loop).await
}

async fn serve_udp(ex: &Executor<'static>, udp: Arc<Async<UdpSocket>>, service: &Arc<Service>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match udp.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                log::debug!("dns: receive failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !service.current.get().config.allows_client(from.ip()) {
            continue;
        }
        service.stats.dns_queries.add(1);
        if !crate::stats::take_slot(&in_flight, MAX_IN_FLIGHT) {
            service.stats.dns_failures.add(1);
            continue;
        }
        let (msg, udp, service, in_flight) =
            (buf[..n].to_vec(), Arc::clone(&udp), Arc::clone(service), Arc::clone(&in_flight));
        ex.spawn(async move {
            if let Some(Answer { mut reply, limit, key_len }) = service.answer(&msg, from.ip()).await {
                if reply.len() > limit {
                    reply = dns::truncated(&reply, key_len).unwrap_or(reply);
                }
                let _ = udp.send_to(&reply, from).await;
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

async fn serve_tcp(ex: &Executor<'static>, listener: &Async<TcpListener>, service: &Arc<Service>) {
    let clients = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match crate::tcp::accept(listener).await {
            Ok(got) => got,
            Err(e) => {
                log::debug!("dns: accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !service.current.get().config.allows_client(peer.ip()) {
            continue;
        }
        if !crate::stats::take_slot(&clients, MAX_TCP_CLIENTS) {
            continue;
        }
        let (service, clients) = (Arc::clone(service), Arc::clone(&clients));
        ex.spawn(async move {
            let _ = serve_tcp_client(&stream, peer.ip(), &service).await;
            clients.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// One TCP client's queries, answered in turn, until it closes or idles.
async fn serve_tcp_client(stream: &Async<TcpStream>, ip: IpAddr, service: &Service) -> io::Result<()> {
    let mut s = stream;
    loop {
        let Some(msg) = until(Instant::now() + TCP_IDLE, read_framed(s, Vec::new())).await? else {
            return Ok(());
        };
        service.stats.dns_queries.add(1);
        let Some(Answer { reply, .. }) = service.answer(&msg, ip).await else { return Ok(()) };
        s.write_all(&framed(&reply)).await?;
    }
}

/// A message with its two-byte length in front.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Reads one length-framed message, `got` holding bytes already read;
/// `None` at a clean end before a message starts.
async fn read_framed(mut s: &Async<TcpStream>, mut got: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 2048];
    loop {
        if got.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([got[0], got[1]]));
            if got.len() >= 2 + len {
                got.truncate(2 + len);
                got.drain(..2);
                return Ok(Some(got));
            }
        }
        match s.read(&mut chunk).await? {
            0 if got.is_empty() => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A reply to send, with what truncating it for UDP needs.
struct Answer {
    reply: Vec<u8>,
    /// The most a UDP client takes.
    limit: usize,
    /// The question's length (0 when the query had none that parsed).
    key_len: usize,
}

impl Service {
    /// The reply to `msg` from the client at `ip`; `None` when there is
    /// nothing to answer.
    async fn answer(&self, msg: &[u8], ip: IpAddr) -> Option<Answer> {
        let q = match dns::parse_query(msg) {
            Ok(q) => q,
            Err(Refused(code)) => {
                self.stats.dns_failures.add(1);
                log::debug!("dns: client {ip}: malformed query (answered with code {code})");
                return dns::reply(msg, code).map(|reply| Answer {
                    reply,
                    limit: dns::CLASSIC_UDP,
                    key_len: 0,
                });
            }
        };
        let client_question = &msg[dns::HEADER..dns::HEADER + q.key.len()];
        // The client's own ID and spelling of the name (some resolvers
        // check the case they sent, "0x20" randomization).
        let answered = |reply: Vec<u8>| Some(Answer { reply, limit: q.udp_size, key_len: q.key.len() });
        let as_asked = |mut answer: Vec<u8>| {
            answer[..2].copy_from_slice(&q.id.to_be_bytes());
            answer[dns::HEADER..dns::HEADER + q.key.len()].copy_from_slice(client_question);
            answered(answer)
        };
        if let Some(answer) = self.cache.get(&q) {
            self.stats.dns_cache_hits.add(1);
            return as_asked(answer);
        }
        let snap = self.current.get();
        let Some(config) = &snap.config.dns else { return None };
        for &upstream in &config.upstreams {
            match exchange(&snap, ip, upstream, msg, &q).await {
                Ok(answer) if matches!(dns::rcode(&answer), Some(dns::SERVFAIL | dns::REFUSED)) => {
                    log::debug!("dns: resolver {upstream} answered with code {:?}", dns::rcode(&answer));
                }
                Ok(answer) => {
                    self.cache.put(&q, &answer, config.cache_size);
                    return as_asked(answer);
                }
                Err(e) => log::debug!("dns: resolver {upstream}: {e}"),
            }
        }
        self.stats.dns_failures.add(1);
        // Said at most once a minute: a dead path would flood the log.
        if super::socks5::once_a_minute(&UNANSWERED_LOGGED) {
            log::info!(
                "dns: no resolver answered a query from {ip}; answered SERVFAIL (said at most once a minute)"
            );
        }
        dns::reply(msg, dns::SERVFAIL).and_then(answered)
    }
}

/// One query to `resolver` over TCP through a backend, within
/// [`UPSTREAM_TIMEOUT`].
async fn exchange(
    snap: &crate::context::Snapshot,
    ip: IpAddr,
    resolver: SocketAddr,
    msg: &[u8],
    q: &Query,
) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let dest = Address::Ip(resolver);
    // The connect within the resolver's time too: a `direct` backend's
    // connect to a resolver that drops packets would otherwise wait out
    // health.request_timeout.
    let connected = async {
        connect::connect(snap, ip, &dest, Attempts::new(snap, deadline), None)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    };
    let established = until(deadline, connected).await?;
    let mut s = &established.upstream;
    let exchanged = async {
        s.write_all(&framed(msg)).await?;
        read_framed(s, established.early_down.clone()).await
    };
    match until(deadline, exchanged).await? {
        Some(answer) if dns::answers(&answer, q) => Ok(answer),
        Some(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "an answer to another question")),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::Cache;
    use crate::dns::{self, tests::answer, tests::query};

    #[test]
    fn the_cache_keeps_answers_by_question_and_evicts_the_soonest_to_expire() {
        let cache = Cache::default();
        let q = |name: &str| dns::parse_query(&query(1, name, None)).unwrap();
        assert_eq!(cache.get(&q("a.test")), None);
        cache.put(&q("a.test"), &answer(1, "a.test", &[300]), 2);
        cache.put(&q("b.test"), &answer(1, "b.test", &[60]), 2);
        // Another ID and case: the same question.
        let hit = cache.get(&dns::parse_query(&query(9, "A.Test", None)).unwrap()).expect("cached");
        assert_eq!(dns::cache_ttl(&hit, q("a.test").key.len()), Some(300));
        // Full: the answer closest to expiring (b) makes room.
        cache.put(&q("c.test"), &answer(1, "c.test", &[120]), 2);
        assert!(cache.get(&q("b.test")).is_none());
        assert!(cache.get(&q("a.test")).is_some() && cache.get(&q("c.test")).is_some());
        // A SERVFAIL is not kept; size 0 keeps nothing.
        let mut failed = answer(1, "d.test", &[60]);
        failed[3] = 0x82;
        cache.put(&q("d.test"), &failed, 8);
        cache.put(&q("e.test"), &answer(1, "e.test", &[60]), 0);
        assert!(cache.get(&q("d.test")).is_none() && cache.get(&q("e.test")).is_none());
        // A smaller size after a reload is honoured at the next answer.
        cache.put(&q("f.test"), &answer(1, "f.test", &[60]), 1);
        assert_eq!(cache.0.lock().unwrap().len(), 1);
    }
}
