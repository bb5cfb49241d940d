//! NTS-KE records, NTS extension fields (RFC 8915) and cookies: the KE record parser never
//! panics; the request walk terminates on any input, every range it returns lies inside the
//! packet (the unique identifier at least 32 bytes, the authenticator last), laying out a reply
//! over it never writes past the request, and no cookie opens unless it was sealed by the key set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::nts::ef::{layout_authenticator, parse_request, write_uid, NtsParse};
use stratum_proto::nts::aead::SUPPORTED;
use stratum_proto::nts::ke::{self, KeRequest};
use stratum_proto::nts::{KeySet, MasterKey, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256, COOKIE_LEN};

fuzz_target!(|input: (u8, &[u8])| {
    let (cookies, bytes) = input;
    // The NTS-KE record parser: any bytes, no panic; an answer only at an End of Message, with
    // an AEAD we have (the compliant GCM-SIV export only with GCM-SIV), and `enabled` obeyed.
    if let KeRequest::Ntpv4(n) = ke::parse_request(bytes) {
        assert!(SUPPORTED.contains(&n.aead));
        assert!(!n.compliant_128gcm || n.aead == AEAD_AES_128_GCM_SIV);
    }
    if let KeRequest::Ntpv4(n) = ke::parse_request_with(bytes, &[AEAD_AES_SIV_CMAC_256]) {
        assert_eq!(n.aead, AEAD_AES_SIV_CMAC_256);
    }
    let mut packet = [0x23u8; 48].to_vec();
    packet.extend_from_slice(bytes);
    match parse_request(&packet) {
        NtsParse::NotNts => {}
        NtsParse::Malformed { uid } => {
            if let Some(uid) = uid {
                assert!(uid.end <= packet.len() && uid.len() >= 32);
            }
        }
        NtsParse::Nts(r) => {
            for range in [&r.uid, &r.cookie, &r.nonce, &r.ciphertext] {
                assert!(range.start >= 48 && range.end <= packet.len());
            }
            assert!(r.uid.len() >= 32 && r.nonce.len() >= 12 && r.ciphertext.len() >= 16);
            assert!(r.authenticator < r.nonce.start && r.ciphertext.end <= packet.len());
            let set = KeySet::new(MasterKey { id: 1, key: [7; 32] }, 2);
            assert!(set.open(&packet[r.cookie.clone()]).is_none(), "a cookie nobody sealed");
            let len = packet.len();
            if let Some(next) = write_uid(&mut packet, r.uid.clone()) {
                let plaintext = usize::from(cookies % 9) * (4 + COOKIE_LEN);
                if let Some((sealed, end)) = layout_authenticator(&mut packet, next, &[0x55; 16], plaintext) {
                    assert!(sealed < end && end <= len);
                }
            }
            assert_eq!(packet.len(), len);
        }
    }
});
