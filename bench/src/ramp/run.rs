//! The loop of a ramp: every rate's tries, `settle` apart, the rising steps until a stop rule,
//! then the refinement.

use std::thread;

use anyhow::Context;

use super::config::RampConfig;
use super::decision::{exceeds_loss, generator_exhausted, rate_result, StopReason};
use super::plan::{max_refine_steps, refine_bracket, refine_midpoint, step_rates};
use super::report::RampReport;
use super::step::{Phase, StepResult};
use crate::config::LoadConfig;
use crate::load;
use crate::report::LoadReport;

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
    let mut tries = Tries { config, step: &mut step, progress: &mut progress, attempts: Vec::new() };
    let (mut steps, stopped_because) = climb(&mut tries)?;
    refine(&mut tries, &mut steps)?;
    Ok(RampReport::new(config, engine, steps, tries.attempts, stopped_because))
}

/// Every try of a ramp so far, and how to run the next.
struct Tries<'a> {
    config: &'a RampConfig,
    /// Runs one load step.
    step: &'a mut dyn FnMut(&LoadConfig) -> anyhow::Result<LoadReport>,
    /// Called after each try.
    progress: &'a mut dyn FnMut(&StepResult),
    /// In the order run.
    attempts: Vec<StepResult>,
}

impl Tries<'_> {
    /// Measures `rate`, up to `tries` times until a try is sustainable, and returns the rate's
    /// result. Every try but the ramp's first waits `settle` after the one before.
    fn measure(&mut self, rate: u64, phase: Phase) -> anyhow::Result<StepResult> {
        let config = self.config;
        let first = self.attempts.len();
        for attempt in 1..=config.tries {
            if !self.attempts.is_empty() && !config.settle.is_zero() {
                thread::sleep(config.settle);
            }
            let step_config = LoadConfig { rate, ..config.step.clone() };
            let report = (self.step)(&step_config)
                .with_context(|| format!("ramp {} at {rate}/s, try {attempt}", phase.as_str()))?;
            let result = StepResult::from_report(&report, phase, attempt);
            (self.progress)(&result);
            let done = result.is_sustainable(config.accept);
            self.attempts.push(result);
            if done {
                break;
            }
        }
        Ok(rate_result(&self.attempts[first..], config.accept).expect("at least one try").clone())
    }
}

/// The rising steps, START x FACTOR^k, until a stop rule ends them: one result a rate, and why
/// they ended.
fn climb(tries: &mut Tries<'_>) -> anyhow::Result<(Vec<StepResult>, StopReason)> {
    let config = tries.config;
    let rates = step_rates(&config.spec, config.max_rate, config.max_steps);
    let mut steps: Vec<StepResult> = Vec::with_capacity(rates.len());
    for &rate in &rates {
        let result = tries.measure(rate, Phase::Ramp)?;
        let lossy = exceeds_loss(&result, config.max_loss_pct);
        steps.push(result);
        if lossy {
            return Ok((steps, StopReason::Loss));
        }
        if generator_exhausted(&steps) {
            return Ok((steps, StopReason::GeneratorBehind));
        }
    }
    let stopped_because =
        if (rates.len() as u32) < config.max_steps { StopReason::MaxRate } else { StopReason::MaxSteps };
    Ok((steps, stopped_because))
}

/// The refinement after the steps: bisects between the highest sustainable rate and the next one
/// up, adding each midpoint's result to `steps`.
fn refine(tries: &mut Tries<'_>, steps: &mut Vec<StepResult>) -> anyhow::Result<()> {
    let config = tries.config;
    let Some((mut lower, mut upper)) = refine_bracket(steps, config.accept) else { return Ok(()) };
    for _ in 0..max_refine_steps(config.spec.factor, config.refine_pct) {
        let Some(mid) = refine_midpoint(lower, upper, config.refine_pct) else { break };
        let result = tries.measure(mid, Phase::Refine)?;
        if result.is_sustainable(config.accept) {
            lower = mid;
        } else {
            upper = mid;
        }
        steps.push(result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::config::MAX_RATE;
    use crate::counts::Counts;
    use crate::ramp::config::tests::spec;
    use crate::ramp::step::SUSTAINABLE_LOSS_PCT;
    use crate::verdict::Accept;

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
            Accept::default(),
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
            let (lower, upper) = refine_bracket(&r.steps[..ramp.len()], Accept::default()).unwrap();
            assert!(r.steps[ramp.len()..].iter().all(|s| lower < s.offered && s.offered < upper));
        }
    }
}
