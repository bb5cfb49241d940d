//! Per-client rate limiting with chrony's semantics, lock-free and of fixed size.
//!
//! Clients are keyed by address prefix (IPv4 /32 and IPv6 /64 by default) through a hash with a
//! per-process random seed, into a set-associative table: each set is one cache line of eight
//! 64-bit records, `fingerprint:32 | tat:32`, followed by three lines of per-record detail
//! (sampled statistics, prefix, last sample time), so one set is one 256-byte [`SetBlock`]. A
//! decision reads the records line, and the statistics line next to it when it inserts or samples:
//! both lie in the [`PREFETCH_BYTES`] from [`RateLimiter::set_address`], which a worker prefetches
//! for a whole batch before deciding any of it. The bucket is a GCRA ("virtual scheduling") token
//! bucket, so its whole state is one theoretical arrival time (`tat`) and every update is a single
//! compare-and-swap of one word:
//!
//! - a request is within the limit when `tat - now <= (burst - 1) * interval`; then
//!   `tat = max(tat, now) + interval`;
//! - over the limit it is still answered with probability 1/2^leak (so a spoofed flood carrying a
//!   victim's address never silences the victim), else answered with a KoD RATE with probability
//!   1/2^kod when `kod > 0`, else dropped. Requests over the limit change nothing: hammering does not
//!   buy more than the leak gives.
//!
//! A miss replaces an empty record, else one whose bucket is full again (it carries no limiting
//! state), else the one with the fewest sampled requests: heavy hitters stay tracked while floods of
//! fresh addresses churn through the rest. Two cores meeting a new client at the same instant may each create a record for it; the
//! lookup then always uses the first, so the over-allowance is at most one request per racing core,
//! once, and the spare record ages out. Statistics (request and drop estimates, fast-retry detection) are sampled, one request in
//! 16, so a single hot key shared by every core writes its cache line only when it is allowed.
//!
//! Time and randomness are parameters; nothing here reads a clock or allocates after [`RateLimiter::new`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::atomic::{AtomicU64, Ordering};
use crate::time::NtpTimestamp;

pub mod network;
pub use network::{NetworkKey, NetworkLimiter, NETWORK_PREFETCH_BYTES};

/// Records per set: 8 x 8 bytes = one 64-byte cache line.
pub const WAYS: usize = 8;
/// Bytes from [`RateLimiter::set_address`] that a decision reads: the records line, and the
/// statistics line an insert (choosing a victim) or a sampled request reads next.
pub const PREFETCH_BYTES: usize = 128;
/// Bytes the table spends per tracked client: record, prefix, statistics, detection state.
pub const BYTES_PER_CLIENT: usize = 32;
/// Table time runs in 1/16 s units: NTP 32.32 shifted right by 28.
const TIME_SHIFT: u32 = 28;
/// Smallest `interval` (log2 seconds) the 1/16 s time unit can express.
pub const MIN_INTERVAL: i8 = -4;
pub const MAX_INTERVAL: i8 = 12;
/// Statistics are updated for one request in 2^SAMPLE_BITS, weighted accordingly.
const SAMPLE_BITS: u32 = 4;
const SAMPLE_WEIGHT: u64 = 1 << SAMPLE_BITS;
/// Consecutive fast sampled requests while limited before a client is flagged.
const FAST_STREAK_LIMIT: u8 = 8;
const FLAG_FAST: u8 = 1;
/// A debt this large (about 2 years of table time) cannot be real (the most a record can owe is
/// `(burst - 1 + 1) * interval`, at most 2^24 units): the record is so old that the 32-bit time
/// wrapped, and it is as good as new. Any smaller "debt" is honoured, so a caller whose clock lags
/// another worker's a little is limited, never reset.
const STALE_DEBT: i64 = 1 << 30;
/// Bounded retries when another core changes the same record between our read and our CAS.
const MAX_ATTEMPTS: usize = 4;

/// chrony's `ratelimit` knobs plus the table size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// log2 of the mean seconds between answered requests of one client.
    pub interval: i8,
    /// Requests a quiet client may send back to back.
    pub burst: u8,
    /// Over the limit, 1/2^leak of requests are still answered.
    pub leak: u8,
    /// Over the limit and not leaked, 1/2^kod of requests get a KoD RATE; 0 sends none.
    pub kod: u8,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Clients tracked (rounded up to a power of two).
    pub clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { interval: 3, burst: 8, leak: 2, kod: 0, ipv4_prefix: 32, ipv6_prefix: 64, clients: 1 << 20 }
    }
}

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the client's limit.
    Allow,
    /// Over the limit but picked (1/2^leak) to be answered anyway.
    Leak,
    /// Over the limit: answer with a Kiss-o'-Death RATE.
    Kod,
    /// Over the limit: no answer.
    Drop,
}

impl RateDecision {
    pub const fn is_answered(self) -> bool {
        matches!(self, Self::Allow | Self::Leak)
    }
}

/// A client's place in one limiter's table ([`RateLimiter::key`]): its prefix, record fingerprint
/// and set, computed once per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientKey {
    prefix: u64,
    fingerprint: u32,
    set: usize,
}

/// The decision plus what happened to the table, for the caller's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateOutcome {
    pub decision: RateDecision,
    /// A new record was created for this client.
    pub inserted: bool,
    /// Creating it evicted another client's record.
    pub evicted: bool,
    /// This request made the client count as one that retries fast while limited.
    pub flagged_fast: bool,
}

