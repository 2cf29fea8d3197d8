//! Stage 1: the file as written. These structs mirror the YAML exactly
//! (unknown keys refused, everything optional), so that serde_yaml
//! reports a typo or a bad value with its key path and line; `validate`
//! turns them into a [`super::Config`].
//!
//! They are read by the `raw!` macro below through `field.rs`'s `Want`,
//! not with a derived `Deserialize`: a derive makes each struct a field
//! enum, an identifier visitor and a sequence visitor, and serde_yaml a
//! copy of its deserializer per struct and per field type, about 100 KB
//! of the router binary in all (docs/performance.md, "Binary size"). The
//! macro makes a key match per struct, with the derive's own errors:
//! unknown field (with the expected names), duplicate field, and the
//! value's own error at its key path.

use std::fmt;

use super::field::{self, Field, Stop, Values, Want};
use super::values::{RawThreads, Strings, Tiers};
use super::{
    Algorithm, BackendAddr, Cidr, DestRule, GoDuration, ListenAddr, ListenEntry, LogFormat, LogLevel, Mode,
    OneOrMany, ProbeUrl, Secret, StickyKey,
};

/// A raw struct: every field optional (`null` is absent), read from a
/// YAML map of exactly these keys ([`Want`]), with a derive's errors:
/// unknown field (with the expected names), duplicate field, and the
/// value's own error at its key path.
macro_rules! raw {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        pub(super) struct $name {
            $($(#[$fmeta])* pub(super) $field: Option<$ty>,)*
            /// The keys read so far, one bit each (a key set twice is an error).
            seen: u32,
        }

        impl Want for $name {
            fn accepts(&self) -> u8 {
                field::MAP
            }
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn entry(&mut self, key: &str, value: &mut dyn Values) -> Result<(), Stop> {
                const KEYS: &[&str] = &[$(stringify!($field)),*];
                // One bit of `seen` per key.
                const _: () = assert!(KEYS.len() <= 32);
                field::key_seen(key, KEYS, &mut self.seen, value)?;
                match key {
                    $(stringify!($field) => self.$field = <$ty as Field>::read(value)?,)*
                    _ => {}
                }
                Ok(())
            }
        }

        impl Field for $name {
            fn read(value: &mut dyn Values) -> Result<Option<Self>, Stop> {
                field::section(value)
            }
        }
    };
}

/// Lists of sections as fields.
macro_rules! sections {
    ($($ty:ty),*) => {
        $(impl Field for Vec<$ty> {
            fn read(value: &mut dyn Values) -> Result<Option<Self>, Stop> {
                field::sections(value)
            }
        })*
    };
}

raw! {
    RawConfig {
        listen: OneOrMany<ListenEntry>,
        mode: Mode,
        backends: Vec<RawBackend>,
        health: RawHealth,
        balancer: RawBalancer,
        web: RawWeb,
        log: RawLog,
        auth: RawAuth,
        limits: RawLimits,
        shutdown_timeout: GoDuration,
        threads: RawThreads,
        allow: Vec<Cidr>,
        deny_destinations: Vec<DestRule>,
        sniff: bool,
        /// Decimal or `0x` hex, both YAML integers.
        routing_mark: u32,
        dns: RawDns,
        groups: Vec<RawGroup>,
        rules: Vec<RawRule>,
    }
}

raw! {
    RawGroup {
        name: String,
        backends: Strings,
        tiers: Tiers,
        algorithm: Algorithm,
        test_url: ProbeUrl,
        expected_status: Strings,
    }
}

raw! {
    RawRule {
        domain: Strings,
        domain_suffix: Strings,
        domain_keyword: Strings,
        domain_suffix_file: String,
        cidr: Strings,
        /// `443` or `8000-8100` each.
        port: Strings,
        source: Strings,
        /// Listen addresses or protocols.
        inbound: Strings,
        /// `direct` or `block`.
        action: String,
        group: String,
    }
}

raw! {
    RawDns {
        listen: ListenAddr,
        /// `IP` or `IP:port` each, as text: a name would need a resolver.
        upstreams: Vec<String>,
        cache_size: u32,
    }
}

raw! {
    RawBackend {
        address: BackendAddr,
        name: String,
        username: String,
        password: Secret,
        weight: u32,
        direct: bool,
        /// Uplink: connect to destinations through this network interface.
        interface: String,
        /// Uplink: connect to destinations from this source address.
        bind: std::net::IpAddr,
        /// `interfaces: auto`: one uplink per usable interface, found at run time.
        interfaces: AutoInterfaces,
        /// A SOCKS backend reached through the named uplink.
        via: String,
        /// `false`: never used for UDP associations.
        udp: bool,
    }
}

/// The one value `interfaces:` takes.
#[derive(Clone, Copy)]
pub(super) enum AutoInterfaces {
    Auto,
}

impl super::field::Leaf for AutoInterfaces {
    const TEXT: bool = true;
    const EXPECTING: &'static str = "`auto`";
    fn from_scalar(s: super::field::Scalar<'_>) -> Result<Self, String> {
        super::field::by_name(s, &["auto"], 1).map(|_| AutoInterfaces::Auto)
    }
}

sections!(RawBackend, RawUser, RawGroup, RawRule);

raw! {
    RawHealth {
        test_url: ProbeUrl,
        check_interval: GoDuration,
        connect_timeout: GoDuration,
        request_timeout: GoDuration,
        /// A duration or `off`: read as text and parsed in validation, which
        /// costs the binary far less than a deserializer of its own.
        first_byte_timeout: String,
        failure_threshold: u32,
        circuit_threshold: u32,
        recovery_interval: GoDuration,
        max_recovery_interval: GoDuration,
        metrics_window_size: u32,
        passive_monitoring: bool,
        uplink_probe: BackendAddr,
        expected_status: Strings,
    }
}

raw! {
    RawBalancer {
        algorithm: Algorithm,
        max_latency: GoDuration,
        sticky_session_ttl: GoDuration,
        max_active_backends: u32,
        max_attempts: u32,
        sticky_key: StickyKey,
        latency_decay: GoDuration,
    }
}

raw! {
    RawWeb {
        enabled: bool,
        listen: ListenAddr,
        refresh_interval: u32,
        token: Secret,
        username: String,
        password: Secret,
    }
}

raw! {
    RawLog {
        level: LogLevel,
        format: LogFormat,
    }
}

raw! {
    RawAuth {
        users: Vec<RawUser>,
    }
}

raw! {
    RawUser {
        username: String,
        password: Secret,
    }
}

raw! {
    RawLimits {
        idle_timeout: GoDuration,
        handshake_timeout: GoDuration,
        max_connections: u32,
        max_connections_per_client: u32,
        udp_idle_timeout: GoDuration,
        max_udp_associations: u32,
    }
}
