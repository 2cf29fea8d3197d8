use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::panic;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use concurrent_queue::ConcurrentQueue;
use polling::{Event, Events, Poller};
use slab::Slab;

// Choose the proper implementation of `Registration` based on the target platform.
cfg_if::cfg_if! {
    if #[cfg(windows)] {
        mod windows;
        pub use windows::Registration;
    } else if #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
    ))] {
        mod kqueue;
        pub use kqueue::Registration;
    } else if #[cfg(unix)] {
        mod unix;
        pub use unix::Registration;
    } else {
        compile_error!("unsupported platform");
    }
}

#[cfg(not(target_os = "espidf"))]
const TIMER_QUEUE_SIZE: usize = 1000;

/// ESP-IDF - being an embedded OS - does not need so many timers
/// and this saves ~ 20K RAM which is a lot for an MCU with RAM < 400K
#[cfg(target_os = "espidf")]
const TIMER_QUEUE_SIZE: usize = 100;

const READ: usize = 0;
const WRITE: usize = 1;

/// The reactor.
///
/// There is one global instance of this type, and one more for each thread
/// that asked for its own with [`crate::use_own_reactor`] (patched,
/// socksbalance); [`Reactor::current()`] gives the calling thread's.
pub(crate) struct Reactor {
    /// Portable bindings to epoll/kqueue/event ports/IOCP.
    ///
    /// This is where I/O is polled, producing I/O events.
    pub(crate) poller: Poller,

    /// Ticker bumped before polling.
    ///
    /// This is useful for checking what is the current "round" of `ReactorLock::react()` when
    /// synchronizing things in `Source::readable()` and `Source::writable()`. Both of those
    /// methods must make sure they don't receive stale I/O events - they only accept events from a
    /// fresh "round" of `ReactorLock::react()`.
    ticker: AtomicUsize,

    /// Registered sources.
    sources: Mutex<Slab<Arc<Source>>>,

    /// Temporary storage for I/O events when polling the reactor.
    ///
    /// Holding a lock on this event list implies the exclusive right to poll I/O.
    events: Mutex<Events>,

    /// An ordered map of registered timers.
    ///
    /// Timers are in the order in which they fire. The `usize` in this type is a timer ID used to
    /// distinguish timers that fire at the same time. The `Waker` represents the task awaiting the
    /// timer.
    timers: Mutex<BTreeMap<(Instant, usize), Waker>>,

    /// A queue of timer operations (insert and remove).
    ///
    /// When inserting or removing a timer, we don't process it immediately - we just push it into
    /// this queue. Timers actually get processed when the queue fills up or the reactor is polled.
    timer_ops: ConcurrentQueue<TimerOp>,

    /// The wakers `ReactorLock::react()` collects, kept between calls so
    /// that reacting allocates nothing (patched, socksbalance). Only the
    /// thread holding `events` locks it.
    wakers: Mutex<Vec<Waker>>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor").finish_non_exhaustive()
    }
}

/// Most wakers' room `wakers` keeps after a burst.
const WAKERS_KEPT: usize = 256;

thread_local! {
    /// The calling thread's own reactor, if it asked for one (patched,
    /// socksbalance; see `use_own_reactor`).
    static OWN: std::cell::RefCell<Option<Arc<Reactor>>> = const { std::cell::RefCell::new(None) };
}

