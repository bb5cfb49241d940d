//! The pieces nts/siv.rs is built from, on this machine (issue 16): one AES-128 block through
//! the `aes` crate's backend (inside one `encrypt_with_backend` pass, as siv.rs runs), a chain of
//! 13 dependent blocks (a CMAC over 208 bytes: the C2S check's length) with the chaining value
//! kept as a big-endian `u128` (as siv.rs does) and as the block's bytes, 8 independent blocks
//! one by one and through the backend's 8-block parallel path, a key schedule (what a client's
//! one-shot key costs), GF(2^128) doubling, and the block loads. Every pass starts from the
//! last one's output, so nothing is hoisted. Tells the AES-NI latency apart from what surrounds
//! it (bench/results/nts-cost-2core-20261205.md).

use std::hint::black_box;

use aes::cipher::consts::U16;
use aes::cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit, ParBlocks};
use aes::{Aes128Enc, Block};
use criterion::{criterion_group, criterion_main, Criterion};

/// Runs `f` with the backend, like siv.rs's passes.
struct Run<F>(F);
impl<F> BlockSizeUser for Run<F> {
    type BlockSize = U16;
}
trait WithBackend {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B);
}
impl<F: WithBackend> BlockClosure for Run<&mut F> {
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        self.0.run(backend)
    }
}

#[inline(always)]
fn enc_u128<B: BlockBackend<BlockSize = U16>>(b: &mut B, v: u128) -> u128 {
    let mut x = Block::from(v.to_be_bytes());
    b.proc_block((&mut x).into());
    u128::from_be_bytes(x.into())
}

#[inline(always)]
fn xor(a: [u8; 16], b: &[u8; 16]) -> [u8; 16] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

#[inline(always)]
fn enc_bytes<B: BlockBackend<BlockSize = U16>>(b: &mut B, v: [u8; 16]) -> [u8; 16] {
    let mut x = Block::from(v);
    b.proc_block((&mut x).into());
    x.into()
}

struct One(u128);
impl WithBackend for One {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        self.0 = enc_u128(b, self.0);
    }
}

struct ChainU128<'a>(&'a [u8; 208], u128);
impl WithBackend for ChainU128<'_> {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        // From the last result: each pass depends on the one before (nothing to hoist).
        let mut s = self.1;
        for i in 0..13 {
            let mut m = [0u8; 16];
            m.copy_from_slice(&self.0[16 * i..16 * i + 16]);
            s = enc_u128(b, s ^ u128::from_be_bytes(m));
        }
        self.1 = s;
    }
}

struct TwoChainsU128<'a>(&'a [u8; 208], u128, u128);
impl WithBackend for TwoChainsU128<'_> {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        // Two independent chains of 13, in lock step: as long as one if the CPU overlaps them.
        let (mut s, mut t) = (self.1, self.2);
        for i in 0..13 {
            let mut m = [0u8; 16];
            m.copy_from_slice(&self.0[16 * i..16 * i + 16]);
            s = enc_u128(b, s ^ u128::from_be_bytes(m));
            t = enc_u128(b, t ^ u128::from_be_bytes(m).rotate_left(8));
        }
        (self.1, self.2) = (s, t);
    }
}

struct ChainBytes<'a>(&'a [u8; 208], [u8; 16]);
impl WithBackend for ChainBytes<'_> {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        let mut s = self.1;
        for m in self.0.chunks_exact(16) {
            s = enc_bytes(b, xor(s, m.try_into().unwrap()));
        }
        self.1 = s;
    }
}

struct EightOneByOne([Block; 8]);
impl WithBackend for EightOneByOne {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        for x in &mut self.0 {
            // Each block from the one before's output (last pass): 8 independent chains.
            b.proc_block(x.into());
        }
    }
}

struct EightPar([Block; 8]);
impl WithBackend for EightPar {
    fn run<B: BlockBackend<BlockSize = U16>>(&mut self, b: &mut B) {
        // The backend's parallel path (8 blocks with AES-NI), as many groups as fit.
        let mut pb = ParBlocks::<B>::default();
        for chunk in self.0.chunks_mut(pb.len()) {
            pb[..chunk.len()].clone_from_slice(chunk);
            b.proc_par_blocks_inplace(&mut pb);
            chunk.clone_from_slice(&pb[..chunk.len()]);
        }
    }
}

fn bench(c: &mut Criterion) {
    let cipher = Aes128Enc::new(&[0x2B; 16].into());
    let data: [u8; 208] = core::array::from_fn(|i| i as u8);
    let mut g = c.benchmark_group("aes_parts");
    g.bench_function("one_block_pass", |b| {
        let mut s = One(1);
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box(s.0)
        })
    });
    g.bench_function("one_block_encrypt_block", |b| {
        let mut x = Block::default();
        b.iter(|| {
            cipher.encrypt_block(black_box(&mut x));
        })
    });
    g.bench_function("chain_13_u128", |b| {
        let mut s = ChainU128(&data, 0);
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box(s.1)
        })
    });
    g.bench_function("two_chains_13_u128", |b| {
        let mut s = TwoChainsU128(&data, 0, 1);
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box((s.1, s.2))
        })
    });
    g.bench_function("chain_13_bytes", |b| {
        let mut s = ChainBytes(&data, [0; 16]);
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box(s.1)
        })
    });
    g.bench_function("eight_one_by_one", |b| {
        let mut s = EightOneByOne(Default::default());
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box(&s.0);
        })
    });
    g.bench_function("eight_par_blocks", |b| {
        let mut s = EightPar(Default::default());
        b.iter(|| {
            cipher.encrypt_with_backend(Run(&mut s));
            black_box(&s.0);
        })
    });
    g.bench_function("key_schedule", |b| b.iter(|| black_box(Aes128Enc::new(black_box(&[7u8; 16].into())))));
    g.bench_function("dbl_x13", |b| {
        b.iter(|| {
            let mut v = black_box(0x8000_0000_0000_0000_0000_0000_0000_0001u128);
            for _ in 0..13 {
                v = (v << 1) ^ ((v >> 127) * 0x87);
            }
            black_box(v)
        })
    });
    g.bench_function("load_13_blocks_u128_be", |b| {
        b.iter(|| {
            let d = black_box(&data);
            let mut s = 0u128;
            for i in 0..13 {
                let mut m = [0u8; 16];
                m.copy_from_slice(&d[16 * i..16 * i + 16]);
                s ^= u128::from_be_bytes(m);
            }
            black_box(s)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
