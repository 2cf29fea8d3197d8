//! socksbalance: a SOCKS5 load balancer for routers.
//!
//! Clients use socksbalance as their SOCKS5 proxy; it spreads their
//! connections over many upstream SOCKS5 proxies ("backends").
//!
//! # Layout
//!
//! One concept per module, from the ground up:
//!
//! - [`config`]: YAML → raw structs → validated [`config::Config`]
//!   (`raw`, `validate`, `locate`, `values`).
//! - [`socks5`]: the RFC 1928/1929 wire format, read field by field.
//! - `tcp`, `shutdown`, `rng`: sockets as we set them up, the stop
//!   signal, the lock-free random source.
//! - [`health`]: windows, circuit breakers, probes and their schedule;
//!   each backend's state behind verbs.
//! - `uplink`: multipath: connecting through an interface, link state.
//! - `upstream`: connecting to a backend or a destination, and our own
//!   SOCKS5 client handshake; `UpstreamError` says whose fault it was.
//! - `balancer`: the backend pool, selection filters and the lock-free pick.
//! - `stats`: counters that work without 64-bit atomics.
//! - `context`: the `Snapshot` (config + pool) connections run on, and
//!   `Current`, the one new connections get.
//! - `connect`: the connect-with-failover core every inbound uses.
//! - `inbound`: one module per client protocol (`socks5`, `transparent`),
//!   the dispatch on it, and the relay stage they end in.
//! - `relay`: moving bytes once the handshake is done.
//! - `watch`: the tasks that keep health true: the probe scheduler
//!   (`watch::backends`) and the link watcher (`watch::uplinks`).
//! - [`server`]: listeners, the accept loop, reload, shutdown, and
//!   [`server::Daemon`].
//! - [`web`]: dashboard, JSON API and Prometheus metrics (tiny_http).
//! - [`status`]: `socksbalance status`, the table in a terminal.
//! - [`logging`]: text or JSON on stderr, or syslog.
//! - [`console`]: Windows console close/logoff/shutdown → graceful drain.
//!
//! `main.rs` only parses the command line, loads the config, installs
//! signal handlers and calls [`server::Daemon::start`]; the integration
//! tests start the same daemon on `127.0.0.1:0`.

// Unsafe code is allowed only where a system call has no safe wrapper,
// each block with a SAFETY note: socket options (`tcp::set_int`,
// `tproxy`, and the ones that pin an uplink to an interface in
// `uplink::sys` and `uplink::win`), the Windows console handler
// (`console`) and the Windows service's Service Control Manager calls
// (`service`).
#![deny(unsafe_code)]

// Public: what the binary, the integration tests and the fuzz targets
// use. The rest is the crate's own.
pub mod balancer;
pub mod config;
pub(crate) mod connect;
pub mod console;
pub(crate) mod context;
pub mod dns;
pub mod health;
pub mod http;
pub(crate) mod inbound;
pub(crate) mod json;
pub mod live;
// The Windows service's own: not in a router's binary (tested everywhere).
#[cfg(any(windows, test))]
pub mod logfile;
pub mod logging;
pub(crate) mod relay;
pub(crate) mod rng;
pub mod server;
#[cfg(any(windows, test))]
pub mod service;
pub(crate) mod shutdown;
pub mod sniff;
pub mod socks5;
pub(crate) mod stats;
pub mod status;
pub mod tcp;
#[cfg(target_os = "linux")]
pub(crate) mod tproxy;
pub(crate) mod uplink;
pub(crate) mod upstream;
pub(crate) mod watch;
pub mod web;

pub use config::Config;
pub use server::Daemon;

/// The version shown by `--version` and in logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
