//! NTS Key Establishment records (RFC 8915 section 4): reading a client's request and writing
//! the server's response. Pure; the TLS session, the key export and the cookies' nonces are the
//! caller's.
//!
//! A record is `critical bit | type (15 bits)`, a 16-bit body length and the body. A request
//! must carry exactly one Next Protocol Negotiation record, may carry AEAD Algorithm Negotiation
//! records, and ends with End of Message. A response names NTPv4 and the chosen AEAD, carries
//! the cookies, and may name the NTP server's port.

use super::aead::AEAD_AES_SIV_CMAC_256;

/// Record types (RFC 8915 section 7.6).
pub const END_OF_MESSAGE: u16 = 0;
pub const NEXT_PROTOCOL: u16 = 1;
pub const ERROR: u16 = 2;
pub const WARNING: u16 = 3;
pub const AEAD_ALGORITHM: u16 = 4;
pub const NEW_COOKIE: u16 = 5;
pub const NTPV4_SERVER: u16 = 6;
pub const NTPV4_PORT: u16 = 7;
/// The critical bit of a record's type.
pub const CRITICAL: u16 = 0x8000;
/// The Next Protocol id of NTPv4.
pub const PROTOCOL_NTPV4: u16 = 0;

/// Error codes (section 4.1.3).
pub const ERROR_UNRECOGNIZED_CRITICAL: u16 = 0;
pub const ERROR_BAD_REQUEST: u16 = 1;
pub const ERROR_INTERNAL: u16 = 2;

/// The longest request read: far more than any client sends, small enough to bound a
/// connection's memory.
pub const MAX_REQUEST_LEN: usize = 1024;

/// The TLS exporter label and the context for the two keys (section 5.1): protocol id, AEAD id,
/// then 0 for client-to-server, 1 for server-to-client.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";

pub fn exporter_context(aead: u16, server_to_client: bool) -> [u8; 5] {
    let [p0, p1] = PROTOCOL_NTPV4.to_be_bytes();
    let [a0, a1] = aead.to_be_bytes();
    [p0, p1, a0, a1, u8::from(server_to_client)]
}

/// What a (possibly partial) request says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeRequest {
    /// No End of Message yet: read more (up to [`MAX_REQUEST_LEN`]).
    Incomplete,
    /// NTPv4 with this AEAD.
    Ntpv4 { aead: u16 },
    /// Answer with an Error record of this code and close.
    Error(u16),
}

/// Reads the records received so far.
pub fn parse_request(bytes: &[u8]) -> KeRequest {
    let mut at = 0;
    let mut protocols: Option<bool> = None; // Some(offers NTPv4)
    let mut aead_offered = false;
    let mut aead_ok = false;
    loop {
        let Some(header) = bytes.get(at..at + 4) else {
            return if bytes.len() > MAX_REQUEST_LEN {
                KeRequest::Error(ERROR_BAD_REQUEST)
            } else {
                KeRequest::Incomplete
            };
        };
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            return if at + 4 + len > MAX_REQUEST_LEN {
                KeRequest::Error(ERROR_BAD_REQUEST)
            } else {
                KeRequest::Incomplete
            };
        };
        at += 4 + len;
        let ids = || body.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        match kind & !CRITICAL {
            END_OF_MESSAGE => {
                if at != bytes.len() {
                    // A client speaks once and waits: anything after its End of Message is wrong.
                    return KeRequest::Error(ERROR_BAD_REQUEST);
                }
                return match protocols {
                    Some(true) if aead_ok => KeRequest::Ntpv4 { aead: AEAD_AES_SIV_CMAC_256 },
                    // RFC 8915: an AEAD record is required with NTPv4.
                    _ => KeRequest::Error(ERROR_BAD_REQUEST),
                };
            }
            NEXT_PROTOCOL => {
                if protocols.is_some() || len % 2 != 0 {
                    return KeRequest::Error(ERROR_BAD_REQUEST);
                }
                protocols = Some(ids().any(|p| p == PROTOCOL_NTPV4));
            }
            AEAD_ALGORITHM => {
                if aead_offered || len % 2 != 0 {
                    return KeRequest::Error(ERROR_BAD_REQUEST);
                }
                aead_offered = true;
                aead_ok = ids().any(|a| a == AEAD_AES_SIV_CMAC_256);
            }
            // Records a client may send and we do not act on: its preferred server and port.
            NTPV4_SERVER | NTPV4_PORT | WARNING => {}
            // A client never sends these; an error record from it is a bad request.
            ERROR | NEW_COOKIE => return KeRequest::Error(ERROR_BAD_REQUEST),
            _ if kind & CRITICAL != 0 => return KeRequest::Error(ERROR_UNRECOGNIZED_CRITICAL),
            _ => {}
        }
    }
}

