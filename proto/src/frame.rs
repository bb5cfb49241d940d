//! Raw frames as the AF_XDP path sees them: Ethernet (up to two VLAN tags), IPv4 or IPv6, UDP.
//!
//! [`parse_frame`] decides, without ever reading past the frame, whether a frame is an NTP request
//! for us ([`FrameVerdict::Ntp`], with the offsets of every layer), something for the kernel
//! ([`FrameVerdict::Pass`]: ARP, ICMP, other ports, IP fragments, IPv6 extension headers), or a
//! broken request to our port ([`FrameVerdict::Drop`]). [`write_reply`] turns the same buffer into
//! the reply in place: addresses and ports swapped, lengths set, checksums computed from scratch
//! (a request from a local socket over veth carries only a partial UDP checksum, so nothing is ever
//! derived incrementally from the request's).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::server::respond::DropReason;

const ETH_HEADER: usize = 14;
const VLAN_TAG: usize = 4;
const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
const PROTO_UDP: u8 = 17;
/// TTL / hop limit of replies.
const REPLY_HOPS: u8 = 64;

/// Where each layer of an NTP request frame is, and who sent it.
///
/// Only the source is kept as a [`SocketAddr`] (`respond` needs it for every request); our own
/// address stays in the frame, where [`NtpFrame::destination`] reads it for the rare caller that
/// wants it and [`write_reply`] swaps it with the source in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpFrame {
    /// Offset of the IP header (after Ethernet and any VLAN tags).
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// Length of the UDP payload (from the UDP length field: Ethernet padding excluded).
    pub payload_len: usize,
    /// The request's source address and port (the client). Its family is the frame's.
    pub source: SocketAddr,
}

impl NtpFrame {
    /// Offset of the NTP payload.
    pub const fn payload(&self) -> usize {
        self.l4 + UDP_HEADER
    }

    /// The request's destination address and port (ours), read from the headers of the frame
    /// this was parsed from: before [`write_reply`] turns that frame into the reply, whose
    /// destination is the client. None only for a frame shorter than the one parsed.
    pub fn destination(&self, frame: &[u8]) -> Option<SocketAddr> {
        let port = be16(frame, self.l4 + 2)?;
        Some(match self.source {
            SocketAddr::V4(_) => {
                let ip: [u8; 4] = frame.get(self.l3 + 16..self.l3 + 20)?.try_into().ok()?;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
            }
            SocketAddr::V6(_) => {
                let ip: [u8; 16] = frame.get(self.l3 + 24..self.l3 + 40)?.try_into().ok()?;
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
            }
        })
    }
}

/// What to do with one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameVerdict {
    /// An NTP request to our port: answer it (through `respond`) or count its drop.
    Ntp(NtpFrame),
    /// Not ours: hand it to the kernel untouched.
    Pass,
    /// Addressed to our port but unusable: count and drop.
    Drop(DropReason),
}

/// Classifies a frame. Reads only inside `frame`; every length field is checked against what is
/// really there before it is used.
pub fn parse_frame(frame: &[u8], ntp_port: u16) -> FrameVerdict {
    let Some(mut ethertype) = be16(frame, 12) else { return FrameVerdict::Pass };
    let mut l3 = ETH_HEADER;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let Some(inner) = be16(frame, l3 + 2) else { return FrameVerdict::Pass };
        ethertype = inner;
        l3 += VLAN_TAG;
    }
    // Each family's IP checks, then the UDP checks inlined into each: the family is known there,
    // and the source's `SocketAddr` is built directly from the header's bytes.
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(frame, l3, ntp_port),
        ETHERTYPE_IPV6 => ipv6(frame, l3, ntp_port),
        _ => FrameVerdict::Pass,
    }
}

