//! AES-SIV (RFC 5297) with AES-128, the mode composed here over the `aes` crate's block cipher
//! (which uses AES-NI when the CPU has it), because NTS's per-request budget (500 ns for two
//! opens and two seals) does not fit the `aes-siv` crate's per-call costs: it expands the CTR key
//! on every call, rebuilds CMAC state, and runs each S2V component's CMAC one after the other.
//!
//! Here a key is prepared once ([`SivKey::new`]: both key schedules, the CMAC subkeys and S2V's
//! first value, CMAC(zero)), so the master keys cost no setup per request, and the three CMAC
//! chains of one S2V (associated data, nonce, and the plaintext's blocks that do not depend on
//! the others) advance in lock step, so the CPU overlaps their AES rounds instead of waiting on
//! one chain at a time. The known answers of RFC 5297 and a comparison with the `aes-siv` crate
//! (tests) check it. Only the two-component S2V NTS uses (AD, then nonce) is provided.

use aes::cipher::consts::U16;
use aes::cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128Enc, Block};
use subtle::ConstantTimeEq;

/// The synthetic IV (and tag) length.
pub const TAG_LEN: usize = 16;
/// Most S2V header components (NTS uses two: associated data and nonce).
const MAX_COMPONENTS: usize = 3;

/// One block through the cipher's backend. The S2V and CTR loops run inside one
/// `encrypt_with_backend` call each (a [`BlockClosure`]), where this inlines to the AES-NI
/// rounds: block by block through `encrypt_block` costs the crate's CPU-feature dispatch, about
/// 80 instructions, per block.
#[inline(always)]
fn enc<B: BlockBackend<BlockSize = U16>>(backend: &mut B, v: u128) -> u128 {
    let mut b = Block::from(v.to_be_bytes());
    backend.proc_block((&mut b).into());
    u128::from_be_bytes(b.into())
}

/// Doubling in GF(2^128) (RFC 5297 section 2.3), without a branch on the secret top bit.
fn dbl(v: u128) -> u128 {
    (v << 1) ^ ((v >> 127) * 0x87)
}

/// The 16-byte block `i` of `data` (which holds it whole).
fn block(data: &[u8], i: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&data[16 * i..16 * i + 16]);
    u128::from_be_bytes(b)
}

/// Blocks a CMAC chains before its last one (which takes a subkey).
fn prefix_blocks(len: usize) -> usize {
    len.saturating_sub(1) / 16
}

/// What S2V derives from its key before any message: CMAC's subkeys and CMAC(zero block),
/// S2V's starting value.
#[derive(Clone, Copy)]
struct Subkeys {
    k1: u128,
    k2: u128,
    d0: u128,
}

impl Subkeys {
    #[inline(always)]
    fn derive<B: BlockBackend<BlockSize = U16>>(mac: &mut B) -> Self {
        let k1 = dbl(enc(mac, 0));
        // CMAC of one complete block M: E(M ^ K1); here M = 0.
        Self { k1, k2: dbl(k1), d0: enc(mac, k1) }
    }

    /// CMAC's last block of a message whose earlier blocks are done: full -> xor K1, else
    /// padded (0x80 then zeros) -> xor K2.
    fn last(&self, data: &[u8]) -> u128 {
        let start = prefix_blocks(data.len()) * 16;
        let rest = &data[start..];
        if rest.len() == 16 {
            return block(rest, 0) ^ self.k1;
        }
        padded(rest) ^ self.k2
    }
}

/// The half of the key that S2V's CMAC uses: its key schedule, and the subkeys for a key
/// prepared once (a key used once, a client's, derives them inside its S2V pass, where they
/// overlap with the message's first blocks instead of costing two more passes).
#[derive(Clone)]
struct S2vKey {
    mac: Aes128Enc,
    sub: Option<Subkeys>,
}

struct DeriveRun<'a>(&'a mut Option<Subkeys>);

impl BlockSizeUser for DeriveRun<'_> {
    type BlockSize = U16;
}

impl BlockClosure for DeriveRun<'_> {
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        *self.0 = Some(Subkeys::derive(backend));
    }
}

impl S2vKey {
    /// A key used for many messages: the subkeys derived now.
    fn prepared(key: &[u8; 16]) -> Self {
        let mut k = Self::once(key);
        k.mac.encrypt_with_backend(DeriveRun(&mut k.sub));
        k
    }

    /// A key used for one message: the subkeys derived in its S2V pass.
    fn once(key: &[u8; 16]) -> Self {
        Self { mac: Aes128Enc::new(key.into()), sub: None }
    }

