//! The byte relay between a client and its upstream, once the handshake
//! is done.
//!
//! This is the only code that moves payload. Two ways to move it:
//!
//! - **splice** (Linux): socket → pipe → socket with splice(2), so the
//!   bytes never enter userspace. A direction copies its first messages
//!   through a small buffer on the stack, and splices once one fills it
//!   (`splice::SMALL`): a request or an echo is a `read` and a `send`, a
//!   download is spliced after its first 4 KiB. A splicing direction takes
//!   a pipe when data arrives and gives it back when it has to wait, so an
//!   idle tunnel holds no pipe; given-back pipes wait in a small
//!   [`PIPE_POOL`] for the next burst, so a burst costs no pipe(2)/close(2).
//!   When no pipe can be had (out of descriptors) or the kernel refuses to
//!   splice these sockets, the direction falls back to copying.
//! - **copy** (everywhere else, and the fallback): read into a
//!   [`BUFFER_SIZE`] buffer, write it out.
//!
//! Semantics:
//! - **Half-close.** When one side sends FIN, we `shutdown(Write)` the
//!   other side and keep copying the opposite direction until it ends too;
//!   its FIN goes out with the close that follows the relay
//!   (`Flow::end_of_stream`).
//!   `ssh`/`rsync`/HTTP clients that send a request and then FIN still get
//!   their whole response.
//! - **Errors.** A reset or error in either direction shuts both sockets
//!   down at once, so the other direction ends instead of waiting.
//! - **Idle timeout.** No byte either way for `idle` closes the tunnel
//!   (checked every `idle / 4`, so it closes within 1.25 × `idle`).
//! - **Memory.** A direction holds a [`BUFFER_SIZE`] buffer (copy) or a
//!   pipe (splice) only while data is moving through it; an idle tunnel
//!   holds neither. Copying, N tunnels cost at most N × 2 × `BUFFER_SIZE`
//!   when all move data at once, and about their task and sockets when
//!   idle (measured: docs/performance.md). A pipe's pages are kernel
//!   memory, at most [`PIPE_SIZE`] per busy direction.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use smol::future::{self, FutureExt};
use std::io::Read;

use smol::io::AsyncWriteExt;
use smol::{Async, Timer};

use crate::stats::BackendStats;

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

/// How [`relay_with`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Through a userspace buffer: read, then write. (On Linux only the
    /// tests choose it whole; splice falls back to copying per direction.)
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Copy,
    /// Through a pipe with splice(2), falling back to [`Method::Copy`]
    /// per direction when splicing is not possible.
    #[cfg(target_os = "linux")]
    Splice,
}

/// What [`relay`] uses: splice on Linux (measured faster: see
/// docs/performance.md, "Relay: splice vs copy"), copy elsewhere.
#[cfg(target_os = "linux")]
pub const DEFAULT_METHOD: Method = Method::Splice;
#[cfg(not(target_os = "linux"))]
pub const DEFAULT_METHOD: Method = Method::Copy;

/// What both directions of a tunnel share: the chunks moved each way so
/// far (for the watchdog), the byte counters, and whether a stream has
/// ended. One reference to it is all a direction holds (a tunnel's task
/// is most of what it costs idle: "Memory per idle tunnel" in
/// docs/performance.md).
struct Flow<'a> {
    /// The counts wrap; only "did it change" matters, so 32 bits suffice
    /// on every target.
    up: AtomicU32,
    down: AtomicU32,
    stats: &'a BackendStats,
    fin: AtomicBool,
}

impl<'a> Flow<'a> {
    fn new(stats: &'a BackendStats) -> Self {
        Flow { up: AtomicU32::new(0), down: AtomicU32::new(0), stats, fin: AtomicBool::new(false) }
    }

    fn total(&self) -> u32 {
        self.up.load(Ordering::Relaxed).wrapping_add(self.down.load(Ordering::Relaxed))
    }

