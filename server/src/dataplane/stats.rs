//! Request counters. Each worker owns one [`WorkerCounters`] on its own cache lines and is its only
//! writer (plain load + store, no atomic read-modify-write); readers sum them when asked (the
//! stop summary, `/metrics`, `stratumctl`), so a reader never makes a worker wait.

use std::sync::atomic::{AtomicU64, Ordering};

use stratum_proto::server::ratelimit::{RateDecision, RateOutcome};
use stratum_proto::{DropReason, KissCode, Verdict};

use crate::dataplane::histogram::TurnaroundHistogram;

/// The kiss codes counted, in the order of [`WorkerCounters::kod`].
pub const KISS_CODES: [KissCode; 3] = [KissCode::Rate, KissCode::Deny, KissCode::Rstr];

/// The authenticated answers counted, in the order of [`WorkerCounters::auth`]: replies signed
/// with a symmetric key, crypto-NAKs, NTS replies, NTS NAKs (all also in `answered`).
pub const AUTH_KINDS: [&str; 4] = ["mac", "crypto_nak", "nts", "nts_nak"];

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub received: AtomicU64,
    pub answered: AtomicU64,
    pub kod: [AtomicU64; 3],
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    /// Replies decided but not sent (socket buffer full, send error).
    pub send_failed: AtomicU64,
    pub receive_errors: AtomicU64,
    /// Datagrams the kernel dropped on this worker's sockets for want of buffer space (SO_RXQ_OVFL):
    /// requests that never reached us, so they are in no other counter.
    pub socket_drops: AtomicU64,
    /// Requests over their client's limit answered anyway (the leak).
    pub ratelimit_leaked: AtomicU64,
    /// Clients that got a new record in the rate limiter table, and of those, how many evicted one.
    pub ratelimit_inserted: AtomicU64,
    pub ratelimit_evicted: AtomicU64,
    /// Clients flagged for retrying fast while limited.
    pub ratelimit_fast_clients: AtomicU64,
    /// Interleaved mode: replies that carried an earlier reply's transmit time, and of those,
    /// how many had only the daemon's T3 for it (no kernel/NIC stamp arrived).
    pub interleaved_replies: AtomicU64,
    pub tx_stamps_missing: AtomicU64,
    /// Kernel/NIC transmit stamps that reached the interleaved store, and those refused as more
    /// than 1 s after the daemon's T3.
    pub tx_stamps: AtomicU64,
    pub tx_stamps_late: AtomicU64,
    /// Live interleaved entries overwritten for want of room (the store is too small).
    pub interleaved_evictions: AtomicU64,
    /// Turnaround (T3 − T2) of answered requests.
    pub turnaround: TurnaroundHistogram,
    /// Authenticated answers by kind ([`AUTH_KINDS`]), counted by the worker's authenticator
    /// (crate::auth::WorkerAuth).
    pub auth: [AtomicU64; 4],
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Adds one to a counter of the calling worker's own [`WorkerCounters`] (its only writer).
pub fn incr(counter: &AtomicU64) {
    bump(counter, 1);
}

impl WorkerCounters {
    /// Counts one request's outcome. Only the owning worker calls this.
    pub fn count(&self, verdict: &Verdict) {
        match verdict {
            Verdict::Reply(_) => bump(&self.answered, 1),
            Verdict::Kod(code) => bump(&self.kod[kiss_index(*code)], 1),
            Verdict::Drop(reason) => bump(&self.dropped[reason.index()], 1),
        }
    }

    pub fn add_received(&self, n: u64) {
        bump(&self.received, n);
    }

    pub fn add_send_failed(&self, n: u64) {
        bump(&self.send_failed, n);
    }

    pub fn add_receive_error(&self) {
        bump(&self.receive_errors, 1);
    }

    pub fn set_socket_drops(&self, total: u64) {
        self.socket_drops.store(total, Ordering::Relaxed);
    }

    pub fn count_rate_outcome(&self, o: &RateOutcome) {
        if o.decision == RateDecision::Leak {
            bump(&self.ratelimit_leaked, 1);
        }
        if o.inserted {
            bump(&self.ratelimit_inserted, 1);
        }
        if o.evicted {
            bump(&self.ratelimit_evicted, 1);
        }
        if o.flagged_fast {
            bump(&self.ratelimit_fast_clients, 1);
        }
    }
}

fn kiss_index(code: KissCode) -> usize {
    KISS_CODES.iter().position(|c| *c == code).unwrap_or(0)
}

