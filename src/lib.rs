//! socksbalance: a SOCKS5 load balancer for routers.
//!
//! Clients use socksbalance as their SOCKS5 proxy; it spreads their
//! connections over many upstream SOCKS5 proxies ("backends").
//!
//! # Layout
//!
//! One concept per module:
//!
//! - [`config`]: YAML → raw structs → validated [`config::Config`].
//! - [`socks5`]: the RFC 1928/1929 wire format, read field by field.
//! - [`balancer`]: the backend pool, selection filters and the lock-free pick.
//! - [`health`]: metrics windows, circuit breakers, probes and their schedule.
//! - [`upstream`]: connecting to a backend or a destination, and our own
//!   SOCKS5 client handshake.
//! - [`uplink`]: multipath: connecting through an interface, link state.
//! - [`tcp`]: sockets as we set them up: listeners, non-blocking connects,
//!   delayed ACKs through the handshake.
//! - [`session`]: one client connection in socks5 or transparent mode.
//! - [`relay`]: moving bytes once the handshake is done.
//! - [`server`]: listeners, the accept loop, shutdown, and [`server::Daemon`].
//! - [`shutdown`]: the shutdown signal passed to everything that stops.
//! - [`stats`]: counters that work without 64-bit atomics.
//! - [`rng`]: the lock-free random source for picks and jitter.
//! - [`console`]: Windows console close/logoff/shutdown → graceful drain.
//! - [`logging`]: text or JSON logs on stderr.
//! - [`web`]: dashboard, JSON API and Prometheus metrics (tiny_http).
//! - [`status`]: `socksbalance status`, the table in a terminal.
//!
//! `main.rs` only parses the command line, loads the config, installs
//! signal handlers and calls [`server::Daemon::start`]; the integration
//! tests start the same daemon on `127.0.0.1:0`.

// Unsafe code is allowed in two places only, each block with a SAFETY
// note: the socket options that pin an uplink to an interface
// (`uplink::sys`), and the Windows console handler (`console`).
#![deny(unsafe_code)]

pub mod balancer;
pub mod config;
pub mod console;
pub mod health;
pub mod logging;
pub mod relay;
pub mod rng;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod socks5;
pub mod stats;
pub mod status;
pub mod tcp;
pub mod uplink;
pub mod upstream;
pub mod web;

pub use config::Config;
pub use server::Daemon;

/// The version shown by `--version` and in logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
