//! The Windows service: `socksbalance service install|uninstall|start|stop`
//! through the Service Control Manager, and `service run`, the command
//! line the SCM starts.
//!
//! The parts that are not Win32 calls (the service's command line, where
//! its log goes, what an error code tells the user, how long a stop may
//! take) are plain functions, tested on every platform; the calls
//! themselves are [`install`], [`uninstall`], [`start`], [`stop`] and
//! [`dispatch`], on Windows only, tested under Wine
//! (scripts/wine-service.sh). Elsewhere the module is built for its tests
//! only: a router's binary has no use for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The service's key name (`sc query socksbalance`, `net start socksbalance`).
pub const NAME: &str = "socksbalance";
/// What services.msc shows.
pub const DISPLAY_NAME: &str = "socksbalance SOCKS5 load balancer";
pub const DESCRIPTION: &str =
    "Spreads SOCKS5 (and HTTP proxy) connections over upstream proxies and WAN links. Logs to socksbalance.log \
     next to its config file.";
/// The log file's name, in the config's folder.
pub const LOG_FILE: &str = "socksbalance.log";

/// What a service command did not manage to do: the message to print and
/// the exit code (1: it failed; 2: it was asked wrongly).
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code }
    }
}

/// The command line the SCM runs: the executable and `service run`, with
/// the config when there is one, each path quoted (Windows splits an
/// unquoted path at its first space, and may run `C:\Program.exe`).
pub fn command_line(exe: &Path, config: Option<&Path>) -> Result<String, Failure> {
    let quoted = |p: &Path| {
        let text =
            p.to_str().ok_or_else(|| Failure::new(2, format!("{}: not valid Unicode", p.display())))?;
        if text.contains('"') {
            return Err(Failure::new(2, format!("{text}: a path with a double quote cannot be a service's")));
        }
        Ok(format!("\"{text}\""))
    };
    let mut line = format!("{} service run", quoted(exe)?);
    if let Some(config) = config {
        line.push_str(" -c ");
        line.push_str(&quoted(config)?);
    }
    Ok(line)
}

/// Where the service logs: next to its config, or next to the executable
/// when it runs the embedded default.
pub fn log_path(config: Option<&Path>, exe: &Path) -> PathBuf {
    let folder = config.or(Some(exe)).and_then(Path::parent).unwrap_or(Path::new("."));
    folder.join(LOG_FILE)
}

/// How long the SCM should wait for a stop: the drain (`shutdown_timeout`)
/// and a little for closing down.
pub fn stop_wait(grace: Duration) -> Duration {
    grace + Duration::from_secs(3)
}

/// A service command, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Uninstall,
    Start,
    Stop,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Uninstall => "uninstall",
            Action::Start => "start",
            Action::Stop => "stop",
        }
    }
}

// The Win32 error codes the SCM returns that a user can act on.
const ERROR_ACCESS_DENIED: u32 = 5;
const ERROR_SERVICE_REQUEST_TIMEOUT: u32 = 1053;
const ERROR_SERVICE_ALREADY_RUNNING: u32 = 1056;
const ERROR_SERVICE_DISABLED: u32 = 1058;
const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;
const ERROR_SERVICE_NOT_ACTIVE: u32 = 1062;
const ERROR_SERVICE_EXISTS: u32 = 1073;
const ERROR_SERVICE_MARKED_FOR_DELETE: u32 = 1072;

/// What the SCM's error `code` means for `action`, in words the user can
/// act on; `Ok` for the codes that say it is already as asked (starting a
/// running service, stopping a stopped one).
pub fn explain(action: Action, code: u32) -> Result<&'static str, Failure> {
    let verb = action.verb();
    let message = match (action, code) {
        (Action::Start, ERROR_SERVICE_ALREADY_RUNNING) => return Ok("the socksbalance service is already running"),
        (Action::Stop, ERROR_SERVICE_NOT_ACTIVE) => return Ok("the socksbalance service is not running"),
        (_, ERROR_ACCESS_DENIED) => format!(
            "cannot {verb} the service: this needs administrator rights. Open the command prompt or PowerShell \
             with \"Run as administrator\" and run the command again"
        ),
        (Action::Install, ERROR_SERVICE_EXISTS) => "the socksbalance service is already installed; `socksbalance \
                                                    service uninstall` removes it (to install it with another \
                                                    config)"
            .into(),
        (_, ERROR_SERVICE_DOES_NOT_EXIST) => {
            "the socksbalance service is not installed; `socksbalance service install -c CONFIG` installs it".into()
        }
        (_, ERROR_SERVICE_MARKED_FOR_DELETE) => "the socksbalance service is being removed; close services.msc (and \
                                                 anything else that has it open) and try again"
            .into(),
        (_, ERROR_SERVICE_DISABLED) => "the socksbalance service is disabled; set its startup type to Automatic in \
                                        services.msc"
            .into(),
        (_, ERROR_SERVICE_REQUEST_TIMEOUT) => {
            format!("the service did not answer in time; its log ({LOG_FILE}, next to its config) says why")
        }
        (_, code) => format!("cannot {verb} the service: Windows error {code}"),
    };
    Err(Failure::new(1, message))
}

