//! The clock discipline: a two-state Kalman filter (phase and frequency of the host clock against
//! true time) feeding a virtual clock that is slewed, and stepped only at start.
//!
//! # Why a Kalman filter
//!
//! The simulation targets (`lan`: RMS < 25 µs where chronyd reaches 61 µs; frequency error RMS
//! < 0.03 ppm under a random-walk frequency) ask for the statistically best use of every sample.
//! A Kalman filter over (phase, frequency) is that optimum for a random-walk-frequency oscillator
//! measured with independent noise, and it takes each sample with its own error estimate: a
//! sample whose delay is `x` above the source's minimum has an offset error uniform in ±x/2
//! (exactly so for independent exponential delays each way), so variance x²/12. Samples with
//! large delays thus count for little without being thrown away, and the clock filter's
//! minimum-delay choice still drives selection. RFC 5905's PLL/FLL uses one sample per poll and a
//! fixed time constant; chrony's regression needs a run of samples and a window heuristic; the
//! Kalman filter needs one assumption instead, the oscillator's wander ([`DisciplineConfig::wander`]),
//! which also sets the poll interval ([`Discipline::suggested_poll`]). ntpd-rs made the same choice.
//!
//! # Output
//!
//! The estimate is of `p(t) = true time − host clock`. The served clock is the host clock plus a
//! [`ClockCorrection`] (`offset + rate × (t − base)`), which this module moves towards `p(t)`:
//! the frequency at once, the phase by a slew of at most [`DisciplineConfig::max_slew`] (500 ppm)
//! that ends at a deadline the engine reports ([`Discipline::slew_end`]), or by a step only past
//! the step threshold, at most `max_steps` times and only before the clock was first in sync.

use crate::server::snapshot::ClockCorrection;
use crate::time::{NtpDuration, NtpTimestamp};

/// Shortest slew: a phase correction is spread over at least this many seconds.
const MIN_SLEW_S: f64 = 1.0;
/// Frequency prior at start: ±100 ppm (one sigma) around [`DisciplineConfig::initial_frequency`].
const INITIAL_FREQ_SIGMA: f64 = 100e-6;
/// Largest frequency the estimate may hold, s/s (as ntpd: 500 ppm).
pub const MAX_FREQUENCY: f64 = 500e-6;
/// White phase noise of the clock between samples, s²/s (keeps the filter from over-trusting
/// its own prediction over long polls).
const PHASE_NOISE: f64 = 1e-16;
/// Innovations past this many sigmas (and past [`SPIKE_FLOOR_S`]) are spikes.
const SPIKE_SIGMAS: f64 = 6.0;
/// ... and past this absolute size, seconds.
const SPIKE_FLOOR_S: f64 = 1e-3;
/// The poll interval grows while the oscillator's wander over two intervals stays below this
/// fraction of the measurement variance (tuned in the `lan` and `internet` simulations).
const POLL_NOISE_RATIO: f64 = 0.00002;
/// Spikes that persist this long are believed (RFC 5905's stepout), seconds.
const STEPOUT_S: f64 = 300.0;
/// The poll interval grows only while the offset error predicted at the longer interval
/// ([`Discipline::predicted_phase_error`]) stays below this, seconds: where the network's noise
/// is high (an internet path: milliseconds per sample) averaging fewer samples would cost more
/// accuracy than the polls it saves, so the poll stays short there.
pub const POLL_ERROR_BUDGET_S: f64 = 50e-6;
/// Weight of one sample in the running means of the samples' information and spacing.
const STATS_WEIGHT: f64 = 0.05;

