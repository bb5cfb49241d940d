//! Reference clocks as sources of the selection (issue 18): a GPS receiver, a PPS line, gpsd's
//! SHM or chrony's SOCK feed samples (reference time against the host clock) that the server's
//! driver threads read; the engine treats a refclock as a stratum-0 source, so the served
//! stratum is 1 and the refid the refclock's.
//!
//! Samples go through a median filter, chrony's: those of one poll interval (`2^poll` s, at most
//! `filter` of them) are sorted by offset, the middle 60 % averaged, and that one estimate goes to
//! the selection and the discipline, its error the spread of the ones kept.
//!
//! A refclock goes stale, and leaves the selection at once, when its driver says so (an NMEA
//! receiver reporting no fix: [`SyncEngine::refclock_stale`](super::SyncEngine::refclock_stale))
//! or when no sample came for `max_age` seconds (an SHM or SOCK writer that stopped, a PPS that
//! lost its lock), not a whole poll interval later. It is selectable again from its next
//! median-filter estimate, made of samples taken after it came back.

use super::filter::{Filtered, Sample};
use crate::packet::LeapIndicator;
use crate::time::NtpTimestamp;

/// A refclock's settings (the `[[refclock]]` table's selection keys).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefclockConfig {
    /// Preferred by the selection (chrony's and ntpd's `prefer`).
    pub prefer: bool,
    /// Followed and shown, never selected (an NMEA source only there to number PPS pulses).
    pub noselect: bool,
    /// chrony's `trust`: outvoted only by other trusted sources (a PPS that upstream servers
    /// cannot overrule); the untrusted ones must then agree with it ([`super::select::truechimers`]).
    pub trust: bool,
    /// chrony's `require`: while any source has it, the clock is updated only when one of them
    /// survives the selection (an appliance that must not serve upstream time without its GPS).
    pub require: bool,
    /// Median filter interval, log2 s (default 4: 16 s, chrony's).
    pub poll: i8,
    /// Most samples in one interval (default 64, chrony's `filter`).
    pub filter: usize,
    /// Seconds without a sample after which the refclock is stale (default 2.5: a 1 Hz driver
    /// may miss one second, not two). A driver slower than 1 Hz needs more.
    pub max_age: f64,
}

impl Default for RefclockConfig {
    fn default() -> Self {
        Self {
            prefer: false,
            noselect: false,
            trust: false,
            require: false,
            poll: 4,
            filter: 64,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// A refclock's default `max_age`, seconds.
pub const DEFAULT_MAX_AGE: f64 = 2.5;

/// Most samples a refclock's median filter keeps.
pub const MAX_FILTER: usize = 1024;

/// Why a refclock's settings were refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RefclockConfigError {
    Poll(i8),
    Filter(usize),
    MaxAge(f64),
}

impl core::fmt::Display for RefclockConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Poll(p) => write!(f, "poll {p} is outside -6..=10"),
            Self::Filter(n) => write!(f, "filter {n} is outside 1..={MAX_FILTER}"),
            Self::MaxAge(a) => write!(f, "max-age {a} s is not a positive number of seconds"),
        }
    }
}

impl RefclockConfig {
    pub fn validate(&self) -> Result<(), RefclockConfigError> {
        if !(-6..=10).contains(&self.poll) {
            return Err(RefclockConfigError::Poll(self.poll));
        }
        if !(1..=MAX_FILTER).contains(&self.filter) {
            return Err(RefclockConfigError::Filter(self.filter));
        }
        if !(self.max_age.is_finite() && self.max_age > 0.0) {
            return Err(RefclockConfigError::MaxAge(self.max_age));
        }
        Ok(())
    }
}

/// One measurement from a refclock driver (all times the host clock's, as the engine takes them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefclockSample {
    /// The reference's time at `local_receive_time` (its configured offset added).
    pub reference_time: NtpTimestamp,
    /// The host clock then.
    pub local_receive_time: NtpTimestamp,
    /// The reference's leap warning (NoWarning when it has none).
    pub leap: LeapIndicator,
    /// The sample's own error bound (the driver's precision), seconds.
    pub dispersion: f64,
    /// The configured `delay`, seconds (half of it counts in the root distance).
    pub delay: f64,
}

