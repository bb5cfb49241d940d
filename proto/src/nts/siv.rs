//! AES-SIV (RFC 5297) with AES-128, the mode composed here over the `aes` crate's block cipher
//! (which uses AES-NI when the CPU has it), because NTS's per-request budget (500 ns for two
//! opens and two seals) does not fit the `aes-siv` crate's per-call costs: it expands the CTR key
//! on every call, rebuilds CMAC state, and runs each S2V component's CMAC one after the other.
//!
//! Here a key is prepared once ([`SivKey::new`]: both key schedules, the CMAC subkeys and S2V's
//! first value, CMAC(zero)), so the master keys cost no setup per request. The three CMAC
//! chains of one S2V (associated data, nonce, and the plaintext's blocks that do not depend on
//! the others) are independent: each runs as its own tight loop, and the CPU runs the next
//! chain's AES rounds while the previous chain's are in flight. The known answers of RFC 5297
//! and a comparison with the `aes-siv` crate (tests) check it. Only the two-component S2V NTS
//! uses (AD, then nonce) is provided.
//!
//! A block in flight is a `u128` holding its 16 bytes in memory order (native endian), so a
//! block goes to and from the cipher and the buffers as a plain move and xors as one word; only
//! the few steps with arithmetic on the block's big-endian value (GF doubling, the xorend's
//! shift, the CTR counter) convert, which costs a byte swap there instead of two per block. A
//! chain's running value in a tight loop is a `Block` instead (`chain_blocks`): LLVM keeps a
//! `u128` in two general registers, and AES-NI needs a vector one.
//!
//! An NTS reply's fresh cookies are sealed as one batch ([`SivKey::seal_batch`]), alongside
//! the request's tag check under the client's key where there is one
//! ([`SivKey::seal_batch_checking`]): three backends nested, the batch's chains and the check's
//! in lock step, then the rest of the check's (a request's header is the longest chain) as one
//! tight loop. Measured, this lock step beats separate loops for the batch by 4 % with one
//! cookie (bench/results/nts-cost-2core-20261205.md), unlike S2V's own chains.

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
    let mut b = Block::from(v.to_ne_bytes());
    backend.proc_block((&mut b).into());
    u128::from_ne_bytes(b.into())
}

/// Doubling in GF(2^128) (RFC 5297 section 2.3) of a block in memory order, without a branch
/// on the secret top bit.
fn dbl(v: u128) -> u128 {
    let x = u128::from_be(v);
    ((x << 1) ^ ((x >> 127) * 0x87)).to_be()
}

/// The 16-byte block `i` of `data` (which holds it whole).
fn block(data: &[u8], i: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&data[16 * i..16 * i + 16]);
    u128::from_ne_bytes(b)
}

