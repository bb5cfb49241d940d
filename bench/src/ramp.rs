//! `stratum-bench load --ramp`: the reference method of TESTING.md, as ntpperf does it. The
//! offered rate rises step by step (START, START x FACTOR, ...); every step is one ordinary `load`
//! step ([`crate::load::run`], the same engine and the same checks), and the ramp stops after the
//! first step that loses more than `--max-loss` percent, after the second step in a row that the
//! generator could not offer (a faster one is no use: the generator has reached its ceiling),
//! before a step would exceed `--max-rate`, or after `--max-steps`.
//!
//! A step is sustainable with less than 1 % loss, no invalid reply, no unsynchronised reply, no
//! kiss-o'-death (unless `--kod-ok`), and a generator that kept up with the offered rate (sent at
//! 98 % of it or more): a step the generator could not offer says nothing about the server.
//!
//! Two things make the result repeat on a shared, noisy machine (the target: within 10 %
//! over three runs), where ntpperf's plain ramp does not:
//! - Tries (`--tries N`, default 3): a step that is not sustainable runs again at the same rate,
//!   up to N times in all, and the rate's result is its first sustainable try, else its try with
//!   the least loss. Interference (another process, a stolen vCPU, a timer storm) only ever adds
//!   loss: a server that cannot carry a rate fails every try, so one clean try is evidence that it
//!   can, and one dirty try is not evidence that it cannot. Both the stop rule and the sustainable
//!   rate look at each rate's result, so one stall no longer ends a ramp at a fraction of the
//!   server's rate. Every try is kept in the report (`attempts`).
//! - Refinement (`--refine PCT`, default 2): the ramp's steps are a factor apart (1.1 to 1.25), so
//!   its answer alone moves by a whole factor when one step goes the other way. After the ramp,
//!   the rate is bisected (geometric midpoints, each with its tries) between the highest
//!   sustainable step and the next step up, until the two are less than PCT % apart.
//!
//! The sustainable rate is the highest sustainable rate measured. The pure parts (the rate
//! sequence, the stop rules, a rate's result, the midpoints, the choice of the sustainable rate)
//! are functions of their inputs, tested without a network.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{LoadConfig, MAX_DURATION_S, MAX_RATE};
use crate::counts::Counts;
use crate::engine::socket::DRAIN;
use crate::load;
use crate::report::{GeneratorSetup, LoadReport};

/// A ramp's whole length is bounded before it starts: max steps x (step + drain + settle).
pub const MAX_TOTAL: Duration = Duration::from_secs(600);
/// A step is sustainable only with less loss than this, in percent.
pub const SUSTAINABLE_LOSS_PCT: f64 = 1.0;
/// A step is sustainable only if the generator sent at least this share of the offered rate.
pub const GENERATOR_KEPT_UP: f64 = 0.98;
pub const MAX_FACTOR: f64 = 10.0;
pub const MAX_STEPS: u32 = 1000;
pub const MAX_SETTLE_MS: u64 = 60_000;
pub const DEFAULT_TRIES: u32 = 3;
pub const MAX_TRIES: u32 = 10;
pub const DEFAULT_REFINE_PCT: f64 = 2.0;
/// The finest refinement: a tenth of a percent is below what any step can tell apart.
pub const MIN_REFINE_PCT: f64 = 0.1;
pub const MAX_REFINE_PCT: f64 = 50.0;

/// `--ramp START,FACTOR,STEP_SECS`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RampSpec {
    pub start: u64,
    pub factor: f64,
    pub step: Duration,
}

impl std::str::FromStr for RampSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [start, factor, step] = parts[..] else {
            return Err(format!("expected START,FACTOR,STEP_SECS (e.g. 50000,1.25,3), got {s:?}"));
        };
        let start: u64 = start.parse().map_err(|_| format!("START must be a whole rate, got {start:?}"))?;
        let factor: f64 = factor.parse().map_err(|_| format!("FACTOR must be a number, got {factor:?}"))?;
        let step_s: f64 = step.parse().map_err(|_| format!("STEP_SECS must be a number, got {step:?}"))?;
        if !(1..=MAX_RATE).contains(&start) {
            return Err(format!("START must be from 1 to {MAX_RATE}"));
        }
        if !(factor > 1.0 && factor <= MAX_FACTOR) {
            return Err(format!("FACTOR must be more than 1 and at most {MAX_FACTOR}"));
        }
        if !(step_s > 0.0 && step_s <= MAX_DURATION_S) {
            return Err(format!("STEP_SECS must be more than 0 and at most {MAX_DURATION_S}"));
        }
        Ok(Self { start, factor, step: Duration::from_secs_f64(step_s) })
    }
}