/// A refclock's filter state inside the engine.
#[derive(Clone, Debug)]
pub(crate) struct RefclockState {
    pub config: RefclockConfig,
    /// Raw offsets (reference − host) of this interval, with their times and dispersions.
    pending: Vec<(f64, NtpTimestamp, f64)>,
    pub delay: f64,
    pub leap: LeapIndicator,
    /// Host time the current interval ends.
    pub interval_end: NtpTimestamp,
    /// A sample arrived in the current interval.
    pub sampled: bool,
    /// Samples taken (for status) and the last raw offset.
    pub samples: u64,
    /// Host (raw) time of the last sample.
    pub last_sample_at: Option<NtpTimestamp>,
    /// Out of the selection until its next estimate: its driver said so, or `max_age` passed.
    pub stale: bool,
}

impl RefclockState {
    pub(crate) fn new(config: RefclockConfig, now: NtpTimestamp) -> Self {
        Self {
            config,
            pending: Vec::with_capacity(config.filter),
            delay: 0.0,
            leap: LeapIndicator::NoWarning,
            interval_end: now.add(crate::time::NtpDuration::from_seconds_f64(super::source::poll_seconds(config.poll))),
            sampled: false,
            samples: 0,
            last_sample_at: None,
            stale: false,
        }
    }

    /// When it goes stale for want of samples (None: it is already, or never sampled).
    pub(crate) fn stale_at(&self) -> Option<NtpTimestamp> {
        let last = self.last_sample_at.filter(|_| !self.stale)?;
        Some(last.add(crate::time::NtpDuration::from_seconds_f64(self.config.max_age)))
    }

    /// Its driver said the reference is not good (fix lost): stale, and the samples of this
    /// interval dropped (the next estimate is made of samples taken after it came back).
    /// Returns whether it was not stale before.
    pub(crate) fn go_stale(&mut self) -> bool {
        self.pending.clear();
        !core::mem::replace(&mut self.stale, true)
    }

    pub(crate) fn interval(&self) -> f64 {
        super::source::poll_seconds(self.config.poll)
    }

    /// Adds a raw sample; returns the filtered estimate when the interval is complete (its time
    /// passed, or `filter` samples).
    pub(crate) fn add(
        &mut self,
        offset: f64,
        time: NtpTimestamp,
        dispersion: f64,
        delay: f64,
        freq: f64,
    ) -> Option<Filtered> {
        self.samples += 1;
        self.sampled = true;
        self.last_sample_at = Some(time);
        self.delay = delay;
        if self.pending.len() == self.config.filter {
            self.pending.remove(0);
        }
        self.pending.push((offset, time, dispersion));
        let first = self.pending[0].1;
        let span = time.since(first).to_seconds_f64();
        // Enough for one estimate: `filter` samples or an interval's worth (a 1 Hz source at poll
        // 4: 16; the first estimate as soon as 4 are in, so that a new refclock counts soon).
        let due = self.pending.len() >= self.config.filter
            || span + 1e-3 >= self.interval() - 1.0
            || (self.samples == 4 && self.pending.len() == 4);
        if !due {
            return None;
        }
        Some(self.median(time, freq))
    }

