//! UDP sockets for nftables `tproxy` (Linux): the listener, which takes
//! datagrams for any destination and learns each one's from
//! `IP_RECVORIGDSTADDR`, and the reply sockets, bound to those foreign
//! destinations, from which answers go back to the LAN device as if the
//! destination itself sent them. Both need `IP_TRANSPARENT`, and so
//! CAP_NET_ADMIN.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use linux_raw_sys::net::{IPV6_RECVORIGDSTADDR, IP_RECVORIGDSTADDR, SOL_IP, SOL_IPV6};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// A non-blocking `IP_TRANSPARENT` UDP socket bound to `addr` (which need
/// not be ours); `listener` also asks for each datagram's original
/// destination.
pub fn udp_socket(addr: SocketAddr, listener: bool) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    crate::tcp::set_transparent(&fd, addr)?;
    let level = if addr.is_ipv4() { SOL_IP } else { SOL_IPV6 };
    if listener {
        let recv = if addr.is_ipv4() { IP_RECVORIGDSTADDR } else { IPV6_RECVORIGDSTADDR };
        crate::tcp::set_int(&fd, level, recv, 1)?;
        if addr.is_ipv6() {
            // A dual-stack socket's IPv4 datagrams carry IPv4's message.
            let _ = crate::tcp::set_int(&fd, SOL_IP, IP_RECVORIGDSTADDR, 1);
        }
    } else {
        // Several LAN devices may talk to one destination: one reply
        // socket each, all bound to it.
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

/// Receives one datagram on a listener from [`udp_socket`]: its length,
/// its sender, and where it was going.
#[allow(unsafe_code)]
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SocketAddr)> {
    use rustix::fd::AsRawFd;
    // SAFETY: every pointer handed to recvmsg points into a local that
    // outlives the call, with its true length; the kernel writes at most
    // those lengths. The control messages are read back only within
    // `msg_controllen`, through the libc CMSG macros, and a destination
    // is copied out only from a message of the size of its type.
    unsafe {
        let mut name: libc::sockaddr_storage = std::mem::zeroed();
        let mut control = [0u64; 16];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from =
            to_socket_addr(&name).ok_or_else(|| io::Error::other("a datagram from a non-IP sender"))?;
        let mut dest = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let len = c.cmsg_len as usize - (data as usize - cmsg as usize);
            let size = match (c.cmsg_level, c.cmsg_type) {
                (libc::SOL_IP, libc::IP_ORIGDSTADDR) => std::mem::size_of::<libc::sockaddr_in>(),
                (libc::SOL_IPV6, libc::IPV6_ORIGDSTADDR) => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => 0,
            };
            if size > 0 && len >= size {
                let mut storage: libc::sockaddr_storage = std::mem::zeroed();
                std::ptr::copy_nonoverlapping(
                    data,
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    size,
                );
                dest = to_socket_addr(&storage);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let dest = dest.ok_or_else(|| io::Error::other("a datagram without its original destination"))?;
        Ok((n as usize, from, dest))
    }
}

/// A `sockaddr_storage` the kernel filled in, as an IP socket address.
fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            #[allow(unsafe_code)]
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            #[allow(unsafe_code)]
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::IpAddr::from(a.sin6_addr.s6_addr).to_canonical();
            Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}
