//! The clock filter (RFC 5905 section 10): the last eight samples of one source, the one with the
//! smallest delay taken as its best, popcorn spikes suppressed, dispersion and jitter.
//!
//! Offsets here are *raw*: the upstream's time minus the host clock's, not minus the served
//! clock's. They drift at the host clock's frequency error, so wherever two samples taken at
//! different times are compared, the caller's current frequency estimate (`freq`, seconds per
//! second of upstream minus host) brings them to a common time first.

use super::{MAX_DISPERSION, PHI};
use crate::time::NtpTimestamp;

/// Number of stages (RFC 5905's NSTAGE).
pub const STAGES: usize = 8;
/// Popcorn gate: a best sample further than this many jitters from the previous one is a spike.
const SPIKE_GATE: f64 = 3.0;
/// Stages holding a sample from which a source's dispersion is its samples' own, the empty
/// stages left out (see [`ClockFilter::add`]). Below it, an empty stage counts
/// [`MAX_DISPERSION`] as in RFC 5905's reference code, which keeps a source with 1 to 3 samples
/// over the 1.5 s distance limit (7.9, 3.9 and 1.9 s), i.e. not selectable yet.
pub const MIN_SAMPLES: usize = 4;

/// One exchange's measurement, raw (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Upstream time minus host clock, seconds.
    pub offset: f64,
    /// Round-trip delay less the upstream's turnaround, seconds (never below zero).
    pub delay: f64,
    /// Dispersion when taken: both sides' precision plus 15 ppm of the delay, seconds.
    pub dispersion: f64,
    /// Host clock when the reply arrived (T4).
    pub time: NtpTimestamp,
}

/// The filter's best estimate of a source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Filtered {
    /// The best sample (smallest delay among the stages).
    pub sample: Sample,
    /// RFC 5905's weighted sum of the stages' dispersions, as of `sample.time` (recomputed
    /// with every sample added, even one that is not the best), seconds.
    pub dispersion: f64,
    /// RMS of the stages' offsets about the best one's (after removing the frequency), seconds.
    pub jitter: f64,
}

/// What [`ClockFilter::add`] made of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FilterVerdict {
    /// The best sample changed to one newer than any used before: this is the source's new estimate.
    New(Filtered),
    /// The best sample is one already used (or older): nothing new for the system process.
    NotNewer,
    /// The new best sample jumped more than three jitters within two poll intervals: held back
    /// as a popcorn spike (it becomes usable if the next ones agree with it).
    Popcorn,
}

/// Eight stages, newest first, and the last estimate handed out.
#[derive(Clone, Debug, Default)]
pub struct ClockFilter {
    stages: [Option<Sample>; STAGES],
    last: Option<Filtered>,
}

impl ClockFilter {
    /// An empty filter.
    pub const fn new() -> Self {
        Self { stages: [None; STAGES], last: None }
    }

    /// Forgets every stage (a source that was reset or restarted).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Takes `estimate` as the source's estimate as it is (a reference clock: its own median
    /// filter made it), with no stage kept.
    pub(crate) fn set_estimate(&mut self, estimate: Filtered) {
        self.last = Some(estimate);
    }

    /// The last estimate handed out by [`add`](Self::add), if any.
    pub fn last(&self) -> Option<&Filtered> {
        self.last.as_ref()
    }

    /// The stages, newest first (`ntpq`'s filtoffset, filtdelay, filtdisp).
    pub fn stages(&self) -> &[Option<Sample>; STAGES] {
        &self.stages
    }

    /// Number of stages holding a sample.
    pub fn len(&self) -> usize {
        self.stages.iter().flatten().count()
    }

    /// True when no stage holds a sample.
    pub fn is_empty(&self) -> bool {
        self.stages[0].is_none()
    }

    /// The smallest delay among the stages, if any.
    pub fn min_delay(&self) -> Option<f64> {
        self.stages.iter().flatten().map(|s| s.delay).reduce(f64::min)
    }

    /// Shifts every raw offset taken before `before` by `by` seconds (a leap second the served
    /// clock applied: the upstream's time moved against the host clock's).
    pub fn shift_offsets(&mut self, before: NtpTimestamp, by: f64) {
        for s in self.stages.iter_mut().flatten() {
            if s.time.since(before).to_bits() < 0 {
                s.offset += by;
            }
        }
        if let Some(l) = self.last.as_mut().filter(|l| l.sample.time.since(before).to_bits() < 0) {
            l.sample.offset += by;
        }
    }

