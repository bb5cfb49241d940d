//! What a load engine hands back for one step: its counters, histograms and drops.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::counts::Counts;

/// What an engine hands back.
#[derive(Debug)]
pub struct LoadOutcome {
    pub counts: Counts,
    pub send_elapsed: Duration,
    /// Kernel drops at the server's socket during the run; None when the server is not on our
    /// loopback (its socket is not in our /proc/net/udp).
    pub server_socket_drops: Option<u64>,
    pub client_socket_drops: u64,
    pub rtt_ns: Histogram<u64>,
    pub turnaround_ns: Histogram<u64>,
}

impl LoadOutcome {
    /// Folds another generator thread's outcome into this one: counters and histograms add up,
    /// the send phase is the longest of the two.
    pub fn merge(&mut self, o: LoadOutcome) -> anyhow::Result<()> {
        self.counts += o.counts;
        self.send_elapsed = self.send_elapsed.max(o.send_elapsed);
        self.server_socket_drops = match (self.server_socket_drops, o.server_socket_drops) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.client_socket_drops += o.client_socket_drops;
        self.rtt_ns.add(&o.rtt_ns)?;
        self.turnaround_ns.add(&o.turnaround_ns)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::Invalid;

    #[test]
    fn thread_outcomes_merge_into_one() {
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let outcome = |sent: u64, answered: u64, rtt_us: u64, ms: u64| {
            let mut rtt = h();
            rtt.record(rtt_us * 1000).unwrap();
            let mut counts = Counts { sent, received: answered, answered, valid: answered, ..Counts::default() };
            counts.count_invalid(Invalid::T3Window);
            LoadOutcome {
                counts,
                send_elapsed: Duration::from_millis(ms),
                server_socket_drops: None,
                client_socket_drops: 1,
                rtt_ns: rtt,
                turnaround_ns: h(),
            }
        };
        let mut a = outcome(100, 90, 10, 1000);
        a.merge(outcome(50, 50, 30, 1010)).unwrap();
        assert_eq!(
            a.counts,
            Counts {
                sent: 150,
                received: 140,
                answered: 140,
                valid: 140,
                invalid: 2,
                invalid_t3_window: 2,
                ..Counts::default()
            }
        );
        assert_eq!(
            (a.send_elapsed, a.client_socket_drops, a.server_socket_drops),
            (Duration::from_millis(1010), 2, None)
        );
        assert_eq!(a.rtt_ns.len(), 2);
        assert!(a.rtt_ns.max() >= 30_000 && a.rtt_ns.min() <= 10_010);
    }
}
