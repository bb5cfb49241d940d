//! AEAD_AES_128_GCM_SIV (RFC 8452) composed over the `aes` crate's block cipher and the
//! `polyval` crate's universal hash, for NTS clients whose NTS-KE chose it (chrony 4.4 and
//! later offer it first).
//!
//! Composed here rather than taken whole from the `aes-gcm-siv` crate (still the reference the
//! tests compare against) for the data plane's per-request budget. That crate runs each of the
//! four key-derivation blocks, the tag block and the CTR keystream through a separate call, each
//! with the `aes` crate's CPU-feature dispatch, and builds a CTR object per call. Here the four
//! derivation blocks run in one pass of the key-generating key, and the tag and the CTR
//! keystream run in one pass of the message key. POLYVAL is the `polyval` crate's, with CLMUL
//! fixed at build time by the x86-64 CPU baseline (.cargo/config.toml), else chosen at run time. An NTS request's authenticator has nothing to decrypt, so its check never
//! makes a CTR pass.

use aes::cipher::consts::U16;
use aes::cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128Enc, Block};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use subtle::ConstantTimeEq;

use super::siv::xor_keystream;

/// The key, nonce and tag lengths (RFC 8452 section 4, AES-128).
pub const KEY_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// The per-nonce keys: (message-authentication key, message-encryption key), the first halves
/// of four blocks of the key-generating key in counter mode (RFC 8452 section 4).
fn derive(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> ([u8; 16], [u8; 16]) {
    let mut blocks = [Block::default(); 4];
    for (i, b) in blocks.iter_mut().enumerate() {
        b[..4].copy_from_slice(&(i as u32).to_le_bytes());
        b[4..].copy_from_slice(nonce);
    }
    // One call: the four blocks go through the backend's parallel path.
    Aes128Enc::new(key.into()).encrypt_blocks(&mut blocks);
    let half = |b: &Block, c: &Block| -> [u8; 16] { core::array::from_fn(|i| if i < 8 { b[i] } else { c[i - 8] }) };
    (half(&blocks[0], &blocks[1]), half(&blocks[2], &blocks[3]))
}

/// POLYVAL over the padded AD and text and their bit lengths, xored with the nonce and with
/// the top bit cleared: the block the tag is the encryption of.
fn tag_input(auth: &[u8; 16], nonce: &[u8; NONCE_LEN], ad: &[u8], text: &[u8]) -> Block {
    let mut polyval = Polyval::new(auth.into());
    polyval.update_padded(ad);
    polyval.update_padded(text);
    let mut lengths = polyval::Block::default();
    lengths[..8].copy_from_slice(&(ad.len() as u64 * 8).to_le_bytes());
    lengths[8..].copy_from_slice(&(text.len() as u64 * 8).to_le_bytes());
    polyval.update(&[lengths]);
    let mut s = polyval.finalize();
    for (x, n) in s.iter_mut().zip(nonce) {
        *x ^= n;
    }
    s[15] &= 0x7F;
    s
}

/// One pass of the message key: the tag from its input (when sealing or checking), then the
/// CTR keystream from the tag over `text`.
struct TagCtr<'a> {
    input: Option<Block>,
    tag: &'a mut Block,
    text: &'a mut [u8],
}

impl BlockSizeUser for TagCtr<'_> {
    type BlockSize = U16;
}

impl BlockClosure for TagCtr<'_> {
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        if let Some(mut input) = self.input {
            backend.proc_block((&mut input).into());
            *self.tag = input;
        }
        if self.text.is_empty() {
            return;
        }
        // The initial counter block is the tag with the top bit of its last byte set; the
        // first four bytes count, little-endian, wrapping (RFC 8452 section 4).
        let mut counter = *self.tag;
        counter[15] |= 0x80;
        let mut n = u32::from_le_bytes([counter[0], counter[1], counter[2], counter[3]]);
        xor_keystream(self.text, || {
            let mut key = counter;
            backend.proc_block((&mut key).into());
            n = n.wrapping_add(1);
            counter[..4].copy_from_slice(&n.to_le_bytes());
            u128::from_ne_bytes(key.into())
        });
    }
}

/// Encrypts `text` in place and returns the tag.
pub fn seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], ad: &[u8], text: &mut [u8]) -> [u8; TAG_LEN] {
    let (auth, enc) = derive(key, nonce);
    let input = tag_input(&auth, nonce, ad, text);
    let mut tag = Block::default();
    Aes128Enc::new((&enc).into()).encrypt_with_backend(TagCtr { input: Some(input), tag: &mut tag, text });
    tag.into()
}

