//! This host's addresses and the interface's MAC, which the XDP program needs to steer only the
//! requests addressed to us (a router, a bridge or a promiscuous NIC sees other hosts' too), kept
//! in step with the kernel: any netlink address or link event triggers a full re-read
//! (getifaddrs), so no event is parsed and none can be misread; a lost event (ENOBUFS) is one
//! more re-read.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_xdp::program::{LocalAddress, SteeringProgram};

use super::status::XdpStatusReader;

/// How long the watcher waits for an event before it looks at the shutdown flag.
const WAKE_INTERVAL: Duration = Duration::from_millis(200);

/// Every address of every interface (lo included: anycast addresses live there), and the
/// broadcast address of each IPv4 subnet.
pub(super) fn host_addresses() -> io::Result<Vec<LocalAddress>> {
    let mut list = Vec::new();
    for a in stratum_host::netif::addresses()? {
        list.push(LocalAddress::Unicast(a.address));
        if let Some(b) = a.broadcast {
            list.push(LocalAddress::Broadcast(b));
        }
    }
    Ok(list)
}

/// The interface's MAC address (`/sys/class/net/IF/address`).
pub(super) fn interface_mac(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    parse_mac(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{interface} has no Ethernet address")))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Fills the program's table with this host's addresses and the interface's MAC, and switches
/// the "addressed to us" check on. Returns how many addresses it holds.
pub(super) fn sync(program: &SteeringProgram) -> io::Result<usize> {
    let addresses = host_addresses()?;
    program.set_local_addresses(&addresses)?;
    program.set_addressed_to_us(interface_mac(program.interface())?, true)?;
    Ok(addresses.len())
}

/// Re-reads the addresses whenever the kernel reports an address or link change, until shutdown.
pub(super) fn spawn_watcher(reader: Arc<XdpStatusReader>, shutdown: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    let events = subscribe()?;
    std::thread::Builder::new().name("stratumd-addrs".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !shutdown.load(Ordering::Relaxed) {
            // SAFETY: buf is a live buffer of its length; the socket is ours.
            let n = unsafe { libc::recv(events.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let lost = n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS);
            if n <= 0 && !lost {
                continue; // the wake-up timeout (or EINTR): look at the shutdown flag
            }
            drain(&events, &mut buf);
            let synced = reader.with_program(sync);
            match synced {
                Some(Ok(count)) => tracing::info!(addresses = count, "host addresses changed; XDP program updated"),
                Some(Err(e)) => tracing::error!(error = %e, "cannot update the XDP program's host addresses"),
                None => {}
            }
        }
    })
}

/// A netlink route socket subscribed to link and address changes, with a receive timeout.
fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid sockaddr_nl; the fields that matter are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    // SAFETY: addr is a sockaddr_nl of the length given, alive for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let timeout = libc::timeval { tv_sec: 0, tv_usec: WAKE_INTERVAL.as_micros() as libc::suseconds_t };
    // SAFETY: timeout is a timeval alive for the call, of the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads whatever else is queued without waiting: one re-read covers a burst of events.
fn drain(events: &OwnedFd, buf: &mut [u8]) {
    // SAFETY: as in the watcher's recv; MSG_DONTWAIT returns at once when nothing is queued.
    while unsafe { libc::recv(events.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn the_host_has_loopback_and_macs_parse() {
        let addresses = host_addresses().unwrap();
        assert!(addresses.contains(&LocalAddress::Unicast(IpAddr::V4(Ipv4Addr::LOCALHOST))), "{addresses:?}");
        assert_eq!(parse_mac("02:00:0a:ff:10:01"), Some([2, 0, 10, 255, 16, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:10"), None);
        assert_eq!(parse_mac("02:00:0a:ff:10:01:07"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:10:01"), None);
        assert!(interface_mac("no-such-if0").is_err());
    }
}
