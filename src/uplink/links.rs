//! The interfaces of this host and their state, over a netlink route
//! socket (Linux).
//!
//! Why netlink and not polling `/sys/class/net`: sysfs has each link's
//! flags but not its addresses or routes, and polling notices a change only
//! at the next poll. One netlink socket answers all three dumps and then
//! pushes every change as it happens. The parser below reads only the
//! handful of attributes we use (about 4 KiB of code), so there is no crate
//! for it.
//!
//! Message layout (rtnetlink(7)): each message is a 16-byte `nlmsghdr`
//! (length u32, type u16, flags u16, sequence u32, port u32), a fixed
//! family header (`ifinfomsg` 16 bytes, `ifaddrmsg` 8, `rtmsg` 12), then
//! attributes (length u16, type u16, value), each padded to 4 bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustix::fd::OwnedFd;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use smol::Async;

pub use super::Link;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_RUNNING: u32 = 0x40;
const IFA_F_DADFAILED: u8 = 0x08;
const IFA_F_TENTATIVE: u8 = 0x40;
/// Multicast groups: links, IPv4/IPv6 addresses, IPv4/IPv6 routes.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

fn route_socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC | flags,
        None, // NETLINK_ROUTE
    )?)
}

/// Every interface with its addresses and default-route flag, read now.
pub fn links() -> io::Result<Vec<Link>> {
    let fd = route_socket(SocketFlags::empty())?;
    let mut links = Vec::new();
    dump(&fd, RTM_GETLINK, 16, |kind, body| {
        if kind == RTM_NEWLINK {
            if let Some(link) = parse_link(body) {
                links.push(link);
            }
        }
    })?;
    dump(&fd, RTM_GETADDR, 8, |kind, body| {
        if kind == RTM_NEWADDR {
            if let Some((index, ip)) = parse_addr(body) {
                if let Some(link) = links.iter_mut().find(|l| l.index == index) {
                    link.addrs.push(ip);
                }
            }
        }
    })?;
    dump(&fd, RTM_GETROUTE, 12, |kind, body| {
        if kind == RTM_NEWROUTE {
            for index in default_route_devices(body) {
                if let Some(link) = links.iter_mut().find(|l| l.index == index) {
                    link.default_route = true;
                }
            }
        }
    })?;
    links.sort_by_key(|l| l.index);
    Ok(links)
}

/// Sends one dump request (family AF_UNSPEC, the family header zeroed)
/// and hands each answer's type and body to `each` until the dump ends.
fn dump(fd: &OwnedFd, kind: u16, family_header: usize, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let len = NLMSG_HDR + family_header;
    let mut request = vec![0u8; len];
    request[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&kind.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request[8..12].copy_from_slice(&u32::from(kind).to_ne_bytes());
    rustix::net::sendto(fd, &request, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let (n, _) = rustix::net::recv(fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "netlink socket closed"));
        }
        for (t, body) in messages(&buf[..n]) {
            match t {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = body.get(0..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    return Ok(());
                }
                _ => each(t, body),
            }
        }
    }
}

/// The messages in one datagram: (type, body after the header). A
/// malformed length ends the walk rather than reading past the data.
fn messages(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDR {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDR || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let body = &rest[NLMSG_HDR..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, body))
    })
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes after a fixed header: (type, value).
fn attributes(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        if len < 4 || len > rest.len() {
            return None;
        }
        // The top two bits are flags (nested, byte order).
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, value))
    })
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// `ifinfomsg`: family u8, pad u8, type u16, index i32, flags u32, change u32.
fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let name = attributes(body.get(16..)?).find(|(t, _)| *t == IFLA_IFNAME).map(|(_, v)| {
        let v = v.split(|&b| b == 0).next().unwrap_or(v);
        String::from_utf8_lossy(v).into_owned()
    })?;
    Some(Link {
        index,
        name,
        up: flags & IFF_UP != 0 && flags & IFF_RUNNING != 0,
        loopback: flags & IFF_LOOPBACK != 0,
        addrs: Vec::new(),
        default_route: false,
    })
}

/// `ifaddrmsg`: family u8, prefix length u8, flags u8, scope u8, index u32.
/// Only global, settled addresses count.
fn parse_addr(body: &[u8]) -> Option<(u32, IpAddr)> {
    let (flags, scope) = (*body.get(2)?, *body.get(3)?);
    let index = u32_at(body, 4)?;
    if scope != RT_SCOPE_UNIVERSE || flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0 {
        return None;
    }
    let mut found = None;
    for (kind, value) in attributes(body.get(8..)?) {
        let ip = match value.len() {
            4 => IpAddr::V4(Ipv4Addr::new(value[0], value[1], value[2], value[3])),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?)),
            _ => continue,
        };
        // IFA_LOCAL is the interface's own address on point-to-point
        // links (where IFA_ADDRESS is the peer); prefer it.
        match kind {
            IFA_LOCAL => found = Some(ip),
            IFA_ADDRESS if found.is_none() => found = Some(ip),
            _ => {}
        }
    }
    Some((index, found?))
}

