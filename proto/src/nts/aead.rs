//! The AEADs behind NTS (RFC 8915 section 5.1): AEAD_AES_SIV_CMAC_256 (RFC 5297, IANA 15), for
//! the authenticator of NTS packets and for cookies under the server's master key, and
//! AEAD_AES_128_GCM_SIV (RFC 8452, IANA 30) for the authenticator when a client's NTS-KE
//! negotiated it (cookies stay AES-SIV-CMAC under the master key whatever the client's AEAD).
//!
//! Behind [`Aead`] so that the packet and cookie code never names a cipher. In place and
//! detached, with no allocation; the nonce is always the caller's (proto reads no randomness).
//! The sealed buffer is laid out as each algorithm's RFC and NTS carry it: AES-SIV puts its
//! 16-byte synthetic IV (the tag) first, AES-GCM-SIV its 16-byte tag last ([`Aead::TEXT_AT`]
//! says where the text is).

use super::gcm_siv;
use super::siv;

/// Both AEADs' tag length (RFC 5297's synthetic IV, RFC 8452's tag).
pub const TAG_LEN: usize = siv::TAG_LEN;

/// IANA's AEAD algorithm numbers (RFC 5116 registry), as the NTS-KE record carries them.
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;
pub const AEAD_AES_128_GCM_SIV: u16 = 30;

/// The AEADs a client's keys may use, in chrony's default order (its `ntsaeads` "30 15":
/// AES-128-GCM-SIV first for its shorter keys).
pub const SUPPORTED: [u16; 2] = [AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256];

/// The key length of a supported AEAD (what the TLS exporter gives per direction).
pub const fn key_len(algorithm: u16) -> Option<usize> {
    match algorithm {
        AEAD_AES_SIV_CMAC_256 => Some(AesSivCmac256::KEY_LEN),
        AEAD_AES_128_GCM_SIV => Some(AesGcmSiv128::KEY_LEN),
        _ => None,
    }
}

/// An AEAD with associated data and a nonce. `sealed` is the text with the tag before it
/// ([`Aead::TEXT_AT`] = [`TAG_LEN`]) or after it (`TEXT_AT` = 0), always `TAG_LEN` longer
/// than the text.
pub trait Aead {
    /// The algorithm's IANA number.
    const ALGORITHM: u16;
    /// Key length in bytes.
    const KEY_LEN: usize;
    /// Shortest and longest nonce taken in a request (RFC 5116 N_MIN and N_MAX, with RFC 8915's
    /// and chrony's 16-byte floor for AES-SIV).
    const NONCE_MIN: usize;
    const NONCE_MAX: usize;
    /// Where the text starts in a sealed buffer.
    const TEXT_AT: usize;

