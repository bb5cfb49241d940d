//! The report of one load step: its `--json` object and its text.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::LoadConfig;
use crate::counts::Counts;
use crate::outcome::LoadOutcome;

/// How the generator ran: its sockets and threads, as both reports give them.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GeneratorSetup {
    pub sockets: usize,
    /// The generator's core when it ran as one pinned thread.
    pub core: Option<usize>,
    /// Generator threads and the cores they were pinned to (empty: one unpinned thread).
    pub threads: usize,
    pub cores: Vec<usize>,
}

impl GeneratorSetup {
    pub fn of(config: &LoadConfig) -> Self {
        Self { sockets: config.sockets, core: config.core(), threads: config.threads(), cores: config.cores.clone() }
    }
}

impl std::fmt::Display for GeneratorSetup {
    /// "16 sockets, core 3", as the text reports print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sockets, {}", self.sockets, cores_text(&self.cores))
    }
}

/// The `--json` object. Keys up to `rtt_max_us` are those the earlier `udp_load` example printed,
/// so older results stay comparable.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadReport {
    pub target: String,
    pub engine: &'static str,
    pub offered_rate: u64,
    pub send_rate: u64,
    pub duration_s: f64,
    #[serde(flatten)]
    pub generator: GeneratorSetup,
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub valid: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub kod: u64,
    pub unsynced: u64,
    pub loss_pct: f64,
    pub achieved_reply_rate: u64,
    pub server_socket_drops: Option<u64>,
    pub client_socket_drops: u64,
    /// AF_XDP engine: frames the generator's interface refused at transmit over the step (its
    /// tx_dropped counter; on veth, the peer's receive ring was full; on a NIC, the transmit
    /// queue). They are among the requests sent, so they count as lost. None for sockets.
    pub tx_refused: Option<u64>,
    pub rtt_p50_us: u64,
    pub rtt_p99_us: u64,
    pub rtt_max_us: u64,
    pub answered: u64,
    pub invalid_length: u64,
    pub invalid_header: u64,
    pub invalid_origin: u64,
    pub invalid_late: u64,
    pub invalid_t2_window: u64,
    pub invalid_t3_window: u64,
    /// `--nts-ke`: replies that were not authentic NTS replies to our requests (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_nts: Option<u64>,
    /// Replies to an earlier step of the ramp, not counted in this one.
    pub stale: u64,
    /// `kod` by code: RATE, and DENY or RSTR.
    pub kod_rate: u64,
    pub kod_deny_rstr: u64,
    pub rtt_p50_ns: u64,
    pub rtt_p90_ns: u64,
    pub rtt_p99_ns: u64,
    pub rtt_p999_ns: u64,
    pub rtt_max_ns: u64,
    /// Server turnaround T3 - T2 of valid replies, from the reply's own timestamps.
    pub turnaround_p50_ns: u64,
    pub turnaround_p99_ns: u64,
    pub turnaround_max_ns: u64,
    /// The counters behind the keys above, whole (for a ramp's step); not in the JSON, which
    /// has them under their keys, in the order the earlier tools printed them.
    #[serde(skip)]
    pub counts: Counts,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Lost requests as a percentage of those sent.
pub fn loss_pct(sent: u64, answered: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        100.0 * sent.saturating_sub(answered) as f64 / sent as f64
    }
}

