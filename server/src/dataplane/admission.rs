//! The server's admission policy: the access list, then the rate limiter, in front of every
//! well-formed request. One per worker (its own random bits); the limiter table is shared, on huge
//! pages where the kernel gives them (`stratum_host::hugemem`).
//!
//! Batches are decided in two passes: the worker first calls [`WorkerPolicy::prepare`] for every
//! request of a batch (each client's limiter key is computed once and its set prefetched), then
//! answers them in order; [`AdmissionPolicy::admit`] takes the prepared key. With a million
//! distinct clients each set is a cache miss; prepared a batch ahead, the misses overlap.
//!
//! Behind the per-client bucket a second, coarser one per network (a /24, a /48 by default; its
//! own table, `coarse` in the config) is checked for the requests the client's bucket allows, so
//! a flood spread over many spoofed addresses of one network is answered at most that network's
//! budget plus its leak, while a client over its own limit (already limited to its leak) costs no
//! second lookup. Both keys are computed and both sets prefetched in the same first pass; the
//! network table ([`NetworkLimiter`]) is records only, one line a set (512 KiB for the default
//! 64 k networks), so its sets mostly stay in cache and a decision reads one line of it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use stratum_proto::server::access::{AccessList, AccessVerdict};
use stratum_proto::server::ratelimit::{
    ClientKey, NetworkKey, NetworkLimiter, RateDecision, RateLimitConfig, RateLimiter, RateOutcome,
    NETWORK_PREFETCH_BYTES, PREFETCH_BYTES,
};
use stratum_proto::{AdmissionPolicy, AdmitAction, ClientRequest, DropReason, KissCode, NtpTimestamp, RxMeta};

use crate::config::{Config, DenyAction};
use crate::dataplane::prefetch::prefetch;
use crate::dataplane::stats::WorkerCounters;

/// Requests of one batch whose keys [`WorkerPolicy::prepare`] keeps (the largest batch either
/// backend takes); later ones are keyed when decided.
pub const MAX_PREPARED: usize = 256;
/// How far [`AdmissionPolicy::admit`] looks ahead among the prepared keys for its client: past
/// requests that never reached admission (malformed, truncated), never a whole batch.
const LOOK_AHEAD: usize = 8;

/// What every worker's policy shares: built once at start.
#[derive(Debug, Clone)]
pub struct Admission {
    pub access: Arc<AccessList>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// The coarse per-network bucket (only with `limiter`).
    pub coarse: Option<Arc<NetworkLimiter>>,
    pub deny_action: DenyAction,
    /// Whole-server budgets (replies a second; 0: none): first contacts, kiss-o'-death.
    pub first_contacts_per_second: u64,
    pub kods_per_second: u64,
}

/// A token bucket of one worker's share of a whole-server budget: no shared cache line, so no
/// worker ever waits on another. A second's worth of burst.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Tokens a nanosecond (the worker's share of the rate).
    per_ns: f64,
    burst: f64,
    tokens: f64,
    last: NtpTimestamp,
}

impl Budget {
    /// `per_second` for the whole server, split over `workers`; None without a budget.
    fn new(per_second: u64, workers: usize, now: NtpTimestamp) -> Option<Self> {
        (per_second > 0).then(|| {
            let share = per_second as f64 / workers.max(1) as f64;
            Self { per_ns: share / 1e9, burst: share.max(1.0), tokens: share.max(1.0), last: now }
        })
    }

