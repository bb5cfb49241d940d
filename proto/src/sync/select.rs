//! The system process's mitigation rules (RFC 5905 section 11.2): select (Marzullo's intersection
//! of correctness intervals), cluster (drop the survivor furthest from the rest until the spread is
//! below the sources' own jitter) and combine (the survivors' offsets weighted by their root
//! distance). Pure functions over a caller-owned scratch buffer: no allocation per update.

/// Fewest survivors the cluster step keeps (RFC 5905's NMIN).
pub const CLUSTER_MIN: usize = 3;

/// One source as the mitigation rules see it, all at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The caller's index of the source.
    pub index: usize,
    /// Its offset from the served clock, seconds.
    pub offset: f64,
    /// Its root distance λ (half the correctness interval), seconds.
    pub root_distance: f64,
    /// Its clock filter's jitter, seconds.
    pub jitter: f64,
    pub stratum: u8,
    pub prefer: bool,
}

/// An endpoint of a correctness interval: (value, -1 lower / 0 midpoint / +1 upper).
pub type Endpoint = (f64, i8);

/// Marzullo's algorithm as RFC 5905 gives it: the smallest number of falsetickers `f` (below half)
/// for which `n - f` intervals share a point, and that intersection. `endpoints` is scratch space.
/// Returns None when no majority agrees.
pub fn intersection(candidates: &[Candidate], endpoints: &mut Vec<Endpoint>) -> Option<(f64, f64)> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    endpoints.clear();
    for c in candidates {
        endpoints.push((c.offset - c.root_distance, -1));
        endpoints.push((c.offset, 0));
        endpoints.push((c.offset + c.root_distance, 1));
    }
    endpoints.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut allow = 0;
    while 2 * allow < n {
        let need = (n - allow) as i32;
        let mut found = 0;
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut chime = 0i32;
        for &(value, kind) in endpoints.iter() {
            chime -= i32::from(kind);
            if chime >= need {
                low = value;
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        chime = 0;
        for &(value, kind) in endpoints.iter().rev() {
            chime += i32::from(kind);
            if chime >= need {
                high = value;
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        if found <= allow && low < high {
            return Some((low, high));
        }
        allow += 1;
    }
    None
}

/// Keeps in `candidates` the truechimers: those whose interval meets `[low, high]`. Returns how
/// many were dropped as falsetickers (their indices are no longer in `candidates`).
pub fn keep_truechimers(candidates: &mut Vec<Candidate>, (low, high): (f64, f64)) -> usize {
    let before = candidates.len();
    candidates.retain(|c| c.offset - c.root_distance <= high && c.offset + c.root_distance >= low);
    before - candidates.len()
}

/// The cluster step: sorts `survivors` by merit (stratum, then root distance) and drops, one at a
/// time, the one whose selection jitter is largest, until [`CLUSTER_MIN`] are left or the largest
/// selection jitter is below the smallest source jitter. Returns the system's selection jitter.
pub fn cluster(survivors: &mut Vec<Candidate>) -> f64 {
    survivors.sort_unstable_by(|a, b| {
        a.stratum.cmp(&b.stratum).then(a.root_distance.total_cmp(&b.root_distance)).then(a.index.cmp(&b.index))
    });
    loop {
        let n = survivors.len();
        if n <= 1 {
            return 0.0;
        }
        let mut worst = (0, f64::NEG_INFINITY);
        for (i, a) in survivors.iter().enumerate() {
            let sum: f64 = survivors.iter().map(|b| (a.offset - b.offset).powi(2)).sum();
            let phi = (sum / (n - 1) as f64).sqrt();
            if phi > worst.1 {
                worst = (i, phi);
            }
        }
        let min_jitter = survivors.iter().map(|c| c.jitter).fold(f64::INFINITY, f64::min);
        if n <= CLUSTER_MIN || worst.1 <= min_jitter {
            let peer = survivors[0].offset;
            let sum: f64 = survivors.iter().map(|c| (c.offset - peer).powi(2)).sum();
            return (sum / (n - 1) as f64).sqrt();
        }
        survivors.remove(worst.0);
    }
}

/// The combined offset: the survivors' offsets weighted by the inverse of their root distance.
pub fn combine(survivors: &[Candidate]) -> Option<f64> {
    let (mut weighted, mut total) = (0.0, 0.0);
    for c in survivors {
        let w = 1.0 / c.root_distance.max(1e-9);
        weighted += c.offset * w;
        total += w;
    }
    (total > 0.0).then(|| weighted / total)
}

/// The system peer among the clustered `survivors` (sorted by merit): a `prefer` source if one
/// survived, else the previous system peer while it survives with the best stratum and at most
/// twice the best root distance (no clock hopping), else the first by merit.
pub fn system_peer(survivors: &[Candidate], previous: Option<usize>) -> Option<usize> {
    let first = survivors.first()?;
    if let Some(p) = survivors.iter().find(|c| c.prefer) {
        return Some(p.index);
    }
    if let Some(p) = previous.and_then(|prev| survivors.iter().find(|c| c.index == prev)) {
        if p.stratum == first.stratum && p.root_distance <= 2.0 * first.root_distance {
            return Some(p.index);
        }
    }
    Some(first.index)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(index: usize, offset: f64, root_distance: f64) -> Candidate {
        Candidate { index, offset, root_distance, jitter: 1e-4, stratum: 2, prefer: false }
    }

    #[test]
    fn a_falseticker_is_left_out() {
        let mut cs = vec![c(0, 0.0, 0.01), c(1, 0.001, 0.01), c(2, -0.001, 0.01), c(3, 0.05, 0.01), c(4, 0.0005, 0.01)];
        let mut scratch = Vec::new();
        let range = intersection(&cs, &mut scratch).unwrap();
        assert_eq!(keep_truechimers(&mut cs, range), 1);
        assert!(cs.iter().all(|c| c.index != 3));
        cluster(&mut cs);
        let peer = system_peer(&cs, None).unwrap();
        assert_ne!(peer, 3);
        assert!(combine(&cs).unwrap().abs() < 0.001);
    }

    #[test]
    fn an_even_split_has_no_majority() {
        let cs = [c(0, 0.02, 0.005), c(1, 0.021, 0.005), c(2, -0.02, 0.005), c(3, -0.019, 0.005)];
        assert_eq!(intersection(&cs, &mut Vec::new()), None);
        // One source alone is its own majority.
        assert!(intersection(&cs[..1], &mut Vec::new()).is_some());
    }

    #[test]
    fn cluster_drops_the_outlier_and_prefer_wins() {
        let mut cs = vec![c(0, 0.0, 0.01), c(1, 0.0001, 0.012), c(2, -0.0001, 0.011), c(3, 0.008, 0.013)];
        cluster(&mut cs);
        assert_eq!(cs.len(), 3);
        assert!(cs.iter().all(|c| c.index != 3));
        assert_eq!(system_peer(&cs, None), Some(0));
        assert_eq!(system_peer(&cs, Some(2)), Some(2), "the previous peer is kept");
        cs.iter_mut().find(|c| c.index == 2).unwrap().prefer = true;
        assert_eq!(system_peer(&cs, Some(1)), Some(2), "prefer wins");
    }

    proptest! {
        /// Whatever the intervals, the intersection found lies within every truechimer's interval
        /// and at least half of them (rounded up to a majority) survive.
        #[test]
        fn intersection_is_shared_by_a_majority(offsets in proptest::collection::vec((-1.0f64..1.0, 0.001f64..0.5), 1..20)) {
            let mut cs: Vec<_> = offsets.iter().enumerate().map(|(i, (o, d))| c(i, *o, *d)).collect();
            let n = cs.len();
            if let Some(range) = intersection(&cs, &mut Vec::new()) {
                prop_assert!(range.0 < range.1);
                keep_truechimers(&mut cs, range);
                prop_assert!(2 * cs.len() > n, "{} of {}", cs.len(), n);
            }
        }
    }
}
