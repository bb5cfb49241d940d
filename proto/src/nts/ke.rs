//! NTS Key Establishment records (RFC 8915 section 4): reading a client's request and writing
//! the server's response. Pure; the TLS session, the key export and the cookies' nonces are the
//! caller's.
//!
//! A record is `critical bit | type (15 bits)`, a 16-bit body length and the body. A request
//! must carry exactly one Next Protocol Negotiation record and, with NTPv4, one AEAD Algorithm
//! Negotiation record, and ends with End of Message. A response names NTPv4 and the chosen AEAD,
//! carries the cookies, and may name the NTP server's port.
//!
//! The AEAD is chosen as chrony's server chooses it: the first of the client's list that is
//! enabled here. With AES-128-GCM-SIV the keys are exported as chrony does too: chrony 4.4 to 4.5
//! clients put AES-SIV-CMAC-256's id (15) in the exporter context, and chrony 4.6 on asks for the
//! compliant context (id 30, RFC 8915) with an empty non-critical record of type 1024, which the
//! server echoes when it agrees ([`COMPLIANT_128GCM_EXPORT`]).

use super::aead::{AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256, SUPPORTED};

/// Record types (RFC 8915 section 7.6).
pub const END_OF_MESSAGE: u16 = 0;
pub const NEXT_PROTOCOL: u16 = 1;
pub const ERROR: u16 = 2;
pub const WARNING: u16 = 3;
pub const AEAD_ALGORITHM: u16 = 4;
pub const NEW_COOKIE: u16 = 5;
pub const NTPV4_SERVER: u16 = 6;
pub const NTPV4_PORT: u16 = 7;
/// chrony's record asking for (request) and granting (response) the RFC 8915 exporter context
/// with AES-128-GCM-SIV (chrony-project.org/doc/spec/nts-compliant-128gcm.html); empty body.
pub const COMPLIANT_128GCM_EXPORT: u16 = 1024;
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
    Ntpv4(Negotiated),
    /// Nothing in common (RFC 8915 sections 4.1.2 and 4.1.5): answer [`write_declined`] (an empty
    /// Next Protocol record when NTPv4 is not offered, else NTPv4 and an empty AEAD record; no
    /// cookies) and close. `ntpv4`: NTPv4 was offered.
    Declined { ntpv4: bool },
    /// Answer with an Error record of this code and close.
    Error(u16),
}

/// The AEAD chosen for a client, and how its keys are exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The client's keys' AEAD (the response's AEAD record, the cookies' algorithm).
    pub aead: u16,
    /// AES-128-GCM-SIV with the compliant exporter context: the client asked with a
    /// [`COMPLIANT_128GCM_EXPORT`] record, and the response carries one.
    pub compliant_128gcm: bool,
}

impl Negotiated {
    /// The AEAD id the exporter context names (section 5.1): the chosen AEAD's, except for
    /// AES-128-GCM-SIV without the compliant record, where chrony's clients (4.4 to 4.5, and 4.6
    /// on when the server does not echo the record) put AES-SIV-CMAC-256's.
    pub fn exporter_aead(self) -> u16 {
        if self.aead == AEAD_AES_128_GCM_SIV && !self.compliant_128gcm {
            AEAD_AES_SIV_CMAC_256
        } else {
            self.aead
        }
    }
}

/// Reads the records received so far, choosing among all the AEADs proto has ([`SUPPORTED`]).
pub fn parse_request(bytes: &[u8]) -> KeRequest {
    parse_request_with(bytes, &SUPPORTED)
}

