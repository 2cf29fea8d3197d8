//! Configuration: YAML text → raw structs → a validated [`Config`].
//!
//! The two stages are deliberate. The raw structs mirror the file exactly
//! (unknown keys refused, everything optional) and are read while
//! serde_yaml parses (`field.rs`), so that a typo or a bad value is
//! reported with its key path and line. Validation then
//! fills in defaults, expands port ranges and checks the rules that span
//! several keys, producing a [`Config`] whose fields are already the types
//! the daemon uses (`SocketAddr`, `Duration`, non-zero numbers). Nothing
//! after this module re-checks a setting.
//!
//! The accepted keys are a superset of SocksBalance's (the Go balancer this
//! project succeeds): its configs load unchanged and mean the same thing.

pub mod defaults;
mod field;
mod locate;
mod raw;
pub mod routing;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use field::Leaf;

use locate::{check_nesting, explain, locate};
use raw::RawConfig;
use validate::validate;
pub use validate::{check_weights, MAX_SCHEDULE};
pub use values::{
    format_duration, human, BackendAddr, Cidr, DestRule, GoDuration, Host, ListenAddr, ListenEntry,
    OneOrMany, ProbeUrl,
};

/// The configuration used when no `-c FILE` is given: a SOCKS5 proxy on
/// loopback that connects to destinations itself, so a fresh install
/// works before anyone writes a config.
pub const EMBEDDED_DEFAULT: &str = "\
# socksbalance's embedded default: used when no -c FILE is given.
listen: \"127.0.0.1:1080\"
mode: socks5
backends:
  - name: direct
    direct: true
web:
  enabled: true
  listen: \"127.0.0.1:8080\"
";

/// The most backends one config may have after port-range expansion.
pub const MAX_BACKENDS: usize = 65_536;

/// Upper bound on `health.metrics_window_size`: the windows live in fixed
/// `heapless` buffers of this capacity.
pub const MAX_METRICS_WINDOW: usize = 64;

/// Upper bound on a backend's `weight`.
pub const MAX_WEIGHT: u32 = 1000;