    /// `n` bytes went up (client to upstream) or down.
    fn moved(&self, up: bool, n: usize) {
        let (chunks, bytes) = match up {
            true => (&self.up, &self.stats.bytes_up),
            false => (&self.down, &self.stats.bytes_down),
        };
        bytes.add(n as u64);
        chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// A direction read EOF from its source: the first to do so half-closes
    /// its writer (`shutdown(Write)`), so that the peer sees the FIN while
    /// the other direction goes on. The second makes no call of its own:
    /// with it the relay is over, and the caller's close of both sockets,
    /// which follows at once, sends that FIN (their receive queues are
    /// empty: both were read to EOF). One system call less per tunnel.
    fn end_of_stream(&self, to: &Async<TcpStream>) {
        if !self.fin.swap(true, Ordering::Relaxed) {
            let _ = to.get_ref().shutdown(Shutdown::Write);
        }
    }
}

/// The first-byte check of a new tunnel (docs/health.md, "Stalled
/// tunnels"): a backend that accepted CONNECT and then relays nothing.
/// The relay's watchdog runs it, so it costs a tunnel no timer of its own.
pub struct FirstByte<'a> {
    pub timeout: Duration,
    /// The client sent data before the relay started (read ahead with its
    /// handshake).
    pub client_spoke: bool,
    /// Called once if the tunnel stalls.
    pub on_stall: &'a (dyn Fn() + Sync),
}

/// Where the first-byte check stands: a pure state machine fed with what
/// moved and the time, so its tests need no sockets or sleeps. Kept small
/// (milliseconds in `u32`s): it lives in every new tunnel's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstByteWatch {
    start: Instant,
    timeout_ms: u32,
    /// Milliseconds after `start` when the client first sent data;
    /// `u32::MAX` until it has.
    spoke_ms: u32,
}

impl FirstByteWatch {
    pub fn new(timeout: Duration, client_spoke: bool, start: Instant) -> Self {
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1).max(1);
        FirstByteWatch { start, timeout_ms, spoke_ms: if client_spoke { 0 } else { u32::MAX } }
    }

    /// How often to look while the check runs.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms / 10).max(10))
    }

    /// The verdict once there is one: `Some(true)` stalled, `Some(false)`
    /// not judged or fine. A byte back means fine; a client that stays
    /// silent for the timeout (a server-speaks-first protocol such as
    /// SMTP, whose banner may be slow, or an idle keep-alive) is not
    /// judged; a client that spoke and got nothing back for the timeout
    /// has stalled. Either way the verdict comes within twice the timeout.
    pub fn step(&mut self, up_moved: bool, down_moved: bool, now: Instant) -> Option<bool> {
        if down_moved {
            return Some(false);
        }
        let elapsed =
            u32::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u32::MAX - 1);
        if up_moved && self.spoke_ms == u32::MAX {
            self.spoke_ms = elapsed;
        }
        if self.spoke_ms == u32::MAX {
            (elapsed >= self.timeout_ms).then_some(false)
        } else {
            (elapsed.saturating_sub(self.spoke_ms) >= self.timeout_ms).then_some(true)
        }
    }
}

/// Moves both directions until both are closed, one fails, or the tunnel
/// is idle for `idle`. Counts bytes into `stats` as they move, so the
/// dashboard sees long transfers progress. With `first_byte`, also runs
/// the first-byte check. The caller closes both sockets when it returns:
/// after two clean ends, that close is what sends the second FIN.
///
/// A plain function returning [`relay_with`]'s future, not an `async fn`
/// around it: an `async fn` keeps its own copy of every argument for the
/// tunnel's whole life.
pub fn relay<'a>(
    client: &'a Async<TcpStream>,
    upstream: &'a Async<TcpStream>,
    idle: Duration,
    stats: &'a BackendStats,
    first_byte: Option<&'a FirstByte<'a>>,
) -> impl std::future::Future<Output = Totals> + 'a {
    relay_with(DEFAULT_METHOD, client, upstream, idle, stats, first_byte)
}