    /// The middle 60 % of the pending offsets (brought to `now` at frequency `freq`), averaged.
    fn median(&mut self, now: NtpTimestamp, freq: f64) -> Filtered {
        for p in &mut self.pending {
            p.0 += freq * now.since(p.1).to_seconds_f64();
        }
        self.pending.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.pending.len();
        let drop = n * 2 / 10;
        let kept = &self.pending[drop..n - drop];
        let k = kept.len() as f64;
        let mean = kept.iter().map(|p| p.0).sum::<f64>() / k;
        let var = kept.iter().map(|p| (p.0 - mean) * (p.0 - mean)).sum::<f64>() / k;
        let own = kept.iter().map(|p| p.2).fold(0.0, f64::max);
        // The error of the mean: the spread over √k, never below the driver's precision / √k.
        let error = (var.sqrt().max(own) / k.sqrt()).max(1e-9);
        self.pending.clear();
        Filtered {
            sample: Sample { offset: mean, delay: self.delay, dispersion: error, time: now },
            dispersion: error,
            jitter: var.sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::NtpDuration;

    #[test]
    fn the_median_filter_drops_the_outliers_and_averages_the_middle() {
        let t0 = NtpTimestamp::from_parts(3_990_000_000, 0);
        let mut s = RefclockState::new(RefclockConfig { filter: 10, poll: 6, ..Default::default() }, t0);
        let warm = [1e-3; 4];
        let offsets = [1e-3, 1.1e-3, 0.9e-3, 1.0e-3, 5.0, 1.05e-3, 0.95e-3, -3.0, 1.0e-3, 1.0e-3];
        let mut out = None;
        for (i, o) in warm.iter().chain(&offsets).enumerate() {
            let t = t0.add(NtpDuration::from_seconds(i as i32));
            out = s.add(*o, t, 1e-6, 0.0, 0.0);
            if i == 3 {
                assert!(out.is_some(), "the first estimate after 4 samples");
            } else if i < 13 {
                assert!(out.is_none(), "{i}");
            }
        }
        let f = out.expect("filter full");
        assert!((f.sample.offset - 1e-3).abs() < 5e-5, "{f:?}");
        assert!(f.jitter < 1e-4, "{f:?}");
        assert!(RefclockConfig { filter: 0, ..Default::default() }.validate().is_err());
    }
}

/// `trust` and `require` through the engine's selection, with refclocks as the sources.
#[cfg(test)]
mod selection_tests {
    use super::*;
    use crate::packet::RefId;
    use crate::sync::{SourceId, SourceState, SyncConfig, SyncEngine};
    use crate::time::NtpDuration;

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(3_990_000_000, 0).add(NtpDuration::from_seconds_f64(seconds))
    }

    /// Refclocks at the given offsets (1 µs precision each), sampled at 1 Hz for `seconds`.
    fn run(engine: &mut SyncEngine, clocks: &[(SourceId, f64)], from: u32, seconds: u32) {
        let clocks: Vec<_> = clocks.iter().map(|&(id, offset)| (id, offset, 0.0)).collect();
        run_with_delay(engine, &clocks, from, seconds);
    }

    /// As [`run`], each refclock with its `delay` (half of it in its root distance).
    fn run_with_delay(engine: &mut SyncEngine, clocks: &[(SourceId, f64, f64)], from: u32, seconds: u32) {
        for k in from..from + seconds {
            let local = at(f64::from(k) + 0.1);
            for &(id, offset, delay) in clocks {
                let sample = RefclockSample {
                    reference_time: local.add(NtpDuration::from_seconds_f64(offset)),
                    local_receive_time: local,
                    leap: LeapIndicator::NoWarning,
                    dispersion: 1e-6,
                    delay,
                };
                engine.handle_refclock_sample(id, sample);
            }
            engine.handle_timeout(local);
        }
    }

    fn state(engine: &SyncEngine, id: SourceId) -> SourceState {
        engine.sources().find(|s| s.id == id).unwrap().state
    }

    /// A PPS against two refclocks 5 ms away from it that agree with each other: outvoted,
    /// unless trusted; trusted, it is the system peer and the two are out.
    #[test]
    fn a_trusted_refclock_is_not_outvoted() {
        for trust in [false, true] {
            let mut engine = SyncEngine::new(SyncConfig { minsane: 1, ..SyncConfig::default() });
            let mut add = |name: &[u8; 4], config: RefclockConfig| engine.add_refclock(RefId(*name), config, at(0.0));
            let pps = add(b"PPS\0", RefclockConfig { trust, poll: 2, ..Default::default() }).unwrap();
            let a = add(b"GPSA", RefclockConfig { poll: 2, ..Default::default() }).unwrap();
            let b = add(b"GPSB", RefclockConfig { poll: 2, ..Default::default() }).unwrap();
            run(&mut engine, &[(pps, 0.0), (a, 5e-3), (b, 5e-3)], 0, 30);
            let states = [pps, a, b].map(|id| state(&engine, id));
            if trust {
                assert_eq!(states[0], SourceState::SystemPeer, "{states:?}");
                assert_eq!(&states[1..], &[SourceState::Falseticker; 2], "{states:?}");
            } else {
                assert_eq!(states[0], SourceState::Falseticker, "{states:?}");
                assert!(states[1..].contains(&SourceState::SystemPeer), "{states:?}");
            }
        }
    }

    /// A PPS (1 µs) and a coarse NMEA-like source 0.5 ms off with a 10 ms delay agree: the PPS
    /// is the system peer, the other a candidate (RFC 5905's midpoint count found no majority).
    #[test]
    fn a_precise_and_a_coarse_refclock_that_agree_are_both_used() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let config = RefclockConfig { poll: 2, ..Default::default() };
        let pps = engine.add_refclock(RefId(*b"PPS\0"), config, at(0.0)).unwrap();
        let gps = engine.add_refclock(RefId(*b"GPS\0"), config, at(0.0)).unwrap();
        run_with_delay(&mut engine, &[(pps, 0.0, 0.0), (gps, 5e-4, 1e-2)], 0, 30);
        assert_eq!([pps, gps].map(|id| state(&engine, id)), [SourceState::SystemPeer, SourceState::Candidate]);
    }