/// The UDP layer of an IP packet whose UDP header is at `l4` and which ends at `ip_end`: only now
/// do we know whether the frame is for us. `unicast`: whether the IP destination is a unicast
/// address. Returns the source port and the UDP length, or the verdict on a frame that is not a
/// usable request to `ntp_port`.
#[inline(always)]
fn udp(frame: &[u8], l4: usize, ip_end: usize, unicast: bool, ntp_port: u16) -> Result<(u16, usize), FrameVerdict> {
    // Ports and length (the checksum field is never read); a frame that ends before them passes.
    let Some(&[s0, s1, d0, d1, n0, n1]) = frame.get(l4..l4 + 6) else { return Err(FrameVerdict::Pass) };
    if u16::from_be_bytes([d0, d1]) != ntp_port {
        return Err(FrameVerdict::Pass);
    }
    let udp_len = usize::from(u16::from_be_bytes([n0, n1]));
    if udp_len < UDP_HEADER || l4 + udp_len > ip_end {
        return Err(FrameVerdict::Drop(DropReason::Malformed));
    }
    // A broadcast or multicast destination, by IP or by the Ethernet group bit (which also catches
    // subnet-directed broadcasts, whose IP address alone says nothing without the netmask).
    if !unicast || frame[0] & 0x01 != 0 {
        return Err(FrameVerdict::Drop(DropReason::Destination));
    }
    Ok((u16::from_be_bytes([s0, s1]), udp_len))
}

/// IPv4 at `l3`: an unfragmented UDP packet whose header is sound goes on to the UDP checks;
/// anything else passes to the kernel.
#[inline(always)]
fn ipv4(frame: &[u8], l3: usize, ntp_port: u16) -> FrameVerdict {
    let Some(header) = frame.get(l3..l3 + IPV4_MIN_HEADER) else { return FrameVerdict::Pass };
    let Ok(header) = <&[u8; IPV4_MIN_HEADER]>::try_from(header) else { return FrameVerdict::Pass };
    let header_len = usize::from(header[0] & 0x0F) * 4;
    if header[0] >> 4 != 4 || header_len < IPV4_MIN_HEADER {
        return FrameVerdict::Pass;
    }
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x3FFF; // MF flag + offset
    if header[9] != PROTO_UDP || fragment != 0 || total < header_len + UDP_HEADER || l3 + total > frame.len() {
        return FrameVerdict::Pass;
    }
    // A corrupt header goes to the kernel, which drops and counts it. The fixed 20 bytes are
    // summed as three loads; options, when there are any, after them.
    let mut sum = sum_bytes(0, header);
    if header_len > IPV4_MIN_HEADER {
        let Some(options) = frame.get(l3 + IPV4_MIN_HEADER..l3 + header_len) else { return FrameVerdict::Pass };
        sum = sum_bytes(sum, options);
    }
    if fold(sum) != 0xFFFF {
        return FrameVerdict::Pass;
    }
    let destination = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let unicast = !destination.is_broadcast() && !destination.is_multicast() && !destination.is_unspecified();
    let l4 = l3 + header_len;
    match udp(frame, l4, l3 + total, unicast, ntp_port) {
        Ok((port, udp_len)) => FrameVerdict::Ntp(NtpFrame {
            l3,
            l4,
            payload_len: udp_len - UDP_HEADER,
            source: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(header[12], header[13], header[14], header[15]),
                port,
            )),
        }),
        Err(verdict) => verdict,
    }
}

/// IPv6 at `l3`: the fixed header only; extension headers go to the kernel.
#[inline(always)]
fn ipv6(frame: &[u8], l3: usize, ntp_port: u16) -> FrameVerdict {
    let Some(header) = frame.get(l3..l3 + IPV6_HEADER) else { return FrameVerdict::Pass };
    let Ok(header) = <&[u8; IPV6_HEADER]>::try_from(header) else { return FrameVerdict::Pass };
    if header[0] >> 4 != 6 || header[6] != PROTO_UDP {
        return FrameVerdict::Pass;
    }
    let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if payload < UDP_HEADER || l3 + IPV6_HEADER + payload > frame.len() {
        return FrameVerdict::Pass;
    }
    let (source, destination) = ipv6_addresses(header);
    // Not ff00::/8 and not ::, the 16 bytes tested as one number.
    let unicast = destination[0] != 0xFF && u128::from_ne_bytes(destination) != 0;
    let l4 = l3 + IPV6_HEADER;
    match udp(frame, l4, l4 + payload, unicast, ntp_port) {
        Ok((port, udp_len)) => FrameVerdict::Ntp(NtpFrame {
            l3,
            l4,
            payload_len: udp_len - UDP_HEADER,
            source: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(source), port, 0, 0)),
        }),
        Err(verdict) => verdict,
    }
}

