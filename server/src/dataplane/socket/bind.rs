//! Opening the listening sockets: SO_REUSEPORT (one socket per worker and address), receive
//! timestamps, and packet info on wildcard addresses so replies leave from the address asked.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use stratum_host::sockopt::set_int;

use crate::config::Timestamping;

/// How long a blocked receive waits before the worker checks for shutdown.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(200);

/// Receive buffer we ask for; bursts at millions of packets per second need room.
const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Binds `addr` once without SO_REUSEPORT and lets go: this fails with EADDRINUSE while any
/// other socket holds the port, a running stratumd's reuse-port group included, which would
/// otherwise let a second instance join the group and take half the traffic (chronyd refuses
/// to start twice; so do we). Port 0 comes back as the free port the kernel chose. Nothing is
/// left behind, so a restart right after a kill -9 (whose sockets the kernel closed) succeeds.
pub fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("bound address is not an IP address"))
}

/// One worker's socket on `addr`, in the reuse-port group every worker of this process joins.
pub fn open(addr: SocketAddr, timestamping: Timestamping) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are separate listeners; never take IPv4 traffic on a v6 socket.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max without privilege.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES);
    socket.set_read_timeout(Some(WAKE_INTERVAL))?;
    enable_timestamping(&socket, timestamping)?;
    // Each datagram then carries the socket's drop count: the kernel-side loss operators must see.
    set_int(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    if addr.ip().is_unspecified() {
        enable_packet_info(&socket, addr)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn enable_timestamping(socket: &Socket, mode: Timestamping) -> io::Result<()> {
    let mut flags = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
    if mode == Timestamping::Hardware {
        flags |= libc::SOF_TIMESTAMPING_RX_HARDWARE | libc::SOF_TIMESTAMPING_RAW_HARDWARE;
    }
    set_int(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags as libc::c_int)
}

fn enable_packet_info(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        set_int(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    } else {
        set_int(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    }
}

/// Asks the NIC driver to timestamp every received packet in hardware (SIOCSHWTSTAMP), and with
/// `tx` the packets we ask a transmit stamp for too.
///
/// The raw hardware stamps are in the NIC clock's timescale: they are only UTC when that clock is
/// kept on the system clock (phc2sys), which is the operator's job and documented as such.
pub fn enable_hardware_rx_stamps(interface: &str, tx: bool) -> io::Result<()> {
    const HWTSTAMP_TX_OFF: libc::c_int = 0;
    const HWTSTAMP_TX_ON: libc::c_int = 1;
    const HWTSTAMP_FILTER_ALL: libc::c_int = 1;
    const HWTSTAMP_FILTER_NTP_ALL: libc::c_int = 15;
    #[repr(C)]
    struct HwTstampConfig {
        flags: libc::c_int,
        tx_type: libc::c_int,
        rx_filter: libc::c_int,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut HwTstampConfig,
        _pad: [u8; 16],
    }
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ || interface.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name `{interface}`")));
    }
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    let mut last = io::Error::from(io::ErrorKind::Unsupported);
    for filter in [HWTSTAMP_FILTER_ALL, HWTSTAMP_FILTER_NTP_ALL] {
        let mut config =
            HwTstampConfig { flags: 0, tx_type: if tx { HWTSTAMP_TX_ON } else { HWTSTAMP_TX_OFF }, rx_filter: filter };
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: &mut config, _pad: [0; 16] };
        for (dst, src) in req.name.iter_mut().zip(interface.bytes()) {
            *dst = src as libc::c_char;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: `req` is a properly laid out ifreq whose data pointer refers to `config`, both
        // alive across the call.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSHWTSTAMP as _, &mut req) };
        if rc == 0 {
            return Ok(());
        }
        last = io::Error::last_os_error();
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_share_a_port() {
        let a = open("127.0.0.1:0".parse().unwrap(), Timestamping::Software).unwrap();
        let addr = a.local_addr().unwrap().as_socket().unwrap();
        let b = open(addr, Timestamping::Software).unwrap();
        assert_eq!(b.local_addr().unwrap().as_socket().unwrap(), addr);
    }

    #[test]
    fn hardware_stamps_on_a_missing_interface_fail_cleanly() {
        assert!(enable_hardware_rx_stamps("no-such-if0", false).is_err());
        assert!(enable_hardware_rx_stamps("", true).is_err());
        assert!(enable_hardware_rx_stamps("lo", false).is_err(), "loopback has no hardware clock");
    }
}