impl Reactor {
    /// A new reactor, not yet shared.
    fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poller: Poller::new()?,
            ticker: AtomicUsize::new(0),
            sources: Mutex::new(Slab::new()),
            events: Mutex::new(Events::new()),
            timers: Mutex::new(BTreeMap::new()),
            timer_ops: ConcurrentQueue::bounded(TIMER_QUEUE_SIZE),
            wakers: Mutex::new(Vec::new()),
        })
    }

    /// Returns a reference to the global reactor, which the "async-io"
    /// thread drives when no `block_on` does.
    pub(crate) fn global() -> &'static Arc<Reactor> {
        static REACTOR: OnceLock<Arc<Reactor>> = OnceLock::new();

        REACTOR.get_or_init(|| {
            crate::driver::init();
            Arc::new(Reactor::new().expect("cannot initialize I/O event notification"))
        })
    }

    /// Returns the calling thread's reactor: its own if it has one (patched,
    /// socksbalance), else the global one. Sources and timers registered
    /// from this thread go there, and stay there wherever they are polled.
    pub(crate) fn current() -> Arc<Reactor> {
        OWN.with(|own| own.borrow().clone()).unwrap_or_else(|| Arc::clone(Reactor::global()))
    }

    /// Whether the calling thread has a reactor of its own.
    pub(crate) fn is_own() -> bool {
        OWN.with(|own| own.borrow().is_some())
    }

    /// Gives the calling thread a reactor of its own (patched, socksbalance).
    pub(crate) fn make_own() -> io::Result<()> {
        if Reactor::is_own() {
            return Ok(());
        }
        let reactor = Arc::new(Reactor::new()?);
        OWN.with(|own| *own.borrow_mut() = Some(reactor));
        Ok(())
    }

    /// Returns the current ticker.
    pub(crate) fn ticker(&self) -> usize {
        self.ticker.load(Ordering::SeqCst)
    }

    /// Registers an I/O source in the reactor.
    pub(crate) fn insert_io(self: &Arc<Self>, raw: Registration) -> io::Result<Arc<Source>> {
        // socksbalance patch: on Linux, a source of the calling thread's own
        // reactor is registered edge-triggered (see `Source::edge`).
        let edge = cfg!(any(target_os = "linux", target_os = "android")) && self.is_owned_here();

        // Create an I/O source for this file descriptor.
        let source = {
            let mut sources = self.sources.lock().unwrap();
            let key = sources.vacant_entry().key();
            let source = Arc::new(Source {
                registration: raw,
                key,
                state: Default::default(),
                reactor: Arc::clone(self),
                edge,
            });
            sources.insert(source.clone());
            source
        };

        // Register the file descriptor.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let added = match edge {
            true => source.registration.add_edge(&self.poller, source.key),
            false => source.registration.add(&self.poller, source.key),
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let added = source.registration.add(&self.poller, source.key);
        if let Err(err) = added {
            let mut sources = self.sources.lock().unwrap();
            sources.remove(source.key);
            return Err(err);
        }

        Ok(source)
    }

    /// Deregisters an I/O source from the reactor.
    pub(crate) fn remove_io(&self, source: &Source) -> io::Result<()> {
        let mut sources = self.sources.lock().unwrap();
        sources.remove(source.key);
        source.registration.delete(&self.poller)
    }

    /// Deregisters an I/O source whose descriptor is about to be closed
    /// (socksbalance patch). On Linux, closing the last descriptor of a
    /// file takes it out of every epoll set, so `EPOLL_CTL_DEL` is a system
    /// call for nothing: only the source is forgotten. Should the file live
    /// on in a duplicate descriptor, its registration, disarmed after its
    /// one-shot event, can report once more under a key that is then
    /// unused or another source's, which costs that source a spurious wake
    /// (async-io retries the operation). Elsewhere the same as `remove_io`.
    pub(crate) fn remove_io_closing(&self, source: &Source) -> io::Result<()> {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            self.sources.lock().unwrap().remove(source.key);
            Ok(())
        } else {
            self.remove_io(source)
        }
    }

    /// Registers a timer in the reactor.
    ///
    /// Returns the inserted timer's ID.
    pub(crate) fn insert_timer(&self, when: Instant, waker: &Waker) -> usize {
        // Generate a new timer ID.
        static ID_GENERATOR: AtomicUsize = AtomicUsize::new(1);
        let id = ID_GENERATOR.fetch_add(1, Ordering::Relaxed);

        // Push an insert operation.
        while self
            .timer_ops
            .push(TimerOp::Insert(when, id, waker.clone()))
            .is_err()
        {
            // If the queue is full, drain it and try again.
            let mut timers = self.timers.lock().unwrap();
            self.process_timer_ops(&mut timers);
        }

        // Notify that a timer has been inserted.
        //
        // socksbalance patch: not when this thread owns the reactor. Then
        // nobody waits in it now (its one driver is here, running a task),
        // and its next `react` takes the timer into account before it
        // waits; a notification would only cost an eventfd write, and an
        // extra wake-up with its read and re-arm.
        if !self.is_owned_here() {
            self.notify();
        }

        id
    }

    /// Whether this is the calling thread's own reactor (socksbalance patch).
    fn is_owned_here(&self) -> bool {
        OWN.with(|own| own.borrow().as_ref().is_some_and(|r| std::ptr::eq(Arc::as_ptr(r), self)))
    }

    /// Deregisters a timer from the reactor.
    pub(crate) fn remove_timer(&self, when: Instant, id: usize) {
        // Push a remove operation.
        while self.timer_ops.push(TimerOp::Remove(when, id)).is_err() {
            // If the queue is full, drain it and try again.
            let mut timers = self.timers.lock().unwrap();
            self.process_timer_ops(&mut timers);
        }
    }

    /// Notifies the thread blocked on the reactor.
    pub(crate) fn notify(&self) {
        self.poller.notify().expect("failed to notify reactor");
    }

    /// Locks the reactor, potentially blocking if the lock is held by another thread.
    pub(crate) fn lock(&self) -> ReactorLock<'_> {
        let reactor = self;
        let events = self.events.lock().unwrap();
        ReactorLock { reactor, events }
    }

    /// Attempts to lock the reactor.
    pub(crate) fn try_lock(&self) -> Option<ReactorLock<'_>> {
        self.events.try_lock().ok().map(|events| {
            let reactor = self;
            ReactorLock { reactor, events }
        })
    }

    /// Processes ready timers and extends the list of wakers to wake.
    ///
    /// Returns the duration until the next timer before this method was called.
    fn process_timers(&self, wakers: &mut Vec<Waker>) -> Option<Duration> {
        #[cfg(feature = "tracing")]
        let span = tracing::trace_span!("process_timers");
        #[cfg(feature = "tracing")]
        let _enter = span.enter();

        let mut timers = self.timers.lock().unwrap();
        self.process_timer_ops(&mut timers);

        let now = Instant::now();

        // Take the ready timers: those set for `now` or earlier.
        //
        // Patched (socksbalance, vendor/README.md): one at a time from the
        // front, not with `split_off`, which allocates a tree node on
        // every call, ready timers or not.
        let mut fired = false;
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            wakers.push(entry.remove());
            fired = true;
        }

        // Calculate the duration until the next event.
        let dur = if fired {
            // Timers are about to fire right now.
            Some(Duration::from_secs(0))
        } else {
            // Duration until the next timer.
            timers
                .keys()
                .next()
                .map(|(when, _)| when.saturating_duration_since(now))
        };

        // Drop the lock before waking.
        drop(timers);

        #[cfg(feature = "tracing")]
        tracing::trace!("{} ready wakers", wakers.len());

        dur
    }

    /// Processes queued timer operations.
    fn process_timer_ops(&self, timers: &mut MutexGuard<'_, BTreeMap<(Instant, usize), Waker>>) {
        // Process only as much as fits into the queue, or else this loop could in theory run
        // forever.
        self.timer_ops
            .try_iter()
            .take(self.timer_ops.capacity().unwrap())
            .for_each(|op| match op {
                TimerOp::Insert(when, id, waker) => {
                    timers.insert((when, id), waker);
                }
                TimerOp::Remove(when, id) => {
                    timers.remove(&(when, id));
                }
            });
    }
}

