//! The coarse per-network bucket (an IPv4 /24 and an IPv6 /48 by default): the same GCRA as the
//! client's bucket, in a table of its own that is four times denser than the client table.
//!
//! A network's record needs no statistics (nothing shows them, and no KoD is ever sent for a
//! network), so a set is the records line alone: eight `fingerprint:32 | tat:32` words in one
//! 64-byte line, [`NETWORK_PREFETCH_BYTES`]. The default 64 k networks are 512 KiB instead of the
//! 2 MiB of a client-style table, small enough to stay in a core's L2 under a flood of distinct
//! clients, and a decision reads one line instead of two. A miss replaces an empty record, else
//! the one owing the least (a full bucket first): a flooded network owes the most and stays
//! tracked while one-off networks churn through the rest of its set.
//!
//! Races are those of the client table: one compare-and-swap per allowed request; two cores
//! meeting a new network at once may each create a record for it (the lookup then uses the
//! first), an over-allowance of at most one request per racing core, once.

use core::net::IpAddr;

use super::{fingerprint_of, keyed_hash, prefix_key, record, RateDecision, RateLimitConfig, MAX_ATTEMPTS, WAYS};
use super::{MAX_INTERVAL, MIN_INTERVAL, STALE_DEBT, TIME_SHIFT};
use crate::atomic::{AtomicU64, Ordering};
use crate::time::NtpTimestamp;

/// Bytes from [`NetworkLimiter::key_address`] that a decision reads: the set's one line.
pub const NETWORK_PREFETCH_BYTES: usize = 64;
/// Bytes the table spends per tracked network: its record.
pub const BYTES_PER_NETWORK: usize = 8;

/// A network's place in the table ([`NetworkLimiter::key`]), computed once per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkKey {
    fingerprint: u32,
    set: u32,
}

/// One set: eight records in one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
struct NetworkSet {
    records: [AtomicU64; WAYS],
}

/// The coarse table, shared by all workers like the client table.
#[derive(Debug)]
pub struct NetworkLimiter {
    sets: Box<[NetworkSet]>,
    set_mask: usize,
    seed: [u64; 2],
    interval_units: u32,
    tolerance: u32,
    leak_mask: u64,
    config: RateLimitConfig,
}