/// An IPv6 header's source and destination addresses.
#[inline(always)]
fn ipv6_addresses(header: &[u8; IPV6_HEADER]) -> ([u8; 16], [u8; 16]) {
    let mut source = [0u8; 16];
    let mut destination = [0u8; 16];
    source.copy_from_slice(&header[8..24]);
    destination.copy_from_slice(&header[24..40]);
    (source, destination)
}

/// Rewrites the request frame in `frame` (the frame `parse_frame` returned `parsed` for, its
/// headers unchanged since) into the reply whose NTP payload (of `reply_len` bytes, never more
/// than the request's) `respond` already wrote at `parsed.payload()`. Swaps MAC addresses, IP
/// addresses and ports in place, sets every length, computes the checksums from scratch, and
/// returns the reply frame's length.
pub fn write_reply(frame: &mut [u8], parsed: &NtpFrame, reply_len: usize) -> Option<usize> {
    let reply_len = reply_len.min(parsed.payload_len);
    let udp_len = UDP_HEADER + reply_len;
    let end = parsed.l4 + udp_len;
    if end > frame.len() || frame.len() < ETH_HEADER {
        return None;
    }
    // Ethernet: the request's source becomes the destination.
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    let l3 = parsed.l3;
    let l4 = parsed.l4;
    let udp_len16 = (udp_len as u16).to_be_bytes();
    // Every sum below is in native byte order (see `sum_bytes`); the checksums are stored as
    // `to_ne_bytes` of the folded complement, which is the big-endian checksum. The addresses
    // and ports are read from the request's headers and written back swapped: a swap does not
    // change a ones'-complement sum, so each is summed as it lies.
    let pseudo = match parsed.source {
        SocketAddr::V4(_) => {
            let header = frame.get_mut(l3..l4)?;
            if header.len() < IPV4_MIN_HEADER {
                return None;
            }
            let total = ((header.len() + udp_len) as u16).to_be_bytes();
            // The two addresses as one load: summed once for the IP header and the UDP
            // pseudo-header, and written back with their halves swapped.
            let addresses = u64::from_ne_bytes(header[12..20].try_into().ok()?);
            let address_sum = (addresses & 0xFFFF_FFFF) + (addresses >> 32);
            // The whole reply header's checksum, summed before the header is written: reading
            // back bytes just stored in smaller pieces stalls the load until the stores retire.
            // The words that stay (version to TOS, identification to fragment offset, options),
            // the new length, TTL and protocol, the checksum field as zero, and the addresses.
            let mut sum = address_sum
                + u64::from(u16::from_ne_bytes([header[0], header[1]]))
                + u64::from(u16::from_ne_bytes(total))
                + u64::from(u32::from_ne_bytes([header[4], header[5], header[6], header[7]]))
                + u64::from(u16::from_ne_bytes([REPLY_HOPS, header[9]]));
            if header.len() > IPV4_MIN_HEADER {
                sum = sum_bytes(sum, &header[IPV4_MIN_HEADER..]);
            }
            header[2..4].copy_from_slice(&total);
            header[8] = REPLY_HOPS;
            header[10..12].copy_from_slice(&(!fold(sum)).to_ne_bytes());
            // Rotating by 32 bits swaps the two 4-byte halves in either byte order.
            header[12..20].copy_from_slice(&addresses.rotate_left(32).to_ne_bytes());
            // Pseudo-header: the addresses, zero and protocol, UDP length.
            address_sum + u64::from(u16::from_ne_bytes([0, PROTO_UDP])) + u64::from(u16::from_ne_bytes(udp_len16))
        }
        SocketAddr::V6(_) => {
            let header = frame.get_mut(l3..l3 + IPV6_HEADER)?;
            let header = <&mut [u8; IPV6_HEADER]>::try_from(header).ok()?;
            let addresses: [u8; 32] = header[8..40].try_into().ok()?;
            header[4..6].copy_from_slice(&udp_len16);
            header[7] = REPLY_HOPS;
            header[8..24].copy_from_slice(&addresses[16..]);
            header[24..40].copy_from_slice(&addresses[..16]);
            // Pseudo-header: the addresses, the UDP length as 32 bits, zeros and protocol.
            let small = u64::from(u16::from_ne_bytes(udp_len16)) + u64::from(u16::from_ne_bytes([0, PROTO_UDP]));
            sum_bytes(small, &addresses)
        }
    };
    // The UDP header is built here from the request's ports (swapped: one 32-bit word to sum)
    // and the new length, and summed from its own values, not read back after writing.
    let ports: [u8; 4] = frame.get(l4..l4 + 4)?.try_into().ok()?;
    let udp = u64::from(u32::from_ne_bytes(ports)) + u64::from(u16::from_ne_bytes(udp_len16));
    let sum = add_carry(pseudo, udp);
    let payload = frame.get(l4 + UDP_HEADER..end)?;
    // A basic reply (48 bytes, nearly every reply) is summed as six loads with no loop.
    let sum = match <&[u8; 48]>::try_from(payload) {
        Ok(basic) => sum_bytes(sum, basic),
        Err(_) => sum_bytes(sum, payload),
    };
    let sum = !fold(sum);
    // Zero means "no checksum" in UDP; its ones'-complement twin is sent instead (RFC 768).
    let sum = if sum == 0 { 0xFFFF } else { sum };
    let [s0, s1, d0, d1] = ports;
    let [l0, l1] = udp_len16;
    let [c0, c1] = sum.to_ne_bytes();
    frame.get_mut(l4..l4 + UDP_HEADER)?.copy_from_slice(&[d0, d1, s0, s1, l0, l1, c0, c1]);
    Some(end)
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`. Each part but the last
/// must have even length (true of every header and pseudo-header field here).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let sum = parts.iter().fold(0, |sum, part| sum_bytes(sum, part));
    u16::from_be(!fold(sum))
}

/// Adds `bytes` to a ones'-complement sum kept in native byte order in 64 bits (end-around carry).
///
/// RFC 1071 section 2: the sum of 16-bit words is independent of byte order (summing byte-swapped
/// words gives the byte-swapped sum), and words may be added in any width (2^16 is 1 modulo
/// 0xFFFF, and 0xFFFF divides 2^64 - 1, so a 64-bit end-around-carry sum folds to the same 16 bits
/// as the word-by-word one). So the bytes are loaded as they lie, eight at a time, with no byte
/// swap per word; [`fold`] gives the folded sum in native order, whose `to_ne_bytes` are the
/// big-endian sum's bytes. `bytes` must start at an even offset of the summed stream; an odd last
/// byte is the high byte of a word padded with zero (as the RFC pads).
#[inline(always)]
fn sum_bytes(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        sum = add_carry(sum, u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    }
    let mut rest = words.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        sum = add_carry(sum, u64::from(u32::from_ne_bytes([*a, *b, *c, *d])));
        rest = tail;
    }
    if let [a, b, tail @ ..] = rest {
        sum = add_carry(sum, u64::from(u16::from_ne_bytes([*a, *b])));
        rest = tail;
    }
    if let [a] = rest {
        sum = add_carry(sum, u64::from(u16::from_ne_bytes([*a, 0])));
    }
    sum
}

/// `sum + x` with the carry out of bit 63 added back in (ones'-complement addition).
#[inline(always)]
fn add_carry(sum: u64, x: u64) -> u64 {
    let (s, carry) = sum.overflowing_add(x);
    s + u64::from(carry)
}

/// Folds a 64-bit ones'-complement sum to 16 bits in a fixed number of steps (no loop on the
/// data). Adding a word to itself rotated by half its width puts the sum of its halves, with the
/// carry out of the low half added back (the end-around carry), in its high half: 64 -> 32 -> 16.
#[inline(always)]
fn fold(sum: u64) -> u16 {
    let sum = (sum.wrapping_add(sum.rotate_right(32)) >> 32) as u32;
    (sum.wrapping_add(sum.rotate_right(16)) >> 16) as u16
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some([hi, lo]) => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::NtpPacket;
    use crate::time::NtpTimestamp;
    use core::net::IpAddr;
    use proptest::prelude::*;

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// Builds a request frame the way a NIC would deliver it (UDP checksum left at `udp_sum`).
    fn frame(src: SocketAddr, dst: SocketAddr, vlans: usize, payload: &[u8], udp_sum: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(OUR_MAC);
        f.extend(CLIENT_MAC);
        for _ in 0..vlans {
            f.extend(ETHERTYPE_VLAN.to_be_bytes());
            f.extend([0x00, 0x2A]);
        }
        let udp_len = (UDP_HEADER + payload.len()) as u16;
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(ETHERTYPE_IPV4.to_be_bytes());
                let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, PROTO_UDP, 0, 0];
                ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
                ip.extend(s.octets());
                ip.extend(d.octets());
                let sum = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend(ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(ETHERTYPE_IPV6.to_be_bytes());
                f.extend([0x60, 0, 0, 0]);
                f.extend(udp_len.to_be_bytes());
                f.extend([PROTO_UDP, 64]);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            _ => unreachable!(),
        }
        f.extend(src.port().to_be_bytes());
        f.extend(dst.port().to_be_bytes());
        f.extend(udp_len.to_be_bytes());
        f.extend(udp_sum.to_be_bytes());
        f.extend(payload);
        f
    }

    fn request() -> [u8; 48] {
        NtpPacket::client_request(4, NtpTimestamp::from_bits(0xABCD)).to_bytes()
    }

    fn v4(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    /// Verifies a frame's checksums as a receiving host would.
    fn checksums_ok(f: &[u8], p: &NtpFrame) -> bool {
        let udp_len = UDP_HEADER + p.payload_len;
        let segment = &f[p.l4..p.l4 + udp_len];
        let Some(destination) = p.destination(f) else { return false };
        let udp = match (p.source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                checksum(&[&s.octets(), &d.octets(), &[0, PROTO_UDP], &(udp_len as u16).to_be_bytes(), segment])
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                checksum(&[&s.octets(), &d.octets(), &(udp_len as u32).to_be_bytes(), &[0, 0, 0, PROTO_UDP], segment])
            }
            _ => 1,
        };
        let ip_ok = match p.source {
            SocketAddr::V4(_) => checksum(&[&f[p.l3..p.l4]]) == 0,
            SocketAddr::V6(_) => true,
        };
        udp == 0 && ip_ok
    }

    #[test]
    fn ipv4_request_is_ours_and_the_reply_is_its_mirror() {
        let (client, us) = (v4("192.0.2.10:40000"), v4("198.51.100.1:123"));
        let mut f = frame(client, us, 0, &request(), 0xBEEF); // a partial (wrong) UDP checksum
        let FrameVerdict::Ntp(p) = parse_frame(&f, 123) else { panic!("{:?}", parse_frame(&f, 123)) };
        assert_eq!((p.source, p.destination(&f), p.payload_len, p.l3, p.l4), (client, Some(us), 48, 14, 34));
        assert_eq!(p.destination(&f[..p.l4 + 3]), None, "a frame cut short: no destination, no panic");
        let len = write_reply(&mut f, &p, 48).unwrap();
        assert_eq!(len, f.len());
        assert_eq!((&f[0..6], &f[6..12]), (&CLIENT_MAC[..], &OUR_MAC[..]));
        // The reply parses as a frame from us to the client, with correct checksums.
        let FrameVerdict::Ntp(r) = parse_frame(&f, 40000) else { panic!("reply does not parse") };
        assert_eq!((r.source, r.destination(&f)), (us, Some(client)));
        assert!(checksums_ok(&f, &r));
    }

    #[test]
    fn ipv6_with_two_vlan_tags() {
        let (client, us) = ("[2001:db8::10]:40000".parse().unwrap(), "[2001:db8::1]:123".parse().unwrap());
        let mut f = frame(client, us, 2, &request(), 0);
        let FrameVerdict::Ntp(p) = parse_frame(&f, 123) else { panic!() };
        assert_eq!((p.l3, p.l4), (22, 62));
        write_reply(&mut f, &p, 48).unwrap();
        let FrameVerdict::Ntp(r) = parse_frame(&f, 40000) else { panic!() };
        assert_eq!((r.source, r.destination(&f)), (us, Some(client)));
        assert!(checksums_ok(&f, &r));
    }

    #[test]
    fn row17_odd_ip_headers() {
        let (client, us) = (v4("192.0.2.10:40000"), v4("198.51.100.1:123"));
        let good = frame(client, us, 0, &request(), 0);
        // Total length past the frame: pass (never read past it).
        let mut f = good.clone();
        f[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Pass);
        // A fragment (MF set) goes to the kernel to reassemble.
        let mut f = good.clone();
        f[20] |= 0x20;
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Pass);
        // A broken header checksum goes to the kernel.
        let mut f = good.clone();
        f[24] ^= 0xFF;
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Pass);
        // UDP length beyond the IP packet: ours, malformed.
        let mut f = good.clone();
        f[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Drop(DropReason::Malformed));
        // Ethernet padding after the packet is ignored: the payload length comes from UDP.
        let mut f = good.clone();
        f.extend([0u8; 20]);
        let FrameVerdict::Ntp(p) = parse_frame(&f, 123) else { panic!() };
        assert_eq!(p.payload_len, 48);
    }

    #[test]
    fn row17_ipv4_options_are_parsed() {
        let (client, us) = (v4("192.0.2.10:40000"), v4("198.51.100.1:123"));
        let good = frame(client, us, 0, &request(), 0);
        // Rebuild with IHL 6 (4 bytes of options).
        let mut f = good[..14].to_vec();
        let mut ip = good[14..34].to_vec();
        ip[0] = 0x46;
        ip[2..4].copy_from_slice(&((24 + 8 + 48) as u16).to_be_bytes());
        ip[10..12].fill(0);
        ip.extend([1, 1, 1, 1]); // NOP options
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend(ip);
        f.extend(&good[34..]);
        let FrameVerdict::Ntp(p) = parse_frame(&f, 123) else { panic!("{:?}", parse_frame(&f, 123)) };
        assert_eq!(p.l4, 38);
        write_reply(&mut f, &p, 48).unwrap();
        let FrameVerdict::Ntp(r) = parse_frame(&f, 40000) else { panic!() };
        assert!(checksums_ok(&f, &r));
    }

    #[test]
    fn row17_ipv6_extension_headers_go_to_the_kernel() {
        let (client, us) = ("[2001:db8::10]:40000".parse().unwrap(), "[2001:db8::1]:123".parse().unwrap());
        let mut f = frame(client, us, 0, &request(), 0);
        f[14 + 6] = 0; // next header: hop-by-hop options
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Pass);
    }

    #[test]
    fn row21_broadcast_and_multicast_destinations_get_no_reply() {
        let f = frame(v4("192.0.2.10:40000"), v4("255.255.255.255:123"), 0, &request(), 0);
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Drop(DropReason::Destination));
        let f = frame(v4("192.0.2.10:40000"), v4("224.0.1.1:123"), 0, &request(), 0);
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Drop(DropReason::Destination));
        let f = frame("[2001:db8::10]:1".parse().unwrap(), "[ff02::101]:123".parse().unwrap(), 0, &request(), 0);
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Drop(DropReason::Destination));
        // A subnet-directed broadcast (192.0.2.255 on a /24) looks unicast by its IP address; its
        // Ethernet destination gives it away.
        let mut f = frame(v4("192.0.2.10:40000"), v4("192.0.2.255:123"), 0, &request(), 0);
        assert!(matches!(parse_frame(&f, 123), FrameVerdict::Ntp(_)));
        f[..6].fill(0xFF);
        assert_eq!(parse_frame(&f, 123), FrameVerdict::Drop(DropReason::Destination));
    }

    #[test]
    fn row22_other_traffic_passes_untouched() {
        let (client, us) = (v4("192.0.2.10:40000"), v4("198.51.100.1:22"));
        assert_eq!(parse_frame(&frame(client, us, 0, &request(), 0), 123), FrameVerdict::Pass, "other port");
        let mut arp = vec![0xFFu8; 6];
        arp.extend(CLIENT_MAC);
        arp.extend([0x08, 0x06]);
        arp.extend([0u8; 28]);
        assert_eq!(parse_frame(&arp, 123), FrameVerdict::Pass, "ARP");
        let mut icmp = frame(v4("192.0.2.10:40000"), v4("198.51.100.1:123"), 0, &request(), 0);
        icmp[23] = 1;
        let sum_at = 24;
        icmp[sum_at..sum_at + 2].fill(0);
        let sum = checksum(&[&icmp[14..34]]);
        icmp[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_frame(&icmp, 123), FrameVerdict::Pass, "ICMP");
        assert_eq!(parse_frame(&[], 123), FrameVerdict::Pass);
        assert_eq!(parse_frame(&[0u8; 13], 123), FrameVerdict::Pass);
    }

    #[test]
    fn checksum_known_values() {
        // RFC 1071's example words.
        assert_eq!(checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), !0xddf2);
        assert_eq!(checksum(&[&[0x00, 0x01], &[0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), !0xddf2);
        assert_eq!(checksum(&[&[0xAB]]), !0xAB00);
        // The widely published IPv4 header example: 192.168.0.1 -> 192.168.0.199, checksum b861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&header]), 0xb861);
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(checksum(&[&header]), 0);
    }

    /// RFC 1071 word by word, as the RFC's own example code does it.
    fn reference_checksum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut sum: u32 = 0;
        for w in bytes.chunks(2) {
            sum += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest! {
        #[test]
        fn checksum_matches_rfc_1071(
            head in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20usize).prop_map(|mut v| { v.truncate(v.len() & !1); v }), 0..4usize),
            last in proptest::collection::vec(any::<u8>(), 0..1500usize),
        ) {
            let mut parts: Vec<&[u8]> = head.iter().map(Vec::as_slice).collect();
            parts.push(&last);
            prop_assert_eq!(checksum(&parts), reference_checksum(&parts));
        }

        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), port in any::<u16>()) {
            let mut f = bytes.clone();
            if let FrameVerdict::Ntp(p) = parse_frame(&f, port) {
                prop_assert!(p.payload() + p.payload_len <= f.len());
                let len = write_reply(&mut f, &p, p.payload_len);
                prop_assert!(len.is_some_and(|l| l <= bytes.len()));
            }
        }

        #[test]
        fn any_one_bit_flipped_in_an_ipv4_header_passes_to_the_kernel(
            a in any::<[u8; 4]>(), option_words in 0usize..=10, options in any::<[u8; 40]>(), bit in any::<usize>(),
        ) {
            let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), 40000);
            let good = frame(client, v4("198.51.100.1:123"), 0, &request(), 0);
            // Rebuild with IHL 5 + option_words (random option bytes, summed with the rest).
            let ihl = 5 + option_words;
            let mut f = good[..14].to_vec();
            let mut ip = good[14..34].to_vec();
            ip[0] = 0x40 | ihl as u8;
            ip[2..4].copy_from_slice(&((ihl * 4 + 8 + 48) as u16).to_be_bytes());
            ip[10..12].fill(0);
            ip.extend(&options[..option_words * 4]);
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend(ip);
            f.extend(&good[34..]);
            prop_assert!(matches!(parse_frame(&f, 123), FrameVerdict::Ntp(_)), "{:?}", parse_frame(&f, 123));
            // One bit changes the sum by 2^k, never a multiple of 0xFFFF: the header is corrupt.
            let bit = bit % (ihl * 32);
            f[14 + bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(parse_frame(&f, 123), FrameVerdict::Pass);
        }

        #[test]
        fn every_reply_has_correct_checksums(
            a in any::<[u8; 4]>(), b in any::<[u8; 16]>(), sport in 1u16.., vlans in 0usize..3, bogus_sum in any::<u16>(), extra in 0usize..64,
        ) {
            let mut payload = request().to_vec();
            payload.extend(vec![0u8; extra * 4]);
            let c4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), sport);
            let c6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), sport);
            for (client, us) in [(c4, v4("198.51.100.1:123")), (c6, "[2001:db8::1]:123".parse().unwrap())] {
                if client.ip().is_multicast() || client.ip().is_unspecified() || client.ip() == Ipv4Addr::BROADCAST {
                    continue; // the reply would be addressed to no one in particular
                }
                let mut f = frame(client, us, vlans, &payload, bogus_sum);
                let FrameVerdict::Ntp(p) = parse_frame(&f, 123) else { return Ok(()) }; // e.g. a multicast client
                let len = write_reply(&mut f, &p, 48).unwrap();
                prop_assert!(len <= f.len());
                let FrameVerdict::Ntp(r) = parse_frame(&f[..len], sport) else { return Err(TestCaseError::fail("reply does not parse")) };
                prop_assert_eq!((r.source, r.destination(&f[..len]), r.payload_len), (us, Some(client), 48));
                prop_assert!(checksums_ok(&f[..len], &r));
            }
        }
    }
}