/// Counters summed over workers: one plain field per [`WorkerCounters`] field (alike in shape on
/// purpose), so that snapshots can be compared and subtracted without touching the atomics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub answered: u64,
    pub kod: [u64; 3],
    pub dropped: [u64; DropReason::ALL.len()],
    pub send_failed: u64,
    pub receive_errors: u64,
    pub socket_drops: u64,
    pub ratelimit_leaked: u64,
    pub ratelimit_inserted: u64,
    pub ratelimit_evicted: u64,
    pub ratelimit_fast_clients: u64,
    pub interleaved_replies: u64,
    pub tx_stamps_missing: u64,
    pub tx_stamps: u64,
    pub tx_stamps_late: u64,
    pub interleaved_evictions: u64,
}

impl Totals {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerCounters>) -> Self {
        let mut t = Self::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for w in workers {
            t.received += get(&w.received);
            t.answered += get(&w.answered);
            t.send_failed += get(&w.send_failed);
            t.receive_errors += get(&w.receive_errors);
            t.socket_drops += get(&w.socket_drops);
            t.ratelimit_leaked += get(&w.ratelimit_leaked);
            t.ratelimit_inserted += get(&w.ratelimit_inserted);
            t.ratelimit_evicted += get(&w.ratelimit_evicted);
            t.ratelimit_fast_clients += get(&w.ratelimit_fast_clients);
            t.interleaved_replies += get(&w.interleaved_replies);
            t.tx_stamps_missing += get(&w.tx_stamps_missing);
            t.tx_stamps += get(&w.tx_stamps);
            t.tx_stamps_late += get(&w.tx_stamps_late);
            t.interleaved_evictions += get(&w.interleaved_evictions);
            for (sum, c) in t.kod.iter_mut().zip(&w.kod) {
                *sum += get(c);
            }
            for (sum, c) in t.dropped.iter_mut().zip(&w.dropped) {
                *sum += get(c);
            }
        }
        t
    }

    /// Adds requests the XDP program dropped on its deny list (no worker counted them): received,
    /// and dropped as denied.
    pub fn add_program_denied(&mut self, n: u64) {
        self.received += n;
        self.dropped[DropReason::Denied.index()] += n;
    }

    /// One line for the log: `received=.. answered=.. kod_rate=.. dropped_short=..`, zeros omitted
    /// after the first two.
    pub fn summary(&self) -> String {
        let mut s = format!("received={} answered={}", self.received, self.answered);
        for (code, n) in KISS_CODES.iter().zip(self.kod) {
            if n > 0 {
                s += &format!(" kod_{}={n}", code.as_str());
            }
        }
        for (reason, n) in DropReason::ALL.iter().zip(self.dropped) {
            if n > 0 {
                s += &format!(" dropped_{}={n}", reason.as_str());
            }
        }
        if self.send_failed > 0 {
            s += &format!(" send_failed={}", self.send_failed);
        }
        if self.receive_errors > 0 {
            s += &format!(" receive_errors={}", self.receive_errors);
        }
        if self.socket_drops > 0 {
            s += &format!(" socket_drops={}", self.socket_drops);
        }
        for (name, n) in [
            ("ratelimit_leaked", self.ratelimit_leaked),
            ("ratelimit_clients_inserted", self.ratelimit_inserted),
            ("ratelimit_clients_evicted", self.ratelimit_evicted),
            ("ratelimit_fast_clients", self.ratelimit_fast_clients),
            ("interleaved_replies", self.interleaved_replies),
            ("tx_stamps", self.tx_stamps),
            ("tx_stamps_missing", self.tx_stamps_missing),
            ("tx_stamps_late", self.tx_stamps_late),
            ("interleaved_evictions", self.interleaved_evictions),
        ] {
            if n > 0 {
                s += &format!(" {name}={n}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_lands_in_one_counter() {
        let w = [WorkerCounters::default(), WorkerCounters::default()];
        w[0].add_received(4);
        w[0].count(&Verdict::Reply(48));
        w[0].count(&Verdict::Kod(KissCode::Rate));
        w[1].add_received(2);
        w[1].count(&Verdict::Drop(DropReason::Short));
        w[1].count(&Verdict::Drop(DropReason::Short));
        w[0].count(&Verdict::Drop(DropReason::Control));
        let t = Totals::sum(&w);
        assert_eq!(t.received, 6);
        let outcomes = t.answered + t.kod.iter().sum::<u64>() + t.dropped.iter().sum::<u64>();
        assert_eq!(outcomes, 5);
        assert_eq!(t.summary(), "received=6 answered=1 kod_rate=1 dropped_short=2 dropped_control=1");
    }
}
