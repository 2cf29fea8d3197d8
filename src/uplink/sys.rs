//! The socket options that pin a connection to an interface, per platform.

use std::io;

use rustix::fd::OwnedFd;

/// Linux: `SO_BINDTODEVICE`.
///
/// The option's level and name come from linux-raw-sys, not libc: libc
/// 0.2.191 files mips64 under the generic `asm/socket.h` values, so its
/// `SOL_SOCKET` is 1 there instead of MIPS's 0xffff, and the kernel answers
/// a TCP socket's unknown level with ENOPROTOOPT ("Protocol not
/// available", errno 99 on MIPS). Real mips64 routers would see that, not
/// only qemu. linux-raw-sys generates its constants from each
/// architecture's kernel headers.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn bind_to_interface(socket: &OwnedFd, name: &str, _ipv6: bool) -> io::Result<()> {
    use linux_raw_sys::net::{SOL_SOCKET, SO_BINDTODEVICE};
    use rustix::fd::AsRawFd;
    // SAFETY: `socket` is an open socket for the duration of the call; the
    // option value is `name`'s bytes with their exact length, which the
    // kernel copies (it needs no NUL when given the length).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            SOL_SOCKET as libc::c_int,
            SO_BINDTODEVICE as libc::c_int,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Windows: `IP_UNICAST_IF` / `IPV6_UNICAST_IF` with the interface index.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn bind_to_interface(socket: &OwnedFd, name: &str, ipv6: bool) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        setsockopt, IPPROTO_IP, IPPROTO_IPV6, IPV6_UNICAST_IF, IP_UNICAST_IF, SOCKET_ERROR,
    };
    let index = interface_index(name)?;
    // IPv4 wants the index in network byte order, IPv6 in host order.
    let (level, option, value) = if ipv6 {
        (IPPROTO_IPV6, IPV6_UNICAST_IF, index)
    } else {
        (IPPROTO_IP, IP_UNICAST_IF, index.to_be())
    };
    // SAFETY: the socket is open for the call; the value is a 4-byte
    // integer passed with its size.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as _,
            level,
            option,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as i32,
        )
    };
    if rc == SOCKET_ERROR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An interface index from a number or an alias (`Ethernet`, `Wi-Fi`).
#[cfg(windows)]
#[allow(unsafe_code)]
fn interface_index(name: &str) -> io::Result<u32> {
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        ConvertInterfaceAliasToLuid, ConvertInterfaceLuidToIndex,
    };
    use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
    if let Ok(index) = name.parse::<u32>() {
        return Ok(index);
    }
    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    let mut luid = NET_LUID_LH { Value: 0 };
    let mut index = 0u32;
    // SAFETY: `wide` is NUL-terminated and outlives the call; `luid` and
    // `index` are valid for writes.
    let rc = unsafe { ConvertInterfaceAliasToLuid(wide.as_ptr(), &mut luid) };
    if rc != 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface named {name:?}")));
    }
    // SAFETY: as above.
    let rc = unsafe { ConvertInterfaceLuidToIndex(&luid, &mut index) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    Ok(index)
}

/// Elsewhere there is no portable way: use `bind:` with the address.
#[cfg(not(any(target_os = "linux", windows)))]
pub fn bind_to_interface(_socket: &OwnedFd, name: &str, _ipv6: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "binding to interface {name} is supported on Linux and Windows; use `bind:` with its address"
        ),
    ))
}
