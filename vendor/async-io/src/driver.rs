use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use parking::Parker;

use crate::reactor::Reactor;

/// Number of currently active `block_on()` invocations.
static BLOCK_ON_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Unparker for the "async-io" thread.
fn unparker() -> &'static parking::Unparker {
    static UNPARKER: OnceLock<parking::Unparker> = OnceLock::new();

    UNPARKER.get_or_init(|| {
        let (parker, unparker) = parking::pair();

        // Spawn a helper thread driving the reactor.
        //
        // Note that this thread is not exactly necessary, it's only here to help push things
        // forward if there are no `Parker`s around or if `Parker`s are just idling and never
        // parking.
        thread::Builder::new()
            .name("async-io".to_string())
            .spawn(move || main_loop(parker))
            .expect("cannot spawn async-io thread");

        unparker
    })
}

/// Initializes the "async-io" thread.
pub(crate) fn init() {
    let _ = unparker();
}

/// The main loop for the "async-io" thread.
fn main_loop(parker: parking::Parker) {
    #[cfg(feature = "tracing")]
    let span = tracing::trace_span!("async_io::main_loop");
    #[cfg(feature = "tracing")]
    let _enter = span.enter();

    // The last observed reactor tick.
    let mut last_tick = 0;
    // Number of sleeps since this thread has called `react()`.
    let mut sleeps = 0u64;
    // socksbalance patch: set when this thread is unparked (a `block_on`
    // ended), cleared when it reacts.
    let mut eager = true;

    loop {
        let tick = Reactor::global().ticker();

        // socksbalance patch: while a `block_on` thread exists it drives the
        // reactor between polls of its executor, which batches events and
        // runs the woken tasks on the thread that saw the events. This
        // thread takes the reactor only when nobody reacted for a whole
        // sleep past the backoff's tenth step (10 ms to 1 s), or just after
        // a `block_on` ended, and never blocks on the lock then. Upstream tries the lock
        // after every 50 µs to 10 ms sleep and, once idle, blocks on it: it
        // then wins the reactor whenever the executor thread lets go to run
        // tasks, and every event costs a thread switch (measured in
        // docs/performance.md).
        let driven = BLOCK_ON_COUNT.load(Ordering::SeqCst) > 0;
        if last_tick == tick && (!driven || eager || sleeps >= 10) {
            let reactor_lock = if sleeps >= 10 && !driven {
                // If no new ticks have occurred for a while, stop sleeping and spinning in
                // this loop and just block on the reactor lock.
                Some(Reactor::global().lock())
            } else {
                Reactor::global().try_lock()
            };

            if let Some(mut reactor_lock) = reactor_lock {
                #[cfg(feature = "tracing")]
                tracing::trace!("waiting on I/O");
                reactor_lock.react(None).ok();
                last_tick = Reactor::global().ticker();
                sleeps = 0;
                eager = false;
            }
        } else if last_tick != tick {
            last_tick = tick;
        }

        if BLOCK_ON_COUNT.load(Ordering::SeqCst) > 0 {
            // Exponential backoff from 50us to 10ms.
            //
            // socksbalance patch: and on to 1 s. This thread no longer
            // blocks on the reactor lock while a `block_on` thread drives
            // (above), so without a longer backoff an idle daemon would
            // wake it 100 times a second; a `block_on` ending still
            // unparks it at once.
            let delay_us: u64 = [50, 75, 100, 250, 500, 750, 1000, 2500, 5000]
                .get(sleeps as usize)
                .copied()
                .unwrap_or_else(|| (10_000u64 << (sleeps - 9).min(7)).min(1_000_000));

            #[cfg(feature = "tracing")]
            tracing::trace!("sleeping for {} us", delay_us);
            if parker.park_timeout(Duration::from_micros(delay_us)) {
                #[cfg(feature = "tracing")]
                tracing::trace!("notified");

                // If notified before timeout, reset the last tick and the sleep counter.
                last_tick = Reactor::global().ticker();
                sleeps = 0;
                eager = true;
            } else {
                sleeps += 1;
            }
        }
    }
}