    /// Takes one token at `now` (the batch's time); false when the budget is spent.
    fn take(&mut self, now: NtpTimestamp) -> bool {
        let elapsed = now.since(self.last).to_nanos().max(0) as f64;
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_ns).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Admission {
    /// `loopback_is_martian` is false for the socket backend (see [`AccessList::new`]).
    pub fn from_config(config: &Config, loopback_is_martian: bool) -> Self {
        let access = AccessList::new(&config.access.allow, &config.access.deny, loopback_is_martian);
        let limiter = config.ratelimit.as_ref().filter(|r| r.enabled).map(|r| {
            let seed = [rand::random(), rand::random()];
            Arc::new(limiter_on_huge_pages(&r.to_proto(), seed, "rate-limiter table"))
        });
        // On the heap: 512 KiB by default, within the reach of the TLB's 4 KiB entries.
        let coarse = config.ratelimit.as_ref().filter(|r| r.enabled).and_then(|r| r.to_coarse_proto()).map(|c| {
            let networks = NetworkLimiter::new(&c, [rand::random(), rand::random()]);
            tracing::info!(bytes = networks.memory_bytes(), "coarse rate-limiter table on the heap");
            Arc::new(networks)
        });
        let budget = |f: fn(&crate::config::RateLimitConfig) -> u64| {
            config.ratelimit.as_ref().filter(|r| r.enabled).map_or(0, f)
        };
        Self {
            access: Arc::new(access),
            limiter,
            coarse,
            deny_action: config.access.deny_action,
            first_contacts_per_second: budget(|r| r.first_contacts_per_second),
            kods_per_second: budget(|r| r.kods_per_second),
        }
    }

    /// The policy of one of `workers` workers: its share of the whole-server budgets.
    pub fn for_worker(&self, counters: Arc<WorkerCounters>, workers: usize) -> WorkerPolicy {
        let now = stratum_host::clock::monotonic();
        WorkerPolicy {
            shared: self.clone(),
            rng: StdRng::from_entropy(),
            counters,
            first_contacts: Budget::new(self.first_contacts_per_second, workers, now),
            kods: Budget::new(self.kods_per_second, workers, now),
            now,
            prepared: Prepared {
                entries: Box::new([(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None, None); MAX_PREPARED]),
                len: 0,
                cursor: 0,
            },
        }
    }
}

/// The limiter's table mapped on huge pages (`MAP_HUGETLB` or transparent huge pages), else on
/// the heap as before; the start-up log says which.
fn limiter_on_huge_pages(config: &RateLimitConfig, seed: [u64; 2], what: &str) -> RateLimiter {
    let mapped = stratum_host::hugemem::LimiterMemory::map(config).map_err(|e| e.to_string()).and_then(|memory| {
        let pages = memory.pages();
        let limiter = RateLimiter::with_memory(config, seed, Box::new(memory)).map_err(|e| e.to_string())?;
        Ok((limiter, pages))
    });
    match mapped {
        Ok((limiter, pages)) => {
            tracing::info!(bytes = limiter.memory_bytes(), "{what} on {pages}");
            limiter
        }
        Err(error) => {
            tracing::info!(%error, "{what} on the heap (no mapping for huge pages)");
            RateLimiter::new(config, seed)
        }
    }
}

/// One worker's policy.
#[derive(Debug)]
pub struct WorkerPolicy {
    shared: Admission,
    rng: StdRng,
    counters: Arc<WorkerCounters>,
    /// This worker's shares of the whole-server budgets (None: no budget).
    first_contacts: Option<Budget>,
    kods: Option<Budget>,
    /// The rate limiter's clock: monotonic (a step of the real-time clock must not refill or
    /// drain every bucket), read by the worker once per batch.
    now: NtpTimestamp,
    prepared: Prepared,
}

/// One prepared request: its client, its limiter key and its coarse key (None: none made).
type PreparedEntry = (IpAddr, Option<ClientKey>, Option<NetworkKey>);

/// The batch's clients in order, with their limiter keys, client and coarse
/// ([`WorkerPolicy::prepare`]).
#[derive(Debug)]
struct Prepared {
    entries: Box<[PreparedEntry; MAX_PREPARED]>,
    len: usize,
    /// The first entry `admit` has not used.
    cursor: usize,
}

impl Prepared {
    /// `client`'s keys (client; coarse, when there is a coarse bucket), when it is among the next
    /// few prepared.
    #[inline]
    fn take(&mut self, client: IpAddr) -> Option<(ClientKey, Option<NetworkKey>)> {
        let end = self.len.min(self.cursor + LOOK_AHEAD);
        for i in self.cursor..end {
            if let (ip, Some(key), coarse) = self.entries[i] {
                if ip == client {
                    self.cursor = i + 1;
                    return Some((key, coarse));
                }
            }
        }
        None
    }
}

impl WorkerPolicy {
    /// Starts a batch: its limiter time, and no prepared keys yet.
    pub fn set_time(&mut self, now: NtpTimestamp) {
        self.now = now;
        self.prepared.len = 0;
        self.prepared.cursor = 0;
    }