/// A lock on the reactor.
pub(crate) struct ReactorLock<'a> {
    reactor: &'a Reactor,
    events: MutexGuard<'a, Events>,
}

impl ReactorLock<'_> {
    /// Processes new events, blocking until the first event or the timeout.
    pub(crate) fn react(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        #[cfg(feature = "tracing")]
        let span = tracing::trace_span!("react");
        #[cfg(feature = "tracing")]
        let _enter = span.enter();

        let mut wakers = mem::take(&mut *self.reactor.wakers.lock().unwrap());

        // Process ready timers.
        let next_timer = self.reactor.process_timers(&mut wakers);

        // compute the timeout for blocking on I/O events.
        let timeout = match (next_timer, timeout) {
            (None, None) => None,
            (Some(t), None) | (None, Some(t)) => Some(t),
            (Some(a), Some(b)) => Some(a.min(b)),
        };

        // Bump the ticker before polling I/O.
        let tick = self
            .reactor
            .ticker
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);

        self.events.clear();

        // Block on I/O events.
        let res = match self.reactor.poller.wait(&mut self.events, timeout) {
            // No I/O events occurred.
            Ok(0) => {
                if timeout != Some(Duration::from_secs(0)) {
                    // The non-zero timeout was hit so fire ready timers.
                    self.reactor.process_timers(&mut wakers);
                }
                Ok(())
            }

            // At least one I/O event occurred.
            Ok(_) => {
                // Iterate over sources in the event list.
                let sources = self.reactor.sources.lock().unwrap();

                for ev in self.events.iter() {
                    // Check if there is a source in the table with this key.
                    if let Some(source) = sources.get(ev.key) {
                        let mut state = source.state.lock().unwrap();

                        // Collect wakers if any event was emitted.
                        for &(dir, emitted) in &[(WRITE, ev.writable), (READ, ev.readable)] {
                            if emitted {
                                state[dir].tick = tick;
                                state[dir].edge_seen = source.edge;
                                state[dir].drain_into(&mut wakers);
                            }
                        }

                        // Re-register if there are still writers or readers. This can happen if
                        // e.g. we were previously interested in both readability and writability,
                        // but only one of them was emitted. (socksbalance patch: an
                        // edge-triggered source stays registered for both.)
                        if !source.edge && (!state[READ].is_empty() || !state[WRITE].is_empty()) {
                            // Create the event that we are interested in.
                            let event = {
                                let mut event = Event::none(source.key);
                                event.readable = !state[READ].is_empty();
                                event.writable = !state[WRITE].is_empty();
                                event
                            };

                            // Register interest in this event.
                            source.registration.modify(&self.reactor.poller, event)?;
                        }
                    }
                }

                Ok(())
            }

            // The syscall was interrupted.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(()),

            // An actual error occureed.
            Err(err) => Err(err),
        };

        // Wake up ready tasks.
        #[cfg(feature = "tracing")]
        tracing::trace!("{} ready wakers", wakers.len());
        for waker in wakers.drain(..) {
            // Don't let a panicking waker blow everything up.
            panic::catch_unwind(|| waker.wake()).ok();
        }
        wakers.shrink_to(WAKERS_KEPT);
        *self.reactor.wakers.lock().unwrap() = wakers;

        res
    }
}

