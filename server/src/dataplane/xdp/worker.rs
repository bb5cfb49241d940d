//! One xdp worker: its AF_XDP socket's rings, pinned to a core. It takes a batch of frames off the
//! RX ring, prefetches what answering them reads ([`prepare_batch`]: headers, rate-limiter sets),
//! answers each in place in its UMEM frame ([`answer_frame`]), puts the replies on the TX ring and
//! everything else back on the fill ring, and wakes the kernel once per `send-slice` replies (so a
//! basic reply's T3 is at most a slice's sends old when copy mode sends it). Interleaved replies'
//! transmit stamps come from the TX metadata at completion (`recycle`), or without it
//! from the clock read before their slice's wakeup.
//!
//! The hot path: no allocation, no lock, no log line; one clock read per batch for the rate
//! limiter, one per reply for T3.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use stratum_proto::frame::{parse_frame, write_reply, FrameVerdict};
use stratum_proto::{DropReason, NtpTimestamp, ServerSnapshot, Verdict};
use stratum_xdp::meta::{RxMetadata, META_LEN};
use stratum_xdp::xsk::{BatchOutcome, ReplyScratch, Umem, XskSocket, EMPTY_DESC, MAX_BATCH, TX_WAIT_SLEEP_MS};

use crate::dataplane::admission::WorkerPolicy;
use crate::dataplane::answer::answer;
use crate::dataplane::interleave::{reply_key, TxStampMode, WorkerInterleave};
use crate::dataplane::prefetch::prefetch;
use crate::dataplane::stats::WorkerCounters;
use crate::time::core::SnapshotReader;
use stratum_host::clock;

/// Empty polls of the RX ring between two looks at the clock while spinning.
const SPINS_PER_CLOCK_READ: u32 = 64;
/// Longest sleep, so shutdown is noticed promptly.
const SLEEP_MS: i32 = 20;

pub(super) struct Worker {
    pub(super) xsk: XskSocket,
    pub(super) port: u16,
    pub(super) batch: usize,
    /// Replies sent per wakeup (`[server] send-slice`, 1 to `batch`).
    pub(super) send_slice: usize,
    /// How long to spin on an empty RX ring before sleeping in poll(2).
    pub(super) idle_spin: std::time::Duration,
    pub(super) reader: SnapshotReader,
    pub(super) counters: Arc<WorkerCounters>,
    pub(super) shutdown: Arc<AtomicBool>,
    /// This worker's own copy of `[auth]`'s keys.
    pub(super) keys: crate::auth::WorkerAuth,
    /// Interleaved mode: this worker's side of the shared store.
    pub(super) interleave: WorkerInterleave,
    /// Where interleaved replies' transmit times come from.
    pub(super) tx_stamps: TxStampMode,
    /// Per UMEM frame: its reply asked for a stamp in its TX metadata (read at completion).
    pub(super) stamp_wanted: Vec<bool>,
    /// Where mode 6 from a management source goes after `respond()` dropped it.
    pub(super) ntpq: Option<crate::mgmt::ntpq::NtpqHandoff>,
}

impl Worker {
    pub(super) fn run(mut self, mut admission: WorkerPolicy) {
        let mut rx = [EMPTY_DESC; MAX_BATCH];
        self.stamp_wanted = vec![false; self.xsk.umem.frame_count() as usize];
        let mut scratch = ReplyScratch::default();
        let mut rng = StdRng::from_entropy();
        // Spinning on an empty ring for `idle_spin` keeps a busy queue's latency low (no wakeup
        // from poll(2) between bursts); sleeping after it keeps an idle queue off the CPU.
        let mut spins = 0u32;
        let mut idle_since: Option<std::time::Instant> = None;
        while !self.shutdown.load(Ordering::Relaxed) {
            self.recycle(&mut scratch);
            let n = self.xsk.rx.pop(&mut rx[..self.batch]);
            if n == 0 {
                // Replies a busy device left on the TX ring go out now, not with the next request
                // (measured on veth: a burst's last ~1000 replies otherwise left 0.4 s to 3 s late,
                // one budget per 20 ms sleep).
                let tx_waiting = self.xsk.drive_tx();
                spins += 1;
                if spins % SPINS_PER_CLOCK_READ == 0 || self.idle_spin.is_zero() {
                    let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= self.idle_spin {
                        let sleep = if tx_waiting { TX_WAIT_SLEEP_MS } else { SLEEP_MS };
                        if self.xsk.wait_readable(sleep).is_err() {
                            self.counters.add_receive_error();
                        }
                        idle_since = None;
                    }
                }
                continue;
            }
            spins = 0;
            idle_since = None;
            self.counters.add_received(n as u64);
            let outcome = self.answer_batch(&rx[..n], &mut scratch, &mut rng, &mut admission);
            // TX ring full: those replies are lost (counted); their frames went back to the fill ring.
            if outcome.tx_ring_full > 0 {
                self.counters.add_send_failed(outcome.tx_ring_full as u64);
            }
        }
    }

