//! The cycle of a responder that answers every request in the frame it came in: stratumd's xdp
//! worker and stratum-bench's do-nothing reflector both run it, with different answers.
//!
//! Per batch: the caller takes frames off the RX ring; [`XskSocket::answer_in_place`] asks the
//! caller's `answer` for each, puts the replies on the TX ring, has the kernel send everything
//! waiting there ([`XskSocket::drive_tx`]; [`XskSocket::answer_in_place_with`] does so every
//! `slice` replies), and gives every other frame back to the fill ring.
//! [`XskSocket::recycle_completions`] returns sent frames to the fill ring. A responder with
//! nothing to read calls `drive_tx` too: replies the device was too busy for wait on the TX ring,
//! and nothing else sends them.

use super::{BindMode, Umem, XskSocket};

/// Most frames one [`XskSocket::answer_in_place`] call takes.
pub const MAX_BATCH: usize = 256;
/// How long a responder sleeps while [`XskSocket::drive_tx`] says replies still wait for a busy
/// device: each wakeup sends more of them, so not the long sleep of an idle queue.
pub const TX_WAIT_SLEEP_MS: i32 = 1;

/// A zeroed ring descriptor, to fill descriptor arrays with before a ring operation writes them.
pub const EMPTY_DESC: libc::xdp_desc = libc::xdp_desc { addr: 0, len: 0, options: 0 };

/// A responder's working space for one batch, made once per worker (nothing allocates per batch).
#[derive(Debug)]
pub struct ReplyScratch {
    tx: [libc::xdp_desc; MAX_BATCH],
    frames: [u64; MAX_BATCH],
    /// How many of `tx` the last batch put on the TX ring.
    sent: usize,
}

impl Default for ReplyScratch {
    fn default() -> Self {
        Self { tx: [EMPTY_DESC; MAX_BATCH], frames: [0; MAX_BATCH], sent: 0 }
    }
}

impl ReplyScratch {
    /// The descriptors the last [`XskSocket::answer_in_place`] put on the TX ring (their frames
    /// hold the replies until they complete).
    pub fn sent(&self) -> &[libc::xdp_desc] {
        &self.tx[..self.sent]
    }
}

/// What became of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Replies put on the TX ring.
    pub sent: usize,
    /// Frames `answer` gave no reply for (back on the fill ring).
    pub not_answered: usize,
    /// Replies lost because the TX ring was full (their frames back on the fill ring).
    pub tx_ring_full: usize,
    /// Slices (see [`XskSocket::answer_in_place_with`]), from the first, that the device took
    /// whole within their own wakeup: a clock read before such a slice's wakeup precedes its
    /// replies' sending. A later slice's wakeup also sent what an earlier one left waiting.
    pub drained_slices: usize,
}

impl XskSocket {
    /// Answers `rx` (at most [`MAX_BATCH`] descriptors just taken off the RX ring) in place:
    /// `answer` gets the UMEM and each descriptor and returns the reply's length in the same
    /// frame, or None to send nothing. The whole batch leaves with one wakeup.
    pub fn answer_in_place(
        &mut self,
        rx: &[libc::xdp_desc],
        scratch: &mut ReplyScratch,
        mut answer: impl FnMut(&mut Umem, &libc::xdp_desc) -> Option<usize>,
    ) -> BatchOutcome {
        self.answer_in_place_with(rx, scratch, MAX_BATCH, |umem, desc| answer(umem, desc).map(|len| (len, 0)), |_| {})
    }

