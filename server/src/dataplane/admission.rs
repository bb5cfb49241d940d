//! The server's admission policy: the access list, then the rate limiter, in front of every
//! well-formed request. One per worker (its own random bits); the limiter table is shared.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use stratum_proto::server::access::{AccessList, AccessVerdict};
use stratum_proto::server::ratelimit::{RateDecision, RateLimiter};
use stratum_proto::{AdmissionPolicy, AdmitAction, ClientRequest, DropReason, KissCode, NtpTimestamp, RxMeta};

use crate::config::{Config, DenyAction};
use crate::dataplane::stats::WorkerCounters;

/// What every worker's policy shares: built once at start.
#[derive(Debug, Clone)]
pub struct Admission {
    pub access: Arc<AccessList>,
    pub limiter: Option<Arc<RateLimiter>>,
    pub deny_action: DenyAction,
}

impl Admission {
    /// `loopback_is_martian` is false for the socket backend (see [`AccessList::new`]).
    pub fn from_config(config: &Config, loopback_is_martian: bool) -> Self {
        let access = AccessList::new(&config.access.allow, &config.access.deny, loopback_is_martian);
        let limiter = config.ratelimit.as_ref().filter(|r| r.enabled).map(|r| {
            let seed = [rand::random(), rand::random()];
            Arc::new(RateLimiter::new(&r.to_proto(), seed))
        });
        Self { access: Arc::new(access), limiter, deny_action: config.access.deny_action }
    }

    pub fn for_worker(&self, counters: Arc<WorkerCounters>) -> WorkerPolicy {
        WorkerPolicy {
            shared: self.clone(),
            rng: StdRng::from_entropy(),
            counters,
            now: stratum_host::clock::monotonic(),
        }
    }
}

/// One worker's policy.
#[derive(Debug)]
pub struct WorkerPolicy {
    shared: Admission,
    rng: StdRng,
    counters: Arc<WorkerCounters>,
    /// The rate limiter's clock: monotonic (a step of the real-time clock must not refill or
    /// drain every bucket), read by the worker once per batch.
    now: NtpTimestamp,
}

impl WorkerPolicy {
    pub fn set_time(&mut self, now: NtpTimestamp) {
        self.now = now;
    }
}

impl AdmissionPolicy for WorkerPolicy {
    fn admit(&mut self, rx: &RxMeta, _: &ClientRequest) -> AdmitAction {
        let ip = rx.client.ip();
        let refused = |code| match self.shared.deny_action {
            DenyAction::Drop => AdmitAction::Drop(DropReason::Denied),
            DenyAction::Kod => AdmitAction::Kod { code, poll: 0 },
        };
        match self.shared.access.check(ip) {
            AccessVerdict::Allow => {}
            AccessVerdict::Martian => return AdmitAction::Drop(DropReason::Martian),
            AccessVerdict::Deny => return refused(KissCode::Deny),
            AccessVerdict::NotAllowed => return refused(KissCode::Rstr),
        }
        let Some(limiter) = &self.shared.limiter else {
            return AdmitAction::Serve;
        };
        let outcome = limiter.check(ip, self.now, self.rng.next_u64());
        self.counters.count_rate_outcome(&outcome);
        match outcome.decision {
            RateDecision::Allow | RateDecision::Leak => AdmitAction::Serve,
            RateDecision::Kod => AdmitAction::Kod { code: KissCode::Rate, poll: limiter.config().interval },
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
        Admission::from_config(&config, false).for_worker(Arc::new(WorkerCounters::default()))
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
}