    /// Adds `sample`, taken at a poll interval of `poll_interval` seconds, with `freq` the current
    /// frequency estimate (upstream minus host, s/s) and `precision` the floor of the jitter.
    pub fn add(&mut self, sample: Sample, poll_interval: f64, freq: f64, precision: f64) -> FilterVerdict {
        self.stages.copy_within(0..STAGES - 1, 1);
        self.stages[0] = Some(sample);
        let now = sample.time;

        // Stages sorted by delay, the expired ones (dispersion past MAX_DISPERSION) last.
        let mut order = [(0usize, f64::INFINITY); STAGES];
        for (i, stage) in self.stages.iter().enumerate() {
            if let Some(s) = stage {
                let disp = s.dispersion + PHI * now.since(s.time).to_seconds_f64().max(0.0);
                if disp < MAX_DISPERSION {
                    order[i] = (i, s.delay);
                    continue;
                }
            }
            order[i] = (i, f64::INFINITY);
        }
        order.sort_unstable_by(|a, b| a.1.total_cmp(&b.1));
        let Some(best) = self.stages[order[0].0] else { return FilterVerdict::NotNewer };

        // RFC 5905's weighted sum (weights 1/2, 1/4, ... in delay order). The reference code
        // counts an empty stage as MAX_DISPERSION, so a source with 4 of 8 stages filled (an
        // iburst) carries 16 s × (1/32 + ... + 1/256) = 0.94 s of dispersion that says nothing
        // about its samples, widening its correctness interval until every stage is filled (8
        // polls: over two hours at a 1024 s poll) and propagating into the served root
        // dispersion. From MIN_SAMPLES on, the empty stages are left out and the weights of
        // the filled ones normalised to sum to 1 (the same figure once all 8 are filled).
        let mut dispersion = 0.0;
        let mut empty = 0.0;
        let mut total_weight = 0.0;
        let mut weight = 0.5;
        let mut sum_sq = 0.0;
        let mut valid = 0usize;
        for (i, delay) in order {
            match self.stages[i] {
                Some(s) if delay.is_finite() => {
                    let at_best = s.offset + freq * best.time.since(s.time).to_seconds_f64();
                    sum_sq += (at_best - best.offset).powi(2);
                    valid += 1;
                    dispersion += weight * (s.dispersion + PHI * now.since(s.time).to_seconds_f64().max(0.0));
                    total_weight += weight;
                }
                _ => empty += weight * MAX_DISPERSION,
            }
            weight /= 2.0;
        }
        let dispersion = if valid >= MIN_SAMPLES { dispersion / total_weight } else { dispersion + empty };
        let jitter = if valid > 1 { (sum_sq / (valid - 1) as f64).sqrt() } else { 0.0 }.max(precision);
        let estimate = Filtered { sample: best, dispersion, jitter };

        if let Some(last) = self.last.as_mut() {
            let elapsed = best.time.since(last.sample.time).to_seconds_f64();
            let popcorn = (best.offset - (last.sample.offset + freq * elapsed)).abs()
                > SPIKE_GATE * last.jitter.max(precision)
                && elapsed < 2.0 * poll_interval;
            // The estimate keeps its sample, but its dispersion and jitter are the stages' now.
            last.dispersion = dispersion - PHI * now.since(last.sample.time).to_seconds_f64().max(0.0);
            last.jitter = jitter;
            if elapsed <= 0.0 {
                return FilterVerdict::NotNewer;
            }
            if popcorn {
                return FilterVerdict::Popcorn;
            }
        }
        self.last = Some(estimate);
        FilterVerdict::New(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::NtpDuration;

    fn at(seconds: u32) -> NtpTimestamp {
        NtpTimestamp::from_parts(seconds, 0)
    }

    fn sample(t: u32, offset: f64, delay: f64) -> Sample {
        Sample { offset, delay, dispersion: 1e-6, time: at(t) }
    }

    #[test]
    fn the_smallest_delay_wins_and_is_used_once() {
        let mut f = ClockFilter::new();
        assert!(matches!(f.add(sample(0, 1e-3, 200e-6), 64.0, 0.0, 1e-7), FilterVerdict::New(_)));
        // A worse delay: the best is still the first sample, already used.
        assert_eq!(f.add(sample(64, 1.01e-3, 400e-6), 64.0, 0.0, 1e-7), FilterVerdict::NotNewer);
        let FilterVerdict::New(e) = f.add(sample(128, 1.02e-3, 150e-6), 64.0, 0.0, 1e-7) else { panic!() };
        assert_eq!(e.sample.time, at(128));
        assert!((e.jitter - 15.8e-6).abs() < 1e-7, "{}", e.jitter);
        assert_eq!(f.len(), 3);
        assert_eq!(f.min_delay(), Some(150e-6));
    }

    #[test]
    fn a_lone_jump_is_popcorn_then_accepted_when_it_persists() {
        let mut f = ClockFilter::new();
        for i in 0..8 {
            f.add(sample(i * 64, 1e-3 + (i % 2) as f64 * 1e-6, 200e-6 - i as f64 * 1e-6), 64.0, 0.0, 1e-7);
        }
        assert_eq!(f.add(sample(8 * 64, 50e-3, 100e-6), 64.0, 0.0, 1e-7), FilterVerdict::Popcorn);
        // Long after (more than two polls), the same jump is a new estimate.
        assert!(matches!(f.add(sample(11 * 64, 50e-3, 90e-6), 64.0, 0.0, 1e-7), FilterVerdict::New(_)));
    }

    #[test]
    fn frequency_is_removed_before_comparing_samples() {
        let mut f = ClockFilter::new();
        let freq = 25e-6; // upstream gains 25 µs/s on the host clock
        for i in 0..8u32 {
            let v = f.add(sample(i * 64, freq * f64::from(i * 64), 200e-6 - f64::from(i) * 1e-6), 64.0, freq, 1e-7);
            assert!(matches!(v, FilterVerdict::New(_)), "{i}: {v:?}");
        }
        assert!(f.last().unwrap().jitter < 1e-6);
        // Old stages' dispersion grows at 15 ppm.
        let mut g = ClockFilter::new();
        g.add(sample(0, 0.0, 1e-3), 64.0, 0.0, 1e-7);
        let FilterVerdict::New(e) = g.add(sample(1000, 0.0, 1e-4), 64.0, 0.0, 1e-7) else { panic!() };
        assert!(e.dispersion > 0.5 * 1e-6 + 0.25 * (1e-6 + PHI * 1000.0) - 1e-9);
        let _ = NtpDuration::ZERO;
    }

    #[test]
    fn empty_stages_count_only_until_a_source_has_enough_samples() {
        // RFC 5905's reference weighting while a source has 1 to 3 samples: the empty stages
        // keep it over the 1.5 s distance limit.
        let mut f = ClockFilter::new();
        for (n, floor) in [(1, 7.9), (2, 3.9), (3, 1.9)] {
            f.add(sample(n * 2, 1e-3, 200e-6), 2.0, 0.0, 1e-7);
            let d = f.last().unwrap().dispersion;
            assert!(d > floor && d < MAX_DISPERSION, "{n} samples: {d}");
        }
        // From the fourth on (an iburst's worth), only the samples count: microseconds, not
        // the 0.94 s that 4 empty stages at 16 s would add.
        f.add(sample(8, 1e-3, 200e-6), 2.0, 0.0, 1e-7);
        let d = f.last().unwrap().dispersion;
        assert!(d < 1e-4, "4 samples: {d}");
        // Still a weighted mean of the stages' own dispersions, aged at 15 ppm.
        assert!(d >= 1e-6, "{d}");
    }

    #[test]
    fn shifting_for_a_leap_second_moves_older_samples_only() {
        let mut f = ClockFilter::new();
        f.add(sample(0, 0.5, 1e-3), 64.0, 0.0, 1e-7);
        f.shift_offsets(at(10), -1.0);
        assert_eq!(f.last().unwrap().sample.offset, -0.5);
        f.shift_offsets(at(0), -1.0);
        assert_eq!(f.last().unwrap().sample.offset, -0.5);
    }
}
