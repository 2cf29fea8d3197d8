//! The transparent inbound (`mode: transparent`): we pick a backend and
//! pass the client's bytes to it untouched; the backend answers the
//! client. We still read the handshake through a [`Recorder`] to learn
//! where each message ends.
//!
//! **Failover.** A backend that fails before the tunnel is up is replaced
//! by another, with the retry budget of [`crate::connect::Attempts`]: the
//! recorded greeting, login and request are replayed to the next backend,
//! whose answers to what the client was already told are checked and
//! swallowed. A `direct` backend picked here has nobody upstream to do the
//! talking: the handshake is finished the socks5 way
//! ([`super::socks5::open`]).

use std::net::{IpAddr, TcpStream};
use std::time::Instant;

use smol::io::AsyncWriteExt;
use smol::Async;

use super::socks5::{self as inbound_socks5, ClientReader};
use super::{for_debug_log, Ended, Ready};
use crate::balancer::Client;
use crate::config::Target;
use crate::connect::{self, Attempts, ConnectError};
use crate::context::Snapshot;
use crate::health::{Source, Verdict};
use crate::socks5::{self, Address, Command, Greeting, Recorder, ReplyCode, Request};
use crate::stats::ActiveGuard;
use crate::upstream::{self, until, UpstreamError};

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
    /// The client and its listener, for the rules.
    client: IpAddr,
    listener: Option<usize>,
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
    Session(Ended),
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

pub(crate) async fn handshake(
    snap: &Snapshot,
    stats: &crate::stats::DaemonStats,
    client: &Async<TcpStream>,
    ip: IpAddr,
    listener: Option<usize>,
    deadline: Instant,
) -> Result<Ready, Ended> {
    let mut c = client;
    let mut reader = socks5::Buffered::new(client);
    let mut greeting_bytes = Vec::with_capacity(8);
    let greeting =
        until(deadline, socks5::read_greeting(&mut Recorder::new(&mut reader, &mut greeting_bytes)))
            .await
            .map_err(|e| Ended::Client("greeting", e))?;
    let mut talk = Conversation {
        greeting,
        greeting_bytes,
        method: None,
        login: None,
        login_answered: false,
        request: None,
        client: ip,
        listener,
    };
    let mut attempts = Attempts::new(snap, deadline).on(listener);
    // The destination is not known yet: only rules on the client and the
    // listener can match (docs/routing.md, "Transparent mode").
    if attempts.decide(snap, ip, None).is_err() {
        let error = UpstreamError::NotAllowed;
        return Err(give_up(client, &mut reader, &mut talk, deadline, error).await);
    }
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
            let request =
                inbound_socks5::negotiate(snap, client, &mut reader, &talk.greeting, deadline).await?;
            return inbound_socks5::open(
                snap,
                stats,
                client,
                ip,
                request,
                attempts,
                Some(i),
                reader.into_leftover(),
            )
            .await;
        };
        let active = ActiveGuard::new(&backend.stats);
        let start = Instant::now();
        let via = snap.pool.uplink_of(i);
        let attempt = transparent_attempt(snap, client, &mut reader, &mut talk, (host, *port, via), deadline);
        match attempt.await {
            Ok(opened) => {
                let took = start.elapsed();
                snap.pool.report(i, Source::Traffic, &Verdict::Success(Some(took)));
                snap.pool.learn(i, talk.destination(), crate::balancer::learned::Outcome::Worked(took));
                if let Some(reply) = &opened.reply_bytes {
                    c.write_all(reply).await?;
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
                    judge_first_byte: connect && connect::judges_first_byte(snap, i, talk.destination()),
                });
            }
            Err(Stop::Session(why)) => return Err(why),
            Err(Stop::Backend(e)) => {
                attempts.failed(snap, i, talk.destination(), e);
                // Retries go where the rules say for the destination,
                // now that it is known.
                if let Some((request, _)) = &talk.request {
                    if let Err(rule) = attempts.decide(snap, ip, Some(&request.address)) {
                        let why = Ended::Connect(ConnectError::Blocked {
                            destination: request.address.to_string(),
                            rule,
                        });
                        return Err(inbound_socks5::refuse(client, ReplyCode::NOT_ALLOWED, why).await);
                    }
                }
            }
        }
    }
    let error = attempts.into_error(ip, talk.destination());
    Err(give_up(client, &mut reader, &mut talk, deadline, error).await)
}