    /// The first pass over a batch, once per request in the order they will be decided: computes
    /// `client`'s limiter key and prefetches its set. A hint only; a request never prepared is
    /// decided the same way.
    #[inline]
    pub fn prepare(&mut self, client: IpAddr) {
        let Some(limiter) = &self.shared.limiter else { return };
        let key = limiter.key(client);
        prefetch(limiter.key_address(&key), PREFETCH_BYTES);
        let coarse = self.shared.coarse.as_ref().map(|coarse| {
            let key = coarse.key(client);
            prefetch(coarse.key_address(&key), NETWORK_PREFETCH_BYTES);
            key
        });
        let p = &mut self.prepared;
        if p.len < MAX_PREPARED {
            p.entries[p.len] = (client, Some(key), coarse);
            p.len += 1;
        }
    }

    /// True when the batch's requests are prepared ([`prepare`](Self::prepare) does something).
    pub fn prepares(&self) -> bool {
        self.shared.limiter.is_some()
    }
}

impl WorkerPolicy {
    /// The limiter's decision for `ip` (prepared keys where there are): its own bucket, then, for
    /// a request that bucket allows, its network's coarse bucket, whose over-the-limit decision
    /// (leak or drop, never a KoD) replaces the allow. The table counters are the client's; a
    /// coarse leak counts as leaked.
    /// None without a limiter.
    #[inline]
    fn limit(&mut self, ip: IpAddr) -> Option<RateOutcome> {
        let limiter = self.shared.limiter.as_deref()?;
        let (key, coarse_key) = match self.prepared.take(ip) {
            Some(keys) => keys,
            None => (limiter.key(ip), self.shared.coarse.as_ref().map(|c| c.key(ip))),
        };
        let random = self.rng.next_u64();
        let mut outcome = limiter.check_key(key, self.now, random);
        if outcome.decision == RateDecision::Allow {
            if let (Some(coarse), Some(coarse_key)) = (&self.shared.coarse, coarse_key) {
                // The client's allow used none of the bits the coarse decision reads (leak: the
                // low 16; sampling: 32..36, here the client's low bits): no second draw.
                outcome.decision = coarse.check_key(coarse_key, self.now, random.rotate_left(32));
            }
        }
        self.counters.count_rate_outcome(&outcome);
        Some(outcome)
    }

    /// A kiss-o'-death within the whole-server budget, else the drop it becomes.
    fn kiss(&mut self, code: KissCode, poll: i8, otherwise: DropReason) -> AdmitAction {
        let now = self.now;
        if self.kods.as_mut().is_some_and(|budget| !budget.take(now)) {
            return AdmitAction::Drop(otherwise);
        }
        AdmitAction::Kod { code, poll }
    }