impl RateOutcome {
    const fn just(decision: RateDecision) -> Self {
        Self { decision, inserted: false, evicted: false, flagged_fast: false }
    }
}

/// One tracked client, as `stratumctl clients` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientUsage {
    /// The client's prefix as an address (host bits zero).
    pub address: IpAddr,
    pub prefix_len: u8,
    /// Estimated requests since the record was created (sampled; saturates at 16 M).
    pub requests: u64,
    /// Estimated requests not answered (dropped or KoD).
    pub limited: u64,
    /// Keeps sending fast while being limited.
    pub fast_retries: bool,
    /// When a request of it was last sampled, in table time units (1/16 s, the low 32 bits of
    /// the limiter's clock): [`seconds_since_seen`](Self::seconds_since_seen) makes it an age.
    /// Within about 16 requests of its latest; the table keeps no first-seen time.
    pub last_sampled: u32,
}

impl ClientUsage {
    /// Seconds from [`last_sampled`](Self::last_sampled) to `now`, `now` on the clock the
    /// limiter's checks were given (1/16 s steps; a sample time after `now` is 0).
    pub fn seconds_since_seen(&self, now: NtpTimestamp) -> f64 {
        let age = ((now.to_bits() >> TIME_SHIFT) as u32).wrapping_sub(self.last_sampled);
        if age > u32::MAX / 2 {
            return 0.0;
        }
        f64::from(age) / f64::from(1u32 << (32 - TIME_SHIFT))
    }
}

/// One set of the table: four cache lines of eight 64-bit words, one word per record (way) in
/// each. 128-byte aligned, so the two lines a decision reads are one aligned pair (the pair a
/// CPU's adjacent-line prefetcher fetches together) and never straddle a page.
///
/// `repr(C)`, nothing but `AtomicU64`s (which have the in-memory representation of `u64`): all-zero
/// bytes are an empty set, so memory a caller maps zero-filled (huge pages, see
/// [`TableMemory`]) can be viewed as `[SetBlock]`.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct SetBlock {
    /// The records, `fingerprint:32 | tat:32`.
    records: [AtomicU64; WAYS],
    /// Per record: sampled statistics, see [`Stats`].
    stats: [AtomicU64; WAYS],
    /// Per record: the client prefix, for display.
    prefixes: [AtomicU64; WAYS],
    /// Per record: when it was last sampled (table time units).
    meta: [AtomicU64; WAYS],
}

impl SetBlock {
    fn empty() -> Self {
        let zeroes = || core::array::from_fn(|_| AtomicU64::new(0));
        Self { records: zeroes(), stats: zeroes(), prefixes: zeroes(), meta: zeroes() }
    }
}

/// Memory for the table that the caller provides (stratumd maps it on huge pages where the kernel
/// gives them): [`RateLimiter::with_memory`] takes it. It must hold exactly
/// [`RateLimiter::sets_for`] blocks, all zero, and keep them at one place for its lifetime.
pub trait TableMemory: Send + Sync + core::fmt::Debug {
    fn blocks(&self) -> &[SetBlock];
}

/// Where the table lives: on the heap ([`RateLimiter::new`]) or in the caller's memory.
#[derive(Debug)]
enum Memory {
    Heap(Box<[SetBlock]>),
    Provided(Box<dyn TableMemory>),
}

/// [`RateLimiter::with_memory`] got memory of the wrong size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongTableSize {
    pub expected: usize,
    pub given: usize,
}

impl core::fmt::Display for WrongTableSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "rate-limiter table memory of {} sets where the configuration needs {}", self.given, self.expected)
    }
}

impl std::error::Error for WrongTableSize {}

/// The rate-limiter table. Shared by all workers (`&self` everywhere); the only shared mutable state
/// of the data plane.
#[derive(Debug)]
pub struct RateLimiter {
    memory: Memory,
    set_mask: usize,
    seed: [u64; 2],
    interval_units: u32,
    tolerance: u32,
    config: RateLimitConfig,
}

impl RateLimiter {
    /// Allocates the whole table now, on the heap; nothing allocates later. `seed` must be random
    /// per process.
    pub fn new(config: &RateLimitConfig, seed: [u64; 2]) -> Self {
        let sets = Self::sets_for(config);
        Self::build(config, seed, Memory::Heap((0..sets).map(|_| SetBlock::empty()).collect()), sets)
    }

    /// As [`new`](Self::new), the table in `memory`: [`sets_for`](Self::sets_for) zeroed blocks.
    pub fn with_memory(
        config: &RateLimitConfig,
        seed: [u64; 2],
        memory: Box<dyn TableMemory>,
    ) -> Result<Self, WrongTableSize> {
        let (expected, given) = (Self::sets_for(config), memory.blocks().len());
        if given != expected {
            return Err(WrongTableSize { expected, given });
        }
        Ok(Self::build(config, seed, Memory::Provided(memory), expected))
    }

    /// Sets (each a [`SetBlock`]) the table has for `config`: its clients rounded up to a power of
    /// two, [`WAYS`] to a set.
    pub fn sets_for(config: &RateLimitConfig) -> usize {
        config.clients.max(WAYS).next_power_of_two() / WAYS
    }

