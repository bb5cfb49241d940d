//! The control header (RFC 9327 section 2):
//!
//! ```text
//!  0: LI | VN | mode 6     1: R | E | M | opcode     2-3: sequence
//!  4-5: status             6-7: association id       8-9: offset     10-11: count
//! ```
//!
//! then `count` bytes of data, padded to a multiple of 4, then an optional MAC (ignored: nothing
//! here needs authentication, every write is refused).

/// Bytes of the control header.
pub const HEADER_LEN: usize = 12;
/// Data bytes in one reply fragment, as ntpd sends them (CTL_MAX_DATA_LEN); a multiple of 4.
pub const MAX_DATA: usize = 468;
/// The most fragments one reply may have: what NTPsec's ntpq collects (MAXFRAGS).
pub const MAX_FRAGMENTS: usize = 32;

const RESPONSE: u8 = 0x80;
const ERROR: u8 = 0x40;
const MORE: u8 = 0x20;
const OPCODE: u8 = 0x1f;

/// The protocol's error codes (the high byte of an error reply's status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    Unspecified = 0,
    /// Writes and configuration: never allowed here.
    Permission = 1,
    BadFormat = 2,
    BadOpcode = 3,
    BadAssociation = 4,
    UnknownVariable = 5,
    BadValue = 6,
}

/// A request worth answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub version: u8,
    pub opcode: u8,
    pub sequence: u16,
    pub association: u16,
    /// The request's data (`count` bytes; padding and any MAC left out).
    pub data: &'a [u8],
}

/// A request not answered with data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not a request one answers at all (too short, not mode 6, a response, a fragment, an
    /// unknown version): dropped with no reply, as ntpd does.
    Drop(&'static str),
    /// A request whose header is good but whose `count` is not: a BADFMT error reply.
    Error { version: u8, opcode: u8, sequence: u16, association: u16, code: ErrorCode },
}

/// Parses a mode 6 request. Never panics, never reads past `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, Rejection> {
    if buf.len() < HEADER_LEN {
        return Err(Rejection::Drop("short"));
    }
    let version = (buf[0] >> 3) & 7;
    if buf[0] & 7 != 6 {
        return Err(Rejection::Drop("not mode 6"));
    }
    if !(1..=4).contains(&version) {
        return Err(Rejection::Drop("version"));
    }
    // A response, an error or a fragment of a request: ntpd never sends or takes fragmented
    // requests, and answering a response would make two servers talk to each other forever.
    if buf[1] & (RESPONSE | ERROR | MORE) != 0 || be16(buf, 8) != 0 {
        return Err(Rejection::Drop("not a request"));
    }
    let opcode = buf[1] & OPCODE;
    let sequence = be16(buf, 2);
    let association = be16(buf, 6);
    let count = usize::from(be16(buf, 10));
    if count > MAX_DATA || count > buf.len() - HEADER_LEN {
        return Err(Rejection::Error { version, opcode, sequence, association, code: ErrorCode::BadFormat });
    }
    Ok(Request { version, opcode, sequence, association, data: &buf[HEADER_LEN..HEADER_LEN + count] })
}

fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// What every fragment of one reply shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub version: u8,
    pub opcode: u8,
    pub sequence: u16,
    pub status: u16,
    pub association: u16,
}

impl ReplyHeader {
    pub fn to(request: &Request<'_>, status: u16) -> Self {
        Self {
            version: request.version,
            opcode: request.opcode,
            sequence: request.sequence,
            status,
            association: request.association,
        }
    }
}

/// The reply to `header`'s request carrying `data`: fragments of at most [`MAX_DATA`] bytes,
/// each padded to a multiple of 4, every one but the last with the more bit, at most
/// `max_fragments` of them (data past that is left out: callers size what they send to fit).
/// One empty fragment for empty data.
pub fn fragments(header: &ReplyHeader, data: &[u8], max_fragments: usize) -> Vec<Vec<u8>> {
    let max_fragments = max_fragments.clamp(1, MAX_FRAGMENTS);
    let data = &data[..data.len().min(max_fragments * MAX_DATA)];
    let mut out = Vec::with_capacity(data.len().div_ceil(MAX_DATA).max(1));
    let mut offset = 0;
    loop {
        let chunk = &data[offset..(offset + MAX_DATA).min(data.len())];
        let more = offset + chunk.len() < data.len();
        out.push(fragment(header, offset as u16, chunk, more, false));
        offset += chunk.len();
        if !more {
            return out;
        }
    }
}

/// An error reply: one fragment, no data, the code in the status's high byte.
pub fn error_reply(header: &ReplyHeader, code: ErrorCode) -> Vec<u8> {
    let h = ReplyHeader { status: u16::from(code as u8) << 8, ..*header };
    fragment(&h, 0, &[], false, true)
}

