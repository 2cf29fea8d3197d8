//! Every default of a key, named once: validation fills them in, and a
//! test (`tests/integration/docs.rs`) checks each against the defaults
//! column of docs/configuration.md, so the two cannot drift apart.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Algorithm, LogFormat, LogLevel, Mode, StickyKey};

pub const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1080);
pub const MODE: Mode = Mode::Transparent;
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
pub const WEIGHT: u32 = 1;

pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Also `first_byte_timeout`'s, unless that is set.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const FAILURE_THRESHOLD: u32 = 3;
pub const CIRCUIT_THRESHOLD: u32 = 3;
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_RECOVERY_INTERVAL: Duration = Duration::from_secs(60);
pub const METRICS_WINDOW_SIZE: u32 = 10;
pub const PASSIVE_MONITORING: bool = true;

pub const ALGORITHM: Algorithm = Algorithm::Roundrobin;
pub const STICKY_KEY: StickyKey = StickyKey::Client;
pub const MAX_ATTEMPTS: u32 = 3;
pub const LATENCY_DECAY: Duration = Duration::from_secs(10);

pub const WEB_ENABLED: bool = false;
pub const WEB_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
pub const REFRESH_INTERVAL: u32 = 2;

pub const LOG_LEVEL: LogLevel = LogLevel::Info;
pub const LOG_FORMAT: LogFormat = LogFormat::Text;

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: u32 = 1024;
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const MAX_UDP_ASSOCIATIONS: u32 = 256;
pub const BACKEND_UDP: bool = true;

pub const SNIFF: bool = true;
/// `routing_mark` when a redirect or tproxy listener is configured (none
/// otherwise): "SB" in ASCII, and what the generated firewall rules skip.
pub const ROUTING_MARK: u32 = 0x5342;
pub const DNS_CACHE_SIZE: usize = 512;

/// A default as the documentation writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Documented {
    Duration(Duration),
    Text(String),
}

/// Each key (as docs/configuration.md's sections and tables name it,
/// `section.key`) with its default.
pub fn documented() -> Vec<(&'static str, Documented)> {
    use Documented::{Duration as D, Text as T};
    let t = |s: &dyn std::fmt::Display| T(s.to_string());
    vec![
        ("listen", t(&LISTEN)),
        ("mode", t(&MODE)),
        ("shutdown_timeout", D(SHUTDOWN_TIMEOUT)),
        ("threads", t(&super::DEFAULT_THREADS)),
        ("backends.weight", t(&WEIGHT)),
        ("health.check_interval", D(CHECK_INTERVAL)),
        ("health.connect_timeout", D(CONNECT_TIMEOUT)),
        ("health.request_timeout", D(REQUEST_TIMEOUT)),
        ("health.failure_threshold", t(&FAILURE_THRESHOLD)),
        ("health.circuit_threshold", t(&CIRCUIT_THRESHOLD)),
        ("health.recovery_interval", D(RECOVERY_INTERVAL)),
        ("health.max_recovery_interval", D(MAX_RECOVERY_INTERVAL)),
        ("health.metrics_window_size", t(&METRICS_WINDOW_SIZE)),
        ("health.passive_monitoring", t(&PASSIVE_MONITORING)),
        ("balancer.algorithm", t(&ALGORITHM)),
        (
            "balancer.sticky_key",
            T(match STICKY_KEY {
                StickyKey::Client => "client".into(),
                StickyKey::Destination => "destination".into(),
            }),
        ),
        ("balancer.max_attempts", t(&MAX_ATTEMPTS)),
        ("balancer.latency_decay", D(LATENCY_DECAY)),
        ("web.enabled", t(&WEB_ENABLED)),
        ("web.listen", t(&WEB_LISTEN)),
        ("web.refresh_interval", t(&REFRESH_INTERVAL)),
        ("log.level", T(format!("{LOG_LEVEL:?}").to_lowercase())),
        ("log.format", T(format!("{LOG_FORMAT:?}").to_lowercase())),
        ("limits.idle_timeout", D(IDLE_TIMEOUT)),
        ("limits.handshake_timeout", D(HANDSHAKE_TIMEOUT)),
        ("limits.max_connections", t(&MAX_CONNECTIONS)),
        ("limits.udp_idle_timeout", D(UDP_IDLE_TIMEOUT)),
        ("limits.max_udp_associations", t(&MAX_UDP_ASSOCIATIONS)),
        ("backends.udp", t(&BACKEND_UDP)),
        ("sniff", t(&SNIFF)),
        ("routing_mark", T(format!("{ROUTING_MARK:#x}"))),
        ("dns.cache_size", t(&DNS_CACHE_SIZE)),
    ]
}
