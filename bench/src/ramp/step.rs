//! What one try of a ramp measured ([`StepResult`], a ramp's row of a load report), and whether
//! it is sustainable.

use serde::Serialize;

use crate::counts::Counts;
use crate::report::LoadReport;
use crate::verdict::Accept;

/// A step is sustainable only with less loss than this, in percent.
pub const SUSTAINABLE_LOSS_PCT: f64 = 1.0;
/// A step is sustainable only if the generator sent at least this share of the offered rate.
pub const GENERATOR_KEPT_UP: f64 = 0.98;

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
    // From here on alike in shape to LoadReport's fields: a subset of its JSON keys, some renamed.
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

    /// Less than 1 % loss with only valid replies (KoD and unsynchronised ones where `accept`
    /// takes them), at the offered rate.
    pub fn is_sustainable(&self, accept: Accept) -> bool {
        let c = &self.counts;
        c.sent > 0
            && self.loss_pct < SUSTAINABLE_LOSS_PCT
            && c.invalid == 0
            && (accept.unsynced || c.unsynced == 0)
            && (accept.kod || c.kod == 0)
            && !self.generator_behind
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A clean try at `offered`/s with this loss (the tests of the ramp and the plot use it).
    pub(crate) fn step(offered: u64, loss_pct: f64) -> StepResult {
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
    fn step_result_percentages_are_of_the_requests_sent() {
        assert_eq!(pct(1, 3), 33.333);
        assert_eq!(pct(0, 0), 0.0);
    }
}