    /// Answers every frame of the batch in place and sends the replies.
    fn answer_batch(
        &mut self,
        rx: &[libc::xdp_desc],
        scratch: &mut ReplyScratch,
        rng: &mut StdRng,
        admission: &mut WorkerPolicy,
    ) -> BatchOutcome {
        let snapshot = *self.reader.refresh();
        self.interleave.watch_steps(&snapshot);
        admission.set_time(clock::monotonic());
        prepare_batch(&self.xsk.umem, rx, admission);
        let (port, counters, keys, interleave) = (self.port, &self.counters, &mut self.keys, &mut self.interleave);
        let ntpq = self.ntpq.as_ref();
        let tx_stamps = self.tx_stamps;
        // Read at most once per batch, and only for a frame without a stamp from the program.
        let mut fallback_rx = None;
        // Interleaved clients' replies (their index among this batch's replies, their address)
        // that get the send-clock stamp: the clock read right before the wakeup that sends their
        // slice (no TX metadata area).
        let mut software = [(0usize, 0u64); MAX_BATCH];
        let (mut n_software, mut replies) = (0, 0);
        // Set by the answer closure when a reply of the slice wants the send clock, read and
        // cleared by the one before the send (both borrow it).
        let wants_stamp = std::cell::Cell::new(false);
        let mut send_clock = [None; MAX_BATCH];
        let slice = self.send_slice;
        let outcome = self.xsk.answer_in_place_with(
            rx,
            scratch,
            slice,
            |umem, desc| {
                let meta = umem.rx_metadata(desc.addr).and_then(|m| RxMetadata::decode(&m));
                let rx_time = match meta {
                    Some(m) => tai_to_utc(m.rx_time_ns, &snapshot),
                    None => match *fallback_rx.get_or_insert_with(clock::try_now) {
                        Some(t) => t,
                        // No stamp from the program and no clock: no true receive time to give.
                        None => {
                            counters.count(&Verdict::Drop(DropReason::Clock));
                            return None;
                        }
                    },
                };
                let len = match umem.data_mut(desc.addr, desc.len) {
                    Some(frame) => {
                        answer_frame(frame, port, rx_time, &snapshot, rng, admission, keys, interleave, counters, ntpq)?
                    }
                    None => {
                        // A descriptor outside its frame: never from a sane kernel, counted all the same.
                        counters.count(&Verdict::Drop(DropReason::Malformed));
                        return None;
                    }
                };
                let mut options = 0;
                if interleave.saved().is_some() {
                    match tx_stamps {
                        TxStampMode::Software | TxStampMode::Hardware => {
                            if umem.request_tx_timestamp(desc.addr) {
                                options = libc::XDP_TX_METADATA;
                            }
                        }
                        TxStampMode::Off => {}
                        TxStampMode::SendClock => {
                            software[n_software] = (replies, desc.addr);
                            n_software += 1;
                            wants_stamp.set(true);
                        }
                    }
                }
                replies += 1;
                Some((len, options))
            },
            |k| {
                if wants_stamp.replace(false) {
                    send_clock[k] = clock::try_now();
                }
            },
        );
        // Copy mode sends inside the wakeup, right after the clock read before it: that reading
        // is the send-clock stamp of the slice's replies (early by a syscall entry and, for the
        // k-th frame of the slice, k skb copies; a reading after the call was 10-20 us late on
        // veth, as it includes handing the frames to the peer). Only for slices the device took
        // whole in their own wakeup, and none when the TX ring was full (replies lost between).
        if n_software > 0 {
            for &(index, addr) in &software[..n_software] {
                let Some(now) = send_clock_stamp(index, slice, &send_clock, &outcome) else { continue };
                let umem = &self.xsk.umem;
                if let Some(key) = umem.data(addr, reply_bytes(umem, addr)).and_then(reply_key) {
                    self.interleave.tx_stamp(key, now, &snapshot);
                }
            }
        }
        // TX metadata: the frames that asked for a stamp, read at their completion.
        let asked = if tx_stamps.from_tx_metadata() { scratch.sent() } else { &[] };
        for desc in asked {
            if desc.options & libc::XDP_TX_METADATA != 0 {
                if let Some(w) = self.stamp_wanted.get_mut(frame_index(&self.xsk.umem, desc.addr)) {
                    *w = true;
                }
            }
        }
        outcome
    }

