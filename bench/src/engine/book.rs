//! What every engine keeps about the requests it sent, and the check of each reply against them
//! (stratum-proto's `client` checks the reply itself; this adds what needs the send records).
//!
//! Each transmit timestamp is `(run nonce << 32) | sequence number`, so a reply names its request.
//! Batch k holds sequence numbers [64k, 64k + 64); a ring of [`RING_BATCHES`] send records, made
//! before the run, keeps per batch its send time (on the engine's own nanosecond clock, for the
//! RTT; CLOCK_REALTIME as an NTP timestamp, for the T2 window) and one bit per request that is set
//! by its first reply, so duplicates are caught. The RTT and turnaround histograms are allocated
//! before the run too: nothing here allocates per packet.

use std::time::Duration;

use hdrhistogram::Histogram;
use stratum_proto::client::{self, ReplyClass, Timestamps};
use stratum_proto::packet::HEADER_LEN;
use stratum_proto::NtpTimestamp;

use crate::counts::{Counts, Invalid};
use crate::outcome::LoadOutcome;

/// Requests per batch; one u64 of "seen" bits per batch.
pub const BATCH: usize = 64;
/// Send records kept: 2^16 batches = 4 M requests (2 MiB). A reply to a request older than that
/// is counted as late; at 10 M requests/s that is 0.4 s, far more than any socket buffer holds.
pub const RING_BATCHES: usize = 1 << 16;
/// Histogram range: 1 ns to 1 hour, 3 significant digits.
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

/// The 48-byte NTPv4 client request every engine sends (poll 2^6 s, precision 2^-20 s); only the
/// transmit timestamp (at [`client::TRANSMIT_AT`]) changes from one request to the next.
pub const REQUEST: [u8; HEADER_LEN] = client::request(6, -20, NtpTimestamp::ZERO);

/// Open-loop pacing: batch k (of [`BATCH`] requests) is due `k * BATCH / rate` seconds after the
/// start, in exact integer nanoseconds (no drift however long the run); rate 0 = every batch due
/// at once (as fast as possible). A late generator sends the batches it owes at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    rate: u64,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Self { rate }
    }

    /// When batch `k` is due, from the start of the send phase.
    pub fn due(&self, k: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let ns = u128::from(k) * BATCH as u128 * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }

    /// How many batches are due by `elapsed` since the start (batch 0 is due at once).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let owed = elapsed.as_nanos() * u128::from(self.rate) / (BATCH as u128 * 1_000_000_000);
        (owed + 1).min(u128::from(u64::MAX)) as u64
    }
}

/// The send record of one batch.
#[derive(Clone, Copy)]
struct SendRecord {
    /// The batch number this record is for; `u64::MAX` before first use.
    batch: u64,
    /// Send time on the engine's clock, in nanoseconds.
    sent_ns: u64,
    /// CLOCK_REALTIME read just before the batch left: T1 of every request in it.
    sent_ntp: NtpTimestamp,
    /// Bit i: request 64 * batch + i has been answered.
    seen: u64,
}

impl SendRecord {
    const UNUSED: Self = Self { batch: u64::MAX, sent_ns: 0, sent_ntp: NtpTimestamp::ZERO, seen: 0 };
}

/// The send records, counters and histograms of one generator thread.
pub struct SendBook {
    nonce: u32,
    /// The nonce of the first step of this generator's ramp: replies carrying a nonce from it up
    /// to this step's (exclusive) answer earlier steps.
    first_nonce: u32,
    /// Sequence numbers handed out so far (a multiple of 64).
    next_seq: u64,
    ring: Vec<SendRecord>,
    rtt_ns: Histogram<u64>,
    turnaround_ns: Histogram<u64>,
    pub counts: Counts,
    /// The reply being checked is interleaved (see [`reply_interleaved`](Self::reply_interleaved)).
    interleaved: bool,
}

