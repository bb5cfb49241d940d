//! The AF_XDP worker's user-space work per request, ring to ring: classify the raw frame
//! (`parse_frame`), decide and write the NTP reply (`respond`), and turn the frame into the reply
//! in place (`write_reply`: swap addresses, set lengths, compute IPv4 and UDP checksums). Run over
//! a batch of 64 frames in one buffer, as a worker sees them in its UMEM, IPv4 and IPv6.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/frames.rs"]
mod frames;
use fixture::snapshot;
use frames::{answer_batch, request_frame, BATCH, FRAME_SIZE};

fn bench_frames(c: &mut Criterion) {
    let snap = snapshot();
    let mut umem = vec![0u8; FRAME_SIZE * BATCH];
    let mut group = c.benchmark_group("xdp_frame_path");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut noise = 0x9E37_79B9_7F4A_7C15u64;
    for (name, v6) in [("parse_respond_rewrite_batch64_ipv4", false), ("parse_respond_rewrite_batch64_ipv6", true)] {
        let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| request_frame(i, v6)).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                let sent = answer_batch(&mut umem, &frames, &snap, &mut noise);
                assert_eq!(sent, frames.iter().map(Vec::len).sum::<usize>(), "every frame answered in full");
                black_box(sent)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