/// How the clock is steered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DisciplineConfig {
    /// Offsets past this are stepped (while steps are allowed), below it slewed; seconds
    /// (default 0.128).
    pub step_threshold: f64,
    /// Steps allowed in all, only before the clock is first in sync (default 1).
    pub max_steps: u32,
    /// Offsets past this are refused (default 1000 s) ...
    pub panic_threshold: f64,
    /// ... unless it is the very first update and this is set (default true, like `ntpd -g`).
    pub allow_panic_at_start: bool,
    /// The served clock is never stepped to before this Unix time (the build date).
    pub build_date_unix: i64,
    /// Largest phase slew rate, s/s (default 500e-6).
    pub max_slew: f64,
    /// The oscillator's random-walk frequency noise, s⁻¹ (variance of the frequency's change per
    /// second; default 1e-18, i.e. 0.001 ppm per √s, a quartz oscillator in a stable room).
    /// Higher follows frequency changes faster and polls more often, lower averages longer.
    pub wander: f64,
    /// The frequency to start from (upstream minus host, s/s; a saved drift value), default 0.
    pub initial_frequency: f64,
    /// Largest rate of the correction, frequency and slew together, s/s (default 1000 ppm, what
    /// the snapshot carries; a kernel takes at most 500 ppm, so a disciplined host clock asks
    /// for less: the slew then gives way to the frequency).
    pub max_rate: f64,
}

impl Default for DisciplineConfig {
    fn default() -> Self {
        Self {
            step_threshold: 0.128,
            max_steps: 1,
            panic_threshold: 1000.0,
            allow_panic_at_start: true,
            build_date_unix: 1_764_892_800, // 2025-12-05
            max_slew: 500e-6,
            wander: 1e-18,
            initial_frequency: 0.0,
            max_rate: 2.0 * MAX_FREQUENCY,
        }
    }
}

/// What one update did to the served clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockAction {
    /// Phase slewed: `offset` seconds to remove, at `rate` s/s on top of the frequency.
    Slew { offset: f64, rate: f64 },
    /// Stepped by `offset` seconds.
    Step { offset: f64 },
    /// The sample was taken as a spike and ignored (|innovation| in seconds).
    Spike { innovation: f64 },
    /// Offset past the panic threshold: refused, nothing changed.
    PanicRefused { offset: f64 },
    /// A step that would set the clock before the build date: refused, nothing changed.
    BeforeBuildDate { offset: f64 },
}

#[derive(Clone, Copy, Debug)]
struct Kalman {
    time: NtpTimestamp,
    phase: f64,
    freq: f64,
    cov: [[f64; 2]; 2],
}

/// The discipline's state: the Kalman estimate and the correction it publishes.
#[derive(Clone, Debug)]
pub struct Discipline {
    config: DisciplineConfig,
    kalman: Option<Kalman>,
    correction: ClockCorrection,
    slew_end: Option<NtpTimestamp>,
    steps: u32,
    in_sync_once: bool,
    spike_since: Option<NtpTimestamp>,
    /// Running mean of the measurement variance, s² (sets the poll interval).
    typical_variance: f64,
    /// Running mean of the samples' information (1 / variance), s⁻².
    mean_information: f64,
    /// Running mean of the time between samples, in poll intervals (1/4 with 4 sources).
    sample_spacing: f64,
    /// The poll interval the next sample was taken at, seconds ([`Self::set_poll_interval`]).
    poll_interval: f64,
    last_offset: f64,
}

impl Discipline {
    /// A discipline that has seen nothing: identity correction at `initial_frequency`.
    pub fn new(config: DisciplineConfig) -> Self {
        Self {
            config,
            kalman: None,
            correction: ClockCorrection::IDENTITY,
            slew_end: None,
            steps: 0,
            in_sync_once: false,
            spike_since: None,
            typical_variance: 0.0,
            mean_information: 0.0,
            sample_spacing: 0.0,
            poll_interval: 0.0,
            last_offset: 0.0,
        }
    }

    /// The correction to publish: served time = host + offset + rate × (host − base).
    pub fn correction(&self) -> ClockCorrection {
        self.correction
    }

    /// `correction(t) − 0`: how far the served clock is from the host clock at host time `t`, s.
    pub fn correction_at(&self, t: NtpTimestamp) -> f64 {
        self.correction.apply(t).since(t).to_seconds_f64()
    }

