//! The `socksbalance` binary: command line, config, signals. Everything
//! else lives in the library, where the tests reach it too.
//!
//! Exit codes: 0 after a clean run, a passing `check` or a `status`
//! table; 1 when the daemon cannot start or fails (a port in use, say) or
//! `status` cannot reach it; 2 for bad usage or an invalid config.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use smol::stream::StreamExt;

use socksbalance::config::{Config, EMBEDDED_DEFAULT};
use socksbalance::{logging, Daemon, VERSION};

/// A SOCKS5 load balancer: spreads client connections over many upstream
/// SOCKS5 proxies. Without -c it runs a SOCKS5 proxy on 127.0.0.1:1080
/// that connects directly.
#[derive(FromArgs)]
struct Args {
    /// config file (YAML); without it, the embedded default is used
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,

    /// log more (repeat for more: -vv)
    #[argh(switch, short = 'v')]
    verbose: u8,

    /// log less (repeat for less: -qq)
    #[argh(switch, short = 'q')]
    quiet: u8,

    /// log to the local syslog socket (/dev/log) instead of stderr, each
    /// line with its own priority (the OpenWrt init script uses it)
    #[argh(switch)]
    syslog: bool,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,

    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Check(Check),
    Status(Status),
    #[cfg(windows)]
    Service(Service),
}

/// Install, remove, start or stop the Windows service (Windows only; needs
/// an administrator prompt).
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "service")]
struct Service {
    #[argh(subcommand)]
    action: ServiceAction,
}

#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand)]
enum ServiceAction {
    Install(ServiceInstall),
    Uninstall(ServiceUninstall),
    Start(ServiceStart),
    Stop(ServiceStop),
    Run(ServiceRun),
}

/// Register the service, started at boot with this config (its log goes
/// to socksbalance.log next to it).
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "install")]
struct ServiceInstall {
    /// config file for the service (without it, the embedded default)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

/// Stop the service if it runs, and remove it.
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "uninstall")]
struct ServiceUninstall {}

/// Start the service and wait until it runs.
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "start")]
struct ServiceStart {}

/// Stop the service (it drains its tunnels first) and wait until it has.
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
struct ServiceStop {}

/// What the Service Control Manager runs; not for a console.
#[cfg(windows)]
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct ServiceRun {
    /// config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

/// Print the backend table of a running daemon (from its dashboard's
/// /api/stats).
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
struct Status {
    /// the daemon's config file: the dashboard's address and login are
    /// read from it
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,

    /// the dashboard's address (default http://127.0.0.1:8080, or the
    /// one in the config)
    #[argh(option)]
    url: Option<String>,

    /// bearer token (web.token)
    #[argh(option)]
    token: Option<String>,

    /// basic-auth login as USER:PASSWORD (web.username, web.password)
    #[argh(option)]
    user: Option<String>,

    /// print the daemon's /api/stats document (JSON) instead of the table
    #[argh(switch)]
    json: bool,

    /// a live view, redrawn every web.refresh_interval until q or Ctrl-C
    #[argh(switch)]
    watch: bool,
}

/// Validate a config file, print what it configures, and exit (0 if valid,
/// 2 if not).
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    /// config file to check
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
}

/// argh takes `-v -v` but not the usual `-vv`: spell such groups out
/// (and `-h` as `--help`).
fn expand_repeated_flags<'a>(args: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for arg in args {
        // argh knows only --help; -h is what people type first.
        if arg == "-h" {
            out.push("--help");
            continue;
        }
        let letters = arg.strip_prefix('-').filter(|l| l.len() > 1 && !l.starts_with('-'));
        match letters {
            Some(l) if l.bytes().all(|b| b == b'v') => out.extend(std::iter::repeat_n("-v", l.len())),
            Some(l) if l.bytes().all(|b| b == b'q') => out.extend(std::iter::repeat_n("-q", l.len())),
            _ => out.push(arg),
        }
    }
    out
}

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let strings: Vec<String> = std::env::args().collect();
    let program = strings.first().map_or("socksbalance", |s| s.as_str());
    let rest = expand_repeated_flags(strings.iter().skip(1).map(|s| s.as_str()));
    // The Windows service's command, elsewhere: said in words, without
    // its parser in a router's binary.
    #[cfg(not(windows))]
    if rest
        .iter()
        .enumerate()
        .any(|(i, a)| *a == "service" && (i == 0 || !matches!(rest[i - 1], "-c" | "--config")))
    {
        eprintln!(
            "socksbalance service: manages the Windows service; on Linux run the daemon under systemd or \
             OpenWrt's procd (docs/install.md)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let args = match Args::from_args(&[program], &rest) {
        Ok(args) => args,
        Err(early) => {
            // --help prints to stdout and succeeds; a usage error does not.
            return match early.status {
                Ok(()) => emit(&format!("{}\n", early.output)),
                Err(()) => {
                    eprintln!("{}\nRun '{program} --help' for usage.", early.output.trim_end());
                    ExitCode::from(EXIT_USAGE)
                }
            };
        }
    };
    if args.version {
        return emit(&format!("socksbalance {VERSION}\n"));
    }
    match args.command {
        Some(Command::Check(check)) => run_check(check.config.or(args.config)),
        Some(Command::Status(status)) => run_status(status, args.config),
        #[cfg(windows)]
        Some(Command::Service(service)) => run_service(service, args.config),
        None => run_daemon(args),
    }
}

