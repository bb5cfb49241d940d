//! The `--ramp` arguments ([`RampSpec`]) and a validated ramp ([`RampConfig`]), bounded before
//! it starts.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;

use super::plan::max_refine_steps;
use crate::config::{LoadConfig, MAX_DURATION_S, MAX_RATE};
use crate::engine::socket::DRAIN;
use crate::verdict::Accept;

/// A ramp's whole length is bounded before it starts: max steps x (step + drain + settle).
pub const MAX_TOTAL: Duration = Duration::from_secs(600);
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
    /// The replies a step may have and still be sustainable (KoD, unsynchronised), and that do
    /// not fail the ramp.
    pub accept: Accept,
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
        accept: Accept,
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
        Ok(Self { spec, max_loss_pct, max_rate, max_steps, settle, accept, tries, refine_pct, step })
    }
}

/// The longest a ramp can run: every try's send phase and drain, and the pauses between them.
pub fn worst_case_length(step: Duration, settle: Duration, max_tries: u32) -> Duration {
    (step + DRAIN) * max_tries + settle * max_tries.saturating_sub(1)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::ramp) fn spec(start: u64, factor: f64, step_s: f64) -> RampSpec {
        RampSpec { start, factor, step: Duration::from_secs_f64(step_s) }
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
    fn ramp_bounds() {
        let t = |step_s: f64, settle_ms: u64, steps: u32| {
            worst_case_length(Duration::from_secs_f64(step_s), Duration::from_millis(settle_ms), steps)
        };
        assert_eq!(t(3.0, 200, 40), Duration::from_millis(40 * 3200 + 39 * 200));
        assert_eq!(t(0.3, 0, 1), Duration::from_millis(500));
        let target: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let config = |s: RampSpec, max_loss: f64, max_rate: u64, steps: u32, settle: u64| {
            RampConfig::new(target, false, s, max_loss, max_rate, steps, settle, Accept::default(), 1, 0.0, 16, vec![])
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
        let e = RampConfig::new(
            far,
            false,
            spec(1000, 2.0, 1.0),
            5.0,
            MAX_RATE,
            4,
            0,
            Accept::default(),
            1,
            0.0,
            16,
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--i-own-this-target"), "{e}");
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
                Accept::default(),
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
}