    /// S2V(key, ad, nonce, plaintext) (RFC 5297 section 2.4), as NTS uses it.
    fn s2v(&self, ad: &[u8], nonce: &[u8], plaintext: &[u8]) -> u128 {
        self.s2v_n(&[ad, nonce], plaintext)
    }

    fn s2v_n(&self, headers: &[&[u8]], plaintext: &[u8]) -> u128 {
        s2v_with(&self.mac, self.sub, headers, plaintext)
    }
}

/// S2V in one pass of `mac`'s backend; `sub` None derives the subkeys in the pass.
fn s2v_with(mac: &Aes128Enc, sub: Option<Subkeys>, headers: &[&[u8]], plaintext: &[u8]) -> u128 {
    let mut out = 0;
    mac.encrypt_with_backend(S2vRun { sub, headers, plaintext, out: &mut out });
    out
}

impl Subkeys {
    /// S2V over up to [`MAX_COMPONENTS`] header components (more are ignored: callers pass
    /// at most two; the known-answer tests three).
    #[inline(always)]
    fn s2v_in<B: BlockBackend<BlockSize = U16>>(
        sub: Option<Self>,
        mac: &mut B,
        headers: &[&[u8]],
        plaintext: &[u8],
    ) -> u128 {
        let sub = match sub {
            Some(sub) => sub,
            None => Self::derive(mac),
        };
        let (d, p) = sub.chains(mac, headers, sub.d0, &plaintext[..16 * free_blocks(plaintext.len())]);
        sub.finish(mac, d, p, plaintext)
    }

    /// The chains that do not depend on each other, in lock step (the CPU overlaps their
    /// encryptions): each header's CMAC, folded into S2V's value `d` (from `d`), and the CMAC
    /// chain over `free` (whole blocks of the plaintext before the 16 bytes xorend changes).
    /// Returns the new `d` and the plaintext chain's state.
    #[inline(always)]
    fn chains<B: BlockBackend<BlockSize = U16>>(
        &self,
        mac: &mut B,
        headers: &[&[u8]],
        mut d: u128,
        free: &[u8],
    ) -> (u128, u128) {
        let headers = &headers[..headers.len().min(MAX_COMPONENTS)];
        let free_n = free.len() / 16;
        // Each header's chain takes its last block (with a subkey) at step prefix_blocks.
        let mut steps = free_n;
        for h in headers {
            steps = steps.max(prefix_blocks(h.len()) + 1);
        }
        let mut chains = [0u128; MAX_COMPONENTS];
        let mut p = 0u128;
        for i in 0..steps {
            // Independent chains: the CPU overlaps these encryptions.
            for (c, h) in chains.iter_mut().zip(headers) {
                let n = prefix_blocks(h.len());
                if i < n {
                    *c = enc(mac, *c ^ block(h, i));
                } else if i == n {
                    *c = enc(mac, *c ^ self.last(h));
                }
            }
            if i < free_n {
                p = enc(mac, p ^ block(free, i));
            }
        }
        for c in &chains[..headers.len()] {
            d = dbl(d) ^ c;
        }
        (d, p)
    }

    /// S2V's last step, from the headers' `d` and the plaintext's free blocks' chain `p`.
    #[inline(always)]
    fn finish<B: BlockBackend<BlockSize = U16>>(&self, mac: &mut B, d: u128, p: u128, plaintext: &[u8]) -> u128 {
        let rest = &plaintext[16 * free_blocks(plaintext.len())..];
        match rest.len() {
            // T = plaintext xorend D, its last 16 bytes one whole block.
            16 => enc(mac, p ^ block(rest, 0) ^ d ^ self.k1),
            // 17 to 31 bytes: D's 16 bytes end at the tail's end, so they straddle its two
            // blocks; shifted in registers (bytes xored into a buffer and read back as a
            // block stall the chain on store forwarding).
            len @ 17..32 => {
                let r = 8 * (len as u32 - 16);
                let first = enc(mac, p ^ block(rest, 0) ^ (d >> r));
                enc(mac, first ^ padded(&rest[16..]) ^ (d << (128 - r)) ^ self.k2)
            }
            // Shorter than a block: T = dbl(D) xor pad(plaintext).
            _ => enc(mac, dbl(d) ^ padded(plaintext) ^ self.k1),
        }
    }
}

/// A partial block (under 16 bytes) padded with 0x80 then zeros.
fn padded(data: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = data.len().min(15);
    b[..n].copy_from_slice(&data[..n]);
    b[n] = 0x80;
    u128::from_be_bytes(b)
}

/// Blocks of a plaintext before the 16 bytes that S2V's "xorend" changes: independent of the
/// headers, so chained alongside them.
fn free_blocks(len: usize) -> usize {
    if len >= 16 {
        (len - 16) / 16
    } else {
        0
    }
}