/// A validated ramp.
#[derive(Clone, Debug)]
pub struct RampConfig {
    pub spec: RampSpec,
    /// Stop after the first step losing more than this, in percent.
    pub max_loss_pct: f64,
    pub max_rate: u64,
    pub max_steps: u32,
    pub settle: Duration,
    pub kod_ok: bool,
    /// Each rate runs up to this many times until one try is sustainable.
    pub tries: u32,
    /// Bisect after the ramp until the bounds are this many percent apart; 0: no refinement.
    pub refine_pct: f64,
    /// Every step's target, sockets and core (its rate and duration are set per step).
    pub step: LoadConfig,
}

impl RampConfig {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: SocketAddr,
        i_own_this_target: bool,
        spec: RampSpec,
        max_loss_pct: f64,
        max_rate: u64,
        max_steps: u32,
        settle_ms: u64,
        kod_ok: bool,
        tries: u32,
        refine_pct: f64,
        sockets: usize,
        cores: Vec<usize>,
    ) -> anyhow::Result<Self> {
        let step = LoadConfig::new(target, i_own_this_target, spec.start, spec.step.as_secs_f64(), sockets, cores)?;
        if !(0.0..=100.0).contains(&max_loss_pct) {
            bail!("--max-loss must be from 0 to 100 (percent)");
        }
        if !(1..=MAX_RATE).contains(&max_rate) {
            bail!("--max-rate must be from 1 to {MAX_RATE}");
        }
        if spec.start > max_rate {
            bail!("the ramp's START ({}) is above --max-rate ({max_rate})", spec.start);
        }
        if !(1..=MAX_STEPS).contains(&max_steps) {
            bail!("--max-steps must be from 1 to {MAX_STEPS}");
        }
        if settle_ms > MAX_SETTLE_MS {
            bail!("--settle must be at most {MAX_SETTLE_MS} ms");
        }
        if !(1..=MAX_TRIES).contains(&tries) {
            bail!("--tries must be from 1 to {MAX_TRIES}");
        }
        if !(refine_pct == 0.0 || (MIN_REFINE_PCT..=MAX_REFINE_PCT).contains(&refine_pct)) {
            bail!("--refine must be 0 (off) or from {MIN_REFINE_PCT} to {MAX_REFINE_PCT} (percent)");
        }
        let settle = Duration::from_millis(settle_ms);
        let rates = max_steps + max_refine_steps(spec.factor, refine_pct);
        let bound = worst_case_length(spec.step, settle, rates * tries);
        if bound > MAX_TOTAL {
            bail!(
                "this ramp could run {:.0} s ({rates} rates ({max_steps} steps and the refinement) x {tries} tries, \
                 each {:.3} s + {} ms drain + {settle_ms} ms settle); the limit is {} s: use fewer --max-steps or \
                 --tries, or shorter steps",
                bound.as_secs_f64(),
                spec.step.as_secs_f64(),
                DRAIN.as_millis(),
                MAX_TOTAL.as_secs()
            );
        }
        Ok(Self { spec, max_loss_pct, max_rate, max_steps, settle, kod_ok, tries, refine_pct, step })
    }
}

/// The longest a ramp can run: every try's send phase and drain, and the pauses between them.
pub fn worst_case_length(step: Duration, settle: Duration, max_tries: u32) -> Duration {
    (step + DRAIN) * max_tries + settle * max_tries.saturating_sub(1)
}

/// The most rates a refinement can measure after a ramp with this factor: each halves the
/// bracket's logarithm, from one factor (plus one for rounding) down to `refine_pct`.
pub fn max_refine_steps(factor: f64, refine_pct: f64) -> u32 {
    if refine_pct == 0.0 {
        return 0;
    }
    let (mut span, goal) = (factor.ln(), (1.0 + refine_pct / 100.0).ln());
    let mut steps = 1;
    while span > goal && steps < 64 {
        span /= 2.0;
        steps += 1;
    }
    steps
}

/// The next rate a refinement measures between a sustainable `lower` and an unsustainable
/// `upper` rate: their geometric midpoint, or `None` once they are `refine_pct` % or less apart
/// (or no whole rate lies between them).
pub fn refine_midpoint(lower: u64, upper: u64, refine_pct: f64) -> Option<u64> {
    if lower == 0 || refine_pct == 0.0 || upper as f64 <= lower as f64 * (1.0 + refine_pct / 100.0) {
        return None;
    }
    let mid = ((lower as f64) * (upper as f64)).sqrt().round() as u64;
    (lower < mid && mid < upper).then_some(mid)
}

