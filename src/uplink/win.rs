//! Windows: the network adapters as `interfaces: auto` sees them, and
//! their change notifications (the counterpart of netlink on Linux).
//!
//! [`assemble`] is the decision, free of Windows types: from the adapter
//! table (`GetAdaptersAddresses`) and the default routes
//! (`GetIpForwardTable2`, prefix length 0), the [`Link`]s that
//! [`Link::is_uplink`] then judges. The tests run it on recorded tables.
//! [`links`] reads the two tables and [`Watcher`] follows
//! `NotifyIpInterfaceChange` and `NotifyRouteChange2` (Windows only).

use std::net::IpAddr;

use super::Link;

/// `IF_TYPE_SOFTWARE_LOOPBACK` and `IF_TYPE_TUNNEL` (ipifcons.h).
pub const IF_TYPE_SOFTWARE_LOOPBACK: u32 = 24;
pub const IF_TYPE_TUNNEL: u32 = 131;
/// `IfOperStatusUp`.
pub const OPER_UP: i32 = 1;

/// One row of the adapter table, as far as `interfaces: auto` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The IPv4 interface index (`IfIndex`), or the IPv6 one.
    pub index: u32,
    pub ipv6_index: u32,
    /// What Windows shows and `via:` names: `Ethernet`, `Wi-Fi`.
    pub friendly_name: String,
    pub if_type: u32,
    pub oper_status: i32,
    pub addrs: Vec<IpAddr>,
}

/// The links: every adapter, up when its status is up, with its global
/// addresses, and a default route when one leaves through its IPv4 or
/// IPv6 index. Loopback and tunnel-only adapters (Teredo, ISATAP, IP-HTTPS)
/// are marked as such and never taken.
pub fn assemble(adapters: &[Adapter], default_route_indices: &[u32]) -> Vec<Link> {
    adapters
        .iter()
        .map(|a| Link {
            index: a.index,
            name: a.friendly_name.clone(),
            up: a.oper_status == OPER_UP,
            loopback: a.if_type == IF_TYPE_SOFTWARE_LOOPBACK || a.if_type == IF_TYPE_TUNNEL,
            addrs: a.addrs.iter().copied().filter(|ip| global(*ip)).collect(),
            default_route: default_route_indices
                .iter()
                .any(|&i| i != 0 && (i == a.index || i == a.ipv6_index)),
        })
        .collect()
}

/// Not loopback, link-local or unspecified.
fn global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80),
    }
}

#[cfg(windows)]
pub use sys::{links, Watcher};

