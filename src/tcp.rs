//! TCP sockets as the proxy sets them up: listeners, and outgoing
//! connections to backends and destinations.
//!
//! **Delayed ACKs through the handshake (Linux).** A SOCKS5 handshake is
//! a few small messages, each answered at once. A new Linux connection
//! starts in "quick ACK" mode: the kernel acknowledges each segment that
//! arrives with a segment of its own, and the answer follows microseconds
//! later in another. With `TCP_QUICKACK` off, the kernel holds the ACK
//! back and it rides on the answer. Where we answer at once, that saves
//! three segments of a proxied connection's 38 (docs/performance.md,
//! "Delayed ACKs in the handshake"): the ACK of the client's greeting; on
//! the backend side the last ACK of the three-way handshake, which goes
//! out with our greeting, and the ACK of the backend's method choice,
//! which goes out with our request.
//!
//! It is set where the other side waits for us: on listeners (the
//! accepted sockets inherit it; clients speak first, and we answer each
//! handshake message at once) and on sockets to SOCKS5 backends before
//! they connect (we speak first). Not on connections to a destination
//! (`direct` and uplink backends): a server that speaks first would get
//! the handshake's last ACK, and so its `accept`, only with our first
//! bytes. After the handshake the kernel's own rules decide, as they do
//! for every connection: it keeps delaying ACKs while traffic goes back
//! and forth, and goes back to quick ACKs when a delayed one had to be
//! sent alone (after at most 40 ms to 200 ms, its delayed-ACK timer).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketType};
use smol::Async;

/// Who sends the first bytes on a new outgoing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstWord<'a> {
    /// We do, these bytes (a SOCKS5 backend waits for our greeting): ACKs
    /// wait for them, and [`connect`] sends them as soon as it is up.
    Ours(&'a [u8]),
    /// The peer may (a destination server): the kernel's defaults.
    Theirs,
}

/// The `SO_MARK` every outgoing socket gets (0: none), from the config in
/// force (`routing_mark`). A gateway's firewall rules skip marked
/// packets, so our own connections are never redirected back to us.
static ROUTING_MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Sets the mark for sockets made from now on.
pub fn set_routing_mark(mark: u32) {
    ROUTING_MARK.store(mark, std::sync::atomic::Ordering::Relaxed);
}

/// Whether setting the mark failed once already (said once, at warn).
#[cfg(target_os = "linux")]
static MARK_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A fresh non-blocking TCP socket for `addr`'s address family, with the
/// routing mark.
pub fn socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = bare_socket(addr)?;
    mark(&socket);
    Ok(socket)
}

