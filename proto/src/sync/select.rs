//! The system process's mitigation rules (RFC 5905 section 11.2): select (Marzullo's intersection
//! of correctness intervals), cluster (drop the survivor furthest from the rest until the spread is
//! below the sources' own jitter) and combine (the survivors' offsets weighted by their root
//! distance). Pure functions over a caller-owned scratch buffer: no allocation per update.
//!
//! chrony's `trust` and `require` act here too ([`truechimers`], [`requirement_met`]): a trusted
//! source can only be outvoted by other trusted sources, the others must fall wholly inside the
//! trusted sources' intersection; with any source marked `require`, nothing is selected unless
//! one of them survives.

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
    /// chrony's `trust`: only other trusted sources can outvote it.
    pub trust: bool,
    /// chrony's `require`: the clock is updated only while one `require` source survives.
    pub require: bool,
}

/// An endpoint of a correctness interval: (value, -1 lower / +1 upper).
pub type Endpoint = (f64, i8);

/// Marzullo's algorithm as ntpd (4.2.8, NTPsec) runs it: the smallest number of falsetickers `f`
/// (below half) for which `n - f` intervals share a point, and that intersection. `endpoints` is
/// scratch space. Returns None when no majority agrees.
///
/// RFC 5905's text also counts the midpoints (offsets) outside the intersection as falsetickers;
/// ntpd dropped that, and so does this: with it, a microsecond PPS and a millisecond upstream that
/// agree (each interval holding the other's) had no majority of two, since neither offset lies
/// inside the other's narrow interval, and the appliance served nothing.
pub fn intersection(candidates: &[Candidate], endpoints: &mut Vec<Endpoint>) -> Option<(f64, f64)> {
    intersection_of(candidates, endpoints, |_| true)
}

