//! A fixed amount of the frame path's work for `valgrind --tool=callgrind` (instruction counts
//! where perf counters are unavailable): `callgrind_frame ipv4|ipv6 BATCHES` answers BATCHES
//! batches of 64 frames exactly as the `frame` criterion bench does (the same `answer_batch`).
//! Run twice, with N and 2N batches, the difference over 64 N is the cost per request without the
//! start-up. Without arguments (as `cargo bench` runs it) it does nothing.

use std::hint::black_box;

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/frames.rs"]
mod frames;
use frames::{answer_batch, request_frame, BATCH, FRAME_SIZE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (v6, batches) = match (args.first().map(String::as_str), args.get(1).and_then(|n| n.parse::<u64>().ok())) {
        (Some("ipv4"), Some(n)) => (false, n),
        (Some("ipv6"), Some(n)) => (true, n),
        _ => return eprintln!("usage: callgrind_frame ipv4|ipv6 BATCHES"),
    };
    let snap = fixture::snapshot();
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| request_frame(i, v6)).collect();
    let mut umem = vec![0u8; FRAME_SIZE * BATCH];
    let mut noise = 0x9E37_79B9_7F4A_7C15u64;
    let mut sent = 0;
    for _ in 0..batches {
        sent += answer_batch(&mut umem, &frames, &snap, &mut noise);
    }
    assert_eq!(sent as u64, batches * frames.iter().map(Vec::len).sum::<usize>() as u64);
    black_box(sent);
}
