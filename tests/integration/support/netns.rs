//! Network namespaces for the tests that need real routing (multipath
//! uplinks, the gateway): namespaces made and removed by each test, threads
//! moved into them with setns(2), and the daemon binary run inside one.
//! Without root or iproute2 those tests skip with a notice.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use super::IO_TIMEOUT;

/// Whether this process may create network namespaces; if not, says why.
pub fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let ip = Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !root || !ip {
        eprintln!(
            "NOTICE: network namespace test skipped: needs root and iproute2 (root: {root}, ip: {ip}); \
             CI runs it as root"
        );
    }
    root && ip
}

/// Runs `ip` with `args` (split on spaces); fails the test if it fails.
pub fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output().expect("run ip");
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a thread inside namespace `ns` (setns is per thread).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Moves this thread into the namespace at `path`.
#[allow(unsafe_code)]
pub fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open netns");
    // SAFETY: a valid namespace fd for the duration of the call; setns
    // changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// The daemon binary inside the balancer namespace. Killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    _dir: TempDir,
    /// What it logged up to its "listening on" line.
    pub start_lines: Vec<String>,
    /// Every later line, as the daemon logs it.
    pub lines: mpsc::Receiver<String>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Daemon {
    pub fn start(ns: &str, yaml: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("socksbalance-mp-{}-{ns}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_socksbalance"), "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let (tx, lines) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("daemon: {line}");
                let _ = tx.send(line);
            }
        });
        let mut start_lines = Vec::new();
        // Ready once it says where it listens.
        loop {
            match lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => start_lines.push(line),
                Err(_) => panic!("the daemon did not start within {IO_TIMEOUT:?}"),
            }
        }
        Daemon { child, _dir: TempDir(dir), start_lines, lines }
    }

    /// Waits (bounded) for a line that contains `needle`.
    pub fn wait_for_line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the daemon did not log {needle:?} within {IO_TIMEOUT:?}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
