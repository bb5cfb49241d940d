//! RFC 5905's on-wire checks of a reply against the request it answers, and what a reply says of
//! its server.

use core::fmt;

use super::request::VERSION;
use crate::packet::{LeapIndicator, NtpHeader, NtpMode, RefId, HEADER_LEN};
use crate::time::NtpTimestamp;

/// Why a reply is not an answer to our request, in the order [`check_reply`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Shorter than an NTP header.
    Short(usize),
    /// Its origin timestamp is not our transmit timestamp: a stale, spoofed or foreign packet
    /// (RFC 5905's "bogus" test).
    OriginMismatch,
    /// Not a server (mode 4) reply.
    Mode(NtpMode),
    /// Not the version we asked with.
    Version(u8),
    /// A kiss-o'-death (stratum 0) with this kiss code.
    KissOfDeath(RefId),
    /// A server reply without a receive or transmit timestamp (RFC 5905's "unsynch" test).
    ZeroTimestamp,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short(len) => write!(f, "reply of {len} bytes, shorter than an NTP header ({HEADER_LEN})"),
            Self::OriginMismatch => f.write_str("origin timestamp is not our transmit timestamp"),
            Self::Mode(mode) => write!(f, "not a server reply (mode {})", *mode as u8),
            Self::Version(v) => write!(f, "reply version {v}, we asked with {VERSION}"),
            Self::KissOfDeath(code) => write!(f, "kiss-o'-death {}", code.to_text(0)),
            Self::ZeroTimestamp => f.write_str("receive or transmit timestamp is zero"),
        }
    }
}

/// Checks `buf`, the reply to our request whose transmit timestamp was `transmit`, in the order
/// RFC 5905's client does: length, origin, mode, version, kiss-o'-death, timestamps. Trailing
/// extension fields or a MAC are allowed (and not looked at). An unsynchronised server's reply
/// passes: [`classify`] tells it apart.
pub fn check_reply(buf: &[u8], transmit: NtpTimestamp) -> Result<NtpHeader<'_>, ReplyError> {
    let h = NtpHeader::new(buf).ok_or(ReplyError::Short(buf.len()))?;
    if h.origin_timestamp() != transmit {
        return Err(ReplyError::OriginMismatch);
    }
    if h.mode() != NtpMode::Server {
        return Err(ReplyError::Mode(h.mode()));
    }
    if h.version() != VERSION {
        return Err(ReplyError::Version(h.version()));
    }
    if h.is_kiss_of_death() {
        return Err(ReplyError::KissOfDeath(h.ref_id()));
    }
    if h.receive_timestamp() == NtpTimestamp::ZERO || h.transmit_timestamp() == NtpTimestamp::ZERO {
        return Err(ReplyError::ZeroTimestamp);
    }
    Ok(h)
}

/// What a reply says of its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyClass {
    /// A synchronised answer: LI 0 to 2, stratum 1 to 15.
    Served,
    /// Stratum 0: a kiss-o'-death with this code.
    Kod(RefId),
    /// LI = 3, or stratum 16 and above: the server's clock is not synchronised.
    Unsynchronized,
}

