//! The server's side of an NTS request on the data plane (RFC 8915 section 5.7), in place:
//! [`check_request`] opens the cookie with the master keys, checks the authenticator with the
//! client's C2S key and seals the fresh cookies, one per cookie the request carried or made room
//! for (placeholders); [`write_reply`] writes, after the reply's header, the unique identifier
//! and an authenticator sealed with the S2C key around as many of those cookies as fit: the
//! reply is never longer than the request. [`write_nak`] is the NTS NAK (KoD `NTSN` with the unique identifier) for a cookie
//! that does not open or an authenticator that does not verify.
//!
//! The client's AEAD is its cookie's (AES-SIV-CMAC-256 or AES-128-GCM-SIV, whichever its NTS-KE
//! negotiated): the authenticator is opened and the reply sealed with it; the fresh cookies are
//! sealed with the master key as always.
//!
//! Pure: the nonces are the caller's. No allocation.

use core::ops::Range;

use super::aead::{Aead, AesGcmSiv128, AesSivCmac256, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256, TAG_LEN};
use super::cookie::{ClientKeys, KeySet, COOKIE_LEN};
pub use super::cookie::{FreshCookies, MAX_COOKIES};
use super::ef::{layout_authenticator, parse_request, write_field_header, write_uid, NtsParse, NONCE_LEN, NTS_COOKIE};
use super::siv::TagCheck;

/// The kiss code of an NTS NAK.
pub const NTSN: [u8; 4] = *b"NTSN";
/// Bytes one cookie takes in the reply's plaintext: its field header and body.
const COOKIE_FIELD_LEN: usize = 4 + COOKIE_LEN;

/// A request whose cookie opened and whose authenticator verified.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The unique identifier's body in the request (it is moved, not copied, into the reply).
    pub uid: Range<usize>,
    /// How many cookies the reply should carry (1 + placeholders, at most [`MAX_COOKIES`]).
    pub cookies: usize,
    /// The client's keys, from its cookie.
    pub keys: ClientKeys,
}

/// What an NTS check says about a request.
#[derive(Clone, Debug)]
pub enum NtsCheck {
    /// No NTS field: not an NTS request.
    NotNts,
    /// Answer with [`write_reply`].
    Verified(Verified),
    /// A cookie that does not open (unknown key, another server's, changed) or an authenticator
    /// that does not verify: answer with [`write_nak`] echoing this unique identifier.
    Nak { uid: Range<usize> },
    /// NTS fields not as RFC 8915 wants them: nothing is sent.
    Malformed,
}

/// Checks an NTS request in `packet` and seals, into `fresh`, the fresh cookies its reply will
/// carry (one per cookie and placeholder, each with the next of `cookie_nonces`): they need only
/// the opened cookie, so with an AES-SIV-CMAC client they are sealed in the same pass as the
/// authenticator's check. The authenticator's ciphertext, if it has any, is decrypted in place
/// (the reply overwrites it anyway).
pub fn check_request(
    packet: &mut [u8],
    master: &KeySet,
    fresh: &mut FreshCookies,
    cookie_nonces: impl FnMut() -> [u8; NONCE_LEN],
) -> NtsCheck {
    let request = match parse_request(packet) {
        NtsParse::NotNts => return NtsCheck::NotNts,
        NtsParse::Malformed { .. } => return NtsCheck::Malformed,
        NtsParse::Nts(request) => request,
    };
    let nak = NtsCheck::Nak { uid: request.uid.clone() };
    let Some(keys) = master.open(&packet[request.cookie.clone()]) else { return nak };
    let cookies = (1 + usize::from(request.placeholders)).min(MAX_COOKIES);
    let opened = match keys.algorithm {
        AEAD_AES_SIV_CMAC_256 => check_siv_sealing(packet, &request, &keys, master, cookies, cookie_nonces, fresh),
        AEAD_AES_128_GCM_SIV => {
            master.seal_fresh(&keys, cookies, cookie_nonces, fresh, None)
                && open_authenticator::<AesGcmSiv128>(packet, &request, &keys)
        }
        _ => false,
    };
    if !opened {
        return nak;
    }
    NtsCheck::Verified(Verified { uid: request.uid, cookies, keys })
}