impl NetworkLimiter {
    /// Allocates the whole table now; nothing allocates later. Of `config`, `clients` is the
    /// networks tracked (rounded up to a power of two), the prefixes are the networks', and `kod`
    /// is ignored: over its limit a network's request is leaked (1/2^leak) or dropped. `seed` must
    /// be random per process.
    pub fn new(config: &RateLimitConfig, seed: [u64; 2]) -> Self {
        let sets = config.clients.max(WAYS).next_power_of_two() / WAYS;
        let interval = config.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let interval_units = 1u32 << (interval - MIN_INTERVAL) as u32;
        let empty = || NetworkSet { records: core::array::from_fn(|_| AtomicU64::new(0)) };
        Self {
            sets: (0..sets).map(|_| empty()).collect(),
            set_mask: sets - 1,
            seed,
            interval_units,
            tolerance: interval_units.saturating_mul(u32::from(config.burst.max(1)) - 1),
            leak_mask: (1u64 << config.leak.min(16)) - 1,
            config: RateLimitConfig { interval, kod: 0, ..*config },
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Networks the table can track at once.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Bytes the table occupies.
    pub fn memory_bytes(&self) -> usize {
        self.capacity() * BYTES_PER_NETWORK
    }

    /// `client`'s network's place in the table.
    #[inline]
    pub fn key(&self, client: IpAddr) -> NetworkKey {
        let (prefix, is_v6) = prefix_key(client, self.config.ipv4_prefix, self.config.ipv6_prefix);
        let hash = keyed_hash(&self.seed, prefix, is_v6);
        NetworkKey { fingerprint: fingerprint_of(hash, is_v6), set: (hash as usize & self.set_mask) as u32 }
    }

    /// Where `key`'s set is: the [`NETWORK_PREFETCH_BYTES`] from here are what deciding reads.
    #[inline]
    pub fn key_address(&self, key: &NetworkKey) -> *const u8 {
        self.sets[key.set as usize & self.set_mask].records.as_ptr().cast()
    }

    /// Decides for one request from `client`'s network at `now`; `random` fresh bits per call
    /// (the low 16 decide a leak).
    pub fn check(&self, client: IpAddr, now: NtpTimestamp, random: u64) -> RateDecision {
        self.check_key(self.key(client), now, random)
    }

    /// [`check`](Self::check) for the network `key` was made for (by this table). Allow, or over
    /// the limit Leak or Drop, never Kod.
    pub fn check_key(&self, key: NetworkKey, now: NtpTimestamp, random: u64) -> RateDecision {
        let now = (now.to_bits() >> TIME_SHIFT) as u32;
        let set = &self.sets[key.set as usize & self.set_mask].records;
        for _ in 0..MAX_ATTEMPTS {
            let found = set.iter().enumerate().find_map(|(way, cell)| {
                let word = cell.load(Ordering::Relaxed);
                ((word >> 32) as u32 == key.fingerprint).then_some((way, word))
            });
            let Some((way, word)) = found else {
                let words: [u64; WAYS] = core::array::from_fn(|way| set[way].load(Ordering::Relaxed));
                let way = victim(&words, now);
                let new = record(key.fingerprint, now.wrapping_add(self.interval_units));
                if set[way].compare_exchange(words[way], new, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    return RateDecision::Allow;
                }
                continue;
            };
            let tat = word as u32;
            let debt = tat.wrapping_sub(now) as i32 as i64;
            if debt <= i64::from(self.tolerance) || debt > STALE_DEBT {
                let base = if (0..=STALE_DEBT).contains(&debt) { tat } else { now };
                let new = record(key.fingerprint, base.wrapping_add(self.interval_units));
                if set[way].compare_exchange(word, new, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    return RateDecision::Allow;
                }
                continue;
            }
            // Over the limit: nothing changes; a leaked request is answered.
            return if random & self.leak_mask == 0 { RateDecision::Leak } else { RateDecision::Drop };
        }
        // Four lost races on one set in a row: answer rather than guess.
        RateDecision::Allow
    }

    /// Records in use (a scan; for tests and metrics, not the data plane).
    pub fn occupancy(&self) -> usize {
        self.sets.iter().flat_map(|s| s.records.iter()).filter(|w| w.load(Ordering::Relaxed) != 0).count()
    }
}

/// The record to replace (of `words`, the set as just read): an empty one, else the one owing
/// least (a full bucket, or one so old its time wrapped, owes nothing), ties to the first way.
/// Each way's rank is one number, `debt:32` above the way's index; no branch on the comparisons.
#[inline]
fn victim(words: &[u64; WAYS], now: u32) -> usize {
    let mut best = u64::MAX;
    for (way, &word) in words.iter().enumerate() {
        let debt = i64::from((word as u32).wrapping_sub(now) as i32);
        let owed = if debt <= 0 || debt > STALE_DEBT { 0 } else { debt as u64 };
        // Empty below everything, then by debt.
        let rank = if word == 0 { 0 } else { 1 + owed };
        best = best.min(rank << 3 | way as u64);
    }
    (best & 7) as usize
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SEED: [u64; 2] = [0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210];
    const NEVER_LEAK: u64 = 1;
    const ALWAYS_LEAK: u64 = 0;

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_bits(((3_900_000_000.0 + seconds) * 4_294_967_296.0) as u64)
    }

    /// stratumd's default coarse bucket: /24 and /48, 16 a second, burst 255.
    fn networks(clients: usize) -> NetworkLimiter {
        let config =
            RateLimitConfig { interval: -4, burst: 255, leak: 2, kod: 3, ipv4_prefix: 24, ipv6_prefix: 48, clients };
        NetworkLimiter::new(&config, SEED)
    }

    #[test]
    fn one_24_shares_its_burst_then_16_a_second() {
        let n = networks(4096);
        let allowed = (0..1000u32)
            .filter(|i| {
                n.check(format!("198.51.100.{}", i % 256).parse().unwrap(), at(0.0), NEVER_LEAK) == RateDecision::Allow
            })
            .count();
        assert_eq!(allowed, 255);
        // Another /24 and another /48 are other networks.
        assert_eq!(n.check("198.51.101.1".parse().unwrap(), at(0.0), NEVER_LEAK), RateDecision::Allow);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = (0..300).filter(|_| n.check(v6("2001:db8:1:ffff::1"), at(0.0), NEVER_LEAK) == RateDecision::Allow);
        assert_eq!(first.count(), 255);
        assert_eq!(n.check(v6("2001:db8:1:1::9"), at(0.0), NEVER_LEAK), RateDecision::Drop, "same /48");
        assert_eq!(n.check(v6("2001:db8:2::1"), at(0.0), NEVER_LEAK), RateDecision::Allow, "another /48");
        // One second later the /24 has 16 more, not 17.
        let later = (0..100).filter(|_| n.check(v6("198.51.100.7"), at(1.0), NEVER_LEAK) == RateDecision::Allow);
        assert_eq!(later.count(), 16);
    }

    #[test]
    fn over_the_limit_leaks_or_drops_never_kisses() {
        let n = networks(4096);
        let c: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..255 {
            n.check(c, at(0.0), NEVER_LEAK);
        }
        assert_eq!(n.check(c, at(0.0), ALWAYS_LEAK), RateDecision::Leak);
        assert_eq!(n.check(c, at(0.0), NEVER_LEAK | 0xFF00), RateDecision::Drop);
        // The leak is 1/2^leak of the random bits' low 16.
        let leaked = (0..4096u64).filter(|r| n.check(c, at(0.0), *r) == RateDecision::Leak).count();
        assert_eq!(leaked, 1024);
    }

    #[test]
    fn a_flooded_network_stays_tracked_while_one_off_networks_churn() {
        // One set: eight records for every network.
        let n = networks(8);
        let flooded: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..255 {
            assert_eq!(n.check(flooded, at(0.0), NEVER_LEAK), RateDecision::Allow);
        }
        for i in 0..10_000u32 {
            let one_off = IpAddr::V4((0x0A00_0000 + (i << 8)).into());
            assert_eq!(n.check(one_off, at(0.0), NEVER_LEAK), RateDecision::Allow);
        }
        assert_eq!(n.occupancy(), 8);
        assert_eq!(n.check(flooded, at(0.0), NEVER_LEAK), RateDecision::Drop, "its debt outlived the churn");
    }

    #[test]
    fn time_that_wraps_leaves_a_fresh_bucket_and_a_lagging_clock_is_limited() {
        let n = networks(4096);
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..255 {
            n.check(c, at(100.0), NEVER_LEAK);
        }
        assert_eq!(n.check(c, at(40.0), NEVER_LEAK), RateDecision::Drop, "a worker a minute behind");
        assert_eq!(n.check(c, at(100.0 + 3.0 * 365.0 * 86_400.0), NEVER_LEAK), RateDecision::Allow);
    }

    #[test]
    fn sizes_and_addresses() {
        let n = networks(1 << 16);
        assert_eq!((n.capacity(), n.memory_bytes()), (1 << 16, 512 << 10));
        assert_eq!(core::mem::size_of::<NetworkSet>(), NETWORK_PREFETCH_BYTES);
        let key = n.key("192.0.2.1".parse().unwrap());
        assert_eq!(key, n.key("192.0.2.254".parse().unwrap()), "one /24, one key");
        assert_ne!(key, n.key("192.0.3.1".parse().unwrap()));
        let start = n.sets.as_ptr() as usize;
        let at = n.key_address(&key) as usize;
        assert!((start..start + n.memory_bytes()).contains(&at) && at % NETWORK_PREFETCH_BYTES == 0);
        assert_eq!(n.config().kod, 0);
    }

    #[test]
    fn threads_contending_on_one_network_never_exceed_the_burst() {
        let n = std::sync::Arc::new(NetworkLimiter::new(
            &RateLimitConfig { burst: 64, leak: 16, ipv4_prefix: 24, clients: 4096, ..Default::default() },
            SEED,
        ));
        let allowed: usize = (0..4u32)
            .map(|t| {
                let n = n.clone();
                std::thread::spawn(move || {
                    let c = IpAddr::V4((0xC000_0200 + t).into());
                    (0..50_000).filter(|_| n.check(c, at(0.0), NEVER_LEAK) == RateDecision::Allow).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert!((64..=67).contains(&allowed), "allowed {allowed} at one instant");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p stratum-proto --release --lib loom`.
    use super::*;
    use loom::sync::Arc;

    const NOW: NtpTimestamp = NtpTimestamp::from_parts(3_900_000_000, 0);

    /// Two workers race for a network's last token: under every interleaving exactly one wins.
    #[test]
    fn the_last_network_token_is_taken_exactly_once() {
        loom::model(|| {
            let config = RateLimitConfig { clients: 8, burst: 2, leak: 16, ipv4_prefix: 24, ..Default::default() };
            let n = Arc::new(NetworkLimiter::new(&config, [1, 2]));
            let client: IpAddr = "192.0.2.1".parse().unwrap();
            assert_eq!(n.check(client, NOW, 1), RateDecision::Allow);
            let handles: Vec<_> = (0..2u8)
                .map(|i| {
                    let n = n.clone();
                    let other = IpAddr::V4([192, 0, 2, 10 + i].into());
                    loom::thread::spawn(move || (n.check(other, NOW, 1) == RateDecision::Allow) as usize)
                })
                .collect();
            assert_eq!(handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>(), 1);
            assert_eq!(n.check(client, NOW, 1), RateDecision::Drop);
        });
    }
}