/// Writes a command's output to stdout. A reader that went away (`| head`)
/// ends the command quietly with success, as it does for `cat`; the
/// standard `print!` would panic instead.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socksbalance: cannot write output: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_status(status: Status, top_config: Option<PathBuf>) -> ExitCode {
    let (mut url, mut token, mut user) = (None, None, None);
    if let Some(path) = status.config.or(top_config) {
        let config = match Config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("socksbalance status: invalid config: {}: {e}", path.display());
                return ExitCode::from(EXIT_USAGE);
            }
        };
        match socksbalance::status::target_of(&config) {
            Ok((u, t, l)) => (url, token, user) = (Some(u), t, l),
            Err(e) => {
                eprintln!("socksbalance status: {}: {e}", path.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    // What the command line says wins over the config.
    let url = status.url.or(url).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let token = status.token.or(token);
    let user = status.user.or(user);
    if status.watch {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            eprintln!("socksbalance status: --watch draws on a terminal; for a pipe or a file use `status` or `status --json`");
            return ExitCode::from(EXIT_USAGE);
        }
        let fetch = || socksbalance::status::document(&url, token.as_deref(), user.as_deref());
        return match socksbalance::live::run(fetch, std::time::Duration::from_secs(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("socksbalance status: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    let fetched = if status.json {
        socksbalance::status::document(&url, token.as_deref(), user.as_deref()).map(|mut body| {
            body.push('\n');
            body
        })
    } else {
        socksbalance::status::run(&url, token.as_deref(), user.as_deref())
    };
    match fetched {
        Ok(table) => emit(&table),
        Err(e) => {
            eprintln!("socksbalance status: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display())),
        None => Config::from_yaml(EMBEDDED_DEFAULT).map_err(|e| format!("embedded default: {e}")),
    }
}

fn run_check(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("socksbalance check: needs -c FILE");
        return ExitCode::from(EXIT_USAGE);
    };
    match load(Some(&path)) {
        Ok(config) => {
            // Warnings go to stderr and leave the exit code 0: the file
            // loads, and the daemon would run it.
            for w in &config.warnings {
                eprintln!("socksbalance: warning: {}: {w}", path.display());
            }
            for addr in config.listen.iter().filter(|a| !socksbalance::tcp::is_local_address(a.ip())) {
                eprintln!(
                    "socksbalance: warning: {}: listen {addr}: this host has no such address now; the \
                     daemon listens on it anyway and serves it once an interface gets it",
                    path.display()
                );
            }
            emit(&format!("{}: OK\n{}", path.display(), config.summary()))
        }
        Err(e) => {
            eprintln!("socksbalance: invalid config: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run_daemon(args: Args) -> ExitCode {
    let config = match load(args.config.as_ref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("socksbalance: invalid config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let level = logging::adjust(config.log.level.to_filter(), args.verbose, args.quiet);
    #[cfg(not(unix))]
    if args.syslog {
        eprintln!("socksbalance: --syslog needs a Unix syslog socket; logging to stderr");
    }
    logging::init(config.log.format, level, args.syslog);
    // Register signal handlers before starting, so a signal that arrives
    // during start-up is not lost.
    let mut signals = match async_signal::Signals::new(termination_signals()) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let daemon = match start_daemon(config, args.config.is_some()) {
        Ok(daemon) => daemon,
        Err(code) => return ExitCode::from(code),
    };
    #[cfg(windows)]
    socksbalance::console::install(socksbalance::console::CloseHook::new(
        daemon.trigger(),
        daemon.finished(),
        daemon.snapshot().config.shutdown_timeout,
    ));
    // Only SIGHUP comes back around, and Windows has none.
    //
    // `future::block_on` only parks this thread: it does not drive the
    // reactor. `smol::block_on` would, and then every socket event would be
    // taken here and handed to the executor thread with a futex wake, a
    // cross-thread hop per event (measured: docs/performance.md,
    // "Executor threads"). The executor threads drive the reactor
    // themselves, and async-io's own thread when they are all busy.
    #[cfg_attr(not(unix), allow(clippy::never_loop))]
    loop {
        match smol::future::block_on(signals.next()) {
            #[cfg(unix)]
            Some(Ok(async_signal::Signal::Hup)) => {
                reload(&daemon, args.config.as_ref(), args.verbose, args.quiet)
            }
            Some(Ok(signal)) => {
                log::info!("received {}; shutting down (send it again to exit at once)", signal_name(signal));
                break;
            }
            other => {
                log::warn!("signal handling ended ({other:?}); shutting down");
                break;
            }
        }
    }
    std::thread::spawn(move || {
        // Windows has one signal only: the first one ends the loop.
        #[cfg_attr(not(unix), allow(clippy::never_loop))]
        while let Some(signal) = smol::future::block_on(signals.next()) {
            // A reload that comes while draining (an init script's SIGHUP
            // racing its own restart) is no request to hurry.
            #[cfg(unix)]
            if matches!(signal, Ok(async_signal::Signal::Hup)) {
                log::info!("SIGHUP while shutting down: ignored");
                continue;
            }
            let _ = signal;
            log::warn!("second signal: exiting without draining");
            std::process::exit(i32::from(EXIT_FAILURE));
        }
    });
    match daemon.shutdown() {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// How long `service stop` and `uninstall` wait for the drain: more than
/// any sane `shutdown_timeout` (the service's config is not at hand here).
#[cfg(windows)]
const SERVICE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(windows)]
fn run_service(service: Service, top_config: Option<PathBuf>) -> ExitCode {
    let result = {
        use socksbalance::service;
        match service.action {
            ServiceAction::Install(install) => service_install(install.config.or(top_config)),
            ServiceAction::Uninstall(_) => service::uninstall(SERVICE_STOP_WAIT),
            ServiceAction::Start(_) => service::start(std::time::Duration::from_secs(60)),
            ServiceAction::Stop(_) => service::stop(SERVICE_STOP_WAIT),
            ServiceAction::Run(run) => {
                let config = run.config.or(top_config);
                service::dispatch(move |running| serve(config.as_ref(), running)).map(|()| String::new())
            }
        }
    };
    match result {
        Ok(said) if said.is_empty() => ExitCode::SUCCESS,
        Ok(said) => emit(&format!("{said}\n")),
        Err(failure) => {
            eprintln!("socksbalance service: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `service install`: the config must load now (a service that cannot
/// start says so only in its log), and its path is made absolute (a
/// service starts in the system folder).
#[cfg(windows)]
fn service_install(config: Option<PathBuf>) -> Result<String, socksbalance::service::Failure> {
    use socksbalance::service::{self, Failure};
    let config = match config {
        Some(path) => {
            let path = std::path::absolute(&path).unwrap_or(path);
            if let Err(e) = load(Some(&path)) {
                return Err(Failure { message: format!("invalid config: {e}"), code: EXIT_USAGE });
            }
            Some(path)
        }
        None => None,
    };
    let exe = std::env::current_exe().map_err(|e| Failure {
        message: format!("cannot find this program's own path: {e}"),
        code: EXIT_FAILURE,
    })?;
    let line = service::command_line(&exe, config.as_deref())?;
    let mut said = service::install(&line)?;
    said.push_str(&format!("\nits log: {}", service::log_path(config.as_deref(), &exe).display()));
    Ok(said)
}

/// The service's body (`service run`, on the SCM's thread): logs to the
/// file next to the config, starts the daemon, reports it running, and
/// returns its exit code once a stop has drained it.
#[cfg(windows)]
fn serve(path: Option<&PathBuf>, running: &socksbalance::service::Running) -> u8 {
    use socksbalance::config::LogFormat;
    use socksbalance::logfile::LogFile;
    let exe = std::env::current_exe().unwrap_or_default();
    let log_path = socksbalance::service::log_path(path.map(PathBuf::as_path), &exe);
    let loaded = load(path);
    let (format, level) = match &loaded {
        Ok(config) => (config.log.format, config.log.level.to_filter()),
        Err(_) => (LogFormat::Text, log::LevelFilter::Info),
    };
    match LogFile::open(&log_path, format) {
        Ok(file) => socksbalance::logfile::install(file, level),
        // Nowhere to say why: the exit code is all the SCM shows.
        Err(_) => return EXIT_FAILURE,
    }
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            log::error!("invalid config: {e}");
            return EXIT_USAGE;
        }
    };
    let grace = config.shutdown_timeout;
    let daemon = match start_daemon(config, path.is_some()) {
        Ok(daemon) => daemon,
        Err(code) => return code,
    };
    running.running(daemon.trigger(), grace);
    match daemon.join() {
        Ok(()) => {
            log::info!("stopped");
            0
        }
        Err(e) => {
            log::error!("{e}");
            EXIT_FAILURE
        }
    }
}

/// Starts the daemon on `config` (logging is set up): the start-up
/// warnings, the listeners, and what runs on them in the log. `configured`
/// is false for the embedded default, whose dashboard gives way to
/// anything already on its port. Shared by the console and the Windows
/// service.
fn start_daemon(mut config: Config, configured: bool) -> Result<Daemon, u8> {
    for w in &std::mem::take(&mut config.warnings) {
        log::warn!("config: {w}");
    }
    if !configured && std::net::TcpListener::bind(config.web.listen).is_err() {
        // The embedded default should work on any machine; a configured
        // dashboard that cannot bind is an error instead.
        log::warn!("{} is taken; running without the dashboard", config.web.listen);
        config.web.enabled = false;
    }
    let threads = config.executor_threads();
    let daemon = match Daemon::start(config, threads) {
        Ok(daemon) => daemon,
        Err(e) => {
            log::error!("{e}");
            return Err(EXIT_FAILURE);
        }
    };
    // From the running snapshot: `interfaces: auto` has found its uplinks.
    let running = daemon.snapshot();
    if running.config.auto_uplinks.is_some() && running.config.discovered().is_empty() {
        log::warn!(
            "interfaces: auto found no interface that is up with an address and a default route; \
             uplinks join as soon as one is (docs/multipath.md)"
        );
    }
    let summary = format!(
        "{} mode, {} backend(s), {} balancing",
        running.config.mode,
        running.pool.backends().len(),
        running.config.balancer.algorithm
    );
    drop(running);
    for addr in daemon.local_addrs() {
        log::info!("socksbalance {VERSION} listening on {addr} ({summary})");
    }
    if let Some(addr) = daemon.web_addr() {
        log::info!("dashboard on http://{addr}/");
    }
    Ok(daemon)
}

/// SIGHUP: re-read the config file and switch to it without dropping
/// tunnels. (Windows has no SIGHUP: restart there.) A config that does not load is logged and ignored; the running
/// one stays.
#[cfg(unix)]
fn reload(daemon: &Daemon, path: Option<&PathBuf>, verbose: u8, quiet: u8) {
    let Some(path) = path else {
        log::warn!("SIGHUP: running the embedded default, there is no config file to re-read");
        return;
    };
    log::info!("SIGHUP: reloading {}", path.display());
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            log::error!("reload failed, the running configuration stays: {}: {e}", path.display());
            return;
        }
    };
    let level = logging::adjust(config.log.level.to_filter(), verbose, quiet);
    for w in &config.warnings {
        log::warn!("config: {w}");
    }
    match daemon.reload(config) {
        Ok(summary) => {
            logging::set_level(level);
            log::info!("reloaded: {summary}");
        }
        Err(e) => log::error!("reload failed, the running configuration stays: {e}"),
    }
}

/// The name a user knows a signal by.
fn signal_name(signal: async_signal::Signal) -> &'static str {
    match signal {
        async_signal::Signal::Int => "SIGINT",
        #[cfg(unix)]
        async_signal::Signal::Term => "SIGTERM",
        #[cfg(unix)]
        async_signal::Signal::Hup => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(unix)]
fn termination_signals() -> [async_signal::Signal; 3] {
    // SIGHUP is a reload, the others stop the daemon.
    [async_signal::Signal::Int, async_signal::Signal::Term, async_signal::Signal::Hup]
}

#[cfg(windows)]
fn termination_signals() -> [async_signal::Signal; 1] {
    [async_signal::Signal::Int]
}