/// The largest config file read: far above any real config (1,000
/// backends take about 60 KiB), so a wrong path or a hostile file cannot
/// make the daemon read gigabytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The default `allow`: loopback, the private ranges (RFC 1918, IPv6 ULA)
/// and link-local. Everything a router's LAN can be; nothing on the
/// internet. Not carrier-grade NAT space (100.64.0.0/10, RFC 6598): on
/// many WANs that is the ISP's other customers (docs/security.md).
pub const DEFAULT_ALLOW: [Cidr; 8] = {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    [
        Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        Cidr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
        Cidr::new(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
        Cidr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
        Cidr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        Cidr::new(IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
        Cidr::new(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
    ]
};

/// A configuration problem: which key, where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `backends[2].address`; empty for whole-file errors.
    pub key: String,
    /// 1-based line in the file, when serde_yaml knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), line: None, message: message.into() }
    }

    fn from_yaml(err: serde_yaml::Error) -> Self {
        let location = err.location();
        // serde_yaml's message reads "path: problem at line N column M";
        // take off that last location (we print the line ourselves) but
        // keep any earlier one, which is libyaml's context, e.g. "while
        // scanning a quoted scalar at line 3 column 16".
        let mut text = err.to_string();
        if let Some(loc) = &location {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if text.ends_with(&suffix) {
                text.truncate(text.len() - suffix.len());
            }
        }
        let line = location.map(|l| l.line());
        let (key, message) = match text.split_once(": ") {
            Some((key, msg)) if !key.contains(' ') => (key.to_owned(), msg.to_owned()),
            _ => (String::new(), text),
        };
        ConfigError { key, line, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A secret (password, token) whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl field::Leaf for Secret {
    const TEXT: bool = true;
    const EXPECTING: &'static str = "a string";
    fn from_scalar(s: field::Scalar<'_>) -> Result<Self, String> {
        String::from_scalar(s).map(Secret)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` without an early exit on the first
    /// differing byte, so timing does not reveal how much matched.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

// ---------------------------------------------------------------------------
// Stage 2: the validated configuration the daemon runs on.
// ---------------------------------------------------------------------------

/// How client connections are handled (SocksBalance's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass the client's bytes to the backend untouched; the backend does
    /// the SOCKS5 talking. SocksBalance's default.
    Transparent,
    /// End the client's SOCKS5 here and do our own handshake with the backend.
    Socks5,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Transparent => "transparent",
            Mode::Socks5 => "socks5",
        })
    }
}

/// The protocol a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SOCKS5, served as `mode` says (the plain string form of `listen`).
    Socks5,
    /// An HTTP proxy: CONNECT and absolute-form requests.
    Http,
    /// SOCKS5 or HTTP, told apart by the client's first byte.
    Mixed,
    /// Connections that nftables `redirect`/`dnat` sent here (Linux): the
    /// destination is the one the client dialled (`SO_ORIGINAL_DST`).
    Redirect,
    /// Connections that nftables `tproxy` hands this `IP_TRANSPARENT`
    /// listener (Linux): the destination is the accepted socket's own
    /// local address.
    Tproxy,
}

impl Protocol {
    /// Whether clients of this listener are a gateway's: they never speak
    /// a proxy protocol, and their destination comes from the kernel.
    pub fn is_gateway(self) -> bool {
        matches!(self, Protocol::Redirect | Protocol::Tproxy)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Socks5 => "socks5",
            Protocol::Http => "http",
            Protocol::Mixed => "mixed",
            Protocol::Redirect => "redirect",
            Protocol::Tproxy => "tproxy",
        })
    }
}

/// How a backend is picked for each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Each backend in turn (SocksBalance's only algorithm).
    Roundrobin,
    /// A uniformly random backend.
    Random,
    /// The backend with the fewest open tunnels.
    LeastConnections,
    /// Smooth weighted round robin over `weight` (as nginx does it).
    Weighted,
    /// The backend with the lowest latency EMA (untested backends first).
    LowestLatency,
    /// Consistent hashing on the destination's site, with bounded load.
    StickyDestination,
    /// Power of two choices on peak-EWMA latency × (active + 1).
    P2c,
    /// Per site, what worked before (`p2c` among the rest).
    Learned,
}

/// What `sticky_session_ttl` keeps together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyKey {
    /// The client's IP address: one client, one backend (SocksBalance).
    Client,
    /// The destination: one site, one backend, whoever asks.
    Destination,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Roundrobin => "roundrobin",
            Algorithm::Random => "random",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::Weighted => "weighted",
            Algorithm::LowestLatency => "lowest_latency",
            Algorithm::StickyDestination => "sticky_destination",
            Algorithm::P2c => "p2c",
            Algorithm::Learned => "learned",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Enums read by name (the first names are the ones errors list; the
/// rest are aliases).
macro_rules! named {
    ($($ty:ident [$shown:literal] { $($name:literal => $v:ident),* $(,)? })*) => {
        $(impl Leaf for $ty {
            const TEXT: bool = true;
            const EXPECTING: &'static str = "a name";
            fn from_scalar(s: field::Scalar<'_>) -> Result<Self, String> {
                const VALUES: &[$ty] = &[$($ty::$v),*];
                field::by_name(s, &[$($name),*], $shown).map(|i| VALUES[i])
            }
        })*
    };
}

named! {
    Mode [2] { "transparent" => Transparent, "socks5" => Socks5 }
    Protocol [5] { "socks5" => Socks5, "http" => Http, "mixed" => Mixed, "redirect" => Redirect, "tproxy" => Tproxy }
    Algorithm [8] {
        "roundrobin" => Roundrobin, "random" => Random, "least_connections" => LeastConnections,
        "weighted" => Weighted, "lowest_latency" => LowestLatency, "sticky_destination" => StickyDestination,
        "p2c" => P2c, "learned" => Learned, "round_robin" => Roundrobin,
    }
    StickyKey [2] { "client" => Client, "destination" => Destination }
    LogLevel [5] { "error" => Error, "warn" => Warn, "info" => Info, "debug" => Debug, "trace" => Trace, "warning" => Warn }
    LogFormat [2] { "text" => Text, "json" => Json }
}

/// Where a backend sends a client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An upstream SOCKS5 proxy.
    Proxy { host: Host, port: u16 },
    /// No proxy: connect to the destination from this host.
    Direct,
    /// No proxy: connect to the destination from this host, through one
    /// network interface or from one source address (multipath).
    Uplink(Uplink),
}

impl Target {
    /// Whether the daemon itself connects to the destination (no proxy
    /// upstream to do the SOCKS5 talking).
    pub fn is_local(&self) -> bool {
        !matches!(self, Target::Proxy { .. })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Proxy { host, port } => write!(f, "{host}:{port}"),
            Target::Direct => f.write_str("direct"),
            Target::Uplink(u) => write!(f, "uplink {u}"),
        }
    }
}

/// How an uplink leaves this host: through an interface (Linux
/// `SO_BINDTODEVICE`, Windows `IP_UNICAST_IF`), from a source address
/// (a bind before connect), or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub interface: Option<String>,
    pub bind: Option<std::net::IpAddr>,
}

impl fmt::Display for Uplink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.interface, &self.bind) {
            (Some(dev), Some(ip)) => write!(f, "dev {dev} from {ip}"),
            (Some(dev), None) => write!(f, "dev {dev}"),
            (None, Some(ip)) => write!(f, "from {ip}"),
            (None, None) => f.write_str("default route"),
        }
    }
}

/// Where `interfaces: auto` sits in `backends`, and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoUplinks {
    /// Discovered uplinks are inserted here, in interface-index order.
    pub position: usize,
    pub weight: NonZeroU32,
}

/// Username and password for RFC 1929, each 1 to 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    /// Whether a login is this one, in constant time for the password and
    /// without stopping at a wrong username (no timing tells which failed).
    pub fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        constant_time_eq(self.username.as_bytes(), username) & self.password.matches(password)
    }
}

/// One backend after port-range expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Display name: the configured name, `name#N` for the Nth port of a
    /// range (as SocksBalance names them), or the address.
    pub name: String,
    pub target: Target,
    /// Credentials this daemon presents to the backend (socks5 mode).
    pub credentials: Option<Credentials>,
    /// Share of connections under `algorithm: weighted`.
    pub weight: NonZeroU32,
    /// The uplink (by name) a SOCKS backend is reached through.
    pub via: Option<String>,
    /// Added for the rules' `action: direct` (no `direct` backend was
    /// configured): in no group, and used by nothing else.
    pub hidden: bool,
    /// Found by `interfaces: auto` rather than written in the file; a
    /// re-discovery replaces exactly these.
    pub discovered: bool,
    /// Whether UDP associations may use it (`udp: false` skips it).
    pub udp: bool,
}

impl BackendConfig {
    /// Whether `other` is this backend, perhaps with another weight: a
    /// reload carries its counters and health over. A new name, address,
    /// login or uplink makes it another backend.
    pub fn same_backend(&self, other: &BackendConfig) -> bool {
        BackendConfig { weight: other.weight, ..self.clone() } == *other
    }
}

/// Settings for health checking. The health issue's circuit breaker and
/// metrics windows read these; they are validated now so that a config
/// written today keeps loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// URL probed through each backend (SocksBalance: `test_url`).
    pub test_url: Option<ProbeUrl>,
    pub check_interval: Duration,
    /// Timeout for the TCP connect to a backend and its SOCKS5 greeting.
    pub connect_timeout: Duration,
    /// Timeout for a whole probe request, and for a backend's reply to a
    /// CONNECT (the backend's own connect to the destination).
    pub request_timeout: Duration,
    /// A tunnel whose client sent data and got no byte back within this
    /// counts as a stall of its backend (zero: `off`, the check is off).
    pub first_byte_timeout: Duration,
    /// Failed probes that mark a backend unhealthy (SocksBalance's meaning).
    pub failure_threshold: NonZeroU32,
    /// Consecutive failures that open a backend's circuit.
    pub circuit_threshold: NonZeroU32,
    pub recovery_interval: Duration,
    pub max_recovery_interval: Duration,
    pub metrics_window_size: usize,
    pub passive_monitoring: bool,
    /// Where uplinks are probed with a TCP connect (`health.uplink_probe`);
    /// without it, `test_url`'s host and port.
    pub uplink_probe: Option<(Host, u16)>,
    /// The statuses `test_url` must answer; empty: any of 200 to 399.
    pub expected_status: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub algorithm: Algorithm,
    pub max_latency: Option<Duration>,
    pub sticky_session_ttl: Option<Duration>,
    /// `None` uses all backends (SocksBalance writes this as 0).
    pub max_active_backends: Option<NonZeroU32>,
    /// Backends tried for one client connection before it gets an error.
    pub max_attempts: NonZeroU32,
    pub sticky_key: StickyKey,
    /// How fast `p2c`'s peak-EWMA latency forgets (its time constant).
    pub latency_decay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Dashboard refresh period in seconds (SocksBalance: a number).
    pub refresh_interval: NonZeroU32,
    /// Bearer token (`Authorization: Bearer T` or `?token=T`).
    pub token: Option<Secret>,
    /// HTTP basic auth.
    pub basic: Option<Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A tunnel with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A client must finish its greeting, auth and request within this.
    pub handshake_timeout: Duration,
    /// Client connections open at once; beyond it new ones are refused.
    pub max_connections: NonZeroU32,
    /// Client connections open at once from one IP address.
    pub max_connections_per_client: Option<NonZeroU32>,
    /// A UDP association with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// UDP associations open at once; beyond it UDP ASSOCIATE is refused.
    pub max_udp_associations: NonZeroU32,
}

/// The DNS listener (`dns:`): queries forwarded over TCP through the
/// balanced backends to `upstreams`, answers cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Served on UDP and TCP alike.
    pub listen: SocketAddr,
    /// Resolvers, tried in order; each reached through a backend.
    pub upstreams: Vec<SocketAddr>,
    /// Answers kept at most; 0 turns the cache off.
    pub cache_size: usize,
}

/// A validated configuration. Immutable once built: the daemon shares it
/// behind an `Arc`, and a reload builds a new one and swaps it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// The protocol of each `listen` address, in the same order.
    pub protocols: Vec<Protocol>,
    pub mode: Mode,
    pub backends: Vec<BackendConfig>,
    pub health: Health,
    pub balancer: Balancer,
    pub web: Web,
    pub log: Log,
    /// Users allowed to connect; `None` means no client authentication.
    pub auth: Option<Vec<Credentials>>,
    pub limits: Limits,
    /// How long a shutdown waits for open tunnels to finish.
    pub shutdown_timeout: Duration,
    /// Executor threads; `None` lets the daemon choose
    /// ([`Config::executor_threads`]).
    pub threads: Option<Threads>,
    /// Client addresses that may connect; others are closed at once.
    pub allow: Vec<Cidr>,
    /// Destinations refused with "not allowed by ruleset": the configured
    /// ones, then our own listen and dashboard addresses (no loops).
    pub deny_destinations: Vec<DestRule>,
    /// `interfaces: auto` in `backends`, if present.
    pub auto_uplinks: Option<AutoUplinks>,
    /// Gateway listeners: read the name a client's first bytes carry
    /// (TLS SNI, HTTP `Host`) and connect to it by name.
    pub sniff: bool,
    /// `SO_MARK` on every connection we open (0: none), so that the
    /// gateway's firewall rules can leave our own traffic alone.
    pub routing_mark: u32,
    /// The DNS listener, if configured.
    pub dns: Option<Dns>,
    /// `groups:`; empty: one implicit group of every backend.
    pub groups: Vec<routing::Group>,
    /// `rules:`, in order.
    pub rules: Vec<routing::Rule>,
    /// Settings that load but do not do what they seem to, or leave the
    /// proxy open: `check` prints them, the daemon logs them at start and
    /// on reload. Each names its key and line, as errors do.
    pub warnings: Vec<ConfigError>,
}

/// Most executor threads `threads` may ask for.
pub const MAX_THREADS: u32 = 64;

/// Reads a text file of at most `limit` bytes (a wrong path or a hostile
/// file cannot make the daemon read gigabytes); errors are at `key`.
fn read_bounded(key: &str, path: &std::path::Path, limit: u64) -> Result<String, ConfigError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| ConfigError::at(key, format!("cannot read {}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path).map_err(cannot)?.take(limit + 1).read_to_string(&mut text).map_err(cannot)?;
    if text.len() as u64 > limit {
        return Err(ConfigError::at(key, format!("{} is larger than {limit} bytes", path.display())));
    }
    Ok(text)
}

/// `threads:` as written: a number of executor threads, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One per core, at most [`AUTO_THREADS_MAX`].
    Auto,
    Count(NonZeroU32),
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threads::Auto => f.write_str("auto"),
            Threads::Count(n) => n.fmt(f),
        }
    }
}