    /// When the system peer goes stale, the served refid and stratum are the next peer's at
    /// once, not from that peer's next sample.
    #[test]
    fn the_served_refid_follows_a_new_system_peer_at_once() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let config = RefclockConfig { poll: 2, ..Default::default() };
        let pps = engine.add_refclock(RefId(*b"PPS\0"), RefclockConfig { prefer: true, ..config }, at(0.0)).unwrap();
        let gps = engine.add_refclock(RefId(*b"GPS\0"), config, at(0.0)).unwrap();
        run_with_delay(&mut engine, &[(pps, 0.0, 0.0), (gps, 5e-4, 1e-2)], 0, 20);
        let before = engine.tracking(at(20.15));
        assert_eq!((before.system_peer, before.ref_id), (Some(pps), RefId(*b"PPS\0")));
        assert!(engine.refclock_stale(pps, at(20.2)));
        let after = engine.tracking(at(20.25));
        assert_eq!((after.system_peer, after.ref_id, after.stratum), (Some(gps), RefId(*b"GPS\0"), 1));
        assert!(engine.snapshot(at(20.25)).root_delay.to_seconds_f64() > 9e-3, "the GPS's delay: {after:?}");
    }

    /// With a `require` refclock configured, the others alone never steer: when it goes stale
    /// nothing is selected, and it is back with its next estimate.
    #[test]
    fn without_its_required_refclock_nothing_is_selected() {
        let mut engine = SyncEngine::new(SyncConfig { minsane: 1, ..SyncConfig::default() });
        let config = RefclockConfig { poll: 2, ..Default::default() };
        let gps = engine.add_refclock(RefId(*b"GPS\0"), RefclockConfig { require: true, ..config }, at(0.0)).unwrap();
        let shm = engine.add_refclock(RefId(*b"SHM\0"), config, at(0.0)).unwrap();
        run(&mut engine, &[(gps, 0.0), (shm, 0.0)], 0, 20);
        assert!(engine.tracking(at(20.0)).system_peer.is_some());
        assert!(engine.refclock_stale(gps, at(20.2)));
        run(&mut engine, &[(shm, 0.0)], 21, 10);
        assert_eq!(engine.tracking(at(31.0)).system_peer, None, "the required GPS is stale");
        assert_eq!(state(&engine, shm), SourceState::Unselectable);
        run(&mut engine, &[(gps, 0.0), (shm, 0.0)], 31, 10);
        assert!(engine.tracking(at(41.0)).system_peer.is_some(), "back with the GPS");
    }
}