impl LoadReport {
    pub fn new(config: &LoadConfig, engine: &'static str, o: &LoadOutcome) -> Self {
        let c = &o.counts;
        let secs = o.send_elapsed.as_secs_f64().max(1e-9);
        let q = |h: &Histogram<u64>, quantile: f64| if h.is_empty() { 0 } else { h.value_at_quantile(quantile) };
        let (rtt, turnaround) = (&o.rtt_ns, &o.turnaround_ns);
        Self {
            target: config.target.to_string(),
            engine,
            offered_rate: if config.rate == 0 { (c.sent as f64 / secs).round() as u64 } else { config.rate },
            send_rate: (c.sent as f64 / secs).round() as u64,
            duration_s: round3(secs),
            generator: GeneratorSetup::of(config),
            sent: c.sent,
            send_errors: c.send_errors,
            received: c.received,
            valid: c.valid,
            invalid: c.invalid,
            duplicate: c.duplicate,
            kod: c.kod,
            unsynced: c.unsynced,
            loss_pct: round3(loss_pct(c.sent, c.answered)),
            achieved_reply_rate: (c.valid as f64 / secs).round() as u64,
            server_socket_drops: o.server_socket_drops,
            client_socket_drops: o.client_socket_drops,
            tx_refused: None,
            rtt_p50_us: q(rtt, 0.50) / 1000,
            rtt_p99_us: q(rtt, 0.99) / 1000,
            rtt_max_us: rtt.max() / 1000,
            answered: c.answered,
            invalid_length: c.invalid_length,
            invalid_header: c.invalid_header,
            invalid_origin: c.invalid_origin,
            invalid_late: c.invalid_late,
            invalid_t2_window: c.invalid_t2_window,
            invalid_t3_window: c.invalid_t3_window,
            invalid_nts: config.nts.as_ref().map(|_| c.invalid_nts),
            stale: c.stale,
            kod_rate: c.kod_rate,
            kod_deny_rstr: c.kod_deny_rstr,
            rtt_p50_ns: q(rtt, 0.50),
            rtt_p90_ns: q(rtt, 0.90),
            rtt_p99_ns: q(rtt, 0.99),
            rtt_p999_ns: q(rtt, 0.999),
            rtt_max_ns: rtt.max(),
            turnaround_p50_ns: q(turnaround, 0.50),
            turnaround_p99_ns: q(turnaround, 0.99),
            turnaround_max_ns: turnaround.max(),
            counts: *c,
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("target        {} ({}, {} engine)\n", self.target, self.generator, self.engine);
        s += &format!(
            "offered rate  {}/s (sent at {}/s over {:.3} s)\n",
            self.offered_rate, self.send_rate, self.duration_s
        );
        if (self.send_rate as f64) < 0.98 * self.offered_rate as f64 {
            s += "              WARNING: the generator fell behind the offered rate\n";
        }
        s += &format!("sent          {} ({} send errors)\n", self.sent, self.send_errors);
        s += &format!("received      {} (answered {})\n", self.received, self.answered);
        s += &format!("valid         {} ({}/s)\n", self.valid, self.achieved_reply_rate);
        s += &format!(
            "invalid       {} (length {}, header {}, origin {}, duplicate {}, late {}, T2 window {}, T3 window {})\n",
            self.invalid,
            self.invalid_length,
            self.invalid_header,
            self.invalid_origin,
            self.duplicate,
            self.invalid_late,
            self.invalid_t2_window,
            self.invalid_t3_window
        );
        if let Some(n) = self.invalid_nts {
            s += &format!("not authentic {n} (NTS: another unique identifier, or an authenticator S2C does not open; among the invalid)\n");
        }
        if self.stale > 0 {
            s += &format!("stale         {} (replies to an earlier step of the ramp, not counted here)\n", self.stale);
        }
        s += &format!("kod           {} (RATE {}, DENY or RSTR {})\n", self.kod, self.kod_rate, self.kod_deny_rstr);
        s += &format!("unsynced      {}\n", self.unsynced);
        s += &format!("loss          {:.3} %\n", self.loss_pct);
        let server = self.server_socket_drops.map_or_else(|| "n/a".to_string(), |d| d.to_string());
        s += &format!("socket drops  server {server}, client {}\n", self.client_socket_drops);
        if let Some(n) = self.tx_refused {
            s += &format!("tx refused    {n} (the interface's tx_dropped: counted as sent and lost)\n");
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        s += &format!(
            "rtt           p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us\n",
            us(self.rtt_p50_ns),
            us(self.rtt_p90_ns),
            us(self.rtt_p99_ns),
            us(self.rtt_p999_ns),
            us(self.rtt_max_ns)
        );
        s += &format!(
            "turnaround    p50 {:.1} us, p99 {:.1} us, max {:.1} us (server T3 - T2)\n",
            us(self.turnaround_p50_ns),
            us(self.turnaround_p99_ns),
            us(self.turnaround_max_ns)
        );
        s
    }
}

/// "core 3", "cores 0,1 (2 threads)" or "core unpinned", as the text reports print it.
pub fn cores_text(cores: &[usize]) -> String {
    match cores {
        [] => "core unpinned".to_string(),
        [c] => format!("core {c}"),
        _ => {
            let list: Vec<String> = cores.iter().map(usize::to_string).collect();
            format!("cores {} ({} threads)", list.join(","), cores.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::counts::{Counts, Invalid};
    use crate::target::tests::addr;

    #[test]
    fn counts_and_report_math() {
        let mut c =
            Counts { sent: 1000, received: 996, answered: 990, valid: 985, kod: 3, unsynced: 2, ..Counts::default() };
        for why in
            [Invalid::Duplicate, Invalid::Duplicate, Invalid::T2Window, Invalid::Origin, Invalid::Late, Invalid::Length]
        {
            c.count_invalid(why);
        }
        assert_eq!(c.invalid, 6);
        assert_eq!(
            (c.duplicate, c.invalid_t2_window, c.invalid_origin, c.invalid_late, c.invalid_length),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(c.received, c.valid + c.invalid + c.kod + c.unsynced);

        let mut rtt = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let mut turnaround = rtt.clone();
        // 1..=100 µs, one each: p50 = 50 µs, p99 = 99 µs (within the histogram's 0.1 %).
        for us in 1..=100u64 {
            rtt.record(us * 1000).unwrap();
            turnaround.record(us * 10).unwrap();
        }
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 1000, 1.0, 4, vec![0]).unwrap();
        let o = LoadOutcome {
            counts: c,
            send_elapsed: Duration::from_millis(1000),
            server_socket_drops: Some(0),
            client_socket_drops: 0,
            rtt_ns: rtt,
            turnaround_ns: turnaround,
        };
        let r = LoadReport::new(&config, "socket", &o);
        assert_eq!((r.offered_rate, r.send_rate, r.achieved_reply_rate), (1000, 1000, 985));
        assert_eq!(r.loss_pct, 1.0);
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(r.rtt_p50_ns, 50_000) && near(r.rtt_p99_ns, 99_000) && near(r.rtt_max_ns, 100_000), "{r:?}");
        assert_eq!((r.rtt_p50_us, r.rtt_p99_us), (r.rtt_p50_ns / 1000, r.rtt_p99_ns / 1000));
        assert!(near(r.turnaround_p50_ns, 500) && near(r.turnaround_p99_ns, 990), "{r:?}");
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(10, 12), 0.0);
    }

    #[test]
    fn empty_histograms_report_zero() {
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 0, 1.0, 1, vec![]).unwrap();
        let h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let o = LoadOutcome {
            counts: Counts::default(),
            send_elapsed: Duration::from_millis(500),
            server_socket_drops: None,
            client_socket_drops: 0,
            rtt_ns: h.clone(),
            turnaround_ns: h,
        };
        let r = LoadReport::new(&config, "socket", &o);
        assert_eq!((r.rtt_p50_ns, r.rtt_p99_ns, r.rtt_max_ns, r.turnaround_p99_ns, r.loss_pct), (0, 0, 0, 0, 0.0));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["server_socket_drops"].is_null() && json["core"].is_null());
    }

    #[test]
    fn cores_text_names_the_generator_threads() {
        assert_eq!(cores_text(&[]), "core unpinned");
        assert_eq!(cores_text(&[5]), "core 5");
        assert_eq!(cores_text(&[0, 2]), "cores 0,2 (2 threads)");
    }
}