/// The chain `x` through `blocks` (whole blocks): each xored in, then encrypted. The chain is
/// a block in place, xored byte-wise (one vector xor), so it stays in a vector register from
/// one encryption to the next; a u128 would go through two general registers each time.
#[inline(always)]
fn chain_blocks<B: BlockBackend<BlockSize = U16>>(mac: &mut B, x: u128, blocks: &[u8]) -> u128 {
    let mut x = Block::from(x.to_ne_bytes());
    for b in blocks.chunks_exact(16) {
        for (x, b) in x.iter_mut().zip(b) {
            *x ^= b;
        }
        mac.proc_block((&mut x).into());
    }
    u128::from_ne_bytes(x.into())
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
    #[inline(always)]
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

    /// The chains that do not depend on each other: each header's CMAC, folded into S2V's
    /// value `d` (from `d`), and the CMAC chain over `free` (whole blocks of the plaintext
    /// before the 16 bytes xorend changes). Each chain is its own tight loop; the CPU runs the
    /// next one's encryptions while the previous one's are still in flight. Returns the new `d`
    /// and the plaintext chain's state.
    #[inline(always)]
    fn chains<B: BlockBackend<BlockSize = U16>>(
        &self,
        mac: &mut B,
        headers: &[&[u8]],
        mut d: u128,
        free: &[u8],
    ) -> (u128, u128) {
        let headers = &headers[..headers.len().min(MAX_COMPONENTS)];
        let mut chains = [0u128; MAX_COMPONENTS];
        for (c, h) in chains.iter_mut().zip(headers) {
            self.cmac_from(mac, c, h, 0);
        }
        let p = chain_blocks(mac, 0, free);
        for c in &chains[..headers.len()] {
            d = dbl(d) ^ c;
        }
        (d, p)
    }

    /// Step `i` of the CMAC chain `c` over `data`: block `i`, the last one with its subkey
    /// (at [`prefix_blocks`]); nothing after that.
    #[inline(always)]
    fn cmac_step<B: BlockBackend<BlockSize = U16>>(&self, mac: &mut B, c: &mut u128, data: &[u8], i: usize) {
        let n = prefix_blocks(data.len());
        if i < n {
            *c = enc(mac, *c ^ block(data, i));
        } else if i == n {
            *c = enc(mac, *c ^ self.last(data));
        }
    }

    /// The steps [`cmac_step`](Self::cmac_step) would take on `c` from step `from` on, to the
    /// chain's end: the whole blocks as one loop with no per-step branch or bounds check, then
    /// the last block. From 0 it is the whole CMAC (S2V's own chains); later, the rest of a
    /// chain that outlasts the ones it ran in lock step with (the tag check's).
    #[inline(always)]
    fn cmac_from<B: BlockBackend<BlockSize = U16>>(&self, mac: &mut B, c: &mut u128, data: &[u8], from: usize) {
        let n = prefix_blocks(data.len());
        if from > n {
            return;
        }
        let x = chain_blocks(mac, *c, &data[16 * from..16 * n]);
        *c = enc(mac, x ^ self.last(data));
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
                let d = u128::from_be(d);
                let first = enc(mac, p ^ block(rest, 0) ^ (d >> r).to_be());
                enc(mac, first ^ padded(&rest[16..]) ^ (d << (128 - r)).to_be() ^ self.k2)
            }
            // Shorter than a block: T = dbl(D) xor pad(plaintext).
            _ => enc(mac, dbl(d) ^ padded(plaintext) ^ self.k1),
        }
    }
}

/// A partial block (under 16 bytes) padded with 0x80 then zeros. Copied in pieces of 8, 4, 2
/// and 1 bytes, each a plain move: a copy of variable length is a call to memcpy, and around a
/// call every AES round key held in a vector register is saved and reloaded (22 moves).
#[inline(always)]
fn padded(data: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = data.len().min(15);
    let mut at = 0;
    for width in [8, 4, 2, 1] {
        if n - at >= width {
            b[at..at + width].copy_from_slice(&data[at..at + width]);
            at += width;
        }
    }
    b[n] = 0x80;
    u128::from_ne_bytes(b)
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
        ctr_in(backend, self.iv, self.data);
    }
}

#[inline(always)]
fn ctr_in<B: BlockBackend<BlockSize = U16>>(backend: &mut B, iv: u128, data: &mut [u8]) {
    let mut counter = u128::from_be(iv) & !((1u128 << 63) | (1u128 << 31));
    xor_keystream(data, || {
        let key = enc(backend, counter.to_be());
        counter = counter.wrapping_add(1);
        key
    });
}

