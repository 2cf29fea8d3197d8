//! `socksbalance status --watch`: the backend table redrawn in place
//! every `web.refresh_interval`, as netmix's console dashboard did.
//!
//! [`frame`] is the view, a pure function of two stats documents (rates
//! are the difference), the terminal's width and whether the daemon
//! answered: the tests run it on recorded documents. [`run`] is the loop:
//! plain ANSI (the alternate screen, cursor home, clear to end of line),
//! keys read in the terminal's non-canonical mode, `q` or Ctrl-C to quit
//! with the terminal as it was. [`Terminal`] is the platform part:
//! termios through rustix on Unix, the console API on Windows (VT
//! processing on, so conhost and Windows Terminal both draw it).

use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::status::{bytes, column_widths, layout_row, Stats};

/// Columns of the backend table, in order; a narrow terminal drops them
/// from the end of [`DROP_ORDER`] first, as the dashboard does on a phone.
const HEADER: [&str; 8] = ["NAME", "STATE", "LATENCY", "SUCCESS", "ACTIVE", "↑/s", "↓/s", "ADDRESS"];
/// Which columns go first when the table is too wide (indices in HEADER).
const DROP_ORDER: [usize; 3] = [7, 3, 4];

/// One redraw: the lines to show, each at most `width` characters.
/// `before` is the previous document and the time between the two, for
/// the rates; `trouble` is why the daemon did not answer this time (the
/// last document is shown below it).
pub fn frame(
    now: &Stats,
    before: Option<(&Stats, Duration)>,
    width: usize,
    trouble: Option<&str>,
) -> Vec<String> {
    let width = width.max(20);
    let mut lines = Vec::new();
    if let Some(why) = trouble {
        lines.push(format!("disconnected, retrying: {why}"));
    }
    let rate = |up: bool| -> u64 {
        let Some((prev, dt)) = before else { return 0 };
        let total =
            |s: &Stats| s.backends.iter().map(|b| if up { b.bytes_up } else { b.bytes_down }).sum::<u64>();
        per_second(total(now).saturating_sub(total(prev)), dt)
    };
    lines.push(format!(
        "socksbalance {} · {} · {} · {}/{} up · {} tunnel(s) · ↑ {}/s ↓ {}/s",
        now.version,
        now.mode,
        now.algorithm,
        now.healthy_backends,
        now.total_backends,
        now.open_tunnels,
        bytes(rate(true)),
        bytes(rate(false)),
    ));
    if now.outage {
        lines.push("UPLINK OUTAGE: every backend is failing at once (the uplink, not the backends)".into());
    }
    lines.push(String::new());

    let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|h| h.to_string()).collect()];
    let mut why: Vec<String> = vec!["WHY".into()];
    for b in &now.backends {
        let state = b.shown_state();
        let up = state == "up";
        let prev = before.and_then(|(p, _)| p.backends.iter().find(|x| x.name == b.name));
        let dt = before.map_or(Duration::ZERO, |(_, dt)| dt);
        let delta = |f: fn(&crate::status::BackendRow) -> u64| {
            prev.map_or(0, |p| per_second(f(b).saturating_sub(f(p)), dt))
        };
        rows.push(vec![
            b.name.clone(),
            state,
            b.latency_text(up),
            b.success_text(),
            b.active_connections.to_string(),
            bytes(delta(|r| r.bytes_up)),
            bytes(delta(|r| r.bytes_down)),
            b.address.clone(),
        ]);
        why.push(if up { String::new() } else { b.last_error.clone().unwrap_or_default() });
    }
    let widths = column_widths(&rows, HEADER.len());
    let mut shown: Vec<usize> = (0..HEADER.len()).collect();
    let wide = |shown: &[usize]| shown.iter().map(|&c| widths[c] + 2).sum::<usize>();
    for drop in DROP_ORDER {
        // Room for the table and at least 16 characters of WHY.
        if wide(&shown) + 16 <= width {
            break;
        }
        shown.retain(|&c| c != drop);
    }
    for (row, why) in rows.iter().zip(&why) {
        // Names and states to the left, numbers to the right.
        let mut line = layout_row(row, shown.iter().copied(), &widths, |c| c < 2 || c == 7);
        line.push_str(why);
        lines.push(line.trim_end().to_owned());
    }
    let uplinks: Vec<String> = now
        .backends
        .iter()
        .filter(|b| b.kind.as_deref() == Some("uplink"))
        .map(|b| {
            format!(
                "{} {}",
                b.name,
                b.link.as_deref().unwrap_or(if b.state.as_deref() == Some("up") { "up" } else { "-" })
            )
        })
        .collect();
    if !uplinks.is_empty() {
        lines.push(String::new());
        lines.push(format!("uplinks: {}", uplinks.join(" · ")));
    }
    for line in &mut lines {
        if line.chars().count() > width {
            *line = line.chars().take(width - 1).chain(['…']).collect();
        }
    }
    lines
}

