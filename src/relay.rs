//! The byte relay between a client and its upstream, once the handshake
//! is done.
//!
//! This is the only code that moves payload, so a Linux splice(2) fast
//! path can replace [`relay`] without touching anything else.
//!
//! Semantics:
//! - **Half-close.** When one side sends FIN, we `shutdown(Write)` the
//!   other side and keep copying the opposite direction until it ends too.
//!   `ssh`/`rsync`/HTTP clients that send a request and then FIN still get
//!   their whole response.
//! - **Errors.** A reset or error in either direction shuts both sockets
//!   down at once, so the other direction ends instead of waiting.
//! - **Idle timeout.** No byte either way for `idle` closes the tunnel
//!   (checked every `idle / 4`, so it closes within 1.25 × `idle`).
//! - **Memory.** A direction holds a [`BUFFER_SIZE`] buffer only while
//!   data is moving through it; an idle tunnel holds none. N tunnels cost
//!   at most N × 2 × `BUFFER_SIZE` when all move data at once, and about
//!   their task and sockets when idle (measured: docs/performance.md).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use smol::future::{self, FutureExt};
use std::io::Read;

use smol::io::AsyncWriteExt;
use smol::{Async, Timer};

use crate::stats::{BackendStats, Counter};

/// Bytes buffered per direction per tunnel. 16 KiB keeps a 1,000-tunnel
/// router at 32 MiB of relay buffers worst case while still moving data in
/// large enough chunks that syscall cost stays small.
pub const BUFFER_SIZE: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their halves.
    Closed,
    /// No traffic for the idle timeout.
    Idle,
    /// A socket failed; the tunnel was torn down.
    Error(io::ErrorKind),
}

/// Bytes moved by one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Client → upstream.
    pub up: u64,
    /// Upstream → client.
    pub down: u64,
    pub end: End,
}

/// Copies both directions until both are closed, one fails, or the tunnel
/// is idle for `idle`. Counts bytes into `stats` as they move, so the
/// dashboard sees long transfers progress.
pub async fn relay(
    client: &Async<TcpStream>,
    upstream: &Async<TcpStream>,
    idle: Duration,
    stats: &BackendStats,
) -> Totals {
    // Bumped on every chunk moved; the watchdog only asks "did it change?",
    // so wrapping is harmless and 32 bits suffice on every target.
    let activity = AtomicU32::new(0);
    let went_idle = AtomicBool::new(false);

    let pipes = future::zip(
        pipe(client, upstream, &activity, &stats.bytes_up),
        pipe(upstream, client, &activity, &stats.bytes_down),
    );
    // The watchdog never completes: when the tunnel goes idle it shuts both
    // sockets, which ends both pipes, which ends the `or`.
    let watchdog = async {
        let tick = (idle / 4).max(Duration::from_millis(1));
        let mut seen = activity.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            Timer::after(tick).await;
            let now = activity.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet >= idle {
                went_idle.store(true, Ordering::Relaxed);
                let _ = client.get_ref().shutdown(Shutdown::Both);
                let _ = upstream.get_ref().shutdown(Shutdown::Both);
                return future::pending().await;
            }
        }
    };
    let ((up, up_err), (down, down_err)) = pipes.or(watchdog).await;
    let end = if went_idle.load(Ordering::Relaxed) {
        End::Idle
    } else {
        match up_err.or(down_err) {
            Some(kind) => End::Error(kind),
            None => End::Closed,
        }
    };
    Totals { up, down, end }
}

/// One direction: copy until EOF (then half-close the writer) or an error
/// (then shut both sockets so the other direction ends too). Returns the
/// bytes moved and the error, if any.
///
/// The buffer exists only while data moves: the pipe takes a
/// [`BUFFER_SIZE`] buffer when the socket is readable, drains what the
/// kernel holds, keeps the buffer while more is ready at once (a bulk
/// transfer), and drops it before it has to wait. An idle tunnel
/// therefore holds no relay buffer at all.
async fn pipe(
    from: &Async<TcpStream>,
    mut to: &Async<TcpStream>,
    activity: &AtomicU32,
    counter: &Counter,
) -> (u64, Option<io::ErrorKind>) {
    let mut total = 0u64;
    let mut buffer: Option<Vec<u8>> = None;
    loop {
        // Busy (readable again at once): keep the buffer. Otherwise give it
        // back before waiting, so an idle direction holds none.
        match smol::future::poll_once(from.readable()).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return (total, Some(abort(from, to, e))),
            None => {
                buffer = None;
                if let Err(e) = from.readable().await {
                    return (total, Some(abort(from, to, e)));
                }
            }
        }
        let buf = buffer.get_or_insert_with(|| vec![0u8; BUFFER_SIZE]);
        loop {
            let n = match from.get_ref().read(buf) {
                Ok(0) => {
                    let _ = to.get_ref().shutdown(Shutdown::Write);
                    return (total, None);
                }
                Ok(n) => n,
                // Drained: give the buffer back and wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (total, Some(abort(from, to, e))),
            };
            if let Err(e) = to.write_all(&buf[..n]).await {
                return (total, Some(abort(from, to, e)));
            }
            total += n as u64;
            counter.add(n as u64);
            activity.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn abort(a: &Async<TcpStream>, b: &Async<TcpStream>, e: io::Error) -> io::ErrorKind {
    let _ = a.get_ref().shutdown(Shutdown::Both);
    let _ = b.get_ref().shutdown(Shutdown::Both);
    e.kind()
}