/// A single timer operation.
enum TimerOp {
    Insert(Instant, usize, Waker),
    Remove(Instant, usize),
}

/// A registered source of I/O events.
#[derive(Debug)]
pub(crate) struct Source {
    /// This source's registration into the reactor.
    registration: Registration,

    /// The key of this source obtained during registration.
    key: usize,

    /// Inner state with registered wakers.
    state: Mutex<[Direction; 2]>,

    /// The reactor this source is registered in (patched, socksbalance:
    /// with a reactor per thread, not always the global one).
    pub(crate) reactor: Arc<Reactor>,

    /// Registered edge-triggered, for both directions, once (socksbalance
    /// patch; Linux, sources of a thread's own reactor). A one-shot source
    /// is re-armed with an `epoll_ctl` every time a task waits on it, some
    /// ten times per proxied connection; this one reports every change
    /// without it. The kernel reports a change once: a wait after a drain
    /// (`poll_readable`, `poll_writable`, `read_with`, `write_with`, and
    /// async-io's reads and writes, which wait after `WouldBlock`) needs
    /// nothing more; `readable()` and `writable()` keep their meaning, "until
    /// an operation would not block", by having the kernel look again when
    /// an event came since the last such wait (`Source::arm`).
    edge: bool,
}

/// A read or write direction.
#[derive(Debug, Default)]
struct Direction {
    /// Last reactor tick that delivered an event.
    tick: usize,

    /// Ticks remembered by `Async::poll_readable()` or `Async::poll_writable()`.
    ticks: Option<(usize, usize)>,

    /// Waker stored by `Async::poll_readable()` or `Async::poll_writable()`.
    waker: Option<Waker>,

    /// Wakers of tasks waiting for the next event.
    ///
    /// Registered by `Async::readable()` and `Async::writable()`.
    wakers: Slab<Option<Waker>>,

    /// An edge-triggered source's event came since the last wait after a
    /// drain (socksbalance patch; see `Source::edge` and `Source::arm`).
    edge_seen: bool,
}

impl Direction {
    /// Returns `true` if there are no wakers interested in this direction.
    fn is_empty(&self) -> bool {
        self.waker.is_none() && self.wakers.iter().all(|(_, opt)| opt.is_none())
    }

    /// Moves all wakers into a `Vec`.
    fn drain_into(&mut self, dst: &mut Vec<Waker>) {
        if let Some(w) = self.waker.take() {
            dst.push(w);
        }
        for (_, opt) in self.wakers.iter_mut() {
            if let Some(w) = opt.take() {
                dst.push(w);
            }
        }
    }
}