fn record(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// The response to an NTPv4 request: Next Protocol NTPv4, the AEAD, the cookies, the NTP port
/// if given, End of Message.
pub fn write_response(aead: u16, cookies: &[&[u8]], port: Option<u16>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + cookies.iter().map(|c| 4 + c.len()).sum::<usize>());
    record(&mut out, CRITICAL | NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
    record(&mut out, CRITICAL | AEAD_ALGORITHM, &aead.to_be_bytes());
    for cookie in cookies {
        record(&mut out, NEW_COOKIE, cookie);
    }
    if let Some(port) = port {
        record(&mut out, CRITICAL | NTPV4_PORT, &port.to_be_bytes());
    }
    record(&mut out, CRITICAL | END_OF_MESSAGE, &[]);
    out
}

/// An Error record and End of Message.
pub fn write_error(code: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    record(&mut out, CRITICAL | ERROR, &code.to_be_bytes());
    record(&mut out, CRITICAL | END_OF_MESSAGE, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        record(&mut v, kind, body);
        v
    }

    fn chrony_request() -> Vec<u8> {
        [
            rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]),
            rec(AEAD_ALGORITHM, &[0, 30, 0, 15]),
            rec(CRITICAL | END_OF_MESSAGE, &[]),
        ]
        .concat()
    }

    #[test]
    fn a_request_as_chrony_sends_it() {
        let req = chrony_request();
        assert_eq!(parse_request(&req), KeRequest::Ntpv4 { aead: 15 });
        for cut in 0..req.len() {
            assert_eq!(parse_request(&req[..cut]), KeRequest::Incomplete, "{cut} bytes");
        }
    }

    #[test]
    fn bad_requests_get_the_protocols_errors() {
        let eom = rec(CRITICAL | END_OF_MESSAGE, &[]);
        let next = rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]);
        let aead = rec(AEAD_ALGORITHM, &[0, 15]);
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            ([aead.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "no next protocol"),
            ([next.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "no AEAD"),
            ([next.clone(), rec(AEAD_ALGORITHM, &[0, 30]), eom.clone()].concat(), ERROR_BAD_REQUEST, "no common AEAD"),
            ([rec(NEXT_PROTOCOL, &[0x80, 1]), aead.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "no NTPv4"),
            ([next.clone(), next.clone(), aead.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "two next protocols"),
            (
                [next.clone(), aead.clone(), rec(CRITICAL | 0x1234, &[]), eom.clone()].concat(),
                ERROR_UNRECOGNIZED_CRITICAL,
                "unknown critical",
            ),
            (
                [next.clone(), aead.clone(), rec(NEW_COOKIE, &[1; 8]), eom.clone()].concat(),
                ERROR_BAD_REQUEST,
                "a cookie from the client",
            ),
            ([next.clone(), aead.clone(), eom.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "bytes after the end"),
            (vec![0; MAX_REQUEST_LEN + 8], ERROR_BAD_REQUEST, "no end in sight"),
            (rec(0x4000, &vec![0; 1200]), ERROR_BAD_REQUEST, "a record past the limit"),
        ];
        for (req, code, what) in cases {
            assert_eq!(parse_request(&req), KeRequest::Error(code), "{what}");
        }
        // A non-critical unknown record is ignored.
        let ok = [next, rec(0x1234, &[1, 2]), aead, eom].concat();
        assert_eq!(parse_request(&ok), KeRequest::Ntpv4 { aead: 15 });
    }

    #[test]
    fn the_response_layout() {
        let r = write_response(15, &[&[0xC0; 104], &[0xC1; 104]], Some(1123));
        let mut expected = [rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]), rec(CRITICAL | AEAD_ALGORITHM, &[0, 15])].concat();
        expected.extend(rec(NEW_COOKIE, &[0xC0; 104]));
        expected.extend(rec(NEW_COOKIE, &[0xC1; 104]));
        expected.extend(rec(CRITICAL | NTPV4_PORT, &1123u16.to_be_bytes()));
        expected.extend(rec(CRITICAL | END_OF_MESSAGE, &[]));
        assert_eq!(r, expected);
        assert_eq!(write_error(1), [0x80, 2, 0, 2, 0, 1, 0x80, 0, 0, 0]);
        assert_eq!(exporter_context(15, false), [0, 0, 0, 15, 0]);
        assert_eq!(exporter_context(15, true), [0, 0, 0, 15, 1]);
    }
}
