//! The NTP packet: a 48-byte header, then (NTPv4) RFC 7822 extension fields, then an optional MAC.
//!
//! [`NtpHeader`] is a zero-copy view that checks its length once at construction; every accessor
//! after that is infallible. [`NtpPacket`] is the owned form used to build packets and in tests.
//! [`scan_trailer`] walks what follows the header in bounded, linear time.

use crate::time::{NtpShort, NtpTimestamp};

/// Length of the fixed NTP header.
pub const HEADER_LEN: usize = 48;
/// Requests longer than this are dropped without being walked (BAD_INPUTS row 11).
pub const MAX_PACKET_LEN: usize = 1024;
/// Smallest legal extension field (RFC 7822 section 3).
const MIN_EXTENSION_LEN: usize = 16;

/// Leap indicator: a warning of a leap second at the end of the current UTC day, or "not
/// synchronised".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LeapIndicator {
    NoWarning = 0,
    InsertSecond = 1,
    DeleteSecond = 2,
    Unsynchronized = 3,
}

impl LeapIndicator {
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::NoWarning,
            1 => Self::InsertSecond,
            2 => Self::DeleteSecond,
            _ => Self::Unsynchronized,
        }
    }

    pub const fn to_bits(self) -> u8 {
        self as u8
    }
}

/// The association mode of a packet.
///
/// Shaped like [`LeapIndicator`] on purpose (and like any C-style enum, the XDP program's counter
/// slots among them): a variant per value of the header field, and a total `from_bits`, so that
/// every bit pattern a packet can carry has a name and none needs an error path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NtpMode {
    Reserved = 0,
    SymmetricActive = 1,
    SymmetricPassive = 2,
    Client = 3,
    Server = 4,
    Broadcast = 5,
    Control = 6,
    Private = 7,
}

impl NtpMode {
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::Reserved,
            1 => Self::SymmetricActive,
            2 => Self::SymmetricPassive,
            3 => Self::Client,
            4 => Self::Server,
            5 => Self::Broadcast,
            6 => Self::Control,
            _ => Self::Private,
        }
    }
}

/// The 32-bit reference identifier: four ASCII characters for stratum 0/1 (and kiss codes), the
/// upstream's IPv4 address (or an IPv6 address hash) for higher strata.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RefId(pub [u8; 4]);

impl RefId {
    pub const NONE: Self = Self([0; 4]);

    /// Up to four ASCII characters, NUL-padded. Returns None for longer or non-ASCII text.
    pub fn from_ascii(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() > 4 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 4];
        id[..bytes.len()].copy_from_slice(bytes);
        Some(Self(id))
    }

    pub const fn from_ipv4(addr: core::net::Ipv4Addr) -> Self {
        Self(addr.octets())
    }

    pub const fn to_bits(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub const fn from_bits(bits: u32) -> Self {
        Self(bits.to_be_bytes())
    }

    /// The reference id as text, by the one rule every tool here prints it with: at stratum 0 (a
    /// kiss code) and 1 (a reference clock) up to four ASCII characters, NUL padding dropped and
    /// anything unprintable as `\xNN`; from stratum 2 on (16, unsynchronised, too) the upstream's
    /// IPv4 address, or its IPv6 address hash, as a dotted quad. Writes without allocating.
    pub const fn to_text(self, stratum: u8) -> RefIdText {
        RefIdText { id: self, stratum }
    }
}

/// A reference id as text ([`RefId::to_text`]): format it with `{}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefIdText {
    id: RefId,
    stratum: u8,
}

impl core::fmt::Display for RefIdText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.id.0;
        if self.stratum >= 2 {
            return write!(f, "{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
        }
        for &c in b.iter().take_while(|c| **c != 0) {
            if c.is_ascii_graphic() || c == b' ' {
                core::fmt::Write::write_char(f, char::from(c))?;
            } else {
                write!(f, "\\x{c:02x}")?;
            }
        }
        Ok(())
    }
}

impl core::fmt::Debug for RefId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == 0) {
            let text: String = self.0.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
            write!(f, "RefId({text:?})")
        } else {
            write!(f, "RefId({}.{}.{}.{})", self.0[0], self.0[1], self.0[2], self.0[3])
        }
    }
}

/// Kiss-o'-Death codes a server may send (RFC 5905 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KissCode {
    /// Rate exceeded: the client must reduce its poll rate.
    Rate,
    /// Access denied by the server's policy.
    Deny,
    /// Access restricted (the client's address is not allowed).
    Rstr,
}

