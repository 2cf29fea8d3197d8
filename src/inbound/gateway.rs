//! The gateway inbounds (`protocol: redirect` and `protocol: tproxy`,
//! Linux): connections the firewall sent here from LAN devices that know
//! nothing of a proxy.
//!
//! The destination comes from the kernel: conntrack's original
//! destination for `redirect`/`dnat` (`SO_ORIGINAL_DST`), the accepted
//! socket's own local address for `tproxy`. With `sniff` on, the client's
//! first bytes are read ahead, at most [`sniff::LIMIT`] of them within
//! [`SNIFF_TIME`], and the name of a TLS ClientHello or an HTTP request
//! becomes the destination, so that the backend resolves it at the exit.
//! Those bytes go upstream first, as every inbound's early bytes do.
//!
//! The upstream is opened with [`crate::connect`], with failover, exactly
//! as for a SOCKS5 CONNECT. A client the proxy cannot serve has nothing
//! to read an error from: its connection is reset, as a refusing
//! destination would do.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use smol::io::AsyncReadExt;
use smol::Async;

use super::{for_debug_log, Ended, Ready};
use crate::connect::{self, Attempts, Established};
use crate::context::Snapshot;
use crate::sniff::{self, Sniffed};
use crate::socks5::Address;
use crate::upstream::until;

/// The longest the first bytes are waited for. A protocol whose server
/// speaks first (SSH, SMTP) sends nothing until it is connected, so this
/// is what such a connection waits; a client that speaks first (TLS,
/// HTTP) is read as soon as its bytes arrive.
pub const SNIFF_TIME: Duration = Duration::from_millis(300);

/// From the accepted connection to a tunnel ready to relay.
pub(crate) async fn handshake(
    snap: &Snapshot,
    client: &Async<TcpStream>,
    (ip, listener): (IpAddr, Option<usize>),
    tproxy: bool,
    deadline: Instant,
) -> Result<Ready, Ended> {
    let dest = destination(client.get_ref(), tproxy).inspect_err(|_| reset(client))?;
    let mut early = Vec::new();
    let named = if snap.config.sniff {
        read_name(client, &mut early, dest.port(), deadline.min(Instant::now() + SNIFF_TIME)).await
    } else {
        None
    };
    if let Some(name) = &named {
        log::debug!("client {ip}: {dest} is {name} (sniffed)");
    }
    let target = named.unwrap_or(Address::Ip(dest));
    let established =
        connect::connect(snap, ip, &target, Attempts::new(snap, deadline).on(listener).dialled(dest), None)
            .await;
    let Established { upstream, backend, active, bound: _, early_down, judge_first_byte } = established
        .map_err(|e| {
            reset(client);
            Ended::Connect(e)
        })?;
    Ok(Ready {
        upstream,
        backend,
        _active: active,
        dest: for_debug_log(&target),
        early_up: early,
        early_down,
        judge_first_byte,
    })
}

/// Where the client was going. A connection to the listener's own
/// address was not redirected (someone dialled the port itself): serving
/// it would connect to ourselves.
fn destination(client: &TcpStream, tproxy: bool) -> Result<SocketAddr, Ended> {
    let local = client.local_addr()?;
    let dest = if tproxy {
        local
    } else {
        #[cfg(target_os = "linux")]
        let original = crate::tcp::original_destination(client);
        #[cfg(not(target_os = "linux"))]
        let original: std::io::Result<SocketAddr> = Err(std::io::ErrorKind::Unsupported.into());
        original.map_err(|e| Ended::Gateway(format!("no original destination ({e})")))?
    };
    let dest = unmapped(dest);
    if !tproxy && dest == unmapped(local) {
        return Err(Ended::Gateway("not redirected: the client connected to this listener itself".into()));
    }
    Ok(dest)
}

/// An IPv4 address a dual-stack socket shows as `::ffff:a.b.c.d`, as
/// IPv4.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Reads the client's first bytes into `early` until they name the
/// destination, say they never will, fill [`sniff::LIMIT`], or `by`
/// passes; returns the name, if any.
async fn read_name(
    client: &Async<TcpStream>,
    early: &mut Vec<u8>,
    port: u16,
    by: Instant,
) -> Option<Address> {
    let mut c = client;
    let mut chunk = [0u8; 1024];
    while early.len() < sniff::LIMIT {
        let room = (sniff::LIMIT - early.len()).min(chunk.len());
        match until(by, c.read(&mut chunk[..room])).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => early.extend_from_slice(&chunk[..n]),
        }
        match sniff::sniff(early, port) {
            Sniffed::Name(name) => return Some(name),
            Sniffed::Nothing => return None,
            Sniffed::More => {}
        }
    }
    None
}

/// Closes with a reset rather than an orderly end, so that the client
/// fails at once, as it would were the destination refusing.
fn reset(client: &Async<TcpStream>) {
    let _ = rustix::net::sockopt::set_socket_linger(client.get_ref(), Some(Duration::ZERO));
}