fn per_second(n: u64, dt: Duration) -> u64 {
    let ms = dt.as_millis().max(1) as u64;
    n.saturating_mul(1000) / ms
}

/// Enters the alternate screen with the cursor hidden; `Drop` restores
/// both (and the terminal's modes, in [`Terminal`]).
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// Runs the live view until `q` or Ctrl-C. `fetch` reads the daemon's
/// stats document (or says why it could not); `interval` is the refresh
/// unless a document names its own (`refresh_interval`).
pub fn run(mut fetch: impl FnMut() -> Result<String, String>, interval: Duration) -> Result<(), String> {
    let mut term = Terminal::open();
    let mut out = std::io::stdout();
    let _ = out.write_all(ENTER.as_bytes());
    let mut last: Option<(Stats, Instant)> = None;
    let mut prev: Option<(Stats, Instant)> = None;
    let mut wait = interval;
    loop {
        let trouble = match fetch().and_then(|body| Stats::from_json(&body)) {
            Ok(stats) => {
                if let Some(secs) = stats.refresh_interval.filter(|s| *s > 0) {
                    wait = Duration::from_secs(secs);
                }
                prev = last.take();
                last = Some((stats, Instant::now()));
                None
            }
            Err(e) => Some(e),
        };
        let width = term.width();
        let mut screen = String::from("\x1b[H");
        let lines = match &last {
            Some((now, at)) => {
                let before = prev.as_ref().map(|(p, pat)| (p, at.duration_since(*pat)));
                frame(now, before, width, trouble.as_deref())
            }
            None => {
                vec![format!("disconnected, retrying: {}", trouble.as_deref().unwrap_or("no answer yet"))]
            }
        };
        for line in lines {
            screen.push_str(&line);
            screen.push_str("\x1b[K\r\n");
        }
        let _ = write!(screen, "\x1b[Kq: quit · every {}s\x1b[J", wait.as_secs().max(1));
        if out.write_all(screen.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
        if term.wait_for_quit(wait) {
            break;
        }
    }
    let _ = out.write_all(LEAVE.as_bytes());
    let _ = out.flush();
    term.restore();
    Ok(())
}

/// The terminal, in the mode the live view needs: keys one by one without
/// echo, Ctrl-C as a key (so the view ends as `q` does, restoring the
/// terminal, instead of being killed).
struct Terminal {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
    #[cfg(windows)]
    saved: Option<(u32, u32)>,
}

/// A key that ends the view: `q`, `Q`, Ctrl-C (0x03) or Ctrl-D (0x04).
fn quits(key: u8) -> bool {
    matches!(key, b'q' | b'Q' | 0x03 | 0x04)
}

#[cfg(unix)]
impl Terminal {
    fn open() -> Terminal {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, SpecialCodeIndex};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return Terminal { saved: None } };
        let mut raw = saved.clone();
        raw.local_modes.remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
        // read() returns after a key, or after 0.1 s with nothing.
        raw.special_codes[SpecialCodeIndex::VMIN] = 0;
        raw.special_codes[SpecialCodeIndex::VTIME] = 1;
        match tcsetattr(&stdin, OptionalActions::Now, &raw) {
            Ok(()) => Terminal { saved: Some(saved) },
            Err(_) => Terminal { saved: None },
        }
    }

    fn width(&self) -> usize {
        rustix::termios::tcgetwinsize(std::io::stdout()).map_or(80, |w| usize::from(w.ws_col)).max(20)
    }

    /// Waits up to `wait`; `true` if a quitting key came.
    fn wait_for_quit(&mut self, wait: Duration) -> bool {
        use std::io::Read;
        let end = Instant::now() + wait;
        if self.saved.is_none() {
            // No terminal to read keys from (stdin is a file or a pipe):
            // Ctrl-C ends the process as usual.
            std::thread::sleep(wait);
            return false;
        }
        let mut buf = [0u8; 16];
        while Instant::now() < end {
            match std::io::stdin().read(&mut buf) {
                Ok(n) if buf[..n].iter().any(|&k| quits(k)) => return true,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        false
    }

    fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ =
                rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &saved);
        }
    }
}

#[cfg(windows)]
impl Terminal {
    fn open() -> Terminal {
        let saved = crate::console::live_mode();
        Terminal { saved }
    }

