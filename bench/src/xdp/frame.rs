//! The raw frames of the AF_XDP engine: Ethernet + IPv4 or IPv6 + UDP + a 48-byte NTP request
//! from a simulated client network, and the checks on a reply frame. Pure: no IO, no clock.
//!
//! A [`RequestTemplate`] is built once; a frame is the template with four fields changed (client
//! address, IPv4 header checksum, transmit timestamp, UDP checksum), the checksums updated from
//! precomputed sums rather than summed again. A reply is read with stratum-proto's
//! [`parse_frame`] (the same parser stratumd's AF_XDP backend uses) and its UDP checksum checked,
//! as the kernel would before a socket saw it.
//!
//! With NTS (`load --nts-ke`) a template holds an NTS request instead ([`RequestTemplate::nts`]):
//! per request the unique identifier's last 8 bytes and the authenticator's tag change too (the
//! request is sealed again, [`crate::nts::restamp`]), and their words join the UDP checksum's
//! varying part.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use stratum_proto::client::TRANSMIT_AT;
use stratum_proto::frame::{checksum, parse_frame, FrameVerdict};
use stratum_proto::nts::TAG_LEN;
use stratum_proto::packet::HEADER_LEN;

use crate::engine::book::REQUEST;

const ETH: usize = 14;
const IPV4: usize = 20;
const IPV6: usize = 40;
const UDP: usize = 8;
const PROTO_UDP: u8 = 17;
/// The longest request frame (IPv6): 14 + 40 + 8 + 48 bytes.
pub const MAX_FRAME: usize = ETH + IPV6 + UDP + HEADER_LEN;

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let mut mac = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!("expected a MAC address like 02:00:00:00:00:01, got {s:?}"));
        }
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(format!("expected a MAC address like 02:00:00:00:00:01, got {s:?}"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("not a MAC address: {s:?}"))?;
        }
        let mac = MacAddr(mac);
        if mac.0 == [0; 6] || mac.0[0] & 1 != 0 {
            return Err(format!("{s} is not a unicast MAC address"));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Most simulated clients one run may rotate over.
pub const MAX_CLIENTS: u32 = 1 << 24;

/// The simulated client network (`--client-net`): its clients are its addresses from the first
/// after the network address on (never the network or, for IPv4, the broadcast address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientNet {
    network: IpAddr,
    prefix: u8,
}