/// Xors `data` with the keystream `next` gives a block at a time (a block in memory order),
/// the last block cut to what is left: CTR mode's data side, for AES-SIV's counter and
/// AES-GCM-SIV's (gcm_siv.rs).
#[inline(always)]
pub(super) fn xor_keystream(data: &mut [u8], mut next: impl FnMut() -> u128) {
    let mut chunks = data.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // Whole blocks as one 128-bit xor (byte by byte costs five times the AES).
        let x = block(chunk, 0) ^ next();
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        for (x, k) in rest.iter_mut().zip(next().to_ne_bytes()) {
            *x ^= k;
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
        *tag = v.to_ne_bytes();
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
    let v = u128::from_ne_bytes(*tag);
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
    *tag = v.to_ne_bytes();
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

/// Most messages one [`SivKey::seal_batch`] seals (an NTS reply's cookies: 8 at most).
pub const MAX_BATCH: usize = 8;

/// Messages sealed together under one prepared key: the same associated data `ad` and
/// `plaintext` for each (an NTS reply's fresh cookies: the client's keys under the key id),
/// each with its own nonce. Every `[u8; L]` of `seals` holds its nonce at `nonce`, and
/// receives from `sealed_at` on the tag and then the ciphertext, so `sealed_at + TAG_LEN +
/// plaintext.len()` must be `L`.
pub struct Batch<'a, const L: usize> {
    pub ad: &'a [u8],
    pub plaintext: &'a [u8],
    pub nonce: core::ops::Range<usize>,
    pub sealed_at: usize,
    pub seals: &'a mut [[u8; L]],
}

impl<const L: usize> core::fmt::Debug for Batch<'_, L> {
    // Never the plaintext (keys, in a cookie).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batch").field("messages", &self.seals.len()).finish_non_exhaustive()
    }
}

impl<const L: usize> Batch<'_, L> {
    fn fits(&self) -> bool {
        self.seals.len() <= MAX_BATCH
            && self.nonce.end <= L
            && self.nonce.end <= self.sealed_at
            && self.sealed_at + TAG_LEN + self.plaintext.len() == L
    }
}

/// A one-shot open with nothing to decrypt (an NTS request's authenticator): the client's key,
/// the associated data, the nonce and the tag to check.
pub struct TagCheck<'a> {
    pub key: &'a [u8; 32],
    pub ad: &'a [u8],
    pub nonce: &'a [u8],
    pub tag: &'a [u8; TAG_LEN],
}

impl core::fmt::Debug for TagCheck<'_> {
    // Never the key.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TagCheck")
    }
}

impl SivKey {
    /// Seals every message of `batch` (false, and nothing sealed, if it does not fit its
    /// layout or holds more than [`MAX_BATCH`]). Their S2V chains advance in lock step and
    /// share the plaintext's chain, so eight cost little more than one.
    pub fn seal_batch<const L: usize>(&self, batch: Batch<'_, L>) -> bool {
        let Some(sub) = self.s2v.sub.filter(|_| batch.fits()) else { return false };
        self.s2v.mac.encrypt_with_backend(WithMac { ctr: &self.ctr, then: SealOnly { sub, batch } });
        true
    }

    /// Seals `batch` as [`SivKey::seal_batch`] does while checking `check` (with a client's
    /// key, a different one) in the same pass: the check's CMAC chain and the seals' chains
    /// are independent and share one loop. Measured on the dev VM, one cookie with the check
    /// costs what the two cost apart (the work is bound by instructions there, not by AES
    /// latency); several cookies gain from sharing the plaintext's chain
    /// (bench/results/nts-cost-2core-20261205.md). Returns whether the check's tag matched; the batch is sealed either way (false, and
    /// nothing sealed nor checked, if the batch does not fit).
    pub fn seal_batch_checking<const L: usize>(&self, batch: Batch<'_, L>, check: TagCheck<'_>) -> bool {
        let Some(sub) = self.s2v.sub.filter(|_| batch.fits()) else { return false };
        let client = Aes128Enc::new(halves(check.key).0.into());
        let mut matched = false;
        self.s2v.mac.encrypt_with_backend(WithMac {
            ctr: &self.ctr,
            then: SealChecking { sub, batch, client: &client, check, matched: &mut matched },
        });
        matched
    }
}

/// What runs with the sealing key's MAC and CTR backends both in hand.
trait WithBackends {
    fn run<M: BlockBackend<BlockSize = U16>, C: BlockBackend<BlockSize = U16>>(self, mac: &mut M, ctr: &mut C);
}

/// The sealing key's MAC backend, then its CTR backend inside it, then `then` with both.
struct WithMac<'a, T> {
    ctr: &'a Aes128Enc,
    then: T,
}