/// Puts the routing mark on a socket we open (TCP or UDP), if one is set;
/// a failure is said once.
pub fn mark(socket: &OwnedFd) {
    #[cfg(target_os = "linux")]
    {
        let mark = ROUTING_MARK.load(std::sync::atomic::Ordering::Relaxed);
        if mark != 0 {
            use linux_raw_sys::net::{SOL_SOCKET, SO_MARK};
            if let Err(e) = set_int(socket, SOL_SOCKET, SO_MARK, mark as i32) {
                if !MARK_FAILED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!(
                        "cannot mark outgoing connections with routing_mark {mark:#x} ({e}; it needs \
                         CAP_NET_ADMIN): gateway rules that skip the mark will not see it"
                    );
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// `setsockopt` of an `int` option, by the kernel's own numbers (from
/// linux-raw-sys, which has each architecture's: see uplink's `sys`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set_int(fd: &impl AsFd, level: u32, name: u32, value: i32) -> io::Result<()> {
    use rustix::fd::AsRawFd;
    // SAFETY: the socket is open for the call; the value is an int passed
    // with its size, which the kernel copies.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level as libc::c_int,
            name as libc::c_int,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bare_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    #[cfg(unix)]
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )?;
    #[cfg(not(unix))]
    let socket = {
        let s = rustix::net::socket(family, SocketType::STREAM, None)?;
        rustix::io::ioctl_fionbio(&s, true)?;
        s
    };
    Ok(socket)
}

/// Connects `socket` (from [`socket`], perhaps already bound) to `addr`;
/// where [`FirstWord::Ours`], sends those bytes. The caller bounds it
/// with a deadline.
///
/// A non-blocking connect is done when the socket turns writable; its
/// outcome is then in `SO_ERROR`, which a `getsockopt` reads. Where we
/// speak first, Linux tells the outcome with our first send instead: a
/// failed connect leaves its error on the socket, and the send returns
/// that same error (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, …) and clears
/// it, as the `getsockopt` would. That saves a system call per backend
/// connection (HAProxy learns it the same way). Elsewhere the send after
/// a failed connect does not promise the connect's error, so the
/// `getsockopt` stays.
pub async fn connect(
    socket: OwnedFd,
    addr: SocketAddr,
    first: FirstWord<'_>,
) -> io::Result<Async<TcpStream>> {
    let ours = match first {
        FirstWord::Ours(bytes) if !bytes.is_empty() => Some(bytes),
        _ => None,
    };
    if ours.is_some() {
        delay_acks(&socket);
    }
    match rustix::net::connect(&socket, &addr) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INPROGRESS || e == rustix::io::Errno::WOULDBLOCK => {}
        Err(e) => return Err(e.into()),
    }
    // `socket` made it non-blocking already.
    let stream = Async::new_nonblocking(TcpStream::from(socket))?;
    stream.writable().await?;
    if ours.is_none() || cfg!(not(target_os = "linux")) {
        // Read through std, not rustix: on mips64 rustix's libc backend
        // takes SOL_SOCKET and SO_ERROR from libc, whose 0.2.191 has the
        // generic values there (see uplink's bind_to_interface), and the
        // kernel refuses them with ENOPROTOOPT.
        if let Some(e) = stream.get_ref().take_error()? {
            return Err(e);
        }
    }
    // The handshake is many small messages: don't let Nagle hold any of
    // them back.
    let _ = stream.get_ref().set_nodelay(true);
    if let Some(bytes) = ours {
        // Completing the handshake puts the socket back in quick-ACK mode
        // (the ACK held back for our first bytes stays held). Kernels
        // that re-enter delayed ACKs when we send this soon after the
        // connect need nothing more; on the others it is set again
        // before the send, so that the answer finds it.
        if !sending_delays_acks() {
            delay_acks(stream.get_ref());
        }
        smol::io::AsyncWriteExt::write_all(&mut &stream, bytes).await?;
    }
    Ok(stream)
}

/// Sets up a listening socket: clients speak first, so ACKs wait for our
/// answers; and on Linux `TCP_NODELAY`, as the handshake is many small
/// messages. Accepted sockets inherit both, which saves a `setsockopt`
/// per connection ([`no_delay`]).
pub fn listening(listener: &TcpListener) {
    delay_acks(listener);
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_nodelay(listener, true);
}

/// `TCP_NODELAY` on an accepted connection: a no-op on Linux, where it
/// came from the listener ([`listening`]); elsewhere the option is set
/// here, as Windows does not promise that accepted sockets inherit it.
pub fn no_delay(stream: &TcpStream) {
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = stream;
}

/// A listener on `addr`, and whether the address is missing from this
/// host for now.
///
/// An address the host does not have (yet) is not fatal on Linux: a
/// router's LAN bridge often gets its address after the daemon starts,
/// or the LAN is renumbered. There the socket is bound with
/// `IP_FREEBIND`, and the kernel hands it the connections to that
/// address from the moment the address exists; nothing needs rebinding.
/// Elsewhere the error (`AddrNotAvailable`) is returned, and the server
/// tries again until the address exists.
pub fn listen(addr: SocketAddr) -> io::Result<(TcpListener, bool)> {
    match TcpListener::bind(addr) {
        Ok(listener) => Ok((listener, false)),
        #[cfg(target_os = "linux")]
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
            use rustix::net::sockopt;
            let fd = socket(addr)?;
            // What std's bind does on Unix: a restart can reuse the port
            // while old connections sit in TIME_WAIT. Best effort: on
            // mips64 rustix takes a wrong SOL_SOCKET from libc (see
            // `connect`), and without it only a quick restart can fail.
            let _ = sockopt::set_socket_reuseaddr(&fd, true);
            if addr.is_ipv4() {
                sockopt::set_ip_freebind(&fd, true)?;
            } else {
                sockopt::set_ipv6_freebind(&fd, true)?;
            }
            rustix::net::bind(&fd, &addr)?;
            // std's backlog.
            rustix::net::listen(&fd, 128)?;
            Ok((TcpListener::from(fd), true))
        }
        Err(e) => Err(e),
    }
}