impl KissCode {
    pub const fn ref_id(self) -> RefId {
        match self {
            Self::Rate => RefId(*b"RATE"),
            Self::Deny => RefId(*b"DENY"),
            Self::Rstr => RefId(*b"RSTR"),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Deny => "deny",
            Self::Rstr => "rstr",
        }
    }
}

/// A read-only view of an NTP header whose length was checked once, at construction.
#[derive(Clone, Copy, Debug)]
pub struct NtpHeader<'a> {
    bytes: &'a [u8; HEADER_LEN],
}

impl<'a> NtpHeader<'a> {
    /// Returns None when `buf` is shorter than a header. Trailing bytes are not looked at.
    pub fn new(buf: &'a [u8]) -> Option<Self> {
        let bytes = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self { bytes })
    }

    pub fn leap(&self) -> LeapIndicator {
        LeapIndicator::from_bits(self.bytes[0] >> 6)
    }

    pub fn version(&self) -> u8 {
        (self.bytes[0] >> 3) & 7
    }

    pub fn mode(&self) -> NtpMode {
        NtpMode::from_bits(self.bytes[0])
    }

    pub fn stratum(&self) -> u8 {
        self.bytes[1]
    }

    pub fn poll(&self) -> i8 {
        self.bytes[2] as i8
    }

    pub fn precision(&self) -> i8 {
        self.bytes[3] as i8
    }

    pub fn root_delay(&self) -> NtpShort {
        NtpShort::from_bits(self.u32_at::<4>())
    }

    pub fn root_dispersion(&self) -> NtpShort {
        NtpShort::from_bits(self.u32_at::<8>())
    }

    pub fn ref_id(&self) -> RefId {
        RefId::from_bits(self.u32_at::<12>())
    }

    pub fn reference_timestamp(&self) -> NtpTimestamp {
        self.timestamp_at::<16>()
    }

    pub fn origin_timestamp(&self) -> NtpTimestamp {
        self.timestamp_at::<24>()
    }

    pub fn receive_timestamp(&self) -> NtpTimestamp {
        self.timestamp_at::<32>()
    }

    pub fn transmit_timestamp(&self) -> NtpTimestamp {
        self.timestamp_at::<40>()
    }

    /// Whether this is a Kiss-o'-Death packet (stratum 0 in a server reply).
    pub fn is_kiss_of_death(&self) -> bool {
        self.stratum() == 0 && self.mode() == NtpMode::Server
    }

    fn u32_at<const AT: usize>(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[AT..AT + 4]);
        u32::from_be_bytes(b)
    }

    fn timestamp_at<const AT: usize>(&self) -> NtpTimestamp {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[AT..AT + 8]);
        NtpTimestamp::from_be_bytes(b)
    }
}

/// An NTP header as plain values: parse with [`NtpPacket::parse`], write with [`NtpPacket::emit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtpPacket {
    pub leap: LeapIndicator,
    pub version: u8,
    pub mode: NtpMode,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: NtpShort,
    pub root_dispersion: NtpShort,
    pub ref_id: RefId,
    pub reference_timestamp: NtpTimestamp,
    pub origin_timestamp: NtpTimestamp,
    pub receive_timestamp: NtpTimestamp,
    pub transmit_timestamp: NtpTimestamp,
}

impl NtpPacket {
    /// A client (mode 3) request as a minimal SNTP client sends it.
    pub const fn client_request(version: u8, transmit: NtpTimestamp) -> Self {
        Self {
            leap: LeapIndicator::NoWarning,
            version,
            mode: NtpMode::Client,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            ref_id: RefId::NONE,
            reference_timestamp: NtpTimestamp::ZERO,
            origin_timestamp: NtpTimestamp::ZERO,
            receive_timestamp: NtpTimestamp::ZERO,
            transmit_timestamp: transmit,
        }
    }

    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h = NtpHeader::new(buf)?;
        Some(Self {
            leap: h.leap(),
            version: h.version(),
            mode: h.mode(),
            stratum: h.stratum(),
            poll: h.poll(),
            precision: h.precision(),
            root_delay: h.root_delay(),
            root_dispersion: h.root_dispersion(),
            ref_id: h.ref_id(),
            reference_timestamp: h.reference_timestamp(),
            origin_timestamp: h.origin_timestamp(),
            receive_timestamp: h.receive_timestamp(),
            transmit_timestamp: h.transmit_timestamp(),
        })
    }

    /// Writes every field but the transmit timestamp, which the caller writes last with
    /// [`write_transmit_timestamp`] once it has read the clock.
    pub fn emit_before_transmit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = (self.leap.to_bits() << 6) | ((self.version & 7) << 3) | (self.mode as u8);
        out[1] = self.stratum;
        out[2] = self.poll as u8;
        out[3] = self.precision as u8;
        out[4..8].copy_from_slice(&self.root_delay.to_bits().to_be_bytes());
        out[8..12].copy_from_slice(&self.root_dispersion.to_bits().to_be_bytes());
        out[12..16].copy_from_slice(&self.ref_id.0);
        out[16..24].copy_from_slice(&self.reference_timestamp.to_be_bytes());
        out[24..32].copy_from_slice(&self.origin_timestamp.to_be_bytes());
        out[32..40].copy_from_slice(&self.receive_timestamp.to_be_bytes());
    }

    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        self.emit_before_transmit(out);
        write_transmit_timestamp(out, self.transmit_timestamp);
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.emit(&mut out);
        out
    }
}

