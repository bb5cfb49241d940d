//! A validated load step ([`LoadConfig`]): its bounds, and its share-out among generator threads.

use std::net::SocketAddr;
use std::time::Duration;

use crate::target::check_target;

pub const MAX_DURATION_S: f64 = 60.0;
pub const MAX_RATE: u64 = 10_000_000;
pub const MAX_SOCKETS: usize = 1024;
/// Generator threads (one per `--cores` entry).
pub const MAX_THREADS: usize = 256;

/// A validated load step.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: SocketAddr,
    /// Requests per second; 0 sends as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    /// Client sockets over all generator threads.
    pub sockets: usize,
    /// One generator thread per core listed, pinned there; empty: one unpinned thread.
    pub cores: Vec<usize>,
    /// `--nts-ke`: every request an NTS request with one of this KE's cookies (socket engine, and
    /// the AF_XDP engine with `--tx xsk`).
    pub nts: Option<std::sync::Arc<crate::nts::Session>>,
}

impl LoadConfig {
    pub fn new(
        target: SocketAddr,
        i_own_this_target: bool,
        rate: u64,
        duration_s: f64,
        sockets: usize,
        cores: Vec<usize>,
    ) -> anyhow::Result<Self> {
        let target = check_target(target, i_own_this_target)?;
        if !(duration_s > 0.0 && duration_s <= MAX_DURATION_S) {
            anyhow::bail!("--duration must be more than 0 and at most {MAX_DURATION_S} seconds");
        }
        if rate > MAX_RATE {
            anyhow::bail!("--rate must be at most {MAX_RATE} (0 = as fast as possible)");
        }
        if !(1..=MAX_SOCKETS).contains(&sockets) {
            anyhow::bail!("--sockets must be from 1 to {MAX_SOCKETS}");
        }
        if cores.len() > MAX_THREADS {
            anyhow::bail!("--cores lists at most {MAX_THREADS} cores");
        }
        if let Some(c) = cores.iter().enumerate().find_map(|(i, c)| cores[..i].contains(c).then_some(c)) {
            anyhow::bail!("--cores lists core {c} twice");
        }
        if sockets < cores.len() {
            anyhow::bail!("--sockets ({sockets}) must be at least the number of --cores ({})", cores.len());
        }
        if rate != 0 && rate < cores.len() as u64 {
            anyhow::bail!("--rate ({rate}) must be 0 or at least the number of --cores ({})", cores.len());
        }
        Ok(Self { target, rate, duration: Duration::from_secs_f64(duration_s), sockets, cores, nts: None })
    }

    /// Generator threads: one per listed core, or one.
    pub fn threads(&self) -> usize {
        self.cores.len().max(1)
    }

    /// The core of a single pinned generator thread.
    pub fn core(&self) -> Option<usize> {
        match self.cores[..] {
            [c] => Some(c),
            _ => None,
        }
    }

    /// One step config per generator thread: its core, its share of the rate and of the sockets
    /// (so the threads' source ports are disjoint). The shares add up to the whole.
    pub fn per_thread(&self) -> Vec<LoadConfig> {
        let n = self.threads();
        let rates = split(self.rate, n);
        let sockets = split(self.sockets as u64, n);
        (0..n)
            .map(|i| LoadConfig {
                rate: rates[i],
                sockets: sockets[i] as usize,
                cores: self.cores.get(i).map(|&c| vec![c]).unwrap_or_default(),
                ..self.clone()
            })
            .collect()
    }
}

/// `total` in `n` shares that differ by at most one, the larger ones first.
pub fn split(total: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64).map(|i| total / n64 + u64::from(i < total % n64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::tests::addr;

    #[test]
    fn step_arguments_are_bounded() {
        let ok =
            |rate, duration, sockets| LoadConfig::new(addr("127.0.0.1:123"), false, rate, duration, sockets, vec![]);
        assert!(ok(1000, 1.0, 16).is_ok());
        assert!(ok(0, 60.0, 1).is_ok());
        assert!(ok(1000, 0.0, 16).is_err());
        assert!(ok(1000, 60.5, 16).is_err());
        assert!(ok(1000, f64::NAN, 16).is_err());
        assert!(ok(MAX_RATE + 1, 1.0, 16).is_err());
        assert!(ok(1000, 1.0, 0).is_err());
        assert!(ok(1000, 1.0, MAX_SOCKETS + 1).is_err());
    }

    #[test]
    fn cores_are_distinct_with_a_socket_and_a_request_each() {
        let cfg = |rate, sockets, cores: &[usize]| {
            LoadConfig::new(addr("127.0.0.1:123"), false, rate, 1.0, sockets, cores.to_vec())
        };
        assert!(cfg(1000, 16, &[0, 1, 2]).is_ok());
        assert!(cfg(0, 2, &[0, 1]).is_ok());
        assert!(cfg(2, 2, &[0, 1]).is_ok());
        let e = cfg(1000, 16, &[0, 1, 0]).unwrap_err().to_string();
        assert!(e.contains("core 0 twice"), "{e}");
        assert!(cfg(1000, 1, &[0, 1]).unwrap_err().to_string().contains("--sockets (1)"));
        assert!(cfg(1, 16, &[0, 1]).unwrap_err().to_string().contains("--rate (1)"));
        assert!(cfg(1000, MAX_SOCKETS, &(0..=MAX_THREADS).collect::<Vec<_>>()).is_err());
        let one = cfg(1000, 16, &[3]).unwrap();
        assert_eq!((one.threads(), one.core()), (1, Some(3)));
        let none = cfg(1000, 16, &[]).unwrap();
        assert_eq!((none.threads(), none.core()), (1, None));
        assert_eq!(cfg(1000, 16, &[0, 1]).unwrap().core(), None);
    }

    #[test]
    fn threads_share_the_rate_and_the_sockets_exactly() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(9, 3), [3, 3, 3]);
        assert_eq!(split(0, 2), [0, 0]);
        assert_eq!(split(7, 1), [7]);
        let c = LoadConfig::new(addr("127.0.0.1:123"), false, 100_001, 2.0, 16, vec![4, 2, 7]).unwrap();
        let parts = c.per_thread();
        assert_eq!(parts.iter().map(|p| p.rate).collect::<Vec<_>>(), [33_334, 33_334, 33_333]);
        assert_eq!(parts.iter().map(|p| p.sockets).collect::<Vec<_>>(), [6, 5, 5]);
        assert_eq!(parts.iter().map(|p| p.cores.clone()).collect::<Vec<_>>(), [vec![4], vec![2], vec![7]]);
        assert!(parts.iter().all(|p| p.target == c.target && p.duration == c.duration));
        // As fast as possible stays so in every thread; unpinned is one unpinned thread.
        let fast = LoadConfig::new(addr("127.0.0.1:123"), false, 0, 1.0, 2, vec![0, 1]).unwrap();
        assert!(fast.per_thread().iter().all(|p| p.rate == 0));
        let single = LoadConfig::new(addr("127.0.0.1:123"), false, 500, 1.0, 3, vec![]).unwrap().per_thread();
        assert_eq!((single.len(), single[0].rate, single[0].sockets, single[0].cores.len()), (1, 500, 3, 0));
    }
}
