//! Reply validation and the arithmetic on the four timestamps: pure functions, no IO, no clock.
//!
//! T1 is our send time, T2 the server's receive timestamp, T3 its transmit timestamp, T4 our
//! receive time. Every difference goes through [`NtpTimestamp::since`], so it stays right across
//! an NTP era boundary (2036) as long as the true difference is under 68 years.

use std::fmt;

use crate::counts::Invalid;
use stratum_proto::packet::HEADER_LEN;
use stratum_proto::{LeapIndicator, NtpDuration, NtpHeader, NtpMode, NtpTimestamp, RefId};

/// The version of every request we send; a reply must carry the same.
pub const VERSION: u8 = 4;

/// Why the one reply of a `query` was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRejection {
    /// Shorter than an NTP header.
    Short(usize),
    /// Its origin timestamp is not our transmit timestamp (a stale, spoofed or foreign packet).
    OriginMismatch,
    /// Not a server (mode 4) reply.
    Mode(NtpMode),
    /// Not the version we asked with.
    Version(u8),
    /// A kiss-o'-death (stratum 0) with this kiss code.
    KissOfDeath(RefId),
    /// A server reply without a receive or transmit timestamp.
    ZeroTimestamp,
}

impl fmt::Display for QueryRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short(len) => write!(f, "reply of {len} bytes, shorter than an NTP header ({HEADER_LEN})"),
            Self::OriginMismatch => f.write_str("origin timestamp is not our transmit timestamp"),
            Self::Mode(mode) => write!(f, "not a server reply (mode {})", *mode as u8),
            Self::Version(v) => write!(f, "reply version {v}, we asked with {VERSION}"),
            Self::KissOfDeath(code) => write!(f, "kiss-o'-death {}", format_refid(*code, 0)),
            Self::ZeroTimestamp => f.write_str("receive or transmit timestamp is zero"),
        }
    }
}

/// Checks the reply to a `query` whose transmit timestamp was `sent`, in the order RFC 5905's
/// client does: length, origin, mode, version, kiss-o'-death, timestamps. Trailing extension
/// fields or a MAC are allowed (and ignored).
pub fn check_query_reply(buf: &[u8], sent: NtpTimestamp) -> Result<NtpHeader<'_>, QueryRejection> {
    let h = NtpHeader::new(buf).ok_or(QueryRejection::Short(buf.len()))?;
    if h.origin_timestamp() != sent {
        return Err(QueryRejection::OriginMismatch);
    }
    if h.mode() != NtpMode::Server {
        return Err(QueryRejection::Mode(h.mode()));
    }
    if h.version() != VERSION {
        return Err(QueryRejection::Version(h.version()));
    }
    if h.is_kiss_of_death() {
        return Err(QueryRejection::KissOfDeath(h.ref_id()));
    }
    if h.receive_timestamp() == NtpTimestamp::ZERO || h.transmit_timestamp() == NtpTimestamp::ZERO {
        return Err(QueryRejection::ZeroTimestamp);
    }
    Ok(h)
}

/// RFC 5905 offset: ((T2 - T1) + (T3 - T4)) / 2.
pub fn offset(t1: NtpTimestamp, t2: NtpTimestamp, t3: NtpTimestamp, t4: NtpTimestamp) -> NtpDuration {
    let sum = i128::from(t2.since(t1).to_bits()) + i128::from(t3.since(t4).to_bits());
    NtpDuration::from_bits((sum / 2) as i64)
}