pub fn write_transmit_timestamp(out: &mut [u8; HEADER_LEN], t: NtpTimestamp) {
    out[40..48].copy_from_slice(&t.to_be_bytes());
}

/// What follows the 48-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Number of RFC 7822 extension fields.
    pub extension_fields: u16,
    /// The message authentication code, if any.
    pub mac: Option<Mac>,
}

/// A MAC at the end of the packet, recognised by its length (RFC 7822 section 7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mac {
    /// Four bytes: a crypto-NAK (key id only, normally zero).
    CryptoNak { key_id: u32 },
    /// Key id plus a 16- (MD5), 20- (SHA-1) or, for NTPv3, 8-byte (DES) digest.
    Digest { key_id: u32, digest_len: u8 },
}

/// Why a trailer is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailerError {
    /// An extension field too short, not 4-byte aligned, or running past the end; or, before
    /// NTPv4, anything but a MAC.
    Malformed,
}

/// Walks the bytes after the header. Each step consumes at least 16 bytes, so the work is linear
/// in the packet length, which the caller has already capped at [`MAX_PACKET_LEN`].
///
/// An extension field of 20 or 24 bytes at the very end would be indistinguishable from a MAC;
/// RFC 7822 forbids that (the last field must then be at least 28 bytes), so those lengths are a MAC.
pub fn scan_trailer(version: u8, rest: &[u8]) -> Result<Trailer, TrailerError> {
    let mut extension_fields = 0u16;
    let mut at = 0usize;
    loop {
        let remaining = &rest[at..];
        let mac = match (version, remaining.len()) {
            (_, 0) => return Ok(Trailer { extension_fields, mac: None }),
            (4, 4) => Some(Mac::CryptoNak { key_id: be_u32(remaining) }),
            (4, 20 | 24) | (1..=3, 12 | 20 | 24) => {
                Some(Mac::Digest { key_id: be_u32(remaining), digest_len: (remaining.len() - 4) as u8 })
            }
            _ => None,
        };
        if let Some(mac) = mac {
            return Ok(Trailer { extension_fields, mac: Some(mac) });
        }
        if version < 4 || remaining.len() < MIN_EXTENSION_LEN {
            return Err(TrailerError::Malformed);
        }
        let field_len = u16::from_be_bytes([remaining[2], remaining[3]]) as usize;
        if field_len < MIN_EXTENSION_LEN || field_len % 4 != 0 || field_len > remaining.len() {
            return Err(TrailerError::Malformed);
        }
        extension_fields += 1;
        at += field_len;
    }
}

