//! NTS extension fields (RFC 8915 section 5): finding them in a request and writing them into a
//! reply, in place, without allocation.
//!
//! A request is NTS when it carries any of the four NTS fields. It is well-formed when it has
//! exactly one unique identifier (at least 32 bytes), exactly one cookie, any number of cookie
//! placeholders, and an authenticator as its last field (nothing after it is authenticated, so
//! nothing may follow). Fields of other types are allowed and covered by the authenticator.

use core::ops::Range;

use crate::packet::HEADER_LEN;

use super::aead::TAG_LEN;

/// Unique Identifier (RFC 8915 section 5.3).
pub const UNIQUE_IDENTIFIER: u16 = 0x0104;
/// NTS Cookie (section 5.4).
pub const NTS_COOKIE: u16 = 0x0204;
/// NTS Cookie Placeholder (section 5.5).
pub const NTS_COOKIE_PLACEHOLDER: u16 = 0x0304;
/// NTS Authenticator and Encrypted Extension Fields (section 5.6).
pub const NTS_AUTHENTICATOR: u16 = 0x0404;

/// Shortest unique identifier a client may send (section 5.3).
pub const MIN_UID_LEN: usize = 32;
/// The length of our nonces with AES-SIV-CMAC (chrony's rule: 16 bytes, the AES-SIV block; also
/// the shortest an AES-SIV request may carry). AES-128-GCM-SIV takes exactly 12.
pub const NONCE_LEN: usize = 16;
/// Shortest nonce any of our AEADs takes (AES-128-GCM-SIV's 12): the parse's floor, the AEAD's
/// own bounds are checked once the cookie says which it is.
pub const MIN_NONCE_LEN: usize = 12;
/// Shortest extension field (RFC 7822).
const MIN_FIELD_LEN: usize = 16;

/// Where the NTS parts of a well-formed NTS request are, as offsets into the whole packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtsRequest {
    /// The unique identifier's body (echoed in the reply).
    pub uid: Range<usize>,
    /// The cookie's body.
    pub cookie: Range<usize>,
    /// How many cookie placeholders (each makes room for one more cookie in the reply).
    pub placeholders: u16,
    /// Where the authenticator field starts: everything before it is its associated data.
    pub authenticator: usize,
    /// The authenticator's nonce.
    pub nonce: Range<usize>,
    /// Its ciphertext (the SIV tag first).
    pub ciphertext: Range<usize>,
}

/// What [`parse_request`] found after the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NtsParse {
    /// No NTS field at all: a basic (or MAC) request.
    NotNts,
    /// A well-formed NTS request.
    Nts(NtsRequest),
    /// NTS fields, but not as RFC 8915 wants them; the unique identifier, if one was found
    /// (a NAK may echo it).
    Malformed { uid: Option<Range<usize>> },
}

