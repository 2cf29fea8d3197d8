//! Writes (and reads back) apk v3 packages, the "ADB" format of apk-tools
//! 3, which OpenWrt 25.12 installs instead of opkg's .ipk.
//!
//! # Layout
//! - [`adb`]: the wire format: value tags, the value area, blocks.
//! - [`schema`]: field numbers of the package schema, with their sources.
//! - [`package`]: a package as apk's mkpkg lays it out, and its encoding.
//! - [`sign`]: optional signing with an RSA or ECDSA P-256 key via openssl.
//! - [`read`]: our reader, which checks what apk checks on extraction.
//! - [`dump`]: a text dump for golden tests and humans.
//!
//! The binary (`socksbalance-apk build|check|dump`) is what
//! scripts/package-openwrt.sh runs. Format sources: apk-tools
//! `doc/apk-v3.5.scd`, `doc/apk-package.5.scd`, `src/adb.h`,
//! `src/apk_adb.h`; see docs/openwrt.md.

#![forbid(unsafe_code)]

pub mod adb;
pub mod dump;
pub mod index;
pub mod package;
pub mod read;
pub mod schema;
pub mod sign;

pub use adb::Error;
pub use package::{Dir, File, Info, Options, Package};
