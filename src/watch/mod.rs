//! The daemon's watchers: tasks that run over the current snapshot and
//! keep its health true.
//!
//! - [`backends`]: the probe scheduler, which decides when each backend
//!   is probed.
//! - [`uplinks`]: `interfaces: auto` discovery, the kernel's link states
//!   on uplinks, and (Linux) following netlink change notifications.
//!
//! They sit above the pool and the snapshot they read, and below the
//! server, which starts them and restarts the scheduler on a reload.

pub(crate) mod backends;
pub(crate) mod uplinks;