impl Source {
    /// Polls the I/O source for readability.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(READ, cx)
    }

    /// Polls the I/O source for writability.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(WRITE, cx)
    }

    /// Registers a waker from `poll_readable()` or `poll_writable()`.
    ///
    /// If a different waker is already registered, it gets replaced and woken.
    fn poll_ready(&self, dir: usize, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock().unwrap();

        // Check if the reactor has delivered an event.
        if let Some((a, b)) = state[dir].ticks {
            // If `state[dir].tick` has changed to a value other than the old reactor tick,
            // that means a newer reactor tick has delivered an event.
            if state[dir].tick != a && state[dir].tick != b {
                state[dir].ticks = None;
                return Poll::Ready(Ok(()));
            }
        }

        let was_empty = state[dir].is_empty();

        // Register the current task's waker.
        if let Some(w) = state[dir].waker.take() {
            if w.will_wake(cx.waker()) {
                state[dir].waker = Some(w);
                return Poll::Pending;
            }
            // Wake the previous waker because it's going to get replaced.
            panic::catch_unwind(|| w.wake()).ok();
        }
        state[dir].waker = Some(cx.waker().clone());
        state[dir].ticks = Some((self.reactor.ticker(), state[dir].tick));

        // Update interest in this I/O handle. (socksbalance patch: upstream
        // documents `poll_readable` and `poll_writable` as waiting for an
        // event after the last `Pending`; async-io's own I/O calls them after
        // an operation said `WouldBlock`: a wait after a drain.)
        self.arm(&mut state, dir, was_empty, true)?;

        Poll::Pending
    }

    /// Makes sure the waiter just registered for `dir` hears of the next
    /// event (socksbalance patch: split out of `poll_ready` and `Ready`,
    /// which repeated it, for edge-triggered sources).
    fn arm(&self, state: &mut [Direction; 2], dir: usize, was_empty: bool, drained: bool) -> io::Result<()> {
        if self.edge {
            // Registered for both directions for good (see `Source::edge`).
            // After a drain the next event is all there is to wait for. A
            // wait without one needs the kernel to look again if an event
            // came since the last drain (bytes may be waiting that no
            // edge will report), and so does any wait on a thread whose
            // reactor is not this one (its `react` may take an event between
            // the drain and this registration).
            if !self.reactor.is_owned_here() || (!drained && state[dir].edge_seen) {
                state[dir].edge_seen = false;
                #[cfg(any(target_os = "linux", target_os = "android"))]
                self.registration.modify_edge(&self.reactor.poller, self.key)?;
            } else if drained {
                state[dir].edge_seen = false;
            }
            return Ok(());
        }
        if was_empty {
            // Create the event that we are interested in.
            let event = {
                let mut event = Event::none(self.key);
                event.readable = !state[READ].is_empty();
                event.writable = !state[WRITE].is_empty();
                event
            };

            // Register interest in it.
            self.registration.modify(&self.reactor.poller, event)?;
        }
        Ok(())
    }

    /// Waits until the I/O source is readable.
    pub(crate) fn readable<T>(handle: &crate::Async<T>) -> Readable<'_, T> {
        Readable(Self::ready(handle, READ))
    }

    /// Waits until the I/O source is readable.
    pub(crate) fn readable_owned<T>(handle: Arc<crate::Async<T>>) -> ReadableOwned<T> {
        ReadableOwned(Self::ready(handle, READ))
    }

    /// Waits until the I/O source is writable.
    pub(crate) fn writable<T>(handle: &crate::Async<T>) -> Writable<'_, T> {
        Writable(Self::ready(handle, WRITE))
    }

    /// Waits until the I/O source is writable.
    pub(crate) fn writable_owned<T>(handle: Arc<crate::Async<T>>) -> WritableOwned<T> {
        WritableOwned(Self::ready(handle, WRITE))
    }

    /// Waits until the I/O source is readable, after a read said
    /// `WouldBlock` (socksbalance patch: `read_with`; see `arm`).
    pub(crate) fn readable_drained<T>(handle: &crate::Async<T>) -> Readable<'_, T> {
        Readable(Ready { drained: true, ..Self::ready(handle, READ) })
    }

    /// Waits until the I/O source is writable, after a write said
    /// `WouldBlock` (socksbalance patch: `write_with`).
    pub(crate) fn writable_drained<T>(handle: &crate::Async<T>) -> Writable<'_, T> {
        Writable(Ready { drained: true, ..Self::ready(handle, WRITE) })
    }

    /// Waits until the I/O source is readable or writable.
    fn ready<H: Borrow<crate::Async<T>> + Clone, T>(handle: H, dir: usize) -> Ready<H, T> {
        Ready {
            handle,
            dir: dir as u8,
            ticks: None,
            index: None,
            drained: false,
            _capture: PhantomData,
        }
    }
}

