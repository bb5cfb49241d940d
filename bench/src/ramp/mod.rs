//! `stratum-bench load --ramp`: the reference method of TESTING.md, as ntpperf does it. The
//! offered rate rises step by step (START, START x FACTOR, ...); every step is one ordinary `load`
//! step ([`crate::load::run`], the same engine and the same checks), and the ramp stops after the
//! first step that loses more than `--max-loss` percent, after the second step in a row that the
//! generator could not offer (a faster one is no use: the generator has reached its ceiling),
//! before a step would exceed `--max-rate`, or after `--max-steps`.
//!
//! A step is sustainable with less than 1 % loss, no invalid reply, no unsynchronised reply (unless
//! `--accept-unsynced`), no kiss-o'-death (unless `--accept-kod`, once `--kod-ok`), and a
//! generator that kept up with the offered rate (sent at 98 % of it or more): a step the generator
//! could not offer says nothing about the server. A ramp that saw KoDs, unsynchronised replies or
//! a rate limiter at its first rate exits non-zero ([`crate::verdict`]), its report printed.
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
//! The sustainable rate is the highest sustainable rate measured. When the ramp stopped at its own
//! cap (`--max-rate`, `--max-steps`, the generator's ceiling) with no step above that rate failed
//! by the server, it is only a lower bound, and the report says "at least". The pure parts (the rate
//! sequence, the stop rules, a rate's result, the midpoints, the choice of the sustainable rate)
//! are functions of their inputs, tested without a network.
//!
//! One job a file: [`config`] (the `--ramp` arguments and their bounds), [`plan`] (which rates
//! to measure: the steps, the refinement's bracket and midpoints), [`step`] (what one try
//! measured, and whether it is sustainable), [`decision`] (a rate's result from its tries, the
//! stop rules, the sustainable rate), [`report`] (the `--json` object and the table) and [`run`](mod@run)
//! (the loop that measures).

pub mod config;
pub mod decision;
pub mod plan;
pub mod report;
pub mod run;
pub mod step;

pub use config::{RampConfig, RampSpec, DEFAULT_REFINE_PCT, DEFAULT_TRIES};
pub use decision::StopReason;
pub use report::RampReport;
pub use run::{run, run_with};
pub use step::{Phase, StepResult, SUSTAINABLE_LOSS_PCT};
