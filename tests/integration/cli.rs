//! The binary itself: `check`, `--version`, `--help`, exit codes, and a
//! real run stopped by SIGTERM.

#[cfg(unix)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
#[cfg(unix)]
use std::process::Stdio;

#[cfg(unix)]
use crate::support::Running;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socksbalance"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(name)
}

#[test]
fn check_prints_a_summary_with_every_backend_expanded_and_secrets_masked() {
    let out = bin().args(["check", "-c"]).arg(fixture("valid/socksbalance-complete.yaml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen: 0.0.0.0:1080"), "{text}");
    assert!(text.contains("mode: transparent"), "{text}");
    assert!(text.contains("backends: 25"), "{text}");
    for port in 9070..=9089 {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "port {port} missing:\n{text}");
    }
    assert!(text.contains("Tor#20"), "{text}");
    assert!(text.contains("[2001:db8::1]:8082"), "{text}");

    let out = bin().args(["check", "-c"]).arg(fixture("valid/socks5-every-key.yaml")).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("user=upstream password=MASKED"), "{text}");
    assert!(!text.contains("battery") && !text.contains("correct horse"), "{text}");
}

#[test]
fn check_rejects_a_bad_config_with_key_and_line_and_exit_2() {
    let out = bin().args(["check", "-c"]).arg(fixture("invalid/reversed-range.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 4: backends[0].address"), "{err}");
    assert!(err.contains("reversed"), "{err}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = bin().args(["check", "-c", "/nonexistent/socksbalance.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn version_help_and_usage_errors() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("socksbalance {}", env!("CARGO_PKG_VERSION"))
    );

    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["-c", "--verbose", "--quiet", "check"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }

    let out = bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `service` is the Windows service's command (tested under Wine by
/// scripts/wine-service.sh); elsewhere it says where to look instead.
#[cfg(not(windows))]
#[test]
fn the_service_command_points_elsewhere_off_windows() {
    let out = bin().args(["service", "install", "-c", "x.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8(out.stderr).unwrap();
    assert!(said.contains("Windows service") && said.contains("systemd"), "{said}");
    // A config file named "service" is still a config file.
    let out = bin().args(["-c", "service", "check"]).output().unwrap();
    let said = String::from_utf8(out.stderr).unwrap();
    assert!(!said.contains("Windows service"), "{said}");
}

#[test]
fn running_with_an_invalid_config_exits_2() {
    let out = bin().arg("-c").arg(fixture("invalid/unknown-key.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_intervall"));
}

/// Kills a child process when dropped (a test that panics included).
#[cfg(unix)]
struct KillOnDrop(std::process::Child);

#[cfg(unix)]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
const DIRECT: &str = "listen: 127.0.0.1:0\nmode: socks5\nbackends:\n  - direct: true\n";

#[cfg(unix)]
#[test]
fn the_daemon_serves_then_exits_0_on_sigterm_and_sigint() {
    use crate::support::*;
    for signal in ["-TERM", "-INT"] {
        let running = Running::start(signal, DIRECT, &[]);
        let target = echo_server("127.0.0.1:0");
        assert_echo(running.addr, &Dest::Ip(target), None);
        let (code, rest) = running.stop(signal);
        assert_eq!(code, Some(0), "{signal}");
        assert!(rest.iter().any(|l| l.contains("stopped")), "{signal}: {rest:?}");
    }
}

#[cfg(unix)]
#[test]
fn verbose_flag_turns_on_debug_logs() {
    use crate::support::*;
    let running = Running::start("verbose", DIRECT, &["-v"]);
    let target = echo_server("127.0.0.1:0");
    assert_echo(running.addr, &Dest::Ip(target), None);
    let (_, rest) = running.stop("-TERM");
    assert!(rest.iter().any(|l| l.starts_with("DEBUG") && l.contains("tunnel to")), "{rest:?}");

    let running = Running::start("quiet", DIRECT, &[]);
    assert_echo(running.addr, &Dest::Ip(target), None);
    let (_, rest) = running.stop("-TERM");
    assert!(!rest.iter().any(|l| l.starts_with("DEBUG")), "debug lines at info level: {rest:?}");
}

#[cfg(unix)]
#[test]
fn json_log_format_writes_one_object_per_line() {
    let running = Running::start("json", &format!("{DIRECT}log:\n  format: json\n"), &[]);
    let (code, rest) = running.stop("-TERM");
    assert_eq!(code, Some(0));
    assert!(!rest.is_empty());
    for line in &rest {
        assert!(line.starts_with("{\"ts\":") && line.ends_with('}'), "not a JSON object: {line}");
        assert!(line.contains("\"level\":\"INFO\""), "{line}");
    }
}

#[cfg(unix)]
#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_running_config() {
    use crate::support::*;
    let b0 = Backend::start(Behaviour::Proxy);
    let b1 = Backend::start(Behaviour::Proxy);
    let base = "listen: 127.0.0.1:0\nmode: socks5\nbackends:\n";
    let mut running = Running::start("reload", &format!("{base}{}", b0.yaml("b0")), &[]);
    let target = echo_server("127.0.0.1:0");
    assert_echo(running.addr, &Dest::Ip(target), None);

    std::fs::write(running.config_path(), format!("{base}  - address: 127.0.0.1:99999\n")).unwrap();
    running.signal("-HUP");
    let line = running.wait_for_line("reload failed");
    assert!(line.contains("99999") && line.contains("the running configuration stays"), "{line}");
    assert_echo(running.addr, &Dest::Ip(target), None);

    std::fs::write(running.config_path(), format!("{base}{}{}", b0.yaml("b0"), b1.yaml("b1"))).unwrap();
    running.signal("-HUP");
    let line = running.wait_for_line("reloaded:");
    assert!(line.contains("1 kept, 1 new"), "{line}");
    for _ in 0..4 {
        assert_echo(running.addr, &Dest::Ip(target), None);
    }
    assert_eq!(b1.request_count(), 2, "the added backend takes traffic");
    assert_eq!(b0.request_count(), 4);
    let (code, _) = running.stop("-TERM");
    assert_eq!(code, Some(0));
}

/// CPU time (user + system, in clock ticks) a process has used so far.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    use crate::support::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("socksbalance-emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("run.yaml");
    // One thread: its descriptors (a reactor is three) do not depend on
    // the machine's cores.
    std::fs::write(&config, "listen: 127.0.0.1:0\nmode: socks5\nthreads: 1\nbackends:\n  - direct: true\n")
        .unwrap();
    // A tiny descriptor budget: the daemon's own needs plus a dozen clients.
    let script =
        format!("ulimit -n 24 && exec {} -c {}", env!("CARGO_BIN_EXE_socksbalance"), config.display());
    let mut child = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |limit: Duration| lines.recv_timeout(limit).ok();
    let addr: std::net::SocketAddr = loop {
        let line = next_line(IO_TIMEOUT).expect("daemon did not start");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };

    // 40 clients that say nothing: the kernel completes their connections,
    // the daemon accepts until it has no descriptors left.
    let flood: Vec<std::net::TcpStream> =
        (0..40).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let emfile = loop {
        let line = next_line(IO_TIMEOUT).expect("no accept failure logged");
        if line.contains("accept") && line.contains("failed") {
            break line;
        }
    };
    assert!(emfile.contains("Too many open files") || emfile.contains("os error 24"), "{emfile}");

    // Backing off, not spinning: little CPU, and no flood of log lines.
    let before = cpu_ticks(child.0.id());
    let start = Instant::now();
    let mut more = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        if next_line(Duration::from_millis(100)).is_some_and(|l| l.contains("accept")) {
            more += 1;
        }
    }
    let used = cpu_ticks(child.0.id()) - before;
    assert!(used < 50, "{used} CPU ticks in 1.5 s while out of descriptors: a busy loop");
    assert!(more <= 1, "{more} more accept-failure lines in 1.5 s: not throttled");

    // Descriptors free up: service resumes.
    drop(flood);
    let target = echo_server("127.0.0.1:0");
    wait_for("service to recover", Duration::from_secs(15), || {
        socks_connect(addr, &Dest::Ip(target), None).map(|(code, _)| code == 0).unwrap_or(false)
    });
    assert_echo(addr, &Dest::Ip(target), None);
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(unix)]
#[test]
fn secrets_never_reach_the_log_even_at_trace_level() {
    use crate::support::*;
    let backend = Backend::start_with(Behaviour::Proxy, Some(("upstream", "backend-s3cret")));
    let yaml = format!(
        "listen: 127.0.0.1:0\nmode: socks5\nauth:\n  users: [{{username: alice, password: client-s3cret}}]\n\
         web:\n  enabled: true\n  listen: 127.0.0.1:0\n  token: token-s3cret-123\n\
         backends:\n  - {{address: \"{}\", username: upstream, password: backend-s3cret}}\n  - {{address: \"{}\", username: upstream, password: wrong-s3cret}}\n",
        backend.addr, backend.addr
    );
    let running = Running::start("secrets", &yaml, &["-vv"]);
    let target = echo_server("127.0.0.1:0");
    // Successes, a wrong client password, and a backend rejecting ours.
    for _ in 0..4 {
        let _ = socks_connect(running.addr, &Dest::Ip(target), Some(("alice", "client-s3cret")));
    }
    let _ = socks_connect(running.addr, &Dest::Ip(target), Some(("alice", "bad-s3cret-guess")));
    let (code, lines) = running.stop("-TERM");
    assert_eq!(code, Some(0));
    assert!(lines.iter().any(|l| l.starts_with("TRACE") || l.starts_with("DEBUG")), "not verbose: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("login failed")), "the failed login was not logged");
    for line in &lines {
        assert!(!line.contains("s3cret"), "a secret in the log: {line}");
    }
}

#[cfg(unix)]
#[test]
fn sighup_can_raise_the_log_level() {
    use crate::support::*;
    let target = echo_server("127.0.0.1:0");
    let config = format!("{DIRECT}log:\n  level: info\n");
    let mut running = Running::start("raise-level", &config, &[]);
    std::fs::write(running.config_path(), config.replace("level: info", "level: debug")).unwrap();
    running.signal("-HUP");
    running.wait_for_line("reloaded:");
    // Regression: simple_logger's level was fixed at start, so a reload
    // could lower the level but never raise it.
    assert_echo(running.addr, &Dest::Ip(target), None);
    let line = running.wait_for_line("tunnel to");
    assert!(line.starts_with("DEBUG"), "{line}");
}

/// With 20 dead and 4 live idle backends, the daemon's log stays within
/// what a router's log ring affords: the start-up round in one line, no
/// outage, no line per failed recovery probe. Intervals are a
/// fiftieth of the defaults, so 3 s here stand for 150 s.
#[cfg(unix)]
#[test]
fn an_idle_daemon_with_dead_backends_logs_a_few_lines_not_one_per_probe() {
    use crate::support::*;
    use std::time::Duration;
    let (first, live) = partly_live_range(24, &[0, 7, 13, 20], |l| Backend::serve(l, Behaviour::Proxy, None));
    let config = format!(
        "listen: 127.0.0.1:0\nmode: transparent\nbackends:\n  - address: \"127.0.0.1:{first}-{}\"\n    name: Tor\n\
         health:\n  check_interval: 200ms\n  connect_timeout: 100ms\n  recovery_interval: 200ms\n  \
         max_recovery_interval: 1200ms\n",
        first + 23
    );
    let running = Running::start("log-budget", &config, &[]);
    let started = std::time::Instant::now();
    // Probes happen meanwhile: the live backends are probed every interval.
    wait_for("3 s of idling", Duration::from_secs(10), || started.elapsed() >= Duration::from_secs(3));
    let probed: usize = live.iter().map(Backend::accepted).sum();
    // Fifteen intervals; a loaded machine may manage fewer rounds.
    assert!(probed >= 4 * 6, "the idle live backends were probed only {probed} times");
    let (_, mut lines) = running.stop_all("-TERM");
    // Not the two shutdown lines.
    lines.retain(|l| !l.contains("shutting down") && !l.contains("stopped"));
    let total = lines.len();
    assert!(total <= 60, "{total} lines:\n{}", lines.join("\n"));
    // The start-up round in one line, the dead ones by reason.
    let round: Vec<&String> = lines.iter().filter(|l| l.contains("first probes done")).collect();
    assert_eq!(round.len(), 1, "{}", lines.join("\n"));
    assert!(
        round[0].contains("4 of 24 backend(s) up; 20 down (connection refused): Tor#2, "),
        "{}",
        round[0]
    );
    assert!(round[0].ends_with("and 14 more"), "{}", round[0]);
    assert!(!lines.iter().any(|l| l.contains(": down (")), "no line per dead backend:\n{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("outage")), "{}", lines.join("\n"));
}

#[cfg(unix)]
#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    use std::io::Read;
    // A config whose summary is far larger than a pipe holds.
    let dir = std::env::temp_dir().join(format!("socksbalance-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.yaml");
    std::fs::write(&big, "backends:\n  - address: \"127.0.0.1:20000-23999\"\n    name: Many\n").unwrap();
    for args in [vec!["check", "-c"], vec!["--help"]] {
        let mut cmd = bin();
        cmd.args(&args);
        if args.len() == 2 {
            cmd.arg(&big);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Read the first line, as `| head -1` does, then close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        let _ = stdout.read(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `yaml` to a file of its own and runs `check` on it.
fn check_text(name: &str, yaml: &str) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("socksbalance-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dash_h_is_help_for_the_program_and_its_commands() {
    for args in [&["-h"][..], &["check", "-h"], &["status", "-h"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage:"), "{args:?}");
    }
}

#[test]
fn check_warns_about_settings_without_effect_and_open_listeners_with_exit_0() {
    let yaml = "listen: [\"0.0.0.0:1080\", \"10.254.253.252:1080\"]\nmode: socks5\nbalancer:\n  sticky_key: destination\n\
                backends:\n  - address: 127.0.0.1:9050\n    weight: 2\n  - direct: true\n    name: out\n  - direct: true\n    name: out\n";
    let (code, out, err) = check_text("warn", yaml);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": OK"), "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning:")).collect();
    let expect = [
        "line 1: listen[0]: 0.0.0.0:1080 takes clients from every network this host is on and no `auth` is set",
        "line 4: balancer.sticky_key: has no effect without balancer.sticky_session_ttl",
        "line 7: backends[0].weight: has no effect with `algorithm: roundrobin`",
        "line 11: backends[2].name: \"out\" is also the name of backends[1]",
        "listen 10.254.253.252:1080: this host has no such address now",
    ];
    assert_eq!(warnings.len(), expect.len(), "{err}");
    for (line, want) in warnings.iter().zip(expect) {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
    }
    // A plain loopback config warns about nothing.
    let (code, _, err) =
        check_text("quiet", "listen: 127.0.0.1:1080\nmode: socks5\nbackends:\n  - direct: true\n");
    assert_eq!((code, err.as_str()), (Some(0), ""));
}

#[test]
fn parse_errors_name_the_duplicate_line_hint_at_tabs_and_say_types_in_words() {
    let cases = [
        ("dup", "listen: 127.0.0.1:1080\nbackends:\n  - direct: true\nlisten: 127.0.0.1:1081\n", "line 4: `listen` is set twice"),
        ("dup-nested", "backends:\n  - direct: true\n    name: a\n    name: b\n", "line 4: backends[0]: `name` is set twice"),
        ("tab", "backends:\n\t- direct: true\n", "line 2: found character that cannot start any token"),
        ("number", "limits:\n  max_connections: lots\nbackends:\n  - direct: true\n", "line 2: limits.max_connections: invalid type: string \"lots\", expected a whole number from 0 to 4294967295"),
        ("bool", "backends:\n  - direct: yes\n", "expected true or false"),
    ];
    for (name, yaml, want) in cases {
        let (code, _, err) = check_text(name, yaml);
        assert_eq!(code, Some(2), "{name}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!err.contains("u32"), "{name}: {err}");
    }
    let (_, _, err) = check_text("tab2", "backends:\n\t- direct: true\n");
    assert!(err.contains("YAML indents with spaces, and this line has a tab"), "{err}");
}

#[cfg(unix)]
#[test]
fn the_daemon_logs_config_warnings_at_start_and_says_which_signal_stopped_it() {
    let yaml = "listen: 127.0.0.1:0\nmode: socks5\nbackends:\n  - direct: true\n    weight: 3\n";
    let running = Running::start("warn", yaml, &[]);
    let (code, all) = running.stop_all("-TERM");
    assert_eq!(code, Some(0));
    assert!(
        all.iter().any(|l| l.starts_with("WARN") && l.contains("line 5: backends[0].weight: has no effect")),
        "{all:?}"
    );
    assert!(all.iter().any(|l| l.contains("received SIGTERM; shutting down")), "{all:?}");
}

#[cfg(unix)]
#[test]
fn a_client_without_a_login_is_refused_and_that_is_logged_once_at_info() {
    use std::io::{Read, Write};
    let yaml = "listen: 127.0.0.1:0\nmode: socks5\nauth:\n  users:\n    - {username: u, password: p}\nbackends:\n  - direct: true\n";
    let mut running = Running::start("nologin", yaml, &[]);
    // What a browser sends: no-auth only. Twice, as a browser would.
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(running.addr).unwrap();
        s.write_all(&[5, 1, 0]).unwrap();
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).unwrap();
        assert_eq!(choice, [5, 0xff], "no acceptable method");
    }
    let line = running.wait_for_line("offers no username/password");
    assert!(line.starts_with("INFO") && line.contains("browsers cannot"), "{line}");
    let (_, all) = running.stop_all("-TERM");
    assert_eq!(all.iter().filter(|l| l.contains("offers no username/password")).count(), 1, "{all:?}");
}

/// The regressions: transparent mode logged failovers "(for 0.0.0.0:0)",
/// since the daemon never reads the destination there, and a probe's
/// trace line printed `Success(Some(365.625µs))`.
#[cfg(unix)]
#[test]
fn log_lines_show_no_placeholder_destination_and_no_debug_formatting() {
    use crate::support::*;
    // Passes the greeting probes, fails every CONNECT: it stays in the pool
    // and each client that picks it fails over.
    let dead = Backend::start(Behaviour::Reply(1));
    let good = Backend::start(Behaviour::Proxy);
    let yaml = format!(
        "listen: 127.0.0.1:0\nmode: transparent\nhealth:\n  check_interval: 1h\nbackends:\n{}{}",
        dead.yaml("dead"),
        good.yaml("good")
    );
    let running = Running::start("placeholder", &yaml, &["-vv"]);
    let target = echo_server("127.0.0.1:0");
    for _ in 0..2 {
        assert_echo(running.addr, &Dest::Ip(target), None);
    }
    let (_, all) = running.stop_all("-TERM");
    assert!(all.iter().any(|l| l.contains("backend dead:") && l.contains("trying another")), "{all:?}");
    assert!(all.iter().any(|l| l.ends_with("backend good: probe ok")), "{all:?}");
    for line in &all {
        assert!(
            !line.contains("0.0.0.0:0") && !line.contains("Some(") && !line.contains("Success("),
            "{line}"
        );
    }
}