    fn build(config: &RateLimitConfig, seed: [u64; 2], memory: Memory, sets: usize) -> Self {
        let interval = config.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let interval_units = 1u32 << (interval - MIN_INTERVAL) as u32;
        Self {
            memory,
            set_mask: sets - 1,
            seed,
            interval_units,
            tolerance: interval_units.saturating_mul(u32::from(config.burst.max(1)) - 1),
            config: RateLimitConfig { interval, ..*config },
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Clients the table can track at once.
    pub fn capacity(&self) -> usize {
        self.blocks().len() * WAYS
    }

    /// True when the table lives in memory the caller provided ([`with_memory`](Self::with_memory)).
    pub fn in_provided_memory(&self) -> bool {
        matches!(self.memory, Memory::Provided(_))
    }

    #[inline(always)]
    fn blocks(&self) -> &[SetBlock] {
        match &self.memory {
            Memory::Heap(blocks) => blocks,
            Memory::Provided(memory) => memory.blocks(),
        }
    }

    /// Bytes the table occupies.
    pub fn memory_bytes(&self) -> usize {
        self.capacity() * BYTES_PER_CLIENT
    }

    /// Decides for one request from `client` arriving at `now`. `random` must be fresh random bits
    /// for every call.
    pub fn check(&self, client: IpAddr, now: NtpTimestamp, random: u64) -> RateOutcome {
        self.check_key(self.key(client), now, random)
    }

    /// `client`'s place in the table: what [`check`](Self::check) computes first. A worker that
    /// prefetches a batch computes it once, for [`key_address`](Self::key_address) and then
    /// [`check_key`](Self::check_key).
    #[inline]
    pub fn key(&self, client: IpAddr) -> ClientKey {
        let (prefix, is_v6) = self.prefix_of(client);
        let hash = self.hash(prefix, is_v6);
        ClientKey { prefix, fingerprint: fingerprint_of(hash, is_v6), set: hash as usize & self.set_mask }
    }

    /// As [`set_address`](Self::set_address), for a key.
    #[inline]
    pub fn key_address(&self, key: &ClientKey) -> *const u8 {
        self.blocks()[key.set & self.set_mask].records.as_ptr().cast()
    }

    /// [`check`](Self::check) for the client `key` was made for (by this limiter).
    pub fn check_key(&self, key: ClientKey, now: NtpTimestamp, random: u64) -> RateOutcome {
        let now = (now.to_bits() >> TIME_SHIFT) as u32;
        let ClientKey { prefix, fingerprint, set: set_index } = key;
        let block = &self.blocks()[set_index & self.set_mask];
        let set = &block.records;

        for _ in 0..MAX_ATTEMPTS {
            // The first way that holds this client: the loop's branch is taken once, where it is
            // found (a hot client is found at once), or never, for a client not in the table.
            let found = set.iter().enumerate().find_map(|(way, cell)| {
                let word = cell.load(Ordering::Relaxed);
                ((word >> 32) as u32 == fingerprint).then_some((way, word))
            });
            let Some((way, word)) = found else {
                let words: [u64; WAYS] = core::array::from_fn(|way| set[way].load(Ordering::Relaxed));
                let way = self.victim(block, &words, now);
                let old = words[way];
                let new = record(fingerprint, now.wrapping_add(self.interval_units));
                if set[way].compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                    continue;
                }
                // Only the record's own cache line is written; statistics follow on the sampled path.
                return RateOutcome {
                    decision: RateDecision::Allow,
                    inserted: true,
                    evicted: old != 0,
                    flagged_fast: false,
                };
            };
            let tat = word as u32;
            let debt = tat.wrapping_sub(now) as i32 as i64;
            if debt <= i64::from(self.tolerance) || debt > STALE_DEBT {
                // Within the limit (or a record so old its time wrapped: as good as new).
                let base = if (0..=STALE_DEBT).contains(&debt) { tat } else { now };
                let new = record(fingerprint, base.wrapping_add(self.interval_units));
                if set[way].compare_exchange(word, new, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                    continue;
                }
                self.sample(block, way, fingerprint, prefix, now, random, false);
                return RateOutcome::just(RateDecision::Allow);
            }
            let decision = self.over_limit(random);
            let flagged_fast = self.sample(block, way, fingerprint, prefix, now, random, !decision.is_answered());
            return RateOutcome { flagged_fast, ..RateOutcome::just(decision) };
        }
        // Four lost races on one set in a row: answer rather than guess; never silence a client.
        RateOutcome::just(RateDecision::Allow)
    }

    /// The record to replace (of `words`, the set as just read): an empty one; else one whose
    /// bucket is full again (it carries no limiting state), the longest idle first; else the one
    /// with the fewest sampled requests, so a heavy hitter outlives a flood of one-off addresses.
    /// Ties go to the first way. Each way's rank is one number, `class:2 | samples:20 | debt:32`
    /// above the way's index, and the lowest wins: no branch on the comparisons.
    fn victim(&self, block: &SetBlock, words: &[u64; WAYS], now: u32) -> usize {
        let mut best = u64::MAX;
        for (way, &word) in words.iter().enumerate() {
            let debt = (word as u32).wrapping_sub(now) as i32;
            // The debt's order as an unsigned number.
            let debt_rank = u64::from(debt as u32 ^ 0x8000_0000);
            let rank = if word == 0 {
                0
            } else if debt <= 0 || i64::from(debt) > STALE_DEBT {
                1 << 52 | debt_rank
            } else {
                let stats = Stats::unpack(block.stats[way].load(Ordering::Relaxed));
                let samples = if stats.tag == tag_of((word >> 32) as u32) { stats.samples } else { 0 };
                2 << 52 | u64::from(samples) << 32 | debt_rank
            };
            best = best.min(rank << 3 | way as u64);
        }
        (best & 7) as usize
    }

    fn over_limit(&self, random: u64) -> RateDecision {
        let leak_mask = (1u64 << self.config.leak.min(16)) - 1;
        if random & leak_mask == 0 {
            return RateDecision::Leak;
        }
        let kod = self.config.kod.min(16);
        if kod > 0 && (random >> 16) & ((1u64 << kod) - 1) == 0 {
            return RateDecision::Kod;
        }
        RateDecision::Drop
    }

    /// Updates the sampled statistics of record `index`, now owned by `fingerprint`; returns true
    /// when this request flags the client as one that keeps retrying fast while limited. A record's
    /// statistics carry a tag of their owner, so a new owner starts from zero without the insert
    /// having to write them.
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        block: &SetBlock,
        way: usize,
        fingerprint: u32,
        prefix: u64,
        now: u32,
        random: u64,
        limited: bool,
    ) -> bool {
        if (random >> 32) & (SAMPLE_WEIGHT - 1) != 0 {
            return false;
        }
        let tag = tag_of(fingerprint);
        let last = block.meta[way].load(Ordering::Relaxed) as u32;
        let mut current = block.stats[way].load(Ordering::Relaxed);
        for _ in 0..2 {
            let old = Stats::unpack(current);
            let fresh = old.tag != tag;
            let mut new = if fresh { Stats { tag, ..Stats::default() } } else { old };
            // Sampled requests come SAMPLE_WEIGHT times less often than real ones.
            let fast = !fresh && now.wrapping_sub(last) < self.interval_units.saturating_mul(SAMPLE_WEIGHT as u32);
            new.samples = (new.samples + 1).min(Stats::COUNT_MAX);
            new.limited = (new.limited + u32::from(limited)).min(Stats::COUNT_MAX);
            new.streak = if limited && fast { (new.streak + 1).min(Stats::STREAK_MAX) } else { 0 };
            let newly_flagged = new.streak >= FAST_STREAK_LIMIT && new.flags & FLAG_FAST == 0;
            if newly_flagged {
                new.flags |= FLAG_FAST;
            }
            match block.stats[way].compare_exchange(current, new.pack(), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    if fresh {
                        block.prefixes[way].store(prefix, Ordering::Relaxed);
                    }
                    // Unchanged within a time unit (1/16 s): a client hammered from every core
                    // then costs its line no write, only the statistics' CAS.
                    if last != now {
                        block.meta[way].store(u64::from(now), Ordering::Relaxed);
                    }
                    return newly_flagged;
                }
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Where `client`'s set is: the [`PREFETCH_BYTES`] from here are what deciding for it reads.
    /// A worker issues prefetch hints for a whole batch before deciding any of it, so that the
    /// misses overlap instead of stalling one by one. (The hint itself is the caller's: it needs
    /// an intrinsic this crate does not use.)
    pub fn set_address(&self, client: IpAddr) -> *const u8 {
        self.key_address(&self.key(client))
    }

    /// Records in use (a scan; for metrics, not the data plane).
    pub fn occupancy(&self) -> usize {
        self.blocks().iter().flat_map(|b| b.records.iter()).filter(|w| w.load(Ordering::Relaxed) != 0).count()
    }

    /// The `n` clients with the most (estimated) requests, read without stopping anyone. One pass
    /// over the table, keeping only the best `n` (a bounded heap), so memory stays O(n).
    pub fn top(&self, n: usize) -> Vec<ClientUsage> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if n == 0 {
            return Vec::new();
        }
        // Min-heap on (requests, limited, record index): the root is the weakest of the best n.
        let mut best: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::with_capacity(n + 1);
        let blocks = self.blocks();
        for (set_index, block) in blocks.iter().enumerate() {
            for (way, cell) in block.records.iter().enumerate() {
                let word = cell.load(Ordering::Relaxed);
                let index = set_index * WAYS + way;
                let stats = Stats::unpack(block.stats[way].load(Ordering::Relaxed));
                if word == 0 || stats.tag != tag_of((word >> 32) as u32) {
                    continue; // empty, or not sampled since this client took the record
                }
                best.push(Reverse((u64::from(stats.samples), u64::from(stats.limited), index)));
                if best.len() > n {
                    best.pop();
                }
            }
        }
        let mut top: Vec<ClientUsage> = best
            .into_iter()
            .map(|Reverse((_, _, index))| {
                let block = &blocks[index / WAYS];
                let word = block.records[index % WAYS].load(Ordering::Relaxed);
                let stats = Stats::unpack(block.stats[index % WAYS].load(Ordering::Relaxed));
                let prefix = block.prefixes[index % WAYS].load(Ordering::Relaxed);
                let (address, prefix_len) = if (word >> 63) == 1 {
                    (IpAddr::V6(Ipv6Addr::from(u128::from(prefix) << 64)), self.config.ipv6_prefix)
                } else {
                    (IpAddr::V4(Ipv4Addr::from(prefix as u32)), self.config.ipv4_prefix)
                };
                ClientUsage {
                    address,
                    prefix_len,
                    requests: u64::from(stats.samples) * SAMPLE_WEIGHT,
                    limited: u64::from(stats.limited) * SAMPLE_WEIGHT,
                    fast_retries: stats.flags & FLAG_FAST != 0,
                    last_sampled: block.meta[index % WAYS].load(Ordering::Relaxed) as u32,
                }
            })
            .collect();
        top.sort_unstable_by(|a, b| b.requests.cmp(&a.requests).then(b.limited.cmp(&a.limited)));
        top
    }

    /// The client's key: its address masked to the configured prefix.
    fn prefix_of(&self, client: IpAddr) -> (u64, bool) {
        prefix_key(client, self.config.ipv4_prefix, self.config.ipv6_prefix)
    }

    fn hash(&self, prefix: u64, is_v6: bool) -> u64 {
        keyed_hash(&self.seed, prefix, is_v6)
    }
}

/// `client` masked to its prefix (an IPv4-mapped IPv6 address as the IPv4 one), and whether it
/// is IPv6.
#[inline(always)]
fn prefix_key(client: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> (u64, bool) {
    match client {
        IpAddr::V4(v4) => (u64::from(mask32(u32::from(v4), ipv4_prefix)), false),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u64::from(mask32(u32::from(v4), ipv4_prefix)), false),
            None => (mask64((u128::from(v6) >> 64) as u64, ipv6_prefix), true),
        },
    }
}