fn be16(b: &[u8], at: usize) -> usize {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]) as usize,
        _ => 0,
    }
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walks the extension fields after the header of `packet` (bounded by its length: each step
/// consumes at least 16 bytes).
pub fn parse_request(packet: &[u8]) -> NtsParse {
    let mut at = HEADER_LEN;
    let (mut uid, mut cookie, mut auth) = (None, None, None);
    let (mut uids, mut cookies, mut placeholders) = (0u16, 0u16, 0u16);
    let mut after_auth = false;
    let mut nts = false;
    let mut bad = false;
    while at + 4 <= packet.len() {
        let kind = be16(packet, at) as u16;
        let len = be16(packet, at + 2);
        if len < MIN_FIELD_LEN || len % 4 != 0 || at + len > packet.len() {
            // Not an extension field: a MAC, or garbage. NTS requests carry no MAC.
            bad = true;
            break;
        }
        let body = at + 4..at + len;
        if auth.is_some() {
            after_auth = true;
        }
        match kind {
            UNIQUE_IDENTIFIER => {
                nts = true;
                uids += 1;
                uid = Some(body);
            }
            NTS_COOKIE => {
                nts = true;
                cookies += 1;
                cookie = Some(body);
            }
            NTS_COOKIE_PLACEHOLDER => {
                nts = true;
                placeholders = placeholders.saturating_add(1);
            }
            NTS_AUTHENTICATOR => {
                nts = true;
                auth = match (auth, authenticator_parts(packet, at, len)) {
                    (None, Some(parts)) => Some(parts),
                    _ => {
                        bad = true;
                        None
                    }
                };
            }
            _ => {}
        }
        at += len;
    }
    if !nts {
        return NtsParse::NotNts;
    }
    let uid = uid.filter(|u| uids == 1 && u.len() >= MIN_UID_LEN);
    match (uid, cookie, auth) {
        (Some(uid), Some(cookie), Some((authenticator, nonce, ciphertext)))
            if !bad && !after_auth && cookies == 1 && at == packet.len() =>
        {
            NtsParse::Nts(NtsRequest { uid, cookie, placeholders, authenticator, nonce, ciphertext })
        }
        (uid, _, _) => NtsParse::Malformed { uid },
    }
}

/// The authenticator field at `at` (of `len` bytes): (its start, the nonce, the ciphertext).
fn authenticator_parts(packet: &[u8], at: usize, len: usize) -> Option<(usize, Range<usize>, Range<usize>)> {
    let nonce_len = be16(packet, at + 4);
    let ciphertext_len = be16(packet, at + 6);
    let nonce = at + 8..at + 8 + nonce_len;
    let ciphertext_start = at + 8 + pad4(nonce_len);
    let ciphertext = ciphertext_start..ciphertext_start + ciphertext_len;
    let fits = ciphertext_start + pad4(ciphertext_len) <= at + len;
    (fits && nonce_len >= MIN_NONCE_LEN && ciphertext_len >= TAG_LEN).then_some((at, nonce, ciphertext))
}

/// Writes an extension field header (type and length) at `buf[at..at + 4]`.
pub fn write_field_header(buf: &mut [u8], at: usize, kind: u16, len: usize) -> Option<()> {
    let header = buf.get_mut(at..at + 4)?;
    header[..2].copy_from_slice(&kind.to_be_bytes());
    header[2..].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    Some(())
}

/// The reply's unique identifier: the request's (at `uid`, anywhere in `buf`) moved to right
/// after the header. Returns where the next field starts.
pub fn write_uid(buf: &mut [u8], uid: Range<usize>) -> Option<usize> {
    let len = uid.len();
    let end = HEADER_LEN + 4 + len;
    if uid.end > buf.len() || end > buf.len() || len % 4 != 0 {
        return None;
    }
    buf.copy_within(uid, HEADER_LEN + 4);
    write_field_header(buf, HEADER_LEN, UNIQUE_IDENTIFIER, 4 + len)?;
    Some(end)
}

/// Lays out an authenticator field at `at` for a plaintext of `plaintext_len` bytes: writes its
/// headers and `nonce`, and returns (where the sealed part starts: the plaintext to encrypt in
/// place and the tag, in the AEAD's order; the field's end). The caller writes the plaintext at
/// `sealed + A::TEXT_AT`.
pub fn layout_authenticator(buf: &mut [u8], at: usize, nonce: &[u8], plaintext_len: usize) -> Option<(usize, usize)> {
    let ciphertext_len = TAG_LEN + plaintext_len;
    let sealed = at + 8 + pad4(nonce.len());
    let end = sealed + pad4(ciphertext_len);
    if end > buf.len() {
        return None;
    }
    write_field_header(buf, at, NTS_AUTHENTICATOR, end - at)?;
    buf[at + 4..at + 6].copy_from_slice(&u16::try_from(nonce.len()).ok()?.to_be_bytes());
    buf[at + 6..at + 8].copy_from_slice(&u16::try_from(ciphertext_len).ok()?.to_be_bytes());
    buf[at + 8..at + 8 + nonce.len()].copy_from_slice(nonce);
    buf[at + 8 + nonce.len()..sealed].fill(0);
    buf[sealed + ciphertext_len..end].fill(0);
    Some((sealed, end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn field(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut f = kind.to_be_bytes().to_vec();
        f.extend(((body.len() + 4) as u16).to_be_bytes());
        f.extend(body);
        f
    }

    /// A request as chrony sends one: UID, cookie, `placeholders` placeholders, authenticator
    /// with a 16-byte nonce and an empty plaintext (the tag only).
    pub(crate) fn request(cookie: &[u8], placeholders: usize) -> Vec<u8> {
        let mut p = vec![0x23u8; HEADER_LEN];
        p.extend(field(UNIQUE_IDENTIFIER, &[0xAB; 32]));
        p.extend(field(NTS_COOKIE, cookie));
        for _ in 0..placeholders {
            p.extend(field(NTS_COOKIE_PLACEHOLDER, &vec![0; cookie.len()]));
        }
        let mut auth = Vec::new();
        auth.extend(16u16.to_be_bytes());
        auth.extend(16u16.to_be_bytes());
        auth.extend([0x11; 16]);
        auth.extend([0x22; 16]);
        p.extend(field(NTS_AUTHENTICATOR, &auth));
        p
    }

    #[test]
    fn finds_every_part_of_a_chrony_shaped_request() {
        let p = request(&[0xC0; 104], 2);
        let NtsParse::Nts(r) = parse_request(&p) else { panic!("{:?}", parse_request(&p)) };
        assert_eq!(r.uid, 52..84);
        assert_eq!(&p[r.uid.clone()], &[0xAB; 32]);
        assert_eq!(r.cookie, 88..192);
        assert_eq!(r.placeholders, 2);
        assert_eq!(r.authenticator, 192 + 2 * 108);
        assert_eq!(&p[r.nonce.clone()], &[0x11; 16]);
        assert_eq!(&p[r.ciphertext.clone()], &[0x22; 16]);
        assert_eq!(r.ciphertext.end, p.len());
    }

    #[test]
    fn basic_and_foreign_fields_are_not_nts() {
        assert_eq!(parse_request(&[0x23; 48]), NtsParse::NotNts);
        let mut p = vec![0x23u8; 48];
        p.extend(field(0x2005, &[1; 12]));
        assert_eq!(parse_request(&p), NtsParse::NotNts);
    }

    #[test]
    fn malformed_nts_requests() {
        let good = request(&[0xC0; 104], 0);
        let uid = Some(52..84);
        // No authenticator; two cookies; a field after the authenticator; a short UID; two UIDs.
        let no_auth = good[..good.len() - 40].to_vec();
        assert_eq!(parse_request(&no_auth), NtsParse::Malformed { uid: uid.clone() });
        let mut two_cookies = good[..84].to_vec();
        two_cookies.extend(field(NTS_COOKIE, &[1; 12]));
        two_cookies.extend(&good[84..]);
        assert_eq!(parse_request(&two_cookies), NtsParse::Malformed { uid: uid.clone() });
        let mut trailing = good.clone();
        trailing.extend(field(0x2005, &[0; 12]));
        assert_eq!(parse_request(&trailing), NtsParse::Malformed { uid: uid.clone() });
        let mut short_uid = vec![0x23u8; 48];
        short_uid.extend(field(UNIQUE_IDENTIFIER, &[0xAB; 28]));
        short_uid.extend(&good[84..]);
        assert_eq!(parse_request(&short_uid), NtsParse::Malformed { uid: None });
        let mut two_uids = good[..84].to_vec();
        two_uids.extend(&good[48..]);
        assert!(matches!(parse_request(&two_uids), NtsParse::Malformed { uid: None }));
        // A MAC after the fields; a nonce shorter than 12 (any AEAD's); a ciphertext running
        // past its field.
        let mut mac = good.clone();
        mac.extend([0, 0, 0, 1]);
        mac.extend([0; 16]);
        assert!(matches!(parse_request(&mac), NtsParse::Malformed { .. }));
        let mut short_nonce = good.clone();
        let a = short_nonce.len() - 36;
        short_nonce[a..a + 2].copy_from_slice(&8u16.to_be_bytes());
        assert!(matches!(parse_request(&short_nonce), NtsParse::Malformed { .. }));
        let mut long_ciphertext = good.clone();
        long_ciphertext[a + 2..a + 4].copy_from_slice(&20u16.to_be_bytes());
        assert!(matches!(parse_request(&long_ciphertext), NtsParse::Malformed { .. }));
    }

    #[test]
    fn reply_fields_are_laid_out_in_place() {
        let mut p = request(&[0xC0; 104], 1);
        let NtsParse::Nts(r) = parse_request(&p) else { panic!() };
        let next = write_uid(&mut p, r.uid.clone()).unwrap();
        assert_eq!(next, 84);
        assert_eq!(&p[48..52], &[0x01, 0x04, 0, 36]);
        let (sealed, end) = layout_authenticator(&mut p, next, &[0x55; 16], 2 * 108).unwrap();
        assert_eq!((sealed, end), (84 + 24, 84 + 24 + 16 + 216));
        assert!(end <= p.len(), "never longer than the request");
        let reparsed = parse_request(&p[..end]);
        assert!(matches!(reparsed, NtsParse::Malformed { .. }), "a reply has no cookie: {reparsed:?}");
        assert_eq!(layout_authenticator(&mut p[..200], next, &[0x55; 16], 216), None, "no room");
    }
}