/// Most threads `threads: auto` starts, however many cores there are.
pub const AUTO_THREADS_MAX: usize = 4;

/// Executor threads when `threads` is not set: one, as `auto` did not win
/// every row of scripts/bench.sh (docs/performance.md, "A reactor per
/// thread and `threads: auto`").
pub const DEFAULT_THREADS: Threads = Threads::Count(NonZeroU32::MIN);

impl Config {
    /// The number of executor threads to run: `threads`, or
    /// [`DEFAULT_THREADS`]; `auto` is the cores this process may use
    /// (affinity and cgroup limits count), at most [`AUTO_THREADS_MAX`].
    pub fn executor_threads(&self) -> usize {
        match self.threads.unwrap_or(DEFAULT_THREADS) {
            Threads::Count(n) => n.get() as usize,
            Threads::Auto => {
                std::thread::available_parallelism().map_or(1, |n| n.get()).min(AUTO_THREADS_MAX)
            }
        }
    }

    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_in(text, None)
    }

    /// [`Config::from_yaml`], with relative file names in it (a
    /// `domain_suffix_file`) taken from `base`.
    pub fn from_yaml_in(text: &str, base: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::at("", "the file is empty; a config needs at least `backends:`"));
        }
        check_nesting(text)?;
        let raw: RawConfig = field::parse(text).map_err(|e| explain(text, ConfigError::from_yaml(e)))?;
        // Rules checked after parsing know the key, not the line.
        let place = |mut e: ConfigError| {
            if e.line.is_none() && !e.key.is_empty() {
                e.line = locate(text, &e.key);
            }
            e
        };
        let mut config = validate(raw, base).map_err(place)?;
        config.warnings = std::mem::take(&mut config.warnings).into_iter().map(place).collect();
        config.warnings.sort_by_key(|w| w.line);
        Ok(config)
    }

    /// Reads, parses and validates a file of at most [`MAX_CONFIG_BYTES`].
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = read_bounded("", path, MAX_CONFIG_BYTES)?;
        Config::from_yaml_in(&text, path.parent())
    }

    /// The protocol of listen address `addr` (SOCKS5 if it is not one).
    pub fn protocol_of(&self, addr: SocketAddr) -> Protocol {
        self.listen
            .iter()
            .position(|a| *a == addr)
            .and_then(|i| self.protocols.get(i).copied())
            .unwrap_or(Protocol::Socks5)
    }

    /// Whether a client at `ip` may connect.
    pub fn allows_client(&self, ip: std::net::IpAddr) -> bool {
        self.allow.iter().any(|block| block.contains(ip))
    }

    /// The rule that forbids connecting to `dest`, if any.
    pub fn denied(&self, dest: SocketAddr) -> Option<&DestRule> {
        self.deny_destinations.iter().find(|rule| rule.matches(dest))
    }

    /// The summary `socksbalance check` prints: everything that decides
    /// behaviour, with every secret masked.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let listen: Vec<String> = self
            .listen
            .iter()
            .zip(&self.protocols)
            .map(|(a, p)| if *p == Protocol::Socks5 { a.to_string() } else { format!("{a} ({p})") })
            .collect();
        let _ = writeln!(s, "listen: {}", listen.join(", "));
        let _ = writeln!(s, "mode: {}", self.mode);
        // Gateway lines in a fixed form: the OpenWrt init script reads
        // the ports and the mark from them (socksbalance-gateway).
        for (a, p) in self.listen.iter().zip(&self.protocols).filter(|(_, p)| p.is_gateway()) {
            let _ = writeln!(s, "gateway: {p} {a}, sniff {}", if self.sniff { "on" } else { "off" });
        }
        if self.routing_mark != 0 {
            let _ = writeln!(s, "routing_mark: {:#x}", self.routing_mark);
        }
        if let Some(d) = &self.dns {
            let up: Vec<String> = d.upstreams.iter().map(|u| u.to_string()).collect();
            let _ = writeln!(s, "dns: {} via {} (cache {})", d.listen, up.join(", "), d.cache_size);
        }
        let _ = writeln!(s, "algorithm: {}", self.balancer.algorithm);
        match &self.auth {
            Some(users) => {
                let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
                let _ = writeln!(s, "client auth: {} user(s): {}", users.len(), names.join(", "));
            }
            None => s.push_str("client auth: none\n"),
        }
        let web_auth = match (&self.web.token, &self.web.basic) {
            (Some(_), Some(b)) => format!(", token=MASKED, user={} password=MASKED", b.username),
            (Some(_), None) => ", token=MASKED".into(),
            (None, Some(b)) => format!(", user={} password=MASKED", b.username),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            s,
            "web: {}",
            if self.web.enabled {
                format!("enabled on {}{web_auth}", self.web.listen)
            } else {
                "disabled".into()
            }
        );
        let allow: Vec<String> = self.allow.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(s, "allow: {}", allow.join(", "));
        let deny: Vec<String> = self.deny_destinations.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(s, "deny destinations: {}", deny.join(", "));
        let _ = writeln!(
            s,
            "limits: {} connections{}",
            self.limits.max_connections,
            self.limits.max_connections_per_client.map_or(String::new(), |n| format!(", {n} per client"))
        );
        let _ = writeln!(s, "backends: {}", self.backends.len());
        for b in &self.backends {
            let _ = write!(s, "  {:<24} {}", b.name, b.target);
            if let Some(c) = &b.credentials {
                let _ = write!(s, "  user={} password={}", c.username, c.password);
            }
            if let Some(via) = &b.via {
                let _ = write!(s, "  via={via}");
            }
            if b.weight.get() != 1 {
                let _ = write!(s, "  weight={}", b.weight);
            }
            s.push('\n');
        }
        if let Some(auto) = self.auto_uplinks {
            let _ = writeln!(
                s,
                "  + interfaces: auto (every up interface with an address and a default route){}",
                if auto.weight.get() == 1 { String::new() } else { format!("  weight={}", auto.weight) }
            );
        }
        if !self.groups.is_empty() {
            let _ = writeln!(s, "groups: {}", self.groups.len());
            for g in &self.groups {
                let tiers: Vec<String> = g
                    .tiers
                    .iter()
                    .map(|tier| {
                        let names: Vec<&str> = tier
                            .iter()
                            .map(|m| match m {
                                routing::Member::Group(i) => self.groups[*i].name.as_str(),
                                routing::Member::Backends(name) => name,
                            })
                            .collect();
                        names.join(", ")
                    })
                    .collect();
                let shown = if g.tiered { format!("[{}]", tiers.join("] > [")) } else { tiers.join("") };
                let _ = writeln!(s, "  {:<24} {}: {shown}", g.name, g.algorithm);
            }
        }
        if !self.rules.is_empty() {
            let count = |a: fn(&routing::Action) -> bool| self.rules.iter().filter(|r| a(&r.action)).count();
            let _ = writeln!(
                s,
                "rules: {} ({} to groups, {} direct, {} block)",
                self.rules.len(),
                count(|a| matches!(a, routing::Action::Group(_))),
                count(|a| *a == routing::Action::Direct),
                count(|a| *a == routing::Action::Block),
            );
        }
        s
    }
}