    fn width(&self) -> usize {
        crate::console::width().unwrap_or(80).max(20)
    }

    fn wait_for_quit(&mut self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            if crate::console::keys().iter().any(|&k| quits(k)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            crate::console::restore_mode(saved);
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(up_bytes: u64, dead_state: &str) -> Stats {
        let json = format!(
            r#"{{"timestamp":"2026-12-03T10:00:00Z","version":"1.0","mode":"socks5","algorithm":"p2c",
            "uptime_seconds":60,"refresh_interval":2,"total_backends":3,"healthy_backends":2,"open_tunnels":4,"outage":false,
            "backends":[
            {{"name":"tor-1","address":"127.0.0.1:9050","circuit":"closed","state":"up","down_since":null,"last_error":null,
             "latency_ema_ms":12.0,"success_rate":1.0,"active_connections":3,"total_connections":9,"failures":0,"timeouts":0,
             "bytes_up":{up_bytes},"bytes_down":{},"in_active_set":true,"kind":"proxy","link":null}},
            {{"name":"dead-proxy","address":"127.0.0.1:9999","circuit":"open","state":"{dead_state}","down_since":null,
             "last_error":"connection refused","latency_ema_ms":null,"success_rate":0.0,"active_connections":0,
             "total_connections":0,"failures":2,"timeouts":0,"bytes_up":0,"bytes_down":0,"in_active_set":true,"kind":"proxy","link":null}},
            {{"name":"wan1","address":"uplink dev wan1","circuit":"closed","state":"up","down_since":null,"last_error":null,
             "latency_ema_ms":3.0,"success_rate":1.0,"active_connections":1,"total_connections":1,"failures":0,"timeouts":0,
             "bytes_up":0,"bytes_down":0,"in_active_set":true,"kind":"uplink","link":"up"}}]}}"#,
            up_bytes * 10
        );
        Stats::from_json(&json).unwrap()
    }

    #[test]
    fn rows_states_rates_reasons_and_uplinks() {
        let (before, now) = (doc(1000, "down"), doc(3000, "down"));
        let lines = frame(&now, Some((&before, Duration::from_secs(2))), 120, None);
        let text = lines.join("\n");
        assert!(lines[0].starts_with("socksbalance 1.0 · socks5 · p2c · 2/3 up · 4 tunnel(s)"), "{text}");
        assert!(lines[0].contains("↑ 1000 B/s ↓ 9.8 KiB/s"), "2,000 B up and 20,000 B down in 2 s: {text}");
        let header = lines.iter().position(|l| l.starts_with("NAME")).unwrap();
        assert!(
            lines[header].contains("ADDRESS") && lines[header].ends_with("WHY"),
            "all columns at 120: {text}"
        );
        let tor = &lines[header + 1];
        assert!(
            tor.starts_with("tor-1")
                && tor.contains(" up ")
                && tor.contains("12 ms")
                && tor.contains("1000 B"),
            "{text}"
        );
        let dead = &lines[header + 2];
        assert!(
            dead.contains("down") && dead.ends_with("connection refused") && !dead.contains(" ms"),
            "{text}"
        );
        assert!(text.contains("uplinks: wan1 up"), "{text}");
    }

    #[test]
    fn narrow_terminals_drop_columns_and_nothing_is_wider_than_the_screen() {
        let now = doc(0, "down");
        let lines = frame(&now, None, 80, None);
        let header = lines.iter().find(|l| l.starts_with("NAME")).unwrap();
        assert!(!header.contains("ADDRESS"), "the address goes first at 80 columns: {header}");
        assert!(header.contains("STATE") && header.contains("LATENCY") && header.contains("WHY"), "{header}");
        for width in [20, 40, 80] {
            for line in frame(&now, None, width, Some("connection refused (is socksbalance running?)")) {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
        }
    }

    #[test]
    fn a_daemon_that_went_away_is_said_above_the_last_view() {
        let lines =
            frame(&doc(0, "down"), None, 100, Some("cannot reach http://127.0.0.1:8080: connection refused"));
        assert!(lines[0].starts_with("disconnected, retrying: cannot reach"), "{lines:?}");
        assert!(lines[1].starts_with("socksbalance 1.0"), "{lines:?}");
    }

    #[test]
    fn outages_get_a_banner_and_q_and_ctrl_c_quit() {
        let mut now = doc(0, "down");
        now.outage = true;
        assert!(frame(&now, None, 100, None).iter().any(|l| l.starts_with("UPLINK OUTAGE")));
        assert!(quits(b'q') && quits(3) && !quits(b' '));
    }
}