/// `rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type
/// (u8 each), flags u32. A default route has dst_len 0; its device is
/// RTA_OIF, or each next hop's for a multipath route.
fn default_route_devices(body: &[u8]) -> Vec<u32> {
    let (Some(&dst_len), Some(&table), Some(&kind)) = (body.get(1), body.get(4), body.get(7)) else {
        return Vec::new();
    };
    if dst_len != 0 || kind != RTN_UNICAST {
        return Vec::new();
    }
    let mut table = u32::from(table);
    let mut devices = Vec::new();
    for (t, value) in attributes(body.get(12..).unwrap_or_default()) {
        match t {
            RTA_TABLE => table = u32_at(value, 0).unwrap_or(table),
            RTA_OIF => devices.extend(u32_at(value, 0)),
            RTA_MULTIPATH => {
                // rtnexthop: len u16, flags u8, hops u8, ifindex i32, attrs.
                let mut rest = value;
                while rest.len() >= 8 {
                    let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
                    devices.extend(u32_at(rest, 4));
                    if len < 8 || len > rest.len() {
                        break;
                    }
                    rest = &rest[align(len).min(rest.len())..];
                }
            }
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return Vec::new();
    }
    devices
}

/// A netlink socket subscribed to link, address and route changes.
pub struct Watcher {
    socket: Async<OwnedFd>,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        let fd = route_socket(SocketFlags::NONBLOCK)?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, GROUPS))?;
        Ok(Watcher { socket: Async::new(fd)? })
    }

    /// Waits for the next change notification, then drains whatever else
    /// is queued (one `ip link set` sends several). A lost notification
    /// (ENOBUFS: the queue overflowed) is still a change.
    pub async fn changed(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        let first = self.socket.read_with(|fd| recv(fd, &mut buf)).await;
        match first {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(105) => {} // ENOBUFS
            Err(e) => return Err(e),
        }
        while let Ok(n) = recv(self.socket.get_ref(), &mut buf) {
            if n == 0 {
                break;
            }
        }
        Ok(())
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    match rustix::net::recv(fd, buf, RecvFlags::DONTWAIT) {
        Ok((n, _)) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn parses_a_link_message() {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body[8..12].copy_from_slice(&(IFF_UP | IFF_RUNNING).to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, b"wan2\0"));
        let link = parse_link(&body).unwrap();
        assert_eq!((link.index, link.name.as_str(), link.up, link.loopback), (7, "wan2", true, false));
        body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        assert!(!parse_link(&body).unwrap().up, "no carrier is not up");
    }

    #[test]
    fn takes_global_settled_addresses_only() {
        let mut body = vec![2u8, 24, 0, RT_SCOPE_UNIVERSE, 0, 0, 0, 0];
        body[4..8].copy_from_slice(&3u32.to_ne_bytes());
        body.extend(attr(IFA_ADDRESS, &[198, 18, 1, 1]));
        assert_eq!(parse_addr(&body), Some((3, IpAddr::from([198, 18, 1, 1]))));
        body[3] = 253; // link scope
        assert_eq!(parse_addr(&body), None);
        body[3] = RT_SCOPE_UNIVERSE;
        body[2] = IFA_F_TENTATIVE;
        assert_eq!(parse_addr(&body), None);
    }

    #[test]
    fn finds_default_routes_of_the_main_table() {
        let mut body = vec![2u8, 0, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        body.extend(attr(RTA_OIF, &5u32.to_ne_bytes()));
        assert_eq!(default_route_devices(&body), vec![5]);
        let mut other_table = body.clone();
        other_table.extend(attr(RTA_TABLE, &100u32.to_ne_bytes()));
        assert!(default_route_devices(&other_table).is_empty());
        body[1] = 24; // 198.18.1.0/24 is no default route
        assert!(default_route_devices(&body).is_empty());
    }

    #[test]
    fn malformed_lengths_end_the_walk() {
        let mut data = vec![0u8; 20];
        data[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(messages(&data).count(), 0);
        assert_eq!(attributes(&[255, 255, 1, 0]).count(), 0);
        assert_eq!(attributes(&[2, 0, 1, 0]).count(), 0);
    }

    #[test]
    fn lists_this_hosts_loopback() {
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.loopback).expect("a loopback interface");
        assert!(!lo.is_uplink());
    }
}
