//! The AEAD behind NTS (RFC 8915 section 5.1): AEAD_AES_SIV_CMAC_256 (RFC 5297), for the
//! authenticator of NTS packets and for cookies under the server's master key.
//!
//! Behind [`Aead`] so that the packet and cookie code never names a cipher: another algorithm
//! (AES-128-GCM-SIV, when a trusted crate provides it) is another implementation. In place and
//! detached (the 16-byte SIV tag first, as RFC 5297 lays it out and NTS carries it), with no
//! allocation; the nonce is always the caller's (proto reads no randomness).

use super::siv;

/// RFC 5297's synthetic IV, which is also the tag: it precedes the ciphertext.
pub const TAG_LEN: usize = siv::TAG_LEN;

/// IANA's AEAD algorithm numbers (RFC 5116 registry), as the NTS-KE record carries them.
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;

/// An AEAD with associated data and a nonce. `sealed` is always `tag || ciphertext`.
pub trait Aead {
    /// The algorithm's IANA number.
    const ALGORITHM: u16;
    /// Key length in bytes.
    const KEY_LEN: usize;

    /// Encrypts `buf[TAG_LEN..]` in place and writes the tag into `buf[..TAG_LEN]`. False for a
    /// key of the wrong length or a `buf` shorter than the tag.
    fn seal(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool;

    /// Checks the tag in `buf[..TAG_LEN]` and decrypts `buf[TAG_LEN..]` in place. False (and the
    /// contents of `buf` unspecified) when anything was changed or the key is wrong.
    fn open(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool;
}

/// AEAD_AES_SIV_CMAC_256: AES-SIV with a 32-byte key (two AES-128 keys), the associated data and
/// then the nonce as S2V's components (RFC 5297 section 3).
#[derive(Clone, Copy, Debug, Default)]
pub struct AesSivCmac256;

impl Aead for AesSivCmac256 {
    const ALGORITHM: u16 = AEAD_AES_SIV_CMAC_256;
    const KEY_LEN: usize = 32;

    fn seal(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let Ok(key) = key.try_into() else { return false };
        siv::seal(key, ad, nonce, buf)
    }

    fn open(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let Ok(key) = key.try_into() else { return false };
        siv::open(key, ad, nonce, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_siv::siv::Aes128Siv;
    use aes_siv::KeyInit;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 5297 appendix A.2 (nonce-based: two AD components, then the nonce, as S2V's vector):
    /// the crate our seal and open call computes the RFC's answer.
    #[test]
    fn rfc5297_a2_nonce_based() {
        let key = hex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
        let ad1 = hex("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
        let ad2 = hex("102030405060708090a0");
        let nonce = hex("09f911029d74e35bd84156c5635688c0");
        let plaintext =
            hex("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553");
        let expected = hex(
            "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d",
        );
        let mut cipher = Aes128Siv::new_from_slice(&key).unwrap();
        let mut text = plaintext.clone();
        let tag = cipher.encrypt_in_place_detached([&ad1[..], &ad2, &nonce], &mut text).unwrap();
        assert_eq!([&tag[..], &text].concat(), expected);
        let mut back = text.clone();
        cipher.decrypt_in_place_detached([&ad1[..], &ad2, &nonce], &mut back, &tag).unwrap();
        assert_eq!(back, plaintext);
    }

    /// RFC 5297 appendix A.1 (deterministic: one AD component, no nonce).
    #[test]
    fn rfc5297_a1_deterministic() {
        let key = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let ad = hex("101112131415161718191a1b1c1d1e1f2021222324252627");
        let plaintext = hex("112233445566778899aabbccddee");
        let expected = hex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c");
        let mut cipher = Aes128Siv::new_from_slice(&key).unwrap();
        let mut text = plaintext.clone();
        let tag = cipher.encrypt_in_place_detached([&ad[..]], &mut text).unwrap();
        assert_eq!([&tag[..], &text].concat(), expected);
    }

    /// Seal is RFC 5297 AEAD with S2V over (AD, nonce) in that order (RFC 8915 section 5.6 and
    /// RFC 5297 section 3: the nonce is the last component), tag first; open inverts it and
    /// refuses any change.
    #[test]
    fn seal_is_rfc5297_with_ad_then_nonce() {
        let key = hex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
        let ad = hex("00112233445566778899aabbccddeeff");
        let nonce = hex("09f911029d74e35bd84156c5635688c0");
        let plaintext = b"this is some plaintext to encrypt".to_vec();
        let mut cipher = Aes128Siv::new_from_slice(&key).unwrap();
        let mut expected = plaintext.clone();
        let tag = cipher.encrypt_in_place_detached([&ad[..], &nonce], &mut expected).unwrap();

        let mut buf = [vec![0u8; TAG_LEN], plaintext.clone()].concat();
        assert!(AesSivCmac256::seal(&key, &nonce, &ad, &mut buf));
        assert_eq!(buf[..TAG_LEN], tag[..]);
        assert_eq!(buf[TAG_LEN..], expected[..]);
        let sealed = buf.clone();
        assert!(AesSivCmac256::open(&key, &nonce, &ad, &mut buf));
        assert_eq!(buf[TAG_LEN..], plaintext[..]);

        // Any change anywhere is refused.
        for (i, what) in [(0, "tag"), (TAG_LEN + 3, "ciphertext")] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(!AesSivCmac256::open(&key, &nonce, &ad, &mut bad), "{what}");
        }
        let mut other_nonce = nonce.clone();
        other_nonce[0] ^= 1;
        assert!(!AesSivCmac256::open(&key, &other_nonce, &ad, &mut sealed.clone()), "nonce");
        assert!(!AesSivCmac256::open(&key, &nonce, &ad[1..], &mut sealed.clone()), "associated data");
        let mut other_key = key.clone();
        other_key[31] ^= 1;
        assert!(!AesSivCmac256::open(&other_key, &nonce, &ad, &mut sealed.clone()), "key");
    }

    #[test]
    fn wrong_sizes_are_refused_not_panics() {
        assert!(!AesSivCmac256::seal(&[0; 16], &[0; 16], &[], &mut [0; 32]), "16-byte key");
        assert!(!AesSivCmac256::seal(&[0; 32], &[0; 16], &[], &mut [0; 15]), "no room for the tag");
        assert!(!AesSivCmac256::open(&[0; 32], &[0; 16], &[], &mut [0; 15]));
        let mut empty = [0u8; TAG_LEN];
        assert!(AesSivCmac256::seal(&[7; 32], &[1; 16], b"ad", &mut empty), "empty plaintext");
        assert!(AesSivCmac256::open(&[7; 32], &[1; 16], b"ad", &mut empty));
    }
}
