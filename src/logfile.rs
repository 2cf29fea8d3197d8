//! A log file that rotates by size: where the Windows service logs, as a
//! service has no console and no journal to catch its stderr.
//!
//! Each line carries a UTC timestamp (nobody else adds one here). When a
//! line would take the file past its size, the file becomes `NAME.1`,
//! `NAME.1` becomes `NAME.2` and so on up to `NAME.KEEP` (the oldest is
//! dropped), and a new file starts: the logs never take more than about
//! `(KEEP + 1) × MAX_BYTES` of the disk. A line is written whole, with one
//! `write` under a lock, so lines from several threads never interleave
//! and a rotation never splits one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Log, Metadata, Record};

use crate::config::LogFormat;
use crate::logging;

/// The size at which the file rotates.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// How many rotated files are kept beside the current one.
pub const KEEP: u32 = 3;

pub struct LogFile {
    path: PathBuf,
    max: u64,
    keep: u32,
    format: LogFormat,
    state: Mutex<State>,
}

struct State {
    /// `None` after a rotation that could not open the new file: the next
    /// line tries again.
    file: Option<File>,
    written: u64,
}

impl LogFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path, format: LogFormat) -> io::Result<LogFile> {
        LogFile::with_limits(path, format, MAX_BYTES, KEEP)
    }

    /// [`open`](Self::open) with another size and number of old files.
    pub fn with_limits(path: &Path, format: LogFormat, max: u64, keep: u32) -> io::Result<LogFile> {
        let file = append(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            max,
            keep,
            format,
            state: Mutex::new(State { file: Some(file), written }),
        })
    }

    /// Where the `n`th old file is (`NAME.n`).
    pub fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Writes one line (which ends in a newline), rotating first if it
    /// would not fit.
    pub fn write_line(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = line.len() as u64;
        if state.file.is_none() || (state.written > 0 && state.written + len > self.max) {
            self.rotate(&mut state);
        }
        if let Some(file) = state.file.as_mut() {
            match file.write_all(line.as_bytes()) {
                Ok(()) => state.written += len,
                // Nowhere else to say it: the service has no console.
                Err(_) => state.file = None,
            }
        }
    }

    fn rotate(&self, state: &mut State) {
        // Closed first: Windows renames no file that is open.
        state.file = None;
        if state.written > 0 {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(LogFile::rotated(&self.path, n), LogFile::rotated(&self.path, n + 1));
            }
            let _ = match self.keep {
                0 => std::fs::remove_file(&self.path),
                _ => std::fs::rename(&self.path, LogFile::rotated(&self.path, 1)),
            };
        }
        state.file = append(&self.path).ok();
        state.written = state.file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
    }

    /// The line for a record, in the configured format.
    fn line(&self, record: &Record) -> String {
        let message = record.args().to_string();
        match self.format {
            LogFormat::Json => {
                logging::json_line(record.level(), record.target(), &message, logging::now_millis())
            }
            LogFormat::Text => {
                let mut out = crate::web::rfc3339(SystemTime::now());
                out.push(' ');
                out.push_str(&format!("{:<5} ", record.level()));
                logging::push_message(&mut out, record.target(), &message);
                out.push('\n');
                out
            }
        }
    }
}

/// Installs `file` as the global logger, in place of [`logging::init`]:
/// the Windows service's log.
pub fn install(file: LogFile, level: log::LevelFilter) {
    if let Err(e) = log::set_boxed_logger(Box::new(file)) {
        eprintln!("socksbalance: cannot install logger: {e}");
    }
    logging::set_level(level);
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Log for LogFile {
    fn enabled(&self, metadata: &Metadata) -> bool {
        logging::wanted(metadata)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.write_line(&self.line(record));
        }
    }

    fn flush(&self) {
        if let Some(file) = self.state.lock().unwrap_or_else(|e| e.into_inner()).file.as_mut() {
            let _ = file.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("socksbalance-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every line written is in exactly one of the files, whole, in
    /// order; no file is over the limit; at most KEEP old files remain.
    #[test]
    fn rotation_keeps_every_recent_line_whole_and_bounds_the_files() {
        let dir = dir("rotate");
        let path = dir.join("socksbalance.log");
        let log = LogFile::with_limits(&path, LogFormat::Text, 1000, 2).unwrap();
        let lines: Vec<String> = (0..300).map(|i| format!("line {i:03} {}\n", "x".repeat(i % 40))).collect();
        for line in &lines {
            log.write_line(line);
        }
        drop(log);
        let mut files = vec![LogFile::rotated(&path, 2), LogFile::rotated(&path, 1), path.clone()];
        assert!(!LogFile::rotated(&path, 3).exists(), "more old files than kept");
        let mut seen = String::new();
        for file in files.drain(..) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.len() <= 1000, "{} is {} bytes", file.display(), text.len());
            assert!(text.ends_with('\n'), "{} ends inside a line", file.display());
            seen.push_str(&text);
        }
        // What is kept is the newest lines, contiguous, each whole.
        let all: String = lines.concat();
        assert!(all.ends_with(&seen), "the kept files are not the last lines in order");
        assert!(seen.len() > 1900, "only {} bytes kept of three 1000-byte files", seen.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A restarted service appends to the file it left, counting what is
    /// already there towards the limit.
    #[test]
    fn reopening_appends_and_counts_what_is_there() {
        let dir = dir("reopen");
        let path = dir.join("socksbalance.log");
        std::fs::write(&path, "x".repeat(900) + "\n").unwrap();
        let log = LogFile::with_limits(&path, LogFormat::Text, 1000, 1).unwrap();
        log.write_line("fits\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 906);
        log.write_line(&("y".repeat(200) + "\n"));
        drop(log);
        assert_eq!(std::fs::read_to_string(LogFile::rotated(&path, 1)).unwrap().len(), 906);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "y".repeat(200) + "\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_lines_carry_a_utc_timestamp_and_a_library_target() {
        let dir = dir("line");
        let log = LogFile::open(&dir.join("socksbalance.log"), LogFormat::Text).unwrap();
        let ours = log.line(
            &Record::builder()
                .level(log::Level::Info)
                .target("socksbalance::server")
                .args(format_args!("up"))
                .build(),
        );
        let theirs = log.line(
            &Record::builder().level(log::Level::Warn).target("async_io").args(format_args!("odd")).build(),
        );
        // 2026-12-04T19:00:00Z INFO  up
        assert_eq!(&ours[4..5], "-", "{ours}");
        assert_eq!(&ours[19..], "Z INFO  up\n", "{ours}");
        assert_eq!(&theirs[19..], "Z WARN  [async_io] odd\n", "{theirs}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