/// [`relay`] with the method chosen, for tests and measurements.
pub async fn relay_with(
    method: Method,
    client: &Async<TcpStream>,
    upstream: &Async<TcpStream>,
    idle: Duration,
    stats: &BackendStats,
    first_byte: Option<&FirstByte<'_>>,
) -> Totals {
    let flow = Flow::new(stats);
    let went_idle = AtomicBool::new(false);

    let pipes = future::zip(
        direction(method, client, upstream, &flow, true),
        direction(method, upstream, client, &flow, false),
    );
    // The watchdog never completes: when the tunnel goes idle it shuts both
    // sockets, which ends both pipes, which ends the `or`.
    let watchdog = async {
        let idle_tick = (idle / 4).max(Duration::from_millis(1));
        let mut watch =
            first_byte.map(|f| (FirstByteWatch::new(f.timeout, f.client_spoke, Instant::now()), f));
        let mut seen = flow.total();
        let mut quiet = Duration::ZERO;
        loop {
            let tick = watch.as_ref().map_or(idle_tick, |(w, _)| w.tick().min(idle_tick));
            Timer::after(tick).await;
            if let Some((w, f)) = &mut watch {
                // The counts start at zero with the tunnel: any count is
                // "something moved" (a wrap back to zero takes 4 billion
                // chunks, long after the verdict).
                let moved = |n: &AtomicU32| n.load(Ordering::Relaxed) != 0;
                if let Some(stalled) = w.step(moved(&flow.up), moved(&flow.down), Instant::now()) {
                    if stalled {
                        (f.on_stall)();
                    }
                    watch = None;
                }
            }
            let now = flow.total();
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

/// One direction, by `method`.
async fn direction(
    method: Method,
    from: &Async<TcpStream>,
    to: &Async<TcpStream>,
    flow: &Flow<'_>,
    up: bool,
) -> (u64, Option<io::ErrorKind>) {
    match method {
        Method::Copy => copy(from, to, flow, up, 0).await,
        #[cfg(target_os = "linux")]
        Method::Splice => match splice::direction(from, to, flow, up).await {
            splice::Ended::Done(total, error) => (total, error),
            splice::Ended::CannotSplice(total) => copy(from, to, flow, up, total).await,
        },
    }
}

/// One direction: copy until EOF (then pass it on:
/// [`Flow::end_of_stream`]) or an error (then shut both sockets so the
/// other direction ends too). Returns the bytes moved (counting from
/// `total`) and the error, if any.
///
/// The buffer exists only while data moves: the pipe takes a
/// [`BUFFER_SIZE`] buffer when the socket is readable, drains what the
/// kernel holds, keeps the buffer while more is ready at once (a bulk
/// transfer), and drops it before it has to wait. An idle tunnel
/// therefore holds no relay buffer at all.
async fn copy(
    from: &Async<TcpStream>,
    mut to: &Async<TcpStream>,
    flow: &Flow<'_>,
    up: bool,
    mut total: u64,
) -> (u64, Option<io::ErrorKind>) {
    let mut buffer: Option<Vec<u8>> = None;
    // Whether the last read said `WouldBlock`. Not so before the first
    // wait, which follows the handshake's reads, nor after a short read,
    // which may have left a FIN behind the bytes it took.
    let mut drained = false;
    loop {
        if let Err(e) = readable_or_release(from, drained, || buffer = None).await {
            return (total, Some(abort(from, to, e)));
        }
        let buf = buffer.get_or_insert_with(|| vec![0u8; BUFFER_SIZE]);
        loop {
            let n = match from.get_ref().read(buf) {
                Ok(0) => {
                    flow.end_of_stream(to);
                    return (total, None);
                }
                Ok(n) => n,
                // Drained: give the buffer back and wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (total, Some(abort(from, to, e))),
            };
            if let Err(e) = to.write_all(&buf[..n]).await {
                return (total, Some(abort(from, to, e)));
            }
            total += n as u64;
            flow.moved(up, n);
            // A short read took all the bytes there were: wait instead of
            // asking again for an EAGAIN (one syscall less per message).
            // A FIN may be behind them, so the wait has the kernel look.
            if n < buf.len() {
                drained = false;
                break;
            }
        }
    }
}

/// Waits until `from` is readable. Busy (readable again at once), the
/// direction keeps what it moves data with; otherwise `release` gives that
/// back before the wait, so an idle direction holds no buffer or pipe.
///
/// After a drain (`WouldBlock`) the wait is for the next event,
/// `poll_readable`, which on the daemon's edge-triggered reactors costs no
/// system call; otherwise `readable`, which has the kernel look again if
/// bytes or a FIN may be waiting (vendor/README.md, "Edge-triggered").
async fn readable_or_release(
    from: &Async<TcpStream>,
    drained: bool,
    mut release: impl FnMut(),
) -> io::Result<()> {
    // Left unpolled, so unregistered, when `drained`.
    let mut level = from.readable();
    future::poll_fn(move |cx| {
        let ready = match drained {
            true => from.poll_readable(cx),
            false => std::pin::Pin::new(&mut level).poll(cx),
        };
        if ready.is_pending() {
            release(); // again, it finds nothing left to give back
        }
        ready
    })
    .await
}

fn abort(a: &Async<TcpStream>, b: &Async<TcpStream>, e: io::Error) -> io::ErrorKind {
    let _ = a.get_ref().shutdown(Shutdown::Both);
    let _ = b.get_ref().shutdown(Shutdown::Both);
    e.kind()
}

/// Kernel buffer of a relay pipe, and the most one splice(2) moves. 256 KiB
/// (64 pages) moved a GiB with about a third less CPU than the kernel's
/// default 64 KiB, and 1 MiB gained nothing more (docs/performance.md,
/// "Relay: splice vs copy"). Pages are taken only while bytes sit in the
/// pipe, so an empty pooled pipe costs its ring of 64 slots, not 256 KiB.
#[cfg(target_os = "linux")]
pub const PIPE_SIZE: usize = 256 * 1024;

/// What Linux gives a new pipe.
#[cfg(target_os = "linux")]
const KERNEL_PIPE_SIZE: usize = 64 * 1024;

/// Idle pipes kept for the next burst, process-wide (a pipe is two file
/// descriptors, not memory of any one tunnel). Beyond this, a given-back
/// pipe is closed.
#[cfg(target_os = "linux")]
pub const PIPE_POOL: usize = 32;

#[cfg(target_os = "linux")]
mod splice {
    use super::*;
    use rustix::fd::OwnedFd;
    use rustix::pipe::{PipeFlags, SpliceFlags};
    use std::sync::Mutex;

    /// A pipe: its read end and its write end.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    /// The pool of idle pipes, empty until a pipe is given back. A
    /// process-wide cache like the allocator's: the lock is held only to
    /// push or pop, never across an `.await`.
    static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(pipe);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        if PIPE_SIZE != KERNEL_PIPE_SIZE {
            // Best effort: an unprivileged process may be capped by
            // /proc/sys/fs/pipe-max-size; the pipe works at any size.
            let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        }
        Ok(Pipe { read, write })
    }

    /// Gives an empty pipe back (a pipe with bytes in it is closed: its
    /// bytes belong to a tunnel that failed).
    fn give_back(pipe: Pipe) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < PIPE_POOL {
            pool.push(pipe);
        }
    }

    pub(super) enum Ended {
        /// The direction is over: bytes moved, and the error if any.
        Done(u64, Option<io::ErrorKind>),
        /// Splicing is not possible here (no pipe, or the kernel refuses
        /// these descriptors) and no byte was lost: copy from now on.
        CannotSplice(u64),
    }

    #[cfg(test)]
    thread_local! {
        /// Tests only: how many more socket-to-pipe splices this thread's
        /// relays may make before the kernel "refuses" them (`EINVAL`, as
        /// for descriptors that cannot be spliced). `None`: no refusal.
        pub(super) static SPLICES_LEFT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
        /// Tests only: socket-to-pipe splices this thread's relays made.
        pub(super) static SPLICES_MADE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        /// Tests only: reads into the stack buffer ([`copy_small`]).
        pub(super) static SMALL_READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// splice(2) from the socket into the pipe.
    fn splice_in(from: &Async<TcpStream>, pipe: &Pipe, flags: SpliceFlags) -> rustix::io::Result<usize> {
        #[cfg(test)]
        SPLICES_MADE.set(SPLICES_MADE.get() + 1);
        #[cfg(test)]
        if let Some(left) = SPLICES_LEFT.get() {
            if left == 0 {
                return Err(rustix::io::Errno::INVAL);
            }
            SPLICES_LEFT.set(Some(left - 1));
        }
        rustix::pipe::splice(from.get_ref(), None, &pipe.write, None, PIPE_SIZE, flags)
    }

    /// Errors that mean "splice cannot work here", not "the tunnel broke".
    pub(super) fn unsupported(e: &io::Error) -> bool {
        matches!(
            rustix::io::Errno::from_io_error(e),
            Some(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP)
        )
    }

    /// A direction copies its messages through a [`SMALL`] buffer on the
    /// stack until one fills it, and splices from then on (HAProxy's
    /// "splice-auto" does the like). A small message (a request, an echo,
    /// a keystroke) is then a `read` and a `send`, where splicing it takes
    /// two splices, each dearer than those for a few bytes; a bulk
    /// direction pays one copy of [`SMALL`] bytes before its splices. The
    /// buffer lives only within [`copy_small`], never across an `.await`,
    /// so it costs a tunnel's task nothing.
    pub(super) const SMALL: usize = 4096;

    /// What one [`copy_small`] did.
    pub(super) enum Small {
        /// Read this many bytes and sent them all.
        Moved(usize),
        /// Read this many bytes and sent only some: the rest is to be
        /// written once `to` takes more.
        Rest(usize, Vec<u8>),
        /// Nothing to read: wait for the next edge.
        Drained,
        /// The source sent its FIN.
        Eof,
        Failed(io::Error),
    }

    /// One read from `from` into a [`SMALL`] stack buffer and as much of
    /// a send to `to` as it takes at once, both without waiting.
    pub(super) fn copy_small(from: &TcpStream, mut to: &TcpStream) -> Small {
        let mut buf = [0u8; SMALL];
        let n = loop {
            match (&mut &*from).read(&mut buf) {
                Ok(0) => return Small::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Small::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Small::Failed(e),
            }
        };
        let mut sent = 0;
        while sent < n {
            match io::Write::write(&mut to, &buf[sent..n]) {
                Ok(0) => return Small::Failed(io::ErrorKind::WriteZero.into()),
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Small::Rest(n, buf[sent..n].to_vec())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Small::Failed(e),
            }
        }
        Small::Moved(n)
    }

    /// Like [`super::copy`], through a pipe: splice what the socket holds
    /// into the pipe, splice the pipe out to the other socket, repeat while
    /// data keeps coming; give the pipe back before waiting. Until the
    /// direction turns out to carry bulk, it copies instead ([`SMALL`]).
    pub(super) async fn direction(
        from: &Async<TcpStream>,
        to: &Async<TcpStream>,
        flow: &Flow<'_>,
        up: bool,
    ) -> Ended {
        let mut total = 0u64;
        let mut pipe: Option<Pipe> = None;
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        // Every wait follows an EAGAIN: the first read comes before any
        // wait, as the handshake may have left bytes or a FIN behind (a
        // read that finds nothing costs what the re-registration of a
        // `readable()` would).
        let mut bulk = false;
        let mut first = true;
        'wait: loop {
            let release = || {
                if let Some(p) = pipe.take() {
                    give_back(p);
                }
            };
            if !std::mem::take(&mut first) {
                if let Err(e) = readable_or_release(from, true, release).await {
                    return Ended::Done(total, Some(abort(from, to, e)));
                }
            }
            while !bulk {
                #[cfg(test)]
                SMALL_READS.set(SMALL_READS.get() + 1);
                let n = match copy_small(from.get_ref(), to.get_ref()) {
                    Small::Moved(n) => n,
                    Small::Rest(n, rest) => {
                        if let Err(e) = (&mut &*to).write_all(&rest).await {
                            return Ended::Done(total, Some(abort(from, to, e)));
                        }
                        n
                    }
                    Small::Drained => continue 'wait,
                    Small::Eof => {
                        flow.end_of_stream(to);
                        return Ended::Done(total, None);
                    }
                    Small::Failed(e) => return Ended::Done(total, Some(abort(from, to, e))),
                };
                total += n as u64;
                flow.moved(up, n);
                bulk = n == SMALL;
            }
            let p = match &pipe {
                Some(p) => p,
                None => match take() {
                    Ok(p) => pipe.insert(p),
                    // Out of descriptors: this direction copies instead.
                    Err(_) => return Ended::CannotSplice(total),
                },
            };
            loop {
                let n = match splice_in(from, p, flags) {
                    Ok(0) => {
                        flow.end_of_stream(to);
                        if let Some(p) = pipe.take() {
                            give_back(p);
                        }
                        return Ended::Done(total, None);
                    }
                    Ok(n) => n,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        let e = io::Error::from(e);
                        // The pipe is empty here: copying loses nothing.
                        if unsupported(&e) {
                            return Ended::CannotSplice(total);
                        }
                        return Ended::Done(total, Some(abort(from, to, e)));
                    }
                };
                // Drain the pipe into `to` before reading more, so the pipe
                // is empty whenever this loop waits or gives it back.
                let mut left = n;
                while left > 0 {
                    match rustix::pipe::splice(&p.read, None, to.get_ref(), None, left, flags) {
                        Ok(m) => left -= m,
                        Err(rustix::io::Errno::AGAIN) => {
                            if let Err(e) = future::poll_fn(|cx| to.poll_writable(cx)).await {
                                return Ended::Done(total, Some(abort(from, to, e)));
                            }
                        }
                        Err(rustix::io::Errno::INTR) => {}
                        // Returning drops the pipe, bytes and all: a pipe
                        // with a dead tunnel's bytes never goes back.
                        Err(e) => return Ended::Done(total, Some(abort(from, to, e.into()))),
                    }
                }
                total += n as u64;
                flow.moved(up, n);
                // Unlike a short read (`copy`), a short splice may leave
                // bytes behind: the pipe holds one socket buffer per slot,
                // and small segments fill its 64 slots with far less than
                // PIPE_SIZE. Level-triggered, the wait would report them at
                // once; the daemon's reactors are edge-triggered
                // (vendor/README.md) and report only what comes next, so
                // the loop splices on until EAGAIN.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_watch_judges_a_client_that_spoke_and_got_nothing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let second = Duration::from_secs(1);
        // Spoke at 300 ms, nothing back: stalled one timeout later.
        let mut w = FirstByteWatch::new(second, false, t0);
        assert_eq!(w.step(false, false, ms(200)), None);
        assert_eq!(w.step(true, false, ms(300)), None);
        assert_eq!(w.step(true, false, ms(1_299)), None);
        assert_eq!(w.step(true, false, ms(1_300)), Some(true));
        // Spoke with its handshake, and an answer came: fine.
        let mut w = FirstByteWatch::new(second, true, t0);
        assert_eq!(w.step(true, true, ms(900)), Some(false));
        // Never spoke (SMTP waits for the banner): not judged.
        let mut w = FirstByteWatch::new(second, false, t0);
        assert_eq!(w.step(false, false, ms(999)), None);
        assert_eq!(w.step(false, false, ms(1_000)), Some(false));
        assert_eq!(w.tick(), Duration::from_millis(100));
    }
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;

    /// Every way this platform can relay.
    fn methods() -> Vec<Method> {
        #[cfg(target_os = "linux")]
        return vec![Method::Copy, Method::Splice];
        #[cfg(not(target_os = "linux"))]
        return vec![Method::Copy];
    }

    /// A byte stream no offset bug can pass: each 8-byte block is its
    /// own offset, and the length is not a multiple of any buffer size.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i / 8) as u64).to_le_bytes()[i % 8] ^ (i as u8)).collect()
    }

    /// The relay's totals, the bytes it counted up and down, and (on
    /// Linux) the socket-to-pipe splices and the small reads it made.
    type Relay = thread::JoinHandle<(Totals, u64, u64, (u32, u32))>;

    /// A tunnel over real loopback sockets: the client's end, the
    /// destination's end (blocking), and the thread running the relay
    /// ([`Relay`]).
    fn tunnel(method: Method) -> (TcpStream, TcpStream, Relay) {
        tunnel_splicing_at_most(method, None)
    }

    /// [`tunnel`], its relay allowed only `splices` socket-to-pipe splices
    /// before they fail as unsupported (`None`: no limit).
    fn tunnel_splicing_at_most(method: Method, splices: Option<u32>) -> (TcpStream, TcpStream, Relay) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (client_side, _) = listener.accept().unwrap();
        let upstream_side = TcpStream::connect(addr).unwrap();
        let (destination, _) = listener.accept().unwrap();
        for s in [&client, &destination] {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        let relay = thread::spawn(move || {
            // As on the daemon's executor threads: a reactor of its own,
            // so on Linux edge-triggered sources (vendor/README.md).
            async_io::use_own_reactor().unwrap();
            #[cfg(target_os = "linux")]
            splice::SPLICES_LEFT.set(splices);
            #[cfg(not(target_os = "linux"))]
            let _ = splices;
            let stats = BackendStats::default();
            let (c, u) = (Async::new(client_side).unwrap(), Async::new(upstream_side).unwrap());
            let totals = smol::block_on(relay_with(method, &c, &u, Duration::from_secs(60), &stats, None));
            #[cfg(target_os = "linux")]
            let calls = (splice::SPLICES_MADE.get(), splice::SMALL_READS.get());
            #[cfg(not(target_os = "linux"))]
            let calls = (0, 0);
            (totals, stats.bytes_up.get(), stats.bytes_down.get(), calls)
        });
        (client, destination, relay)
    }

    fn send_then_fin(mut to: TcpStream, data: Vec<u8>) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            to.write_all(&data).unwrap();
            to.shutdown(Shutdown::Write).unwrap();
        })
    }

    fn read_to_eof(mut from: &TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        from.read_to_end(&mut got).unwrap();
        got
    }

    /// Sends `up_len` bytes up and `down_len` down through the tunnel at
    /// once, each side half-closing when done; checks every byte and the
    /// relay's totals and counters.
    fn both_ways_at_once(
        (client, destination, relay): (TcpStream, TcpStream, Relay),
        up_len: usize,
        down_len: usize,
        what: &str,
    ) {
        let (up, down) = (pattern(up_len), pattern(down_len));
        let senders = [
            send_then_fin(client.try_clone().unwrap(), up.clone()),
            send_then_fin(destination.try_clone().unwrap(), down.clone()),
        ];
        let got_up = read_to_eof(&destination);
        let got_down = read_to_eof(&client);
        for s in senders {
            s.join().unwrap();
        }
        assert!(got_up == up, "{what}: upload corrupted ({} of {} bytes)", got_up.len(), up.len());
        assert!(got_down == down, "{what}: download corrupted ({} of {} bytes)", got_down.len(), down.len());
        let (totals, counted_up, counted_down, _) = relay.join().unwrap();
        assert_eq!(totals, Totals { up: up_len as u64, down: down_len as u64, end: End::Closed }, "{what}");
        assert_eq!((counted_up, counted_down), (totals.up, totals.down), "{what}");
    }

    #[test]
    fn large_transfers_both_ways_at_once_arrive_intact() {
        for method in methods() {
            both_ways_at_once(tunnel(method), 24 << 20 | 12_345, 16 << 20 | 777, &format!("{method:?}"));
        }
    }

    #[test]
    fn half_close_lets_the_other_direction_finish() {
        for method in methods() {
            let (mut client, mut destination, relay) = tunnel(method);
            client.write_all(b"request").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&destination), b"request", "{method:?}: FIN passed after the data");
            // The client's half is closed; the answer still flows, in
            // many pieces and after a pause.
            let answer = pattern(3 << 20);
            destination.write_all(&answer[..1000]).unwrap();
            let mut first = vec![0u8; 1000];
            client.read_exact(&mut first).unwrap();
            destination.write_all(&answer[1000..]).unwrap();
            destination.shutdown(Shutdown::Write).unwrap();
            let mut rest = read_to_eof(&client);
            first.append(&mut rest);
            assert!(first == answer, "{method:?}: answer after half-close corrupted");
            let (totals, ..) = relay.join().unwrap();
            assert_eq!(totals.end, End::Closed, "{method:?}");
            assert_eq!((totals.up, totals.down), (7, answer.len() as u64), "{method:?}");
        }
    }

    #[test]
    fn a_reset_ends_both_directions() {
        for method in methods() {
            let (client, destination, relay) = tunnel(method);
            (&client).write_all(b"x").unwrap();
            let mut one = [0u8; 1];
            (&destination).read_exact(&mut one).unwrap();
            (&destination).write_all(b"answer").unwrap();
            let mut six = [0u8; 6];
            (&client).read_exact(&mut six).unwrap();
            // Linger 0: closing sends RST, not FIN.
            rustix::net::sockopt::set_socket_linger(&destination, Some(Duration::ZERO)).unwrap();
            drop(destination);
            // The client's side is shut down too, rather than left waiting
            // on a tunnel that is gone (the read times out after 30 s).
            let mut rest = Vec::new();
            let _ = (&client).read_to_end(&mut rest);
            let (totals, ..) = relay.join().unwrap();
            assert_eq!(totals.end, End::Error(io::ErrorKind::ConnectionReset), "{method:?}");
            assert_eq!((totals.up, totals.down), (1, 6), "{method:?}");
        }
    }

    /// The fallback the kernel can force at any point of a tunnel (a
    /// descriptor it will not splice): each direction goes on copying
    /// from where splicing stopped, and no byte is lost or counted twice.
    #[cfg(target_os = "linux")]
    #[test]
    fn falling_back_to_copying_mid_transfer_loses_and_repeats_nothing() {
        for splices in [0, 1, 7, 40] {
            let tunnel = tunnel_splicing_at_most(Method::Splice, Some(splices));
            both_ways_at_once(tunnel, 6 << 20 | 4_321, 5 << 20 | 99, &format!("after {splices} splices"));
        }
    }

    /// Small messages each way are copied (no splice at all); a direction
    /// that fills the stack buffer splices from then on, and every byte
    /// arrives in order across the switch.
    #[cfg(target_os = "linux")]
    #[test]
    fn small_messages_are_copied_and_bulk_is_spliced() {
        let (mut client, mut destination, relay) = tunnel(Method::Splice);
        let mut got = [0u8; 100];
        for i in 0..50u8 {
            client.write_all(&[i; 100]).unwrap();
            destination.read_exact(&mut got).unwrap();
            assert_eq!(got, [i; 100]);
            destination.write_all(&[!i; 100]).unwrap();
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, [!i; 100]);
        }
        drop((client, destination));
        let (totals, _, _, (splices, reads)) = relay.join().unwrap();
        assert_eq!((totals.up, totals.down, splices), (5_000, 5_000, 0));
        // Each message a read with bytes and one that finds none; then the
        // FIN, and each direction's first read, before its first wait.
        assert!((200..=204).contains(&reads), "{reads} reads for 100 messages");

        let (client, destination, relay) = tunnel(Method::Splice);
        (&client).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut request = [0u8; 18];
        (&destination).read_exact(&mut request).unwrap();
        let answer = pattern(3 << 20 | 5);
        let sender = send_then_fin(destination.try_clone().unwrap(), answer.clone());
        assert!(read_to_eof(&client) == answer, "the answer arrives whole, in order");
        sender.join().unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let (totals, _, _, (splices, _)) = relay.join().unwrap();
        assert_eq!((totals.up, totals.down), (18, answer.len() as u64));
        assert!(splices > 0, "a bulk answer is spliced");
    }

    /// A small message that `to` cannot take whole is kept, not lost: what
    /// the send did not take comes back to be written later.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_small_message_the_other_side_cannot_take_yet_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut source = TcpStream::connect(addr).unwrap();
        let (from, _) = listener.accept().unwrap();
        let to = TcpStream::connect(addr).unwrap();
        let (mut sink, _) = listener.accept().unwrap();
        from.set_nonblocking(true).unwrap();
        to.set_nonblocking(true).unwrap();
        assert!(matches!(splice::copy_small(&from, &to), splice::Small::Drained));
        // Fill `to` until it takes nothing more.
        let mut filled = 0usize;
        loop {
            match (&to).write(&[7u8; 65_536]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        source.write_all(&pattern(1_000)).unwrap();
        let mut waited = 0;
        let rest = loop {
            match splice::copy_small(&from, &to) {
                splice::Small::Rest(n, rest) => break (n, rest),
                splice::Small::Drained if waited < 1_000 => {
                    // Not arrived yet: the bytes are on their way over loopback.
                    waited += 1;
                    thread::yield_now();
                }
                _ => panic!("expected the message back, unsent"),
            }
        };
        let (read, unsent) = rest;
        assert_eq!(read, 1_000);
        assert!(!unsent.is_empty());
        let mut drained = vec![0u8; filled];
        sink.read_exact(&mut drained).unwrap();
        assert!(drained.iter().all(|&b| b == 7));
        // What was sent at once, then the rest: the message, in order.
        to.set_nonblocking(false).unwrap();
        (&to).write_all(&unsent).unwrap();
        let mut message = vec![0u8; 1_000];
        sink.read_exact(&mut message).unwrap();
        assert!(message == pattern(1_000));
        source.shutdown(Shutdown::Write).unwrap();
        from.set_nonblocking(false).unwrap();
        assert!(matches!(splice::copy_small(&from, &to), splice::Small::Eof));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_unsupported_descriptors_fall_back_to_copying() {
        use rustix::io::Errno;
        for errno in [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP] {
            assert!(splice::unsupported(&io::Error::from(errno)), "{errno:?}");
        }
        for errno in [Errno::CONNRESET, Errno::PIPE, Errno::NOMEM] {
            assert!(
                !splice::unsupported(&io::Error::from(errno)),
                "{errno:?}: a broken tunnel, not a fallback"
            );
        }
    }
}