/// An AES-SIV-CMAC client's authenticator checked while its fresh cookies are sealed. The
/// usual authenticator (chrony's, NTPsec's) is a tag alone: that is checked in the cookies'
/// pass. One that also encrypts fields is opened after them.
fn check_siv_sealing(
    packet: &mut [u8],
    request: &super::ef::NtsRequest,
    keys: &ClientKeys,
    master: &KeySet,
    cookies: usize,
    cookie_nonces: impl FnMut() -> [u8; NONCE_LEN],
    fresh: &mut FreshCookies,
) -> bool {
    let nonce_ok = (AesSivCmac256::NONCE_MIN..=AesSivCmac256::NONCE_MAX).contains(&request.nonce.len());
    let tag: Option<&[u8; TAG_LEN]> = packet.get(request.ciphertext.clone()).and_then(|t| t.try_into().ok());
    match tag {
        Some(tag) if nonce_ok => {
            let check = TagCheck {
                key: &keys.c2s,
                ad: &packet[..request.authenticator],
                nonce: &packet[request.nonce.clone()],
                tag,
            };
            master.seal_fresh(keys, cookies, cookie_nonces, fresh, Some(check))
        }
        _ => {
            master.seal_fresh(keys, cookies, cookie_nonces, fresh, None)
                && open_authenticator::<AesSivCmac256>(packet, request, keys)
        }
    }
}

/// Opens the request's authenticator with the client's C2S key under `A`; false for a nonce
/// length `A` does not take (as chrony: a NAK) or anything changed.
fn open_authenticator<A: Aead>(packet: &mut [u8], request: &super::ef::NtsRequest, keys: &ClientKeys) -> bool {
    if !(A::NONCE_MIN..=A::NONCE_MAX).contains(&request.nonce.len()) {
        return false;
    }
    let (ad, rest) = packet.split_at_mut(request.authenticator);
    let base = request.authenticator;
    let nonce = &rest[request.nonce.start - base..request.nonce.end - base];
    let mut nonce_copy = [0u8; 64];
    let Some(nonce_copy) = nonce_copy.get_mut(..nonce.len()) else { return false };
    nonce_copy.copy_from_slice(nonce);
    let sealed = &mut rest[request.ciphertext.start - base..request.ciphertext.end - base];
    A::open(&keys.c2s[..A::KEY_LEN], nonce_copy, ad, sealed)
}

/// Writes the reply's NTS fields after the header already in `buf[..48]`, within the request's
/// `request_len` bytes: the unique identifier, then the authenticator (`nonce`, its first 12
/// bytes with AES-128-GCM-SIV) sealing, with the client's AEAD, as many of the cookies
/// [`check_request`] sealed into `fresh` as fit. Returns the reply's length, or `None` if not
/// even the fields without a cookie fit (which a well-formed request always leaves room for).
pub fn write_reply(
    buf: &mut [u8],
    request_len: usize,
    verified: &Verified,
    fresh: &FreshCookies,
    nonce: &[u8; NONCE_LEN],
) -> Option<usize> {
    match verified.keys.algorithm {
        AEAD_AES_SIV_CMAC_256 => write_reply_with::<AesSivCmac256>(buf, request_len, verified, fresh, nonce),
        AEAD_AES_128_GCM_SIV => write_reply_with::<AesGcmSiv128>(buf, request_len, verified, fresh, nonce),
        _ => None,
    }
}