/// [`intersection`] of the candidates `among` picks.
fn intersection_of(
    candidates: &[Candidate],
    endpoints: &mut Vec<Endpoint>,
    among: impl Fn(&Candidate) -> bool,
) -> Option<(f64, f64)> {
    let n = candidates.iter().filter(|c| among(c)).count();
    if n == 0 {
        return None;
    }
    endpoints.clear();
    for c in candidates.iter().filter(|c| among(c)) {
        endpoints.push((c.offset - c.root_distance, -1));
        endpoints.push((c.offset + c.root_distance, 1));
    }
    endpoints.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut allow = 0;
    while 2 * allow < n {
        let need = (n - allow) as i32;
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut chime = 0i32;
        for &(value, kind) in endpoints.iter() {
            chime -= i32::from(kind);
            if chime >= need {
                low = value;
                break;
            }
        }
        chime = 0;
        for &(value, kind) in endpoints.iter().rev() {
            chime += i32::from(kind);
            if chime >= need {
                high = value;
                break;
            }
        }
        if low < high {
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

/// The select step with chrony's `trust` (sources.c): without trusted candidates, Marzullo's
/// intersection of them all and its truechimers. With some, the intersection of the trusted ones
/// alone (a single trusted source is its own majority, however many others disagree), the
/// trusted ones meeting it, and the others only when their whole interval lies inside it, so
/// that no untrusted source can move the combined offset out of what the trusted ones say.
/// Leaves the survivors in `candidates`; None (and `candidates` untouched) without a majority.
pub fn truechimers(candidates: &mut Vec<Candidate>, endpoints: &mut Vec<Endpoint>) -> Option<(f64, f64)> {
    if !candidates.iter().any(|c| c.trust) {
        let range = intersection(candidates, endpoints)?;
        keep_truechimers(candidates, range);
        return Some(range);
    }
    let (low, high) = intersection_of(candidates, endpoints, |c| c.trust)?;
    candidates.retain(|c| {
        let (lo, hi) = (c.offset - c.root_distance, c.offset + c.root_distance);
        if c.trust {
            lo <= high && hi >= low
        } else {
            lo >= low && hi <= high
        }
    });
    Some((low, high))
}

/// chrony's `require`: when any configured source has it (`any_required`, whether or not it is
/// a candidate now), the clock is updated only while one of them is among the `survivors`.
pub fn requirement_met(any_required: bool, survivors: &[Candidate]) -> bool {
    !any_required || survivors.iter().any(|c| c.require)
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
        Candidate {
            index,
            offset,
            root_distance,
            jitter: 1e-4,
            stratum: 2,
            prefer: false,
            trust: false,
            require: false,
        }
    }

    fn trusted(mut c: Candidate) -> Candidate {
        c.trust = true;
        c
    }

    /// A trusted PPS (1 µs) against three upstreams that agree with each other 5 ms away: the
    /// majority would outvote it; trusted, it stands, and the upstreams (not inside its
    /// interval) are out. An upstream whose interval lies inside it survives.
    #[test]
    fn a_trusted_source_is_outvoted_only_by_trusted_ones() {
        let pps = c(0, 0.0, 1e-6);
        let upstreams = [c(1, 5e-3, 1e-3), c(2, 5.1e-3, 1e-3), c(3, 4.9e-3, 1e-3)];
        let mut scratch = Vec::new();
        let mut plain: Vec<_> = [pps].into_iter().chain(upstreams).collect();
        truechimers(&mut plain, &mut scratch).unwrap();
        assert!(plain.iter().all(|c| c.index != 0), "untrusted, the PPS is the falseticker: {plain:?}");

        let mut with_trust: Vec<_> = [trusted(pps)].into_iter().chain(upstreams).collect();
        let range = truechimers(&mut with_trust, &mut scratch).unwrap();
        assert_eq!(range, (-1e-6, 1e-6));
        assert_eq!(with_trust.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0]);

        // An untrusted source wholly inside the trusted interval stays; one overlapping it only
        // partly does not.
        let mut inside = vec![trusted(c(0, 0.0, 1e-3)), c(1, 1e-4, 1e-4), c(2, 9e-4, 5e-4)];
        truechimers(&mut inside, &mut scratch).unwrap();
        assert_eq!(inside.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1]);

        // Two trusted sources that disagree, with nothing else trusted: no majority.
        let mut split = vec![trusted(c(0, 0.0, 1e-6)), trusted(c(1, 1e-3, 1e-6)), c(2, 0.0, 1e-6)];
        assert_eq!(truechimers(&mut split, &mut scratch), None);
        assert_eq!(split.len(), 3, "left as it was");
        // Three trusted, one off: the other two are the majority, the third out.
        let mut three = vec![trusted(c(0, 0.0, 1e-5)), trusted(c(1, 1e-6, 1e-5)), trusted(c(2, 1e-3, 1e-5))];
        truechimers(&mut three, &mut scratch).unwrap();
        assert_eq!(three.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn a_required_source_must_survive() {
        let mut required = c(0, 0.0, 1e-3);
        required.require = true;
        assert!(requirement_met(false, &[c(1, 0.0, 1e-3)]), "nothing required");
        assert!(!requirement_met(true, &[c(1, 0.0, 1e-3)]), "the required one did not survive");
        assert!(requirement_met(true, &[c(1, 0.0, 1e-3), required]));
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

    /// A microsecond interval and a millisecond one holding it, the offsets 0.5 ms apart: they
    /// agree (RFC 5905's midpoint count said no majority of two).
    #[test]
    fn a_precise_and_a_coarse_source_that_agree_are_both_truechimers() {
        let mut cs = vec![c(0, 0.0, 1e-6), c(1, 5e-4, 5e-3)];
        let range = intersection(&cs, &mut Vec::new()).expect("a majority of two");
        assert_eq!(range, (-1e-6, 1e-6));
        assert_eq!(keep_truechimers(&mut cs, range), 0);
        // Not when the coarse one misses the precise one's interval.
        assert_eq!(intersection(&[c(0, 0.0, 1e-6), c(1, 6e-3, 5e-3)], &mut Vec::new()), None);
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