/// The rules that keep the proxy from connecting to its own addresses: an
/// address as it is, or for 0.0.0.0/:: every loopback address with that
/// port (the LAN addresses are caught when connecting; see `session`).
pub fn own_address_rules(addrs: impl Iterator<Item = SocketAddr>) -> Vec<DestRule> {
    let mut rules = Vec::new();
    for addr in addrs {
        let port = Some(addr.port());
        if addr.ip().is_unspecified() {
            rules.push(DestRule { block: DEFAULT_ALLOW[0], port });
            rules.push(DestRule { block: DEFAULT_ALLOW[1], port });
        } else {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            rules.push(DestRule { block: Cidr::new(addr.ip(), prefix), port });
        }
    }
    rules
}

impl Config {
    /// This config with the uplinks `interfaces: auto` found now (interface
    /// names, in index order) in place of those found before.
    pub fn with_discovered(&self, interfaces: &[String]) -> Config {
        let mut config = self.clone();
        let Some(auto) = self.auto_uplinks else { return config };
        config.backends.retain(|b| !b.discovered);
        let found = interfaces
            .iter()
            // An interface already listed by hand keeps its own settings.
            .filter(|dev| {
                !config.backends.iter().any(|b| {
                    matches!(&b.target, Target::Uplink(u) if u.interface.as_deref() == Some(dev.as_str()))
                })
            })
            .map(|dev| BackendConfig {
                hidden: false,
                name: dev.clone(),
                target: Target::Uplink(Uplink { interface: Some(dev.clone()), bind: None }),
                credentials: None,
                weight: auto.weight,
                via: None,
                discovered: true,
                udp: true,
            })
            .collect::<Vec<_>>();
        let at = auto.position.min(config.backends.len());
        config.backends.splice(at..at, found);
        config
    }