/// `count` listeners on `addr` in one `SO_REUSEPORT` group (Linux), and
/// whether the address is missing from this host for now: one per
/// executor thread, so that each thread accepts its own share of the
/// connections (the kernel spreads them by their addresses and ports) and
/// nothing is handed between threads. `transparent` makes them
/// `IP_TRANSPARENT` ([`listen_transparent`]).
///
/// A group lets any other socket of the same user join it, so a second
/// daemon started on the same port would silently share the connections.
/// The port is first bound alone, as a single listener would be, so a port
/// in use fails here the usual way ("address in use").
#[cfg(target_os = "linux")]
pub fn listen_group(
    addr: SocketAddr,
    transparent: bool,
    count: usize,
) -> io::Result<(Vec<TcpListener>, bool)> {
    use linux_raw_sys::net::{SOL_SOCKET, SO_REUSEADDR, SO_REUSEPORT};
    use rustix::net::sockopt;
    let missing = match (transparent, addr.port()) {
        // Port 0 gets a fresh port: nobody else has it.
        (_, 0) => TcpListener::bind(addr).is_err(),
        (true, _) => listen_transparent(addr).map(|_| false)?,
        (false, _) => listen(addr)?.1,
    };
    let mut group = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let fd = bare_socket(at)?;
        // Through `set_int`, not rustix: on mips64 rustix takes a wrong
        // SOL_SOCKET from libc (see `connect`).
        let _ = set_int(&fd, SOL_SOCKET, SO_REUSEADDR, 1);
        set_int(&fd, SOL_SOCKET, SO_REUSEPORT, 1)?;
        if transparent {
            set_transparent(&fd, at)?;
        } else if missing && at.is_ipv4() {
            sockopt::set_ip_freebind(&fd, true)?;
        } else if missing {
            sockopt::set_ipv6_freebind(&fd, true)?;
        }
        rustix::net::bind(&fd, &at)?;
        rustix::net::listen(&fd, 128)?;
        let listener = TcpListener::from(fd);
        // The rest join the port the first one got.
        at = listener.local_addr()?;
        group.push(listener);
    }
    Ok((group, missing))
}

/// An `IP_TRANSPARENT` listener on `addr`, for nftables `tproxy` (Linux):
/// it accepts connections to any address the firewall hands it, and each
/// accepted socket's local address is where its client was going.
/// Setting the option needs CAP_NET_ADMIN; the error says so.
#[cfg(target_os = "linux")]
pub fn listen_transparent(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = bare_socket(addr)?;
    let _ = rustix::net::sockopt::set_socket_reuseaddr(&fd, true);
    set_transparent(&fd, addr)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 128)?;
    Ok(TcpListener::from(fd))
}

/// `IP_TRANSPARENT` (or IPv6's) on a socket for `addr`'s family: it may
/// bind and take traffic for addresses not its own. Needs CAP_NET_ADMIN;
/// the error says so.
#[cfg(target_os = "linux")]
pub fn set_transparent(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    use linux_raw_sys::net::{IPV6_TRANSPARENT, IP_TRANSPARENT, SOL_IP, SOL_IPV6};
    let (level, name) = if addr.is_ipv4() { (SOL_IP, IP_TRANSPARENT) } else { (SOL_IPV6, IPV6_TRANSPARENT) };
    set_int(fd, level, name, 1).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => io::Error::new(
            e.kind(),
            format!("a tproxy listener needs CAP_NET_ADMIN (run as root, or grant the capability): {e}"),
        ),
        _ => e,
    })
}

/// Where a redirected connection was going (nftables `redirect`/`dnat`,
/// from conntrack: `SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`).
#[cfg(target_os = "linux")]
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    use rustix::net::sockopt::{ip_original_dst, ipv6_original_dst};
    let local = stream.local_addr()?;
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        Ok(SocketAddr::V4(ip_original_dst(stream)?))
    } else {
        Ok(SocketAddr::V6(ipv6_original_dst(stream)?))
    }
}

/// Whether this host has `ip` on one of its interfaces now (the
/// unspecified address counts as present).
pub fn is_local_address(ip: std::net::IpAddr) -> bool {
    !matches!(std::net::UdpSocket::bind((ip, 0)), Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable)
}

/// Accepts the next connection, non-blocking from the start: on Linux
/// `accept4` sets the flag, which saves the `ioctl` that
/// `Async<TcpListener>::accept` makes for every connection.
pub async fn accept(listener: &Async<TcpListener>) -> io::Result<(Async<TcpStream>, SocketAddr)> {
    #[cfg(target_os = "linux")]
    {
        use rustix::net::SocketFlags;
        let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
        let (fd, peer) = listener.read_with(|l| Ok(rustix::net::acceptfrom_with(l, flags)?)).await?;
        let peer = peer.and_then(|p| SocketAddr::try_from(p).ok()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "accepted a connection without an IP peer")
        })?;
        Ok((Async::new_nonblocking(TcpStream::from(fd))?, peer))
    }
    #[cfg(not(target_os = "linux"))]
    listener.accept().await
}

