//! The SOCKS5 inbound (`mode: socks5`): we end the client's SOCKS5 here
//! (method choice, RFC 1929 login when `auth` is set, request), open the
//! upstream with [`crate::connect`], and answer with the reply code its
//! outcome maps to.
//!
//! The command dispatch is in [`open`]: CONNECT here, UDP ASSOCIATE in
//! [`super::udp`], BIND refused with "command not supported".

use std::io;
use std::net::{IpAddr, TcpStream};
use std::time::Instant;

use smol::Async;

use super::{for_debug_log, Ended, Ready};
use crate::connect::{self, Attempts, ConnectError, Established};
use crate::context::Snapshot;
use crate::socks5::{self, Address, Command, Greeting, Recorder, ReplyCode, Request};
use crate::stats::DaemonStats;
use crate::upstream::until;

/// The client's side of the handshake, read ahead (see
/// [`socks5::Buffered`]); what it holds past the handshake goes upstream
/// before the relay starts.
pub(crate) type ClientReader<'a> = socks5::Buffered<&'a Async<TcpStream>>;

/// The whole SOCKS5 handshake of one client, up to a tunnel ready to relay.
pub(crate) async fn handshake(
    snap: &Snapshot,
    stats: &DaemonStats,
    client: &Async<TcpStream>,
    ip: IpAddr,
    listener: Option<usize>,
    deadline: Instant,
) -> Result<Ready, Ended> {
    let mut reader = socks5::Buffered::new(client);
    let greeting = until(deadline, socks5::read_greeting(&mut reader))
        .await
        .map_err(|e| Ended::Client("greeting", e))?;
    let request = negotiate(snap, client, &mut reader, &greeting, deadline).await?;
    open(
        snap,
        stats,
        client,
        ip,
        request,
        Attempts::new(snap, deadline).on(listener),
        None,
        reader.into_leftover(),
    )
    .await
}

/// Ends the client's handshake here: method choice, login when `auth` is
/// configured, then the request.
pub(crate) async fn negotiate(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    greeting: &Greeting,
    deadline: Instant,
) -> Result<Request, Ended> {
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
        return Err(Ended::NoMethod(method));
    }
    socks5::write_method_choice(&mut c, method).await?;
    if let Some(users) = &snap.config.auth {
        let login =
            until(deadline, socks5::read_user_pass(reader)).await.map_err(|e| Ended::Client("login", e))?;
        let accepted = users.iter().any(|u| u.matches(&login.username, &login.password));
        let status = if accepted { 0x00 } else { 0x01 };
        let _ = socks5::write_auth_status(&mut c, status).await;
        if !accepted {
            log::info!(
                "client {}: login failed for user {:?}",
                client.get_ref().peer_addr().map_or("?".into(), |a| a.to_string()),
                String::from_utf8_lossy(&login.username)
            );
            return Err(Ended::LoginFailed);
        }
    }
    read_request(client, reader, deadline, None).await
}

/// When a client without a login was last logged (seconds since the Unix
/// epoch; a u32 lasts until 2106).
static NO_LOGIN_LOGGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether a line throttled by `last` is due, and if so, marks it logged.
pub(crate) fn once_a_minute(last: &std::sync::atomic::AtomicU32) -> bool {
    use std::sync::atomic::Ordering;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
    let before = last.load(Ordering::Relaxed);
    (before == 0 || now.wrapping_sub(before) >= 60)
        && last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Reads the client's request; on a malformed one, sends the reply the
/// protocol has for it before failing. With `copy`, keeps the raw bytes.
pub(crate) async fn read_request(
    client: &Async<TcpStream>,
    reader: &mut ClientReader<'_>,
    deadline: Instant,
    copy: Option<&mut Vec<u8>>,
) -> Result<Request, Ended> {
    let mut c = client;
    let result = match copy {
        Some(copy) => until(deadline, socks5::read_request(&mut Recorder::new(reader, copy))).await,
        None => until(deadline, socks5::read_request(reader)).await,
    };
    match result {
        Ok(request) => Ok(request),
        Err(e) => {
            if let Some(code) = e.reply() {
                let _ = socks5::write_reply(&mut c, code, &Address::UNSPECIFIED).await;
            }
            Err(Ended::Client("request", e))
        }
    }
}

/// Over a connection limit: a general-failure reply to whatever the client
/// asks, so it fails at once instead of waiting. The caller bounds the time.
pub(crate) async fn refuse_busy(client: &Async<TcpStream>) -> io::Result<()> {
    let mut c = client;
    let mut reader = socks5::Buffered::new(client);
    let greeting = socks5::read_greeting(&mut reader).await.map_err(|e| io::Error::other(e.to_string()))?;
    if !greeting.offers(socks5::METHOD_NO_AUTH) {
        return socks5::write_method_choice(&mut c, socks5::METHOD_NONE_ACCEPTABLE).await;
    }
    socks5::write_method_choice(&mut c, socks5::METHOD_NO_AUTH).await?;
    socks5::read_request(&mut reader).await.map_err(|e| io::Error::other(e.to_string()))?;
    socks5::write_reply(&mut c, ReplyCode::GENERAL_FAILURE, &Address::UNSPECIFIED).await
}

/// Sends a failure reply; returns why the session ends.
pub(crate) async fn refuse(client: &Async<TcpStream>, code: ReplyCode, why: Ended) -> Ended {
    let mut c = client;
    let _ = socks5::write_reply(&mut c, code, &Address::UNSPECIFIED).await;
    why
}

/// The reply code a client gets for a failed connect.
pub(crate) fn reply_code(e: &ConnectError) -> ReplyCode {
    match e {
        ConnectError::Denied { .. } | ConnectError::Blocked { .. } => ReplyCode::NOT_ALLOWED,
        ConnectError::Upstream(e) => e.reply(),
    }
}

/// Ends the client's request here: dispatches its command, opens an
/// upstream for a CONNECT (with failover) and answers the client. `first`,
/// already counted in `attempts`, is tried before any other. `early` is
/// what the client sent behind its request, for the destination.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open(
    snap: &Snapshot,
    stats: &DaemonStats,
    client: &Async<TcpStream>,
    ip: IpAddr,
    request: Request,
    attempts: Attempts,
    first: Option<usize>,
    early: Vec<u8>,
) -> Result<Ready, Ended> {
    match request.command {
        Command::Connect => {}
        Command::UdpAssociate => {
            let _ = stats;
            let pending = super::Pending { declared: request.address, attempts };
            return Err(Ended::Associate(Box::new(pending)));
        }
        Command::Bind => {
            return Err(refuse(
                client,
                ReplyCode::COMMAND_NOT_SUPPORTED,
                Ended::Unsupported(request.command),
            )
            .await);
        }
    }
    let dest = &request.address;
    match connect::connect(snap, ip, dest, attempts, first).await {
        Ok(Established { upstream, backend, active, bound, early_down, judge_first_byte }) => {
            let mut c = client;
            socks5::write_reply(&mut c, ReplyCode::SUCCEEDED, &bound).await?;
            Ok(Ready {
                upstream,
                backend,
                _active: active,
                dest: for_debug_log(dest),
                early_up: early,
                early_down,
                judge_first_byte,
            })
        }
        Err(e) => Err(refuse(client, reply_code(&e), Ended::Connect(e)).await),
    }
}
