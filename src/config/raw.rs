//! Stage 1: the file as written. These structs mirror the YAML exactly
//! (`deny_unknown_fields`, everything optional), so that serde_yaml
//! reports a typo or a bad value with its key path and line; `validate`
//! turns them into a [`super::Config`].

use serde::Deserialize;

use super::{
    Algorithm, BackendAddr, Cidr, DestRule, GoDuration, ListenAddr, ListenEntry, LogFormat, LogLevel, Mode,
    OneOrMany, ProbeUrl, Secret, StickyKey,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<OneOrMany<ListenEntry>>,
    pub(super) mode: Option<Mode>,
    pub(super) backends: Option<Vec<RawBackend>>,
    pub(super) health: Option<RawHealth>,
    pub(super) balancer: Option<RawBalancer>,
    pub(super) web: Option<RawWeb>,
    pub(super) log: Option<RawLog>,
    pub(super) auth: Option<RawAuth>,
    pub(super) limits: Option<RawLimits>,
    pub(super) shutdown_timeout: Option<GoDuration>,
    pub(super) threads: Option<u32>,
    pub(super) allow: Option<Vec<Cidr>>,
    pub(super) deny_destinations: Option<Vec<DestRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) address: Option<BackendAddr>,
    pub(super) name: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
    pub(super) weight: Option<u32>,
    pub(super) direct: Option<bool>,
    /// Uplink: connect to destinations through this network interface.
    pub(super) interface: Option<String>,
    /// Uplink: connect to destinations from this source address.
    pub(super) bind: Option<std::net::IpAddr>,
    /// `interfaces: auto`: one uplink per usable interface, found at run time.
    pub(super) interfaces: Option<AutoInterfaces>,
    /// A SOCKS backend reached through the named uplink.
    pub(super) via: Option<String>,
}

/// The one value `interfaces:` takes.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum AutoInterfaces {
    Auto,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) test_url: Option<ProbeUrl>,
    pub(super) check_interval: Option<GoDuration>,
    pub(super) connect_timeout: Option<GoDuration>,
    pub(super) request_timeout: Option<GoDuration>,
    /// A duration or `off`: read as text and parsed in validation, which
    /// costs the binary far less than a deserializer of its own.
    pub(super) first_byte_timeout: Option<String>,
    pub(super) failure_threshold: Option<u32>,
    pub(super) circuit_threshold: Option<u32>,
    pub(super) recovery_interval: Option<GoDuration>,
    pub(super) max_recovery_interval: Option<GoDuration>,
    pub(super) metrics_window_size: Option<u32>,
    pub(super) passive_monitoring: Option<bool>,
    pub(super) uplink_probe: Option<BackendAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBalancer {
    pub(super) algorithm: Option<Algorithm>,
    pub(super) max_latency: Option<GoDuration>,
    pub(super) sticky_session_ttl: Option<GoDuration>,
    pub(super) max_active_backends: Option<u32>,
    pub(super) max_attempts: Option<u32>,
    pub(super) sticky_key: Option<StickyKey>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<ListenAddr>,
    pub(super) refresh_interval: Option<u32>,
    pub(super) token: Option<Secret>,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<LogLevel>,
    pub(super) format: Option<LogFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) users: Option<Vec<RawUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) username: String,
    pub(super) password: Secret,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) idle_timeout: Option<GoDuration>,
    pub(super) handshake_timeout: Option<GoDuration>,
    pub(super) max_connections: Option<u32>,
    pub(super) max_connections_per_client: Option<u32>,
}