fn write_reply_with<A: Aead>(
    buf: &mut [u8],
    request_len: usize,
    verified: &Verified,
    fresh: &FreshCookies,
    nonce: &[u8; NONCE_LEN],
) -> Option<usize> {
    // chrony's length: ours (16) within the AEAD's bounds.
    let nonce = &nonce[..NONCE_LEN.clamp(A::NONCE_MIN, A::NONCE_MAX)];
    let buf = buf.get_mut(..request_len)?;
    let next = write_uid(buf, verified.uid.clone())?;
    let fixed = next + 8 + nonce.len().next_multiple_of(4) + TAG_LEN;
    let fit = request_len.checked_sub(fixed)? / COOKIE_FIELD_LEN;
    let cookies = &fresh.get()[..verified.cookies.min(fresh.get().len()).min(fit)];
    let plaintext_len = cookies.len() * COOKIE_FIELD_LEN;
    let (sealed, end) = layout_authenticator(buf, next, nonce, plaintext_len)?;
    for (i, cookie) in cookies.iter().enumerate() {
        let at = sealed + A::TEXT_AT + i * COOKIE_FIELD_LEN;
        write_field_header(buf, at, NTS_COOKIE, COOKIE_FIELD_LEN)?;
        buf.get_mut(at + 4..at + COOKIE_FIELD_LEN)?.copy_from_slice(cookie);
    }
    let (ad, rest) = buf.split_at_mut(next);
    let sealed = rest.get_mut(sealed - next..sealed - next + TAG_LEN + plaintext_len)?;
    A::seal(&verified.keys.s2c[..A::KEY_LEN], nonce, ad, sealed).then_some(end)
}