/// RFC 5905 round-trip delay: (T4 - T1) - (T3 - T2).
pub fn delay(t1: NtpTimestamp, t2: NtpTimestamp, t3: NtpTimestamp, t4: NtpTimestamp) -> NtpDuration {
    let d = i128::from(t4.since(t1).to_bits()) - i128::from(t3.since(t2).to_bits());
    NtpDuration::from_bits(d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// The reference id as tools print it: ASCII for stratum 0 (kiss codes) and 1 (reference
/// clocks), NUL padding dropped and anything unprintable as `\xNN`; a dotted IPv4 address (or an
/// IPv6 address hash, printed the same way) above.
pub fn format_refid(refid: RefId, stratum: u8) -> String {
    let b = refid.0;
    if stratum <= 1 {
        let mut text = String::new();
        for &c in b.iter().take_while(|c| **c != 0) {
            if c.is_ascii_graphic() || c == b' ' {
                text.push(c as char);
            } else {
                text.push_str(&format!("\\x{c:02x}"));
            }
        }
        text
    } else {
        format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    }
}

pub fn leap_text(leap: LeapIndicator) -> &'static str {
    match leap {
        LeapIndicator::NoWarning => "none",
        LeapIndicator::InsertSecond => "insert second",
        LeapIndicator::DeleteSecond => "delete second",
        LeapIndicator::Unsynchronized => "unsynchronised",
    }
}

/// 2^`log2` seconds (precision and poll fields).
pub fn log2_seconds(log2: i8) -> f64 {
    2f64.powi(i32::from(log2))
}

/// The run nonce a `load` reply's origin timestamp carries (its high 32 bits), whatever else the
/// reply is; None when it is not 48 bytes.
pub fn origin_nonce(buf: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(24..28)?.try_into().ok()?;
    (buf.len() == HEADER_LEN).then(|| u32::from_be_bytes(bytes))
}

/// What a well-formed `load` reply says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyClass {
    /// A synchronised answer.
    Served,
    /// Stratum 0: a kiss-o'-death with this code.
    Kod(RefId),
    /// LI = 3 or stratum 16 and above.
    Unsynchronized,
}

/// A `load` reply that passed the checks that need no per-request state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadReply {
    /// The sequence number the origin timestamp carries (its low 32 bits).
    pub seq: u32,
    pub class: ReplyClass,
    pub receive: NtpTimestamp,
    pub transmit: NtpTimestamp,
    pub precision: i8,
}

/// The transmit timestamp of `load` request number `seq`: the run's nonce above, the sequence
/// number below. Unique within a run, so a reply names the request it answers.
pub const fn load_transmit(nonce: u32, seq: u32) -> u64 {
    ((nonce as u64) << 32) | seq as u64
}

/// The checks on a `load` reply that need only its bytes and the run's nonce: exactly 48 bytes,
/// version 4, mode 4, the origin carrying our nonce. The caller then looks the sequence number up.
pub fn check_load_reply(buf: &[u8], nonce: u32) -> Result<LoadReply, Invalid> {
    if buf.len() != HEADER_LEN {
        return Err(Invalid::Length);
    }
    let h = NtpHeader::new(buf).ok_or(Invalid::Length)?;
    if h.version() != VERSION || h.mode() != NtpMode::Server {
        return Err(Invalid::Header);
    }
    let origin = h.origin_timestamp().to_bits();
    if (origin >> 32) as u32 != nonce {
        return Err(Invalid::Origin);
    }
    let class = if h.stratum() == 0 {
        ReplyClass::Kod(h.ref_id())
    } else if h.leap() == LeapIndicator::Unsynchronized || h.stratum() >= 16 {
        ReplyClass::Unsynchronized
    } else {
        ReplyClass::Served
    };
    Ok(LoadReply {
        seq: origin as u32,
        class,
        receive: h.receive_timestamp(),
        transmit: h.transmit_timestamp(),
        precision: h.precision(),
    })
}

/// How far a server timestamp may lie outside the window it must be in: one unit of its
/// precision, since a server may put random bits below it (2^-32 s at least, 2^30 s at most).
pub fn precision_allowance(precision: i8) -> NtpDuration {
    let shift = (32 + i32::from(precision)).clamp(0, 62);
    NtpDuration::from_bits(1i64 << shift)
}

/// Checks T1 <= T2 <= T3 <= T4 (each step widened by the precision allowance) and returns the
/// server turnaround T3 - T2, never negative. Holds only when the server serves the clock we
/// read: loopback, or a network namespace on this host.
pub fn check_timestamps(
    t1: NtpTimestamp,
    t2: NtpTimestamp,
    t3: NtpTimestamp,
    t4: NtpTimestamp,
    precision: i8,
) -> Result<NtpDuration, Invalid> {
    let allowance = precision_allowance(precision);
    let before = NtpDuration::from_bits(-allowance.to_bits());
    if t2.since(t1) < before || t4.since(t2) < before {
        return Err(Invalid::T2Window);
    }
    let turnaround = t3.since(t2);
    if turnaround < before || t4.since(t3) < before {
        return Err(Invalid::T3Window);
    }
    Ok(turnaround.max(NtpDuration::ZERO))
}

#[cfg(test)]
mod tests {
    use stratum_proto::{NtpPacket, NtpShort};

    use super::*;