/// Whether this kernel goes back to delayed ACKs on its own when we send
/// right after a connect completes: Linux enters "ping-pong" (delayed-ACK)
/// mode when data goes out within the ACK timeout of the last segment
/// received, after one such exchange before 5.1 and from 5.19 on (the
/// revert of "tcp: change pingpong threshold to 3"; since 6.7 the
/// threshold is the sysctl `net.ipv4.tcp_pingpong_thresh`, 1 by
/// default), after three in between. Where it does, the `setsockopt` after
/// the connect is a system call for nothing. Read once from
/// /proc/sys/kernel/osrelease; unknown counts as no, which only keeps
/// that call. (A threshold raised by the sysctl costs segments, not
/// correctness.)
fn sending_delays_acks() -> bool {
    #[cfg(target_os = "linux")]
    {
        static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *KNOWN.get_or_init(|| {
            release_delays_acks(&std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default())
        })
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// [`sending_delays_acks`] for a kernel release string ("6.18.44-…").
#[cfg(any(target_os = "linux", test))]
fn release_delays_acks(release: &str) -> bool {
    let mut numbers = release.trim().split(['.', '-']).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 19) || (major, minor) < (5, 1),
        _ => false,
    }
}

/// `TCP_QUICKACK` off; nothing elsewhere. A failure costs only segments.
fn delay_acks(fd: impl AsFd) {
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_quickack(fd, false);
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::net::sockopt::tcp_quickack;
    use std::io::{Read, Write};

    #[test]
    fn a_listener_and_the_connections_it_accepts_delay_their_acks_and_not_their_segments() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(tcp_quickack(&listener).unwrap(), "the kernel's default");
        listening(&listener);
        assert!(!tcp_quickack(&listener).unwrap());
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(!tcp_quickack(&accepted).unwrap(), "inherited from the listener");
        assert!(accepted.nodelay().unwrap(), "inherited from the listener");
    }

    #[test]
    fn outgoing_connections_delay_acks_only_where_we_speak_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for (first, quick) in [(FirstWord::Ours(b"hi"), false), (FirstWord::Theirs, true)] {
            let stream = smol::block_on(connect(socket(addr).unwrap(), addr, first)).unwrap();
            assert_eq!(tcp_quickack(stream.get_ref()).unwrap(), quick, "{first:?}");
            assert!(stream.get_ref().nodelay().unwrap());
            if first == FirstWord::Theirs {
                (&mut stream.get_ref()).write_all(b"hi").unwrap();
            }
            // Our first bytes carry the handshake's last ACK, if it was
            // held back: the peer accepts, and gets them, once.
            let (mut accepted, _) = listener.accept().unwrap();
            let mut got = [0u8; 3];
            accepted.read_exact(&mut got[..2]).unwrap();
            assert_eq!(&got[..2], b"hi");
            drop(stream);
            assert_eq!(accepted.read(&mut got).unwrap(), 0, "nothing more: {first:?}");
        }
    }

    #[test]
    fn accepted_connections_are_non_blocking_close_on_exec_and_know_their_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let listener = Async::new(listener).unwrap();
        let (accepted, peer) = smol::block_on(accept(&listener)).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(accepted.get_ref().peer_addr().unwrap(), peer);
        // Nothing sent yet: a read must not block.
        let e = (&mut accepted.get_ref()).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let fd_flags = rustix::io::fcntl_getfd(accepted.get_ref()).unwrap();
        assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
        // And it works as a stream.
        (&client).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        smol::block_on(smol::io::AsyncReadExt::read_exact(&mut &accepted, &mut got)).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn an_address_the_host_lacks_is_listened_on_all_the_same() {
        // 198.18.0.0/15 is for benchmarks; no test host has it configured.
        let missing = SocketAddr::from(([198, 18, 255, 254], 0));
        assert!(!is_local_address(missing.ip()));
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(is_local_address("0.0.0.0".parse().unwrap()));
        let (listener, pending) = listen(missing).unwrap();
        assert!(pending, "the address is reported missing");
        assert_eq!(listener.local_addr().unwrap().ip(), missing.ip());
        assert!(rustix::io::fcntl_getfd(&listener).unwrap().contains(rustix::io::FdFlags::CLOEXEC));
        let (_, pending) = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        assert!(!pending);
    }

    #[test]
    fn kernels_that_delay_acks_when_we_send_are_known_by_their_release() {
        for (release, yes) in [
            ("6.18.44-fc-v1272", true),
            ("6.6.93", true),
            ("5.19.0-rc1", true),
            ("5.15.167", false),
            ("5.1.0", false),
            ("4.14.336", true),
            ("", false),
            ("garbage", false),
            ("6", false),
        ] {
            assert_eq!(release_delays_acks(release), yes, "{release:?}");
        }
    }

    #[test]
    fn a_refused_connect_is_an_error_whoever_speaks_first() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is gone: nothing listens there now. Where we speak
        // first, the send reports it (no getsockopt); else SO_ERROR does.
        for first in [FirstWord::Ours(b"\x05\x01\x00"), FirstWord::Ours(b""), FirstWord::Theirs] {
            let e = smol::block_on(connect(socket(addr).unwrap(), addr, first)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{first:?}");
        }
    }
}