/// The keyed hash of a prefix: the seed is random per process, so nobody outside can aim
/// addresses at one set.
#[inline(always)]
fn keyed_hash(seed: &[u64; 2], prefix: u64, is_v6: bool) -> u64 {
    let family = if is_v6 { 0x6A09_E667_F3BC_C908 } else { 0xBB67_AE85_84CA_A73B };
    let h = fold_mul(prefix ^ seed[0], seed[1] ^ family);
    fold_mul(h ^ (h >> 29), 0x9E37_79B9_7F4A_7C15)
}

/// A record's fingerprint from its prefix's hash: 31 bits of the hash and the family, never 0
/// (0 is an empty record).
#[inline(always)]
const fn fingerprint_of(hash: u64, is_v6: bool) -> u32 {
    let f = ((hash >> 32) as u32) & 0x7FFF_FFFF | (is_v6 as u32) << 31;
    if f == 0 {
        1
    } else {
        f
    }
}

/// A record's sampled statistics, one word: `tag:16 | samples:20 | limited:20 | streak:6 | flags:2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    /// Low bits of the owner's fingerprint (never 0); a mismatch means "not this client's".
    tag: u16,
    samples: u32,
    limited: u32,
    streak: u8,
    flags: u8,
}

impl Stats {
    const COUNT_MAX: u32 = (1 << 20) - 1;
    const STREAK_MAX: u8 = 63;