/// S2V inside the MAC key's backend.
struct S2vRun<'a> {
    sub: Option<Subkeys>,
    headers: &'a [&'a [u8]],
    plaintext: &'a [u8],
    out: &'a mut u128,
}

impl BlockSizeUser for S2vRun<'_> {
    type BlockSize = U16;
}

impl BlockClosure for S2vRun<'_> {
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        *self.out = Subkeys::s2v_in(self.sub, backend, self.headers, self.plaintext);
    }
}

/// AES-CTR from the synthetic IV with bits 31 and 63 cleared (RFC 5297 section 2.5), inside
/// the CTR key's backend; the counter blocks are independent, so the CPU overlaps them.
struct CtrRun<'a> {
    iv: u128,
    data: &'a mut [u8],
}

impl BlockSizeUser for CtrRun<'_> {
    type BlockSize = U16;
}

impl BlockClosure for CtrRun<'_> {
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let mut counter = self.iv & !((1u128 << 63) | (1u128 << 31));
        let mut chunks = self.data.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // Whole blocks as one 128-bit xor (byte by byte costs five times the AES).
            let x = block(chunk, 0) ^ enc(backend, counter);
            chunk.copy_from_slice(&x.to_be_bytes());
            counter = counter.wrapping_add(1);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let key = enc(backend, counter).to_be_bytes();
            for (x, k) in rest.iter_mut().zip(key) {
                *x ^= k;
            }
        }
    }
}

fn ctr(cipher: &Aes128Enc, iv: u128, data: &mut [u8]) {
    if !data.is_empty() {
        cipher.encrypt_with_backend(CtrRun { iv, data });
    }
}

/// A prepared AES-SIV key (AEAD_AES_SIV_CMAC_256's 32 bytes: the CMAC key, then the CTR key).
#[derive(Clone)]
pub struct SivKey {
    s2v: S2vKey,
    ctr: Aes128Enc,
}

impl core::fmt::Debug for SivKey {
    // Never the key.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SivKey")
    }
}

impl SivKey {
    pub fn new(key: &[u8; 32]) -> Self {
        let (mac, enc) = key.split_at(16);
        let mac: &[u8; 16] = mac.try_into().unwrap_or(&[0; 16]);
        let enc: &[u8; 16] = enc.try_into().unwrap_or(&[0; 16]);
        Self { s2v: S2vKey::prepared(mac), ctr: Aes128Enc::new(enc.into()) }
    }

    /// Encrypts `buf[TAG_LEN..]` in place, the tag into `buf[..TAG_LEN]`; false if `buf` is
    /// shorter than the tag.
    pub fn seal(&self, ad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
        let Some((tag, text)) = buf.split_first_chunk_mut::<TAG_LEN>() else { return false };
        let v = self.s2v.s2v(ad, nonce, text);
        *tag = v.to_be_bytes();
        ctr(&self.ctr, v, text);
        true
    }

    /// Decrypts `buf[TAG_LEN..]` in place and checks the tag (in constant time).
    pub fn open(&self, ad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
        open_with(&self.s2v.mac, self.s2v.sub, Some(&self.ctr), ad, nonce, buf)
    }
}

fn open_with(
    mac: &Aes128Enc,
    sub: Option<Subkeys>,
    cipher: Option<&Aes128Enc>,
    ad: &[u8],
    nonce: &[u8],
    buf: &mut [u8],
) -> bool {
    let Some((tag, text)) = buf.split_first_chunk_mut::<TAG_LEN>() else { return false };
    let v = u128::from_be_bytes(*tag);
    if let Some(cipher) = cipher {
        ctr(cipher, v, text);
    } else if !text.is_empty() {
        return false;
    }
    let w = s2v_with(mac, sub, &[ad, nonce], text);
    tags_match(v, w)
}

/// Constant time, as two words (subtle has no u128).
fn tags_match(v: u128, w: u128) -> bool {
    ((w as u64).ct_eq(&(v as u64)) & ((w >> 64) as u64).ct_eq(&((v >> 64) as u64))).into()
}

/// The two AES-128 keys of an AES-SIV-CMAC-256 key: (CMAC, CTR).
fn halves(key: &[u8; 32]) -> (&[u8; 16], &[u8; 16]) {
    let (mac, enc) = key.split_at(16);
    (mac.try_into().unwrap_or(&[0; 16]), enc.try_into().unwrap_or(&[0; 16]))
}