/// The offered rate of step `k` (0-based): START x FACTOR^k, rounded, and always at least one more
/// than the step before (so a small START with a small FACTOR still climbs).
pub fn step_rates(spec: &RampSpec, max_rate: u64, max_steps: u32) -> Vec<u64> {
    let mut rates: Vec<u64> = Vec::new();
    for k in 0..max_steps {
        let ideal = (spec.start as f64 * spec.factor.powi(k as i32)).round();
        let rate = match rates.last() {
            Some(&prev) => (ideal as u64).max(prev + 1),
            None => spec.start,
        };
        if !ideal.is_finite() || ideal > max_rate as f64 || rate > max_rate {
            break;
        }
        rates.push(rate);
    }
    rates
}

/// Why a ramp ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A step lost more than `--max-loss`.
    Loss,
    /// The generator fell behind the offered rate in two steps in a row: it is at its ceiling.
    GeneratorBehind,
    /// The next step would have offered more than `--max-rate`.
    MaxRate,
    /// `--max-steps` steps ran.
    MaxSteps,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::GeneratorBehind => "generator_behind",
            Self::MaxRate => "max_rate",
            Self::MaxSteps => "max_steps",
        }
    }
}

/// Which part of a ramp measured a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The rising steps, START x FACTOR^k.
    Ramp,
    /// The bisection after them.
    Refine,
}

impl Phase {
    /// What a progress line or an error calls a try of this phase.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ramp => "step",
            Self::Refine => "refine",
        }
    }
}

/// What one try measured: the ramp's row of a [`LoadReport`]. Percentages are of the requests sent.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepResult {
    pub phase: Phase,
    /// Which try at this rate (from 1).
    pub attempt: u32,
    pub offered: u64,
    pub send_rate: u64,
    /// Requests answered per second of the send phase (any reply that names its request).
    pub answered_rate: u64,
    /// The try's counters, as `load` counts them; their keys stand in this object.
    #[serde(flatten)]
    pub counts: Counts,
    pub loss_pct: f64,
    pub kod_pct: f64,
    /// Every kind of invalid reply (length, header, origin, duplicate, late, T2 and T3 window).
    pub invalid_pct: f64,
    pub unsynced_pct: f64,
    pub rtt_p50_ns: u64,
    pub rtt_p99_ns: u64,
    pub turnaround_p50_ns: u64,
    pub turnaround_p99_ns: u64,
    /// The generator sent at less than 98 % of the offered rate.
    pub generator_behind: bool,
    pub server_socket_drops: Option<u64>,
    /// Replies the generator's own socket dropped (counted as lost: a step with any is suspect).
    pub client_drops: u64,
    /// AF_XDP engine: requests the generator's interface refused at transmit (counted as lost).
    pub tx_refused: Option<u64>,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (100_000.0 * part as f64 / whole as f64).round() / 1000.0
    }
}

impl StepResult {
    pub fn from_report(r: &LoadReport, phase: Phase, attempt: u32) -> Self {
        Self {
            phase,
            attempt,
            offered: r.offered_rate,
            send_rate: r.send_rate,
            answered_rate: (r.answered as f64 / r.duration_s.max(1e-9)).round() as u64,
            counts: r.counts,
            loss_pct: r.loss_pct,
            kod_pct: pct(r.kod, r.sent),
            invalid_pct: pct(r.invalid, r.sent),
            unsynced_pct: pct(r.unsynced, r.sent),
            rtt_p50_ns: r.rtt_p50_ns,
            rtt_p99_ns: r.rtt_p99_ns,
            turnaround_p50_ns: r.turnaround_p50_ns,
            turnaround_p99_ns: r.turnaround_p99_ns,
            generator_behind: (r.send_rate as f64) < GENERATOR_KEPT_UP * r.offered_rate as f64,
            server_socket_drops: r.server_socket_drops,
            client_drops: r.client_socket_drops,
            tx_refused: r.tx_refused,
        }
    }

    /// Less than 1 % loss with only valid replies (KoD allowed with `kod_ok`), at the offered rate.
    pub fn is_sustainable(&self, kod_ok: bool) -> bool {
        let c = &self.counts;
        c.sent > 0
            && self.loss_pct < SUSTAINABLE_LOSS_PCT
            && c.invalid == 0
            && c.unsynced == 0
            && (kod_ok || c.kod == 0)
            && !self.generator_behind
    }
}

/// The stop rule after a step: more loss than allowed ends the ramp.
pub fn exceeds_loss(step: &StepResult, max_loss_pct: f64) -> bool {
    step.loss_pct > max_loss_pct
}

/// A rate's result from its tries: the first sustainable one, else the one with the least loss
/// (the first of equals). `None` only for no tries.
pub fn rate_result(tries: &[StepResult], kod_ok: bool) -> Option<&StepResult> {
    tries
        .iter()
        .find(|t| t.is_sustainable(kod_ok))
        .or_else(|| tries.iter().reduce(|best, t| if t.loss_pct < best.loss_pct { t } else { best }))
}

