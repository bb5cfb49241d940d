//! The per-worker turnaround histogram: how long a request spent inside the server, T3 − T2 (the
//! transmit clock read minus the kernel receive stamp).
//!
//! The issue asks for an hdrhistogram. An `hdrhistogram::Histogram` needs `&mut` to record (so a
//! lock, or a copy per scrape handed across threads) and may resize; this is the lock-free
//! equivalent: a fixed HDR-style log-linear bucket array (4 linear sub-buckets per power of two,
//! so at most 25 % between neighbouring bounds, the precision of an HDR histogram with one
//! significant binary digit plus two) of `AtomicU64`s. Its only writer is the worker that owns it,
//! with a plain load + store per packet (no read-modify-write, no lock, no allocation), the way
//! [`crate::dataplane::stats`] counts. Readers load the buckets at scrape time and merge workers into one
//! [`HistogramSnapshot`], exported as a Prometheus histogram.
//!
//! Buckets, in nanoseconds: `<= 1024`, then for every octave `2^k` (k = 10..=26) four buckets with
//! upper bounds `2^k · 5/4, 6/4, 7/4, 8/4`, up to `2^27` ns (134 ms); anything above lands in the
//! overflow bucket (`+Inf`). Bounds are inclusive (`le`, as Prometheus means it).

use std::sync::atomic::{AtomicU64, Ordering};

use stratum_proto::NtpDuration;

/// Linear sub-buckets per power of two, as bits.
const SUB_BITS: u32 = 2;
const SUBS: usize = 1 << SUB_BITS;
/// log2 of the first bucket's upper bound in nanoseconds (1024 ns, about 1 µs).
const FIRST_SHIFT: u32 = 10;
/// Powers of two covered after the first bucket: 2^10 .. 2^27 ns (134 ms).
const OCTAVES: usize = 17;
/// Buckets with a finite upper bound.
pub const FINITE_BUCKETS: usize = 1 + OCTAVES * SUBS;
/// Every bucket, the overflow bucket last.
pub const BUCKETS: usize = FINITE_BUCKETS + 1;

/// The bucket a turnaround of `nanos` nanoseconds belongs to: the first whose upper bound is
/// `>= nanos`, or the overflow bucket.
pub const fn bucket_index(nanos: u64) -> usize {
    // Bounds are inclusive: index `nanos - 1` into half-open [lower, upper) ranges.
    let w = nanos.saturating_sub(1);
    if w < 1 << FIRST_SHIFT {
        return 0;
    }
    let msb = 63 - w.leading_zeros();
    let octave = (msb - FIRST_SHIFT) as usize;
    let sub = ((w >> (msb - SUB_BITS)) as usize) & (SUBS - 1);
    let index = 1 + octave * SUBS + sub;
    if index < FINITE_BUCKETS {
        index
    } else {
        FINITE_BUCKETS
    }
}

/// The inclusive upper bound of finite bucket `index`, in nanoseconds.
pub const fn upper_bound_nanos(index: usize) -> u64 {
    if index == 0 {
        return 1 << FIRST_SHIFT;
    }
    let octave = (index - 1) / SUBS;
    let sub = (index - 1) % SUBS;
    ((SUBS + sub + 1) as u64) << (octave as u32 + FIRST_SHIFT - SUB_BITS)
}

/// One worker's histogram. Only the owning worker calls [`TurnaroundHistogram::record`].
#[derive(Debug)]
pub struct TurnaroundHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Default for TurnaroundHistogram {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl TurnaroundHistogram {
    /// Records one turnaround. A negative one (the clock stepped back between T2 and T3) counts
    /// as zero. Single writer: the owning worker.
    #[inline]
    pub fn record(&self, turnaround: NtpDuration) {
        let nanos = turnaround.to_nanos().max(0) as u64;
        bump(&self.buckets[bucket_index(nanos)], 1);
        bump(&self.sum_nanos, nanos);
    }
}

/// Histograms merged over workers, read at scrape time. Buckets are read one by one while workers
/// record, so a snapshot may miss the requests of the last microseconds in some buckets; its count
/// is always the sum of its buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub counts: [u64; BUCKETS],
    pub sum_nanos: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self { counts: [0; BUCKETS], sum_nanos: 0 }
    }
}

