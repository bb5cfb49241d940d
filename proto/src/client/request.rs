//! Client requests: a 48-byte NTPv4 header in mode 3, of which only the transmit timestamp
//! changes from one request to the next.

use crate::packet::{LeapIndicator, NtpMode, HEADER_LEN};
use crate::time::NtpTimestamp;

/// The version of every request built here; a reply must carry the same.
pub const VERSION: u8 = 4;
/// Where the transmit timestamp is in a request (bytes 40..48): the one field a client writes
/// per request, and the one a server echoes as its reply's origin timestamp.
pub const TRANSMIT_AT: usize = 40;

/// A client (mode 3) request: no leap warning, version [`VERSION`], the `poll` and `precision`
/// exponents given, `transmit` as its transmit timestamp, and every other field zero (a server
/// reads none of them). `transmit` need not be the send time: a client that keeps T1 to itself
/// may send a random value, which a reply can only echo if it saw the request.
pub const fn request(poll: i8, precision: i8, transmit: NtpTimestamp) -> [u8; HEADER_LEN] {
    let mut r = [0u8; HEADER_LEN];
    r[0] = (LeapIndicator::NoWarning.to_bits() << 6) | (VERSION << 3) | NtpMode::Client as u8;
    r[2] = poll as u8;
    r[3] = precision as u8;
    let t = transmit.to_be_bytes();
    let mut i = 0;
    while i < t.len() {
        r[TRANSMIT_AT + i] = t[i];
        i += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{NtpHeader, NtpPacket};

    #[test]
    fn a_request_is_an_ntpv4_client_header_with_our_transmit_timestamp() {
        let t = NtpTimestamp::from_parts(0xdead_beef, 0x1234_5678);
        let r = request(6, -20, t);
        assert_eq!(&r[..4], &[0x23, 0, 6, 0xec]);
        let h = NtpHeader::new(&r).unwrap();
        assert_eq!((h.version(), h.mode(), h.poll(), h.precision()), (4, NtpMode::Client, 6, -20));
        assert_eq!(h.transmit_timestamp(), t);
        assert_eq!(&r[TRANSMIT_AT..], &t.to_be_bytes());
        assert!(r[4..TRANSMIT_AT].iter().all(|b| *b == 0));
        // With poll and precision 0, the minimal SNTP request.
        assert_eq!(request(0, 0, t), NtpPacket::client_request(VERSION, t).to_bytes());
    }
}
