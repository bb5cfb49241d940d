//! Cost of one full pipeline update (checks, clock filter, select, cluster, combine,
//! discipline) with 64 sources: one reply handled by a `SyncEngine` that holds 64 synchronised
//! sources. Issue 20's target: under 1 ms.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use stratum_proto::packet::{LeapIndicator, NtpHeader, NtpMode, NtpPacket, RefId};
use stratum_proto::sync::{SourceConfig, SourceId, SyncConfig, SyncEngine, SOURCE_STATE_BYTES};
use stratum_proto::{NtpDuration, NtpShort, NtpTimestamp};

const SOURCES: usize = 64;

fn reply(request: &[u8; 48], t: NtpTimestamp, jitter_ns: i64) -> [u8; 48] {
    let h = NtpHeader::new(request).unwrap();
    let t2 = t.add(NtpDuration::from_nanos(100_000 + jitter_ns));
    NtpPacket {
        leap: LeapIndicator::NoWarning,
        version: 4,
        mode: NtpMode::Server,
        stratum: 1,
        poll: h.poll(),
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_micros(10),
        ref_id: RefId(*b"GPS\0"),
        reference_timestamp: t,
        origin_timestamp: h.transmit_timestamp(),
        receive_timestamp: t2,
        transmit_timestamp: t2.add(NtpDuration::from_nanos(10_000)),
    }
    .to_bytes()
}

/// An engine with 64 sources that have each answered 16 polls, and the time it stands at.
fn warmed() -> (SyncEngine, Vec<SourceId>, NtpTimestamp, u64) {
    let mut t = NtpTimestamp::from_unix(1_796_428_800, 0);
    let mut e = SyncEngine::new(SyncConfig::default());
    let ids: Vec<_> = (0..SOURCES)
        .map(|i| {
            e.add_source(std::net::Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8).into(), SourceConfig::default(), t)
                .unwrap()
        })
        .collect();
    let mut random = 1u64;
    for round in 0..16 {
        while let Some(tx) = e.poll_transmit(t, random) {
            random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = t.add(NtpDuration::from_nanos(220_000));
            e.handle_reply(tx.source, &reply(&tx.packet, t, (random % 40_000) as i64), at);
        }
        t = t.add(NtpDuration::from_seconds(64));
        let _ = round;
    }
    (e, ids, t, random)
}

fn bench_update(c: &mut Criterion) {
    println!("size_of per-source state: {SOURCE_STATE_BYTES} bytes");
    let (mut e, ids, mut t, mut random) = warmed();
    c.bench_function("sync_update_64_sources", |b| {
        b.iter(|| {
            // A second of the sync thread's life: 64 sources at poll 64 s make one request and
            // one reply a second on average, and each reply runs the whole pipeline over all 64.
            t = t.add(NtpDuration::from_seconds(1));
            while let Some(tx) = e.poll_transmit(t, random) {
                random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let at = t.add(NtpDuration::from_nanos(220_000));
                black_box(e.handle_reply(tx.source, &reply(&tx.packet, t, (random % 40_000) as i64), at));
            }
        })
    });
    let _ = ids;
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
