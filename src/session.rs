//! One client connection, from the first byte to the end of its tunnel.
//!
//! Two ways to serve a client, chosen by `mode`:
//!
//! - **socks5**: we end the client's SOCKS5 here (method choice, RFC 1929
//!   login, request), pick a backend, speak SOCKS5 to it ourselves with its
//!   own credentials, and answer the client with the backend's reply.
//! - **transparent**: we pick a backend and pass the client's bytes to it
//!   untouched; the backend answers the client. We still read the
//!   handshake through a [`Recorder`] to learn where each message ends, so
//!   that a backend that fails before answering can be reported with a
//!   proper SOCKS5 reply (and, with the health issue, replaced by another
//!   backend that gets the recorded bytes replayed).
//!
//! `direct` backends are always served the socks5 way: there is no
//! upstream proxy to do the talking.
//!
//! The command dispatch in [`connect_and_relay`] is where UDP ASSOCIATE
//! will plug in; until then it gets "command not supported".

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use smol::io::AsyncWriteExt;
use smol::Async;

use crate::balancer::Backend;
use crate::config::{Mode, Target};
use crate::relay;
use crate::server::Snapshot;
use crate::socks5::{self, Address, Command, Greeting, Recorder, ReplyCode, Request};
use crate::stats::ActiveGuard;
use crate::upstream::{self, until, UpstreamError};

/// Why a session ended early; logged at debug level by [`serve`].
type Failure = String;

/// Serves one accepted client until its tunnel closes.
pub async fn serve(snap: Arc<Snapshot>, client: Async<TcpStream>, peer: SocketAddr) {
    let _ = client.get_ref().set_nodelay(true);
    let deadline = Instant::now() + snap.config.limits.handshake_timeout;
    let result = match snap.config.mode {
        Mode::Socks5 => socks5_session(&snap, &client, deadline).await,
        Mode::Transparent => transparent_session(&snap, &client, deadline).await,
    };
    if let Err(why) = result {
        log::debug!("client {peer}: {why}");
    }
}

fn client_error(stage: &str, e: socks5::Error) -> Failure {
    match e {
        socks5::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("no complete {stage} within the handshake timeout")
        }
        e => format!("bad {stage}: {e}"),
    }
}

async fn socks5_session(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut c = client;
    let greeting =
        until(deadline, socks5::read_greeting(&mut c)).await.map_err(|e| client_error("greeting", e))?;
    let request = negotiate(snap, client, &greeting, deadline).await?;
    let Some(index) = snap.pool.pick(|_| true) else {
        return refuse(client, ReplyCode::GeneralFailure as u8, "no backend available").await;
    };
    connect_and_relay(snap, client, request, &snap.pool.backends()[index]).await
}

