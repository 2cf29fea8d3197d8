//! The dashboard's front door: bounds what tiny_http ever sees.
//!
//! tiny_http reads a header line without a length limit and gives every
//! connection a thread of its pool, so a client that can reach it could
//! make it allocate without bound or hold many threads. The gate owns the
//! public address instead and, per connection:
//!
//! 1. allows at most [`MAX_CONNECTIONS`] at once (others get `503`);
//! 2. reads the request head, at most [`MAX_HEAD`] bytes within
//!    [`HEAD_TIMEOUT`] (otherwise `431` or `408`);
//! 3. passes exactly those bytes to tiny_http, listening on a private
//!    loopback port, then half-closes, so tiny_http serves this one request
//!    and sees end of input after it;
//! 4. copies the response back and closes.
//!
//! It runs on a thread of its own with its own small executor, like
//! tiny_http, so nothing here can slow the proxy.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::lock::Semaphore;
use smol::{Async, LocalExecutor, Timer};

use crate::upstream::until;

/// Dashboard connections handled at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may take to pass through.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the gate on `listener`, forwarding to `inner`; runs until
/// `stop` closes.
pub fn start(
    listener: TcpListener,
    inner: SocketAddr,
    stop: Receiver<()>,
) -> io::Result<thread::JoinHandle<()>> {
    let listener = Async::new(listener)?;
    thread::Builder::new().name("socksbalance-web-gate".into()).stack_size(256 * 1024).spawn(move || {
        let ex = LocalExecutor::new();
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let accept = async {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // Out of descriptors, say: pause rather than spin.
                        Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(permit) = permits.try_acquire_arc() else {
                    ex.spawn(async move {
                        let _ =
                            until(Instant::now() + Duration::from_secs(1), reply(&client, 503, "busy")).await;
                    })
                    .detach();
                    continue;
                };
                ex.spawn(async move {
                    let _permit = permit;
                    let _ = serve(client, inner).await;
                })
                .detach();
            }
        };
        let stopped = async {
            let _ = stop.recv().await;
        };
        smol::block_on(ex.run(accept.or(stopped)));
    })
}

/// A complete, tiny error response.
async fn reply(mut client: &Async<TcpStream>, status: u16, text: &str) -> io::Result<()> {
    let reason = match status {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let body = format!("{text}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await
}

/// Reads up to the end of the request head; `None` if it is longer than
/// [`MAX_HEAD`]. Bytes after the head (a body) are kept.
async fn read_head(mut client: &Async<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        // Search only the part that could hold a new terminator.
        let from = head.len().saturating_sub(n + 3);
        if let Some(at) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            // The whole head must fit, however the bytes were split.
            return Ok((from + at + 4 <= MAX_HEAD).then_some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn serve(client: Async<TcpStream>, inner: SocketAddr) -> io::Result<()> {
    let head = match until(Instant::now() + HEAD_TIMEOUT, read_head(&client)).await {
        Ok(Some(head)) => head,
        Ok(None) => return reply(&client, 431, "request head too large").await,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return reply(&client, 408, "request too slow").await
        }
        Err(e) => return Err(e),
    };
    let upstream = Async::<TcpStream>::connect(inner).await?;
    let mut u = &upstream;
    u.write_all(&head).await?;
    // One request only: tiny_http sees end of input after it.
    upstream.get_ref().shutdown(Shutdown::Write)?;
    let mut c = &client;
    until(Instant::now() + RESPONSE_TIMEOUT, async {
        smol::io::copy(&mut u, &mut c).await?;
        Ok::<_, io::Error>(())
    })
    .await?;
    let _ = client.get_ref().shutdown(Shutdown::Both);
    Ok(())
}
