//! The report of a ramp: its `--json` object and its table.

use serde::Serialize;

use super::config::RampConfig;
use super::decision::{is_lower_bound, sustainable_rate, StopReason};
use super::step::{Phase, StepResult};
use crate::report::GeneratorSetup;
use crate::verdict::Accept;

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
    /// `--accept-kod`, `--accept-unsynced`, `--accept-ratelimit`.
    pub kod_ok: bool,
    pub unsynced_ok: bool,
    pub ratelimit_ok: bool,
    pub tries: u32,
    pub refine_pct: f64,
    #[serde(flatten)]
    pub generator: GeneratorSetup,
    /// One result a rate, in the order measured (the ramp's steps, then the refinement's).
    pub steps: Vec<StepResult>,
    /// Every try, in the order run; `steps` holds one of each rate's.
    pub attempts: Vec<StepResult>,
    pub sustainable_rate: u64,
    /// The server may carry more than `sustainable_rate`: the ramp stopped at its own cap (or
    /// the generator's ceiling), not at a step the server failed.
    pub sustainable_rate_is_lower_bound: bool,
    pub stopped_because: StopReason,
}

impl RampReport {
    /// The report of a ramp run with `config` on `engine`: one result a rate (`steps`), every
    /// try (`attempts`), and why it stopped.
    pub fn new(
        config: &RampConfig,
        engine: &'static str,
        steps: Vec<StepResult>,
        attempts: Vec<StepResult>,
        stopped_because: StopReason,
    ) -> Self {
        Self {
            target: config.step.target.to_string(),
            engine,
            start: config.spec.start,
            factor: config.spec.factor,
            step_s: config.spec.step.as_secs_f64(),
            settle_ms: config.settle.as_millis() as u64,
            max_loss_pct: config.max_loss_pct,
            max_rate: config.max_rate,
            max_steps: config.max_steps,
            kod_ok: config.accept.kod,
            unsynced_ok: config.accept.unsynced,
            ratelimit_ok: config.accept.ratelimit,
            tries: config.tries,
            refine_pct: config.refine_pct,
            generator: GeneratorSetup::of(&config.step),
            sustainable_rate: sustainable_rate(&steps, config.accept),
            sustainable_rate_is_lower_bound: is_lower_bound(&steps, stopped_because, config.accept),
            steps,
            attempts,
            stopped_because,
        }
    }

    /// The `--accept-*` flags it ran with.
    pub fn accept(&self) -> Accept {
        Accept { kod: self.kod_ok, unsynced: self.unsynced_ok, ratelimit: self.ratelimit_ok }
    }

    /// "2000/s", or "at least 2000/s (the ramp stopped at --max-rate 2500, ...)" when the ramp
    /// never reached the server's limit: a figure a reader would otherwise take for the limit.
    pub fn sustainable_text(&self) -> String {
        let rate = self.sustainable_rate;
        if !self.sustainable_rate_is_lower_bound {
            return format!("{rate}/s");
        }
        let why = match self.stopped_because {
            StopReason::MaxRate => format!("the ramp stopped at --max-rate {}", self.max_rate),
            StopReason::MaxSteps => format!("the ramp stopped after --max-steps {}", self.max_steps),
            StopReason::GeneratorBehind => "the generator could not offer more".to_string(),
            // Never with a bound: a ramp stopped by loss found the server's limit.
            StopReason::Loss => "the ramp stopped".to_string(),
        };
        format!("at least {rate}/s ({why}, not at the server's limit)")
    }

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
            if st.is_sustainable(self.accept()) {
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
        s += &format!("sustainable: {}\n", self.sustainable_text());
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::MAX_RATE;
    use crate::ramp::step::tests::step;

    /// A socket ramp's report with these steps (the tests of the plot use it too).
    pub(crate) fn report(steps: Vec<StepResult>, sustainable_rate: u64) -> RampReport {
        RampReport {
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
            unsynced_ok: false,
            ratelimit_ok: false,
            tries: 1,
            refine_pct: 0.0,
            generator: GeneratorSetup { sockets: 16, core: None, threads: 1, cores: vec![] },
            attempts: steps.clone(),
            steps,
            sustainable_rate,
            sustainable_rate_is_lower_bound: false,
            stopped_because: StopReason::Loss,
        }
    }

    #[test]
    fn a_report_is_a_table_with_a_line_a_rate() {
        let text = report(vec![step(1000, 0.0), step(2000, 10.0)], 1000).to_text();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.ends_with("stopped because: loss\nsustainable: 1000/s\n"), "{text}");
    }

    #[test]
    fn a_ramp_stopped_at_its_cap_says_at_least() {
        let capped = |stopped_because| RampReport {
            stopped_because,
            sustainable_rate_is_lower_bound: true,
            max_rate: 2500,
            max_steps: 2,
            ..report(vec![step(1000, 0.0), step(2000, 0.0)], 2000)
        };
        let text = capped(StopReason::MaxRate).to_text();
        assert!(
            text.ends_with(
                "sustainable: at least 2000/s (the ramp stopped at --max-rate 2500, not at the server's limit)\n"
            ),
            "{text}"
        );
        assert!(capped(StopReason::MaxSteps).sustainable_text().contains("--max-steps 2"));
        assert!(capped(StopReason::GeneratorBehind).sustainable_text().contains("the generator could not offer more"));
        let json = serde_json::to_value(capped(StopReason::MaxRate)).unwrap();
        assert_eq!(
            (json["sustainable_rate"].clone(), json["sustainable_rate_is_lower_bound"].clone()),
            (2000.into(), true.into())
        );
    }
}
