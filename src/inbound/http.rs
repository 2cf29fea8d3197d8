//! The HTTP proxy inbound (`protocol: http`, and `mixed` for clients that
//! do not start with SOCKS5's version byte).
//!
//! It always ends the client's protocol here and opens the upstream with
//! [`crate::connect`], which speaks SOCKS5 to the backends with their own
//! credentials, whatever `mode` says:
//!
//! - `CONNECT host:port` gets `200 Connection established`, then the
//!   tunnel; bytes the client sent behind its head go through first.
//! - An absolute-form request (`GET http://host/path`) is forwarded in
//!   origin-form with the hop-by-hop headers taken out and `Connection:
//!   close`, so each request has a connection of its own; its body, and
//!   the origin's response, pass through the tunnel untouched.
//!
//! `auth.users` apply through `Proxy-Authorization: Basic`. Every refusal
//! is an HTTP answer with a one-line body: 400 malformed, 407 no login,
//! 403 denied, 408 slow head, 431 head too large, 502 no backend or the
//! destination failed, 504 timeout.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::time::Instant;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use super::{for_debug_log, Ended, Ready};
use crate::connect::{self, Attempts, ConnectError, Established};
use crate::context::Snapshot;
use crate::http::{self, HeadError, Target, MAX_HEAD};
use crate::socks5::ReplyCode;
use crate::upstream::{until, UpstreamError};

/// The whole exchange up to a tunnel ready to relay: head, login,
/// connect, the answer.
pub(crate) async fn handshake(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    ip: IpAddr,
    listener: Option<usize>,
    deadline: Instant,
) -> Result<Ready, Ended> {
    let mut buf = Vec::with_capacity(1024);
    let end = match until(deadline, read_head(client, &mut buf)).await {
        Ok(end) => end,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(answer(client, 408, "no complete request head within the handshake timeout").await);
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(answer(client, 431, &HeadError::TooLarge.to_string()).await);
        }
        Err(e) => return Err(Ended::Io(e)),
    };
    let head = match http::parse_head(&buf[..end]) {
        Ok(head) => head,
        Err(e) => return Err(answer(client, e.status(), &e.to_string()).await),
    };
    let target = match http::parse_target(&head) {
        Ok(target) => target,
        Err(e) => return Err(answer(client, e.status(), &e.to_string()).await),
    };
    if let Some(users) = &snap.config.auth {
        let login = head.header("proxy-authorization").and_then(http::basic_credentials);
        let accepted = login.as_ref().is_some_and(|(user, pass)| users.iter().any(|u| u.matches(user, pass)));
        if !accepted {
            if let Some((user, _)) = &login {
                log::info!(
                    "client {ip}: HTTP proxy login failed for user {:?}",
                    String::from_utf8_lossy(user)
                );
            }
            let why = if login.is_some() { "login failed" } else { "this proxy needs a login" };
            let challenge = "Proxy-Authenticate: Basic realm=\"socksbalance\"\r\n";
            return Err(answer_with(client, 407, challenge, why, Ended::Http(407, why.into())).await);
        }
    }
    let (dest, forwarded) = match &target {
        Target::Connect(dest) => (dest, None),
        Target::Absolute { dest, authority, path } => {
            (dest, Some(http::forward_head(&head, authority, path)))
        }
    };
    let established =
        connect::connect(snap, ip, dest, Attempts::new(snap, deadline).on(listener), None).await;
    let Established { upstream, backend, active, bound: _, early_down, judge_first_byte } = match established
    {
        Ok(e) => e,
        Err(e) => {
            let (status, why) = status_of(&e, snap.config.health.request_timeout);
            return Err(answer_with(client, status, "", &why, Ended::Connect(e)).await);
        }
    };
    let body = buf.split_off(end);
    let early_up = match forwarded {
        None => {
            let mut c = client;
            c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
            body
        }
        Some(mut head) => {
            head.extend_from_slice(&body);
            head
        }
    };
    Ok(Ready {
        upstream,
        backend,
        _active: active,
        dest: for_debug_log(dest),
        early_up,
        early_down,
        judge_first_byte,
    })
}

/// Reads until the head is complete; returns its length. What follows it
/// (a body, pipelined bytes) stays in `buf`. A head that grows past
/// [`MAX_HEAD`] is `InvalidData`.
async fn read_head(client: &Async<TcpStream>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut c = client;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = http::head_end(buf) {
            return Ok(end);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
        match c.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status and one-line reason a failed connect gets.
fn status_of(e: &ConnectError, timeout: std::time::Duration) -> (u16, String) {
    match e {
        ConnectError::Denied { rule, .. } => (403, format!("not allowed by deny_destinations ({rule})")),
        ConnectError::Blocked { rule, .. } => (403, format!("blocked by rules[{rule}]")),
        ConnectError::Upstream(UpstreamError::NotAllowed) => (403, "not allowed".into()),
        ConnectError::Upstream(UpstreamError::NoBackend) => (502, "no backend available".into()),
        ConnectError::Upstream(e) if e.timed_out() || e.reply() == ReplyCode::TTL_EXPIRED => {
            (504, e.brief(timeout))
        }
        ConnectError::Upstream(e) => (502, e.brief(timeout)),
    }
}

/// Sends an error answer; returns why the session ends.
async fn answer(client: &Async<TcpStream>, status: u16, why: &str) -> Ended {
    answer_with(client, status, "", why, Ended::Http(status, why.to_owned())).await
}

/// Sends an error answer with `extra` header lines (each ending in CRLF);
/// returns `ended`.
async fn answer_with(client: &Async<TcpStream>, status: u16, extra: &str, why: &str, ended: Ended) -> Ended {
    let mut c = client;
    let _ = c.write_all(&http::response(status, extra, why)).await;
    ended
}
