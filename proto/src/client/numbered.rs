//! Numbered requests: a transmit timestamp that is a run nonce (high 32 bits) and a sequence
//! number (low 32 bits), so that the origin timestamp of a reply names the request it answers
//! without a lookup. A load generator keeps millions of requests in flight this way; the nonce
//! tells its replies from a stale run's or a foreign client's.
//!
//! A numbered reply is checked more strictly than [`check_reply`](super::check_reply) checks
//! one: exactly 48 bytes (the requests are 48, and a reply is never longer than its request).
//! Kiss-o'-death and unsynchronised replies are not errors here but classes
//! ([`ReplyClass`]), which a load generator counts apart.

use super::reply::{classify, ReplyClass};
use super::request::VERSION;
use crate::packet::{NtpHeader, NtpMode, HEADER_LEN};
use crate::time::NtpTimestamp;

/// The transmit timestamp of request number `seq` of the run with this `nonce`: unique within
/// the run.
pub const fn numbered_transmit(nonce: u32, seq: u32) -> NtpTimestamp {
    NtpTimestamp::from_parts(nonce, seq)
}

/// The run nonce a numbered reply's origin timestamp carries, whatever else the reply is; None
/// when it is not 48 bytes.
pub fn origin_nonce(buf: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(24..28)?.try_into().ok()?;
    (buf.len() == HEADER_LEN).then(|| u32::from_be_bytes(bytes))
}

/// Why a numbered reply is rejected, in the order [`check_numbered_reply`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberedError {
    /// Not exactly 48 bytes.
    Length,
    /// Not version 4, or not mode 4.
    Header,
    /// The origin timestamp does not carry the run's nonce.
    Origin,
}

/// A numbered reply that passed the checks that need no per-request state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumberedReply {
    /// The sequence number its origin timestamp carries: the request it answers.
    pub seq: u32,
    pub class: ReplyClass,
    /// T2.
    pub receive: NtpTimestamp,
    /// T3.
    pub transmit: NtpTimestamp,
    pub precision: i8,
}

/// The checks on a numbered reply that need only its bytes and the run's nonce: exactly 48
/// bytes, version 4, mode 4, the origin carrying `nonce`. The caller then looks the sequence
/// number up (was it sent, is it answered already).
pub fn check_numbered_reply(buf: &[u8], nonce: u32) -> Result<NumberedReply, NumberedError> {
    if buf.len() != HEADER_LEN {
        return Err(NumberedError::Length);
    }
    let h = NtpHeader::new(buf).ok_or(NumberedError::Length)?;
    if h.version() != VERSION || h.mode() != NtpMode::Server {
        return Err(NumberedError::Header);
    }
    let origin = h.origin_timestamp();
    if origin.seconds() != nonce {
        return Err(NumberedError::Origin);
    }
    Ok(NumberedReply {
        seq: origin.fraction(),
        class: classify(&h),
        receive: h.receive_timestamp(),
        transmit: h.transmit_timestamp(),
        precision: h.precision(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::client::reply::tests::{reply, ts};
    use crate::packet::{LeapIndicator, NtpPacket, RefId};

    #[test]
    fn numbered_reply_checks() {
        let nonce = 0xdead_beef;
        let origin = numbered_transmit(nonce, 77);
        assert_eq!(origin.to_bits(), 0xdead_beef_0000_004d);
        let good = reply(origin).to_bytes();
        let r = check_numbered_reply(&good, nonce).unwrap();
        assert_eq!((r.seq, r.class, r.precision), (77, ReplyClass::Served, -20));
        assert_eq!((r.receive, r.transmit), (ts(1000, 10), ts(1000, 20)));
        assert_eq!(check_numbered_reply(&good[..47], nonce), Err(NumberedError::Length));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(check_numbered_reply(&long, nonce), Err(NumberedError::Length));
        assert_eq!(check_numbered_reply(&good, nonce ^ 1), Err(NumberedError::Origin));
        for p in [NtpPacket { version: 3, ..reply(origin) }, NtpPacket { mode: NtpMode::Broadcast, ..reply(origin) }] {
            assert_eq!(check_numbered_reply(&p.to_bytes(), nonce), Err(NumberedError::Header));
        }
        let p = NtpPacket { stratum: 0, ref_id: RefId(*b"DENY"), ..reply(origin) };
        assert_eq!(check_numbered_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Kod(RefId(*b"DENY")));
        let p = NtpPacket { stratum: 16, ..reply(origin) };
        assert_eq!(check_numbered_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Unsynchronized);
        let p = NtpPacket { leap: LeapIndicator::Unsynchronized, ..reply(origin) };
        assert_eq!(check_numbered_reply(&p.to_bytes(), nonce).unwrap().class, ReplyClass::Unsynchronized);
    }

    #[test]
    fn the_nonce_is_read_from_any_48_byte_reply() {
        assert_eq!(origin_nonce(&reply(numbered_transmit(0xffff_fffd, 3)).to_bytes()), Some(0xffff_fffd));
        assert_eq!(origin_nonce(&[0; 47]), None);
        assert_eq!(origin_nonce(&[0; 49]), None);
    }

    proptest! {
        #[test]
        fn a_numbered_reply_names_its_request(nonce in any::<u32>(), seq in any::<u32>(), other in any::<u32>()) {
            let bytes = reply(numbered_transmit(nonce, seq)).to_bytes();
            prop_assert_eq!(origin_nonce(&bytes), Some(nonce));
            prop_assert_eq!(check_numbered_reply(&bytes, nonce).map(|r| r.seq), Ok(seq));
            if other != nonce {
                prop_assert_eq!(check_numbered_reply(&bytes, other), Err(NumberedError::Origin));
            }
        }
    }
}
