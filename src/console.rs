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

/// `status --watch` on Windows: the console in the mode the live view
/// needs (src/live.rs), and its width and keys. VT processing on the
/// output (ANSI escapes are drawn by conhost too, not only by Windows
/// Terminal); on the input no line editing, no echo, and Ctrl-C delivered
/// as a key (0x03) rather than as a signal, so the view ends as `q` ends
/// it. Returns the two modes it replaced, for [`restore_mode`]; `None`
/// when stdin or stdout is not a console.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn live_mode() -> Option<(u32, u32)> {
    use windows_sys::Win32::System::Console::*;
    // SAFETY: plain Win32 calls on this process's standard handles, with
    // pointers to locals that outlive them.
    unsafe {
        let (input, output) = (GetStdHandle(STD_INPUT_HANDLE), GetStdHandle(STD_OUTPUT_HANDLE));
        let (mut in_mode, mut out_mode) = (0u32, 0u32);
        if GetConsoleMode(input, &mut in_mode) == 0 || GetConsoleMode(output, &mut out_mode) == 0 {
            return None;
        }
        SetConsoleMode(output, out_mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
        SetConsoleMode(input, in_mode & !(ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT));
        Some((in_mode, out_mode))
    }
}

/// Puts back the modes [`live_mode`] replaced.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn restore_mode((in_mode, out_mode): (u32, u32)) {
    use windows_sys::Win32::System::Console::*;
    // SAFETY: as in `live_mode`.
    unsafe {
        SetConsoleMode(GetStdHandle(STD_INPUT_HANDLE), in_mode);
        SetConsoleMode(GetStdHandle(STD_OUTPUT_HANDLE), out_mode);
    }
}

/// The console window's width in columns.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn width() -> Option<usize> {
    use windows_sys::Win32::System::Console::*;
    // SAFETY: `info` is a plain C struct the call fills in.
    unsafe {
        let mut info: CONSOLE_SCREEN_BUFFER_INFO = std::mem::zeroed();
        if GetConsoleScreenBufferInfo(GetStdHandle(STD_OUTPUT_HANDLE), &mut info) == 0 {
            return None;
        }
        usize::try_from(info.srWindow.Right - info.srWindow.Left + 1).ok()
    }
}

/// The keys pressed since the last call (ASCII only), without waiting.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn keys() -> Vec<u8> {
    use windows_sys::Win32::System::Console::*;
    let mut out = Vec::new();
    // SAFETY: `records` is a buffer of `INPUT_RECORD`s of the length
    // passed; a union field is read only for the event type that says
    // it is the one written.
    unsafe {
        let input = GetStdHandle(STD_INPUT_HANDLE);
        let mut pending = 0u32;
        if GetNumberOfConsoleInputEvents(input, &mut pending) == 0 || pending == 0 {
            return out;
        }
        let mut records = [INPUT_RECORD::default(); 16];
        let mut read = 0u32;
        if ReadConsoleInputW(input, records.as_mut_ptr(), records.len() as u32, &mut read) == 0 {
            return out;
        }
        for r in &records[..read as usize] {
            if u32::from(r.EventType) == KEY_EVENT && r.Event.KeyEvent.bKeyDown != 0 {
                if let Ok(b) = u8::try_from(r.Event.KeyEvent.uChar.UnicodeChar) {
                    out.push(b);
                }
            }
        }
    }
    out
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
