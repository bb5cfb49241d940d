//! The interleaved-mode store (RFC 9769, chrony's server side): for each recent reply to an
//! interleaved-capable client, its receive timestamp (the key) and its transmit time, first the
//! daemon's T3 and then, when the kernel or NIC reports it, the true time the reply left.
//!
//! A client in interleaved mode puts the receive timestamp of our previous reply into its next
//! request's origin field; that reply's true transmit time is then sent as the new reply's
//! transmit timestamp ([`crate::server::respond`] decides, this module remembers).
//!
//! Shape: a fixed table of 4-way buckets allocated once, shared by every worker (a client's
//! requests may land on any of them: chronyd opens a new source port for each request, and
//! SO_REUSEPORT spreads ports over workers). Each bucket has a try-lock: an operation that finds
//! it held gives up (a basic reply instead of an interleaved one, a stamp not recorded), so no
//! worker ever waits for another. No allocation after [`InterleavedStore::new`], no clock read.
//!
//! Invalidation: [`InterleavedStore::invalidate`] (a clock step, BAD_INPUTS 44) bumps a
//! generation that every entry carries; entries of an older generation are never used. An entry
//! is used once. A TX stamp that is not 0..1 s after the daemon's T3 is refused (chrony's
//! MAX_TX_DELAY), and the entry keeps the daemon's T3.

use crate::atomic::{AtomicU64, Ordering};
use crate::time::{NtpDuration, NtpTimestamp};

/// Entries per bucket: a new entry evicts the oldest of its bucket only when all are live.
const WAYS: usize = 4;
/// The longest a TX stamp may follow the daemon's T3 and still replace it (chrony: 1 s).
pub const MAX_TX_DELAY: NtpDuration = NtpDuration::from_seconds(1);

/// `meta` word: generation in the high 32 bits, flags below.
const PRECISE: u64 = 1;

#[derive(Debug, Default)]
struct Way {
    /// The reply's receive timestamp (LSB 1, so never 0 for a live entry); 0 = empty.
    key: AtomicU64,
    /// The reply's transmit time in served time (the snapshot's correction applied), unrandomized.
    tx: AtomicU64,
    meta: AtomicU64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// 0 free, 1 held.
    lock: AtomicU64,
    ways: [Way; WAYS],
}

impl Bucket {
    fn try_lock(&self) -> Option<BucketGuard<'_>> {
        self.lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| BucketGuard(self))
    }
}

struct BucketGuard<'a>(&'a Bucket);

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Ordering::Release);
    }
}

/// What [`crate::server::respond::respond_with`] asks of interleaved mode: a seam, like
/// [`crate::server::respond::AdmissionPolicy`] for admission. The server's adapter wraps an
/// [`InterleavedStore`] (and counts); [`BasicOnly`] never interleaves.
pub trait Interleave {
    /// The transmit time (served time, unrandomized) of our earlier reply whose receive
    /// timestamp is `origin`, removing it: each is used once.
    fn take(&mut self, origin: NtpTimestamp) -> Option<NtpTimestamp>;
    /// The reply with receive timestamp `receive` is about to leave; `transmit` is the daemon's
    /// T3 (served time, unrandomized), until a kernel or NIC stamp replaces it.
    fn save(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp);
}

/// Basic mode only: nothing is remembered, nothing interleaved (`interleaved = false`).
#[derive(Clone, Copy, Debug, Default)]
pub struct BasicOnly;

impl Interleave for BasicOnly {
    fn take(&mut self, _: NtpTimestamp) -> Option<NtpTimestamp> {
        None
    }

    fn save(&mut self, _: NtpTimestamp, _: NtpTimestamp) {}
}

/// The stored transmit time of an earlier reply, as [`InterleavedStore::take`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTx {
    /// Served time, unrandomized.
    pub transmit: NtpTimestamp,
    /// True when it came from the kernel or NIC; false: the daemon's own T3 (no stamp arrived).
    pub precise: bool,
}

/// What [`InterleavedStore::save`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Stored in a free, used or outdated way.
    Saved,
    /// Stored over the oldest live entry of its bucket (counted: the table is too small).
    Evicted,
    /// The bucket was busy with another worker; not stored.
    Busy,
}

