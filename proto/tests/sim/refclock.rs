//! Issue 18's simulated appliance: a GPS receiver's NMEA sentences (300 ms after the second, 5 ms
//! jitter, `offset = 0.3`, `noselect`) and its PPS line (100 ns edge jitter, `prefer`), each pulse
//! numbered by the latest NMEA sample (chrony's `lock`: within 0.4 s, at most 2 pulses old),
//! through the real `SyncEngine` on a host clock 100 ms off and 25 ppm fast with a random-walk
//! wander. The served clock must stay within 1 µs of true time, stratum 1, refid PPS.

use stratum_proto::packet::{LeapIndicator, RefId};
use stratum_proto::sync::{RefclockConfig, RefclockSample, SourceState, SyncConfig, SyncEngine};
use stratum_proto::{NtpDuration, NtpTimestamp};

use crate::rng::Rng;

struct Host {
    phase: f64,
    freq: f64,
    wander: f64,
}

pub(crate) struct Figures {
    pub(crate) rms: f64,
    pub(crate) max: f64,
    pub(crate) stratum: u8,
    pub(crate) ref_id: RefId,
    pub(crate) unlocked: u32,
}

fn ts(start: NtpTimestamp, s: f64) -> NtpTimestamp {
    start.add(NtpDuration::from_seconds_f64(s))
}

/// Runs `duration` seconds; statistics from `stats_from` on. `pps` false: NMEA alone, selectable.
pub(crate) fn run_gps(seed: u64, duration: u32, stats_from: f64, pps: bool) -> Figures {
    let mut rng = Rng::new(seed);
    let start = NtpTimestamp::from_unix(1_796_428_800, 0);
    let mut host = Host { phase: 0.1, freq: 25e-6, wander: 1e-9 };
    let mut engine = SyncEngine::new(SyncConfig::default());
    let gps = engine
        .add_refclock(RefId(*b"GPS\0"), RefclockConfig { noselect: pps, ..Default::default() }, ts(start, 0.1))
        .unwrap();
    let pps_id = pps.then(|| {
        engine
            .add_refclock(RefId(*b"PPS\0"), RefclockConfig { prefer: true, ..Default::default() }, ts(start, 0.1))
            .unwrap()
    });
    // Host clock minus true time at true time t within second k (phase/freq at the second's start).
    let host_at = |h: &Host, k: u32, t: f64| ts(start, t + h.phase + h.freq * (t - f64::from(k)));
    let mut last_nmea: Option<(NtpTimestamp, f64)> = None;
    let (mut sum_sq, mut max, mut n, mut unlocked) = (0.0, 0.0f64, 0usize, 0);
    for k in 0..duration {
        let second = f64::from(k);
        // The pulse, numbered by the last NMEA sample (offset reference − host).
        let edge = host_at(&host, k, second + 100e-9 * rng.normal());
        if let Some(id) = pps_id {
            let locked = last_nmea.filter(|(at, _)| edge.since(*at).to_seconds_f64() <= 2.5).and_then(|(_, offset)| {
                let estimate = edge.add(NtpDuration::from_seconds_f64(offset)).since(start).to_seconds_f64();
                let named = estimate.round();
                ((estimate - named).abs() <= 0.4).then_some(named)
            });
            match locked {
                Some(named) => {
                    let sample = RefclockSample {
                        reference_time: ts(start, named),
                        local_receive_time: edge,
                        leap: LeapIndicator::NoWarning,
                        dispersion: 1e-7,
                        delay: 0.0,
                    };
                    engine.handle_refclock_sample(id, sample);
                }
                None => unlocked += 1,
            }
        }
        engine.handle_timeout(edge);
        // The sentence naming second k, 300 ms late with 5 ms of jitter; offset 0.3 configured.
        let arrival = host_at(&host, k, second + 0.3 + 5e-3 * rng.normal());
        let sample = RefclockSample {
            reference_time: ts(start, second + 0.3),
            local_receive_time: arrival,
            leap: LeapIndicator::NoWarning,
            dispersion: 1e-3,
            delay: 0.0,
        };
        last_nmea = Some((arrival, sample.reference_time.since(arrival).to_seconds_f64()));
        engine.handle_refclock_sample(gps, sample);
        engine.handle_timeout(arrival);
        // Observe at the half second.
        let now = host_at(&host, k, second + 0.5);
        if second >= stats_from {
            let served = engine.snapshot(now).correction.apply(now);
            let error = served.since(start).to_seconds_f64() - (second + 0.5);
            sum_sq += error * error;
            max = max.max(error.abs());
            n += 1;
        }
        host.phase += host.freq;
        host.freq += host.wander * rng.normal();
    }
    let end = host_at(&host, duration, f64::from(duration));
    let snap = engine.snapshot(end);
    let states: Vec<_> = engine.sources().map(|s| s.state).collect();
    if pps {
        assert_eq!(states, vec![SourceState::Unselectable, SourceState::SystemPeer], "NMEA noselect, PPS selected");
    }
    Figures { rms: (sum_sq / n.max(1) as f64).sqrt(), max, stratum: snap.stratum, ref_id: snap.ref_id, unlocked }
}