impl<T> BlockSizeUser for WithMac<'_, T> {
    type BlockSize = U16;
}

impl<T: WithBackends> BlockClosure for WithMac<'_, T> {
    fn call<M: BlockBackend<BlockSize = U16>>(self, mac: &mut M) {
        self.ctr.encrypt_with_backend(WithCtr { mac, then: self.then });
    }
}

struct WithCtr<'a, M, T> {
    mac: &'a mut M,
    then: T,
}

impl<M, T> BlockSizeUser for WithCtr<'_, M, T> {
    type BlockSize = U16;
}

impl<M: BlockBackend<BlockSize = U16>, T: WithBackends> BlockClosure for WithCtr<'_, M, T> {
    fn call<C: BlockBackend<BlockSize = U16>>(self, ctr: &mut C) {
        self.then.run(self.mac, ctr);
    }
}

struct SealOnly<'a, const L: usize> {
    sub: Subkeys,
    batch: Batch<'a, L>,
}

impl<const L: usize> WithBackends for SealOnly<'_, L> {
    fn run<M: BlockBackend<BlockSize = U16>, C: BlockBackend<BlockSize = U16>>(mut self, mac: &mut M, ctr: &mut C) {
        seal_batch_in(mac, ctr, &self.sub, &mut self.batch, |_| {});
    }
}

struct SealChecking<'a, 'b, const L: usize> {
    sub: Subkeys,
    batch: Batch<'a, L>,
    client: &'b Aes128Enc,
    check: TagCheck<'b>,
    matched: &'b mut bool,
}

impl<const L: usize> WithBackends for SealChecking<'_, '_, L> {
    fn run<M: BlockBackend<BlockSize = U16>, C: BlockBackend<BlockSize = U16>>(self, mac: &mut M, ctr: &mut C) {
        let client = self.client;
        client.encrypt_with_backend(WithClient { mac, ctr, job: self });
    }
}

/// The third backend, the client's MAC key, with the sealing key's two.
struct WithClient<'a, 'b, 'c, M, C, const L: usize> {
    mac: &'c mut M,
    ctr: &'c mut C,
    job: SealChecking<'a, 'b, L>,
}

impl<M, C, const L: usize> BlockSizeUser for WithClient<'_, '_, '_, M, C, L> {
    type BlockSize = U16;
}

impl<M, C, const L: usize> BlockClosure for WithClient<'_, '_, '_, M, C, L>
where
    M: BlockBackend<BlockSize = U16>,
    C: BlockBackend<BlockSize = U16>,
{
    fn call<K: BlockBackend<BlockSize = U16>>(self, client: &mut K) {
        let SealChecking { sub, mut batch, check, matched, .. } = self.job;
        // Subkeys first: only the chains' last blocks and the end wait for them.
        let csub = Subkeys::derive(client);
        let (mut ad, mut nonce) = (0u128, 0u128);
        // In lock step with the batch's chains, then what is left of the check's on its own.
        let done = seal_batch_in(self.mac, self.ctr, &sub, &mut batch, |i| {
            csub.cmac_step(client, &mut ad, check.ad, i);
            csub.cmac_step(client, &mut nonce, check.nonce, i);
        });
        csub.cmac_from(client, &mut ad, check.ad, done);
        csub.cmac_from(client, &mut nonce, check.nonce, done);
        let d = dbl(dbl(csub.d0) ^ ad) ^ nonce;
        *matched = tags_match(u128::from_ne_bytes(*check.tag), csub.finish(client, d, 0, &[]));
    }
}