fn be_u32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext_field(kind: u16, len: u16) -> Vec<u8> {
        let mut f = vec![0u8; len as usize];
        f[..2].copy_from_slice(&kind.to_be_bytes());
        f[2..4].copy_from_slice(&len.to_be_bytes());
        f
    }

    #[test]
    fn header_view_needs_48_bytes() {
        assert!(NtpHeader::new(&[0u8; 47]).is_none());
        assert!(NtpHeader::new(&[0u8; 48]).is_some());
        assert!(NtpHeader::new(&[]).is_none());
    }

    #[test]
    fn view_reads_every_field() {
        let p = NtpPacket {
            leap: LeapIndicator::DeleteSecond,
            version: 4,
            mode: NtpMode::Server,
            stratum: 2,
            poll: -7,
            precision: -24,
            root_delay: NtpShort::from_bits(0x0001_8000),
            root_dispersion: NtpShort::from_bits(0x0000_0123),
            ref_id: RefId(*b"GPS\0"),
            reference_timestamp: NtpTimestamp::from_bits(1),
            origin_timestamp: NtpTimestamp::from_bits(2),
            receive_timestamp: NtpTimestamp::from_bits(3),
            transmit_timestamp: NtpTimestamp::from_bits(u64::MAX),
        };
        let bytes = p.to_bytes();
        assert_eq!(bytes[0], 0b10_100_100);
        assert_eq!(NtpPacket::parse(&bytes), Some(p));
    }

    #[test]
    fn refid_text() {
        assert_eq!(RefId::from_ascii("GPS"), Some(RefId(*b"GPS\0")));
        assert_eq!(RefId::from_ascii("TOOLONG"), None);
        assert_eq!(RefId::from_ascii("é"), None);
        assert_eq!(format!("{:?}", RefId(*b"LOCL")), "RefId(\"LOCL\")");
        assert_eq!(format!("{:?}", RefId([192, 0, 2, 1])), "RefId(192.0.2.1)");
    }

    #[test]
    fn refid_is_ascii_at_stratum_0_and_1_and_dotted_above() {
        let text = |id: RefId, stratum: u8| id.to_text(stratum).to_string();
        assert_eq!(text(RefId(*b"GPS\0"), 1), "GPS");
        assert_eq!(text(RefId(*b"LOCL"), 1), "LOCL");
        assert_eq!(text(RefId(*b"P\x01S\0"), 1), "P\\x01S");
        assert_eq!(text(RefId::NONE, 1), "");
        assert_eq!(text(RefId::from_ipv4([192, 0, 2, 7].into()), 2), "192.0.2.7");
        assert_eq!(text(RefId([192, 0, 2, 1]), 2), "192.0.2.1");
        // Above stratum 1 the bytes are an address, whatever they spell.
        assert_eq!(text(RefId(*b"LOCL"), 3), "76.79.67.76");
        assert_eq!(text(RefId([255, 0, 0, 1]), 16), "255.0.0.1");
    }

    #[test]
    fn kiss_codes_are_text_at_stratum_0() {
        for code in [KissCode::Rate, KissCode::Deny, KissCode::Rstr] {
            let text = code.ref_id().to_text(0).to_string();
            assert_eq!(text, code.as_str().to_ascii_uppercase());
        }
        assert_eq!(RefId(*b"RATE").to_text(0).to_string(), "RATE");
    }

    #[test]
    fn trailer_empty_mac_and_crypto_nak() {
        assert_eq!(scan_trailer(4, &[]), Ok(Trailer { extension_fields: 0, mac: None }));
        let nak = scan_trailer(4, &[0; 4]).unwrap();
        assert_eq!(nak.mac, Some(Mac::CryptoNak { key_id: 0 }));
        let md5 = scan_trailer(4, &[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(md5.mac, Some(Mac::Digest { key_id: 7, digest_len: 16 }));
        assert!(scan_trailer(3, &[0; 20]).unwrap().mac.is_some());
        assert_eq!(scan_trailer(3, &[0; 16]), Err(TrailerError::Malformed));
    }

    #[test]
    fn trailer_extension_fields() {
        let mut rest = ext_field(0x0104, 36);
        rest.extend(ext_field(0x0204, 28));
        assert_eq!(scan_trailer(4, &rest), Ok(Trailer { extension_fields: 2, mac: None }));
        rest.extend([0u8; 24]);
        let t = scan_trailer(4, &rest).unwrap();
        assert_eq!(t.extension_fields, 2);
        assert!(matches!(t.mac, Some(Mac::Digest { digest_len: 20, .. })));
    }

    #[test]
    fn trailer_rejects_bad_extension_lengths() {
        assert_eq!(scan_trailer(4, &ext_field(1, 12)[..]), Err(TrailerError::Malformed));
        let mut short_len = ext_field(1, 32);
        short_len[3] = 8; // claims 8 bytes, below the 16-byte minimum
        assert_eq!(scan_trailer(4, &short_len), Err(TrailerError::Malformed));
        let mut unaligned = ext_field(1, 32);
        unaligned[3] = 30;
        assert_eq!(scan_trailer(4, &unaligned), Err(TrailerError::Malformed));
        let mut overlong = ext_field(1, 32);
        overlong[3] = 64;
        assert_eq!(scan_trailer(4, &overlong), Err(TrailerError::Malformed));
    }

    #[test]
    fn many_small_fields_are_walked_linearly() {
        let rest: Vec<u8> = (0..61).flat_map(|_| ext_field(0x2005, 16)).collect();
        assert_eq!(scan_trailer(4, &rest).unwrap().extension_fields, 61);
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform16(any::<u8>())) {
            let mut buf = [0u8; 48];
            buf[..32].copy_from_slice(&bytes);
            buf[32..].copy_from_slice(&tail);
            let p = NtpPacket::parse(&buf).unwrap();
            prop_assert_eq!(p.to_bytes(), buf);
        }

        #[test]
        fn trailer_scan_never_panics(version in 0u8..8, rest in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = scan_trailer(version, &rest);
        }
    }
}