/// Blocks the current thread on a future, processing I/O events when idle.
///
/// # Examples
///
/// ```
/// use async_io::Timer;
/// use std::time::Duration;
///
/// async_io::block_on(async {
///     // This timer will likely be processed by the current
///     // thread rather than the fallback "async-io" thread.
///     Timer::after(Duration::from_millis(1)).await;
/// });
/// ```
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    #[cfg(feature = "tracing")]
    let span = tracing::trace_span!("async_io::block_on");
    #[cfg(feature = "tracing")]
    let _enter = span.enter();

    // socksbalance patch: the reactor this thread drives, its own if it
    // has one (`use_own_reactor`), else the global one.
    let reactor = Reactor::current();
    let own = Reactor::is_own();

    // Increment `BLOCK_ON_COUNT` so that the "async-io" thread becomes less aggressive.
    // (socksbalance patch: only a thread that drives the global reactor counts.)
    if !own {
        BLOCK_ON_COUNT.fetch_add(1, Ordering::SeqCst);
    }

    // Make sure to decrement `BLOCK_ON_COUNT` at the end and wake the "async-io" thread.
    let _guard = CallOnDrop(|| {
        if !own {
            BLOCK_ON_COUNT.fetch_sub(1, Ordering::SeqCst);
            unparker().unpark();
        }
    });

    // Creates a parker and an associated waker that unparks it.
    fn parker_and_waker(reactor: Arc<Reactor>) -> (Parker, Waker, Arc<AtomicBool>, Arc<Reactor>) {
        // Parker and unparker for notifying the current thread.
        let (p, u) = parking::pair();

        // This boolean is set to `true` when the current thread is blocked on I/O.
        let io_blocked = Arc::new(AtomicBool::new(false));

        // Prepare the waker.
        let waker = BlockOnWaker::create(io_blocked.clone(), u, Arc::clone(&reactor));

        (p, waker, io_blocked, reactor)
    }

    thread_local! {
        // Cached parker and waker for efficiency (and the reactor the waker
        // notifies, socksbalance patch).
        static CACHE: RefCell<Option<(Parker, Waker, Arc<AtomicBool>, Arc<Reactor>)>> =
            const { RefCell::new(None) };

        // Indicates that the current thread is polling I/O, but not necessarily blocked on it.
        // (socksbalance patch: which reactor it polls; null when none.)
        static IO_POLLING: Cell<*const Reactor> = const { Cell::new(std::ptr::null()) };
    }

    struct BlockOnWaker {
        io_blocked: Arc<AtomicBool>,
        unparker: parking::Unparker,
        reactor: Arc<Reactor>,
    }

    impl BlockOnWaker {
        fn create(io_blocked: Arc<AtomicBool>, unparker: parking::Unparker, reactor: Arc<Reactor>) -> Waker {
            Waker::from(Arc::new(BlockOnWaker {
                io_blocked,
                unparker,
                reactor,
            }))
        }
    }

    impl std::task::Wake for BlockOnWaker {
        fn wake_by_ref(self: &Arc<Self>) {
            if self.unparker.unpark() {
                // Check if waking from another thread and if currently blocked on I/O.
                // (socksbalance patch: a thread polling another reactor is
                // "another thread" here.)
                let polling_it = IO_POLLING.with(Cell::get) == Arc::as_ptr(&self.reactor);
                if !polling_it && self.io_blocked.load(Ordering::SeqCst) {
                    self.reactor.notify();
                }
            }
        }

        fn wake(self: Arc<Self>) {
            self.wake_by_ref()
        }
    }

    CACHE.with(|cache| {
        // Try grabbing the cached parker and waker.
        let tmp_cached;
        let tmp_fresh;
        let (p, waker, io_blocked, _) = match cache.try_borrow_mut() {
            Ok(mut cache) => {
                // Use the cached parker and waker (made again if this
                // thread's reactor changed: socksbalance patch).
                if !cache.as_ref().is_some_and(|c| Arc::ptr_eq(&c.3, &reactor)) {
                    *cache = Some(parker_and_waker(Arc::clone(&reactor)));
                }
                tmp_cached = cache;
                tmp_cached.as_ref().unwrap()
            }
            Err(_) => {
                // Looks like this is a recursive `block_on()` call.
                // Create a fresh parker and waker.
                tmp_fresh = parker_and_waker(Arc::clone(&reactor));
                &tmp_fresh
            }
        };
        let polling = Arc::as_ptr(&reactor);

        let mut future = pin!(future);

        let cx = &mut Context::from_waker(waker);

        loop {
            // Poll the future.
            if let Poll::Ready(t) = future.as_mut().poll(cx) {
                // Ensure the cached parker is reset to the unnotified state for future block_on calls,
                // in case this future called wake and then immediately returned Poll::Ready.
                p.park_timeout(Duration::from_secs(0));
                #[cfg(feature = "tracing")]
                tracing::trace!("completed");
                return t;
            }

            // Check if a notification was received.
            if p.park_timeout(Duration::from_secs(0)) {
                #[cfg(feature = "tracing")]
                tracing::trace!("notified");

                // Try grabbing a lock on the reactor to process I/O events.
                if let Some(mut reactor_lock) = reactor.try_lock() {
                    // First let wakers know this parker is processing I/O events.
                    let was = IO_POLLING.with(|io| io.replace(polling));
                    let _guard = CallOnDrop(|| {
                        IO_POLLING.with(|io| io.set(was));
                    });

                    // Process available I/O events.
                    reactor_lock.react(Some(Duration::from_secs(0))).ok();
                }
                continue;
            }

            // Try grabbing a lock on the reactor to wait on I/O.
            if let Some(mut reactor_lock) = reactor.try_lock() {
                // Record the instant at which the lock was grabbed.
                let start = Instant::now();

                loop {
                    // First let wakers know this parker is blocked on I/O.
                    let was = IO_POLLING.with(|io| io.replace(polling));
                    io_blocked.store(true, Ordering::SeqCst);
                    let _guard = CallOnDrop(|| {
                        IO_POLLING.with(|io| io.set(was));
                        io_blocked.store(false, Ordering::SeqCst);
                    });

                    // Check if a notification has been received before `io_blocked` was updated
                    // because in that case the reactor won't receive a wakeup.
                    if p.park_timeout(Duration::from_secs(0)) {
                        #[cfg(feature = "tracing")]
                        tracing::trace!("notified");
                        break;
                    }

                    // Wait for I/O events.
                    #[cfg(feature = "tracing")]
                    tracing::trace!("waiting on I/O");
                    reactor_lock.react(None).ok();

                    // Check if a notification has been received.
                    if p.park_timeout(Duration::from_secs(0)) {
                        #[cfg(feature = "tracing")]
                        tracing::trace!("notified");
                        break;
                    }

                    // Check if this thread been handling I/O events for a long time.
                    //
                    // socksbalance patch: not done. Handing the reactor to
                    // the "async-io" thread after 500 µs made it the one
                    // that reacts, and every event a thread switch; this
                    // thread keeps reacting until its own future is woken.
                    if HAND_OFF && start.elapsed() > Duration::from_micros(500) {
                        #[cfg(feature = "tracing")]
                        tracing::trace!("stops hogging the reactor");

                        // This thread is clearly processing I/O events for some other threads
                        // because it didn't get a notification yet. It's best to stop hogging the
                        // reactor and give other threads a chance to process I/O events for
                        // themselves.
                        drop(reactor_lock);

                        // Unpark the "async-io" thread in case no other thread is ready to start
                        // processing I/O events. This way we prevent a potential latency spike.
                        if !own {
                            unparker().unpark();
                        }

                        // Wait for a notification.
                        p.park();
                        break;
                    }
                }
            } else {
                // Wait for an actual notification.
                #[cfg(feature = "tracing")]
                tracing::trace!("sleep until notification");
                p.park();
            }
        }
    })
}

/// Gives the calling thread a reactor of its own (socksbalance patch).
///
/// From then on, I/O sources and timers created on this thread register
/// with that reactor, and only this thread's [`block_on`] drives it: its
/// events are seen, and the tasks they wake are run, on this thread, with
/// no lock shared with other threads and no hand-over to the "async-io"
/// thread. A source or timer stays with the reactor it was registered in
/// wherever it is later polled, so one used from another thread works,
/// but waits for this thread to react. A thread that has its own reactor
/// should spend its life in `block_on` (an executor's `run`); once it
/// leaves, nothing drives the sources still registered there.
///
/// Calling it again does nothing. Fails only when the system cannot make
/// another poller (epoll, kqueue, IOCP).
pub fn use_own_reactor() -> std::io::Result<()> {
    Reactor::make_own()
}

/// socksbalance patch: whether `block_on` hands the reactor to the
/// "async-io" thread after 500 µs of reacting for others (upstream: yes).
const HAND_OFF: bool = false;

/// Runs a closure when dropped.
struct CallOnDrop<F: Fn()>(F);

impl<F: Fn()> Drop for CallOnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
