//! One health probe through one backend.
//!
//! - With `health.test_url` `http://…`: SOCKS5 CONNECT through the backend
//!   to the URL's host, `GET path`, and a 2xx or 3xx status line counts as
//!   success. The latency is the whole exchange, connect to status line.
//! - With an `https://` URL: the same CONNECT to the host's port 443 (or
//!   the URL's port), and an established tunnel counts as success. There is
//!   no TLS client in the binary (it would roughly double its size on a
//!   router), so the TLS handshake and the HTTP status are not checked.
//!   SocksBalance's example `https://www.google.com` therefore works as
//!   "can this backend reach www.google.com:443".
//! - Without a URL: TCP connect plus a SOCKS5 greeting (and our login, when
//!   the backend has credentials); any valid method choice is success. It
//!   gives no latency sample: a greeting is not what a real connection's
//!   latency measures.
//! - A `direct` backend is probed with the URL from this host; without a
//!   URL there is nothing to check and it always passes.
//!
//! A backend that demands a login we have no credentials for (transparent
//! mode, where clients log in themselves) can only be checked for being
//! alive: its method choice counts as success.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use super::{Failure, Verdict};
use crate::config::{BackendConfig, Credentials, Health, Host, ProbeUrl, Target, Uplink};
use crate::socks5::{self, Address, Domain};
use crate::upstream::{self, until, UpstreamError};

/// What a probe found: a [`Verdict`] that is never neutral (a backend
/// that cannot reach the test URL fails its probe).
pub type ProbeResult = Verdict;

fn success(start: Instant) -> ProbeResult {
    Verdict::Success(Some(start.elapsed()))
}

fn failed_io(e: io::Error, timeout: Duration) -> ProbeResult {
    from_upstream(&UpstreamError::BackendUnreachable(e), timeout)
}

fn from_upstream(e: &UpstreamError, timeout: Duration) -> ProbeResult {
    Verdict::Failed(Failure::of(e, timeout))
}

fn failure(reason: impl Into<String>) -> ProbeResult {
    Verdict::Failed(Failure::new(reason))
}

/// The probe URL's host as a SOCKS5 destination.
fn destination(url: &ProbeUrl) -> Address {
    match url.host.parse() {
        Ok(ip) => Address::Ip(SocketAddr::new(ip, url.port)),
        // Host names are at most 253 bytes (checked at load), so this fits.
        Err(_) => Address::Domain(Domain::from_slice(url.host.as_bytes()).unwrap_or_default(), url.port),
    }
}

/// Probes `backend` once, within `connect_timeout + request_timeout`,
/// reaching a proxy through `via` when it is pinned to an uplink.
///
/// The exchange's state (connect, handshake, HTTP: about 5.4 KiB) lives
/// in a box, so a task that will await a probe is small while it waits
/// for its turn: the start-up round spawns one per backend
/// (docs/performance.md, "Probes wait small").
pub fn probe<'a>(
    backend: &'a BackendConfig,
    via: Option<&'a Uplink>,
    config: &'a Health,
) -> Pin<Box<impl Future<Output = ProbeResult> + 'a>> {
    Box::pin(exchange(backend, via, config))
}

async fn exchange(backend: &BackendConfig, via: Option<&Uplink>, config: &Health) -> ProbeResult {
    let start = Instant::now();
    let limit = config.connect_timeout + config.request_timeout;
    let run = async {
        Ok::<_, io::Error>(match (&backend.target, &config.test_url) {
            (Target::Direct, None) => Verdict::Success(None),
            (Target::Uplink(uplink), url) => uplink_check(uplink, url.as_ref(), start, config).await,
            (Target::Direct, Some(url)) => {
                match upstream::connect_direct(&destination(url), config.connect_timeout, &|_| true, None)
                    .await
                {
                    Ok(stream) => http_check(&stream, url, start, config).await,
                    Err(e) => from_upstream(&e, config.request_timeout),
                }
            }
            (Target::Proxy { host, port }, url) => {
                let creds = backend.credentials.as_ref();
                let greeting = match url {
                    None => probe_greeting(creds),
                    Some(_) => upstream::greeting(creds),
                };
                let stream =
                    match upstream::connect_backend(host, *port, config.connect_timeout, via, greeting).await
                    {
                        Ok(stream) => stream,
                        Err(e) => return Ok(from_upstream(&e, config.connect_timeout)),
                    };
                match url {
                    None => greeting_check(&stream, backend, config).await,
                    Some(url) => {
                        let dest = destination(url);
                        match upstream::socks5_connect(
                            &stream,
                            creds,
                            &dest,
                            config.connect_timeout,
                            config.request_timeout,
                        )
                        .await
                        {
                            Ok(_) => http_check(&stream, url, start, config).await,
                            // Alive, but it wants a login we don't have.
                            Err(UpstreamError::BackendNoMethod) if creds.is_none() => success(start),
                            Err(e) => from_upstream(&e, config.request_timeout),
                        }
                    }
                }
            }
        })
    };
    match until(start + limit, run).await {
        Ok(result) => result,
        Err(e) => failed_io(e, limit),
    }
}