impl HistogramSnapshot {
    pub fn merge<'a>(histograms: impl IntoIterator<Item = &'a TurnaroundHistogram>) -> Self {
        let mut s = Self::default();
        for h in histograms {
            for (sum, c) in s.counts.iter_mut().zip(&h.buckets) {
                *sum = sum.wrapping_add(c.load(Ordering::Relaxed));
            }
            s.sum_nanos = s.sum_nanos.wrapping_add(h.sum_nanos.load(Ordering::Relaxed));
        }
        s
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 * 1e-9
    }

    /// `(upper bound in seconds, requests at or below it)` for every finite bucket, cumulative as
    /// Prometheus wants them; the `+Inf` bucket is [`HistogramSnapshot::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut running = 0u64;
        (0..FINITE_BUCKETS).map(move |i| {
            running += self.counts[i];
            // A division, so the bound is the double nearest its decimal value (le="0.000003072").
            (upper_bound_nanos(i) as f64 / 1e9, running)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_span_a_microsecond_to_a_hundred_milliseconds() {
        assert_eq!(upper_bound_nanos(0), 1024);
        assert_eq!(upper_bound_nanos(1), 1280);
        assert_eq!(upper_bound_nanos(4), 2048);
        assert_eq!(upper_bound_nanos(FINITE_BUCKETS - 1), 1 << 27);
        assert!((upper_bound_nanos(FINITE_BUCKETS - 1) as f64) > 100e6);
        for i in 1..FINITE_BUCKETS {
            let (lo, hi) = (upper_bound_nanos(i - 1), upper_bound_nanos(i));
            assert!(hi > lo, "bounds increase at {i}");
            assert!((hi - lo) as f64 / lo as f64 <= 0.25 + 1e-12, "at most 25 % apart at {i}: {lo} {hi}");
        }
    }

    #[test]
    fn every_value_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut probes = vec![0u64, 1, 2, 1023, 1024, 1025, 1279, 1280, 1281, u64::MAX];
        for i in 0..FINITE_BUCKETS {
            let b = upper_bound_nanos(i);
            probes.extend([b - 1, b, b + 1]);
        }
        for v in probes {
            let i = bucket_index(v);
            if i == FINITE_BUCKETS {
                assert!(v > upper_bound_nanos(FINITE_BUCKETS - 1), "{v} overflowed");
            } else {
                assert!(v <= upper_bound_nanos(i), "{v} above bucket {i}");
                assert!(i == 0 || v > upper_bound_nanos(i - 1), "{v} belongs below bucket {i}");
            }
        }
    }

    #[test]
    fn workers_merge_into_one_cumulative_histogram() {
        let w = [TurnaroundHistogram::default(), TurnaroundHistogram::default()];
        w[0].record(NtpDuration::from_nanos(500)); // bucket 0
        w[0].record(NtpDuration::from_nanos(-20)); // clock stepped back: zero
        w[1].record(NtpDuration::from_nanos(1200)); // le 1280
        w[1].record(NtpDuration::from_nanos(5_000)); // le 5120
        w[1].record(NtpDuration::from_nanos(2_000_000_000)); // overflow
        let s = HistogramSnapshot::merge(&w);
        assert_eq!(s.count(), 5);
        assert_eq!(s.counts[FINITE_BUCKETS], 1);
        // 500 + 0 + 1200 + 5000 + 2e9, within the rounding of NTP's 2^-32 s units.
        assert!((s.sum_seconds() - 2.0000067).abs() < 1e-8, "{}", s.sum_seconds());
        let cumulative: Vec<(f64, u64)> = s.cumulative().collect();
        assert_eq!(cumulative.len(), FINITE_BUCKETS);
        assert_eq!(cumulative[0], (1.024e-6, 2));
        assert_eq!(cumulative[1], (1.28e-6, 3));
        let at_5120 = cumulative.iter().find(|(le, _)| (*le - 5.12e-6).abs() < 1e-15).unwrap();
        assert_eq!(at_5120.1, 4);
        assert_eq!(cumulative.last().unwrap().1, 4, "the overflow is only in +Inf (the count)");
        assert!(cumulative.windows(2).all(|p| p[0].1 <= p[1].1));
    }
}