    /// The names of the discovered uplinks in this config.
    pub fn discovered(&self) -> Vec<&str> {
        self.backends.iter().filter(|b| b.discovered).map(|b| b.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> ConfigError {
        Config::from_yaml(yaml).expect_err("config should be rejected")
    }

    const ONE: &str = "backends:\n  - address: 127.0.0.1:1080\n";

    #[test]
    fn the_default_allow_takes_the_lan_but_not_carrier_grade_nat() {
        let c = Config::from_yaml(ONE).unwrap();
        for ip in ["127.0.0.1", "192.168.1.20", "10.1.2.3", "172.16.0.9", "fd00::5", "fe80::1", "169.254.1.1"]
        {
            assert!(c.allows_client(ip.parse().unwrap()), "{ip}");
        }
        // RFC 6598 space: on many WANs, the ISP's other customers.
        for ip in ["100.64.0.1", "100.127.255.254", "8.8.8.8", "2001:db8::1"] {
            assert!(!c.allows_client(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_backend_with_another_weight_is_the_same_backend() {
        let load = |yaml: &str| Config::from_yaml(yaml).unwrap().backends.remove(0);
        let a = load("backends:\n  - {address: 127.0.0.1:1080, name: a}\n");
        assert!(a.same_backend(&load("backends:\n  - {address: 127.0.0.1:1080, name: a, weight: 5}\n")));
        assert!(!a.same_backend(&load("backends:\n  - {address: 127.0.0.1:1081, name: a}\n")));
        assert!(!a.same_backend(&load("backends:\n  - {address: 127.0.0.1:1080, name: b}\n")));
    }

    #[test]
    fn first_byte_timeout_follows_request_timeout_unless_set() {
        let load = |health: &str| {
            Config::from_yaml(&format!("health:\n{health}backends:\n  - direct: true\n")).unwrap()
        };
        assert_eq!(load("  request_timeout: 4s\n").health.first_byte_timeout, Duration::from_secs(4));
        let c = load("  request_timeout: 4s\n  first_byte_timeout: 30s\n");
        assert_eq!(c.health.first_byte_timeout, Duration::from_secs(30));
        assert_eq!(load("  first_byte_timeout: off\n").health.first_byte_timeout, Duration::ZERO, "off");
        let e = Config::from_yaml("health:\n  first_byte_timeout: 0s\nbackends:\n  - direct: true\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("health.first_byte_timeout") && e.to_string().contains("or off"),
            "{e}"
        );
    }

    #[test]
    fn gateway_listeners_mark_our_sockets_and_need_no_auth_warning() {
        let plain = Config::from_yaml(ONE).unwrap();
        assert_eq!((plain.routing_mark, plain.sniff, plain.dns.is_none()), (0, true, true));
        let yaml = format!("listen:\n  - {{address: \"0.0.0.0:7893\", protocol: redirect}}\n{ONE}");
        let c = Config::from_yaml(&yaml).unwrap();
        assert_eq!(c.protocols, [Protocol::Redirect]);
        assert_eq!(c.routing_mark, defaults::ROUTING_MARK, "a gateway marks by default");
        assert!(c.warnings.is_empty(), "no open-proxy warning: {:?}", c.warnings);
        let c = Config::from_yaml(&format!("{yaml}routing_mark: 0x162\nsniff: false\n")).unwrap();
        assert_eq!((c.routing_mark, c.sniff), (0x162, false));
        let e = err(&format!("{ONE}routing_mark: 0x1_0000_0000\n"));
        assert!(e.to_string().contains("routing_mark"), "{e}");
        assert!(c.summary().contains("gateway: redirect 0.0.0.0:7893, sniff off\nrouting_mark: 0x162\n"));
    }

    #[test]
    fn the_dns_listener_takes_ip_upstreams_only() {
        let c = Config::from_yaml(&format!(
            "{ONE}dns:\n  listen: 127.0.0.1:5353\n  upstreams: [\"1.1.1.1\", \"[2606:4700::1111]:853\"]\n"
        ))
        .unwrap();
        let d = c.dns.as_ref().unwrap();
        assert_eq!(d.upstreams, ["1.1.1.1:53".parse().unwrap(), "[2606:4700::1111]:853".parse().unwrap()]);
        assert_eq!(d.cache_size, defaults::DNS_CACHE_SIZE);
        assert!(c.denied("127.0.0.1:5353".parse().unwrap()).is_some(), "our own DNS port is no destination");
        let e = err(&format!("{ONE}dns:\n  listen: 127.0.0.1:5353\n  upstreams: [one.one.one.one]\n"));
        assert_eq!((e.key.as_str(), e.line), ("dns.upstreams[0]", Some(5)), "{e}");
        let e = err(&format!("{ONE}dns:\n  upstreams: [1.1.1.1]\n"));
        assert_eq!(e.key, "dns.listen", "{e}");
        let e = err(&format!("{ONE}dns:\n  listen: 127.0.0.1:5353\n"));
        assert_eq!(e.key, "dns.upstreams", "{e}");
        let e = err(&format!(
            "{ONE}dns:\n  listen: 127.0.0.1:5353\n  upstreams: [1.1.1.1]\n  cache_size: 99999\n"
        ));
        assert_eq!(e.key, "dns.cache_size", "{e}");
        let e = err(&format!("{ONE}dns:\n  listen: 127.0.0.1:5353\n  upstream: [1.1.1.1]\n"));
        assert!(e.to_string().contains("unknown field `upstream`"), "{e}");
    }

    #[test]
    fn threads_are_a_count_or_auto_and_bounded() {
        let c = Config::from_yaml(ONE).unwrap();
        assert_eq!(c.threads, None);
        let default = Config::from_yaml(&format!("{ONE}threads: {DEFAULT_THREADS}\n")).unwrap();
        assert_eq!(c.executor_threads(), default.executor_threads(), "not set is the default");
        let c = Config::from_yaml(&format!("{ONE}threads: 4\n")).unwrap();
        assert_eq!(c.executor_threads(), 4);
        let c = Config::from_yaml(&format!("{ONE}threads: auto\n")).unwrap();
        assert_eq!(c.threads, Some(Threads::Auto));
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.executor_threads(), cores.min(AUTO_THREADS_MAX));
        for bad in ["0", "65", "-1", "two", "Auto", "[2]"] {
            let e = Config::from_yaml(&format!("{ONE}threads: {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("threads"), "{bad}: {e}");
        }
        let e = Config::from_yaml(&format!("{ONE}threads: 0\n")).unwrap_err();
        assert!(e.to_string().contains("must be 1 to 64, or auto"), "{e}");
    }

    #[test]
    fn minimal_config_gets_socksbalance_defaults() {
        let c = Config::from_yaml(ONE).unwrap();
        assert_eq!(c.mode, Mode::Transparent);
        assert_eq!(c.listen, vec!["127.0.0.1:1080".parse().unwrap()]);
        assert_eq!(c.health.check_interval, Duration::from_secs(10));
        assert_eq!(c.health.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.health.request_timeout, Duration::from_secs(10));
        assert_eq!(c.health.first_byte_timeout, Duration::from_secs(10), "follows request_timeout");
        assert_eq!(c.health.failure_threshold.get(), 3);
        assert_eq!(c.health.circuit_threshold.get(), 3);
        assert_eq!(c.health.recovery_interval, Duration::from_secs(10));
        assert_eq!(c.health.max_recovery_interval, Duration::from_secs(60));
        assert_eq!(c.health.metrics_window_size, 10);
        assert!(c.health.passive_monitoring);
        assert_eq!(c.balancer.algorithm, Algorithm::Roundrobin);
        assert_eq!(c.balancer.max_attempts.get(), 3);
        assert!(!c.web.enabled);
        assert_eq!(c.web.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.web.refresh_interval.get(), 2);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.backends[0].name, "127.0.0.1:1080");
    }

    #[test]
    fn errors_found_after_parsing_name_their_line() {
        let text = "mode: socks5\nbackends:\n  - interface: wan1\n  # a comment\n  - address: 203.0.113.7:1080\n    weight: 2\n    via: wan9\n";
        let e = err(text);
        assert_eq!((e.key.as_str(), e.line), ("backends[1].via", Some(7)), "{e}");
        assert_eq!(locate(text, "backends[1].weight"), Some(6));
        assert_eq!(locate(text, "backends[0]"), Some(3));
        assert_eq!(locate(text, "mode"), Some(1));
        // Sequences at the key's own column, and flow collections.
        let text = "backends:\n- direct: true\n- direct: true\n  weight: 0\nallow: ['10.0.0.0/8']\n";
        assert_eq!(locate(text, "backends[1].weight"), Some(4));
        assert_eq!(locate(text, "allow[0]"), Some(5));
        assert_eq!(locate(text, "health.check_interval"), None);
        assert_eq!(err("limits:\n  max_connections: 0\nbackends:\n  - direct: true\n").line, Some(2));
    }

    #[test]
    fn uplinks_parse_with_their_rules() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - interface: wan1\n  - {name: office, bind: 10.0.0.2}\n  - {address: 127.0.0.1:1080, via: wan1}\n",
        )
        .unwrap();
        assert_eq!(c.backends[0].name, "wan1");
        assert_eq!(c.backends[0].target.to_string(), "uplink dev wan1");
        assert_eq!(c.backends[1].target.to_string(), "uplink from 10.0.0.2");
        assert_eq!(c.backends[2].via.as_deref(), Some("wan1"));
        assert!(c.backends[0].target.is_local() && !c.backends[2].target.is_local());
        assert_eq!(err("backends:\n  - {interface: wan1, direct: true}\n").key, "backends[0].interface");
        assert_eq!(err("backends:\n  - {interface: wan1, via: wan1}\n").key, "backends[0].via");
        assert_eq!(err("backends:\n  - interface: a-very-long-name0\n").key, "backends[0].interface");
        assert_eq!(err("backends:\n  - bind: 10.0.0.300\n").key, "backends[0].bind");
        let e = err("backends:\n  - {address: 127.0.0.1:1080, via: lte}\n");
        assert!(e.message.contains("none is configured"), "{e}");
        let e = err("health:\n  uplink_probe: 192.0.2.1:1-2\nbackends:\n  - direct: true\n");
        assert_eq!(e.key, "health.uplink_probe");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn interfaces_auto_is_filled_in_place_and_replaced_on_rediscovery() {
        let c = Config::from_yaml(
            "mode: socks5\nbackends:\n  - direct: true\n  - {interfaces: auto, weight: 2}\n  - interface: wan2\n  - {address: 127.0.0.1:1080, via: wan3}\n",
        )
        .unwrap();
        assert_eq!(c.backends.len(), 3);
        let names = |c: &Config| c.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
        // wan2 is listed by hand: it keeps its own entry.
        let found = c.with_discovered(&["wan1".into(), "wan2".into(), "wan3".into()]);
        assert_eq!(names(&found), ["direct", "wan1", "wan3", "wan2", "127.0.0.1:1080"]);
        assert_eq!(found.discovered(), ["wan1", "wan3"]);
        assert_eq!(found.backends[1].weight.get(), 2);
        let again = found.with_discovered(&["wan3".into()]);
        assert_eq!(names(&again), ["direct", "wan3", "wan2", "127.0.0.1:1080"]);
        assert_eq!(
            err("backends:\n  - interfaces: auto\n  - interfaces: auto\n").key,
            "backends[1].interfaces"
        );
        assert_eq!(err("backends:\n  - {interfaces: auto, name: x}\n").key, "backends[0].name");
        assert_eq!(err("backends:\n  - interfaces: all\n").key, "backends[0].interfaces");
    }

    #[test]
    fn embedded_default_is_valid_and_direct() {
        let c = Config::from_yaml(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.mode, Mode::Socks5);
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].target, Target::Direct);
        assert_eq!(c.listen, vec!["127.0.0.1:1080".parse().unwrap()]);
        assert!(c.web.enabled, "the embedded default serves the dashboard");
        assert_eq!(c.web.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn a_dashboard_off_loopback_needs_a_token_or_a_login() {
        let base = "backends:\n  - direct: true\nweb:\n  enabled: true\n  listen: 0.0.0.0:8080\n";
        let e = err(base);
        assert_eq!(e.key, "web.listen");
        assert!(e.message.contains("set web.token"), "{e}");
        Config::from_yaml(&format!("{base}  token: abcdefgh12\n")).unwrap();
        Config::from_yaml(&format!("{base}  username: admin\n  password: pw\n")).unwrap();
        let e = err(&format!("{base}  username: admin\n"));
        assert_eq!(e.key, "web.password");
        let e = err(&format!("{base}  token: short\n"));
        assert_eq!(e.key, "web.token");
        // Disabled, or on loopback, nothing is needed.
        Config::from_yaml("backends:\n  - direct: true\nweb:\n  listen: 0.0.0.0:8080\n").unwrap();
        Config::from_yaml("backends:\n  - direct: true\nweb:\n  enabled: true\n  listen: '[::1]:8080'\n")
            .unwrap();
    }

    #[test]
    fn ranges_expand_with_socksbalance_names() {
        let c = Config::from_yaml("backends:\n  - address: 127.0.0.1:9070-9089\n    name: Tor\n").unwrap();
        assert_eq!(c.backends.len(), 20);
        assert_eq!(c.backends[0].name, "Tor#1");
        assert_eq!(c.backends[19].name, "Tor#20");
        assert_eq!(c.backends[19].target.to_string(), "127.0.0.1:9089");
    }

    #[test]
    fn ipv6_backends_and_listen_list() {
        let c = Config::from_yaml(
            "listen: ['127.0.0.1:1080', '[::1]:1080']\nbackends:\n  - address: '[2001:db8::1]:8080-8082'\n",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        let names: Vec<String> = c.backends.iter().map(|b| b.target.to_string()).collect();
        assert_eq!(names, ["[2001:db8::1]:8080", "[2001:db8::1]:8081", "[2001:db8::1]:8082"]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("backends:\n  - address: 127.0.0.1:1\nhealth:\n  check_intervall: 5s\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("unknown field `check_intervall`"), "{e}");
        assert_eq!(e.key, "health");
    }

    #[test]
    fn bad_value_names_key_path_and_line() {
        let e = err("backends:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:9089-9070\n");
        assert_eq!(e.key, "backends[1].address", "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("reversed"), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("line 3: backends[1].address: "), "{shown}");
    }

    #[test]
    fn zero_duration_is_rejected_with_key() {
        let e = err("backends:\n  - address: 127.0.0.1:1\nhealth:\n  connect_timeout: 0s\n");
        assert_eq!(e.key, "health.connect_timeout", "{e}");
        assert!(e.message.contains("greater than zero"), "{e}");
    }

    #[test]
    fn cross_key_rules() {
        let e = err("mode: transparent\nauth:\n  users: [{username: a, password: b}]\nbackends:\n  - address: 127.0.0.1:1\n");
        assert_eq!(e.key, "auth");
        let e = err("mode: transparent\nbackends:\n  - {address: 127.0.0.1:1, username: u, password: p}\n");
        assert_eq!(e.key, "backends[0].username", "{e}");
        let e = err("mode: socks5\nbackends:\n  - {address: 127.0.0.1:1, username: u}\n");
        assert_eq!(e.key, "backends[0].password", "{e}");
        let e = err("backends:\n  - {direct: true, address: 127.0.0.1:1}\n");
        assert_eq!(e.key, "backends[0].address", "{e}");
        let e = err("backends:\n  - {name: x}\n");
        assert_eq!(e.key, "backends[0].address", "{e}");
        let e = err("backends: []\n");
        assert_eq!(e.key, "backends");
        let e = err("health:\n  recovery_interval: 2m\nbackends:\n  - address: 127.0.0.1:1\n");
        assert_eq!(e.key, "health.recovery_interval", "{e}");
        let e = err("listen: [':1080', '0.0.0.0:1080']\nbackends:\n  - address: 127.0.0.1:1\n");
        assert_eq!(e.key, "listen[1]", "{e}");
        let e = err("backends:\n  - {address: 127.0.0.1:1, weight: 0}\n");
        assert_eq!(e.key, "backends[0].weight", "{e}");
    }

    #[test]
    fn oversized_credentials_are_rejected() {
        let long = "x".repeat(256);
        let e = err(&format!(
            "mode: socks5\nauth:\n  users: [{{username: {long}, password: p}}]\nbackends:\n  - direct: true\n"
        ));
        assert_eq!(e.key, "auth.users[0].username");
        assert!(e.message.contains("at most 255"), "{e}");
    }

    #[test]
    fn wrong_types_and_garbage_never_panic() {
        for yaml in [
            "backends: 5\n",
            "backends:\n  - address: [1, 2]\n",
            "listen: {a: b}\nbackends:\n  - address: 127.0.0.1:1\n",
            "mode: fast\nbackends:\n  - address: 127.0.0.1:1\n",
            ": : :\n",
            "backends:\n  - address: 127.0.0.1:1\n---\nbackends: []\n",
            "[[[[[[[[[[[[[[",
            "\t\u{0}\u{1}",
            "web:\n  refresh_interval: -1\nbackends:\n  - address: 127.0.0.1:1\n",
        ] {
            let e = err(yaml);
            assert!(!e.message.is_empty(), "{yaml:?}");
        }
    }

    #[test]
    fn access_control_defaults_and_self_loop_rules() {
        let c = Config::from_yaml("listen: ['0.0.0.0:1080', '[::1]:1081']\nbackends:\n  - direct: true\nweb:\n  enabled: true\n  token: abcdefgh12\n  listen: 192.168.1.1:8080\n").unwrap();
        assert!(c.allows_client("192.168.1.50".parse().unwrap()));
        assert!(c.allows_client("::ffff:10.1.2.3".parse().unwrap()));
        assert!(c.allows_client("fd00::9".parse().unwrap()));
        assert!(!c.allows_client("8.8.8.8".parse().unwrap()));
        assert!(!c.allows_client("2001:db8::1".parse().unwrap()));
        // 0.0.0.0:1080 -> loopback:1080 refused; ::1:1081 and the dashboard too.
        for looped in ["127.0.0.1:1080", "127.9.9.9:1080", "[::1]:1080", "[::1]:1081", "192.168.1.1:8080"] {
            assert!(c.denied(looped.parse().unwrap()).is_some(), "{looped}");
        }
        for fine in ["127.0.0.1:80", "192.168.1.1:80", "10.0.0.1:1080"] {
            assert!(c.denied(fine.parse().unwrap()).is_none(), "{fine}");
        }
        assert_eq!(c.limits.max_connections.get(), 1024);
        assert_eq!(c.limits.max_connections_per_client, None);
    }

    #[test]
    fn access_control_settings() {
        let c = Config::from_yaml("allow: ['0.0.0.0/0']\ndeny_destinations: ['10.0.0.0/8', '192.168.1.1:22']\nlimits:\n  max_connections: 5\n  max_connections_per_client: 2\nbackends:\n  - direct: true\n").unwrap();
        assert!(c.allows_client("8.8.8.8".parse().unwrap()));
        assert!(c.denied("10.2.3.4:443".parse().unwrap()).is_some());
        assert!(c.denied("192.168.1.1:22".parse().unwrap()).is_some());
        assert!(c.denied("192.168.1.1:23".parse().unwrap()).is_none());
        assert_eq!(c.limits.max_connections_per_client.map(|n| n.get()), Some(2));
        assert_eq!(err("allow: []\nbackends:\n  - direct: true\n").key, "allow");
        let e = err("allow: ['lan']\nbackends:\n  - direct: true\n");
        assert_eq!((e.key.as_str(), e.line), ("allow[0]", Some(1)), "{e}");
        assert_eq!(
            err("limits:\n  max_connections: 0\nbackends:\n  - direct: true\n").key,
            "limits.max_connections"
        );
    }

    #[test]
    fn oversized_config_files_are_refused_unread() {
        let path = std::env::temp_dir().join(format!("socksbalance-big-{}.yaml", std::process::id()));
        let mut text = "backends:\n  - direct: true\n".to_owned();
        text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize));
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(e.message.contains("larger than"), "{e}");
    }

    #[test]
    fn deeply_nested_yaml_is_an_error_not_a_stack_overflow() {
        let deep = format!("backends: {}{}\n", "[".repeat(500_000), "]".repeat(500_000));
        let start = std::time::Instant::now();
        let e = err(&deep);
        assert!(e.message.contains("nested more than 64"), "{e}");
        assert_eq!(e.line, Some(1));
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "took {:?}", start.elapsed());
        // Brackets in quoted strings and comments do not count.
        let quoted = format!(
            "# {}\nbackends:\n  - direct: true\n    name: \"{}\"\n",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(Config::from_yaml(&quoted).is_ok());
        let wide = format!("backends:\n  - direct: true\n    name: {}\n", "x".repeat(500_000));
        // Huge values parse (the file size bound is what limits them).
        assert_eq!(Config::from_yaml(&wide).unwrap().backends[0].name.len(), 500_000);
    }

    #[test]
    fn secret_comparison() {
        let s = Secret::new("secret");
        assert!(s.matches(b"secret"));
        assert!(!s.matches(b"secreT"));
        assert!(!s.matches(b"secret!"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn secrets_are_masked_in_debug_and_summary() {
        let c = Config::from_yaml(
            "mode: socks5\nauth:\n  users: [{username: alice, password: hunter2}]\nbackends:\n  - {address: 127.0.0.1:1, username: bob, password: swordfish}\n",
        )
        .unwrap();
        let debug = format!("{c:?}");
        let summary = c.summary();
        for shown in [&debug, &summary] {
            assert!(!shown.contains("hunter2") && !shown.contains("swordfish"), "{shown}");
        }
        assert!(summary.contains("user=bob password=MASKED"), "{summary}");
    }
}