    /// As [`answer_in_place`](Self::answer_in_place), with the TX descriptor's options from
    /// `answer` too (`XDP_TX_METADATA` for a reply whose transmit timestamp it asked for with
    /// [`Umem::request_tx_timestamp`]), sending every `slice` replies as soon as they are answered
    /// (so a reply's T3, read as it is answered, waits behind at most `slice` answers and sends;
    /// in copy mode the kernel sends inside the wakeup, one frame after another), and
    /// `before_send` called with the slice's number (0, 1, ...: replies `k * slice` on) right
    /// before the wakeup that sends it (a software transmit stamp's moment). Afterwards
    /// [`ReplyScratch::sent`] lists the replies put on the TX ring, and
    /// [`BatchOutcome::drained_slices`] says how many slices left with their own wakeup.
    pub fn answer_in_place_with(
        &mut self,
        rx: &[libc::xdp_desc],
        scratch: &mut ReplyScratch,
        slice: usize,
        mut answer: impl FnMut(&mut Umem, &libc::xdp_desc) -> Option<(usize, u32)>,
        mut before_send: impl FnMut(usize),
    ) -> BatchOutcome {
        assert!(rx.len() <= MAX_BATCH, "a batch of {} descriptors; at most {MAX_BATCH}", rx.len());
        let slice = slice.max(1);
        let (mut n_tx, mut n_back, mut not_answered, mut lost) = (0, 0, 0, 0);
        // Replies [queued, n_tx) of scratch.tx are answered but not yet on the TX ring.
        let (mut queued, mut slices, mut drained) = (0, 0, 0);
        for (i, desc) in rx.iter().enumerate() {
            match answer(&mut self.umem, desc) {
                Some((len, options)) => {
                    scratch.tx[n_tx] = libc::xdp_desc { addr: desc.addr, len: len as u32, options };
                    n_tx += 1;
                }
                None => {
                    scratch.frames[n_back] = self.umem.frame_of(desc.addr);
                    n_back += 1;
                    not_answered += 1;
                }
            }
            if n_tx - queued < slice && i + 1 < rx.len() || n_tx == queued {
                continue;
            }
            // A slice is complete (or the batch ends): onto the TX ring in place, then sent.
            let pushed = self.tx.push(&scratch.tx[queued..n_tx]);
            if queued + pushed < n_tx {
                // The TX ring is full: these replies are lost, their frames back to the fill ring.
                for d in &scratch.tx[queued + pushed..n_tx] {
                    scratch.frames[n_back] = self.umem.frame_of(d.addr);
                    n_back += 1;
                }
                lost += n_tx - queued - pushed;
                // scratch.tx keeps only what is on the ring, at its front.
                n_tx = queued + pushed;
            }
            if pushed > 0 {
                before_send(slices);
                let waiting = self.drive_tx();
                if !waiting && drained == slices {
                    drained += 1;
                }
            }
            slices += 1;
            queued = n_tx;
        }
        scratch.sent = n_tx;
        self.refill(&scratch.frames[..n_back]);
        // A zero-copy driver that found the fill ring empty stops receiving until woken; a
        // zero-timeout poll is that wakeup. Copy mode never sets the flag.
        if self.fill.needs_wakeup() {
            let _ = self.wait_readable(0);
        }
        BatchOutcome { sent: n_tx, not_answered, tx_ring_full: lost, drained_slices: drained }
    }

    /// Has the kernel send what waits on the TX ring. Copy mode sends only from a syscall, at most
    /// [`tx_budget`](XskSocket::tx_budget) frames each, and a busy device (a full queue, a veth
    /// peer's full ring) takes fewer or none; the frames it left stay on the ring, and nothing
    /// sends them but another call. So: wakeups until the ring is empty or one makes no progress
    /// (the device is busy; the next call goes on). Zero-copy: one wakeup when the driver asks.
    /// True while frames still wait (a responder should then not sleep long).
    pub fn drive_tx(&mut self) -> bool {
        let mut pending = self.tx.pending();
        if pending == 0 {
            return false;
        }
        if self.mode() != BindMode::Copy {
            if self.tx.needs_wakeup() {
                let _ = self.kick_tx();
            }
            return self.tx.pending() > 0;
        }
        loop {
            // A failed wakeup loses nothing: the frames stay on the TX ring.
            let _ = self.kick_tx();
            let left = self.tx.pending();
            if left == 0 || left >= pending {
                return left > 0;
            }
            pending = left;
        }
    }

    /// Frames the kernel has sent come back on the completion ring; they go onto the fill ring
    /// again.
    pub fn recycle_completions(&mut self, scratch: &mut ReplyScratch) {
        self.recycle_completions_with(scratch, |_, _| {});
    }

    /// As [`recycle_completions`](Self::recycle_completions), showing `completed` each sent
    /// frame's descriptor address first (its TX metadata holds the transmit timestamp, its data
    /// the reply), before the frame goes back to the fill ring.
    pub fn recycle_completions_with(&mut self, scratch: &mut ReplyScratch, mut completed: impl FnMut(&Umem, u64)) {
        loop {
            let n = self.completion.pop(&mut scratch.frames);
            if n == 0 {
                return;
            }
            for addr in &mut scratch.frames[..n] {
                completed(&self.umem, *addr);
                *addr = self.umem.frame_of(*addr);
            }
            self.refill(&scratch.frames[..n]);
            if n < MAX_BATCH {
                return;
            }
        }
    }

    /// Frames back to the fill ring, after any that wait in `spare`; those it has no room for
    /// (a fill ring smaller than the UMEM, or one the kernel has not yet published consuming)
    /// wait in `spare`, which has room for every frame, so none leaves circulation.
    pub fn refill(&mut self, frames: &[u64]) {
        self.fill.push_or_keep(frames, &mut self.spare);
    }
}
