//! Network interfaces: index and RX queue count by name (sysfs), for the xdp backend and the
//! AF_XDP load generator, and every address this host has (getifaddrs).

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one of this host's interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddress {
    pub address: IpAddr,
    /// The subnet's broadcast address (IPv4 interfaces that have one).
    pub broadcast: Option<IpAddr>,
}

/// Every address of every interface, lo included.
pub fn addresses() -> io::Result<Vec<HostAddress>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*entry };
        if let Some(address) = sockaddr_ip(ifa.ifa_addr) {
            let broadcast =
                (ifa.ifa_flags & libc::IFF_BROADCAST as libc::c_uint != 0).then(|| sockaddr_ip(ifa.ifa_ifu)).flatten();
            addresses.push(HostAddress { address, broadcast });
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs above, freed once, not used after.
    unsafe { libc::freeifaddrs(list) };
    Ok(addresses)
}

/// The IP address in a `sockaddr` from getifaddrs (None for other families and null pointers).
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and from getifaddrs: a sockaddr whose family says its real type.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The interface's index, or None when there is no such interface.
pub fn index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// How many RX queues the interface has (`/sys/class/net/NAME/queues/rx-*`), at least 1.
pub fn rx_queues(name: &str) -> usize {
    let dir = format!("/sys/class/net/{name}/queues");
    let count = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(0);
    count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert_eq!(index("lo"), Some(1));
        assert_eq!(index("no-such-if0"), None);
        assert_eq!(index("bad\0name"), None);
        assert!(rx_queues("lo") >= 1);
    }

    #[test]
    fn the_host_has_loopback_addresses() {
        let all = addresses().unwrap();
        assert!(all.iter().any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)), "{all:?}");
    }
}