/// One-shot seal with an unprepared key (a client's, used once per request). The key
/// schedules are built where they are used and never moved again (an `Aes128Enc` is 704
/// bytes, room for the software fallback's: wrapped in a struct and returned, each was copied
/// once more), and the subkeys are derived inside the S2V pass.
pub fn seal(key: &[u8; 32], ad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
    let (mac, enc) = halves(key);
    let mac = Aes128Enc::new(mac.into());
    let cipher = Aes128Enc::new(enc.into());
    let Some((tag, text)) = buf.split_first_chunk_mut::<TAG_LEN>() else { return false };
    let v = s2v_with(&mac, None, &[ad, nonce], text);
    *tag = v.to_be_bytes();
    ctr(&cipher, v, text);
    true
}

/// One-shot open; with nothing to decrypt (an NTS request's authenticator) the CTR key's
/// schedule is not even computed.
pub fn open(key: &[u8; 32], ad: &[u8], nonce: &[u8], buf: &mut [u8]) -> bool {
    let (mac, enc) = halves(key);
    let mac = Aes128Enc::new(mac.into());
    if buf.len() == TAG_LEN {
        return open_with(&mac, None, None, ad, nonce, buf);
    }
    let cipher = Aes128Enc::new(enc.into());
    open_with(&mac, None, Some(&cipher), ad, nonce, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_siv::siv::Aes128Siv;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// This module's S2V and CTR with any number of header components, as RFC 5297's
    /// examples use them: tag || ciphertext.
    fn seal_n(key: &[u8], headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        let k = SivKey::new(key.try_into().unwrap());
        let v = k.s2v.s2v_n(headers, plaintext);
        let mut text = plaintext.to_vec();
        ctr(&k.ctr, v, &mut text);
        [&v.to_be_bytes()[..], &text].concat()
    }

    /// RFC 5297 appendix A.1 (deterministic: one header component).
    #[test]
    fn rfc5297_a1() {
        let key = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let ad = hex("101112131415161718191a1b1c1d1e1f2021222324252627");
        let plaintext = hex("112233445566778899aabbccddee");
        let expected = hex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c");
        assert_eq!(seal_n(&key, &[&ad], &plaintext), expected);
    }

    /// RFC 5297 appendix A.2 (nonce-based: two AD components, then the nonce).
    #[test]
    fn rfc5297_a2() {
        let key = hex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
        let ad1 = hex("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
        let ad2 = hex("102030405060708090a0");
        let nonce = hex("09f911029d74e35bd84156c5635688c0");
        let plaintext =
            hex("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553");
        let expected = hex(
            "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d",
        );
        assert_eq!(seal_n(&key, &[&ad1, &ad2, &nonce], &plaintext), expected);
    }

    /// Every length of AD, nonce and plaintext around the block boundaries against the
    /// `aes-siv` crate (itself checked against RFC 5297 in aead.rs).
    #[test]
    fn matches_the_aes_siv_crate() {
        let key: [u8; 32] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        let prepared = SivKey::new(&key);
        let mut reference = Aes128Siv::new_from_slice(&key).unwrap();
        let data: Vec<u8> = (0..300).map(|i| (i * 13 + 1) as u8).collect();
        for ad_len in [0, 1, 4, 15, 16, 17, 32, 84, 192, 200] {
            for nonce_len in [0, 1, 16, 17, 33] {
                for pt_len in (0..50).chain([68, 112, 127, 128, 129, 255, 256, 257]) {
                    let (ad, nonce, pt) = (&data[..ad_len], &data[100..100 + nonce_len], &data[..pt_len]);
                    let mut text = pt.to_vec();
                    let tag = reference.encrypt_in_place_detached([ad, nonce], &mut text).unwrap();
                    let mut buf = [&[0u8; 16][..], pt].concat();
                    assert!(prepared.seal(ad, nonce, &mut buf));
                    let what = format!("ad {ad_len} nonce {nonce_len} plaintext {pt_len}");
                    assert_eq!(buf[..16], tag[..], "{what}");
                    assert_eq!(buf[16..], text[..], "{what}");
                    let mut back = buf.clone();
                    assert!(prepared.open(ad, nonce, &mut back), "{what}");
                    assert_eq!(&back[16..], pt, "{what}");
                    let mut once = [&[0u8; 16][..], pt].concat();
                    assert!(seal(&key, ad, nonce, &mut once), "{what}");
                    assert_eq!(once, buf, "one-shot seal, {what}");
                    let mut back = buf.clone();
                    assert!(open(&key, ad, nonce, &mut back), "{what}");
                    assert_eq!(&back[16..], pt, "one-shot open, {what}");
                    let mut bad = buf.clone();
                    let flip = (pt_len * 5) % bad.len();
                    bad[flip] ^= 4;
                    assert!(!prepared.open(ad, nonce, &mut bad.clone()), "{what}");
                    assert!(!open(&key, ad, nonce, &mut bad), "one-shot open, {what}");
                }
            }
        }
    }
}
