//! The glue both backends put around [`stratum_proto::respond`]: the request's receive metadata
//! in, the verdict out, and the reply's turnaround (T3 − T2) into the worker's histogram.
//!
//! One call per request on the hot path: no allocation, no lock, one clock read (T3, and only for
//! a normal reply, as the last step of building it).

use rand::rngs::StdRng;
use rand::RngCore;
use std::net::SocketAddr;
use stratum_proto::server::respond::respond_with;
use stratum_proto::{DropReason, NtpTimestamp, RxMeta, ServerSnapshot, Verdict};

use crate::auth::WorkerAuth;
use crate::dataplane::admission::WorkerPolicy;
use crate::dataplane::interleave::WorkerInterleave;
use crate::dataplane::stats::WorkerCounters;

/// Decides what `payload` (a request from `client`, received at `rx_time` on the host clock)
/// gets, writing any reply over it; records the reply's turnaround. The caller counts the verdict.
/// T3 is read from `read_clock` (the workers pass `stratum_host::clock::try_now`); a clock that
/// cannot be read turns a reply into a counted drop ([`DropReason::Clock`]): its transmit
/// timestamp would be untrue. Interleaved mode goes through `interleave` (afterwards its
/// `saved()` names the reply whose transmit stamp the backend should ask for).
#[allow(clippy::too_many_arguments)]
pub fn answer(
    payload: &mut [u8],
    client: SocketAddr,
    rx_time: NtpTimestamp,
    snapshot: &ServerSnapshot,
    admission: &mut WorkerPolicy,
    keys: &mut WorkerAuth,
    interleave: &mut WorkerInterleave,
    rng: &mut StdRng,
    counters: &WorkerCounters,
    read_clock: impl Fn() -> Option<NtpTimestamp>,
) -> Verdict {
    interleave.begin();
    let rx = RxMeta { client, rx_time, noise: rng.next_u64() };
    // T3 as respond() read it (raw host clock, like rx_time), for the turnaround histogram; None
    // inside when the read failed.
    let mut tx_time = None;
    let verdict = respond_with(payload, rx, snapshot, admission, keys, interleave, || {
        let t3 = read_clock();
        tx_time = Some(t3);
        t3.unwrap_or(NtpTimestamp::ZERO)
    });
    match tx_time {
        Some(Some(t3)) => counters.turnaround.record(t3.since(rx_time)),
        Some(None) if verdict.reply_len().is_some() => return Verdict::Drop(DropReason::Clock),
        _ => {}
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use stratum_proto::NtpPacket;

    #[test]
    fn a_clock_that_cannot_be_read_is_a_counted_drop_not_a_false_time() {
        let config = crate::config::Config::embedded_default();
        let admission = crate::dataplane::admission::Admission::from_config(&config, false);
        let counters = std::sync::Arc::new(WorkerCounters::default());
        let mut policy = admission.for_worker(counters.clone(), 1);
        let mut rng = StdRng::seed_from_u64(1);
        let mut snapshot = ServerSnapshot::unsynchronized(-20);
        snapshot.stratum = 2;
        snapshot.leap = stratum_proto::LeapIndicator::NoWarning;
        let client = "192.0.2.7:123".parse().unwrap();
        let rx = NtpTimestamp::from_parts(3_990_000_000, 0);
        let request = NtpPacket::client_request(4, NtpTimestamp::from_parts(3_990_000_000, 7)).to_bytes();
        let mut buf = request;
        let broken = || None;
        let mut keys = WorkerAuth::default();
        let mut interleave = WorkerInterleave::new(None, counters.clone());
        let v = answer(
            &mut buf,
            client,
            rx,
            &snapshot,
            &mut policy,
            &mut keys,
            &mut interleave,
            &mut rng,
            &counters,
            broken,
        );
        assert_eq!(v, Verdict::Drop(DropReason::Clock));
        let mut buf = request;
        let working = || Some(NtpTimestamp::from_parts(3_990_000_000, 1000));
        let v = answer(
            &mut buf,
            client,
            rx,
            &snapshot,
            &mut policy,
            &mut keys,
            &mut interleave,
            &mut rng,
            &counters,
            working,
        );
        assert!(v.reply_len().is_some(), "{v:?}");
    }
}
