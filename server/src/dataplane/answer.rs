//! The glue both backends put around [`stratum_proto::respond`]: the request's receive metadata
//! in, the verdict out, and the reply's turnaround (T3 − T2) into the worker's histogram.
//!
//! One call per request on the hot path: no allocation, no lock, one clock read (T3, and only for
//! a normal reply, as the last step of building it).

use rand::rngs::StdRng;
use rand::RngCore;
use std::net::SocketAddr;
use stratum_proto::{respond, NtpTimestamp, RxMeta, ServerSnapshot, Verdict};

use crate::dataplane::admission::WorkerPolicy;
use crate::dataplane::stats::WorkerCounters;

/// Decides what `payload` (a request from `client`, received at `rx_time` on the host clock)
/// gets, writing any reply over it; records the reply's turnaround. The caller counts the verdict.
pub fn answer(
    payload: &mut [u8],
    client: SocketAddr,
    rx_time: NtpTimestamp,
    snapshot: &ServerSnapshot,
    admission: &mut WorkerPolicy,
    rng: &mut StdRng,
    counters: &WorkerCounters,
) -> Verdict {
    let rx = RxMeta { client, rx_time, noise: rng.next_u64() };
    // T3 as respond() read it (raw host clock, like rx_time), for the turnaround histogram.
    let mut tx_time = None;
    let verdict = respond(payload, rx, snapshot, admission, || {
        let t3 = stratum_host::clock::now();
        tx_time = Some(t3);
        t3
    });
    if let Some(t3) = tx_time {
        counters.turnaround.record(t3.since(rx_time));
    }
    verdict
}
