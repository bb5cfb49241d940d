//! Ancillary data (cmsg) read and written as plain bytes, without pointer casts.
//!
//! Linux x86-64/aarch64 layout: `struct cmsghdr { size_t len; int level; int type; }` (16 bytes),
//! data at the next 8-byte boundary, each message padded to 8 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use stratum_proto::NtpTimestamp;

use stratum_host::clock;

const WORD: usize = std::mem::size_of::<usize>();
const HEADER: usize = align(WORD + 8);

const fn align(len: usize) -> usize {
    (len + WORD - 1) & !(WORD - 1)
}

/// Space a control message with `data` bytes takes in a buffer (CMSG_SPACE).
pub const fn space(data: usize) -> usize {
    HEADER + align(data)
}

/// `struct scm_timestamping`: three timespecs (software, legacy, raw hardware).
const TIMESTAMPING_LEN: usize = 3 * 16;
const IN_PKTINFO_LEN: usize = 12;
const IN6_PKTINFO_LEN: usize = 20;
/// SO_RXQ_OVFL: the socket's cumulative count of datagrams dropped for want of buffer space.
const RXQ_OVFL_LEN: usize = 4;

/// Room for everything we ask the kernel for on receive.
pub const RECV_SPACE: usize = space(TIMESTAMPING_LEN) + space(IN6_PKTINFO_LEN) + space(RXQ_OVFL_LEN);
/// Room for what we attach on send: the source address and a transmit-stamp request.
pub const SEND_SPACE: usize = space(IN6_PKTINFO_LEN) + space(TX_FLAGS_LEN);
/// SO_TIMESTAMPING on send: the recording flags (a u32) for this one datagram.
const TX_FLAGS_LEN: usize = 4;

/// The local address a datagram was sent to (IP_PKTINFO / IPV6_PKTINFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The destination address in the IP header.
    pub destination: IpAddr,
    /// The local address the kernel would answer from (IPv4 only; equals `destination` for unicast).
    pub local: IpAddr,
    pub interface: u32,
}

impl PacketInfo {
    /// Broadcast and multicast requests get no answer (BAD_INPUTS row 21). For IPv4 the kernel's
    /// chosen local address differs from the header's destination exactly when it was not ours
    /// alone (subnet-directed broadcast).
    pub fn is_unicast(&self) -> bool {
        match self.destination {
            IpAddr::V4(d) => !d.is_multicast() && !d.is_broadcast() && self.local == self.destination,
            IpAddr::V6(d) => !d.is_multicast(),
        }
    }
}

/// What one datagram's control messages told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvInfo {
    pub software_stamp: Option<NtpTimestamp>,
    pub hardware_stamp: Option<NtpTimestamp>,
    pub packet_info: Option<PacketInfo>,
    /// Datagrams this socket has dropped so far (a wrapping 32-bit count), when the kernel says.
    pub socket_drops: Option<u32>,
}

impl RecvInfo {
    /// The best receive stamp we have: hardware, then kernel software.
    pub fn rx_stamp(&self) -> Option<NtpTimestamp> {
        self.hardware_stamp.or(self.software_stamp)
    }
}

/// Parses a control buffer as the kernel filled it. Unknown or truncated messages are skipped.
pub fn parse(buf: &[u8]) -> RecvInfo {
    let mut info = RecvInfo::default();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + HEADER) {
        let len = read_usize(&header[..WORD]);
        let level = read_i32(&header[WORD..WORD + 4]);
        let kind = read_i32(&header[WORD + 4..WORD + 8]);
        if len < HEADER {
            break;
        }
        let Some(data) = buf.get(at + HEADER..at + len) else {
            break;
        };
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPING) if data.len() >= TIMESTAMPING_LEN => {
                info.software_stamp = timespec(&data[0..16]);
                info.hardware_stamp = timespec(&data[32..48]);
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if data.len() >= RXQ_OVFL_LEN => {
                info.socket_drops = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= IN_PKTINFO_LEN => {
                let local = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
                let destination = Ipv4Addr::new(data[8], data[9], data[10], data[11]);
                info.packet_info = Some(PacketInfo {
                    destination: destination.into(),
                    local: local.into(),
                    interface: read_i32(&data[0..4]) as u32,
                });
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= IN6_PKTINFO_LEN => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&data[..16]);
                let addr = Ipv6Addr::from(octets);
                info.packet_info = Some(PacketInfo {
                    destination: addr.into(),
                    local: addr.into(),
                    interface: read_i32(&data[16..20]) as u32,
                });
            }
            _ => {}
        }
        at += align(len);
    }
    info
}