/// Decrypts `text` in place and checks `tag` (in constant time). On a mismatch `text` is
/// encrypted again, so no unauthenticated plaintext is left in it, and false is returned.
pub fn open(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], ad: &[u8], text: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
    let (auth, enc) = derive(key, nonce);
    let cipher = Aes128Enc::new((&enc).into());
    let mut given = Block::from(*tag);
    // Nothing to decrypt (an NTS authenticator): no CTR pass at all.
    let crypt = !text.is_empty();
    if crypt {
        cipher.encrypt_with_backend(TagCtr { input: None, tag: &mut given, text });
    }
    let mut expected = Block::default();
    let input = tag_input(&auth, nonce, ad, text);
    cipher.encrypt_with_backend(TagCtr { input: Some(input), tag: &mut expected, text: &mut [] });
    let ok: bool = expected.as_slice().ct_eq(tag).into();
    if !ok && crypt {
        cipher.encrypt_with_backend(TagCtr { input: None, tag: &mut given, text });
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm_siv::aead::generic_array::GenericArray;
    use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
    use aes_gcm_siv::Aes128GcmSiv;

    /// Every AD and text length around the block edges against the `aes-gcm-siv` crate (which
    /// the RFC 8452 answers in aead.rs also pass through): same ciphertext and tag, open
    /// inverts, a change anywhere is refused and leaves no plaintext.
    #[test]
    fn matches_the_aes_gcm_siv_crate() {
        let key: [u8; 16] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        let nonce: [u8; 12] = core::array::from_fn(|i| (i * 5 + 1) as u8);
        let reference = Aes128GcmSiv::new_from_slice(&key).unwrap();
        let data: Vec<u8> = (0..300).map(|i| (i * 13 + 1) as u8).collect();
        for ad_len in [0, 1, 15, 16, 17, 84, 192, 200] {
            for text_len in (0..40).chain([108, 127, 128, 129, 216, 255, 256, 257]) {
                let (ad, plaintext) = (&data[..ad_len], &data[20..20 + text_len]);
                let mut expected = plaintext.to_vec();
                let expected_tag =
                    reference.encrypt_in_place_detached(GenericArray::from_slice(&nonce), ad, &mut expected).unwrap();
                let mut text = plaintext.to_vec();
                let tag = seal(&key, &nonce, ad, &mut text);
                let what = format!("ad {ad_len} text {text_len}");
                assert_eq!((&text, &tag[..]), (&expected, &expected_tag[..]), "{what}");
                assert!(open(&key, &nonce, ad, &mut text, &tag), "{what}");
                assert_eq!(text, plaintext, "{what}");
                let mut sealed = expected.clone();
                let mut bad_tag = tag;
                bad_tag[(text_len + ad_len) % 16] ^= 2;
                assert!(!open(&key, &nonce, ad, &mut sealed, &bad_tag), "{what}");
                assert_eq!(sealed, expected, "a refused open leaves the ciphertext, {what}");
                if text_len > 0 {
                    let mut changed = expected.clone();
                    changed[text_len / 2] ^= 1;
                    assert!(!open(&key, &nonce, ad, &mut changed, &tag), "{what}");
                }
                if ad_len > 0 {
                    assert!(!open(&key, &nonce, &ad[1..], &mut expected.clone(), &tag), "{what}");
                }
            }
        }
    }

    /// The counter wraps in its 32 bits without carrying into the rest of the block (RFC 8452
    /// section 4), checked block by block with the cipher alone.
    #[test]
    fn the_counter_wraps_in_32_bits() {
        let cipher = Aes128Enc::new((&[9u8; 16]).into());
        let mut tag = Block::from([0x11u8; 16]);
        tag[..4].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
        let mut text = [0u8; 48];
        cipher.encrypt_with_backend(TagCtr { input: None, tag: &mut tag, text: &mut text });
        for (k, chunk) in text.chunks(16).enumerate() {
            let mut counter = tag;
            counter[15] |= 0x80;
            counter[..4].copy_from_slice(&0xFFFF_FFFEu32.wrapping_add(k as u32).to_le_bytes());
            cipher.encrypt_block(&mut counter);
            assert_eq!(chunk, counter.as_slice(), "block {k}");
        }
    }
}