/// Reads the records received so far; the AEAD is the first of the client's list that is in
/// `enabled` (and that proto has), as chrony's server picks it.
pub fn parse_request_with(bytes: &[u8], enabled: &[u16]) -> KeRequest {
    let mut at = 0;
    let mut protocols: Option<bool> = None; // Some(offers NTPv4)
    let mut aead_offered = false;
    let mut aead: Option<u16> = None;
    let mut compliant_asked = false;
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
                return match (protocols, aead_offered, aead) {
                    (Some(true), _, Some(aead)) => KeRequest::Ntpv4(Negotiated {
                        aead,
                        compliant_128gcm: compliant_asked && aead == AEAD_AES_128_GCM_SIV,
                    }),
                    // Offered, none in common: the empty records RFC 8915 asks for, as chrony.
                    (Some(false), _, _) => KeRequest::Declined { ntpv4: false },
                    (Some(true), true, None) => KeRequest::Declined { ntpv4: true },
                    // No Next Protocol record, or NTPv4 without the AEAD record it requires.
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
                aead = ids().find(|a| enabled.contains(a) && SUPPORTED.contains(a));
            }
            COMPLIANT_128GCM_EXPORT => {
                if len != 0 {
                    return KeRequest::Error(ERROR_BAD_REQUEST);
                }
                compliant_asked = true;
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
    write_negotiated(Negotiated { aead, compliant_128gcm: false }, cookies, port)
}

/// [`write_response`] for a negotiation: the compliant-export record after the AEAD when it was
/// granted (non-critical, as chrony sends it).
pub fn write_negotiated(negotiated: Negotiated, cookies: &[&[u8]], port: Option<u16>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + cookies.iter().map(|c| 4 + c.len()).sum::<usize>());
    record(&mut out, CRITICAL | NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
    record(&mut out, CRITICAL | AEAD_ALGORITHM, &negotiated.aead.to_be_bytes());
    if negotiated.compliant_128gcm {
        record(&mut out, COMPLIANT_128GCM_EXPORT, &[]);
    }
    for cookie in cookies {
        record(&mut out, NEW_COOKIE, cookie);
    }
    if let Some(port) = port {
        record(&mut out, CRITICAL | NTPV4_PORT, &port.to_be_bytes());
    }
    record(&mut out, CRITICAL | END_OF_MESSAGE, &[]);
    out
}

/// The answer to [`KeRequest::Declined`]: an empty Next Protocol record (NTPv4 not offered), or
/// NTPv4 and an empty AEAD record (no AEAD in common); no cookies; End of Message.
pub fn write_declined(ntpv4: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    if ntpv4 {
        record(&mut out, CRITICAL | NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
        record(&mut out, CRITICAL | AEAD_ALGORITHM, &[]);
    } else {
        record(&mut out, CRITICAL | NEXT_PROTOCOL, &[]);
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
        // chrony 4.4 to 4.5 offer 30 then 15 and ask nothing more: GCM-SIV, keys exported
        // under id 15 as those chronys do.
        let chosen = Negotiated { aead: 30, compliant_128gcm: false };
        assert_eq!(parse_request(&req), KeRequest::Ntpv4(chosen));
        assert_eq!(chosen.exporter_aead(), 15);
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
            ([next.clone(), aead.clone(), aead.clone(), eom.clone()].concat(), ERROR_BAD_REQUEST, "two AEAD records"),
            (
                [next.clone(), aead.clone(), rec(COMPLIANT_128GCM_EXPORT, &[0, 0]), eom.clone()].concat(),
                ERROR_BAD_REQUEST,
                "a compliant-export record with a body",
            ),
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
        // Offers with nothing in common are declined with the empty records, not an error.
        let declined = [
            ([next.clone(), rec(AEAD_ALGORITHM, &[0, 31, 0, 16]), eom.clone()].concat(), true, "no common AEAD"),
            ([next.clone(), rec(AEAD_ALGORITHM, &[]), eom.clone()].concat(), true, "an empty AEAD list"),
            ([rec(NEXT_PROTOCOL, &[0x80, 1]), aead.clone(), eom.clone()].concat(), false, "no NTPv4"),
            ([rec(NEXT_PROTOCOL, &[]), eom.clone()].concat(), false, "an empty protocol list"),
        ];
        for (req, ntpv4, what) in declined {
            assert_eq!(parse_request(&req), KeRequest::Declined { ntpv4 }, "{what}");
        }
        // A non-critical unknown record is ignored.
        let ok = [next, rec(0x1234, &[1, 2]), aead, eom].concat();
        assert_eq!(parse_request(&ok), KeRequest::Ntpv4(Negotiated { aead: 15, compliant_128gcm: false }));
    }

    #[test]
    fn declined_answers_are_the_empty_records() {
        let eom = rec(CRITICAL | END_OF_MESSAGE, &[]);
        let no_aead =
            [rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]), rec(CRITICAL | AEAD_ALGORITHM, &[]), eom.clone()].concat();
        assert_eq!(write_declined(true), no_aead);
        assert_eq!(write_declined(false), [rec(CRITICAL | NEXT_PROTOCOL, &[]), eom].concat());
    }

    fn offer(aeads: &[u16], compliant: bool) -> Vec<u8> {
        let list: Vec<u8> = aeads.iter().flat_map(|a| a.to_be_bytes()).collect();
        let mut r = [rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]), rec(AEAD_ALGORITHM, &list)].concat();
        if compliant {
            r.extend(rec(COMPLIANT_128GCM_EXPORT, &[]));
        }
        r.extend(rec(CRITICAL | END_OF_MESSAGE, &[]));
        r
    }

    /// The server takes the first of the client's list it has and has enabled (chrony's rule),
    /// skipping unknown ids; none in common is declined (an empty AEAD record).
    #[test]
    fn the_first_of_the_clients_aeads_we_have_is_chosen() {
        let n = |aead, compliant_128gcm| KeRequest::Ntpv4(Negotiated { aead, compliant_128gcm });
        assert_eq!(parse_request(&offer(&[30, 15], false)), n(30, false), "GCM-SIV first");
        assert_eq!(parse_request(&offer(&[15, 30], false)), n(15, false), "SIV-CMAC first");
        assert_eq!(parse_request(&offer(&[31, 2, 30], false)), n(30, false), "unknown ids skipped");
        assert_eq!(parse_request(&offer(&[17, 15], false)), n(15, false));
        assert_eq!(parse_request(&offer(&[31, 1, 0xFFFF], false)), KeRequest::Declined { ntpv4: true }, "only unknown");
        // `enabled` narrows the choice ([nts] aeads).
        assert_eq!(parse_request_with(&offer(&[30, 15], false), &[15]), n(15, false));
        assert_eq!(parse_request_with(&offer(&[30], false), &[15]), KeRequest::Declined { ntpv4: true });
        // An id enabled but unknown to proto is never chosen.
        assert_eq!(parse_request_with(&offer(&[31, 15], false), &[31, 15]), n(15, false));
    }

    /// chrony 4.6 on: the compliant-export record with GCM-SIV gives exporter id 30 and is echoed;
    /// with SIV-CMAC chosen it changes nothing.
    #[test]
    fn the_compliant_128gcm_export_record() {
        let gcm = parse_request(&offer(&[30, 15], true));
        let KeRequest::Ntpv4(negotiated) = gcm else { panic!("{gcm:?}") };
        assert_eq!(negotiated, Negotiated { aead: 30, compliant_128gcm: true });
        assert_eq!(negotiated.exporter_aead(), 30);
        assert_eq!(exporter_context(negotiated.exporter_aead(), true), [0, 0, 0, 30, 1]);
        let response = write_negotiated(negotiated, &[&[0xC0; 8]], None);
        let mut expected = [rec(CRITICAL | NEXT_PROTOCOL, &[0, 0]), rec(CRITICAL | AEAD_ALGORITHM, &[0, 30])].concat();
        expected.extend(rec(COMPLIANT_128GCM_EXPORT, &[]));
        expected.extend(rec(NEW_COOKIE, &[0xC0; 8]));
        expected.extend(rec(CRITICAL | END_OF_MESSAGE, &[]));
        assert_eq!(response, expected);

        let cmac = parse_request(&offer(&[15, 30], true));
        assert_eq!(cmac, KeRequest::Ntpv4(Negotiated { aead: 15, compliant_128gcm: false }));
        let KeRequest::Ntpv4(cmac) = cmac else { unreachable!() };
        assert_eq!(cmac.exporter_aead(), 15);
        assert_eq!(write_negotiated(cmac, &[], None), write_response(15, &[], None), "no record echoed");
        // A critical-bit compliant record is the same request (chrony ignores the bit for it).
        let mut critical = offer(&[30], false);
        let eom = critical.len() - 4;
        critical.splice(eom..eom, rec(CRITICAL | COMPLIANT_128GCM_EXPORT, &[]));
        assert_eq!(parse_request(&critical), KeRequest::Ntpv4(Negotiated { aead: 30, compliant_128gcm: true }));
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