/// Writes the control message that makes a reply leave from the address the request came to.
/// Returns the number of bytes used (0 if `out` is too small).
pub fn write_source(out: &mut [u8], info: &PacketInfo) -> usize {
    let (level, kind, data_len) = match info.local {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO, IN_PKTINFO_LEN),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, IN6_PKTINFO_LEN),
    };
    let total = space(data_len);
    let Some(msg) = out.get_mut(..total) else {
        return 0;
    };
    msg.fill(0);
    msg[..WORD].copy_from_slice(&(HEADER + data_len).to_ne_bytes());
    msg[WORD..WORD + 4].copy_from_slice(&level.to_ne_bytes());
    msg[WORD + 4..WORD + 8].copy_from_slice(&kind.to_ne_bytes());
    let data = &mut msg[HEADER..];
    match info.local {
        IpAddr::V4(local) => {
            // in_pktinfo { ifindex, spec_dst, addr }: the kernel sends from spec_dst.
            data[0..4].copy_from_slice(&0i32.to_ne_bytes());
            data[4..8].copy_from_slice(&local.octets());
        }
        IpAddr::V6(local) => {
            data[..16].copy_from_slice(&local.octets());
            // The interface matters for link-local addresses.
            data[16..20].copy_from_slice(&info.interface.to_ne_bytes());
        }
    }
    total
}

/// Writes the control message that asks the kernel to stamp this one datagram as it leaves
/// (SO_TIMESTAMPING with `flags`, e.g. SOF_TIMESTAMPING_TX_SOFTWARE); the stamp comes back on
/// the socket's error queue. Returns the bytes used (0 if `out` is too small).
pub fn write_tx_stamp_request(out: &mut [u8], flags: u32) -> usize {
    let total = space(TX_FLAGS_LEN);
    let Some(msg) = out.get_mut(..total) else {
        return 0;
    };
    msg.fill(0);
    msg[..WORD].copy_from_slice(&(HEADER + TX_FLAGS_LEN).to_ne_bytes());
    msg[WORD..WORD + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    msg[WORD + 4..WORD + 8].copy_from_slice(&libc::SO_TIMESTAMPING.to_ne_bytes());
    msg[HEADER..HEADER + TX_FLAGS_LEN].copy_from_slice(&flags.to_ne_bytes());
    total
}

fn timespec(b: &[u8]) -> Option<NtpTimestamp> {
    let secs = i64::from_ne_bytes(b[0..8].try_into().ok()?);
    let nanos = i64::from_ne_bytes(b[8..16].try_into().ok()?);
    (secs != 0 || nanos != 0).then(|| clock::from_timespec(secs, nanos))
}

fn read_usize(b: &[u8]) -> usize {
    let mut a = [0u8; WORD];
    a.copy_from_slice(&b[..WORD]);
    usize::from_ne_bytes(a)
}

fn read_i32(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; space(data.len())];
        m[..WORD].copy_from_slice(&(HEADER + data.len()).to_ne_bytes());
        m[WORD..WORD + 4].copy_from_slice(&level.to_ne_bytes());
        m[WORD + 4..WORD + 8].copy_from_slice(&kind.to_ne_bytes());
        m[HEADER..HEADER + data.len()].copy_from_slice(data);
        m
    }

    #[test]
    fn parses_timestamps_and_pktinfo() {
        let mut ts = vec![0u8; 48];
        ts[0..8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        ts[8..16].copy_from_slice(&500_000_000i64.to_ne_bytes());
        let mut buf = message(libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &ts);
        buf.extend(message(libc::IPPROTO_IP, libc::IP_PKTINFO, &[2, 0, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]));
        let info = parse(&buf);
        assert_eq!(info.software_stamp.unwrap().to_unix(1_700_000_000), (1_700_000_000, 500_000_000));
        assert_eq!(info.hardware_stamp, None);
        let pi = info.packet_info.unwrap();
        assert!(pi.is_unicast());
        assert_eq!(pi.interface, 2);
        assert_eq!(info.socket_drops, None);
        buf.extend(message(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &77u32.to_ne_bytes()));
        assert_eq!(parse(&buf).socket_drops, Some(77));
    }

    #[test]
    fn broadcast_and_multicast_are_not_unicast() {
        let bcast = PacketInfo {
            destination: "192.0.2.255".parse().unwrap(),
            local: "192.0.2.1".parse().unwrap(),
            interface: 2,
        };
        assert!(!bcast.is_unicast());
        let mcast =
            PacketInfo { destination: "ff02::101".parse().unwrap(), local: "ff02::101".parse().unwrap(), interface: 2 };
        assert!(!mcast.is_unicast());
    }

    #[test]
    fn truncated_or_garbage_control_data_is_skipped() {
        assert_eq!(parse(&[]), RecvInfo::default());
        assert_eq!(parse(&[0xff; 7]), RecvInfo::default());
        let mut m = message(libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &[0; 48]);
        m.truncate(30);
        assert_eq!(parse(&m), RecvInfo::default());
        let mut zero_len = message(libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &[0; 48]);
        zero_len[..WORD].fill(0);
        assert_eq!(parse(&zero_len), RecvInfo::default());
    }

    #[test]
    fn source_round_trips_through_parse() {
        let mut out = [0u8; SEND_SPACE];
        let v6 = PacketInfo { destination: "::1".parse().unwrap(), local: "::1".parse().unwrap(), interface: 1 };
        let n = write_source(&mut out, &v6);
        assert_eq!(parse(&out[..n]).packet_info, Some(v6));
        let v4 =
            PacketInfo { destination: "127.0.0.1".parse().unwrap(), local: "127.0.0.1".parse().unwrap(), interface: 0 };
        let n = write_source(&mut out, &v4);
        assert_eq!(n, space(IN_PKTINFO_LEN));
        assert_eq!(parse(&out[..n]).packet_info.unwrap().local, v4.local);
    }
}