    fn ts(seconds: u32, micros: u32) -> NtpTimestamp {
        NtpTimestamp::from_parts(seconds, ((u64::from(micros) << 32) / 1_000_000) as u32)
    }

    fn reply(origin: NtpTimestamp) -> NtpPacket {
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
    fn offset_and_delay_follow_rfc_5905() {
        // The server is 1 s ahead; 100 µs each way; 20 µs turnaround.
        let (t1, t2, t3, t4) = (ts(1000, 0), ts(1001, 100), ts(1001, 120), ts(1000, 220));
        assert!((offset(t1, t2, t3, t4).to_seconds_f64() - 1.0).abs() < 1e-9);
        assert!((delay(t1, t2, t3, t4).to_seconds_f64() - 200e-6).abs() < 1e-9);
        // Behind by 0.5 s, asymmetric path: offset error is half the asymmetry.
        let (t1, t2, t3, t4) = (ts(10, 0), ts(9, 500_300), ts(9, 500_310), ts(10, 410));
        assert!((offset(t1, t2, t3, t4).to_seconds_f64() - (-0.5 + (300e-6 - 100e-6) / 2.0)).abs() < 1e-9);
        assert!((delay(t1, t2, t3, t4).to_seconds_f64() - 400e-6).abs() < 1e-9);
    }

    #[test]
    fn offset_and_delay_are_era_safe() {
        // Client still in era 0 (just before 2036-02-07), server already in era 1.
        let t1 = NtpTimestamp::from_parts(u32::MAX, 0);
        let t2 = t1.add(NtpDuration::from_seconds(2));
        let t3 = t2.add(NtpDuration::from_nanos(10_000));
        let t4 = t1.add(NtpDuration::from_nanos(30_000));
        assert!(t2.seconds() < t1.seconds(), "the server's timestamps wrapped");
        let o = offset(t1, t2, t3, t4).to_seconds_f64();
        assert!((o - (2.0 - 10e-6)).abs() < 1e-8, "{o}");
        assert!((delay(t1, t2, t3, t4).to_seconds_f64() - 20e-6).abs() < 1e-8);
    }

    #[test]
    fn refid_is_ascii_at_stratum_0_and_1_and_dotted_above() {
        assert_eq!(format_refid(RefId(*b"GPS\0"), 1), "GPS");
        assert_eq!(format_refid(RefId(*b"RATE"), 0), "RATE");
        assert_eq!(format_refid(RefId(*b"P\x01S\0"), 1), "P\\x01S");
        assert_eq!(format_refid(RefId::NONE, 1), "");
        assert_eq!(format_refid(RefId::from_ipv4([192, 0, 2, 7].into()), 2), "192.0.2.7");
        assert_eq!(format_refid(RefId(*b"LOCL"), 3), "76.79.67.76");
        assert_eq!(format_refid(RefId([255, 0, 0, 1]), 16), "255.0.0.1");
    }

    #[test]
    fn query_reply_checks() {
        let sent = ts(5000, 1);
        let good = reply(sent).to_bytes();
        assert!(check_query_reply(&good, sent).is_ok());
        // Trailing extension fields do not matter.
        let mut long = good.to_vec();
        long.extend_from_slice(&[0; 20]);
        assert!(check_query_reply(&long, sent).is_ok());
        assert_eq!(check_query_reply(&good[..47], sent).unwrap_err(), QueryRejection::Short(47));
        assert_eq!(check_query_reply(&good, ts(5000, 2)).unwrap_err(), QueryRejection::OriginMismatch);
        let p = NtpPacket { mode: NtpMode::Client, ..reply(sent) };
        assert_eq!(check_query_reply(&p.to_bytes(), sent).unwrap_err(), QueryRejection::Mode(NtpMode::Client));
        let p = NtpPacket { version: 3, ..reply(sent) };
        assert_eq!(check_query_reply(&p.to_bytes(), sent).unwrap_err(), QueryRejection::Version(3));
        let p = NtpPacket { stratum: 0, ref_id: RefId(*b"RATE"), ..reply(sent) };
        let e = check_query_reply(&p.to_bytes(), sent).unwrap_err();
        assert_eq!(e, QueryRejection::KissOfDeath(RefId(*b"RATE")));
        assert_eq!(e.to_string(), "kiss-o'-death RATE");
        // A kiss-o'-death with someone else's origin is just a foreign packet.
        assert_eq!(check_query_reply(&p.to_bytes(), ts(1, 1)).unwrap_err(), QueryRejection::OriginMismatch);
        let p = NtpPacket { transmit_timestamp: NtpTimestamp::ZERO, ..reply(sent) };
        assert_eq!(check_query_reply(&p.to_bytes(), sent).unwrap_err(), QueryRejection::ZeroTimestamp);
    }

    #[test]
    fn load_reply_checks() {
        let nonce = 0xdead_beef;
        let origin = NtpTimestamp::from_bits(load_transmit(nonce, 77));
        let good = reply(origin).to_bytes();
        let r = check_load_reply(&good, nonce).unwrap();
        assert_eq!((r.seq, r.class, r.precision), (77, ReplyClass::Served, -20));
        assert_eq!((r.receive, r.transmit), (ts(1000, 10), ts(1000, 20)));
        assert_eq!(check_load_reply(&good[..47], nonce), Err(Invalid::Length));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(check_load_reply(&long, nonce), Err(Invalid::Length));
        assert_eq!(check_load_reply(&good, nonce ^ 1), Err(Invalid::Origin));
        for p in [NtpPacket { version: 3, ..reply(origin) }, NtpPacket { mode: NtpMode::Broadcast, ..reply(origin) }] {
            assert_eq!(check_load_reply(&p.to_bytes(), nonce), Err(Invalid::Header));
        }
        let p = NtpPacket { stratum: 0, ref_id: RefId(*b"DENY"), ..reply(origin) };
        assert_eq!(check_load_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Kod(RefId(*b"DENY")));
        let p = NtpPacket { stratum: 16, ..reply(origin) };
        assert_eq!(check_load_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Unsynchronized);
        let p = NtpPacket { leap: LeapIndicator::Unsynchronized, ..reply(origin) };
        assert_eq!(check_load_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Unsynchronized);
    }

    #[test]
    fn timestamp_window_allows_one_unit_of_precision() {
        let (t1, t4) = (ts(1000, 0), ts(1000, 100));
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        // -20: about 0.95 µs.
        let turnaround = check_timestamps(t1, t1.add(us(40)), t1.add(us(55)), t4, -20).unwrap();
        assert_eq!(turnaround.to_nanos(), 15_000);
        // At the edges, inside the allowance.
        assert!(check_timestamps(t1, t1.add(NtpDuration::from_nanos(-900)), t1, t4, -20).is_ok());
        assert!(check_timestamps(t1, t4.add(NtpDuration::from_nanos(900)), t4, t4, -20).is_ok());
        // T2 before we sent, after we received.
        assert_eq!(check_timestamps(t1, t1.add(us(-2)), t1.add(us(10)), t4, -20), Err(Invalid::T2Window));
        assert_eq!(check_timestamps(t1, t4.add(us(2)), t4.add(us(3)), t4, -20), Err(Invalid::T2Window));
        // A coarse server (2^-10 s, about 1 ms) gets a wider window.
        assert!(check_timestamps(t1, t1.add(us(-500)), t1.add(us(10)), t4, -10).is_ok());
        // T3 before T2, or after T4.
        assert_eq!(check_timestamps(t1, t1.add(us(50)), t1.add(us(45)), t4, -20), Err(Invalid::T3Window));
        assert_eq!(check_timestamps(t1, t1.add(us(50)), t4.add(us(5)), t4, -20), Err(Invalid::T3Window));
        // T3 a little below T2, within the allowance: turnaround 0, not negative.
        let z = check_timestamps(t1, t1.add(us(50)), t1.add(us(50)).add(NtpDuration::from_nanos(-500)), t4, -20);
        assert_eq!(z, Ok(NtpDuration::ZERO));
        // Across the era boundary.
        let t1 = NtpTimestamp::from_parts(u32::MAX, u32::MAX - 1000);
        let t2 = t1.add(us(10));
        assert!(t2.seconds() == 0);
        assert!(check_timestamps(t1, t2, t2.add(us(1)), t2.add(us(20)), -20).is_ok());
    }

    #[test]
    fn precision_allowance_is_clamped() {
        assert_eq!(precision_allowance(-20).to_bits(), 1 << 12);
        assert_eq!(precision_allowance(0).to_bits(), 1 << 32);
        assert_eq!(precision_allowance(-128).to_bits(), 1);
        assert_eq!(precision_allowance(127).to_bits(), 1 << 62);
    }
}