/// Sorts a reply by its stratum and leap indicator (only these: the caller checks the mode).
pub fn classify(h: &NtpHeader<'_>) -> ReplyClass {
    if h.stratum() == 0 {
        ReplyClass::Kod(h.ref_id())
    } else if h.leap() == LeapIndicator::Unsynchronized || h.stratum() >= 16 {
        ReplyClass::Unsynchronized
    } else {
        ReplyClass::Served
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::packet::NtpPacket;
    use crate::time::NtpShort;

    pub(in crate::client) fn ts(seconds: u32, micros: u32) -> NtpTimestamp {
        NtpTimestamp::from_parts(seconds, ((u64::from(micros) << 32) / 1_000_000) as u32)
    }

    /// A synchronised stratum 2 server's reply to the request with this transmit timestamp.
    pub(in crate::client) fn reply(origin: NtpTimestamp) -> NtpPacket {
        NtpPacket {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: NtpMode::Server,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            ref_id: RefId::from_ipv4([192, 0, 2, 1].into()),
            reference_timestamp: ts(100, 0),
            origin_timestamp: origin,
            receive_timestamp: ts(1000, 10),
            transmit_timestamp: ts(1000, 20),
        }
    }

    #[test]
    fn reply_checks() {
        let sent = ts(5000, 1);
        let good = reply(sent).to_bytes();
        assert!(check_reply(&good, sent).is_ok());
        // Trailing extension fields do not matter.
        let mut long = good.to_vec();
        long.extend_from_slice(&[0; 20]);
        assert!(check_reply(&long, sent).is_ok());
        assert_eq!(check_reply(&good[..47], sent).unwrap_err(), ReplyError::Short(47));
        assert_eq!(check_reply(&good, ts(5000, 2)).unwrap_err(), ReplyError::OriginMismatch);
        let p = NtpPacket { mode: NtpMode::Client, ..reply(sent) };
        assert_eq!(check_reply(&p.to_bytes(), sent).unwrap_err(), ReplyError::Mode(NtpMode::Client));
        let p = NtpPacket { version: 3, ..reply(sent) };
        assert_eq!(check_reply(&p.to_bytes(), sent).unwrap_err(), ReplyError::Version(3));
        let p = NtpPacket { stratum: 0, ref_id: RefId(*b"RATE"), ..reply(sent) };
        let e = check_reply(&p.to_bytes(), sent).unwrap_err();
        assert_eq!(e, ReplyError::KissOfDeath(RefId(*b"RATE")));
        assert_eq!(e.to_string(), "kiss-o'-death RATE");
        // A kiss-o'-death with someone else's origin is just a foreign packet.
        assert_eq!(check_reply(&p.to_bytes(), ts(1, 1)).unwrap_err(), ReplyError::OriginMismatch);
        let p = NtpPacket { transmit_timestamp: NtpTimestamp::ZERO, ..reply(sent) };
        assert_eq!(check_reply(&p.to_bytes(), sent).unwrap_err(), ReplyError::ZeroTimestamp);
        // An unsynchronised server's reply passes the checks; classify says what it is.
        let p = NtpPacket { leap: LeapIndicator::Unsynchronized, stratum: 16, ..reply(sent) };
        assert!(check_reply(&p.to_bytes(), sent).is_ok());
    }

    #[test]
    fn replies_are_served_kod_or_unsynchronised() {
        let class = |p: NtpPacket| classify(&NtpHeader::new(&p.to_bytes()).unwrap());
        let base = reply(ts(1, 1));
        assert_eq!(class(base), ReplyClass::Served);
        assert_eq!(class(NtpPacket { stratum: 15, leap: LeapIndicator::InsertSecond, ..base }), ReplyClass::Served);
        assert_eq!(class(NtpPacket { stratum: 0, ref_id: RefId(*b"DENY"), ..base }), ReplyClass::Kod(RefId(*b"DENY")));
        assert_eq!(class(NtpPacket { stratum: 16, ..base }), ReplyClass::Unsynchronized);
        assert_eq!(class(NtpPacket { leap: LeapIndicator::Unsynchronized, ..base }), ReplyClass::Unsynchronized);
    }

    proptest! {
        #[test]
        fn any_bytes_are_checked_without_panicking(mut buf in proptest::collection::vec(any::<u8>(), 0..100), sent in any::<u64>()) {
            let sent = NtpTimestamp::from_bits(sent);
            // Most of them with our origin, so that the later checks run too.
            if let Some(origin) = buf.get_mut(24..32).filter(|_| sent.to_bits() % 4 != 0) {
                origin.copy_from_slice(&sent.to_be_bytes());
            }
            if let Ok(h) = check_reply(&buf, sent) {
                prop_assert_eq!(h.origin_timestamp(), sent);
                prop_assert!(h.stratum() != 0 && h.mode() == NtpMode::Server);
                let _ = classify(&h);
            }
        }
    }
}
