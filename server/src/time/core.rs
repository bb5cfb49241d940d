//! The time core: one writer publishes a [`ServerSnapshot`], any number of workers read it.
//!
//! A seqlock over atomic words: the writer makes the sequence odd, stores the words, makes it even
//! again. Readers never lock and never write a shared cache line; a [`SnapshotReader`] keeps its
//! own copy and re-reads the words only when the sequence has moved, which it checks once a batch.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use stratum_proto::server::snapshot::SNAPSHOT_WORDS;
use stratum_proto::ServerSnapshot;

/// The published snapshot. Only one thread may call [`SnapshotCell::publish`].
#[derive(Debug)]
#[repr(align(128))]
pub struct SnapshotCell {
    seq: AtomicU64,
    words: [AtomicU64; SNAPSHOT_WORDS],
}

impl SnapshotCell {
    pub fn new(initial: ServerSnapshot) -> Arc<Self> {
        Arc::new(Self { seq: AtomicU64::new(0), words: initial.to_words().map(AtomicU64::new) })
    }

    /// Publishes a new snapshot. Callers guarantee a single writer (the sync thread).
    pub fn publish(&self, snapshot: &ServerSnapshot) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (cell, word) in self.words.iter().zip(snapshot.to_words()) {
            cell.store(word, Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy, with the sequence number it belongs to.
    pub fn load(&self) -> (u64, ServerSnapshot) {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return (before, ServerSnapshot::from_words(&words));
            }
        }
    }

    fn sequence(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }
}

/// A worker's cached view of the snapshot.
#[derive(Debug)]
pub struct SnapshotReader {
    cell: Arc<SnapshotCell>,
    seq: u64,
    snapshot: ServerSnapshot,
}

impl SnapshotReader {
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        let (seq, snapshot) = cell.load();
        Self { cell, seq, snapshot }
    }

    /// The current snapshot; re-read only when the writer has published since the last call.
    pub fn refresh(&mut self) -> &ServerSnapshot {
        if self.cell.sequence() != self.seq {
            (self.seq, self.snapshot) = self.cell.load();
        }
        &self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use stratum_proto::{LeapIndicator, NtpShort, NtpTimestamp, RefId};

    /// A snapshot whose every field is derived from `n`, so a mix of two publications shows.
    fn numbered(n: u64) -> ServerSnapshot {
        ServerSnapshot {
            leap: LeapIndicator::from_bits(n as u8),
            stratum: (n % 15) as u8 + 1,
            precision: -((n % 20) as i8) - 1,
            ref_id: RefId::from_bits(n as u32),
            reference_time: NtpTimestamp::from_bits(n),
            root_delay: NtpShort::from_bits(n as u32 ^ 0xFFFF),
            root_dispersion: NtpShort::from_bits(n as u32),
            dispersion_base: NtpTimestamp::from_bits(n.rotate_left(7)),
            dispersion_rate: n as u32,
            tai_offset: n as i32,
            correction: Default::default(),
        }
    }

    #[test]
    fn readers_never_see_a_torn_snapshot() {
        let cell = SnapshotCell::new(numbered(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reading = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (cell, stop, reading) = (cell.clone(), stop.clone(), reading.clone());
                std::thread::spawn(move || {
                    let mut reader = SnapshotReader::new(cell);
                    let (mut reads, mut last) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let s = *reader.refresh();
                        let n = s.reference_time.to_bits();
                        assert_eq!(s, numbered(n), "torn snapshot");
                        assert!(n >= last, "went back in time: {n} after {last}");
                        last = n;
                        reads += 1;
                        if reads == 1 {
                            reading.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads
                })
            })
            .collect();
        for n in 1..=200_000u64 {
            cell.publish(&numbered(n));
        }
        // On 2 cores a reader thread may not have run at all by now: keep publishing until each
        // has read at least once, so every reader checks some snapshots.
        let mut n = 200_000u64;
        while reading.load(Ordering::Relaxed) < 3 {
            n += 1;
            cell.publish(&numbered(n));
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(cell.load().1, numbered(n));
    }

    #[test]
    fn reader_follows_publications() {
        let cell = SnapshotCell::new(numbered(1));
        let mut reader = SnapshotReader::new(cell.clone());
        assert_eq!(*reader.refresh(), numbered(1));
        cell.publish(&numbered(2));
        assert_eq!(*reader.refresh(), numbered(2));
    }
}
