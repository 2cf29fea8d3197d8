//! Logging to stderr, as text (simple_logger) or one JSON object per line,
//! or to the local syslog socket.
//!
//! stderr because systemd's journal captures a service's stderr, and so
//! does OpenWrt's procd; both add their own timestamps, so the text format
//! has none. The JSON format carries a Unix timestamp in milliseconds for
//! log shippers that read the stream directly.
//!
//! procd files everything a service writes to stderr as `daemon.err`, so
//! on OpenWrt the init script passes `--syslog`: each line then goes to
//! `/dev/log`, where logd keeps it with its own priority (`daemon.info`
//! for INFO), and `logread -l` or a priority filter work.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogFormat;

/// Applies `-v` (more) and `-q` (less) to the configured level.
pub fn adjust(level: LevelFilter, verbose: u8, quiet: u8) -> LevelFilter {
    const ORDER: [LevelFilter; 6] = [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    let at = ORDER.iter().position(|&l| l == level).unwrap_or(3) as i32;
    let at = (at + i32::from(verbose) - i32::from(quiet)).clamp(0, 5);
    ORDER[at as usize]
}

/// Libraries (the async runtime, the HTTP server) log at this level at
/// most, whatever `-v` asks: their trace output is per epoll event, and a
/// user raising the verbosity wants socksbalance's own story.
const LIBRARY_LEVEL: LevelFilter = LevelFilter::Warn;

/// Installs the global logger. Call once, before the daemon starts.
///
/// The loggers themselves let everything of ours through (and libraries'
/// lines up to [`LIBRARY_LEVEL`]); the level in force is the `log` crate's
/// global maximum, which [`set_level`] moves. That is what lets SIGHUP
/// raise `log.level` as well as lower it: simple_logger's own levels are
/// fixed once it is installed.
pub fn init(format: LogFormat, level: LevelFilter, syslog: bool) {
    #[cfg(not(unix))]
    let _ = syslog;
    let result = match format {
        #[cfg(unix)]
        _ if syslog => log::set_boxed_logger(Box::new(Syslog::new(SYSLOG_SOCKET))),
        LogFormat::Text => simple_logger::SimpleLogger::new()
            .with_level(LIBRARY_LEVEL)
            .with_module_level("socksbalance", LevelFilter::Trace)
            .init(),
        LogFormat::Json => log::set_boxed_logger(Box::new(JsonLogger)),
    };
    if let Err(e) = result {
        eprintln!("socksbalance: cannot install logger: {e}");
    }
    set_level(level);
}

/// The level in force from now on (a reload's new `log.level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Whether a line passes: ours up to the level in force, libraries' up
/// to [`LIBRARY_LEVEL`] as well.
pub(crate) fn wanted(metadata: &Metadata) -> bool {
    let limit = if metadata.target().starts_with("socksbalance") {
        log::max_level()
    } else {
        log::max_level().min(LIBRARY_LEVEL)
    };
    metadata.level() <= limit
}

/// Where the local syslog daemon (OpenWrt's logd, rsyslog, journald's
/// syslog socket) takes datagrams.
#[cfg(unix)]
const SYSLOG_SOCKET: &str = "/dev/log";

/// The syslog logger: one datagram per line, `<PRI>socksbalance[PID]: `
/// and the message (RFC 3164 without the timestamp, which the daemon
/// adds), facility `daemon`.
///
/// The socket is not connected: each line is sent to the path, so a
/// restarted logd (a new socket there) is found again. It never blocks:
/// a line the syslog daemon cannot take now, or at all, goes to stderr
/// instead, where procd or the journal still catches it.
#[cfg(unix)]
struct Syslog {
    socket: Option<std::os::unix::net::UnixDatagram>,
    path: std::path::PathBuf,
    /// `socksbalance[PID]: `, the tag logd shows.
    tag: String,
}

#[cfg(unix)]
impl Syslog {
    fn new(path: impl Into<std::path::PathBuf>) -> Syslog {
        let socket =
            std::os::unix::net::UnixDatagram::unbound().ok().filter(|s| s.set_nonblocking(true).is_ok());
        Syslog { socket, path: path.into(), tag: format!("socksbalance[{}]: ", std::process::id()) }
    }

    /// The datagram for one line.
    fn datagram(&self, level: Level, target: &str, message: &str) -> String {
        // Facility daemon (3) times 8, plus the severity.
        let severity = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let mut out = format!("<{}>{}", 3 * 8 + severity, self.tag);
        push_message(&mut out, target, message);
        out
    }
}

#[cfg(unix)]
impl Log for Syslog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = self.datagram(record.level(), record.target(), &record.args().to_string());
        let sent = self.socket.as_ref().is_some_and(|s| s.send_to(line.as_bytes(), &self.path).is_ok());
        if !sent {
            let text = format!("{:<5} {}\n", record.level(), record.args());
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    fn flush(&self) {}
}

struct JsonLogger;

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = json_line(record.level(), record.target(), &record.args().to_string(), now_millis());
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Appends a line's message as the syslog and file loggers write it: our
/// own lines need no module path; a library's says whose it is.
pub(crate) fn push_message(out: &mut String, target: &str, message: &str) {
    if !target.starts_with("socksbalance") {
        out.push('[');
        out.push_str(target);
        out.push_str("] ");
    }
    out.push_str(message);
}

pub(crate) fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

pub(crate) fn json_line(level: Level, target: &str, message: &str, ts: u128) -> String {
    let mut out = String::with_capacity(message.len() + 64);
    out.push_str("{\"ts\":");
    out.push_str(&ts.to_string());
    out.push_str(",\"level\":\"");
    out.push_str(level.as_str());
    out.push_str("\",\"target\":");
    push_json_string(&mut out, target);
    out.push_str(",\"msg\":");
    push_json_string(&mut out, message);
    out.push_str("}\n");
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_flags_move_the_level() {
        assert_eq!(adjust(LevelFilter::Info, 1, 0), LevelFilter::Debug);
        assert_eq!(adjust(LevelFilter::Info, 5, 0), LevelFilter::Trace);
        assert_eq!(adjust(LevelFilter::Info, 0, 2), LevelFilter::Error);
        assert_eq!(adjust(LevelFilter::Info, 0, 9), LevelFilter::Off);
        assert_eq!(adjust(LevelFilter::Warn, 1, 1), LevelFilter::Warn);
    }

    #[cfg(unix)]
    #[test]
    fn syslog_lines_carry_their_priority_and_reach_a_restarted_syslog_daemon() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("socksbalance-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let logger = Syslog::new(&path);
        let record = |level, target: &'static str, text: &'static str| {
            logger.log(&Record::builder().level(level).target(target).args(format_args!("{text}")).build());
        };
        log::set_max_level(LevelFilter::Debug);
        for restart in 0..2 {
            // A fresh socket at the same path, as a restarted logd makes.
            let _ = std::fs::remove_file(&path);
            let server = UnixDatagram::bind(&path).unwrap();
            server.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            record(Level::Info, "socksbalance::server", "listening");
            record(Level::Error, "socksbalance", "cannot");
            record(Level::Warn, "async_io", "odd");
            let mut got = Vec::new();
            for _ in 0..3 {
                let mut buf = [0u8; 512];
                let n = server.recv(&mut buf).unwrap();
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            let tag = format!("socksbalance[{}]: ", std::process::id());
            assert_eq!(
                got,
                [
                    format!("<30>{tag}listening"),
                    format!("<27>{tag}cannot"),
                    format!("<28>{tag}[async_io] odd")
                ],
                "after {restart} restart(s)"
            );
        }
        // Nobody listening: the line goes to stderr, and nothing blocks.
        let _ = std::fs::remove_file(&path);
        record(Level::Info, "socksbalance", "to stderr");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn json_lines_escape_everything() {
        let line = json_line(Level::Warn, "socksbalance::x", "a \"quote\" \\ and\nnewline\u{1}", 42);
        assert_eq!(
            line,
            "{\"ts\":42,\"level\":\"WARN\",\"target\":\"socksbalance::x\",\"msg\":\"a \\\"quote\\\" \\\\ and\\nnewline\\u0001\"}\n"
        );
    }
}
