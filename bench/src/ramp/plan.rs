//! Which rates a ramp measures: the rising steps, then the refinement between the highest
//! sustainable rate and the next one up.

use super::config::RampSpec;
use super::decision::sustainable_rate;
use super::step::StepResult;
use crate::verdict::Accept;

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

/// Where a refinement starts: the highest sustainable rate and the lowest rate measured above it
/// (not sustainable, or it would be the highest); `None` when there is no such pair.
pub fn refine_bracket(steps: &[StepResult], accept: Accept) -> Option<(u64, u64)> {
    let lower = sustainable_rate(steps, accept);
    let upper = steps.iter().map(|s| s.offered).filter(|&r| r > lower).min()?;
    (lower > 0).then_some((lower, upper))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_RATE;
    use crate::ramp::config::tests::spec;
    use crate::ramp::config::MAX_STEPS;
    use crate::ramp::step::tests::step;

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
    fn refinement_bisects_between_the_last_clean_rate_and_the_next() {
        assert_eq!(refine_midpoint(100_000, 121_000, 2.0), Some(110_000));
        assert_eq!(refine_midpoint(100_000, 102_000, 2.0), None);
        assert_eq!(refine_midpoint(100_000, 102_001, 2.0), Some(100_996));
        assert_eq!(refine_midpoint(100_000, 121_000, 0.0), None);
        assert_eq!(refine_midpoint(0, 121_000, 2.0), None);
        assert_eq!(refine_midpoint(3, 4, 2.0), None);
        let steps = [step(1000, 0.0), step(1100, 3.0), step(1210, 0.5), step(1331, 2.0), step(1464, 9.0)];
        assert_eq!(refine_bracket(&steps, Accept::default()), Some((1210, 1331)));
        assert_eq!(refine_bracket(&steps[..3], Accept::default()), None);
        assert_eq!(refine_bracket(&[step(1000, 9.0)], Accept::default()), None);
    }
}