impl std::fmt::Debug for SendBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBook")
            .field("nonce", &self.nonce)
            .field("next_seq", &self.next_seq)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Default for SendBook {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBook {
    /// A book with a random run nonce (odd, so never zero).
    pub fn new() -> Self {
        Self::with_nonce(rand::random::<u32>() | 1)
    }

    pub fn with_nonce(nonce: u32) -> Self {
        Self::following(nonce, nonce)
    }

    /// The book of the step after the one whose book had nonce `previous`, in a ramp whose first
    /// step had nonce `first`: its nonce is the next odd number, and a reply with the nonce of
    /// any earlier step of the ramp counts as `stale`, not as invalid. (An engine that keeps its
    /// socket across the steps, as the AF_XDP one does, can get replies to an earlier step that
    /// the server or the path held back past that step's drain.)
    pub fn after(first: u32, previous: u32) -> Self {
        Self::following(first, previous.wrapping_add(2))
    }

    /// The nonce of the ramp's first step (this one's, for a book made by [`new`](Self::new)).
    pub fn first_nonce(&self) -> u32 {
        self.first_nonce
    }

    fn following(first_nonce: u32, nonce: u32) -> Self {
        let histogram = || Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("valid histogram bounds");
        Self {
            nonce,
            first_nonce,
            next_seq: 0,
            ring: vec![SendRecord::UNUSED; RING_BATCHES],
            rtt_ns: histogram(),
            turnaround_ns: histogram(),
            counts: Counts::default(),
            interleaved: false,
        }
    }

    pub fn nonce(&self) -> u32 {
        self.nonce
    }

    /// The sequence number of the next batch's first request.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sequence numbers are 32 bits: the send phase stops before they would wrap.
    pub fn exhausted(&self) -> bool {
        self.next_seq + BATCH as u64 > u64::from(u32::MAX)
    }

    /// The transmit timestamp of request `seq` (as it goes on the wire, big-endian).
    pub fn transmit_bytes(&self, seq: u64) -> [u8; 8] {
        client::numbered_transmit(self.nonce, seq as u32).to_be_bytes()
    }

    /// Opens the next batch of [`BATCH`] requests, sent at `sent_ns` (engine clock) and
    /// `sent_ntp` (T1). Returns its first sequence number. Call [`sent`](Self::sent) once it left.
    pub fn start_batch(&mut self, sent_ns: u64, sent_ntp: NtpTimestamp) -> u64 {
        let base = self.next_seq;
        let batch = base / BATCH as u64;
        self.next_seq += BATCH as u64;
        self.ring[batch as usize % RING_BATCHES] = SendRecord { batch, sent_ns, sent_ntp, seen: 0 };
        base
    }

    /// `n` requests of the batch just started left; the rest count as send errors.
    pub fn sent(&mut self, n: usize) {
        self.counts.sent += n as u64;
        self.counts.send_errors += BATCH.saturating_sub(n) as u64;
    }

    /// Every request sent has been answered.
    pub fn all_answered(&self) -> bool {
        self.counts.answered >= self.counts.sent
    }

    /// Counts one reply (its NTP payload, or why it could not be read) received at `now_ns`
    /// (engine clock) and `now_ntp` (T4).
    pub fn reply(&mut self, payload: Result<&[u8], Invalid>, now_ns: u64, now_ntp: NtpTimestamp) {
        self.reply_to(payload, now_ns, now_ntp, |_| None);
    }

    /// As [`reply`](Self::reply), for an interleaved reply (`load --interleaved`): its T3 is the
    /// transmit time of the reply before, earlier than its T2, so only T2's window is checked
    /// and no turnaround is recorded.
    pub fn reply_interleaved(&mut self, payload: &[u8], now_ns: u64, now_ntp: NtpTimestamp) {
        self.interleaved = true;
        self.reply(Ok(payload), now_ns, now_ntp);
        self.interleaved = false;
    }

    /// For requests made elsewhere (the AF_XDP engine's in-kernel injector): the requests up to
    /// `next_seq` have been made. Their batches are opened lazily, when a reply names one, with
    /// the send time `sent_at` gives for it.
    pub fn made_up_to(&mut self, next_seq: u64) {
        self.next_seq = self.next_seq.max(next_seq);
    }

    /// `n` requests made elsewhere were sent in all.
    pub fn made(&mut self, n: u64) {
        self.counts.sent = n;
    }

    /// As [`reply`](Self::reply), for requests made elsewhere: `sent_at(batch)` is the batch's send
    /// time (engine clock, and as T1), or None once it is no longer known (the reply is then late).
    pub fn reply_made(
        &mut self,
        payload: Result<&[u8], Invalid>,
        now_ns: u64,
        now_ntp: NtpTimestamp,
        sent_at: impl FnOnce(u64) -> Option<(u64, NtpTimestamp)>,
    ) {
        self.reply_to(payload, now_ns, now_ntp, sent_at);
    }

    #[inline]
    fn reply_to(
        &mut self,
        payload: Result<&[u8], Invalid>,
        now_ns: u64,
        now_ntp: NtpTimestamp,
        sent_at: impl FnOnce(u64) -> Option<(u64, NtpTimestamp)>,
    ) {
        let class = payload.and_then(|p| self.classify(p, now_ns, now_ntp, sent_at));
        if class == Err(Invalid::Origin) && payload.is_ok_and(|p| self.is_earlier_step(p)) {
            self.counts.stale += 1;
            return;
        }
        self.counts.received += 1;
        match class {
            Ok(ReplyClass::Served) => self.counts.valid += 1,
            Ok(ReplyClass::Kod(code)) => self.counts.count_kod(code),
            Ok(ReplyClass::Unsynchronized) => self.counts.unsynced += 1,
            Err(why) => self.counts.count_invalid(why),
        }
    }

    /// The reply's origin carries the nonce of an earlier step of this ramp.
    fn is_earlier_step(&self, payload: &[u8]) -> bool {
        let Some(nonce) = client::origin_nonce(payload) else { return false };
        let back = self.nonce.wrapping_sub(nonce);
        back != 0 && back % 2 == 0 && back <= self.nonce.wrapping_sub(self.first_nonce)
    }

    fn classify(
        &mut self,
        payload: &[u8],
        now_ns: u64,
        now_ntp: NtpTimestamp,
        sent_at: impl FnOnce(u64) -> Option<(u64, NtpTimestamp)>,
    ) -> Result<ReplyClass, Invalid> {
        let r = client::check_numbered_reply(payload, self.nonce)?;
        let seq = u64::from(r.seq);
        if seq >= self.next_seq {
            return Err(Invalid::Origin);
        }
        let batch = seq / BATCH as u64;
        let record = &mut self.ring[batch as usize % RING_BATCHES];
        if record.batch != batch {
            // A batch made elsewhere is opened by its first reply (never over a newer one).
            match sent_at(batch) {
                Some((sent_ns, sent_ntp)) if record.batch == u64::MAX || record.batch < batch => {
                    *record = SendRecord { batch, sent_ns, sent_ntp, seen: 0 };
                }
                _ => return Err(Invalid::Late),
            }
        }
        let bit = 1u64 << (seq % BATCH as u64);
        if record.seen & bit != 0 {
            return Err(Invalid::Duplicate);
        }
        record.seen |= bit;
        self.counts.answered += 1;
        self.rtt_ns.saturating_record(now_ns.saturating_sub(record.sent_ns).max(1));
        if r.class == ReplyClass::Served && self.interleaved {
            Timestamps { t1: record.sent_ntp, t2: r.receive, t3: r.receive, t4: now_ntp }.check_order(r.precision)?;
        } else if r.class == ReplyClass::Served {
            let exchange = Timestamps { t1: record.sent_ntp, t2: r.receive, t3: r.transmit, t4: now_ntp };
            let turnaround = exchange.check_order(r.precision)?;
            self.turnaround_ns.saturating_record(turnaround.to_nanos().max(1) as u64);
        }
        Ok(r.class)
    }

    /// The thread's outcome (the server's socket drops are left to the caller).
    pub fn finish(self, send_elapsed: Duration, client_socket_drops: u64) -> LoadOutcome {
        LoadOutcome {
            counts: self.counts,
            send_elapsed,
            server_socket_drops: None,
            client_socket_drops,
            rtt_ns: self.rtt_ns,
            turnaround_ns: self.turnaround_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use stratum_proto::{NtpDuration, NtpMode, NtpPacket, RefId};

    use super::*;

    /// A stratum 2 server's answer to request `seq` of `book`: our request with the server's
    /// fields filled in.
    fn served(book: &SendBook, seq: u64, t2: NtpTimestamp, t3: NtpTimestamp) -> [u8; HEADER_LEN] {
        let mut p = NtpPacket::parse(&REQUEST).expect("a whole header");
        p.mode = NtpMode::Server;
        p.stratum = 2;
        p.ref_id = RefId::from_ipv4([192, 0, 2, 1].into());
        p.origin_timestamp = NtpTimestamp::from_be_bytes(book.transmit_bytes(seq));
        (p.reference_timestamp, p.receive_timestamp, p.transmit_timestamp) = (t2, t2, t3);
        p.to_bytes()
    }

    #[test]
    fn replies_are_matched_counted_once_and_timed() {
        let mut book = SendBook::with_nonce(0x1234_5679);
        assert_eq!(REQUEST.len(), HEADER_LEN);
        let t1 = NtpTimestamp::from_parts(4_000_000_000, 0);
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        assert_eq!(book.start_batch(1_000, t1), 0);
        book.sent(60);
        assert_eq!((book.counts.sent, book.counts.send_errors, book.next_seq()), (60, 4, 64));
        let ok = served(&book, 5, t1.add(us(10)), t1.add(us(12)));
        book.reply(Ok(&ok), 31_000, t1.add(us(30)));
        book.reply(Ok(&ok), 32_000, t1.add(us(31)));
        // Not sent yet, a foreign nonce, a broken window, a short one.
        book.reply(Ok(&served(&book, 64, t1, t1)), 33_000, t1.add(us(31)));
        book.reply(Ok(&served(&SendBook::with_nonce(7), 6, t1, t1)), 33_000, t1.add(us(31)));
        book.reply(Ok(&served(&book, 7, t1.add(us(-5)), t1)), 33_000, t1.add(us(31)));
        book.reply(Err(Invalid::Length), 33_000, t1.add(us(31)));
        let c = book.counts;
        // The T2-window reply still answers its request (and has an RTT); the duplicate does not.
        assert_eq!((c.received, c.answered, c.valid, c.invalid), (6, 2, 1, 5));
        assert_eq!((c.duplicate, c.invalid_origin, c.invalid_t2_window, c.invalid_length), (1, 2, 1, 1));
        assert!(!book.all_answered());
        let o = book.finish(Duration::from_secs(1), 0);
        assert_eq!((o.rtt_ns.len(), o.turnaround_ns.len()), (2, 1));
        assert!(o.rtt_ns.min().abs_diff(30_000) <= 30 && o.rtt_ns.max().abs_diff(32_000) <= 32, "{:?}", o.rtt_ns);
    }

    #[test]
    fn replies_to_earlier_steps_of_the_ramp_are_stale_not_invalid() {
        let first = SendBook::with_nonce(0xffff_fffd);
        let second = SendBook::after(first.first_nonce(), first.nonce());
        let mut third = SendBook::after(second.first_nonce(), second.nonce());
        // The nonces go on by two, across the wrap, and stay odd.
        assert_eq!((second.nonce(), third.nonce(), third.first_nonce()), (0xffff_ffff, 1, 0xffff_fffd));
        let t1 = NtpTimestamp::from_parts(4_000_000_000, 0);
        assert_eq!(third.start_batch(1_000, t1), 0);
        third.sent(64);
        let late = |book: &SendBook| served(book, 3, t1, t1);
        third.reply(Ok(&late(&first)), 2_000, t1);
        third.reply(Ok(&late(&second)), 2_000, t1);
        // A nonce no step of this ramp had (the next one, a foreign one) is still invalid.
        let next = SendBook::after(third.first_nonce(), third.nonce());
        third.reply(Ok(&late(&next)), 2_000, t1);
        third.reply(Ok(&late(&SendBook::with_nonce(0x1234_5679))), 2_000, t1);
        let c = third.counts;
        assert_eq!((c.stale, c.received, c.invalid, c.invalid_origin, c.answered), (2, 2, 2, 2, 0));
        // A first step has no earlier one: its own nonce's neighbours are foreign.
        let mut alone = SendBook::with_nonce(0x11);
        alone.start_batch(1_000, t1);
        alone.sent(64);
        alone.reply(Ok(&served(&SendBook::with_nonce(0xf), 3, t1, t1)), 2_000, t1);
        assert_eq!((alone.counts.stale, alone.counts.invalid_origin), (0, 1));
        assert_eq!(client::origin_nonce(&late(&first)), Some(0xffff_fffd));
        assert_eq!(client::origin_nonce(&[0; 47]), None);
    }

    #[test]
    fn an_interleaved_reply_may_carry_a_t3_before_its_t2() {
        let mut book = SendBook::with_nonce(0x99);
        let t1 = NtpTimestamp::from_parts(4_000_000_000, 0);
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        book.start_batch(1_000, t1);
        book.sent(64);
        // T3 = the previous reply's transmit time, before this request left.
        let early_t3 = |seq| served(&book, seq, t1.add(us(10)), t1.add(us(-500)));
        let (a, b) = (early_t3(1), early_t3(2));
        book.reply_interleaved(&a, 21_000, t1.add(us(20)));
        book.reply(Ok(&b), 21_000, t1.add(us(20)));
        // T2's window still holds for it.
        book.reply_interleaved(&served(&book, 3, t1.add(us(-5)), t1), 21_000, t1.add(us(20)));
        let c = book.counts;
        assert_eq!((c.valid, c.invalid_t3_window, c.invalid_t2_window), (1, 1, 1));
        assert_eq!(book.finish(Duration::from_secs(1), 0).turnaround_ns.len(), 0);
    }

    #[test]
    fn pacing_is_exact_and_does_not_drift() {
        let p = Pacer::new(1_000_000);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1), Duration::from_nanos(64_000));
        // One hour at 1 M/s: still exact to the nanosecond.
        let k = 3_600 * 1_000_000 / 64;
        assert_eq!(p.due(k), Duration::from_secs(3_600));
        // 3 requests/s: 64 requests every 21.333... s, rounded down, never accumulating error.
        let slow = Pacer::new(3);
        assert_eq!(slow.due(3), Duration::from_secs(64));
        assert_eq!(slow.due(1), Duration::from_nanos(21_333_333_333));
        assert_eq!(p.due_by(Duration::ZERO), 1);
        assert_eq!(p.due_by(Duration::from_nanos(63_999)), 1);
        assert_eq!(p.due_by(Duration::from_nanos(64_000)), 2);
        assert_eq!(p.due_by(Duration::from_secs(1)), 1_000_000 / 64 + 1);
        for k in [0u64, 1, 7, 1000, 123_457] {
            assert_eq!(p.due_by(p.due(k)), k + 1, "batch {k} is due exactly at its time");
        }
        let fast = Pacer::new(0);
        assert_eq!((fast.due(9), fast.due_by(Duration::ZERO)), (Duration::ZERO, u64::MAX));
    }

    #[test]
    fn batches_made_elsewhere_open_with_their_first_reply() {
        let mut book = SendBook::with_nonce(0x55);
        let t1 = NtpTimestamp::from_parts(4_000_000_000, 0);
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        let ok = |seq| served(&book, seq, t1.add(us(10)), t1.add(us(12)));
        let (first, second, unmade) = (ok(3), ok(70), ok(200));
        book.made_up_to(128);
        let known = |batch: u64| (batch < 2).then_some((1_000 + batch * 100, t1));
        book.reply_made(Ok(&first), 21_000, t1.add(us(20)), known);
        book.reply_made(Ok(&first), 21_000, t1.add(us(20)), known);
        book.reply_made(Ok(&second), 31_100, t1.add(us(30)), known);
        book.reply_made(Ok(&unmade), 31_100, t1.add(us(30)), known);
        // A send time no longer known: late.
        book.made_up_to(64 * 3);
        book.reply_made(Ok(&served(&book, 130, t1, t1)), 40_000, t1.add(us(40)), known);
        book.made(190);
        let c = book.counts;
        assert_eq!((c.sent, c.answered, c.valid, c.duplicate, c.invalid_origin, c.invalid_late), (190, 2, 2, 1, 1, 1));
        let o = book.finish(Duration::from_secs(1), 0);
        assert!(o.rtt_ns.min().abs_diff(20_000) <= 20 && o.rtt_ns.max().abs_diff(30_000) <= 30, "{:?}", o.rtt_ns);
    }

    #[test]
    fn an_old_batch_is_late_once_its_record_is_reused() {
        let mut book = SendBook::with_nonce(3);
        let t = NtpTimestamp::from_parts(1, 0);
        let first = served(&book, 0, t, t);
        for _ in 0..=RING_BATCHES {
            book.start_batch(0, t);
            book.sent(BATCH);
        }
        book.reply(Ok(&first), 1, t);
        assert_eq!(book.counts.invalid_late, 1);
        assert!(!book.exhausted());
    }
}