/// Ends the client's handshake here: method choice, login when `auth` is
/// configured, then the request.
async fn negotiate(
    snap: &Snapshot,
    client: &Async<TcpStream>,
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
        return Err(format!("client offers none of the methods we accept (we need {method:#04x})"));
    }
    socks5::write_method_choice(&mut c, method).await.map_err(|e| e.to_string())?;
    if let Some(users) = &snap.config.auth {
        let login =
            until(deadline, socks5::read_user_pass(&mut c)).await.map_err(|e| client_error("login", e))?;
        let accepted = users.iter().any(|u| {
            constant_time_eq(u.username.as_bytes(), &login.username)
                & constant_time_eq(u.password.expose().as_bytes(), &login.password)
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
    read_request(client, deadline, None).await
}

/// Reads the client's request; on a malformed one, sends the reply the
/// protocol has for it before failing. With `copy`, keeps the raw bytes.
async fn read_request(
    client: &Async<TcpStream>,
    deadline: Instant,
    copy: Option<&mut Vec<u8>>,
) -> Result<Request, Failure> {
    let mut c = client;
    let result = match copy {
        Some(copy) => until(deadline, socks5::read_request(&mut Recorder::new(&mut c, copy))).await,
        None => until(deadline, socks5::read_request(&mut c)).await,
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

/// Sends a failure reply and ends the session.
async fn refuse(client: &Async<TcpStream>, code: u8, why: impl Into<String>) -> Result<(), Failure> {
    let mut c = client;
    let _ = socks5::write_reply(&mut c, code, &Address::UNSPECIFIED).await;
    Err(why.into())
}

/// Opens the upstream for `request` through `backend`, answers the
/// client, and relays.
async fn connect_and_relay(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    request: Request,
    backend: &Backend,
) -> Result<(), Failure> {
    match request.command {
        Command::Connect => {}
        Command::Bind | Command::UdpAssociate => {
            return refuse(
                client,
                ReplyCode::CommandNotSupported as u8,
                format!("{:?} is not supported", request.command),
            )
            .await;
        }
    }
    let _active = ActiveGuard::new(&backend.stats);
    let (upstream, bound) = match open_upstream(snap, backend, &request.address).await {
        Ok(opened) => opened,
        Err(e) => {
            record_failure(backend, &request.address, &e);
            return refuse(client, e.reply(), e.to_string()).await;
        }
    };
    let mut c = client;
    socks5::write_reply(&mut c, ReplyCode::Succeeded as u8, &bound).await.map_err(|e| e.to_string())?;
    tunnel(snap, client, &upstream, backend, &request.address).await;
    Ok(())
}

/// Connects to `dest` through `backend`; returns the stream and the bound
/// address to report to the client.
async fn open_upstream(
    snap: &Snapshot,
    backend: &Backend,
    dest: &Address,
) -> Result<(Async<TcpStream>, Address), UpstreamError> {
    let health = &snap.config.health;
    match &backend.config.target {
        Target::Direct => {
            let stream = upstream::connect_direct(dest, health.request_timeout).await?;
            let bound = stream.get_ref().local_addr().map_or(Address::UNSPECIFIED, Address::Ip);
            Ok((stream, bound))
        }
        Target::Proxy { host, port } => {
            let stream = upstream::connect_backend(host, *port, health.connect_timeout).await?;
            let bound = upstream::socks5_connect(
                &stream,
                backend.config.credentials.as_ref(),
                dest,
                health.connect_timeout,
                health.request_timeout,
            )
            .await?;
            Ok((stream, bound))
        }
    }
}

fn record_failure(backend: &Backend, dest: &Address, e: &UpstreamError) {
    if e.blames_backend() {
        backend.stats.failures.add(1);
        log::warn!("backend {}: {e} (for {dest})", backend.config.name);
    } else {
        log::debug!("backend {}: {e} (for {dest})", backend.config.name);
    }
}

/// The relay stage, shared by both modes.
async fn tunnel(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    upstream: &Async<TcpStream>,
    backend: &Backend,
    dest: &Address,
) {
    backend.stats.connections.add(1);
    let totals = relay::relay(client, upstream, snap.config.limits.idle_timeout, &backend.stats).await;
    log::debug!(
        "tunnel to {dest} via {} ended ({:?}): {} bytes up, {} down",
        backend.config.name,
        totals.end,
        totals.up,
        totals.down
    );
}

async fn transparent_session(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut c = client;
    let mut greeting_bytes = Vec::with_capacity(8);
    let greeting = until(deadline, socks5::read_greeting(&mut Recorder::new(&mut c, &mut greeting_bytes)))
        .await
        .map_err(|e| client_error("greeting", e))?;
    let Some(index) = snap.pool.pick(|_| true) else {
        return answer_locally(
            client,
            &greeting,
            deadline,
            ReplyCode::GeneralFailure as u8,
            "no backend available",
        )
        .await;
    };
    let backend = &snap.pool.backends()[index];
    let Target::Proxy { host, port } = &backend.config.target else {
        // A direct backend has nobody upstream to do the talking.
        let request = negotiate(snap, client, &greeting, deadline).await?;
        return connect_and_relay(snap, client, request, backend).await;
    };
    let _active = ActiveGuard::new(&backend.stats);
    let health = &snap.config.health;
    let unknown = Address::UNSPECIFIED;

    let upstream = match upstream::connect_backend(host, *port, health.connect_timeout).await {
        Ok(stream) => stream,
        Err(e) => {
            record_failure(backend, &unknown, &e);
            return answer_locally(client, &greeting, deadline, e.reply(), e.to_string()).await;
        }
    };
    let mut u = &upstream;
    let backend_deadline = Instant::now() + health.connect_timeout;
    let method = until(backend_deadline, async {
        u.write_all(&greeting_bytes).await?;
        socks5::read_method_choice(&mut u).await
    })
    .await;
    let method = match method {
        Ok(method) => method,
        Err(e) => {
            let e = UpstreamError::BackendProtocol(e);
            record_failure(backend, &unknown, &e);
            return answer_locally(client, &greeting, deadline, e.reply(), e.to_string()).await;
        }
    };
    c.write_all(&[socks5::VERSION, method]).await.map_err(|e| e.to_string())?;
    match method {
        socks5::METHOD_NO_AUTH => {}
        socks5::METHOD_USER_PASS => {
            let mut login = Vec::with_capacity(64);
            until(deadline, socks5::read_user_pass(&mut Recorder::new(&mut c, &mut login)))
                .await
                .map_err(|e| client_error("login", e))?;
            let status = until(backend_deadline, async {
                u.write_all(&login).await?;
                socks5::read_auth_status(&mut u).await
            })
            .await
            .map_err(|e| format!("backend {} failed during login: {e}", backend.config.name))?;
            c.write_all(&[socks5::AUTH_VERSION, status]).await.map_err(|e| e.to_string())?;
            if status != 0 {
                return Err(format!("backend {} rejected the client's login", backend.config.name));
            }
        }
        socks5::METHOD_NONE_ACCEPTABLE => {
            return Err(format!("backend {} accepts none of the client's methods", backend.config.name));
        }
        _ => {
            // GSSAPI or a private method: its messages have no framing we
            // know, so from here on the bytes just flow.
            tunnel(snap, client, &upstream, backend, &unknown).await;
            return Ok(());
        }
    }

    let mut request_bytes = Vec::with_capacity(32);
    let request = read_request(client, deadline, Some(&mut request_bytes)).await?;
    let mut reply_bytes = Vec::with_capacity(32);
    let reply = until(Instant::now() + health.request_timeout, async {
        u.write_all(&request_bytes).await?;
        socks5::read_reply(&mut Recorder::new(&mut u, &mut reply_bytes)).await
    })
    .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => {
            let e = UpstreamError::BackendProtocol(e);
            record_failure(backend, &request.address, &e);
            return refuse(client, e.reply(), e.to_string()).await;
        }
    };
    c.write_all(&reply_bytes).await.map_err(|e| e.to_string())?;
    if reply.code != ReplyCode::Succeeded as u8 {
        let e = UpstreamError::BackendReply(reply.code);
        record_failure(backend, &request.address, &e);
        return Err(e.to_string());
    }
    if request.command != Command::Connect {
        // BIND and UDP ASSOCIATE go to the backend as they came; after its
        // first reply everything is the backend's business.
        log::debug!("passing {:?} through to backend {}", request.command, backend.config.name);
    }
    tunnel(snap, client, &upstream, backend, &request.address).await;
    Ok(())
}

/// Transparent mode, when no backend answered: the client is still at its
/// greeting, so finish the handshake ourselves just far enough to give it
/// a SOCKS5 failure reply instead of a bare close.
async fn answer_locally(
    client: &Async<TcpStream>,
    greeting: &Greeting,
    deadline: Instant,
    code: u8,
    why: impl Into<String>,
) -> Result<(), Failure> {
    let mut c = client;
    if !greeting.offers(socks5::METHOD_NO_AUTH) {
        // Answering a login we cannot check would be a lie; this is the
        // only refusal the protocol has at this stage.
        let _ = socks5::write_method_choice(&mut c, socks5::METHOD_NONE_ACCEPTABLE).await;
        return Err(why.into());
    }
    let _ = socks5::write_method_choice(&mut c, socks5::METHOD_NO_AUTH).await;
    read_request(client, deadline, None).await?;
    refuse(client, code, why).await
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