/// Future for [`Async::readable`](crate::Async::readable).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Readable<'a, T>(Ready<&'a crate::Async<T>, T>);

impl<T> Future for Readable<'_, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ready!(Pin::new(&mut self.0).poll(cx))?;
        #[cfg(feature = "tracing")]
        tracing::trace!(fd = ?self.0.handle.source.registration, "readable");
        Poll::Ready(Ok(()))
    }
}

impl<T> fmt::Debug for Readable<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readable").finish()
    }
}

/// Future for [`Async::readable_owned`](crate::Async::readable_owned).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ReadableOwned<T>(Ready<Arc<crate::Async<T>>, T>);

impl<T> Future for ReadableOwned<T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ready!(Pin::new(&mut self.0).poll(cx))?;
        #[cfg(feature = "tracing")]
        tracing::trace!(fd = ?self.0.handle.source.registration, "readable_owned");
        Poll::Ready(Ok(()))
    }
}

impl<T> fmt::Debug for ReadableOwned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadableOwned").finish()
    }
}

/// Future for [`Async::writable`](crate::Async::writable).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Writable<'a, T>(Ready<&'a crate::Async<T>, T>);

impl<T> Future for Writable<'_, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ready!(Pin::new(&mut self.0).poll(cx))?;
        #[cfg(feature = "tracing")]
        tracing::trace!(fd = ?self.0.handle.source.registration, "writable");
        Poll::Ready(Ok(()))
    }
}

impl<T> fmt::Debug for Writable<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish()
    }
}

/// Future for [`Async::writable_owned`](crate::Async::writable_owned).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WritableOwned<T>(Ready<Arc<crate::Async<T>>, T>);

impl<T> Future for WritableOwned<T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        ready!(Pin::new(&mut self.0).poll(cx))?;
        #[cfg(feature = "tracing")]
        tracing::trace!(fd = ?self.0.handle.source.registration, "writable_owned");
        Poll::Ready(Ok(()))
    }
}

impl<T> fmt::Debug for WritableOwned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritableOwned").finish()
    }
}

struct Ready<H: Borrow<crate::Async<T>>, T> {
    handle: H,
    /// `READ` or `WRITE` (socksbalance patch: a `u8`, so that `drained`
    /// fits beside it and the future stays its size).
    dir: u8,
    ticks: Option<(usize, usize)>,
    index: Option<usize>,
    /// Waiting after an operation said `WouldBlock` (socksbalance patch).
    drained: bool,
    _capture: PhantomData<fn() -> T>,
}

impl<H: Borrow<crate::Async<T>>, T> Unpin for Ready<H, T> {}

impl<H: Borrow<crate::Async<T>> + Clone, T> Future for Ready<H, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Self {
            ref handle,
            dir,
            ticks,
            index,
            drained,
            ..
        } = &mut *self;

        let mut state = handle.borrow().source.state.lock().unwrap();

        // Check if the reactor has delivered an event.
        if let Some((a, b)) = *ticks {
            // If `state[dir].tick` has changed to a value other than the old reactor tick,
            // that means a newer reactor tick has delivered an event.
            if state[*dir as usize].tick != a && state[*dir as usize].tick != b {
                return Poll::Ready(Ok(()));
            }
        }

        let was_empty = state[*dir as usize].is_empty();

        // Register the current task's waker.
        let i = match *index {
            Some(i) => i,
            None => {
                let i = state[*dir as usize].wakers.insert(None);
                *index = Some(i);
                *ticks = Some((handle.borrow().source.reactor.ticker(), state[*dir as usize].tick));
                i
            }
        };
        state[*dir as usize].wakers[i] = Some(cx.waker().clone());

        // Update interest in this I/O handle.
        handle.borrow().source.arm(&mut state, *dir as usize, was_empty, *drained)?;

        Poll::Pending
    }
}

impl<H: Borrow<crate::Async<T>>, T> Drop for Ready<H, T> {
    fn drop(&mut self) {
        // Remove our waker when dropped.
        if let Some(key) = self.index {
            let mut state = self.handle.borrow().source.state.lock().unwrap();
            let wakers = &mut state[self.dir as usize].wakers;
            if wakers.contains(key) {
                wakers.remove(key);
            }
        }
    }
}
