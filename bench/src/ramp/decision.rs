//! The ramp's decisions: a rate's result from its tries, the stop rules, and the sustainable
//! rate.

use serde::Serialize;

use super::step::StepResult;
use crate::verdict::Accept;

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

/// The stop rule after a step: more loss than allowed ends the ramp.
pub fn exceeds_loss(step: &StepResult, max_loss_pct: f64) -> bool {
    step.loss_pct > max_loss_pct
}

/// A rate's result from its tries: the first sustainable one, else the one with the least loss
/// (the first of equals). `None` only for no tries.
pub fn rate_result(tries: &[StepResult], accept: Accept) -> Option<&StepResult> {
    tries
        .iter()
        .find(|t| t.is_sustainable(accept))
        .or_else(|| tries.iter().reduce(|best, t| if t.loss_pct < best.loss_pct { t } else { best }))
}

/// The other stop rule: the generator fell behind in the last two steps, so offering more would
/// only measure the generator again.
pub fn generator_exhausted(steps: &[StepResult]) -> bool {
    matches!(steps, [.., a, b] if a.generator_behind && b.generator_behind)
}

/// The highest offered rate among the sustainable steps; 0 when none is.
pub fn sustainable_rate(steps: &[StepResult], accept: Accept) -> u64 {
    steps.iter().filter(|s| s.is_sustainable(accept)).map(|s| s.offered).max().unwrap_or(0)
}

/// Whether the sustainable rate is only a lower bound on the server's: the ramp stopped for a
/// reason of its own (its cap, its step count, the generator's ceiling), and no step measured
/// above the sustainable rate showed the server failing (a step the generator could not offer
/// shows nothing). Then the server's limit lies somewhere above, unmeasured.
pub fn is_lower_bound(steps: &[StepResult], stopped_because: StopReason, accept: Accept) -> bool {
    let sustainable = sustainable_rate(steps, accept);
    stopped_because != StopReason::Loss
        && sustainable > 0
        && steps.iter().filter(|s| s.offered > sustainable).all(|s| s.generator_behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::step::tests::step;

    #[test]
    fn more_loss_than_allowed_ends_the_ramp() {
        assert!(!exceeds_loss(&step(1000, 5.0), 5.0));
        assert!(exceeds_loss(&step(1000, 5.001), 5.0));
        assert!(exceeds_loss(&step(1000, 0.1), 0.0));
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
        assert_eq!(sustainable_rate(&steps, Accept::default()), 4000);
        // An invalid or unsynchronised reply disqualifies a step, whatever its loss.
        steps[2].counts.invalid = 1;
        assert_eq!(sustainable_rate(&steps, Accept::default()), 2000);
        steps[1].counts.unsynced = 3;
        assert_eq!(sustainable_rate(&steps, Accept::default()), 1000);
        assert_eq!(sustainable_rate(&steps, Accept { unsynced: true, ..Accept::default() }), 2000);
        // KoD disqualifies unless --kod-ok.
        steps[0].counts.kod = 5;
        assert_eq!(sustainable_rate(&steps, Accept::default()), 0);
        assert_eq!(sustainable_rate(&steps, Accept { kod: true, ..Accept::default() }), 1000);
        // A step the generator could not offer says nothing about the server.
        let mut behind = vec![step(1000, 0.0), step(2000, 0.0)];
        behind[1].generator_behind = true;
        assert_eq!(sustainable_rate(&behind, Accept::default()), 1000);
        // A later clean step counts even after a lossy one.
        assert_eq!(sustainable_rate(&[step(1000, 0.0), step(2000, 3.0), step(3000, 0.2)], Accept::default()), 3000);
        assert_eq!(sustainable_rate(&[], Accept::default()), 0);
    }

    #[test]
    fn a_ramp_that_stopped_at_its_cap_found_only_a_lower_bound() {
        let none = Accept::default();
        let clean = [step(1000, 0.0), step(2000, 0.0)];
        assert!(is_lower_bound(&clean, StopReason::MaxRate, none));
        assert!(is_lower_bound(&clean, StopReason::MaxSteps, none));
        assert!(!is_lower_bound(&clean, StopReason::Loss, none));
        // A step above the sustainable rate that the server failed: that is its limit.
        let failed = [step(1000, 0.0), step(2000, 3.0)];
        assert!(!is_lower_bound(&failed, StopReason::MaxRate, none));
        // Steps above it that the generator could not offer say nothing about the server.
        let behind = |offered| StepResult { generator_behind: true, ..step(offered, 40.0) };
        assert!(is_lower_bound(&[step(1000, 0.0), behind(2000), behind(4000)], StopReason::GeneratorBehind, none));
        // Nothing sustainable: no bound at all.
        assert!(!is_lower_bound(&[behind(1000), behind(2000)], StopReason::GeneratorBehind, none));
        assert!(!is_lower_bound(&[], StopReason::MaxSteps, none));
    }

    #[test]
    fn a_rate_is_its_first_sustainable_try_or_its_least_lossy_one() {
        let tries = |losses: &[f64]| -> Vec<StepResult> {
            losses.iter().enumerate().map(|(i, &l)| StepResult { attempt: i as u32 + 1, ..step(1000, l) }).collect()
        };
        assert_eq!(rate_result(&[], Accept::default()), None);
        assert_eq!(rate_result(&tries(&[0.2]), Accept::default()).unwrap().attempt, 1);
        assert_eq!(rate_result(&tries(&[4.0, 0.5]), Accept::default()).unwrap().attempt, 2);
        // None sustainable: the least loss, the first of equals.
        assert_eq!(rate_result(&tries(&[4.0, 3.0, 3.5]), Accept::default()).unwrap().attempt, 2);
        assert_eq!(rate_result(&tries(&[3.0, 3.0]), Accept::default()).unwrap().attempt, 1);
        // Sustainable beats less loss: a try with an invalid reply is never the rate's result
        // while a clean try exists.
        let mut t = tries(&[0.0, 0.5]);
        t[0].counts.invalid = 1;
        assert_eq!(rate_result(&t, Accept::default()).unwrap().attempt, 2);
    }
}
