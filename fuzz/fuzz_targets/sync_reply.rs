//! Any datagram on an upstream's socket, at any time: the sync engine never panics, a reply that
//! does not answer our outstanding request never becomes a sample, and the snapshot it gives is
//! one a worker can serve (a valid stratum and leap indicator).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::sync::{ReplyOutcome, SourceConfig, SyncConfig, SyncEngine};
use stratum_proto::NtpTimestamp;

fuzz_target!(|input: (u64, u32, Vec<u8>)| {
    let (random, t4_step, datagram) = input;
    let now = NtpTimestamp::from_parts(3_980_000_000, 0);
    let mut engine = SyncEngine::new(SyncConfig::default());
    let Ok(id) = engine.add_source("192.0.2.10".parse().unwrap(), SourceConfig { iburst: true, ..Default::default() }, now)
    else {
        return;
    };
    engine.handle_timeout(now);
    let sent = engine.poll_transmit(now, random);
    let t4 = NtpTimestamp::from_bits(now.to_bits().wrapping_add(u64::from(t4_step)));
    let outcome = engine.handle_reply(id, &datagram, t4);
    // A sample needs our transmit timestamp echoed as the origin.
    if matches!(outcome, ReplyOutcome::Sample { .. }) {
        let sent = sent.expect("a sample answers a request");
        assert_eq!(datagram.get(24..32), Some(&sent.packet[40..48]));
    }
    let snapshot = engine.snapshot(t4);
    assert!(snapshot.stratum <= 16);
});