    /// Sent frames back to the fill ring; with TX metadata stamps, each asked-for stamp into the
    /// store.
    fn recycle(&mut self, scratch: &mut ReplyScratch) {
        if !self.tx_stamps.from_tx_metadata() {
            self.xsk.recycle_completions(scratch);
            return;
        }
        let (wanted, interleave, reader) = (&mut self.stamp_wanted, &self.interleave, &mut self.reader);
        let mut snapshot = None;
        self.xsk.recycle_completions_with(scratch, |umem, addr| {
            let Some(w) = wanted.get_mut(frame_index(umem, addr)).filter(|w| **w) else { return };
            *w = false;
            let snapshot: &ServerSnapshot = snapshot.get_or_insert_with(|| *reader.refresh());
            let key = umem.data(addr, reply_bytes(umem, addr)).and_then(reply_key);
            if let (Some(key), Some(tai_ns)) = (key, umem.tx_timestamp(addr)) {
                interleave.tx_stamp(key, tai_to_utc(tai_ns, snapshot), snapshot);
            }
        });
    }
}

/// The send-clock stamp of the batch's `index`-th reply: the clock read before the wakeup of its
/// slice (`send_clock[k]`, replies `k * slice` on), if that slice left whole within its own
/// wakeup and no reply of the batch was lost to a full TX ring (which shifts the slices).
fn send_clock_stamp(
    index: usize,
    slice: usize,
    send_clock: &[Option<NtpTimestamp>],
    outcome: &BatchOutcome,
) -> Option<NtpTimestamp> {
    let k = index / slice.max(1);
    if outcome.tx_ring_full > 0 || k >= outcome.drained_slices {
        return None;
    }
    *send_clock.get(k)?
}

/// The frame an address lies in, as an index (for per-frame state).
fn frame_index(umem: &Umem, addr: u64) -> usize {
    (umem.frame_of(addr) / u64::from(umem.frame_size())) as usize
}

/// How much of a sent reply frame to read for its key: the headers up to the NTP header's end,
/// within the frame.
fn reply_bytes(umem: &Umem, addr: u64) -> u32 {
    let rest = umem.frame_of(addr) + u64::from(umem.frame_size()) - addr;
    rest.min(HEADER_BYTES as u64) as u32
}

/// The first passes over a batch, before any frame is answered, so that what answering reads is
/// on its way for all of them at once instead of one miss after another: each frame's metadata
/// and headers (a zero-copy NIC leaves them in memory or the last-level cache), then each
/// client's rate-limiter set ([`WorkerPolicy::prepare`], keyed by the source address read from
/// the frame's header: a hint only, parse_frame decides).
fn prepare_batch(umem: &Umem, rx: &[libc::xdp_desc], admission: &mut WorkerPolicy) {
    for desc in rx {
        if let Some(head) = umem.data(desc.addr.saturating_sub(META_LEN as u64), META_LEN as u32) {
            prefetch(head.as_ptr(), META_LEN + (desc.len as usize).min(HEADER_BYTES));
        }
    }
    if !admission.prepares() {
        return;
    }
    for desc in rx {
        if let Some(source) = umem.data(desc.addr, desc.len).and_then(peek_source) {
            admission.prepare(source);
        }
    }
}

/// Bytes of a request frame the answer reads first: Ethernet, two VLAN tags, IPv6, UDP and the
/// NTP header.
const HEADER_BYTES: usize = 14 + 8 + 40 + 8 + 48;

/// The source address of an Ethernet frame (up to two VLAN tags) carrying IPv4 or IPv6, read
/// without the checks of `parse_frame` (which still decides): for prefetching only.
fn peek_source(frame: &[u8]) -> Option<IpAddr> {
    let ethertype = |at: usize| Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?));
    let mut at = 12;
    for _ in 0..2 {
        if !matches!(ethertype(at)?, 0x8100 | 0x88A8) {
            break;
        }
        at += 4;
    }
    let l3 = at + 2;
    match ethertype(at)? {
        0x0800 => Some(IpAddr::from(<[u8; 4]>::try_from(frame.get(l3 + 12..l3 + 16)?).ok()?)),
        0x86DD => Some(IpAddr::from(<[u8; 16]>::try_from(frame.get(l3 + 8..l3 + 24)?).ok()?)),
        _ => None,
    }
}