/// The batch's S2V chains step by step with `alongside` (another chain's step) called at each
/// step; each message's last S2V blocks and its CTR are issued as soon as its chains end, so
/// they overlap with what the caller does next. Returns the steps taken (and given to
/// `alongside`).
#[inline(always)]
fn seal_batch_in<M, C, const L: usize>(
    mac: &mut M,
    ctr: &mut C,
    sub: &Subkeys,
    batch: &mut Batch<'_, L>,
    mut alongside: impl FnMut(usize),
) -> usize
where
    M: BlockBackend<BlockSize = U16>,
    C: BlockBackend<BlockSize = U16>,
{
    let Batch { ad, plaintext, nonce, sealed_at, seals } = batch;
    let (ad, plaintext, sealed_at) = (*ad, *plaintext, *sealed_at);
    let free = &plaintext[..16 * free_blocks(plaintext.len())];
    let free_n = free.len() / 16;
    let steps = free_n.max(prefix_blocks(ad.len()) + 1).max(prefix_blocks(nonce.len()) + 1);
    let (mut ad_chain, mut p) = (0u128, 0u128);
    let mut nonce_chains = [0u128; MAX_BATCH];
    for i in 0..steps {
        alongside(i);
        sub.cmac_step(mac, &mut ad_chain, ad, i);
        for (c, s) in nonce_chains.iter_mut().zip(seals.iter()) {
            sub.cmac_step(mac, c, &s[nonce.clone()], i);
        }
        if i < free_n {
            p = enc(mac, p ^ block(free, i));
        }
        if i + 1 == steps {
            let d_ad = dbl(sub.d0) ^ ad_chain;
            for (c, s) in nonce_chains.iter().zip(seals.iter_mut()) {
                let v = sub.finish(mac, dbl(d_ad) ^ c, p, plaintext);
                let (tag, text) = s[sealed_at..].split_at_mut(TAG_LEN);
                tag.copy_from_slice(&v.to_ne_bytes());
                text.copy_from_slice(plaintext);
                ctr_in(ctr, v, text);
            }
        }
    }
    steps
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
        [&v.to_ne_bytes()[..], &text].concat()
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

    /// The piecewise copy pads every length as the plain copy does.
    #[test]
    fn padded_copies_every_partial_length() {
        let data: Vec<u8> = (1..=20).collect();
        for n in 0..16 {
            let mut expected = [0u8; 16];
            expected[..n].copy_from_slice(&data[..n]);
            expected[n] = 0x80;
            assert_eq!(padded(&data[..n]), u128::from_ne_bytes(expected), "{n} bytes");
        }
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

    /// Every batch size and a few layouts: each message sealed as [`SivKey::seal`] seals it
    /// alone, and the check beside it agrees with the one-shot open, on a good and a bad tag
    /// (a changed tag, AD or nonce), with the batch sealed all the same.
    #[test]
    fn batches_seal_as_one_by_one_and_check_as_open() {
        let key: [u8; 32] = core::array::from_fn(|i| (i * 11 + 5) as u8);
        let sealer = SivKey::new(&key);
        let client: [u8; 32] = core::array::from_fn(|i| (i * 3 + 1) as u8);
        let data: Vec<u8> = (0..300).map(|i| (i * 13 + 1) as u8).collect();
        // (AD length, plaintext length): the cookie's (4, 68) and others around the edges.
        for (ad_len, pt_len) in [(4, 68), (0, 0), (0, 15), (16, 16), (17, 31), (33, 48), (4, 100)] {
            const L: usize = 4 + 16 + 16 + 100;
            let (ad, plaintext) = (&data[..ad_len], &data[50..50 + pt_len]);
            // The layout: nonce at 4..20, sealed from 20 (tag, then text); short texts leave
            // the end of each element out of the batch, so the element length is fitted.
            for n in 0..=MAX_BATCH {
                let mut seals = [[0u8; L]; MAX_BATCH];
                for (k, s) in seals.iter_mut().enumerate() {
                    s[4..20].fill(k as u8 + 0x40);
                }
                let mut expected = seals;
                for s in &mut expected[..n] {
                    let mut one = vec![0u8; TAG_LEN + pt_len];
                    one[TAG_LEN..].copy_from_slice(plaintext);
                    assert!(sealer.seal(ad, &s[4..20], &mut one));
                    s[20..20 + TAG_LEN + pt_len].copy_from_slice(&one);
                }
                let what = format!("ad {ad_len} plaintext {pt_len} batch {n}");
                let sealed_at = L - TAG_LEN - pt_len;
                // Element layouts where the text ends the element: shift the expected bytes.
                let place = |e: &[[u8; L]; MAX_BATCH]| {
                    let mut out = *e;
                    for (o, x) in out.iter_mut().zip(e) {
                        o[20..].fill(0);
                        o[sealed_at..].copy_from_slice(&x[20..20 + TAG_LEN + pt_len]);
                    }
                    out
                };
                let expected = place(&expected);
                fn layout<'a>(ad: &'a [u8], pt: &'a [u8], at: usize, seals: &'a mut [[u8; L]]) -> Batch<'a, L> {
                    Batch { ad, plaintext: pt, nonce: 4..20, sealed_at: at, seals }
                }
                let mut got = seals;
                assert!(sealer.seal_batch(layout(ad, plaintext, sealed_at, &mut got[..n])), "{what}");
                assert_eq!(got, expected, "{what}");

                let check_ad = &data[100..100 + 192];
                let check_nonce = &data[7..23];
                let mut tag = [0u8; TAG_LEN];
                assert!(seal(&client, check_ad, check_nonce, &mut tag));
                let mut bad_tag = tag;
                bad_tag[3] ^= 1;
                for (tag, ad2, nonce2, ok) in [
                    (&tag, check_ad, check_nonce, true),
                    (&bad_tag, check_ad, check_nonce, false),
                    (&tag, &check_ad[1..], check_nonce, false),
                    (&tag, check_ad, &data[8..24], false),
                ] {
                    let mut got = seals;
                    let check = TagCheck { key: &client, ad: ad2, nonce: nonce2, tag };
                    assert_eq!(
                        sealer.seal_batch_checking(layout(ad, plaintext, sealed_at, &mut got[..n]), check),
                        ok,
                        "{what}"
                    );
                    assert_eq!(got, expected, "{what}, checking");
                    assert_eq!(open(&client, ad2, nonce2, &mut tag.clone()), ok);
                }
                // Check chains shorter and longer than the batch's lock step (which ends at the
                // batch's own steps; the rest of the check's chain runs after it).
                for check_len in [0, 1, 16, 17, 40, 64, 100] {
                    let check_ad = &data[50..50 + check_len];
                    let mut tag = [0u8; TAG_LEN];
                    assert!(seal(&client, check_ad, check_nonce, &mut tag));
                    let mut got = seals;
                    let check = TagCheck { key: &client, ad: check_ad, nonce: check_nonce, tag: &tag };
                    let checked = sealer.seal_batch_checking(layout(ad, plaintext, sealed_at, &mut got[..n]), check);
                    assert!(checked, "{what}, check AD {check_len}");
                    assert_eq!(got, expected, "{what}, check AD {check_len}");
                }
            }
        }
    }

    #[test]
    fn a_batch_that_does_not_fit_its_layout_is_refused_untouched() {
        let sealer = SivKey::new(&[9; 32]);
        let mut seals = [[0u8; 40]; MAX_BATCH + 1];
        // Tag and text past the element's end.
        let batch = Batch { ad: &[], plaintext: &[1; 8], nonce: 0..16, sealed_at: 20, seals: &mut seals[..1] };
        assert!(!sealer.seal_batch(batch));
        // The nonce overlapping what is sealed.
        let batch = Batch { ad: &[], plaintext: &[1; 8], nonce: 0..17, sealed_at: 16, seals: &mut seals[..1] };
        assert!(!sealer.seal_batch(batch));
        // Too many.
        let batch = Batch { ad: &[], plaintext: &[1; 8], nonce: 0..16, sealed_at: 16, seals: &mut seals[..] };
        let check = TagCheck { key: &[0; 32], ad: &[], nonce: &[], tag: &[0; 16] };
        assert!(!sealer.seal_batch_checking(batch, check));
        assert_eq!(seals, [[0u8; 40]; MAX_BATCH + 1]);
    }
}