/// An uplink: a TCP connect through the link to `health.uplink_probe`, or
/// else to `test_url`'s host and port. A refusal counts as success: the
/// SYN went out over the link and the answer came back. Without either
/// address there is nothing to connect to, and only the link state and
/// real traffic judge the uplink.
async fn uplink_check(
    uplink: &Uplink,
    url: Option<&ProbeUrl>,
    start: Instant,
    config: &Health,
) -> ProbeResult {
    let dest = match (&config.uplink_probe, url) {
        (Some((Host::Ip(ip), port)), _) => Address::Ip(SocketAddr::new(*ip, *port)),
        (Some((Host::Name(name), port)), _) => {
            Address::Domain(Domain::from_slice(name.as_bytes()).unwrap_or_default(), *port)
        }
        (None, Some(url)) => destination(url),
        (None, None) => return Verdict::Success(None),
    };
    match upstream::connect_direct(&dest, config.connect_timeout, &|_| true, Some(uplink)).await {
        Ok(_) => success(start),
        Err(UpstreamError::Destination(e)) if e.kind() == io::ErrorKind::ConnectionRefused => success(start),
        Err(e) => from_upstream(&e, config.connect_timeout),
    }
}

/// The greeting of a probe without a URL: a login with credentials; else
/// no login or one, as a backend that wants a login is alive all the same.
fn probe_greeting(credentials: Option<&Credentials>) -> &'static [u8] {
    match credentials {
        Some(_) => upstream::greeting(credentials),
        None => &[socks5::VERSION, 2, socks5::METHOD_NO_AUTH, socks5::METHOD_USER_PASS],
    }
}

/// A SOCKS5 greeting (and login, with credentials): is the backend there
/// and speaking the protocol? The connection was opened with
/// [`probe_greeting`].
async fn greeting_check(stream: &Async<TcpStream>, backend: &BackendConfig, config: &Health) -> ProbeResult {
    let mut s = stream;
    let deadline = Instant::now() + config.connect_timeout;
    let offered = &probe_greeting(backend.credentials.as_ref())[2..];
    let chosen = until(deadline, socks5::read_method_choice(&mut s)).await;
    let chosen = match chosen {
        Ok(m) if offered.contains(&m) => m,
        Ok(socks5::METHOD_NONE_ACCEPTABLE) => return failure("accepted none of our auth methods"),
        Ok(m) => return failure(format!("chose auth method {m:#04x}, not offered")),
        Err(e) => return from_upstream(&UpstreamError::BackendProtocol(e), config.connect_timeout),
    };
    if let (socks5::METHOD_USER_PASS, Some(c)) = (chosen, &backend.credentials) {
        let status = until(deadline, async {
            socks5::write_user_pass(&mut s, c.username.as_bytes(), c.password.expose().as_bytes()).await?;
            socks5::read_auth_status(&mut s).await
        })
        .await;
        match status {
            Ok(0) => {}
            Ok(_) => return failure("rejected our credentials"),
            Err(e) => return from_upstream(&UpstreamError::BackendProtocol(e), config.connect_timeout),
        }
    }
    // No latency sample: a greeting takes a fraction of what a real
    // connection's CONNECT does, and mixing the two would make a slow
    // backend look fast to `max_latency` and `lowest_latency`.
    Verdict::Success(None)
}

/// The most of a response we read to find its status line.
const STATUS_LINE_LIMIT: usize = 1024;

/// `GET` over an open tunnel; 2xx or 3xx is success. For https the open
/// tunnel is all we check (see the module docs).
async fn http_check(
    stream: &Async<TcpStream>,
    url: &ProbeUrl,
    start: Instant,
    config: &Health,
) -> ProbeResult {
    if url.https {
        return success(start);
    }
    let mut s = stream;
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let host = if url.port == 80 { host } else { format!("{host}:{}", url.port) };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: socksbalance/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        crate::VERSION
    );
    let exchange = async {
        s.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(128);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 || head.len() >= STATUS_LINE_LIMIT {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(status_code(&head))
    };
    match until(Instant::now() + config.request_timeout, exchange).await {
        Ok(Some(code)) if expected(config, code) => success(start),
        Ok(Some(code)) => failure(format!("test URL answered {code}")),
        Ok(None) => failure("test URL gave no HTTP status"),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => failure("test URL gave no HTTP status"),
        Err(e) => failed_io(e, config.request_timeout),
    }
}

/// The status code of an `HTTP/1.x NNN ...` line.
/// Whether `code` is a good answer: one of `expected_status`, or any
/// 2xx or 3xx when that is not set.
fn expected(config: &Health, code: u16) -> bool {
    if config.expected_status.is_empty() {
        (200..400).contains(&code)
    } else {
        config.expected_status.contains(&code)
    }
}

fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 302 Found\r\nLocation: x"), Some(302));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
    }
}