/// The `block` rule that matches a request, if any.
fn blocked(snap: &Snapshot, listener: Option<usize>, dest: &Address, ip: IpAddr) -> Option<usize> {
    let q = crate::config::routing::Query {
        destination: Some(dest),
        dialled: None,
        source: ip,
        inbound: listener,
    };
    match snap.pool.decide(&snap.config, &q) {
        crate::balancer::Decision::Block(rule) => Some(rule),
        crate::balancer::Decision::Route(_) => None,
    }
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
    let upstream = upstream::connect_backend(host, port, health.connect_timeout, via, &talk.greeting_bytes)
        .await
        .map_err(Stop::Backend)?;
    let mut u = &upstream;
    let mut ur = socks5::Buffered::new(&upstream);
    let protocol = |e: socks5::Error| Stop::Backend(UpstreamError::BackendProtocol(e));
    let backend_deadline = Instant::now() + health.connect_timeout;

    let method = until(backend_deadline, socks5::read_method_choice(&mut ur)).await.map_err(protocol)?;
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
            c.write_all(&[socks5::VERSION, method]).await.map_err(|e| Stop::Session(e.into()))?;
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
                    .map_err(|e| Stop::Session(Ended::Client("login", e)))?;
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
                c.write_all(&[socks5::AUTH_VERSION, status]).await.map_err(|e| Stop::Session(e.into()))?;
                talk.login_answered = true;
                if status != 0 {
                    return Err(Stop::Session(Ended::BackendRejectedLogin));
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
        let request = inbound_socks5::read_request(client, reader, deadline, Some(&mut bytes))
            .await
            .map_err(Stop::Session)?;
        if let Some(rule) = connect::denied_destination(snap, &request.address) {
            let why = Ended::Connect(ConnectError::Denied { destination: request.address.to_string(), rule });
            return Err(Stop::Session(inbound_socks5::refuse(client, ReplyCode::NOT_ALLOWED, why).await));
        }
        if let Some(rule) = blocked(snap, talk.listener, &request.address, talk.client) {
            let why =
                Ended::Connect(ConnectError::Blocked { destination: request.address.to_string(), rule });
            return Err(Stop::Session(inbound_socks5::refuse(client, ReplyCode::NOT_ALLOWED, why).await));
        }
        talk.request = Some((request, bytes));
    }
    // UDP ASSOCIATE is ours to serve, as in socks5 mode: passed through,
    // the backend would name a relay the client may not reach, and the
    // association could not fail over. The client is past the method (and
    // login) talk with this backend; this connection to it is dropped.
    if let Some((request, _)) = talk.request.as_ref().filter(|(r, _)| r.command == Command::UdpAssociate) {
        let attempts = crate::connect::Attempts::new(snap, deadline);
        let pending = super::Pending { declared: request.address.clone(), attempts };
        return Err(Stop::Session(Ended::Associate(Box::new(pending))));
    }
    let request_bytes = talk.request.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default();
    let mut reply_bytes = Vec::with_capacity(32);
    let reply = until(Instant::now() + health.request_timeout, async {
        u.write_all(request_bytes).await?;
        socks5::read_reply(&mut Recorder::new(&mut ur, &mut reply_bytes)).await
    })
    .await
    .map_err(protocol)?;
    if reply.code != ReplyCode::SUCCEEDED.0 {
        return Err(Stop::Backend(UpstreamError::BackendReply(reply.code)));
    }
    if talk.request.as_ref().is_some_and(|(r, _)| r.command != Command::Connect) {
        // BIND goes to the backend as it came; after its first reply
        // everything is the backend's business.
        log::debug!("passing a BIND through to the backend");
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
) -> Ended {
    let mut c = client;
    let code = error.reply();
    let why = Ended::Connect(ConnectError::Upstream(error));
    match talk.method {
        None if matches!(why, Ended::Connect(ConnectError::Upstream(UpstreamError::MethodMismatch(_))))
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
        if let Err(failure) = inbound_socks5::read_request(client, reader, deadline, None).await {
            return failure;
        }
    }
    inbound_socks5::refuse(client, code, why).await
}
