//! `socksbalance status --watch` in a real terminal: tmux runs it, and
//! `capture-pane` reads what it drew, at 80 and at 120 columns.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "live"])
    }

    /// Waits until the pane shows what `want` accepts; returns it.
    fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_for(what, Duration::from_secs(20), || {
            last = self.screen();
            want(&last)
        });
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

fn widest(screen: &str) -> usize {
    screen.lines().map(|l| l.trim_end().chars().count()).max().unwrap_or(0)
}

#[test]
fn status_watch_redraws_live_fits_the_terminal_says_disconnected_and_quits_on_q() {
    assert!(installed("tmux", "the live view test"), "tmux is needed (.ci/run installs it)");
    let alive = Backend::start(Behaviour::Proxy);
    let doomed = Backend::start(Behaviour::Proxy);
    let yaml = format!(
        "{LISTEN}mode: socks5\nweb: {{enabled: true, listen: '127.0.0.1:0', refresh_interval: 1}}\n\
         health: {{check_interval: 1s, failure_threshold: 1, circuit_threshold: 1}}\nbackends:\n{}{}",
        alive.yaml("alive-proxy"),
        doomed.yaml("doomed-proxy")
    );
    let d = daemon(&yaml);
    settled(&d);
    let url = format!("http://{}", d.web_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("sb-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let after = dir.join("after");
    // After the view: its exit status, and the terminal's modes (restored:
    // canonical input and echo back on).
    let command = format!(
        "{} status --watch --url {url}; echo EXIT=$? > {p}; stty -a >> {p}",
        env!("CARGO_BIN_EXE_socksbalance"),
        p = after.display()
    );
    let tmux = Tmux { socket: format!("sb-live-{}", std::process::id()) };
    tmux.run(&["new-session", "-d", "-s", "live", "-x", "80", "-y", "30", &command]);

    let screen = tmux.until("both backends up at 80 columns", |s| {
        s.lines().any(|l| l.starts_with("alive-proxy") && l.contains(" up "))
            && s.lines().any(|l| l.starts_with("doomed-proxy") && l.contains(" up "))
    });
    assert!(screen.contains("socksbalance") && screen.contains("2/2 up"), "{screen}");
    assert!(widest(&screen) <= 80, "wider than 80 columns:\n{screen}");
    assert!(!screen.contains("ADDRESS"), "the address column goes at 80 columns:\n{screen}");

    tmux.run(&["resize-window", "-t", "live", "-x", "120", "-y", "30"]);
    let wide = tmux.until("the address column at 120 columns", |s| s.contains("ADDRESS"));
    assert!(wide.contains(&alive.addr.to_string()) && widest(&wide) <= 120, "{wide}");

    // A backend that dies is down within a refresh or two.
    doomed.up.store(false, Ordering::SeqCst);
    let down = tmux.until("the dead backend shown down", |s| {
        s.lines().any(|l| l.starts_with("doomed-proxy") && l.contains("down"))
    });
    assert!(down.contains("1/2 up"), "{down}");

    // The daemon goes away: the view says so and keeps trying.
    drop(d);
    let gone = tmux.until("disconnected", |s| s.contains("disconnected, retrying"));
    assert!(gone.contains("doomed-proxy"), "the last view stays below the notice:\n{gone}");

    // q ends it with status 0, and the terminal is as it was.
    tmux.run(&["send-keys", "-t", "live", "q"]);
    wait_for("the view to exit", Duration::from_secs(10), || {
        std::fs::read_to_string(&after).is_ok_and(|t| t.contains("speed") || t.contains("icanon"))
    });
    let text = std::fs::read_to_string(&after).unwrap();
    assert!(text.starts_with("EXIT=0"), "{text}");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "the terminal's modes are not restored: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_watch_into_a_pipe_says_to_use_status_or_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_socksbalance"))
        .args(["status", "--watch", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--watch draws on a terminal") && err.contains("--json"), "{err}");
    assert!(out.stdout.is_empty(), "no escape codes into the pipe");
}