    const fn unpack(w: u64) -> Self {
        Self {
            tag: (w >> 48) as u16,
            samples: ((w >> 28) & 0xF_FFFF) as u32,
            limited: ((w >> 8) & 0xF_FFFF) as u32,
            streak: ((w >> 2) & 0x3F) as u8,
            flags: (w & 3) as u8,
        }
    }

    const fn pack(self) -> u64 {
        (self.tag as u64) << 48
            | (self.samples as u64 & 0xF_FFFF) << 28
            | (self.limited as u64 & 0xF_FFFF) << 8
            | (self.streak as u64 & 0x3F) << 2
            | (self.flags as u64 & 3)
    }
}

const fn tag_of(fingerprint: u32) -> u16 {
    let tag = fingerprint as u16;
    if tag == 0 {
        1
    } else {
        tag
    }
}

const fn record(fingerprint: u32, tat: u32) -> u64 {
    (fingerprint as u64) << 32 | tat as u64
}

const fn mask32(v: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        v
    } else {
        v & !(u32::MAX >> len)
    }
}

const fn mask64(v: u64, len: u8) -> u64 {
    if len == 0 {
        0
    } else if len >= 64 {
        v
    } else {
        v & !(u64::MAX >> len)
    }
}

/// Folded 64x64->128 multiply: the mixing step of fast keyed hashes (foldhash, ahash's fallback).
const fn fold_mul(a: u64, b: u64) -> u64 {
    let full = (a as u128) * (b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SEED: [u64; 2] = [0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210];

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_bits(((3_900_000_000.0 + seconds) * 4_294_967_296.0) as u64)
    }

    fn limiter(config: RateLimitConfig) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig { clients: 1024, ..config }, SEED)
    }

    /// A small deterministic generator for the random bits, so tests repeat exactly.
    struct Bits(u64);
    impl Bits {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 ^ (self.0 >> 31)
        }
    }

    const NEVER_LEAK: u64 = 1; // low bits non-zero: not leaked; bits 16.. zero
    const NEVER_SAMPLED: u64 = 1 << 32;

    #[test]
    fn burst_then_one_per_interval() {
        let l = limiter(RateLimitConfig::default());
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..8 {
            assert_eq!(l.check(c, at(0.0), NEVER_LEAK).decision, RateDecision::Allow, "burst request {i}");
        }
        assert_eq!(l.check(c, at(0.0), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
        assert_eq!(l.check(c, at(7.9), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
        assert_eq!(l.check(c, at(8.0), NEVER_LEAK).decision, RateDecision::Allow);
        assert_eq!(l.check(c, at(8.5), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
        // After a long quiet spell the whole burst is back, and no more.
        let allowed = (0..20).filter(|_| l.check(c, at(10_000.0), NEVER_LEAK | 0xFF00).decision.is_answered()).count();
        assert_eq!(allowed, 8);
    }

    #[test]
    fn row23_steady_one_per_second_gets_about_one_in_2_pow_leak() {
        let l = limiter(RateLimitConfig { leak: 2, ..Default::default() });
        let c: IpAddr = "192.0.2.2".parse().unwrap();
        let mut bits = Bits(7);
        let n = 20_000;
        let answered = (0..n).filter(|i| l.check(c, at(*i as f64), bits.next()).decision.is_answered()).count();
        // 1/8 within the limit plus 1/4 of the remaining 7/8 leaked: 0.125 + 0.219 = 0.344.
        let fraction = answered as f64 / n as f64;
        assert!((fraction - 0.344).abs() < 0.02, "{fraction}");
    }

    #[test]
    fn kod_only_when_configured_and_at_its_rate() {
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let mut bits = Bits(9);
        let none = limiter(RateLimitConfig { kod: 0, burst: 1, ..Default::default() });
        assert!((0..2000).all(|_| none.check(c, at(1.0), bits.next()).decision != RateDecision::Kod));
        let some = limiter(RateLimitConfig { kod: 1, leak: 2, burst: 1, ..Default::default() });
        let kods = (0..20_000).filter(|_| some.check(c, at(1.0), bits.next()).decision == RateDecision::Kod).count();
        // Of the 3/4 not leaked, half get a KoD: 0.375.
        assert!((kods as f64 / 20_000.0 - 0.375).abs() < 0.02, "{kods}");
    }

    #[test]
    fn row24_and_26_ports_and_one_ipv6_64_are_one_client() {
        let l = limiter(RateLimitConfig { burst: 2, ..Default::default() });
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(a, at(0.0), NEVER_LEAK).decision.is_answered());
        assert!(l.check(b, at(0.0), NEVER_LEAK).decision.is_answered());
        assert_eq!(l.check(a, at(0.0), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop, "same /64");
        assert!(l.check(other, at(0.0), NEVER_LEAK).decision.is_answered(), "another /64");
        // IPv4-mapped IPv6 is the IPv4 client.
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(l.check(v4, at(0.0), NEVER_LEAK).decision.is_answered());
        assert!(l.check(mapped, at(0.0), NEVER_LEAK).decision.is_answered());
        assert_eq!(l.check(v4, at(0.0), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
    }

    #[test]
    fn prefix_lengths_are_configurable() {
        let l = limiter(RateLimitConfig { burst: 1, ipv4_prefix: 24, ipv6_prefix: 48, ..Default::default() });
        assert!(l.check("198.51.100.1".parse().unwrap(), at(0.0), NEVER_LEAK).decision.is_answered());
        let same_24 = l.check("198.51.100.200".parse().unwrap(), at(0.0), NEVER_LEAK | 0xFF00);
        assert_eq!(same_24.decision, RateDecision::Drop);
        assert!(l.check("2001:db8:5::1".parse().unwrap(), at(0.0), NEVER_LEAK).decision.is_answered());
        let same_48 = l.check("2001:db8:5:ffff::1".parse().unwrap(), at(0.0), NEVER_LEAK | 0xFF00);
        assert_eq!(same_48.decision, RateDecision::Drop);
    }

    #[test]
    fn row25_victim_of_a_spoofed_flood_still_gets_answers() {
        let l = limiter(RateLimitConfig { leak: 2, ..Default::default() });
        let victim: IpAddr = "203.0.113.7".parse().unwrap();
        let mut bits = Bits(3);
        // The flood: 1000 spoofed requests a second for 60 s.
        for i in 0..60_000 {
            l.check(victim, at(i as f64 / 1000.0), bits.next());
        }
        // The victim's own requests, one every 64 s, are answered at least 1 in 4.
        let answered = (0..400)
            .filter(|i| l.check(victim, at(60.0 + *i as f64 * 0.5), bits.next()).decision.is_answered())
            .count();
        assert!(answered as f64 / 400.0 >= 0.2, "{answered}");
    }

    #[test]
    fn row27_many_distinct_sources_keep_memory_flat_and_heavy_hitters_tracked() {
        let l = RateLimiter::new(&RateLimitConfig { clients: 4096, burst: 1, ..Default::default() }, SEED);
        let bytes = l.memory_bytes();
        let heavy: IpAddr = "198.51.100.99".parse().unwrap();
        let mut bits = Bits(5);
        let mut evictions = 0;
        for i in 0..200_000u32 {
            let t = at(i as f64 / 100_000.0);
            // The heavy hitter keeps hammering; everyone else appears once.
            assert!(l.check(heavy, t, bits.next() | NEVER_LEAK).decision != RateDecision::Allow || i == 0);
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i * 7));
            evictions += l.check(spoofed, t, bits.next()).evicted as u32;
        }
        assert_eq!(l.memory_bytes(), bytes, "memory fixed");
        assert!(evictions > 150_000, "the table churned: {evictions}");
        assert!(l.occupancy() <= l.capacity());
        assert_eq!(l.top(1)[0].address, heavy, "the heavy hitter is still tracked and on top");
    }

    #[test]
    fn row28_seed_changes_the_placement() {
        let a = RateLimiter::new(&RateLimitConfig { clients: 1 << 16, ..Default::default() }, SEED);
        let b = RateLimiter::new(&RateLimitConfig { clients: 1 << 16, ..Default::default() }, [1, 2]);
        let same = (0..1000u32)
            .filter(|i| {
                let (p, v6) = a.prefix_of(IpAddr::V4(Ipv4Addr::from(*i)));
                (a.hash(p, v6) as usize & a.set_mask) == (b.hash(p, v6) as usize & b.set_mask)
            })
            .count();
        assert!(same < 10, "{same} of 1000 addresses share a set under two seeds");
    }

    #[test]
    fn row29_pool_monitor_and_iburst_are_always_answered() {
        let l = limiter(RateLimitConfig::default());
        let mut bits = Bits(11);
        // iburst: 8 requests 2 s apart, then polling every 64 s; never limited.
        let client: IpAddr = "192.0.2.50".parse().unwrap();
        for i in 0..8 {
            assert_eq!(l.check(client, at(i as f64 * 2.0), bits.next()).decision, RateDecision::Allow);
        }
        for i in 1..50 {
            assert_eq!(l.check(client, at(14.0 + i as f64 * 64.0), bits.next()).decision, RateDecision::Allow);
        }
        // The pool monitor: 3 requests 2 s apart, every few minutes.
        let monitor: IpAddr = "2001:db8:feed::123".parse().unwrap();
        for round in 0..20 {
            for i in 0..3 {
                let t = round as f64 * 240.0 + i as f64 * 2.0;
                assert_eq!(l.check(monitor, at(t), bits.next()).decision, RateDecision::Allow);
            }
        }
    }

    #[test]
    fn row32_fast_retries_while_limited_are_flagged_without_more_answers() {
        let l = limiter(RateLimitConfig { leak: 2, ..Default::default() });
        let c: IpAddr = "192.0.2.77".parse().unwrap();
        let mut bits = Bits(13);
        let mut flagged = 0;
        let mut answered = 0;
        let n = 10_000;
        for i in 0..n {
            let o = l.check(c, at(i as f64 / 100.0), bits.next());
            flagged += o.flagged_fast as u32;
            answered += o.decision.is_answered() as u32;
        }
        assert_eq!(flagged, 1, "flagged once");
        assert!(l.top(1)[0].fast_retries);
        // At 100 requests/s the answered fraction is the leak (1/4), not more.
        assert!((answered as f64 / n as f64) < 0.27, "{answered}");
        // A client at its limit is never flagged.
        let polite: IpAddr = "192.0.2.78".parse().unwrap();
        let flagged_polite =
            (0..500).filter(|i| l.check(polite, at(*i as f64 * 8.0), bits.next()).flagged_fast).count();
        assert_eq!(flagged_polite, 0);
    }

    #[test]
    fn top_reports_prefixes_and_estimates() {
        let l = limiter(RateLimitConfig { burst: 1, ..Default::default() });
        let mut bits = Bits(17);
        for _ in 0..1600 {
            l.check("198.51.100.1".parse().unwrap(), at(0.0), bits.next());
        }
        for _ in 0..160 {
            l.check("2001:db8::5".parse().unwrap(), at(0.0), bits.next());
        }
        let top = l.top(5);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].address, top[0].prefix_len), ("198.51.100.1".parse().unwrap(), 32));
        assert_eq!((top[1].address, top[1].prefix_len), ("2001:db8::".parse().unwrap(), 64));
        assert!((1000..2200).contains(&top[0].requests), "{top:?}");
        assert!(top[0].limited > top[0].requests / 2);
    }

    #[test]
    fn top_reports_when_a_client_was_last_sampled() {
        let l = limiter(RateLimitConfig::default());
        let sampled = 0u64; // bits 32..36 zero: every request sampled
        l.check("192.0.2.1".parse().unwrap(), at(10.0), sampled);
        l.check("192.0.2.1".parse().unwrap(), at(20.5), sampled);
        let top = l.top(1);
        // Table time has 1/16 s steps.
        let age = top[0].seconds_since_seen(at(100.0));
        assert!((age - 79.5).abs() < 1.0 / 16.0, "{age}");
        assert_eq!(top[0].seconds_since_seen(at(20.0)), 0.0, "a sample time after now is 0");
    }

    #[test]
    fn never_sampled_requests_leave_no_statistics() {
        let l = limiter(RateLimitConfig::default());
        l.check("192.0.2.1".parse().unwrap(), at(0.0), NEVER_SAMPLED);
        assert!(l.top(1).is_empty());
        assert_eq!(l.occupancy(), 1);
    }

    #[test]
    fn stats_pack_round_trips() {
        let s = Stats { tag: 0xBEEF, samples: Stats::COUNT_MAX, limited: 12345, streak: 63, flags: 1 };
        assert_eq!(Stats::unpack(s.pack()), s);
        assert_eq!(tag_of(0x1234_0000), 1);
    }

    #[test]
    fn a_new_owner_does_not_inherit_statistics() {
        // One set (8 ways), burst 1: nine clients force an eviction.
        let l = RateLimiter::new(&RateLimitConfig { clients: 8, burst: 1, ..Default::default() }, SEED);
        let sampled = 0u64; // bits 32..36 zero: every request sampled
        for _ in 0..50 {
            l.check("192.0.2.1".parse().unwrap(), at(0.0), sampled | 1);
        }
        for i in 2..=9 {
            l.check(format!("192.0.2.{i}").parse().unwrap(), at(0.0), sampled | 1);
        }
        let top = l.top(16);
        assert!(top.iter().all(|c| c.requests <= 50 * SAMPLE_WEIGHT), "{top:?}");
        assert_eq!(top.iter().filter(|c| c.requests > 16).count(), 1, "only the heavy client has many: {top:?}");
    }

    #[test]
    fn set_address_points_into_the_table() {
        let l = limiter(RateLimitConfig::default());
        let start = l.blocks().as_ptr() as usize;
        let end = start + core::mem::size_of_val(l.blocks());
        let at = l.set_address("192.0.2.1".parse().unwrap()) as usize;
        assert!((start..end).contains(&at) && at % PREFETCH_BYTES == 0);
    }

    #[derive(Debug)]
    struct Provided(Box<[SetBlock]>);
    impl TableMemory for Provided {
        fn blocks(&self) -> &[SetBlock] {
            &self.0
        }
    }

    #[test]
    fn provided_memory_of_the_right_size_holds_the_table() {
        let config = RateLimitConfig { clients: 1024, burst: 1, ..Default::default() };
        let blocks = |n: usize| Box::new(Provided((0..n).map(|_| SetBlock::empty()).collect()));
        let err = RateLimiter::with_memory(&config, SEED, blocks(127)).unwrap_err();
        assert_eq!(err, WrongTableSize { expected: 128, given: 127 });
        let l = RateLimiter::with_memory(&config, SEED, blocks(128)).unwrap();
        assert!(l.in_provided_memory() && !limiter(config).in_provided_memory());
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(c, at(0.0), 0).decision.is_answered());
        assert_eq!(l.check(c, at(0.0), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
        assert_eq!((l.capacity(), l.occupancy(), l.top(1)[0].address), (1024, 1, c));
    }

    #[test]
    fn a_lagging_clock_is_limited_not_reset() {
        let l = limiter(RateLimitConfig { burst: 2, ..Default::default() });
        let c: IpAddr = "192.0.2.5".parse().unwrap();
        assert!(l.check(c, at(100.0), NEVER_LEAK).decision.is_answered());
        assert!(l.check(c, at(100.0), NEVER_LEAK).decision.is_answered());
        // Another worker whose batch time is a minute older must not see a fresh bucket.
        for _ in 0..10 {
            assert_eq!(l.check(c, at(40.0), NEVER_LEAK | 0xFF00).decision, RateDecision::Drop);
        }
        // A record untouched for years (time wrapped) is as good as new.
        assert!(l.check(c, at(100.0 + 3.0 * 365.0 * 86_400.0), NEVER_LEAK).decision.is_answered());
    }

    #[test]
    fn sizes() {
        let l = RateLimiter::new(&RateLimitConfig { clients: 1_000_000, ..Default::default() }, SEED);
        assert_eq!(l.capacity(), 1 << 20);
        assert_eq!(l.memory_bytes(), 32 << 20);
        assert_eq!(core::mem::size_of::<SetBlock>(), WAYS * BYTES_PER_CLIENT);
        assert_eq!(core::mem::align_of::<SetBlock>(), PREFETCH_BYTES);
        assert_eq!(RateLimiter::sets_for(&RateLimitConfig { clients: 1_000_000, ..Default::default() }), 1 << 17);
    }

    #[test]
    fn threads_contending_on_one_key_never_exceed_the_burst() {
        let l = std::sync::Arc::new(limiter(RateLimitConfig { burst: 8, leak: 16, ..Default::default() }));
        let c: IpAddr = "192.0.2.200".parse().unwrap();
        let allowed: usize = (0..4)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut bits = Bits(t + 100);
                    (0..50_000).filter(|_| l.check(c, at(0.0), bits.next() | 1).decision == RateDecision::Allow).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        // The burst, plus at most one per racing thread when they all meet the new client at once.
        assert!((8..=11).contains(&allowed), "allowed {allowed} at one instant");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p stratum-proto --release --lib loom`.
    use super::*;
    use loom::sync::Arc;

    fn shared(burst: u8) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(&RateLimitConfig { clients: 8, burst, leak: 16, ..Default::default() }, [1, 2]))
    }

    const NOW: NtpTimestamp = NtpTimestamp::from_parts(3_900_000_000, 0);
    const NOT_SAMPLED: u64 = 1 | 1 << 32;

    fn racing_checks(l: &Arc<RateLimiter>, client: IpAddr) -> usize {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                loom::thread::spawn(move || {
                    (l.check(client, NOW, NOT_SAMPLED).decision == RateDecision::Allow) as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    }

    /// Two workers race for a client's last token: under every interleaving exactly one wins.
    #[test]
    fn the_last_token_is_taken_exactly_once() {
        loom::model(|| {
            let l = shared(2);
            let client: IpAddr = "192.0.2.1".parse().unwrap();
            assert_eq!(l.check(client, NOW, NOT_SAMPLED).decision, RateDecision::Allow);
            assert_eq!(racing_checks(&l, client), 1);
            assert_eq!(l.check(client, NOW, NOT_SAMPLED).decision, RateDecision::Drop);
        });
    }

    /// Two workers meet a new client at once: both are answered (within the burst) and the table
    /// holds at most the two records the race can create, never a torn one.
    #[test]
    fn first_contact_race_is_bounded() {
        loom::model(|| {
            let l = shared(2);
            let client: IpAddr = "192.0.2.1".parse().unwrap();
            assert_eq!(racing_checks(&l, client), 2);
            assert!((1..=2).contains(&l.occupancy()));
            // Whatever record the lookup now finds has used at least one token.
            assert!(l.check(client, NOW, NOT_SAMPLED).decision != RateDecision::Allow || l.occupancy() == 2);
        });
    }
}