impl ClientNet {
    /// The default for a target of this family: 10.200.0.0/16 or fd00:5354:c1::/64.
    pub fn default_for(target: IpAddr) -> Self {
        match target {
            IpAddr::V4(_) => Self { network: Ipv4Addr::new(10, 200, 0, 0).into(), prefix: 16 },
            IpAddr::V6(_) => Self { network: Ipv6Addr::new(0xfd00, 0x5354, 0xc1, 0, 0, 0, 0, 0).into(), prefix: 64 },
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// How many client addresses the network holds.
    pub fn capacity(&self) -> u64 {
        let host_bits = if self.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        let all = if host_bits >= 64 { u64::MAX } else { 1u64 << host_bits };
        // Less the network address (and the IPv4 broadcast address).
        all.saturating_sub(if self.is_ipv4() { 2 } else { 1 })
    }

    /// Client `k` (0-based): the network address + 1 + k, as a number (IPv4 in the low 32 bits).
    pub fn client(&self, k: u32) -> u128 {
        addr_bits(self.network) + 1 + u128::from(k)
    }
}

impl FromStr for ClientNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("expected ADDR/PREFIX, got {s:?}"))?;
        let network: IpAddr = addr.parse().map_err(|_| format!("not an IP address: {addr:?}"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("not a prefix length: {prefix:?}"))?;
        let (width, max_prefix) = if network.is_ipv4() { (32, 30) } else { (128, 127) };
        if prefix > max_prefix {
            return Err(format!("--client-net /{prefix} holds no client (at most /{max_prefix})"));
        }
        let bits = addr_bits(network);
        let host_bits = width - u32::from(prefix);
        let host_mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        if bits & host_mask != 0 {
            return Err(format!("--client-net {s} has host bits set"));
        }
        let unusable = match network {
            IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.is_loopback() || v4.is_unspecified(),
            IpAddr::V6(v6) => v6.is_multicast() || v6.is_loopback() || v6.is_unspecified(),
        };
        if unusable {
            return Err(format!("--client-net {s} is not a unicast network"));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address a client number stands for, in the family of `net`.
pub fn client_ip(net: &ClientNet, bits: u128) -> IpAddr {
    if net.is_ipv4() {
        Ipv4Addr::from(bits as u32).into()
    } else {
        Ipv6Addr::from(bits).into()
    }
}

/// One generator thread's share of the clients: `count` of them from client `first` on, used
/// round-robin, one per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRotation {
    base: u128,
    count: u32,
    next: u32,
}

impl ClientRotation {
    pub fn new(net: &ClientNet, first: u32, count: u32) -> Self {
        Self { base: net.client(first), count: count.max(1), next: 0 }
    }

    /// The next request's client address (as a number; see [`ClientNet::client`]).
    #[inline]
    pub fn next_client(&mut self) -> u128 {
        let c = self.base + u128::from(self.next);
        self.next += 1;
        if self.next == self.count {
            self.next = 0;
        }
        c
    }
}

/// A prebuilt request frame and the partial checksums of its fixed part.
#[derive(Clone, Debug)]
pub struct RequestTemplate {
    bytes: Vec<u8>,
    len: usize,
    ipv4: bool,
    /// Where the client (source) address, the checksums and the transmit timestamp go.
    source_at: usize,
    ip_checksum_at: usize,
    udp_checksum_at: usize,
    transmit_at: usize,
    /// Ones'-complement sums (folded) of the IPv4 header and of the UDP pseudo-header + datagram,
    /// each with the source address, the checksum and the transmit timestamp zero.
    ip_sum: u16,
    udp_sum: u16,
    /// An NTS request ([`RequestTemplate::nts`]): where its NTP payload starts.
    nts_payload_at: Option<usize>,
}

/// The longest NTS request a template takes (`load --nts-ke`): an AF_XDP frame holds it.
pub const MAX_NTS_REQUEST: usize = 1024;

impl RequestTemplate {
    /// A request from `client_port` of a client (filled in per frame) to `target`, from
    /// `src_mac` to `dst_mac`. `target` is IPv4 or IPv6; the client network must be the same
    /// family (checked by the caller).
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, target: SocketAddr, client_port: u16) -> Self {
        Self::build(src_mac, dst_mac, target, client_port, &REQUEST, false)
    }

    /// As [`new`](Self::new), for the NTS request `request` made by [`crate::nts::request`]
    /// (16-byte nonce): stamped with [`stamp_nts`](Self::stamp_nts). None if it is longer than
    /// [`MAX_NTS_REQUEST`] or its authenticator's tag does not start on a 16-bit word of the
    /// datagram (a cookie of odd length).
    pub fn nts(
        src_mac: MacAddr,
        dst_mac: MacAddr,
        target: SocketAddr,
        client_port: u16,
        request: &[u8],
    ) -> Option<Self> {
        let ok = request.len() <= MAX_NTS_REQUEST && request.len() >= crate::nts::UID_AT + 32 + TAG_LEN;
        (ok && request.len() % 2 == 0).then(|| Self::build(src_mac, dst_mac, target, client_port, request, true))
    }

    fn build(
        src_mac: MacAddr,
        dst_mac: MacAddr,
        target: SocketAddr,
        client_port: u16,
        request: &[u8],
        nts: bool,
    ) -> Self {
        let mut b = vec![0u8; ETH + IPV6 + UDP + request.len()];
        b[0..6].copy_from_slice(&dst_mac.0);
        b[6..12].copy_from_slice(&src_mac.0);
        let udp_len = (UDP + request.len()) as u16;
        let (l4, source_at, ip_checksum_at, ipv4) = match target.ip() {
            IpAddr::V4(dst) => {
                b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                let ip = &mut b[ETH..ETH + IPV4];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&(IPV4 as u16 + udp_len).to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = 64;
                ip[9] = PROTO_UDP;
                ip[16..20].copy_from_slice(&dst.octets());
                (ETH + IPV4, ETH + 12, ETH + 10, true)
            }
            IpAddr::V6(dst) => {
                b[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
                let ip = &mut b[ETH..ETH + IPV6];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
                ip[6] = PROTO_UDP;
                ip[7] = 64;
                ip[24..40].copy_from_slice(&dst.octets());
                (ETH + IPV6, ETH + 8, 0, false)
            }
        };
        b[l4..l4 + 2].copy_from_slice(&client_port.to_be_bytes());
        b[l4 + 2..l4 + 4].copy_from_slice(&target.port().to_be_bytes());
        b[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
        let payload = l4 + UDP;
        let len = payload + request.len();
        b[payload..len].copy_from_slice(request);
        // What varies per request is zero in the sums: the transmit timestamp, and for NTS the
        // unique identifier's last 8 bytes and the tag.
        b[payload + TRANSMIT_AT..payload + HEADER_LEN].fill(0);
        if nts {
            let uid_tail = payload + crate::nts::UID_AT + 24;
            b[uid_tail..uid_tail + 8].fill(0);
            b[len - TAG_LEN..len].fill(0);
        }
        b.truncate(len);

        // `checksum` returns the complement of the folded sum: complementing again gives the sum.
        let ip_sum = if ipv4 { !checksum(&[&b[ETH..ETH + IPV4]]) } else { 0 };
        let udp = &b[l4..len];
        let udp_sum = match target.ip() {
            IpAddr::V4(dst) => !checksum(&[&dst.octets(), &[0, PROTO_UDP], &udp_len.to_be_bytes(), udp]),
            IpAddr::V6(dst) => {
                !checksum(&[&dst.octets(), &u32::from(udp_len).to_be_bytes(), &[0, 0, 0, PROTO_UDP], udp])
            }
        };
        Self {
            bytes: b,
            len,
            ipv4,
            source_at,
            ip_checksum_at,
            udp_checksum_at: l4 + 6,
            transmit_at: payload + TRANSMIT_AT,
            ip_sum,
            udp_sum,
            nts_payload_at: nts.then_some(payload),
        }
    }

    /// The frame's length (90 bytes for IPv4, 110 for IPv6; longer for NTS).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole template, written once into every transmit frame before the run.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Turns `frame` (already holding [`bytes`](Self::bytes)) into the request of `client` with
    /// `transmit`: only the varying fields are written, the checksums from the precomputed sums.
    #[inline]
    pub fn stamp(&self, frame: &mut [u8], client: u128, transmit: [u8; 8]) {
        self.stamp_with(frame, client, transmit, 0);
    }

    /// As [`stamp`](Self::stamp), with the origin and receive fields too (`load --interleaved`):
    /// `fields` is bytes 24..48 of the NTP header. A load that stamps so must do it for every
    /// request (zeros for a basic one): the frames are reused.
    pub fn stamp_fields(&self, frame: &mut [u8], client: u128, fields: &[u8; 24]) {
        let at = self.transmit_at - 16;
        frame[at..at + 16].copy_from_slice(&fields[..16]);
        let transmit = fields[16..].try_into().expect("8 bytes");
        self.stamp_with(frame, client, transmit, sum_words(&fields[..16]));
    }

    /// Turns `frame` (holding the [`bytes`](Self::bytes) of an [`nts`](Self::nts) template) into
    /// the NTS request of `client` with `transmit`: its unique identifier renumbered and its
    /// authenticator sealed again with `c2s` ([`crate::nts::restamp`]), then the address and the
    /// checksums as [`stamp`](Self::stamp) writes them. Nothing allocates.
    #[inline]
    pub fn stamp_nts(&self, frame: &mut [u8], client: u128, transmit: [u8; 8], c2s: &[u8; 32]) {
        let Some(at) = self.nts_payload_at else { return self.stamp(frame, client, transmit) };
        let payload = &mut frame[at..self.len];
        crate::nts::restamp(c2s, payload, &transmit);
        let tag = sum_words(&payload[payload.len() - TAG_LEN..]);
        // The transmit timestamp is also the identifier's last 8 bytes: its words count twice.
        self.stamp_with(frame, client, transmit, sum_words(&transmit) + tag);
    }

    /// `extra`: the sum of the words written besides the address and the transmit timestamp.
    fn stamp_with(&self, frame: &mut [u8], client: u128, transmit: [u8; 8], extra: u32) {
        let mut variable = sum_words(&transmit) + extra;
        if self.ipv4 {
            let source = (client as u32).to_be_bytes();
            frame[self.source_at..self.source_at + 4].copy_from_slice(&source);
            let s = sum_words(&source);
            let ip = !fold(u32::from(self.ip_sum) + s);
            frame[self.ip_checksum_at..self.ip_checksum_at + 2].copy_from_slice(&ip.to_be_bytes());
            variable += s;
        } else {
            let source = client.to_be_bytes();
            frame[self.source_at..self.source_at + 16].copy_from_slice(&source);
            variable += sum_words(&source);
        }
        frame[self.transmit_at..self.transmit_at + 8].copy_from_slice(&transmit);
        let udp = match !fold(u32::from(self.udp_sum) + variable) {
            0 => 0xFFFF, // zero means "no checksum" (RFC 768): send its ones'-complement twin
            sum => sum,
        };
        frame[self.udp_checksum_at..self.udp_checksum_at + 2].copy_from_slice(&udp.to_be_bytes());
    }

    /// What the in-kernel injector (`stratum_xdp::inject`, `--tx inject`) needs to make the
    /// requests of clients `first_client` on: the frame with everything that does not vary in
    /// place (for IPv6 the client network's upper 96 bits too), and the partial sums without the
    /// client's address (IPv4) or its last 32 bits (IPv6). Its layout is the one inject.bpf.c
    /// writes into: no VLAN tag, no IP options.
    pub fn injection(&self, first_client: u128) -> InjectionTemplate {
        let mut frame = [0u8; MAX_FRAME];
        let n = self.len.min(MAX_FRAME);
        frame[..n].copy_from_slice(&self.bytes[..n]);
        let mut udp_sum = u32::from(self.udp_sum);
        if !self.ipv4 {
            let upper = first_client.to_be_bytes();
            frame[self.source_at..self.source_at + 12].copy_from_slice(&upper[..12]);
            udp_sum += sum_words(&upper[..12]);
        }
        InjectionTemplate {
            frame,
            len: self.len,
            ipv4: self.ipv4,
            client_base: first_client as u32,
            ip_sum: self.ip_sum,
            udp_sum: fold(udp_sum),
        }
    }
}

/// See [`RequestTemplate::injection`].
#[derive(Clone, Debug)]
pub struct InjectionTemplate {
    frame: [u8; MAX_FRAME],
    len: usize,
    pub ipv4: bool,
    /// The first client's IPv4 address, or the last 32 bits of its IPv6 address.
    pub client_base: u32,
    pub ip_sum: u16,
    pub udp_sum: u16,
}

impl InjectionTemplate {
    pub fn frame(&self) -> &[u8] {
        &self.frame[..self.len]
    }
}

/// The sum of big-endian 16-bit words (even length).
#[inline]
fn sum_words(b: &[u8]) -> u32 {
    b.chunks_exact(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum()
}

#[inline]
fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The NTP payload of a reply frame from `target` to one of our clients' `client_port`, or None
/// for a frame that is not one: not IPv4/IPv6 UDP to that port, a bad IPv4 header checksum, a
/// bad UDP checksum, or from another address or port. The kernel would drop such a frame before a
/// socket saw it, so the engine ignores it too. A zero IPv4 UDP checksum means none; a checksum
/// field holding only the pseudo-header's sum is a checksum left to offload (what a kernel
/// socket's reply carries over veth, CHECKSUM_PARTIAL) and is accepted as the kernel would.
pub fn reply_payload(frame: &[u8], client_port: u16, target: SocketAddr) -> Option<&[u8]> {
    let FrameVerdict::Ntp(p) = parse_frame(frame, client_port) else { return None };
    if p.source != target {
        return None;
    }
    let udp = frame.get(p.l4..p.l4 + UDP + p.payload_len)?;
    let field = [udp[6], udp[7]];
    let udp_len = (udp.len() as u16).to_be_bytes();
    let (sum, pseudo) = match (p.source.ip(), p.destination(frame)?.ip()) {
        (IpAddr::V4(_), _) if field == [0, 0] => return Some(&udp[UDP..]),
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo: [&[u8]; 4] = [&s.octets(), &d.octets(), &[0, PROTO_UDP], &udp_len];
            (checksum(&[pseudo[0], pseudo[1], pseudo[2], pseudo[3], udp]), !checksum(&pseudo))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pseudo: [&[u8]; 5] = [&s.octets(), &d.octets(), &[0, 0], &udp_len, &[0, 0, 0, PROTO_UDP]];
            (checksum(&[pseudo[0], pseudo[1], pseudo[2], pseudo[3], pseudo[4], udp]), !checksum(&pseudo))
        }
        _ => return None,
    };
    (sum == 0 || field == pseudo.to_be_bytes()).then(|| &udp[UDP..])
}

#[cfg(test)]
mod tests {
    use stratum_proto::frame::write_reply;

    use super::*;

    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const THEIRS: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn build(target: SocketAddr, client: u128, transmit: u64) -> Vec<u8> {
        let t = RequestTemplate::new(OURS, THEIRS, target, 40123);
        let mut frame = t.bytes().to_vec();
        t.stamp(&mut frame, client, transmit.to_be_bytes());
        frame
    }

    /// The UDP checksum over the pseudo-header and `udp` (0 when the datagram's own is sound).
    fn udp_sum(client: IpAddr, target: IpAddr, udp: &[u8]) -> u16 {
        let len = (udp.len() as u16).to_be_bytes();
        match (client, target) {
            (IpAddr::V4(s), IpAddr::V4(d)) => checksum(&[&s.octets(), &d.octets(), &[0, 17], &len, udp]),
            (IpAddr::V6(s), IpAddr::V6(d)) => checksum(&[&s.octets(), &d.octets(), &[0, 0], &len, &[0, 0, 0, 17], udp]),
            _ => unreachable!(),
        }
    }

    /// The request parses as stratumd parses it, with sound checksums and the right fields.
    fn check_request(frame: &[u8], target: SocketAddr, client: IpAddr, transmit: u64) {
        let FrameVerdict::Ntp(p) = parse_frame(frame, target.port()) else { panic!("not an NTP request") };
        assert_eq!((p.source, p.destination(frame), p.payload_len), (SocketAddr::new(client, 40123), Some(target), 48));
        assert_eq!(&frame[0..6], &THEIRS.0);
        assert_eq!(&frame[6..12], &OURS.0);
        let payload = &frame[p.payload()..];
        assert_eq!(&payload[..40], &REQUEST[..40]);
        assert_eq!(payload[40..48], transmit.to_be_bytes());
        let udp = &frame[p.l4..];
        let sum = udp_sum(client, target.ip(), udp);
        assert_eq!(sum, 0, "UDP checksum");
        assert_ne!(&udp[6..8], &[0, 0]);
    }

    #[test]
    fn interleaved_requests_carry_origin_and_receive_with_sound_checksums() {
        for (target, client) in [("10.9.0.2:123", "10.200.1.2"), ("[fd00::2]:11123", "fd00:5354:c1::7")] {
            let target: SocketAddr = target.parse().unwrap();
            let client: IpAddr = client.parse().unwrap();
            let bits = match client {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let t = RequestTemplate::new(OURS, THEIRS, target, 40123);
            let mut frame = t.bytes().to_vec();
            let fields: [u8; 24] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(5));
            t.stamp_fields(&mut frame, bits, &fields);
            // Then a basic one in the same frame: zeros, as the interleaved load stamps them.
            let mut basic = fields;
            basic[..16].fill(0);
            for f in [fields, basic] {
                t.stamp_fields(&mut frame, bits, &f);
                let FrameVerdict::Ntp(p) = parse_frame(&frame, target.port()) else { panic!("not an NTP request") };
                assert_eq!(&frame[p.payload() + 24..p.payload() + 48], &f[..]);
                let udp = &frame[p.l4..];
                let sum = udp_sum(client, target.ip(), udp);
                assert_eq!(sum, 0, "UDP checksum");
            }
        }
    }

    /// An NTS request frame, stamped again and again in place: sound IPv4 header and UDP
    /// checksums, the lengths of the longer datagram, and a payload stratumd's NTS server half
    /// verifies, with the transmit time and unique identifier of each stamp.
    #[test]
    fn nts_requests_are_sound_frames_the_server_verifies() {
        use stratum_proto::nts::server::{check_request as verify, FreshCookies, NtsCheck};
        use stratum_proto::nts::{ClientKeys, KeySet, MasterKey, AEAD_AES_SIV_CMAC_256, COOKIE_LEN};
        let master = KeySet::new(MasterKey { id: 3, key: [0x33; 32] }, 3);
        let keys = ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC2; 32], s2c: [0x5C; 32] };
        let mut cookie = [0u8; COOKIE_LEN];
        assert!(master.seal(&keys, &[1; 16], &mut cookie));
        let prefix = [0x44; 24];
        let uid = crate::nts::load_uid(&prefix, &[0; 8]);
        let request = crate::nts::request(&keys.c2s, &cookie, &uid, stratum_proto::NtpTimestamp::ZERO, 0, &[7; 16]);
        for (target, client) in [("10.9.0.2:123", "10.200.1.2"), ("[fd00::2]:11123", "fd00:5354:c1::7")] {
            let target: SocketAddr = target.parse().unwrap();
            let client: IpAddr = client.parse().unwrap();
            let bits = match client {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let t = RequestTemplate::nts(OURS, THEIRS, target, 40123, &request).unwrap();
            let header = if target.is_ipv4() { ETH + IPV4 + UDP } else { ETH + IPV6 + UDP };
            assert_eq!(t.len(), header + request.len());
            let mut frame = t.bytes().to_vec();
            for transmit in [[1u8; 8], [0xFE; 8], [0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]] {
                t.stamp_nts(&mut frame, bits, transmit, &keys.c2s);
                let FrameVerdict::Ntp(p) = parse_frame(&frame, target.port()) else { panic!("not an NTP request") };
                assert_eq!((p.source, p.payload_len), (SocketAddr::new(client, 40123), request.len()));
                let udp = &frame[p.l4..];
                let sum = udp_sum(client, target.ip(), udp);
                assert_eq!(sum, 0, "UDP checksum");
                if target.is_ipv4() {
                    assert_eq!(checksum(&[&frame[ETH..ETH + IPV4]]), 0, "IPv4 header checksum");
                }
                let mut payload = frame[p.payload()..].to_vec();
                let t1 = stratum_proto::NtpTimestamp::from_be_bytes(transmit);
                let fresh =
                    crate::nts::request(&keys.c2s, &cookie, &crate::nts::load_uid(&prefix, &transmit), t1, 0, &[7; 16]);
                assert_eq!(payload, fresh);
                let mut fresh = FreshCookies::default();
                assert!(matches!(verify(&mut payload, &master, &mut fresh, || [3; 16]), NtsCheck::Verified(_)));
            }
        }
        assert!(RequestTemplate::nts(OURS, THEIRS, "10.9.0.2:123".parse().unwrap(), 40123, &request[..101]).is_none());
        let too_long = vec![0u8; MAX_NTS_REQUEST + 2];
        assert!(RequestTemplate::nts(OURS, THEIRS, "10.9.0.2:123".parse().unwrap(), 40123, &too_long).is_none());
    }

    #[test]
    fn requests_are_well_formed_ipv4_and_ipv6_frames() {
        let v4: SocketAddr = "10.9.0.2:123".parse().unwrap();
        let net: ClientNet = "10.200.0.0/16".parse().unwrap();
        for (k, transmit) in
            [(0u32, 0u64), (1, 0xdead_beef_0000_0001), (65_533, u64::MAX), (300, 0x0102_0304_0506_0708)]
        {
            let frame = build(v4, net.client(k), transmit);
            assert_eq!(frame.len(), 90);
            check_request(&frame, v4, client_ip(&net, net.client(k)), transmit);
        }
        let v6: SocketAddr = "[fd00::2]:11123".parse().unwrap();
        let net6 = ClientNet::default_for(v6.ip());
        for (k, transmit) in [(0u32, 5u64), (77_777, u64::MAX - 3)] {
            let frame = build(v6, net6.client(k), transmit);
            assert_eq!(frame.len(), 110);
            check_request(&frame, v6, client_ip(&net6, net6.client(k)), transmit);
        }
        assert_eq!(client_ip(&net6, net6.client(0)).to_string(), "fd00:5354:c1::1");
    }

    /// What inject.bpf.c does to its copy of the frame, written again here: the injector's
    /// frames must be exactly the ones `stamp` makes.
    fn inject_like_the_kernel(t: &InjectionTemplate, k: u32, transmit: u64) -> Vec<u8> {
        let mut f = t.frame().to_vec();
        let client = t.client_base + k;
        let s32 = |v: u32| (v >> 16) + (v & 0xFFFF);
        let s64 = |v: u64| s32((v >> 32) as u32) + s32(v as u32);
        let (source, udp) = if t.ipv4 { (26, 34) } else { (34, 54) };
        f[source..source + 4].copy_from_slice(&client.to_be_bytes());
        if t.ipv4 {
            f[24..26].copy_from_slice(&(!fold(u32::from(t.ip_sum) + s32(client))).to_be_bytes());
        }
        f[udp + 48..udp + 56].copy_from_slice(&transmit.to_be_bytes());
        let sum = match !fold(u32::from(t.udp_sum) + s32(client) + s64(transmit)) {
            0 => 0xFFFF,
            c => c,
        };
        f[udp + 6..udp + 8].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn the_injectors_requests_are_the_ones_stamp_makes() {
        for target in ["10.9.0.2:123".parse::<SocketAddr>().unwrap(), "[fd00::2]:11123".parse().unwrap()] {
            let net = ClientNet::default_for(target.ip());
            let t = RequestTemplate::new(OURS, THEIRS, target, 40123);
            let first = net.client(1000);
            let inj = t.injection(first);
            for (k, transmit) in [(0u32, 0u64), (1, 0xdead_beef_0000_0001), (4095, u64::MAX), (77, 0xFFFF_0000_FFFF)] {
                let want = build(target, first + u128::from(k), transmit);
                assert_eq!(inject_like_the_kernel(&inj, k, transmit), want, "{target} client {k}");
            }
        }
    }

    #[test]
    fn stamping_a_used_frame_again_gives_the_same_bytes_as_a_fresh_one() {
        let target: SocketAddr = "192.0.2.7:123".parse().unwrap();
        let t = RequestTemplate::new(OURS, THEIRS, target, 40123);
        let mut reused = t.bytes().to_vec();
        t.stamp(&mut reused, u128::from(u32::from(Ipv4Addr::new(10, 200, 3, 4))), [9; 8]);
        t.stamp(&mut reused, u128::from(u32::from(Ipv4Addr::new(10, 200, 0, 1))), [1; 8]);
        assert_eq!(reused, build(target, u128::from(u32::from(Ipv4Addr::new(10, 200, 0, 1))), 0x0101_0101_0101_0101));
    }

    #[test]
    fn a_reply_built_by_proto_is_read_back_and_anything_else_is_ignored() {
        for target in ["10.9.0.2:123".parse::<SocketAddr>().unwrap(), "[fd00::2]:123".parse().unwrap()] {
            let net = ClientNet::default_for(target.ip());
            let mut frame = build(target, net.client(41), 77);
            let FrameVerdict::Ntp(p) = parse_frame(&frame, 123) else { panic!() };
            frame[p.payload()] = 0x24;
            let len = write_reply(&mut frame, &p, 48).unwrap();
            let payload = reply_payload(&frame[..len], 40123, target).expect("a reply from the target");
            assert_eq!((payload.len(), payload[0]), (48, 0x24));
            // Another port of ours, another source, a flipped bit (bad checksum), a truncation.
            assert!(reply_payload(&frame[..len], 40124, target).is_none());
            let elsewhere = SocketAddr::new(target.ip(), 124);
            assert!(reply_payload(&frame[..len], 40123, elsewhere).is_none());
            let mut bad = frame[..len].to_vec();
            bad[len - 1] ^= 1;
            assert!(reply_payload(&bad, 40123, target).is_none());
            assert!(reply_payload(&frame[..len - 1], 40123, target).is_none());
        }
        // A request (to port 123, from us) is not a reply to our client port.
        let target: SocketAddr = "10.9.0.2:123".parse().unwrap();
        assert!(reply_payload(&build(target, 1, 1), 40123, target).is_none());
    }

    #[test]
    fn replies_whose_checksum_is_left_to_offload_are_accepted() {
        for target in ["10.9.0.2:123".parse::<SocketAddr>().unwrap(), "[fd00::2]:123".parse().unwrap()] {
            let net = ClientNet::default_for(target.ip());
            let client = client_ip(&net, net.client(3));
            let mut frame = build(target, net.client(3), 1);
            let FrameVerdict::Ntp(p) = parse_frame(&frame, 123) else { panic!() };
            let len = write_reply(&mut frame, &p, 48).unwrap();
            // As a kernel socket sends it over veth: the field holds the pseudo-header's sum.
            let udp_len = ((len - p.l4) as u16).to_be_bytes();
            let pseudo = match (target.ip(), client) {
                (IpAddr::V4(s), IpAddr::V4(d)) => !checksum(&[&s.octets(), &d.octets(), &[0, 17], &udp_len]),
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    !checksum(&[&s.octets(), &d.octets(), &[0, 0], &udp_len, &[0, 0, 0, 17]])
                }
                _ => unreachable!(),
            };
            frame[p.l4 + 6..p.l4 + 8].copy_from_slice(&pseudo.to_be_bytes());
            assert!(reply_payload(&frame[..len], 40123, target).is_some(), "{target}");
            frame[p.l4 + 7] ^= 1;
            assert!(reply_payload(&frame[..len], 40123, target).is_none(), "{target}");
        }
    }

    #[test]
    fn ipv4_replies_without_a_udp_checksum_are_accepted() {
        let target: SocketAddr = "10.9.0.2:123".parse().unwrap();
        let mut frame = build(target, ClientNet::default_for(target.ip()).client(0), 1);
        let FrameVerdict::Ntp(p) = parse_frame(&frame, 123) else { panic!() };
        let len = write_reply(&mut frame, &p, 48).unwrap();
        frame[p.l4 + 6..p.l4 + 8].fill(0);
        assert!(reply_payload(&frame[..len], 40123, target).is_some());
    }

    #[test]
    fn clients_rotate_within_their_share_of_the_network() {
        let net: ClientNet = "10.200.0.0/16".parse().unwrap();
        assert_eq!(net.capacity(), 65_534);
        assert_eq!(client_ip(&net, net.client(0)), IpAddr::from([10, 200, 0, 1]));
        assert_eq!(client_ip(&net, net.client(65_533)), IpAddr::from([10, 200, 255, 254]));
        let mut r = ClientRotation::new(&net, 10, 3);
        let seen: Vec<IpAddr> = (0..7).map(|_| client_ip(&net, r.next_client())).collect();
        let want = |last: u8| IpAddr::from([10, 200, 0, last]);
        assert_eq!(seen, [want(11), want(12), want(13), want(11), want(12), want(13), want(11)]);
        let mut one = ClientRotation::new(&net, 0, 1);
        assert_eq!((one.next_client(), one.next_client()), (net.client(0), net.client(0)));
        let six: ClientNet = "fd00:1::/120".parse().unwrap();
        assert_eq!(six.capacity(), 255);
        assert_eq!(ClientNet::default_for("::1".parse().unwrap()).capacity(), u64::MAX - 1);
        assert_eq!("10.0.0.0/30".parse::<ClientNet>().unwrap().capacity(), 2);
    }

    #[test]
    fn bad_client_networks_and_macs_are_refused() {
        for bad in
            ["10.200.0.0", "10.200.0.1/16", "10.0.0.0/31", "224.0.0.0/8", "::/0", "fd00::/128", "x/8", "10.0.0.0/x"]
        {
            assert!(bad.parse::<ClientNet>().is_err(), "{bad}");
        }
        assert_eq!("10.200.0.0/16".parse::<ClientNet>().unwrap().to_string(), "10.200.0.0/16");
        let mac: MacAddr = "02:AB:00:00:0c:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:00:00:0c:01");
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:01",
            "zz:00:00:00:00:01",
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "002:00:00:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