/// `service run` when the SCM did not start it.
pub fn not_from_scm() -> Failure {
    Failure::new(
        2,
        "`socksbalance service run` is what the Service Control Manager starts; to run socksbalance in this \
         console, start it without `service run` (socksbalance -c CONFIG), or start the service with \
         `socksbalance service start`",
    )
}

#[cfg(windows)]
pub use windows::{dispatch, install, start, stop, uninstall, Running};

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    use std::ffi::OsStr;
    use std::os::windows::ffi::OsStrExt;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use windows_sys::core::PWSTR;
    use windows_sys::Win32::Foundation::{GetLastError, NO_ERROR};
    use windows_sys::Win32::System::Services::*;

    use super::{explain, not_from_scm, stop_wait, Action, Failure, DESCRIPTION, DISPLAY_NAME, NAME};
    use crate::shutdown::ShutdownTrigger;

    /// `DELETE`, the standard access right (winnt.h).
    const DELETE: u32 = 0x0001_0000;
    /// `service run` outside the SCM.
    const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: u32 = 1063;
    /// `ERROR_SERVICE_SPECIFIC_ERROR`: the exit code is in the other field.
    const ERROR_SERVICE_SPECIFIC_ERROR: u32 = 1066;

    fn wide(text: impl AsRef<OsStr>) -> Vec<u16> {
        text.as_ref().encode_wide().chain(Some(0)).collect()
    }

    /// An SCM handle, closed on drop.
    struct Handle(SC_HANDLE);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from OpenSCManagerW/OpenServiceW/
            // CreateServiceW and is closed once, here.
            unsafe { CloseServiceHandle(self.0) };
        }
    }

    fn last_error() -> u32 {
        // SAFETY: reads the calling thread's last-error value.
        unsafe { GetLastError() }
    }

    /// The failure of `action` with the SCM's last error, even one that
    /// [`explain`] calls benign (it is not, for this call).
    fn failed(action: Action) -> Failure {
        match explain(action, last_error()) {
            Err(failure) => failure,
            Ok(message) => Failure::new(1, message),
        }
    }

    fn manager(action: Action, access: u32) -> Result<Handle, Failure> {
        // SAFETY: null machine and database names mean this machine's
        // active database.
        let h = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), access) };
        if h.is_null() {
            return Err(failed(action));
        }
        Ok(Handle(h))
    }

    /// Our service in `scm`, opened for `access`; `None` with the reason
    /// in the last error.
    fn service_in(scm: &Handle, access: u32) -> Option<Handle> {
        let name = wide(NAME);
        // SAFETY: `name` is a NUL-terminated UTF-16 string alive for the call.
        let h = unsafe { OpenServiceW(scm.0, name.as_ptr(), access) };
        // Lazily: a Handle of null would be closed, and set the last error.
        (!h.is_null()).then(|| Handle(h))
    }

    fn open(action: Action, access: u32) -> Result<Handle, Failure> {
        let scm = manager(action, SC_MANAGER_CONNECT)?;
        service_in(&scm, access).ok_or_else(|| failed(action))
    }

    fn query(service: &Handle) -> Option<SERVICE_STATUS> {
        let mut status = SERVICE_STATUS::default();
        // SAFETY: `status` is a plain struct the call fills in.
        (unsafe { QueryServiceStatus(service.0, &mut status) } != 0).then_some(status)
    }

    /// Waits until the service leaves `pending`, at most `limit`; its
    /// status then.
    fn settle(service: &Handle, pending: u32, limit: Duration) -> Option<SERVICE_STATUS> {
        let until = Instant::now() + limit;
        loop {
            let status = query(service)?;
            if status.dwCurrentState != pending || Instant::now() >= until {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends the stop control and waits (at most `wait`) while the service
    /// drains; its state then (`None` if it could not be read), or the
    /// error of the control.
    fn stop_and_wait(service: &Handle, wait: Duration) -> Result<Option<u32>, u32> {
        let mut status = SERVICE_STATUS::default();
        // SAFETY: `status` is filled in by the call.
        if unsafe { ControlService(service.0, SERVICE_CONTROL_STOP, &mut status) } == 0 {
            return Err(last_error());
        }
        Ok(settle(service, SERVICE_STOP_PENDING, wait).map(|s| s.dwCurrentState))
    }

    /// Registers the service: started at boot, restarted by the SCM if it
    /// fails, running `command_line` as LocalSystem.
    pub fn install(command_line: &str) -> Result<String, Failure> {
        let scm = manager(Action::Install, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE)?;
        let (name, display, binary) = (wide(NAME), wide(DISPLAY_NAME), wide(command_line));
        // Looked up first: Windows refuses to create it twice, but Wine 8
        // replaces it.
        if service_in(&scm, SERVICE_QUERY_STATUS).is_some() {
            return explain(Action::Install, super::ERROR_SERVICE_EXISTS).map(str::to_owned);
        }
        // SAFETY: every string is NUL-terminated UTF-16 alive for the call;
        // the optional ones are null (no group, tag, dependencies; the
        // LocalSystem account, which has no password).
        let h = unsafe {
            CreateServiceW(
                scm.0,
                name.as_ptr(),
                display.as_ptr(),
                SERVICE_CHANGE_CONFIG | SERVICE_QUERY_STATUS | SERVICE_START,
                SERVICE_WIN32_OWN_PROCESS,
                SERVICE_AUTO_START,
                SERVICE_ERROR_NORMAL,
                binary.as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if h.is_null() {
            return Err(failed(Action::Install));
        }
        let service = Handle(h);
        let mut description = wide(DESCRIPTION);
        let info = SERVICE_DESCRIPTIONW { lpDescription: description.as_mut_ptr() };
        // Restart after 5 s, 10 s, then every 30 s; forget failures after a day.
        let mut actions = [
            SC_ACTION { Type: SC_ACTION_RESTART, Delay: 5_000 },
            SC_ACTION { Type: SC_ACTION_RESTART, Delay: 10_000 },
            SC_ACTION { Type: SC_ACTION_RESTART, Delay: 30_000 },
        ];
        let failure = SERVICE_FAILURE_ACTIONSW {
            dwResetPeriod: 86_400,
            lpRebootMsg: std::ptr::null_mut(),
            lpCommand: std::ptr::null_mut(),
            cActions: actions.len() as u32,
            lpsaActions: actions.as_mut_ptr(),
        };
        // SAFETY: each info struct points at buffers alive for the call.
        // Both are extras: the service works without them, so a failure
        // (Wine has no failure actions) is only a note.
        let described = unsafe {
            ChangeServiceConfig2W(
                service.0,
                SERVICE_CONFIG_DESCRIPTION,
                (&info as *const SERVICE_DESCRIPTIONW).cast(),
            )
        };
        let restarts = unsafe {
            ChangeServiceConfig2W(
                service.0,
                SERVICE_CONFIG_FAILURE_ACTIONS,
                (&failure as *const SERVICE_FAILURE_ACTIONSW).cast(),
            )
        };
        let mut said = format!("installed the socksbalance service: {command_line}\nit starts at boot; start it now with `socksbalance service start`");
        if described == 0 || restarts == 0 {
            said.push_str(&format!(
                "\n(note: could not set its description or restart-on-failure: Windows error {})",
                last_error()
            ));
        }
        Ok(said)
    }

    /// Stops the service if it runs (bounded by `wait`), then removes it.
    pub fn uninstall(wait: Duration) -> Result<String, Failure> {
        let service = open(Action::Uninstall, DELETE | SERVICE_STOP | SERVICE_QUERY_STATUS)?;
        let mut said = String::new();
        if query(&service).is_some_and(|s| s.dwCurrentState != SERVICE_STOPPED) {
            if let Ok(end) = stop_and_wait(&service, wait) {
                said.push_str(match end {
                    Some(SERVICE_STOPPED) => "stopped the socksbalance service\n",
                    _ => "the socksbalance service did not stop in time; it is removed once it has\n",
                });
            }
        }
        // SAFETY: a service handle opened with DELETE.
        if unsafe { DeleteService(service.0) } == 0 {
            return Err(failed(Action::Uninstall));
        }
        said.push_str("removed the socksbalance service (its config and log files stay)");
        Ok(said)
    }

    /// Starts the service and waits (bounded by `wait`) until it runs, or
    /// says why it stopped.
    pub fn start(wait: Duration) -> Result<String, Failure> {
        let service = open(Action::Start, SERVICE_START | SERVICE_QUERY_STATUS)?;
        // SAFETY: no arguments for the service's main function.
        if unsafe { StartServiceW(service.0, 0, std::ptr::null()) } == 0 {
            return explain(Action::Start, last_error()).map(str::to_owned);
        }
        match settle(&service, SERVICE_START_PENDING, wait) {
            Some(s) if s.dwCurrentState == SERVICE_RUNNING => Ok("started the socksbalance service".into()),
            Some(s) if s.dwCurrentState == SERVICE_STOPPED => {
                let code = match s.dwWin32ExitCode {
                    ERROR_SERVICE_SPECIFIC_ERROR => s.dwServiceSpecificExitCode,
                    code => code,
                };
                Err(Failure::new(
                    1,
                    format!(
                        "the socksbalance service stopped as it started (exit code {code}); its log ({}, next \
                         to its config) says why",
                        super::LOG_FILE
                    ),
                ))
            }
            _ => Err(Failure::new(
                1,
                "the socksbalance service is still starting; `sc query socksbalance` shows when it runs",
            )),
        }
    }

    /// Asks the service to stop (it drains its tunnels first, as Ctrl-C
    /// does) and waits until it has, at most `wait`.
    pub fn stop(wait: Duration) -> Result<String, Failure> {
        let service = open(Action::Stop, SERVICE_STOP | SERVICE_QUERY_STATUS)?;
        match stop_and_wait(&service, wait) {
            Err(code) => explain(Action::Stop, code).map(str::to_owned),
            Ok(Some(SERVICE_STOPPED)) => Ok("stopped the socksbalance service".into()),
            Ok(_) => {
                Err(Failure::new(1, "the socksbalance service is still stopping (draining its tunnels)"))
            }
        }
    }

    /// The running service's link to the SCM, for the body [`dispatch`]
    /// runs.
    pub struct Running {
        handle: SERVICE_STATUS_HANDLE,
        checkpoint: Mutex<u32>,
    }

    // SAFETY: the status handle is an opaque value the SCM hands out for
    // use from any thread (SetServiceStatus is thread-safe).
    unsafe impl Send for Running {}
    unsafe impl Sync for Running {}

    impl Running {
        fn report(&self, state: u32, accept: u32, exit: u32, wait: Duration) {
            let mut checkpoint = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
            let pending = matches!(state, SERVICE_START_PENDING | SERVICE_STOP_PENDING);
            *checkpoint = if pending { *checkpoint + 1 } else { 0 };
            let status = SERVICE_STATUS {
                dwServiceType: SERVICE_WIN32_OWN_PROCESS,
                dwCurrentState: state,
                dwControlsAccepted: accept,
                dwWin32ExitCode: if exit == 0 { NO_ERROR } else { ERROR_SERVICE_SPECIFIC_ERROR },
                dwServiceSpecificExitCode: exit,
                dwCheckPoint: *checkpoint,
                dwWaitHint: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            };
            // SAFETY: the handle is the one RegisterServiceCtrlHandlerExW
            // returned; `status` is a plain struct read by the call.
            unsafe { SetServiceStatus(self.handle, &status) };
        }

        /// The daemon is up: the SCM may stop it now; a stop (or the
        /// machine shutting down) pulls `trigger`, the same graceful
        /// shutdown as Ctrl-C, and tells the SCM to wait up to `grace`
        /// plus a little.
        pub fn running(&self, trigger: ShutdownTrigger, grace: Duration) {
            let _ = STOP.set((trigger, stop_wait(grace)));
            self.report(SERVICE_RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN, 0, Duration::ZERO);
        }
    }

    static SERVICE: OnceLock<Running> = OnceLock::new();
    static STOP: OnceLock<(ShutdownTrigger, Duration)> = OnceLock::new();
    /// What runs as the service: starts the daemon, waits, returns the
    /// exit code.
    type Body = Box<dyn Fn(&Running) -> u8 + Send + Sync>;
    static BODY: OnceLock<Body> = OnceLock::new();

    unsafe extern "system" fn handler(
        control: u32,
        _: u32,
        _: *mut core::ffi::c_void,
        _: *mut core::ffi::c_void,
    ) -> u32 {
        match control {
            SERVICE_CONTROL_STOP | SERVICE_CONTROL_SHUTDOWN => {
                if let (Some(service), Some((trigger, wait))) = (SERVICE.get(), STOP.get()) {
                    log::info!("the Service Control Manager asks to stop; draining tunnels");
                    service.report(SERVICE_STOP_PENDING, 0, 0, *wait);
                    trigger.trigger();
                }
                NO_ERROR
            }
            SERVICE_CONTROL_INTERROGATE => NO_ERROR,
            // ERROR_CALL_NOT_IMPLEMENTED
            _ => 120,
        }
    }

    unsafe extern "system" fn service_main(_argc: u32, _argv: *mut PWSTR) {
        let name = wide(NAME);
        // SAFETY: `name` is NUL-terminated and alive for the call;
        // `handler` is an `extern "system"` function that only reads the
        // statics above.
        let handle = unsafe { RegisterServiceCtrlHandlerExW(name.as_ptr(), Some(handler), std::ptr::null()) };
        if handle.is_null() {
            return;
        }
        let service = SERVICE.get_or_init(|| Running { handle, checkpoint: Mutex::new(0) });
        service.report(SERVICE_START_PENDING, 0, 0, Duration::from_secs(10));
        let code = BODY.get().map_or(1, |body| body(service));
        service.report(SERVICE_STOPPED, 0, u32::from(code), Duration::ZERO);
    }

    /// Runs as the service: hands this thread to the SCM, which calls
    /// `body` on a thread of its own; `body` starts the daemon, calls
    /// [`Running::running`], waits for it to stop and returns its exit
    /// code. Returns once the service has stopped.
    pub fn dispatch(body: impl Fn(&Running) -> u8 + Send + Sync + 'static) -> Result<(), Failure> {
        // A service has no console window; a console user typing `service
        // run` does. Windows would refuse the dispatcher below with
        // ERROR_FAILED_SERVICE_CONTROLLER_CONNECT, Wine can hang in it.
        // SAFETY: a plain query of this process's console.
        if !unsafe { windows_sys::Win32::System::Console::GetConsoleWindow() }.is_null() {
            return Err(not_from_scm());
        }
        let _ = BODY.set(Box::new(body));
        let mut name = wide(NAME);
        let table = [
            SERVICE_TABLE_ENTRYW { lpServiceName: name.as_mut_ptr(), lpServiceProc: Some(service_main) },
            SERVICE_TABLE_ENTRYW { lpServiceName: std::ptr::null_mut(), lpServiceProc: None },
        ];
        // SAFETY: the table ends with the null entry and lives (with
        // `name`) until the call returns, when the service has stopped.
        if unsafe { StartServiceCtrlDispatcherW(table.as_ptr()) } == 0 {
            return Err(match last_error() {
                ERROR_FAILED_SERVICE_CONTROLLER_CONNECT => not_from_scm(),
                code => Failure::new(1, format!("cannot run as a service: Windows error {code}")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_quotes_every_path() {
        let line = command_line(
            Path::new(r"C:\Program Files\socksbalance\socksbalance.exe"),
            Some(Path::new(r"C:\ProgramData\socksbalance\config.yaml")),
        )
        .unwrap();
        assert_eq!(
            line,
            r#""C:\Program Files\socksbalance\socksbalance.exe" service run -c "C:\ProgramData\socksbalance\config.yaml""#
        );
        assert_eq!(command_line(Path::new("sb.exe"), None).unwrap(), r#""sb.exe" service run"#);
        assert_eq!(command_line(Path::new("a\"b.exe"), None).unwrap_err().code, 2);
    }

    #[test]
    fn the_log_goes_next_to_the_config_or_the_executable() {
        let exe = Path::new("/opt/sb/socksbalance.exe");
        assert_eq!(
            log_path(Some(Path::new("/etc/sb/config.yaml")), exe),
            Path::new("/etc/sb/socksbalance.log")
        );
        assert_eq!(log_path(None, exe), Path::new("/opt/sb/socksbalance.log"));
    }

    #[test]
    fn errors_say_what_to_do_and_benign_ones_succeed() {
        let denied = explain(Action::Install, ERROR_ACCESS_DENIED).unwrap_err();
        assert_eq!(denied.code, 1);
        assert!(denied.message.contains("administrator") && denied.message.contains("Run as administrator"));
        assert!(explain(Action::Start, ERROR_SERVICE_DOES_NOT_EXIST)
            .unwrap_err()
            .message
            .contains("service install"));
        assert!(explain(Action::Start, ERROR_SERVICE_ALREADY_RUNNING).is_ok());
        assert!(explain(Action::Stop, ERROR_SERVICE_NOT_ACTIVE).is_ok());
        assert!(explain(Action::Uninstall, ERROR_SERVICE_NOT_ACTIVE).is_err());
        assert!(explain(Action::Install, ERROR_SERVICE_EXISTS).unwrap_err().message.contains("uninstall"));
        assert_eq!(
            explain(Action::Stop, 9999).unwrap_err().message,
            "cannot stop the service: Windows error 9999"
        );
    }

    #[test]
    fn a_stop_waits_for_the_drain() {
        assert_eq!(stop_wait(Duration::from_secs(30)), Duration::from_secs(33));
    }
}