fn fragment(h: &ReplyHeader, offset: u16, chunk: &[u8], more: bool, error: bool) -> Vec<u8> {
    let padded = chunk.len().div_ceil(4) * 4;
    let mut f = Vec::with_capacity(HEADER_LEN + padded);
    f.push((h.version & 7) << 3 | 6);
    f.push(RESPONSE | if error { ERROR } else { 0 } | if more { MORE } else { 0 } | (h.opcode & OPCODE));
    f.extend_from_slice(&h.sequence.to_be_bytes());
    f.extend_from_slice(&h.status.to_be_bytes());
    f.extend_from_slice(&h.association.to_be_bytes());
    f.extend_from_slice(&offset.to_be_bytes());
    f.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
    f.extend_from_slice(chunk);
    f.resize(HEADER_LEN + padded, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(opcode: u8, data: &[u8]) -> Vec<u8> {
        let mut r = vec![0x26, opcode, 0, 7, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r.resize(r.len().div_ceil(4) * 4, 0);
        r
    }

    #[test]
    fn a_readvar_request_parses() {
        let r = request(2, b"offset");
        let p = parse_request(&r).unwrap();
        assert_eq!((p.version, p.opcode, p.sequence, p.association, p.data), (4, 2, 7, 0, &b"offset"[..]));
    }

    #[test]
    fn responses_fragments_and_other_modes_are_dropped() {
        let mut r = request(2, b"");
        r[1] |= 0x80;
        assert_eq!(parse_request(&r), Err(Rejection::Drop("not a request")));
        let mut r = request(2, b"");
        r[9] = 4;
        assert_eq!(parse_request(&r), Err(Rejection::Drop("not a request")));
        let mut r = request(2, b"");
        r[0] = 0x23;
        assert_eq!(parse_request(&r), Err(Rejection::Drop("not mode 6")));
        assert_eq!(parse_request(&r[..11]), Err(Rejection::Drop("short")));
    }

    #[test]
    fn a_count_past_the_datagram_is_a_format_error() {
        let mut r = request(2, b"abcd");
        r[11] = 200;
        assert!(matches!(parse_request(&r), Err(Rejection::Error { code: ErrorCode::BadFormat, .. })));
    }

    #[test]
    fn replies_are_cut_in_468_byte_fragments_with_offsets_and_the_more_bit() {
        let h = ReplyHeader { version: 4, opcode: 2, sequence: 9, status: 0x0615, association: 0 };
        let data: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let f = fragments(&h, &data, 32);
        assert_eq!(f.len(), 3);
        let mut joined = Vec::new();
        for (i, frag) in f.iter().enumerate() {
            assert_eq!(frag.len() % 4, 0);
            assert_eq!(frag[1] & MORE != 0, i < 2);
            assert_eq!(frag[1] & RESPONSE, RESPONSE);
            let offset = usize::from(be16(frag, 8));
            let count = usize::from(be16(frag, 10));
            assert_eq!(offset, joined.len());
            assert!(count <= MAX_DATA);
            joined.extend_from_slice(&frag[12..12 + count]);
        }
        assert_eq!(joined, data);
        assert_eq!(fragments(&h, &data, 1).len(), 1, "capped");
        assert_eq!(fragments(&h, b"", 32), vec![vec![0x26, 0x82, 0, 9, 6, 0x15, 0, 0, 0, 0, 0, 0]]);
    }

    #[test]
    fn an_error_reply_carries_the_code_in_the_status() {
        let h = ReplyHeader { version: 2, opcode: 8, sequence: 1, status: 0, association: 0 };
        assert_eq!(error_reply(&h, ErrorCode::Permission), vec![0x16, 0xc8, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_data_stays_inside(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(r) = parse_request(&buf) {
                prop_assert!(r.data.len() <= MAX_DATA);
                prop_assert!(HEADER_LEN + r.data.len() <= buf.len());
                prop_assert_eq!(buf[0] & 7, 6);
            }
        }

        #[test]
        fn fragments_reassemble_to_the_data(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let h = ReplyHeader { version: 4, opcode: 2, sequence: 1, status: 0, association: 3 };
            let f = fragments(&h, &data, MAX_FRAGMENTS);
            let mut joined = Vec::new();
            for frag in &f {
                prop_assert!(frag.len() <= HEADER_LEN + MAX_DATA);
                let count = usize::from(be16(frag, 10));
                prop_assert_eq!(usize::from(be16(frag, 8)), joined.len());
                joined.extend_from_slice(&frag[12..12 + count]);
            }
            prop_assert_eq!(joined, data);
        }
    }
}
