//! Logging to stderr, as text (simple_logger) or one JSON object per line.
//!
//! stderr because OpenWrt's procd captures a service's stderr into logd,
//! and systemd's journal does the same; both add their own timestamps, so
//! the text format has none. The JSON format carries a Unix timestamp in
//! milliseconds for log shippers that read the stream directly.

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
pub fn init(format: LogFormat, level: LevelFilter) {
    let result = match format {
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

struct JsonLogger;

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let limit = if metadata.target().starts_with("socksbalance") {
            log::max_level()
        } else {
            log::max_level().min(LIBRARY_LEVEL)
        };
        metadata.level() <= limit
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

fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn json_line(level: Level, target: &str, message: &str, ts: u128) -> String {
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

    #[test]
    fn json_lines_escape_everything() {
        let line = json_line(Level::Warn, "socksbalance::x", "a \"quote\" \\ and\nnewline\u{1}", 42);
        assert_eq!(
            line,
            "{\"ts\":42,\"level\":\"WARN\",\"target\":\"socksbalance::x\",\"msg\":\"a \\\"quote\\\" \\\\ and\\nnewline\\u0001\"}\n"
        );
    }
}