/// The other stop rule: the generator fell behind in the last two steps, so offering more would
/// only measure the generator again.
pub fn generator_exhausted(steps: &[StepResult]) -> bool {
    matches!(steps, [.., a, b] if a.generator_behind && b.generator_behind)
}

/// Where a refinement starts: the highest sustainable rate and the lowest rate measured above it
/// (not sustainable, or it would be the highest); `None` when there is no such pair.
pub fn refine_bracket(steps: &[StepResult], kod_ok: bool) -> Option<(u64, u64)> {
    let lower = sustainable_rate(steps, kod_ok);
    let upper = steps.iter().map(|s| s.offered).filter(|&r| r > lower).min()?;
    (lower > 0).then_some((lower, upper))
}

/// The highest offered rate among the sustainable steps; 0 when none is.
pub fn sustainable_rate(steps: &[StepResult], kod_ok: bool) -> u64 {
    steps.iter().filter(|s| s.is_sustainable(kod_ok)).map(|s| s.offered).max().unwrap_or(0)
}

/// The `--json` object of a ramp.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RampReport {
    pub target: String,
    pub engine: &'static str,
    pub start: u64,
    pub factor: f64,
    pub step_s: f64,
    pub settle_ms: u64,
    pub max_loss_pct: f64,
    pub max_rate: u64,
    pub max_steps: u32,
    pub kod_ok: bool,
    pub tries: u32,
    pub refine_pct: f64,
    #[serde(flatten)]
    pub generator: GeneratorSetup,
    /// One result a rate, in the order measured (the ramp's steps, then the refinement's).
    pub steps: Vec<StepResult>,
    /// Every try, in the order run; `steps` holds one of each rate's.
    pub attempts: Vec<StepResult>,
    pub sustainable_rate: u64,
    pub stopped_because: StopReason,
}

impl RampReport {
    /// How many tries `rate` took.
    pub fn tries_at(&self, rate: u64) -> usize {
        self.attempts.iter().filter(|a| a.offered == rate).count()
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "target {} ({}, {} engine); ramp {} x {} every {:.3} s, stop past {} % loss; \
             up to {} tries a rate; refined to {} %\n",
            self.target,
            self.generator,
            self.engine,
            self.start,
            self.factor,
            self.step_s,
            self.max_loss_pct,
            self.tries,
            self.refine_pct
        );
        s += &format!(
            "{:>10} {:>10} {:>10} {:>8} {:>7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>5}\n",
            "offered/s",
            "sent/s",
            "answered/s",
            "loss %",
            "KoD %",
            "invalid%",
            "rtt p50 us",
            "rtt p99 us",
            "turn p50",
            "turn p99",
            "tries"
        );
        let us = |ns: u64| ns as f64 / 1000.0;
        for st in &self.steps {
            let mut flags = String::new();
            if st.is_sustainable(self.kod_ok) {
                flags += " ok";
            }
            if st.phase == Phase::Refine {
                flags += " refine";
            }
            if st.generator_behind {
                flags += " generator-behind";
            }
            if st.counts.unsynced > 0 {
                flags += &format!(" unsynced {:.3}%", st.unsynced_pct);
            }
            s += &format!(
                "{:>10} {:>10} {:>10} {:>8.3} {:>7.3} {:>8.3} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>5}{flags}\n",
                st.offered,
                st.send_rate,
                st.answered_rate,
                st.loss_pct,
                st.kod_pct,
                st.invalid_pct,
                us(st.rtt_p50_ns),
                us(st.rtt_p99_ns),
                us(st.turnaround_p50_ns),
                us(st.turnaround_p99_ns),
                self.tries_at(st.offered),
            );
        }
        s += &format!("stopped because: {}\n", self.stopped_because.as_str());
        s += &format!("sustainable: {}/s\n", self.sustainable_rate);
        s
    }
}

/// Runs a ramp: one [`load::run`] step per try, `settle` apart. `progress` is called after each
/// try (the CLI prints nothing there in JSON mode).
pub fn run(config: &RampConfig, progress: impl FnMut(&StepResult)) -> anyhow::Result<RampReport> {
    run_with(config, "socket", load::run, progress)
}