#[cfg(windows)]
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use smol::channel::{Receiver, Sender};
    use smol::future::FutureExt;
    use smol::Timer;
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::NetworkManagement::IpHelper::*;
    use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, AF_UNSPEC, SOCKADDR_IN, SOCKADDR_IN6};

    use super::{assemble, Adapter};
    use crate::uplink::Link;

    /// The adapters and default routes as they are now.
    pub fn links() -> io::Result<Vec<Link>> {
        Ok(assemble(&adapters()?, &default_routes()?))
    }

    fn adapters() -> io::Result<Vec<Adapter>> {
        let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
        let mut size: u32 = 16 * 1024;
        // The table can grow between the sizing call and the next: retry.
        for _ in 0..4 {
            // u64 words: the table's structs want 8-byte alignment.
            let mut buf = vec![0u64; (size as usize).div_ceil(8)];
            let first = buf.as_mut_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
            // SAFETY: `buf` holds `size` bytes, aligned for the structs.
            let rc = unsafe {
                GetAdaptersAddresses(u32::from(AF_UNSPEC), flags, std::ptr::null(), first, &mut size)
            };
            match rc {
                0 => {}
                111 => continue, // ERROR_BUFFER_OVERFLOW: `size` now says how much
                232 => return Ok(Vec::new()), // ERROR_NO_DATA: no adapters
                e => return Err(io::Error::from_raw_os_error(e as i32)),
            }
            let mut out = Vec::new();
            let mut a = first;
            // SAFETY: a NULL-terminated list inside `buf`, as the call
            // wrote it; strings are NUL-terminated UTF-16 in `buf` too.
            unsafe {
                while !a.is_null() {
                    let row = &*a;
                    let mut addrs = Vec::new();
                    let mut u = row.FirstUnicastAddress;
                    while !u.is_null() {
                        if let Some(ip) = sockaddr((*u).Address.lpSockaddr.cast()) {
                            addrs.push(ip);
                        }
                        u = (*u).Next;
                    }
                    out.push(Adapter {
                        index: row.Anonymous1.Anonymous.IfIndex,
                        ipv6_index: row.Ipv6IfIndex,
                        friendly_name: wide(row.FriendlyName),
                        if_type: row.IfType,
                        oper_status: row.OperStatus,
                        addrs,
                    });
                    a = row.Next;
                }
            }
            return Ok(out);
        }
        Err(io::Error::other("the adapter table kept growing"))
    }

    /// Interface indices a default route (prefix length 0) leaves through.
    fn default_routes() -> io::Result<Vec<u32>> {
        let mut table: *mut MIB_IPFORWARD_TABLE2 = std::ptr::null_mut();
        // SAFETY: the call allocates the table; it is freed below.
        let rc = unsafe { GetIpForwardTable2(AF_UNSPEC, &mut table) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        // SAFETY: `NumEntries` rows follow the header, as allocated.
        let out = unsafe {
            let rows = std::slice::from_raw_parts((*table).Table.as_ptr(), (*table).NumEntries as usize);
            let out = rows
                .iter()
                .filter(|r| r.DestinationPrefix.PrefixLength == 0)
                .map(|r| r.InterfaceIndex)
                .collect();
            FreeMibTable(table.cast());
            out
        };
        Ok(out)
    }

    /// # Safety
    /// `sa` is NULL or points to a socket address of its family's size.
    unsafe fn sockaddr(sa: *const SOCKADDR_IN) -> Option<IpAddr> {
        if sa.is_null() {
            return None;
        }
        match (*sa).sin_family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::from(u32::from_be((*sa).sin_addr.S_un.S_addr)))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from((*sa.cast::<SOCKADDR_IN6>()).sin6_addr.u.Byte))),
            _ => None,
        }
    }

    /// # Safety
    /// `p` is NULL or a NUL-terminated UTF-16 string.
    unsafe fn wide(p: *const u16) -> String {
        if p.is_null() {
            return String::new();
        }
        let mut n = 0;
        while *p.add(n) != 0 {
            n += 1;
        }
        String::from_utf16_lossy(std::slice::from_raw_parts(p, n))
    }

    /// Where the notification callbacks (on Windows' own threads) say
    /// that something changed.
    static CHANGES: OnceLock<Sender<()>> = OnceLock::new();

    /// Both callbacks: note the change; the watcher reads the tables.
    fn note_change() {
        if let Some(tx) = CHANGES.get() {
            let _ = tx.try_send(());
        }
    }

    unsafe extern "system" fn interface_changed(
        _: *const core::ffi::c_void,
        _: *const MIB_IPINTERFACE_ROW,
        _: MIB_NOTIFICATION_TYPE,
    ) {
        note_change();
    }

    unsafe extern "system" fn route_changed(
        _: *const core::ffi::c_void,
        _: *const MIB_IPFORWARD_ROW2,
        _: MIB_NOTIFICATION_TYPE,
    ) {
        note_change();
    }

    /// Without a notification, the tables are read again this often, and
    /// a difference counts as a change: Wine accepts the registrations but
    /// never calls back (docs/building.md), and a missed callback on
    /// Windows itself is then caught up too.
    const POLL: Duration = Duration::from_secs(10);

    /// Interface and route change notifications, for the daemon's life
    /// (registered once; never cancelled).
    pub struct Watcher {
        changes: Receiver<()>,
        seen: Mutex<Vec<Link>>,
    }

    impl Watcher {
        pub fn new() -> io::Result<Watcher> {
            let (tx, rx) = smol::channel::bounded(1);
            if CHANGES.set(tx).is_err() {
                return Err(io::Error::other("interface notifications are already being followed"));
            }
            let mut handle: HANDLE = std::ptr::null_mut();
            // SAFETY: static callbacks with no context; the handles stay
            // registered for the process's life.
            let rc = unsafe {
                NotifyIpInterfaceChange(
                    AF_UNSPEC,
                    Some(interface_changed),
                    std::ptr::null(),
                    false,
                    &mut handle,
                )
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc as i32));
            }
            let mut handle: HANDLE = std::ptr::null_mut();
            // SAFETY: as above.
            let rc = unsafe {
                NotifyRouteChange2(AF_UNSPEC, Some(route_changed), std::ptr::null(), false, &mut handle)
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc as i32));
            }
            Ok(Watcher { changes: rx, seen: Mutex::new(links().unwrap_or_default()) })
        }

        /// Waits for the next change: a notification (any number since the
        /// last call count as one), or tables that differ from the last
        /// ones read.
        pub async fn changed(&self) -> io::Result<()> {
            loop {
                let notified = async { self.changes.recv().await.is_ok() };
                let poll = async {
                    Timer::after(POLL).await;
                    false
                };
                let notified = notified.or(poll).await;
                let now = links().unwrap_or_default();
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if notified || *seen != now {
                    *seen = now;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(index: u32, name: &str, if_type: u32, up: bool, addrs: &[&str]) -> Adapter {
        Adapter {
            index,
            ipv6_index: index,
            friendly_name: name.into(),
            if_type,
            oper_status: if up { OPER_UP } else { 2 },
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// A laptop's table, as `Get-NetAdapter`/`route print` would show it:
    /// Ethernet and Wi-Fi each with a default route, a Bluetooth adapter
    /// that is down, a Hyper-V switch with only a link-local address and no
    /// default route, the loopback pseudo-interface, and Teredo (a tunnel
    /// with a default route of its own).
    #[test]
    fn a_recorded_laptop_table_gives_ethernet_and_wifi() {
        let ethernet = 6; // the index constants `route print` lists
        let adapters = [
            adapter(ethernet, "Ethernet", 6, true, &["198.18.1.2", "fe80::1"]),
            adapter(12, "Wi-Fi", 71, true, &["198.18.2.2", "2001:db8::2"]),
            adapter(9, "Bluetooth Network Connection", 6, false, &["169.254.10.1"]),
            adapter(30, "vEthernet (Default Switch)", 6, true, &["fe80::5"]),
            adapter(1, "Loopback Pseudo-Interface 1", IF_TYPE_SOFTWARE_LOOPBACK, true, &["127.0.0.1", "::1"]),
            adapter(14, "Teredo Tunneling Pseudo-Interface", IF_TYPE_TUNNEL, true, &["2001:0:1::5"]),
        ];
        let links = assemble(&adapters, &[ethernet, 12, 14, 12]);
        assert_eq!(super::super::auto_names(&links), ["Ethernet", "Wi-Fi"]);
        assert_eq!(
            links[0].addrs,
            ["198.18.1.2".parse::<IpAddr>().unwrap()],
            "link-local addresses are not used"
        );
        assert!(links[3].up && !links[3].default_route && links[3].addrs.is_empty());
    }

    #[test]
    fn a_link_that_loses_its_default_route_or_goes_down_leaves() {
        let mut adapters = vec![
            adapter(6, "Ethernet", 6, true, &["198.18.1.2"]),
            adapter(12, "Wi-Fi", 71, true, &["198.18.2.2"]),
        ];
        assert_eq!(super::super::auto_names(&assemble(&adapters, &[6, 12])), ["Ethernet", "Wi-Fi"]);
        assert_eq!(super::super::auto_names(&assemble(&adapters, &[6])), ["Ethernet"]);
        adapters[0].oper_status = 2;
        assert_eq!(super::super::auto_names(&assemble(&adapters, &[6, 12])), ["Wi-Fi"]);
        // An IPv6-only default route counts, through the IPv6 index.
        adapters[0].oper_status = OPER_UP;
        adapters[0].ipv6_index = 16;
        assert_eq!(super::super::auto_names(&assemble(&adapters, &[16])), ["Ethernet"]);
    }
}