/// What [`InterleavedStore::update_tx`] did with a kernel or NIC transmit stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated,
    /// The stamp was not 0..[`MAX_TX_DELAY`] after the daemon's T3: refused.
    Late,
    /// No live entry waiting for a stamp (used already, evicted, invalidated, stamped already)
    /// or the bucket was busy.
    NotFound,
}

/// The shared, fixed-size table. See the module documentation.
#[derive(Debug)]
pub struct InterleavedStore {
    buckets: Box<[Bucket]>,
    mask: usize,
    generation: AtomicU64,
}

impl InterleavedStore {
    /// A table with room for at least `entries` replies (rounded up to a power of two, at least
    /// one bucket). Allocates once, here.
    pub fn new(entries: usize) -> Self {
        let buckets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            mask: buckets - 1,
            generation: AtomicU64::new(1),
        }
    }

    /// How many entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Makes every entry stored so far unusable (the served clock stepped).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire) & 0xFFFF_FFFF
    }

    fn bucket(&self, key: u64) -> &Bucket {
        // The key's low bits are the clock's noise and fraction: mixing the halves and one
        // multiply spreads consecutive stamps over the table.
        let h = (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.buckets[(h >> 32) as usize & self.mask]
    }

    /// Remembers that the reply whose receive timestamp is `receive` left at `transmit` (the
    /// daemon's T3, served time, unrandomized). `receive` must have its LSB set (every reply's
    /// has); a key of 0 is never stored.
    pub fn save(&self, receive: NtpTimestamp, transmit: NtpTimestamp) -> SaveOutcome {
        let key = receive.to_bits();
        if key == 0 {
            return SaveOutcome::Busy;
        }
        let generation = self.generation();
        let Some(guard) = self.bucket(key).try_lock() else { return SaveOutcome::Busy };
        let ways = &guard.0.ways;
        let live = |w: &Way| {
            let k = w.key.load(Ordering::Relaxed);
            k != 0 && w.meta.load(Ordering::Relaxed) >> 32 == generation
        };
        // The same key again (a duplicate reply), else a free or dead way, else the oldest.
        let (slot, evicted) = match ways.iter().position(|w| w.key.load(Ordering::Relaxed) == key) {
            Some(i) => (i, false),
            None => match ways.iter().position(|w| !live(w)) {
                Some(i) => (i, false),
                None => {
                    let age = |w: &Way| key.wrapping_sub(w.key.load(Ordering::Relaxed));
                    let oldest = (0..WAYS).max_by_key(|&i| age(&ways[i])).unwrap_or(0);
                    (oldest, true)
                }
            },
        };
        let w = &ways[slot];
        w.key.store(key, Ordering::Relaxed);
        w.tx.store(transmit.to_bits(), Ordering::Relaxed);
        w.meta.store(generation << 32, Ordering::Relaxed);
        drop(guard);
        if evicted {
            SaveOutcome::Evicted
        } else {
            SaveOutcome::Saved
        }
    }

    /// Replaces the stored T3 of the reply with receive timestamp `receive` by `stamp`, the time
    /// the kernel or NIC saw it leave (served time), if it is 0..[`MAX_TX_DELAY`] after it and
    /// no stamp replaced it before.
    pub fn update_tx(&self, receive: NtpTimestamp, stamp: NtpTimestamp) -> UpdateOutcome {
        let key = receive.to_bits();
        let generation = self.generation();
        let Some(guard) = self.bucket(key).try_lock() else { return UpdateOutcome::NotFound };
        let Some(w) = guard.0.ways.iter().find(|w| key != 0 && w.key.load(Ordering::Relaxed) == key) else {
            return UpdateOutcome::NotFound;
        };
        let meta = w.meta.load(Ordering::Relaxed);
        // The first stamp wins: a second one would be judged against the first, not the T3.
        if meta >> 32 != generation || meta & PRECISE != 0 {
            return UpdateOutcome::NotFound;
        }
        let daemon = NtpTimestamp::from_bits(w.tx.load(Ordering::Relaxed));
        let delay = stamp.since(daemon);
        if delay < NtpDuration::ZERO || delay > MAX_TX_DELAY {
            return UpdateOutcome::Late;
        }
        w.tx.store(stamp.to_bits(), Ordering::Relaxed);
        w.meta.store(meta | PRECISE, Ordering::Relaxed);
        UpdateOutcome::Updated
    }

    /// The transmit time of the reply whose receive timestamp was `origin` (a request's origin
    /// field), removing the entry: each is used once. None when unknown, used, of an older
    /// generation, or the bucket is busy.
    pub fn take(&self, origin: NtpTimestamp) -> Option<StoredTx> {
        let key = origin.to_bits();
        if key == 0 {
            return None;
        }
        let generation = self.generation();
        let guard = self.bucket(key).try_lock()?;
        let w = guard.0.ways.iter().find(|w| w.key.load(Ordering::Relaxed) == key)?;
        w.key.store(0, Ordering::Relaxed);
        let meta = w.meta.load(Ordering::Relaxed);
        (meta >> 32 == generation).then(|| StoredTx {
            transmit: NtpTimestamp::from_bits(w.tx.load(Ordering::Relaxed)),
            precise: meta & PRECISE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rx(n: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(0xE000_0000_0000_0000 | (n << 8) | 1)
    }

    fn t(n: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(0xE000_0000_0000_0000 + (n << 20))
    }

    #[test]
    fn an_entry_is_used_once() {
        let s = InterleavedStore::new(16);
        assert_eq!(s.save(rx(1), t(5)), SaveOutcome::Saved);
        assert_eq!(s.take(rx(1)), Some(StoredTx { transmit: t(5), precise: false }));
        assert_eq!(s.take(rx(1)), None);
        assert_eq!(s.take(rx(2)), None);
        assert_eq!(s.take(NtpTimestamp::ZERO), None);
    }

    #[test]
    fn a_tx_stamp_replaces_the_daemon_t3_within_a_second() {
        let s = InterleavedStore::new(16);
        let daemon = t(100);
        s.save(rx(1), daemon);
        let stamp = daemon.add(NtpDuration::from_nanos(7_000));
        assert_eq!(s.update_tx(rx(1), stamp), UpdateOutcome::Updated);
        let second = daemon.add(NtpDuration::from_nanos(9_000));
        assert_eq!(s.update_tx(rx(1), second), UpdateOutcome::NotFound, "the first stamp wins");
        assert_eq!(s.take(rx(1)), Some(StoredTx { transmit: stamp, precise: true }));
        assert_eq!(s.update_tx(rx(1), stamp), UpdateOutcome::NotFound, "used");

        s.save(rx(2), daemon);
        let late = daemon.add(NtpDuration::from_seconds(1)).add(NtpDuration::from_nanos(1_000));
        assert_eq!(s.update_tx(rx(2), late), UpdateOutcome::Late);
        let early = daemon.add(NtpDuration::from_nanos(-1_000));
        assert_eq!(s.update_tx(rx(2), early), UpdateOutcome::Late, "before the daemon read the clock");
        assert_eq!(s.take(rx(2)), Some(StoredTx { transmit: daemon, precise: false }), "kept the daemon's T3");
    }

    #[test]
    fn a_clock_step_invalidates_everything_stored() {
        let s = InterleavedStore::new(64);
        for n in 0..10 {
            s.save(rx(n), t(n));
        }
        s.update_tx(rx(3), t(3));
        s.invalidate();
        for n in 0..10 {
            assert_eq!(s.update_tx(rx(n), t(n)), UpdateOutcome::NotFound);
            assert_eq!(s.take(rx(n)), None, "entry {n} survived the step");
        }
        // New entries work, and the dead ones' ways are reused without counting evictions.
        for n in 100..100 + s.capacity() as u64 / 8 {
            assert_ne!(s.save(rx(n), t(n)), SaveOutcome::Busy);
        }
        assert!(s.take(rx(100)).is_some());
    }

    #[test]
    fn a_full_bucket_evicts_its_oldest_entry() {
        let s = InterleavedStore::new(WAYS); // one bucket
        for n in 1..=WAYS as u64 {
            assert_eq!(s.save(rx(n), t(n)), SaveOutcome::Saved);
        }
        assert_eq!(s.save(rx(10), t(10)), SaveOutcome::Evicted);
        assert_eq!(s.take(rx(1)), None, "the oldest went");
        for n in 2..=WAYS as u64 {
            assert!(s.take(rx(n)).is_some());
        }
        assert!(s.take(rx(10)).is_some());
    }

    #[test]
    fn a_busy_bucket_is_given_up_on_never_waited_for() {
        let s = InterleavedStore::new(WAYS);
        s.save(rx(1), t(1));
        let held = s.buckets[0].try_lock().unwrap();
        assert_eq!(s.save(rx(2), t(2)), SaveOutcome::Busy);
        assert_eq!(s.take(rx(1)), None);
        assert_eq!(s.update_tx(rx(1), t(1)), UpdateOutcome::NotFound);
        drop(held);
        assert!(s.take(rx(1)).is_some(), "still there once the bucket is free");
    }

    #[test]
    fn capacity_is_rounded_up_and_fixed() {
        assert_eq!(InterleavedStore::new(0).capacity(), WAYS);
        assert_eq!(InterleavedStore::new(5).capacity(), 2 * WAYS);
        assert_eq!(InterleavedStore::new(65536).capacity(), 65536);
    }

    #[test]
    fn workers_share_it_from_threads() {
        let s = std::sync::Arc::new(InterleavedStore::new(4096));
        let handles: Vec<_> = (0..4u64)
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut found = 0;
                    for n in 0..500 {
                        let k = rx(w * 1000 + n);
                        if s.save(k, t(n)) != SaveOutcome::Busy && s.take(k).is_some() {
                            found += 1;
                        }
                    }
                    found
                })
            })
            .collect();
        let found: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(found > 1900, "{found} of 2000");
    }

    proptest! {
        /// Whatever is saved, updated and taken, an entry comes back at most once, only with
        /// the time last saved or accepted for it, and never across an invalidation.
        #[test]
        fn entries_come_back_at_most_once_and_true(ops in proptest::collection::vec((0u8..4, 0u64..40, 0u64..3_000_000), 1..400)) {
            let s = InterleavedStore::new(32);
            // Per key: the time it gives, and whether a stamp replaced the T3 already.
            let mut model: std::collections::HashMap<u64, (NtpTimestamp, bool)> = Default::default();
            for (op, n, micros) in ops {
                let k = rx(n);
                match op {
                    0 => {
                        s.save(k, t(n));
                        model.insert(n, (t(n), false));
                    }
                    1 => {
                        let stamp = t(n).add(NtpDuration::from_nanos(micros as i64 * 1000));
                        if s.update_tx(k, stamp) == UpdateOutcome::Updated {
                            prop_assert!(micros <= 1_000_000);
                            prop_assert_eq!(model.get(&n).map(|m| m.1), Some(false), "stamped twice");
                            model.insert(n, (stamp, true));
                        }
                    }
                    2 => {
                        let got = s.take(k);
                        let expected = model.remove(&n);
                        if let Some(got) = got {
                            prop_assert_eq!(Some((got.transmit, got.precise)), expected);
                        }
                    }
                    _ => {
                        s.invalidate();
                        model.clear();
                    }
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p stratum-proto --release --lib loom`.
    use super::*;
    use loom::sync::Arc;

    fn rx(n: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(0xE000_0000_0000_0000 | (n << 8) | 1)
    }

    const T3: NtpTimestamp = NtpTimestamp::from_bits(0xE000_0000_0010_0000);

    /// Two workers take the same entry at once: it comes back at most once.
    #[test]
    fn loom_an_entry_is_taken_at_most_once() {
        loom::model(|| {
            let s = Arc::new(InterleavedStore::new(WAYS));
            s.save(rx(1), T3);
            let other = s.clone();
            let h = loom::thread::spawn(move || usize::from(other.take(rx(1)).is_some()));
            let mine = usize::from(s.take(rx(1)).is_some());
            assert!(mine + h.join().unwrap() <= 1);
        });
    }

    /// A stamp arriving while another worker takes the entry: the taker sees either the daemon's
    /// T3 or the stamp, each with its own flag, never a mix.
    #[test]
    fn loom_a_stamp_racing_a_take_is_seen_whole_or_not_at_all() {
        loom::model(|| {
            let s = Arc::new(InterleavedStore::new(WAYS));
            s.save(rx(1), T3);
            let stamp = T3.add(NtpDuration::from_nanos(5_000));
            let other = s.clone();
            let h = loom::thread::spawn(move || other.update_tx(rx(1), stamp));
            let got = s.take(rx(1));
            let updated = h.join().unwrap();
            match got {
                Some(StoredTx { transmit, precise: true }) => {
                    assert_eq!((transmit, updated), (stamp, UpdateOutcome::Updated));
                }
                Some(StoredTx { transmit, precise: false }) => assert_eq!(transmit, T3),
                None => {}
            }
        });
    }
}