    /// When the current slew ends (host clock): call [`finish_slew`](Self::finish_slew) then.
    pub fn slew_end(&self) -> Option<NtpTimestamp> {
        self.slew_end
    }

    /// The estimated frequency of true time against the host clock, s/s (0 before any sample).
    pub fn frequency(&self) -> f64 {
        self.kalman.map_or(self.config.initial_frequency, |k| k.freq)
    }

    /// The estimated offset of true time from the *served* clock at host time `t`, seconds.
    pub fn estimated_offset(&self, t: NtpTimestamp) -> f64 {
        self.kalman.map_or(0.0, |k| k.phase + k.freq * t.since(k.time).to_seconds_f64()) - self.correction_at(t)
    }

    /// The estimate's phase standard deviation, seconds (0 before any sample).
    pub fn phase_error(&self) -> f64 {
        self.kalman.map_or(0.0, |k| k.cov[0][0].max(0.0).sqrt())
    }

    /// The served clock's offset measured by the last update (innovation basis), seconds.
    pub fn last_offset(&self) -> f64 {
        self.last_offset
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether any sample has been taken in.
    pub fn has_estimate(&self) -> bool {
        self.kalman.is_some()
    }

    /// The longest poll exponent in `min..=max` over which the oscillator's wander stays below
    /// the measurements' own noise and the predicted offset error stays within
    /// [`POLL_ERROR_BUDGET_S`].
    pub fn suggested_poll(&self, min: i8, max: i8) -> i8 {
        if self.kalman.is_none() || self.typical_variance <= 0.0 {
            return min;
        }
        let mut poll = min;
        while poll < max {
            let t = 2f64.powi(i32::from(poll) + 1);
            if self.config.wander * t * t * t / 3.0 > self.typical_variance * POLL_NOISE_RATIO {
                break;
            }
            if self.predicted_phase_error(poll + 1).is_some_and(|e| e > POLL_ERROR_BUDGET_S) {
                break;
            }
            poll += 1;
        }
        poll
    }

    /// Tells the discipline the poll interval (seconds) at which the next sample was taken, so
    /// that it learns how many samples arrive per poll interval (the sources answering).
    pub fn set_poll_interval(&mut self, seconds: f64) {
        self.poll_interval = seconds;
    }

    /// The steady-state standard deviation of the phase estimate (seconds) if every source were
    /// polled every 2^`poll` s, from the samples seen so far: their mean information and how many
    /// arrive per poll interval. With a random-walk frequency of spectral density q (the
    /// `wander`) and white phase noise of spectral density r (a sample's variance times the
    /// time between samples), the two-state filter's phase variance settles at
    /// √2 · q^¼ · r^¾, so the error grows as the poll interval to the power 3/8. None before
    /// enough samples.
    pub fn predicted_phase_error(&self, poll: i8) -> Option<f64> {
        if self.mean_information <= 0.0 || self.sample_spacing <= 0.0 {
            return None;
        }
        let r = self.sample_spacing * 2f64.powi(i32::from(poll)) / self.mean_information;
        Some((core::f64::consts::SQRT_2 * self.config.wander.sqrt().sqrt() * r.powf(0.75)).sqrt())
    }

    /// Ends the slew at its deadline (or later, if the caller was late): the rate drops back to
    /// the frequency estimate, continuous in phase.
    pub fn finish_slew(&mut self, now: NtpTimestamp) {
        let Some(end) = self.slew_end else { return };
        if now.since(end).to_bits() < 0 {
            return;
        }
        let at = self.correction_at(end);
        self.correction = line(end, at, self.frequency(), self.config.max_rate);
        self.slew_end = None;
    }

    /// Moves the served clock and the estimate by `by` seconds at once (a leap second the served
    /// clock applies itself), without counting a step.
    pub fn shift(&mut self, by: f64) {
        if let Some(k) = self.kalman.as_mut() {
            k.phase += by;
        }
        self.correction.offset = self.correction.offset.add_seconds(by);
    }

    /// Moves the correction alone by `by` seconds, the estimate staying where it is: the host
    /// clock took an adjustment a little late (a frequency change applied δ after it was due
    /// leaves the clock `rate × δ` off), and the next update slews the difference away.
    pub fn adjust_correction(&mut self, by: f64) {
        self.correction.offset = self.correction.offset.add_seconds(by);
    }

    /// Takes in one measurement: `offset` of true time from the host clock (raw, s) taken at
    /// host time `time`, with error variance `variance` (s²); `now` is the host clock now.
    pub fn update(&mut self, time: NtpTimestamp, offset: f64, variance: f64, now: NtpTimestamp) -> ClockAction {
        let served_offset = offset - self.correction_at(time);
        let first = self.kalman.is_none();
        if served_offset.abs() > self.config.panic_threshold && !(first && self.config.allow_panic_at_start) {
            return ClockAction::PanicRefused { offset: served_offset };
        }
        let variance = variance.max(1e-18);
        self.typical_variance =
            if self.typical_variance == 0.0 { variance } else { self.typical_variance * 0.9 + variance * 0.1 };
        self.mean_information = running_mean(self.mean_information, 1.0 / variance);
        if let Some(k) = self.kalman.filter(|_| self.poll_interval > 0.0) {
            let dt = time.since(k.time).to_seconds_f64();
            if dt > 0.0 {
                self.sample_spacing = running_mean(self.sample_spacing, dt / self.poll_interval);
            }
        }
        match self.kalman.as_mut() {
            None => {
                let sigma_f = INITIAL_FREQ_SIGMA;
                self.kalman = Some(Kalman {
                    time,
                    phase: offset,
                    freq: self.config.initial_frequency,
                    cov: [[variance, 0.0], [0.0, sigma_f * sigma_f]],
                });
            }
            Some(k) => {
                let dt = time.since(k.time).to_seconds_f64();
                let mut x = *k;
                if dt > 0.0 {
                    predict(&mut x, dt, self.config.wander);
                    x.time = time;
                }
                let h1 = if dt > 0.0 { 0.0 } else { dt };
                let predicted = x.phase + x.freq * h1;
                let innovation = offset - predicted;
                // S = H P H' + R with H = [1, h1].
                let p = x.cov;
                let ph0 = p[0][0] + p[0][1] * h1;
                let ph1 = p[1][0] + p[1][1] * h1;
                let s = ph0 + h1 * ph1 + variance;
                if innovation.abs() > (SPIKE_SIGMAS * s.sqrt()).max(SPIKE_FLOOR_S) {
                    let since = *self.spike_since.get_or_insert(time);
                    if time.since(since).to_seconds_f64() < STEPOUT_S {
                        return ClockAction::Spike { innovation };
                    }
                    // A lasting change: start the phase over, keep the frequency.
                    x.phase = offset - x.freq * h1;
                    x.cov[0][0] = variance;
                    x.cov[0][1] = 0.0;
                    x.cov[1][0] = 0.0;
                    self.spike_since = None;
                    *k = x;
                } else {
                    self.spike_since = None;
                    let (k0, k1) = (ph0 / s, ph1 / s);
                    x.phase += k0 * innovation;
                    x.freq = (x.freq + k1 * innovation).clamp(-MAX_FREQUENCY, MAX_FREQUENCY);
                    x.cov = [[p[0][0] - k0 * ph0, p[0][1] - k0 * ph1], [p[1][0] - k1 * ph0, p[1][1] - k1 * ph1]];
                    *k = x;
                }
            }
        }
        self.last_offset = served_offset;
        self.steer(now)
    }

    /// Moves the correction towards the estimate at `now`.
    fn steer(&mut self, now: NtpTimestamp) -> ClockAction {
        let Some(k) = self.kalman else { return ClockAction::Slew { offset: 0.0, rate: 0.0 } };
        let target = k.phase + k.freq * now.since(k.time).to_seconds_f64();
        let current = self.correction_at(now);
        let error = target - current;
        if error.abs() > self.config.step_threshold && self.steps < self.config.max_steps && !self.in_sync_once {
            let served = now.add(NtpDuration::from_seconds_f64(target));
            let floor = self.config.build_date_unix;
            if served.to_unix(floor).0 < floor {
                return ClockAction::BeforeBuildDate { offset: error };
            }
            self.steps += 1;
            self.in_sync_once = true;
            self.correction = line(now, target, k.freq, self.config.max_rate);
            self.slew_end = None;
            return ClockAction::Step { offset: error };
        }
        if error.abs() <= self.config.step_threshold {
            self.in_sync_once = true;
        }
        // The slew gets what the rate limit leaves beside the frequency (at least 10 % of it).
        let room = (self.config.max_rate - k.freq.abs()).max(0.1 * self.config.max_rate);
        let max_slew = self.config.max_slew.min(room);
        let duration = (error.abs() / max_slew).max(MIN_SLEW_S);
        let rate = error / duration;
        self.correction = line(now, current, k.freq + rate, self.config.max_rate);
        self.slew_end = Some(now.add(NtpDuration::from_seconds_f64(duration)));
        ClockAction::Slew { offset: error, rate }
    }
}

/// `mean` moved towards `value` by [`STATS_WEIGHT`]; `value` itself while `mean` is still 0.
fn running_mean(mean: f64, value: f64) -> f64 {
    if mean == 0.0 {
        value
    } else {
        mean + (value - mean) * STATS_WEIGHT
    }
}

fn predict(x: &mut Kalman, dt: f64, wander: f64) {
    x.phase += x.freq * dt;
    let p = x.cov;
    // P = F P F' + Q, F = [[1, dt], [0, 1]].
    let p00 = p[0][0] + dt * (p[1][0] + p[0][1]) + dt * dt * p[1][1];
    let p01 = p[0][1] + dt * p[1][1];
    let p11 = p[1][1];
    let q00 = wander * dt * dt * dt / 3.0 + PHASE_NOISE * dt;
    let q01 = wander * dt * dt / 2.0;
    let q11 = wander * dt;
    x.cov = [[p00 + q00, p01 + q01], [p01 + q01, p11 + q11]];
}

/// The correction `offset_s + rate × (t − base)`, rate clamped to `max_rate`.
fn line(base: NtpTimestamp, offset_s: f64, rate: f64, max_rate: f64) -> ClockCorrection {
    let rate = (rate.clamp(-max_rate, max_rate) * 4_294_967_296.0).round() as i32;
    ClockCorrection { offset: NtpDuration::from_seconds_f64(offset_s), base, rate }
}

trait AddSeconds {
    fn add_seconds(self, s: f64) -> Self;
}

impl AddSeconds for NtpDuration {
    fn add_seconds(self, s: f64) -> Self {
        NtpDuration::from_bits(self.to_bits().wrapping_add(NtpDuration::from_seconds_f64(s).to_bits()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(3_980_000_000, 0).add(NtpDuration::from_seconds_f64(s))
    }

    #[test]
    fn first_sample_below_threshold_is_slewed_at_most_500_ppm() {
        let mut d = Discipline::new(DisciplineConfig::default());
        let a = d.update(at(0.0), 0.1, 1e-10, at(0.0));
        assert_eq!(a, ClockAction::Slew { offset: 0.1, rate: 500e-6 });
        assert!((d.slew_end().unwrap().since(at(0.0)).to_seconds_f64() - 200.0).abs() < 1e-6);
        d.finish_slew(at(200.0));
        assert!((d.correction_at(at(200.0)) - 0.1).abs() < 1e-6);
        assert!(d.slew_end().is_none());
    }

    #[test]
    fn steps_once_at_start_then_only_slews() {
        let mut d = Discipline::new(DisciplineConfig::default());
        assert_eq!(d.update(at(0.0), 0.5, 1e-10, at(0.0)), ClockAction::Step { offset: 0.5 });
        assert!((d.correction_at(at(0.0)) - 0.5).abs() < 1e-9);
        assert_eq!(d.steps(), 1);
        // The true time jumps by a second: spikes first, believed after the stepout, but slewed.
        for i in 1..=10 {
            let t = at(f64::from(i) * 64.0);
            let a = d.update(t, 1.5, 1e-10, t);
            if f64::from(i - 1) * 64.0 < STEPOUT_S {
                assert!(matches!(a, ClockAction::Spike { .. }), "{i}: {a:?}");
            } else {
                assert!(matches!(a, ClockAction::Slew { .. }), "{i}: {a:?}");
            }
        }
        assert_eq!(d.steps(), 1);
    }

    #[test]
    fn panic_and_build_date_are_refused() {
        let config = DisciplineConfig { allow_panic_at_start: false, ..Default::default() };
        let mut d = Discipline::new(config);
        assert_eq!(d.update(at(0.0), 2000.0, 1e-10, at(0.0)), ClockAction::PanicRefused { offset: 2000.0 });
        assert!(!d.has_estimate());
        // Allowed at start: stepped once.
        let mut d = Discipline::new(DisciplineConfig::default());
        assert_eq!(d.update(at(0.0), 2000.0, 1e-10, at(0.0)), ClockAction::Step { offset: 2000.0 });
        // Never before the build date (here: at(0) itself).
        let config = DisciplineConfig { build_date_unix: 3_980_000_000 - 2_208_988_800, ..Default::default() };
        let mut d = Discipline::new(config);
        assert!(matches!(d.update(at(0.0), -1.0, 1e-10, at(0.0)), ClockAction::BeforeBuildDate { .. }));
    }

    #[test]
    fn learns_a_frequency_and_the_correction_follows() {
        let mut d = Discipline::new(DisciplineConfig::default());
        let freq = 25e-6;
        for i in 0..200 {
            let t = at(f64::from(i) * 16.0);
            d.update(t, 0.01 + freq * f64::from(i) * 16.0, 1e-10, t);
            d.finish_slew(at(f64::from(i) * 16.0 + 15.0));
        }
        assert!((d.frequency() - freq).abs() < 1e-9, "{}", d.frequency());
        let t = at(200.0 * 16.0);
        assert!(d.estimated_offset(t).abs() < 1e-6, "{}", d.estimated_offset(t));
        assert!((d.correction().rate as f64 / 4_294_967_296.0 - freq).abs() < 1e-9);
        assert_eq!(d.steps(), 0);
        assert!(d.suggested_poll(-2, 10) > -2);
        assert_eq!(d.suggested_poll(8, 10), 8, "never below minpoll");
    }

    #[test]
    fn noisy_samples_keep_the_poll_short() {
        // 4 sources at a 64 s poll (a sample every 16 s), each sample 1 ms (one sigma) off: an
        // internet path. The predicted error grows as poll^(3/8) and is over the budget past 64 s.
        let mut d = Discipline::new(DisciplineConfig::default());
        for i in 0..400 {
            let t = at(f64::from(i) * 16.0);
            d.set_poll_interval(64.0);
            d.update(t, 0.01, 1e-6, t);
        }
        let (e6, e7) = (d.predicted_phase_error(6).unwrap(), d.predicted_phase_error(7).unwrap());
        assert!((e7 / e6 - 2f64.powf(0.375)).abs() < 1e-9, "{e6} {e7}");
        assert!(e6 > 30e-6 && e6 < 200e-6, "{e6}");
        assert_eq!(d.suggested_poll(6, 10), 6);
        // The same with 10 µs samples (a LAN): far within the budget at every poll, so only the
        // oscillator's wander limits the poll.
        let mut quiet = Discipline::new(DisciplineConfig { wander: 1e-22, ..Default::default() });
        for i in 0..400 {
            let t = at(f64::from(i) * 16.0);
            quiet.set_poll_interval(64.0);
            quiet.update(t, 0.01, 1e-10, t);
        }
        assert!(quiet.predicted_phase_error(10).unwrap() < POLL_ERROR_BUDGET_S);
        assert!(quiet.suggested_poll(6, 10) > 6);
    }
}