/// One frame: parse, decide, and rewrite into the reply in place. Returns the reply frame's
/// length, or None when nothing is sent (the verdict is counted either way).
#[allow(clippy::too_many_arguments)]
fn answer_frame(
    frame: &mut [u8],
    port: u16,
    rx_time: NtpTimestamp,
    snapshot: &ServerSnapshot,
    rng: &mut StdRng,
    admission: &mut WorkerPolicy,
    keys: &mut crate::auth::WorkerAuth,
    interleave: &mut WorkerInterleave,
    counters: &WorkerCounters,
    ntpq: Option<&crate::mgmt::ntpq::NtpqHandoff>,
) -> Option<usize> {
    let parsed = match parse_frame(frame, port) {
        FrameVerdict::Ntp(parsed) => parsed,
        // The program steered it here, so it was for our port; whatever proto finds wrong with it
        // (a corrupt IPv4 header, say) is a counted drop: AF_XDP cannot hand a frame back.
        FrameVerdict::Pass => {
            counters.count(&Verdict::Drop(DropReason::Malformed));
            return None;
        }
        FrameVerdict::Drop(reason) => {
            counters.count(&Verdict::Drop(reason));
            return None;
        }
    };
    let payload = &mut frame[parsed.payload()..parsed.payload() + parsed.payload_len];
    let verdict =
        answer(payload, parsed.source, rx_time, snapshot, admission, keys, interleave, rng, counters, clock::try_now);
    counters.count(&verdict);
    // Mode 6 never gets a reply here; an allowed source's goes to the ntpq thread, which answers
    // from a kernel socket on our port (IPv4 socket 0, IPv6 socket 1).
    // Our address is read from the frame's header only here (before write_reply swaps it).
    if let (Verdict::Drop(DropReason::Control), Some(ntpq)) = (verdict, ntpq) {
        if let Some(us) = parsed.destination(frame).map(|d| d.ip()) {
            let to = crate::dataplane::socket::cmsg::PacketInfo { destination: us, local: us, interface: 0 };
            let payload = &frame[parsed.payload()..parsed.payload() + parsed.payload_len];
            ntpq.offer(payload, parsed.source, Some(to), usize::from(us.is_ipv6()));
        }
    }
    let len = verdict.reply_len()?;
    let total = write_reply(frame, &parsed, len);
    if total.is_none() {
        counters.add_send_failed(1);
    }
    total
}

/// A CLOCK_TAI stamp in nanoseconds, as UTC in NTP form (TAI - UTC from the snapshot).
fn tai_to_utc(tai_ns: u64, snapshot: &ServerSnapshot) -> NtpTimestamp {
    let unix_ns = tai_ns as i64 - i64::from(snapshot.tai_offset) * 1_000_000_000;
    NtpTimestamp::from_unix(unix_ns.div_euclid(1_000_000_000), unix_ns.rem_euclid(1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeked_sources_are_parse_frames_sources() {
        let v4 = [
            &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 7, 0x08, 0][..],
            &[0x45, 0, 0, 76, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 2, 192, 0, 2, 1][..],
        ]
        .concat();
        assert_eq!(peek_source(&v4), Some("10.0.1.2".parse().unwrap()));
        let mut v6 = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xDD, 0x60, 0, 0, 0, 0, 56, 17, 64];
        v6.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0; 16]);
        assert_eq!(peek_source(&v6), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(peek_source(&v6[..30]), None, "short: no address, no panic");
        assert_eq!(peek_source(&[0x08, 0x06]), None);
        let mut arp = v4.clone();
        arp[16..18].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(peek_source(&arp), None);
    }

    #[test]
    fn send_clock_stamps_are_their_slices_and_only_for_drained_slices() {
        let t = |n: u32| Some(NtpTimestamp::from_parts(0xE000_0000, n));
        let clock = [t(0), None, t(2), t(3)];
        let outcome = BatchOutcome { sent: 14, not_answered: 0, tx_ring_full: 0, drained_slices: 3 };
        let got: Vec<_> = (0..14).map(|i| send_clock_stamp(i, 4, &clock, &outcome)).collect();
        // Replies 0-3: slice 0; 4-7: slice 1 (no clock read: none of its replies wanted one);
        // 8-11: slice 2; 12-13: slice 3, which its own wakeup did not drain.
        let want: Vec<_> = [t(0); 4].into_iter().chain([None; 4]).chain([t(2); 4]).chain([None; 2]).collect();
        assert_eq!(got, want);
        let lost = BatchOutcome { tx_ring_full: 1, ..outcome };
        assert_eq!(send_clock_stamp(0, 4, &clock, &lost), None, "a full TX ring shifts the slices");
        let one = BatchOutcome { drained_slices: 4, ..outcome };
        assert_eq!(send_clock_stamp(3, 1, &clock, &one), t(3), "slices of one");
        assert_eq!(send_clock_stamp(3, 0, &clock, &one), t(3), "0 means 1");
    }

    #[test]
    fn tai_stamps_convert_with_the_snapshot_offset() {
        let mut s = ServerSnapshot::unsynchronized(-20);
        let tai_ns = 1_700_000_037_250_000_000u64;
        s.tai_offset = 37;
        assert_eq!(tai_to_utc(tai_ns, &s), NtpTimestamp::from_unix(1_700_000_000, 250_000_000));
        s.tai_offset = 0;
        assert_eq!(tai_to_utc(tai_ns, &s), NtpTimestamp::from_unix(1_700_000_037, 250_000_000));
    }
}
