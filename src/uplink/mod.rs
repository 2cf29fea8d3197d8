//! Multipath uplinks: connecting through one of this host's own network
//! interfaces or from one of its addresses, and knowing which links are up.
//!
//! An uplink backend (`interface:`, `bind:`, or found by `interfaces:
//! auto`) connects to destinations itself, like `direct`, but pinned to a
//! link. A SOCKS backend with `via: NAME` reaches its proxy the same way.
//!
//! Per platform (see docs/multipath.md):
//! - Linux: `interface` is `SO_BINDTODEVICE` (route lookups are confined
//!   to that device; Linux ≥ 5.7 allows it without CAP_NET_RAW), `bind` a
//!   bind to the source address before connecting. Link state comes from a
//!   netlink route socket ([`links`]).
//! - Windows: `interface` is `IP_UNICAST_IF`/`IPV6_UNICAST_IF` with the
//!   interface's index (looked up from its alias, e.g. `Wi-Fi`, or given
//!   as a number); `bind` as on Linux. The adapters and their changes come
//!   from the IP Helper API ([`win`]).
//!
//! Errors that mean "this link cannot carry anything" (no route, network
//! down, device gone, source address gone) are told apart from a
//! destination's own refusal by [`link_failure`].

#[cfg(target_os = "linux")]
pub mod links;
mod sys;
#[cfg(any(windows, test))]
pub mod win;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use smol::Async;

use crate::config::Uplink;
use crate::tcp::FirstWord;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_RUNNING`).
    pub up: bool,
    pub loopback: bool,
    /// Global-scope addresses (no link-local, no tentative IPv6).
    pub addrs: Vec<IpAddr>,
    /// A default route of the main table leaves through this interface.
    pub default_route: bool,
}

impl Link {
    /// What `interfaces: auto` takes: up, not loopback, with an address
    /// and a default route through it (so a router's LAN bridge is not an
    /// uplink, and its WANs are).
    pub fn is_uplink(&self) -> bool {
        self.up && !self.loopback && !self.addrs.is_empty() && self.default_route
    }
}

/// The interfaces as they are now; empty where they cannot be listed
/// (neither Linux nor Windows) or when listing fails (logged).
pub fn current_links() -> Vec<Link> {
    #[cfg(target_os = "linux")]
    let listed = links::links();
    #[cfg(windows)]
    let listed = win::links();
    #[cfg(any(target_os = "linux", windows))]
    match listed {
        Ok(links) => return links,
        Err(e) => log::warn!("cannot list network interfaces: {e}"),
    }
    Vec::new()
}

/// The interface names `interfaces: auto` takes from `links`.
pub fn auto_names(links: &[Link]) -> Vec<String> {
    links.iter().filter(|l| l.is_uplink()).map(|l| l.name.clone()).collect()
}

/// Opens a TCP connection to `addr` through `uplink`. The caller bounds
/// it with a deadline.
pub async fn connect(
    uplink: &Uplink,
    addr: SocketAddr,
    first: FirstWord<'_>,
) -> io::Result<Async<TcpStream>> {
    if let Some(ip) = uplink.bind {
        if ip.is_ipv4() != addr.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("source address {ip} cannot reach {addr} (other address family)"),
            ));
        }
    }
    let socket = crate::tcp::socket(addr)?;
    if let Some(dev) = &uplink.interface {
        sys::bind_to_interface(&socket, dev, addr.is_ipv6())
            .map_err(|e| io::Error::new(e.kind(), format!("interface {dev}: {e}")))?;
    }
    if let Some(ip) = uplink.bind {
        rustix::net::bind(&socket, &SocketAddr::new(ip, 0))
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("bind to {ip}: {e}")))?;
    }
    crate::tcp::connect(socket, addr, first).await
}

/// A UDP socket for destinations of one family (`v6`), non-blocking, with
/// the routing mark, and pinned to `uplink` as its TCP connections are.
pub fn udp_socket(uplink: Option<&Uplink>, v6: bool) -> io::Result<std::net::UdpSocket> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if v6 { AddressFamily::INET6 } else { AddressFamily::INET };
    #[cfg(unix)]
    let socket = rustix::net::socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    #[cfg(not(unix))]
    let socket = {
        let _ = SocketFlags::empty();
        rustix::net::socket(family, SocketType::DGRAM, None)?
    };
    crate::tcp::mark(&socket);
    let unspecified: IpAddr =
        if v6 { std::net::Ipv6Addr::UNSPECIFIED.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() };
    let mut local = unspecified;
    if let Some(u) = uplink {
        if let Some(dev) = &u.interface {
            sys::bind_to_interface(&socket, dev, v6)
                .map_err(|e| io::Error::new(e.kind(), format!("interface {dev}: {e}")))?;
        }
        match u.bind {
            Some(ip) if ip.is_ipv6() == v6 => local = ip,
            Some(ip) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("source address {ip} is of the other family"),
                ));
            }
            None => {}
        }
    }
    rustix::net::bind(&socket, &SocketAddr::new(local, 0))?;
    Ok(std::net::UdpSocket::from(socket))
}

/// Whether a connect error says the link itself is unusable, rather than
/// that one destination refused or could not be reached beyond it.
pub fn link_failure(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(e.kind(), NetworkUnreachable | NetworkDown | AddrNotAvailable) {
        return true;
    }
    // ENODEV: the interface is gone. (Not in io::ErrorKind.)
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(19) {
        return true;
    }
    false
}
