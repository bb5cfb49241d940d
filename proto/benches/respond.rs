//! Cost of one `respond()` decision: a plain client request answered with a full reply, and the
//! cheapest drop, so the two ends of the per-packet budget are both visible.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stratum_proto::server::interleaved::InterleavedStore;
use stratum_proto::server::respond::respond_with;
use stratum_proto::{respond, NoAuth, NtpPacket, NtpTimestamp, RxMeta, ServeAll};

#[path = "common/fixture.rs"]
mod fixture;
use fixture::snapshot;
#[path = "common/interleave.rs"]
mod interleave;
use interleave::Shared;

fn bench_respond(c: &mut Criterion) {
    let snap = snapshot();
    let request = NtpPacket::client_request(4, NtpTimestamp::from_parts(0xEC00_0010, 0x1234_5678)).to_bytes();
    let mut group = c.benchmark_group("respond");
    group.throughput(Throughput::Elements(1));

    let client: std::net::SocketAddr = "198.51.100.7:123".parse().unwrap();
    let mut noise = 0x9E37_79B9_7F4A_7C15u64;
    group.bench_function("client_request_v4", |b| {
        let mut buf = request;
        b.iter(|| {
            buf = request;
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
            let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise };
            black_box(respond(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut NoAuth, || {
                NtpTimestamp::from_parts(0xEC00_0011, 0x100)
            }))
        })
    });

    // The same request served from a virtual clock (source = "sync"): the correction (an offset
    // and a rate since its base) applied to T2 and T3. Side by side with client_request_v4, which
    // serves the identity correction, in one run: the difference is the virtual clock's cost.
    let disciplined = stratum_proto::ServerSnapshot {
        correction: stratum_proto::ClockCorrection {
            offset: stratum_proto::NtpDuration::from_nanos(1_234_567),
            base: NtpTimestamp::from_parts(0xEC00_0000, 0),
            rate: -31_337,
        },
        ..snap
    };
    group.bench_function("client_request_v4_virtual_clock", |b| {
        let mut buf = request;
        b.iter(|| {
            buf = request;
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
            let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise };
            black_box(respond(black_box(&mut buf), rx, black_box(&disciplined), &mut ServeAll, &mut NoAuth, || {
                NtpTimestamp::from_parts(0xEC00_0011, 0x100)
            }))
        })
    });

    // A request signed with an AES-128-CMAC key (RFC 8573): the MAC checked, the reply signed.
    // Side by side with client_request_v4: the difference is what symmetric keys cost.
    let key = stratum_proto::auth::SymmetricKey::new(7, stratum_proto::auth::KeyType::Aes128Cmac, &[0x42; 16]).unwrap();
    let mut keys = stratum_proto::auth::KeyTable::new(vec![key.clone()]).unwrap();
    let mut signed = [0u8; 68];
    signed[..48].copy_from_slice(&request);
    key.sign(&mut signed, 48).unwrap();
    group.bench_function("client_request_v4_aes_cmac", |b| {
        let mut buf = signed;
        b.iter(|| {
            buf = signed;
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
            let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise };
            black_box(respond(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut keys, || {
                NtpTimestamp::from_parts(0xEC00_0011, 0x100)
            }))
        })
    });

    // An xleave client's steady state: each request quotes the last reply's receive timestamp,
    // so respond_with takes that entry from the shared store and saves its own. Side by side
    // with client_request_v4 (a basic client, which never touches the store).
    let store = InterleavedStore::new(65_536);
    group.bench_function("client_request_v4_interleaved", |b| {
        let mut buf = request;
        let mut origin = NtpTimestamp::ZERO;
        let mut rx_s = 0xEC00_0011u32;
        b.iter(|| {
            buf = request;
            buf[24..32].copy_from_slice(&origin.to_be_bytes());
            buf[32..40].copy_from_slice(&NtpTimestamp::from_parts(rx_s, 7).to_be_bytes());
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
            rx_s = rx_s.wrapping_add(1);
            let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(rx_s, 0), noise };
            let v =
                respond_with(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut NoAuth, &mut Shared(&store), || {
                    NtpTimestamp::from_parts(rx_s, 0x100)
                });
            origin = NtpTimestamp::from_bits(u64::from_be_bytes(buf[32..40].try_into().unwrap()));
            black_box(v)
        })
    });

    group.bench_function("drop_mode_4", |b| {
        let mut spoofed = request;
        spoofed[0] = (spoofed[0] & !7) | 4;
        b.iter(|| {
            let rx = RxMeta { client, rx_time: NtpTimestamp::ZERO, noise: 0 };
            black_box(respond(black_box(&mut spoofed), rx, &snap, &mut ServeAll, &mut NoAuth, || NtpTimestamp::ZERO))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_respond);
criterion_main!(benches);