/// Turns the Kiss-o'-Death already in `buf[..48]` into an NTS NAK: kiss code `NTSN` and the
/// request's unique identifier after it. Returns the NAK's length (never more than the request's).
pub fn write_nak(buf: &mut [u8], uid: Range<usize>) -> Option<usize> {
    buf.get_mut(12..16)?.copy_from_slice(&NTSN);
    write_uid(buf, uid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::cookie::MasterKey;
    use super::super::ef::tests::field;
    use super::super::ef::{NTS_AUTHENTICATOR, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
    use super::*;

    pub(crate) fn client_keys() -> ClientKeys {
        ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC2; 32], s2c: [0x5C; 32] }
    }

    /// Keys an NTS-KE gave for AES-128-GCM-SIV: 16 bytes each, zeros after.
    pub(crate) fn gcm_siv_keys() -> ClientKeys {
        let mut keys = ClientKeys { algorithm: AEAD_AES_128_GCM_SIV, c2s: [0; 32], s2c: [0; 32] };
        keys.c2s[..16].fill(0x2C);
        keys.s2c[..16].fill(0xC5);
        keys
    }

    pub(crate) fn master() -> KeySet {
        KeySet::new(MasterKey { id: 77, key: [0x4D; 32] }, 3)
    }

    /// The client's AEAD by its keys' algorithm: (seal, open, text offset, the nonce it sends:
    /// 16 bytes with AES-SIV, 12 with GCM-SIV, as chrony sends them).
    type Seal = fn(&[u8], &[u8], &[u8], &mut [u8]) -> bool;
    fn client_aead(keys: &ClientKeys) -> (Seal, Seal, usize, usize) {
        match keys.algorithm {
            AEAD_AES_SIV_CMAC_256 => (AesSivCmac256::seal, AesSivCmac256::open, AesSivCmac256::TEXT_AT, 16),
            AEAD_AES_128_GCM_SIV => (AesGcmSiv128::seal, AesGcmSiv128::open, AesGcmSiv128::TEXT_AT, 12),
            other => panic!("algorithm {other}"),
        }
    }

    /// A client's NTS request, as chrony builds one: UID, cookie, placeholders, and an
    /// authenticator sealed with C2S (under the keys' AEAD) over everything before it.
    pub(crate) fn client_request(master: &KeySet, keys: &ClientKeys, placeholders: usize) -> Vec<u8> {
        let mut cookie = [0u8; COOKIE_LEN];
        assert!(master.seal(keys, &[0x0C; 16], &mut cookie));
        let mut p = crate::NtpPacket::client_request(4, crate::NtpTimestamp::from_bits(0x1234)).to_bytes().to_vec();
        p.extend(field(UNIQUE_IDENTIFIER, &[0xAB; 32]));
        p.extend(field(NTS_COOKIE, &cookie));
        for _ in 0..placeholders {
            p.extend(field(NTS_COOKIE_PLACEHOLDER, &[0; COOKIE_LEN]));
        }
        let ad_end = p.len();
        let (seal, _, _, nonce_len) = client_aead(keys);
        let key_len = keys.key_len().unwrap();
        let nonce = &[0x11u8; 16][..nonce_len];
        let mut sealed = [0u8; TAG_LEN];
        assert!(seal(&keys.c2s[..key_len], nonce, &p, &mut sealed));
        let mut body = (nonce_len as u16).to_be_bytes().to_vec();
        body.extend(16u16.to_be_bytes());
        body.extend(nonce);
        body.extend(sealed);
        p.extend(field(NTS_AUTHENTICATOR, &body));
        assert_eq!(p.len(), ad_end + 24 + nonce_len);
        p
    }

    /// What a client does with the reply: the UID matches, the authenticator opens with S2C,
    /// and the cookies inside (each opens with the master keys to the same client keys).
    pub(crate) fn client_check_reply(reply: &[u8], keys: &ClientKeys, master: &KeySet) -> usize {
        assert_eq!(&reply[48..52], &[0x01, 0x04, 0, 36]);
        assert_eq!(&reply[52..84], &[0xAB; 32]);
        let at = 84;
        assert_eq!(reply[at..at + 2], NTS_AUTHENTICATOR.to_be_bytes());
        let nonce_len = u16::from_be_bytes([reply[at + 4], reply[at + 5]]) as usize;
        let ct_len = u16::from_be_bytes([reply[at + 6], reply[at + 7]]) as usize;
        let nonce = &reply[at + 8..at + 8 + nonce_len];
        let start = at + 8 + nonce_len;
        let mut sealed = reply[start..start + ct_len].to_vec();
        let (_, open, text_at, client_nonce_len) = client_aead(keys);
        assert_eq!(nonce_len, client_nonce_len, "the AEAD's nonce length");
        let key_len = keys.key_len().unwrap();
        assert!(open(&keys.s2c[..key_len], nonce, &reply[..at], &mut sealed), "reply authenticates with S2C");
        let plaintext = &sealed[text_at..text_at + ct_len - TAG_LEN];
        let mut n = 0;
        for chunk in plaintext.chunks(COOKIE_FIELD_LEN) {
            assert_eq!(chunk[..4], [0x02, 0x04, 0, 108]);
            assert_eq!(master.open(&chunk[4..]).as_ref(), Some(keys), "a fresh cookie for the same keys");
            n += 1;
        }
        n
    }

    fn nonces() -> impl FnMut() -> [u8; 16] {
        let mut i = 0u8;
        move || {
            i += 1;
            [i; 16]
        }
    }

    /// check_request with a fresh scratch and counter nonces: (the check, the cookies sealed).
    fn check(p: &mut [u8], master: &KeySet) -> (NtsCheck, FreshCookies) {
        let mut fresh = FreshCookies::default();
        let check = check_request(p, master, &mut fresh, nonces());
        (check, fresh)
    }

    #[test]
    fn a_valid_request_gets_an_authenticated_reply_with_fresh_cookies_no_longer_than_it() {
        let (master, keys) = (master(), client_keys());
        for placeholders in [0, 1, 3, 7, 9] {
            let mut p = client_request(&master, &keys, placeholders);
            let len = p.len();
            let (NtsCheck::Verified(v), fresh) = check(&mut p, &master) else { panic!("verified") };
            assert_eq!(v.cookies, (1 + placeholders).min(MAX_COOKIES));
            p[..48].copy_from_slice(&[0x24; 48]);
            let reply_len = write_reply(&mut p, len, &v, &fresh, &[0x99; 16]).unwrap();
            assert!(reply_len <= len, "{reply_len} > {len}");
            let cookies = client_check_reply(&p[..reply_len], &keys, &master);
            assert_eq!(cookies, v.cookies, "placeholders {placeholders}");
            if placeholders < MAX_COOKIES {
                assert_eq!(reply_len, len, "placeholders make exactly the room the cookies need");
            }
        }
    }

    #[test]
    fn unknown_or_changed_cookies_and_bad_authenticators_get_a_nak() {
        let (master, keys) = (master(), client_keys());
        let good = client_request(&master, &keys, 0);
        let other = KeySet::new(MasterKey { id: 77, key: [0x4E; 32] }, 1);
        let rotated_away = {
            let mut m = master.clone();
            for k in 0..3 {
                m.rotate([k; 32]);
            }
            m
        };
        for (what, set, flip) in [
            ("another server's key", &other, None),
            ("rotated away", &rotated_away, None),
            ("cookie changed", &master, Some(100)),
            ("authenticated part changed", &master, Some(20)),
            ("tag changed", &master, Some(good.len() - 1)),
        ] {
            let mut p = good.clone();
            if let Some(i) = flip {
                p[i] ^= 1;
            }
            match check(&mut p, set).0 {
                NtsCheck::Nak { uid } => assert_eq!(uid, 52..84, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            let len = write_nak(&mut p, 52..84).unwrap();
            assert_eq!(len, 84);
            assert_eq!(&p[12..16], b"NTSN");
            assert_eq!(&p[52..84], &[0xAB; 32]);
        }
    }

    #[test]
    fn not_nts_and_malformed() {
        let mut basic = crate::NtpPacket::client_request(4, crate::NtpTimestamp::ZERO).to_bytes().to_vec();
        assert!(matches!(check(&mut basic, &master()).0, NtsCheck::NotNts));
        let good = client_request(&master(), &client_keys(), 0);
        let mut cut = good[..good.len() - 40].to_vec();
        assert!(matches!(check(&mut cut, &master()).0, NtsCheck::Malformed));
    }

    #[test]
    fn a_cookie_of_another_length_leaves_fewer_cookies_never_a_longer_reply() {
        // A request whose fields leave room for the UID and an empty authenticator only.
        let (master, keys) = (master(), client_keys());
        let verified = Verified { uid: 52..84, cookies: 3, keys };
        let mut buf = vec![0u8; 84 + 40 + 50];
        buf[52..84].fill(0xAB);
        let len = buf.len();
        let mut fresh = FreshCookies::default();
        assert!(master.seal_fresh(&verified.keys, 3, nonces(), &mut fresh, None));
        let reply = write_reply(&mut buf, len, &verified, &fresh, &[1; 16]).unwrap();
        assert!(reply <= len);
        assert_eq!(client_check_reply(&buf[..reply], &verified.keys, &master), 0);
    }

    /// A client whose NTS-KE chose AES-128-GCM-SIV: its request (12-byte nonce, tag after the
    /// ciphertext) opens with its cookie's GCM-SIV C2S key and the reply is sealed with GCM-SIV
    /// S2C around fresh cookies that carry the same GCM-SIV keys; never longer than the request.
    #[test]
    fn a_gcm_siv_client_gets_a_gcm_siv_reply() {
        let (master, keys) = (master(), gcm_siv_keys());
        for placeholders in [0, 1, 7] {
            let mut p = client_request(&master, &keys, placeholders);
            let len = p.len();
            let (NtsCheck::Verified(v), fresh) = check(&mut p, &master) else { panic!("verified") };
            assert_eq!(v.keys, keys);
            p[..48].copy_from_slice(&[0x24; 48]);
            let reply_len = write_reply(&mut p, len, &v, &fresh, &[0x99; 16]).unwrap();
            assert_eq!(reply_len, len, "placeholders {placeholders}");
            assert_eq!(&p[84 + 4..84 + 6], &[0, 12], "a 12-byte nonce");
            let ciphertext_len = 16 + 108 * (1 + placeholders as u16);
            assert_eq!(p[84 + 6..84 + 8], ciphertext_len.to_be_bytes());
            assert_eq!(client_check_reply(&p[..reply_len], &keys, &master), 1 + placeholders);
        }
    }

    /// The two AEADs do not stand in for each other: a GCM-SIV request under an AES-SIV cookie
    /// (or the other way round), a 16-byte nonce with GCM-SIV, a changed GCM-SIV request: NAK.
    #[test]
    fn a_request_under_the_other_aead_or_a_wrong_nonce_gets_a_nak() {
        let master = master();
        let gcm = gcm_siv_keys();
        let cmac_under_gcm_cookie = {
            let mut cmac_keys = client_keys();
            cmac_keys.c2s[..16].copy_from_slice(&gcm.c2s[..16]);
            let mut p = client_request(&master, &cmac_keys, 0);
            let mut cookie = [0u8; COOKIE_LEN];
            assert!(master.seal(&gcm, &[0x0C; 16], &mut cookie));
            p[88..88 + COOKIE_LEN].copy_from_slice(&cookie);
            p
        };
        let gcm_under_cmac_cookie = {
            let mut p = client_request(&master, &gcm, 0);
            let mut cookie = [0u8; COOKIE_LEN];
            assert!(master.seal(&client_keys(), &[0x0C; 16], &mut cookie));
            p[88..88 + COOKIE_LEN].copy_from_slice(&cookie);
            p
        };
        let mut changed = client_request(&master, &gcm, 0);
        changed[60] ^= 1;
        let mut tag_changed = client_request(&master, &gcm, 0);
        *tag_changed.last_mut().unwrap() ^= 1;
        let mut unknown = gcm.clone();
        unknown.algorithm = 31;
        let unknown_algorithm = {
            let mut p = client_request(&master, &gcm, 0);
            let mut cookie = [0u8; COOKIE_LEN];
            assert!(master.seal(&unknown, &[0x0C; 16], &mut cookie));
            p[88..88 + COOKIE_LEN].copy_from_slice(&cookie);
            p
        };
        for (what, mut p) in [
            ("SIV-CMAC request, GCM-SIV cookie", cmac_under_gcm_cookie),
            ("GCM-SIV request, SIV-CMAC cookie", gcm_under_cmac_cookie),
            ("GCM-SIV request changed", changed),
            ("GCM-SIV tag changed", tag_changed),
            ("a cookie naming an AEAD we do not have", unknown_algorithm),
        ] {
            assert!(matches!(check(&mut p, &master).0, NtsCheck::Nak { .. }), "{what}");
        }
        let verified = Verified { uid: 52..84, cookies: 1, keys: unknown };
        assert_eq!(write_reply(&mut [0u8; 400], 400, &verified, &FreshCookies::default(), &[1; 16]), None);
    }

    /// A nonce of 12 to 15 bytes with AES-SIV is within the parse's floor but under AES-SIV's
    /// (16): a NAK, as chrony's decrypt failure is.
    #[test]
    fn a_short_nonce_with_aes_siv_gets_a_nak() {
        let (master, keys) = (master(), client_keys());
        let mut p = client_request(&master, &keys, 0);
        let auth = p.len() - 40;
        p[auth + 4..auth + 6].copy_from_slice(&12u16.to_be_bytes());
        assert!(matches!(check(&mut p, &master).0, NtsCheck::Nak { .. }));
    }

    /// An AES-SIV authenticator that also encrypts a field (RFC 8915 allows it; chrony and
    /// NTPsec send none) is opened after the cookies are sealed, not in their pass: verified,
    /// and a change in its ciphertext is a NAK.
    #[test]
    fn an_aes_siv_authenticator_with_encrypted_fields_verifies() {
        let (master, keys) = (master(), client_keys());
        let mut p = client_request(&master, &keys, 1);
        let auth = p.len() - 40;
        p.truncate(auth);
        let mut sealed = vec![0u8; 16 + 20];
        sealed[16..].copy_from_slice(&super::super::ef::tests::field(0x7777, &[5; 16]));
        assert!(AesSivCmac256::seal(&keys.c2s, &[0x11; 16], &p, &mut sealed));
        let mut body = 16u16.to_be_bytes().to_vec();
        body.extend((sealed.len() as u16).to_be_bytes());
        body.extend([0x11; 16]);
        body.extend(&sealed);
        p.extend(super::super::ef::tests::field(NTS_AUTHENTICATOR, &body));
        let mut bad = p.clone();
        let len = p.len();
        let (NtsCheck::Verified(v), fresh) = check(&mut p, &master) else { panic!("verified") };
        assert_eq!((v.cookies, fresh.get().len()), (2, 2));
        p[..48].copy_from_slice(&[0x24; 48]);
        let reply_len = write_reply(&mut p, len, &v, &fresh, &[0x99; 16]).unwrap();
        assert_eq!(client_check_reply(&p[..reply_len], &keys, &master), 2);
        bad[len - 3] ^= 1;
        assert!(matches!(check(&mut bad, &master).0, NtsCheck::Nak { .. }));
    }
}