/// [`run`] with another engine: `step` runs one load step (the AF_XDP engine keeps its sockets
/// open across the steps) and `engine` names it in the report.
pub fn run_with(
    config: &RampConfig,
    engine: &'static str,
    mut step: impl FnMut(&LoadConfig) -> anyhow::Result<LoadReport>,
    mut progress: impl FnMut(&StepResult),
) -> anyhow::Result<RampReport> {
    let rates = step_rates(&config.spec, config.max_rate, config.max_steps);
    let mut steps: Vec<StepResult> = Vec::with_capacity(rates.len());
    let mut attempts: Vec<StepResult> = Vec::new();
    // Every try but the first waits `settle` after the one before.
    let mut measure = |rate: u64, phase: Phase, attempts: &mut Vec<StepResult>| -> anyhow::Result<StepResult> {
        let first = attempts.len();
        for attempt in 1..=config.tries {
            if !attempts.is_empty() && !config.settle.is_zero() {
                thread::sleep(config.settle);
            }
            let step_config = LoadConfig { rate, ..config.step.clone() };
            let report =
                step(&step_config).with_context(|| format!("ramp {} at {rate}/s, try {attempt}", phase.as_str()))?;
            let result = StepResult::from_report(&report, phase, attempt);
            progress(&result);
            let done = result.is_sustainable(config.kod_ok);
            attempts.push(result);
            if done {
                break;
            }
        }
        Ok(rate_result(&attempts[first..], config.kod_ok).expect("at least one try").clone())
    };
    let mut stopped_because =
        if (rates.len() as u32) < config.max_steps { StopReason::MaxRate } else { StopReason::MaxSteps };
    for &rate in &rates {
        let result = measure(rate, Phase::Ramp, &mut attempts)?;
        let lossy = exceeds_loss(&result, config.max_loss_pct);
        steps.push(result);
        if lossy {
            stopped_because = StopReason::Loss;
            break;
        }
        if generator_exhausted(&steps) {
            stopped_because = StopReason::GeneratorBehind;
            break;
        }
    }
    if let Some((mut lower, mut upper)) = refine_bracket(&steps, config.kod_ok) {
        for _ in 0..max_refine_steps(config.spec.factor, config.refine_pct) {
            let Some(mid) = refine_midpoint(lower, upper, config.refine_pct) else { break };
            let result = measure(mid, Phase::Refine, &mut attempts)?;
            if result.is_sustainable(config.kod_ok) {
                lower = mid;
            } else {
                upper = mid;
            }
            steps.push(result);
        }
    }
    Ok(RampReport {
        target: config.step.target.to_string(),
        engine,
        start: config.spec.start,
        factor: config.spec.factor,
        step_s: config.spec.step.as_secs_f64(),
        settle_ms: config.settle.as_millis() as u64,
        max_loss_pct: config.max_loss_pct,
        max_rate: config.max_rate,
        max_steps: config.max_steps,
        kod_ok: config.kod_ok,
        tries: config.tries,
        refine_pct: config.refine_pct,
        generator: GeneratorSetup::of(&config.step),
        sustainable_rate: sustainable_rate(&steps, config.kod_ok),
        steps,
        attempts,
        stopped_because,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(start: u64, factor: f64, step_s: f64) -> RampSpec {
        RampSpec { start, factor, step: Duration::from_secs_f64(step_s) }
    }

    fn step(offered: u64, loss_pct: f64) -> StepResult {
        StepResult {
            phase: Phase::Ramp,
            attempt: 1,
            offered,
            send_rate: offered,
            answered_rate: offered,
            counts: Counts { sent: offered, answered: offered, valid: offered, ..Counts::default() },
            loss_pct,
            kod_pct: 0.0,
            invalid_pct: 0.0,
            unsynced_pct: 0.0,
            rtt_p50_ns: 1,
            rtt_p99_ns: 1,
            turnaround_p50_ns: 1,
            turnaround_p99_ns: 1,
            generator_behind: false,
            server_socket_drops: None,
            client_drops: 0,
            tx_refused: None,
        }
    }

    #[test]
    fn ramp_spec_parses_and_is_bounded() {
        assert_eq!("50000,1.25,3".parse::<RampSpec>().unwrap(), spec(50_000, 1.25, 3.0));
        assert_eq!(" 100 , 2 , 0.3 ".parse::<RampSpec>().unwrap(), spec(100, 2.0, 0.3));
        for bad in ["", "50000", "50000,1.25", "50000,1.25,3,4", "x,1.25,3", "0,1.25,3", "50000,1,3", "50000,0.5,3"] {
            assert!(bad.parse::<RampSpec>().is_err(), "{bad}");
        }
        for bad in ["50000,11,3", "50000,NaN,3", "50000,1.25,0", "50000,1.25,61", "50000,1.25,inf", "20000000,2,1"] {
            assert!(bad.parse::<RampSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn step_rates_grow_geometrically_and_stop_at_the_caps() {
        assert_eq!(step_rates(&spec(50_000, 1.25, 3.0), MAX_RATE, 5), [50_000, 62_500, 78_125, 97_656, 122_070]);
        // --max-rate: the first rate above it is not run; a rate equal to it is.
        assert_eq!(step_rates(&spec(1000, 2.0, 1.0), 8000, 40), [1000, 2000, 4000, 8000]);
        assert_eq!(step_rates(&spec(1000, 2.0, 1.0), 7999, 40), [1000, 2000, 4000]);
        assert_eq!(step_rates(&spec(1000, 2.0, 1.0), 1000, 40), [1000]);
        // A tiny factor still climbs by at least one per step.
        assert_eq!(step_rates(&spec(3, 1.01, 1.0), MAX_RATE, 4), [3, 4, 5, 6]);
        // Never past the global cap, even with many steps.
        let all = step_rates(&spec(1, 10.0, 1.0), MAX_RATE, MAX_STEPS);
        assert_eq!(all.last(), Some(&MAX_RATE));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stop_rule_and_ramp_bounds() {
        assert!(!exceeds_loss(&step(1000, 5.0), 5.0));
        assert!(exceeds_loss(&step(1000, 5.001), 5.0));
        assert!(exceeds_loss(&step(1000, 0.1), 0.0));
        let t = |step_s: f64, settle_ms: u64, steps: u32| {
            worst_case_length(Duration::from_secs_f64(step_s), Duration::from_millis(settle_ms), steps)
        };
        assert_eq!(t(3.0, 200, 40), Duration::from_millis(40 * 3200 + 39 * 200));
        assert_eq!(t(0.3, 0, 1), Duration::from_millis(500));
        let target: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let config = |s: RampSpec, max_loss: f64, max_rate: u64, steps: u32, settle: u64| {
            RampConfig::new(target, false, s, max_loss, max_rate, steps, settle, false, 1, 0.0, 16, vec![])
        };
        assert!(config(spec(50_000, 1.25, 3.0), 5.0, MAX_RATE, 40, 200).is_ok());
        // 40 steps of 15 s is more than 10 minutes: refused before anything runs.
        let e = config(spec(50_000, 1.25, 15.0), 5.0, MAX_RATE, 40, 200).unwrap_err().to_string();
        assert!(e.contains("limit is 600 s"), "{e}");
        assert!(config(spec(50_000, 1.25, 3.0), 101.0, MAX_RATE, 40, 200).is_err());
        assert!(config(spec(50_000, 1.25, 3.0), f64::NAN, MAX_RATE, 40, 200).is_err());
        assert!(config(spec(50_000, 1.25, 3.0), 5.0, 40_000, 40, 200).is_err());
        assert!(config(spec(50_000, 1.25, 3.0), 5.0, MAX_RATE, 0, 200).is_err());
        assert!(config(spec(50_000, 1.25, 3.0), 5.0, MAX_RATE, 40, MAX_SETTLE_MS + 1).is_err());
        // The loopback rule holds for ramps too.
        let far: SocketAddr = "192.0.2.1:123".parse().unwrap();
        let e = RampConfig::new(far, false, spec(1000, 2.0, 1.0), 5.0, MAX_RATE, 4, 0, false, 1, 0.0, 16, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--i-own-this-target"), "{e}");
    }

    #[test]
    fn two_steps_in_a_row_with_the_generator_behind_end_the_ramp() {
        let behind = |offered| StepResult { generator_behind: true, ..step(offered, 0.0) };
        assert!(!generator_exhausted(&[]));
        assert!(!generator_exhausted(&[behind(1000)]));
        // One step behind is a hiccup; the ramp goes on.
        assert!(!generator_exhausted(&[step(1000, 0.0), behind(2000)]));
        assert!(!generator_exhausted(&[behind(1000), step(2000, 0.0)]));
        assert!(generator_exhausted(&[step(1000, 0.0), behind(2000), behind(4000)]));
        assert!(generator_exhausted(&[behind(1000), behind(2000)]));
        assert_eq!(StopReason::GeneratorBehind.as_str(), "generator_behind");
        assert_eq!(serde_json::to_value(StopReason::GeneratorBehind).unwrap(), "generator_behind");
    }

    #[test]
    fn sustainable_rate_is_the_highest_clean_step() {
        let mut steps = vec![step(1000, 0.0), step(2000, 0.5), step(4000, 0.99), step(8000, 1.0), step(16_000, 30.0)];
        assert_eq!(sustainable_rate(&steps, false), 4000);
        // An invalid or unsynchronised reply disqualifies a step, whatever its loss.
        steps[2].counts.invalid = 1;
        assert_eq!(sustainable_rate(&steps, false), 2000);
        steps[1].counts.unsynced = 3;
        assert_eq!(sustainable_rate(&steps, false), 1000);
        // KoD disqualifies unless --kod-ok.
        steps[0].counts.kod = 5;
        assert_eq!(sustainable_rate(&steps, false), 0);
        assert_eq!(sustainable_rate(&steps, true), 1000);
        // A step the generator could not offer says nothing about the server.
        let mut behind = vec![step(1000, 0.0), step(2000, 0.0)];
        behind[1].generator_behind = true;
        assert_eq!(sustainable_rate(&behind, false), 1000);
        // A later clean step counts even after a lossy one.
        assert_eq!(sustainable_rate(&[step(1000, 0.0), step(2000, 3.0), step(3000, 0.2)], false), 3000);
        assert_eq!(sustainable_rate(&[], false), 0);
    }

    #[test]
    fn step_result_percentages_are_of_the_requests_sent() {
        assert_eq!(pct(1, 3), 33.333);
        assert_eq!(pct(0, 0), 0.0);
        let text = RampReport {
            target: "127.0.0.1:123".into(),
            engine: "socket",
            start: 1000,
            factor: 2.0,
            step_s: 1.0,
            settle_ms: 200,
            max_loss_pct: 5.0,
            max_rate: MAX_RATE,
            max_steps: 40,
            kod_ok: false,
            tries: 1,
            refine_pct: 0.0,
            generator: GeneratorSetup { sockets: 16, core: None, threads: 1, cores: vec![] },
            steps: vec![step(1000, 0.0), step(2000, 10.0)],
            attempts: vec![step(1000, 0.0), step(2000, 10.0)],
            sustainable_rate: 1000,
            stopped_because: StopReason::Loss,
        }
        .to_text();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.ends_with("stopped because: loss\nsustainable: 1000/s\n"), "{text}");
    }

    #[test]
    fn tries_and_refinement_are_bounded_and_checked() {
        let target: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let config = |steps: u32, tries: u32, refine: f64| {
            RampConfig::new(
                target,
                false,
                spec(50_000, 1.25, 3.0),
                5.0,
                MAX_RATE,
                steps,
                200,
                false,
                tries,
                refine,
                16,
                vec![],
            )
        };
        assert!(config(40, DEFAULT_TRIES, DEFAULT_REFINE_PCT).is_ok());
        assert!(config(40, 1, 0.0).is_ok());
        for (tries, refine) in [(0, 2.0), (MAX_TRIES + 1, 2.0), (3, 0.05), (3, 51.0), (3, -1.0), (3, f64::NAN)] {
            assert!(config(10, tries, refine).is_err(), "{tries} {refine}");
        }
        // Every try counts against the ten minutes.
        let e = config(40, MAX_TRIES, 2.0).unwrap_err().to_string();
        assert!(e.contains("limit is 600 s") && e.contains("--tries"), "{e}");
        // Each refinement rate halves the bracket's logarithm: 1.25 down to 2 % takes 4 halvings.
        assert_eq!(max_refine_steps(1.25, 0.0), 0);
        assert_eq!(max_refine_steps(1.25, 2.0), 5);
        assert_eq!(max_refine_steps(1.1, 2.0), 4);
        assert_eq!(max_refine_steps(10.0, MIN_REFINE_PCT), 13);
        assert_eq!(max_refine_steps(1.01, 2.0), 1);
    }

    #[test]
    fn a_rate_is_its_first_sustainable_try_or_its_least_lossy_one() {
        let tries = |losses: &[f64]| -> Vec<StepResult> {
            losses.iter().enumerate().map(|(i, &l)| StepResult { attempt: i as u32 + 1, ..step(1000, l) }).collect()
        };
        assert_eq!(rate_result(&[], false), None);
        assert_eq!(rate_result(&tries(&[0.2]), false).unwrap().attempt, 1);
        assert_eq!(rate_result(&tries(&[4.0, 0.5]), false).unwrap().attempt, 2);
        // None sustainable: the least loss, the first of equals.
        assert_eq!(rate_result(&tries(&[4.0, 3.0, 3.5]), false).unwrap().attempt, 2);
        assert_eq!(rate_result(&tries(&[3.0, 3.0]), false).unwrap().attempt, 1);
        // Sustainable beats less loss: a try with an invalid reply is never the rate's result
        // while a clean try exists.
        let mut t = tries(&[0.0, 0.5]);
        t[0].counts.invalid = 1;
        assert_eq!(rate_result(&t, false).unwrap().attempt, 2);
    }

    #[test]
    fn refinement_bisects_between_the_last_clean_rate_and_the_next() {
        assert_eq!(refine_midpoint(100_000, 121_000, 2.0), Some(110_000));
        assert_eq!(refine_midpoint(100_000, 102_000, 2.0), None);
        assert_eq!(refine_midpoint(100_000, 102_001, 2.0), Some(100_996));
        assert_eq!(refine_midpoint(100_000, 121_000, 0.0), None);
        assert_eq!(refine_midpoint(0, 121_000, 2.0), None);
        assert_eq!(refine_midpoint(3, 4, 2.0), None);
        let steps = [step(1000, 0.0), step(1100, 3.0), step(1210, 0.5), step(1331, 2.0), step(1464, 9.0)];
        assert_eq!(refine_bracket(&steps, false), Some((1210, 1331)));
        assert_eq!(refine_bracket(&steps[..3], false), None);
        assert_eq!(refine_bracket(&[step(1000, 9.0)], false), None);
    }

    /// A server that answers everything up to `capacity`/s and nothing more, on a machine where
    /// the tries numbered in `stalls` (counted over the whole ramp, from 0) lose 6 % more.
    fn simulated(capacity: u64, stalls: &'static [usize]) -> impl FnMut(&LoadConfig) -> anyhow::Result<LoadReport> {
        let mut tries = 0;
        move |config| {
            let sent = config.rate * 2;
            let mut lost = config.rate.saturating_sub(capacity) * 2;
            if stalls.contains(&tries) {
                lost += sent * 6 / 100;
            }
            tries += 1;
            let answered = sent - lost.min(sent);
            let counts = Counts { sent, received: answered, answered, valid: answered, ..Default::default() };
            let histogram = || hdrhistogram::Histogram::new(3).unwrap();
            let outcome = crate::outcome::LoadOutcome {
                counts,
                send_elapsed: Duration::from_secs(2),
                server_socket_drops: None,
                client_socket_drops: 0,
                rtt_ns: histogram(),
                turnaround_ns: histogram(),
            };
            Ok(LoadReport::new(config, "simulated", &outcome))
        }
    }

    fn simulated_ramp(tries: u32, refine_pct: f64, capacity: u64, stalls: &'static [usize]) -> RampReport {
        let target: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let config = RampConfig::new(
            target,
            false,
            spec(50_000, 1.1, 2.0),
            5.0,
            MAX_RATE,
            40,
            0,
            false,
            tries,
            refine_pct,
            16,
            vec![],
        )
        .unwrap();
        run_with(&config, "simulated", simulated(capacity, stalls), |_| {}).unwrap()
    }

    #[test]
    fn one_stall_ends_a_plain_ramp_early_and_tries_ride_it_out() {
        // Rates 50000, 55000, 60500, 66550, 73205, 80526, 88578, 97436, 107179, ...
        let plain = simulated_ramp(1, 0.0, 100_000, &[2]);
        assert_eq!(plain.sustainable_rate, 55_000);
        assert_eq!(plain.stopped_because, StopReason::Loss);
        assert_eq!(plain.steps.len(), 3);

        let tried = simulated_ramp(3, 0.0, 100_000, &[2]);
        assert_eq!(tried.sustainable_rate, 97_436);
        assert_eq!(tried.stopped_because, StopReason::Loss);
        // 60500 took two tries; the overloaded 107179 took all three; the rest one each.
        assert_eq!(tried.tries_at(60_500), 2);
        assert_eq!(tried.tries_at(107_179), 3);
        assert_eq!(tried.attempts.len(), tried.steps.len() + 1 + 2);
        assert_eq!(tried.steps[2].attempt, 2);
        assert!(tried.steps.iter().all(|s| s.phase == Phase::Ramp));
        let text = tried.to_text();
        assert!(text.contains("up to 3 tries a rate"), "{text}");
    }

    #[test]
    fn refinement_finds_the_capacity_within_its_resolution() {
        for capacity in [100_000, 103_000, 130_000, 250_000] {
            let r = simulated_ramp(3, 2.0, capacity, &[1, 9]);
            let found = r.sustainable_rate;
            // Sustainable is < 1 % loss, so up to capacity / 0.99; the bracket ends 2 % wide.
            let most = capacity as f64 / (1.0 - SUSTAINABLE_LOSS_PCT / 100.0);
            assert!(found as f64 <= most && found as f64 >= most / 1.02, "{capacity}: {found}");
            assert!(r.steps.iter().any(|s| s.phase == Phase::Refine), "{capacity}");
            assert!(r.to_text().contains(" ok refine"), "{}", r.to_text());
            // The refinement measured only rates between the ramp's bracket.
            let ramp: Vec<u64> = r.steps.iter().filter(|s| s.phase == Phase::Ramp).map(|s| s.offered).collect();
            let (lower, upper) = refine_bracket(&r.steps[..ramp.len()], false).unwrap();
            assert!(r.steps[ramp.len()..].iter().all(|s| lower < s.offered && s.offered < upper));
        }
    }
}