    /// Encrypts the text in `buf` in place and writes the tag beside it. False for a key or
    /// nonce of the wrong length or a `buf` shorter than the tag.
    fn seal(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool;

    /// Checks the tag in `buf` and decrypts its text in place. False (and the contents of `buf`
    /// unspecified) when anything was changed or the key is wrong.
    fn open(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool;
}

/// AEAD_AES_SIV_CMAC_256: AES-SIV with a 32-byte key (two AES-128 keys), the associated data and
/// then the nonce as S2V's components (RFC 5297 section 3). Tag first.
#[derive(Clone, Copy, Debug, Default)]
pub struct AesSivCmac256;

impl Aead for AesSivCmac256 {
    const ALGORITHM: u16 = AEAD_AES_SIV_CMAC_256;
    const KEY_LEN: usize = 32;
    const NONCE_MIN: usize = 16;
    const NONCE_MAX: usize = usize::MAX;
    const TEXT_AT: usize = TAG_LEN;

    fn seal(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let Ok(key) = key.try_into() else { return false };
        siv::seal(key, ad, nonce, buf)
    }

    fn open(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let Ok(key) = key.try_into() else { return false };
        siv::open(key, ad, nonce, buf)
    }
}

/// AEAD_AES_128_GCM_SIV (RFC 8452): a 16-byte key, a 12-byte nonce, the 16-byte tag after the
/// ciphertext (as Nettle, and so chrony, lay it out). proto's own composition of `aes` and
/// `polyval` ([`gcm_siv`], AES-NI and CLMUL fixed at build time by the x86-64 CPU baseline, else
/// detected at run time), checked against RustCrypto's `aes-gcm-siv`; the key schedules are made
/// per call (the per-nonce key derivation makes one anyway), on the stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct AesGcmSiv128;

impl Aead for AesGcmSiv128 {
    const ALGORITHM: u16 = AEAD_AES_128_GCM_SIV;
    const KEY_LEN: usize = gcm_siv::KEY_LEN;
    const NONCE_MIN: usize = gcm_siv::NONCE_LEN;
    const NONCE_MAX: usize = gcm_siv::NONCE_LEN;
    const TEXT_AT: usize = 0;

    fn seal(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let (Ok(key), Ok(nonce)) = (key.try_into(), nonce.try_into()) else { return false };
        let Some(at) = buf.len().checked_sub(TAG_LEN) else { return false };
        let (text, tag_out) = buf.split_at_mut(at);
        tag_out.copy_from_slice(&gcm_siv::seal(key, nonce, ad, text));
        true
    }

    fn open(key: &[u8], nonce: &[u8], ad: &[u8], buf: &mut [u8]) -> bool {
        let (Ok(key), Ok(nonce)) = (key.try_into(), nonce.try_into()) else { return false };
        let Some(at) = buf.len().checked_sub(TAG_LEN) else { return false };
        let (text, tag) = buf.split_at_mut(at);
        let Ok(tag) = <&[u8; TAG_LEN]>::try_from(&*tag) else { return false };
        gcm_siv::open(key, nonce, ad, text, tag)
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

    /// RFC 8452 appendix C.1 (AEAD_AES_128_GCM_SIV): (key, nonce, AD, plaintext, result =
    /// ciphertext || tag); our seal gives the RFC's result, open inverts it.
    const RFC8452_C1: &[(&str, &str, &str, &str, &str)] = &[
        ("01000000000000000000000000000000", "030000000000000000000000", "", "", "dc20e2d83f25705bb49e439eca56de25"),
        (
            "01000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "0100000000000000",
            "b5d839330ac7b786578782fff6013b815b287c22493a364c",
        ),
        (
            "01000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "01000000000000000000000000000000",
            "743f7c8077ab25f8624e2e948579cf77303aaf90f6fe21199c6068577437a0c4",
        ),
        (
            "01000000000000000000000000000000",
            "030000000000000000000000",
            "01",
            "0200000000000000",
            "1e6daba35669f4273b0a1a2560969cdf790d99759abd1508",
        ),
        (
            "2d4ed87da44102952ef94b02b805249b",
            "ac80e6f61455bfac8308a2d4",
            "2950a70d5a1db2316fd568378da107b52b0da55210cc1c1b0a",
            "0d8c845117808235 5c9e940fea2f58",
            "c9ff545e07b88a015f05b274540aa183b3449b9f39552de99dc214a1190b0b",
        ),
    ];

    #[test]
    fn rfc8452_c1_known_answers() {
        for &(key, nonce, ad, plaintext, result) in RFC8452_C1 {
            let (key, nonce, ad) = (hex(key), hex(nonce), hex(ad));
            let plaintext = hex(&plaintext.replace(' ', ""));
            let mut buf = [plaintext.clone(), vec![0; TAG_LEN]].concat();
            assert!(AesGcmSiv128::seal(&key, &nonce, &ad, &mut buf));
            assert_eq!(buf, hex(result), "{plaintext:02x?}");
            assert!(AesGcmSiv128::open(&key, &nonce, &ad, &mut buf));
            assert_eq!(buf[..plaintext.len()], plaintext[..]);
        }
    }

    #[test]
    fn gcm_siv_refuses_changes_and_wrong_sizes() {
        let (key, nonce, ad) = ([7u8; 16], [3u8; 12], b"associated".to_vec());
        let mut sealed = [b"some plaintext".to_vec(), vec![0; TAG_LEN]].concat();
        assert!(AesGcmSiv128::seal(&key, &nonce, &ad, &mut sealed));
        for i in [0, 5, sealed.len() - TAG_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(!AesGcmSiv128::open(&key, &nonce, &ad, &mut bad), "byte {i}");
        }
        let mut other_nonce = nonce;
        other_nonce[11] ^= 1;
        assert!(!AesGcmSiv128::open(&key, &other_nonce, &ad, &mut sealed.clone()), "nonce");
        assert!(!AesGcmSiv128::open(&key, &nonce, &ad[1..], &mut sealed.clone()), "associated data");
        assert!(!AesGcmSiv128::open(&[8; 16], &nonce, &ad, &mut sealed.clone()), "key");
        assert!(!AesGcmSiv128::open(&[7; 32], &nonce, &ad, &mut sealed.clone()), "32-byte key");
        assert!(!AesGcmSiv128::open(&key, &[3; 16], &ad, &mut sealed.clone()), "16-byte nonce");
        assert!(!AesGcmSiv128::seal(&key, &nonce, &ad, &mut [0; 15]), "no room for the tag");
        assert!(!AesGcmSiv128::open(&key, &nonce, &ad, &mut [0; 15]));
        let mut empty = [0u8; TAG_LEN];
        assert!(AesGcmSiv128::seal(&key, &nonce, b"ad", &mut empty), "empty plaintext");
        assert!(AesGcmSiv128::open(&key, &nonce, b"ad", &mut empty));
        assert_eq!(key_len(AEAD_AES_128_GCM_SIV), Some(16));
        assert_eq!(key_len(AEAD_AES_SIV_CMAC_256), Some(32));
        assert_eq!(key_len(31), None);
    }
}
