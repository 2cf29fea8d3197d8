//! Windows console events: closing the console window, logging off, or
//! shutting down.
//!
//! async-signal handles Ctrl-C only. The other events reach a handler
//! registered with `SetConsoleCtrlHandler`, and Windows ends the process
//! as soon as that handler returns (or after about 5 s). So the handler
//! starts the same graceful shutdown as Ctrl-C, then waits, bounded, until
//! the daemon has drained its tunnels.
//!
//! [`CloseHook::handle`] is that logic, free of Windows types so that the
//! tests run it on every platform against a real daemon; [`install`]
//! (Windows only) registers it.

use std::time::Duration;

use smol::channel::Receiver;
use smol::future::FutureExt;

use crate::shutdown::ShutdownTrigger;

/// The most a handler may wait: Windows allows about 5 s for a close.
pub const MAX_WAIT: Duration = Duration::from_millis(4500);

/// A console control event, as Windows numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    CtrlC,
    CtrlBreak,
    Close,
    Logoff,
    Shutdown,
}

impl Event {
    /// `CTRL_C_EVENT` (0), `CTRL_BREAK_EVENT` (1), `CTRL_CLOSE_EVENT` (2),
    /// `CTRL_LOGOFF_EVENT` (5), `CTRL_SHUTDOWN_EVENT` (6).
    pub fn from_code(code: u32) -> Option<Event> {
        Some(match code {
            0 => Event::CtrlC,
            1 => Event::CtrlBreak,
            2 => Event::Close,
            5 => Event::Logoff,
            6 => Event::Shutdown,
            _ => return None,
        })
    }
}

/// What a console event needs to stop the daemon and see it stopped.
pub struct CloseHook {
    trigger: ShutdownTrigger,
    finished: Receiver<()>,
    /// The daemon's `shutdown_timeout`.
    grace: Duration,
}

impl CloseHook {
    pub fn new(trigger: ShutdownTrigger, finished: Receiver<()>, grace: Duration) -> CloseHook {
        CloseHook { trigger, finished, grace }
    }

    /// Handles `event`; true if handled. Ctrl-C and Ctrl-Break are left
    /// to async-signal. A close, logoff or shutdown triggers the graceful
    /// shutdown and returns once the daemon has finished, or after the
    /// grace period (plus a little, at most [`MAX_WAIT`]).
    pub fn handle(&self, event: Event) -> bool {
        if matches!(event, Event::CtrlC | Event::CtrlBreak) {
            return false;
        }
        self.trigger.trigger();
        let wait = (self.grace + Duration::from_millis(500)).min(MAX_WAIT);
        let drained = async {
            let _ = self.finished.recv().await;
        };
        smol::block_on(drained.or(async {
            smol::Timer::after(wait).await;
        }));
        true
    }
}

#[cfg(windows)]
static HOOK: std::sync::OnceLock<CloseHook> = std::sync::OnceLock::new();

#[cfg(windows)]
#[allow(unsafe_code)]
unsafe extern "system" fn handler(code: u32) -> windows_sys::core::BOOL {
    match (HOOK.get(), Event::from_code(code)) {
        (Some(hook), Some(event)) => i32::from(hook.handle(event)),
        _ => 0,
    }
}

/// Registers `hook` for this process's console events (once; later calls
/// do nothing). A failure is logged: Ctrl-C still stops gracefully.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn install(hook: CloseHook) {
    if HOOK.set(hook).is_ok() {
        // SAFETY: `handler` is a plain `extern "system"` function that only
        // reads the `HOOK` static, which is set just above and never
        // changes again; registering it has no other effect.
        let ok = unsafe { windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(handler), 1) };
        if ok == 0 {
            log::warn!("cannot watch for the console closing; Ctrl-C still stops gracefully");
        } else {
            log::debug!("console close, logoff and shutdown will drain tunnels");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_are_windows_numbers() {
        assert_eq!(Event::from_code(0), Some(Event::CtrlC));
        assert_eq!(Event::from_code(2), Some(Event::Close));
        assert_eq!(Event::from_code(5), Some(Event::Logoff));
        assert_eq!(Event::from_code(6), Some(Event::Shutdown));
        assert_eq!(Event::from_code(3), None);
    }
}