    /// A denied or not-allowed client: dropped, or with deny-action = "kod" a kiss-o'-death that
    /// goes through the rate limiter and the KoD budget like any other, so that a spoofed flood
    /// of denied sources is not answered one for one.
    fn refuse(&mut self, ip: IpAddr, code: KissCode) -> AdmitAction {
        if self.shared.deny_action == DenyAction::Drop {
            return AdmitAction::Drop(DropReason::Denied);
        }
        if let Some(outcome) = self.limit(ip) {
            if outcome.decision == RateDecision::Drop {
                return AdmitAction::Drop(DropReason::Denied);
            }
        }
        self.kiss(code, 0, DropReason::Denied)
    }
}

impl AdmissionPolicy for WorkerPolicy {
    fn admit(&mut self, rx: &RxMeta, _: &ClientRequest) -> AdmitAction {
        let ip = rx.client.ip();
        match self.shared.access.check(ip) {
            AccessVerdict::Allow => {}
            AccessVerdict::Martian => return AdmitAction::Drop(DropReason::Martian),
            AccessVerdict::Deny => return self.refuse(ip, KissCode::Deny),
            AccessVerdict::NotAllowed => return self.refuse(ip, KissCode::Rstr),
        }
        let Some(outcome) = self.limit(ip) else {
            return AdmitAction::Serve;
        };
        // A client the table had no record of is answered within the first-contact budget only:
        // a flood from N spoofed sources is not reflected N for N.
        if outcome.inserted && self.first_contacts.as_mut().is_some_and(|b| !b.take(self.now)) {
            return AdmitAction::Drop(DropReason::RateLimited);
        }
        match outcome.decision {
            RateDecision::Allow | RateDecision::Leak => AdmitAction::Serve,
            RateDecision::Kod => {
                let poll = self.shared.limiter.as_ref().map_or(0, |l| l.config().interval);
                self.kiss(KissCode::Rate, poll, DropReason::RateLimited)
            }
            RateDecision::Drop => AdmitAction::Drop(DropReason::RateLimited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::NtpTimestamp;

    fn policy(extra: &str) -> WorkerPolicy {
        let text = format!("[server]\nlisten = [\"127.0.0.1:1\"]\n[clock]\nsource = \"local\"\n{extra}");
        let config = Config::parse(&text, "t").unwrap();
        Admission::from_config(&config, false).for_worker(Arc::new(WorkerCounters::default()), 1)
    }

    fn admit(p: &mut WorkerPolicy, client: &str) -> AdmitAction {
        let rx =
            RxMeta { client: client.parse().unwrap(), rx_time: NtpTimestamp::from_parts(3_900_000_000, 0), noise: 0 };
        p.admit(&rx, &ClientRequest { version: 4, poll: 6, transmit: NtpTimestamp::ZERO })
    }

    #[test]
    fn denied_sources_are_dropped_by_default_and_kissed_on_request() {
        let mut p = policy("[access]\ndeny = [\"192.0.2.0/24\"]\n");
        assert_eq!(admit(&mut p, "192.0.2.1:123"), AdmitAction::Drop(DropReason::Denied));
        assert_eq!(admit(&mut p, "198.51.100.1:123"), AdmitAction::Serve);
        let mut p = policy("[access]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.0.0/16\"]\ndeny-action = \"kod\"\n");
        assert_eq!(admit(&mut p, "10.1.0.1:123"), AdmitAction::Kod { code: KissCode::Deny, poll: 0 });
        assert_eq!(admit(&mut p, "11.0.0.1:123"), AdmitAction::Kod { code: KissCode::Rstr, poll: 0 });
        assert_eq!(admit(&mut p, "10.2.0.1:123"), AdmitAction::Serve);
        assert_eq!(admit(&mut p, "224.0.0.1:123"), AdmitAction::Drop(DropReason::Martian));
    }

    #[test]
    fn prepared_batches_are_decided_as_unprepared_ones() {
        let config = "[ratelimit]\nburst = 2\nleak = 16\n";
        let (mut prepared, mut plain) = (policy(config), policy(config));
        let clients = ["192.0.2.1:1", "192.0.2.2:1", "192.0.2.1:2", "[2001:db8::1]:3", "192.0.2.1:4", "192.0.2.3:1"];
        for batch in 0..3 {
            prepared.set_time(NtpTimestamp::from_parts(3_900_000_000 + batch, 0));
            plain.set_time(NtpTimestamp::from_parts(3_900_000_000 + batch, 0));
            // Prepared in order, one never prepared (192.0.2.3), one prepared and never decided
            // (198.51.100.9, as a request dropped before admission).
            for c in &clients[..5] {
                prepared.prepare(c.parse::<std::net::SocketAddr>().unwrap().ip());
            }
            prepared.prepare("198.51.100.9".parse().unwrap());
            for c in clients {
                assert_eq!(admit(&mut prepared, c), admit(&mut plain, c), "batch {batch}, {c}");
            }
            assert_eq!(prepared.prepared.cursor, 5, "every prepared key used but the extra one");
        }
        // Without a limiter nothing is prepared.
        let mut off = policy("");
        off.prepare("192.0.2.1".parse().unwrap());
        assert!(!off.prepares() && off.prepared.len == 0);
    }

    #[test]
    fn rate_limit_applies_after_access() {
        let mut p = policy("[ratelimit]\nburst = 2\nleak = 16\nkod = 1\n");
        assert_eq!(admit(&mut p, "192.0.2.1:1"), AdmitAction::Serve);
        assert_eq!(admit(&mut p, "192.0.2.1:2"), AdmitAction::Serve);
        let limited: Vec<AdmitAction> = (0..64).map(|_| admit(&mut p, "192.0.2.1:3")).collect();
        assert!(limited.iter().all(|a| matches!(
            a,
            AdmitAction::Drop(DropReason::RateLimited) | AdmitAction::Kod { code: KissCode::Rate, poll: 3 }
        )));
        assert!(limited.iter().any(|a| matches!(a, AdmitAction::Kod { .. })));
        let disabled = policy("[ratelimit]\nenabled = false\n");
        assert!(disabled.shared.limiter.is_none());
    }

    fn admit_at(p: &mut WorkerPolicy, client: &str, second: u32) -> AdmitAction {
        p.set_time(NtpTimestamp::from_parts(3_900_000_000 + second, 0));
        admit(p, client)
    }

    #[test]
    fn first_contacts_are_answered_within_the_whole_server_budget() {
        let mut p = policy("[ratelimit]\nfirst-contacts-per-second = 10\n");
        // 50 spoofed sources, each new, in the same second: the budget's 10, no more.
        let served = (0..50).filter(|i| admit_at(&mut p, &format!("10.0.{i}.1:123"), 0) == AdmitAction::Serve).count();
        assert_eq!(served, 10);
        // A second later, 10 more; and a source already known is not a first contact.
        let served =
            (50..100).filter(|i| admit_at(&mut p, &format!("10.0.{i}.1:123"), 1) == AdmitAction::Serve).count();
        assert_eq!(served, 10);
        assert_eq!(admit_at(&mut p, "10.0.0.1:123", 1), AdmitAction::Serve, "known since second 0");
        // Shared by two workers: each has half.
        let config = Config::parse(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[clock]\nsource = \"local\"\n[ratelimit]\nfirst-contacts-per-second = 10\n",
            "t",
        )
        .unwrap();
        let mut half = Admission::from_config(&config, false).for_worker(Arc::new(WorkerCounters::default()), 2);
        let served =
            (0..50).filter(|i| admit_at(&mut half, &format!("10.1.{i}.1:123"), 0) == AdmitAction::Serve).count();
        assert_eq!(served, 5);
    }

    #[test]
    fn a_spoofed_flood_over_one_24_is_answered_at_most_its_coarse_budget() {
        // Defaults but the leak: 16/s, burst 255 per /24; first-contact budget out of the way.
        let extra = "[ratelimit]\nleak = 4\nfirst-contacts-per-second = 0\n";
        // 2032 spoofed requests in one second, 8 from each of the 254 addresses of
        // 198.51.100.0/24: each address within its own burst (8), so only the /24's bucket
        // stands between the flood and a reply each.
        let flood = |p: &mut WorkerPolicy| {
            (0..254 * 8u32)
                .filter(|i| admit_at(p, &format!("198.51.100.{}:123", 1 + i % 254), 0) == AdmitAction::Serve)
                .count()
        };
        let mut p = policy(extra);
        let served = flood(&mut p);
        // The coarse burst (255) plus the leak (1/16) of the rest: 366 expected.
        assert!((255..=255 + (254 * 8 - 255) / 16 + 40).contains(&served), "{served}");
        // Without the coarse bucket every request is answered.
        assert_eq!(flood(&mut policy(&format!("{extra}coarse = false\n"))), 254 * 8);

        // A real client in another /24, polling every 64 s, is untouched.
        for poll in 0..20 {
            assert_eq!(admit_at(&mut p, "198.51.101.7:123", poll * 64), AdmitAction::Serve);
        }
        // A real client inside a flooded /24 (1000 requests a second from its other addresses,
        // more than its 16/s), each of its requests within its own limit (one per 8 s), still
        // gets the leak: 1 in 4 (the default leak) of its requests, 50 of 200 expected.
        let mut p = policy("[ratelimit]\nfirst-contacts-per-second = 0\n");
        let mut answered = 0;
        for second in 1..=1600u32 {
            for i in 0..1000u32 {
                admit_at(&mut p, &format!("198.51.100.{}:123", 1 + (i + second) % 254), second);
            }
            if second % 8 == 0 {
                answered += u32::from(admit_at(&mut p, "198.51.100.200:123", second) == AdmitAction::Serve);
            }
        }
        assert!((25..80).contains(&answered), "{answered} of 200 answered");
    }

    #[test]
    fn the_coarse_key_is_prepared_with_the_client_key() {
        let mut p = policy("[ratelimit]\n");
        p.set_time(NtpTimestamp::from_parts(3_900_000_000, 0));
        p.prepare("192.0.2.1".parse().unwrap());
        let (ip, key, coarse) = p.prepared.entries[0];
        assert_eq!(ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        let c = p.shared.coarse.as_ref().unwrap();
        assert_eq!((key, coarse), (Some(p.shared.limiter.as_ref().unwrap().key(ip)), Some(c.key(ip))));
        assert_eq!(c.key(ip), c.key("192.0.2.254".parse().unwrap()), "one /24, one coarse key");
        assert!(policy("[ratelimit]\ncoarse = false\n").shared.coarse.is_none());
    }

    #[test]
    fn kisses_of_death_go_through_the_limiter_and_the_kod_budget() {
        let extra = "[access]\ndeny = [\"10.0.0.0/8\"]\ndeny-action = \"kod\"\n[ratelimit]\nburst = 2\nleak = 16\n\
                     kods-per-second = 5\nfirst-contacts-per-second = 0\n";
        let mut p = policy(extra);
        // 20 denied sources at once: 5 kissed, the rest dropped as denied.
        let kissed = (0..20)
            .map(|i| admit_at(&mut p, &format!("10.0.{i}.1:123"), 0))
            .filter(|a| matches!(a, AdmitAction::Kod { code: KissCode::Deny, .. }))
            .count();
        assert_eq!(kissed, 5);
        // One denied source hammering, the budget aside: its limiter record stops the kisses
        // after its burst.
        let mut p = policy(&extra.replace("kods-per-second = 5", "kods-per-second = 0"));
        let answers: Vec<AdmitAction> = (0..20).map(|_| admit_at(&mut p, "10.9.9.9:123", 5)).collect();
        assert_eq!(answers.iter().filter(|a| matches!(a, AdmitAction::Kod { .. })).count(), 2, "{answers:?}");
        assert!(answers[2..].iter().all(|a| *a == AdmitAction::Drop(DropReason::Denied)));
    }
}
