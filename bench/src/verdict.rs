//! Whether a load or a ramp measured the server's capacity, or something else: a rate limiter, an
//! access list, an unsynchronised clock. Its counters cannot tell an operator this by themselves
//! (a step against a rate-limiting server reads "loss 75 %", as an overloaded one would), so the
//! run's exit status does, with one line on stderr saying why and what to do.

use crate::counts::Counts;
use crate::ramp::RampReport;
use crate::report::LoadReport;

/// A rate limiter answers few of one client's requests: this much loss with no socket to blame
/// is a server choosing not to answer (chrony's and the shipped configs' `leak = 2` lose 75 %).
pub const SILENT_LOSS_PCT: f64 = 40.0;

/// The replies a run may see and still stand: `--accept-kod`, `--accept-ratelimit`,
/// `--accept-unsynced`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// Kiss-o'-death replies of any code (in a ramp, a step with them may be sustainable).
    pub kod: bool,
    /// Rate limiting: KoD RATE replies, or requests left unanswered that no socket dropped.
    pub ratelimit: bool,
    /// Unsynchronised replies (in a ramp, a step with them may be sustainable).
    pub unsynced: bool,
}

/// Why a run's numbers are not the server's capacity. Each has its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Objection {
    /// KoD RATE replies came back.
    RateLimitedKod { kod_rate: u64 },
    /// Most requests went unanswered though the server's socket dropped few of them, and no
    /// KoD said why (a `[ratelimit]` with `kod = 0` drops in silence).
    RateLimitedSilently { sent: u64, unanswered: u64, socket_drops: u64 },
    /// Kiss-o'-death replies other than RATE (DENY, RSTR, ...).
    Kod { kod: u64, kod_deny_rstr: u64 },
    /// Replies with LI = 3 or stratum 16 and above.
    Unsynchronised { unsynced: u64, received: u64 },
}

impl std::fmt::Display for Objection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RateLimitedKod { kod_rate } => write!(
                f,
                "the server rate-limits this load: {kod_rate} KoD RATE replies; turn [ratelimit] off on the \
                 server under test, or pass --accept-ratelimit"
            ),
            Self::RateLimitedSilently { sent, unanswered, socket_drops } => write!(
                f,
                "the server rate-limits this load: {unanswered} of {sent} requests unanswered ({:.1} %) though \
                 the sockets dropped only {socket_drops} and no KoD came back ([ratelimit] with kod = 0 drops \
                 in silence); turn [ratelimit] off on the server under test, or pass --accept-ratelimit",
                100.0 * *unanswered as f64 / (*sent).max(1) as f64
            ),
            Self::Kod { kod, kod_deny_rstr } => write!(
                f,
                "the server refuses this load: {kod} kiss-o'-death replies ({kod_deny_rstr} DENY or RSTR); allow \
                 the generator's address on the server under test, or pass --accept-kod"
            ),
            Self::Unsynchronised { unsynced, received } => write!(
                f,
                "the server is not synchronised: {unsynced} of {received} replies say so (leap 3 or stratum 16); \
                 let it synchronise before measuring it, or pass --accept-unsynced"
            ),
        }
    }
}

/// What a run's counters say, with `silent` (its silent rate limiting, if any), in the order an
/// operator should deal with them: rate limiting, other refusals, then the clock.
fn judge(c: &Counts, silent: Option<Objection>, accept: Accept) -> Option<Objection> {
    if c.kod_rate > 0 && !(accept.ratelimit || accept.kod) {
        return Some(Objection::RateLimitedKod { kod_rate: c.kod_rate });
    }
    if let Some(silent) = silent.filter(|_| !accept.ratelimit) {
        return Some(silent);
    }
    if c.kod > c.kod_rate && !accept.kod {
        return Some(Objection::Kod { kod: c.kod, kod_deny_rstr: c.kod_deny_rstr });
    }
    if c.unsynced > 0 && !accept.unsynced {
        return Some(Objection::Unsynchronised { unsynced: c.unsynced, received: c.received });
    }
    None
}

/// Rate limiting without KoD: at least [`SILENT_LOSS_PCT`] of the requests unanswered, and the
/// sockets' drops (`None`: the server's are out of our sight) account for less than half of them.
/// An overloaded server on loopback loses its requests at its socket, so this is not overload.
fn silent_ratelimit(c: &Counts, socket_drops: Option<u64>) -> Option<Objection> {
    let drops = socket_drops?;
    let unanswered = c.sent.saturating_sub(c.answered);
    let large = c.sent > 0 && 100.0 * unanswered as f64 >= SILENT_LOSS_PCT * c.sent as f64;
    (large && drops.saturating_mul(2) < unanswered).then_some(Objection::RateLimitedSilently {
        sent: c.sent,
        unanswered,
        socket_drops: drops,
    })
}

/// All the sockets' drops in a step: the server's (`None` when out of our sight: it is not on
/// our loopback), the generator's and, for AF_XDP, its interface's.
fn socket_drops(server: Option<u64>, client: u64, tx_refused: Option<u64>) -> Option<u64> {
    server.map(|server| server + client + tx_refused.unwrap_or(0))
}

/// The objection to one `load` step, if any.
pub fn judge_load(r: &LoadReport, accept: Accept) -> Option<Objection> {
    let drops = socket_drops(r.server_socket_drops, r.client_socket_drops, r.tx_refused);
    judge(&r.counts, silent_ratelimit(&r.counts, drops), accept)
}

/// The objection to a ramp, if any: a KoD or an unsynchronised reply in any try, or silent rate
/// limiting at its first rate. Silent loss at a later rate is what a ramp looks for (the server's
/// limit); at the first, the ramp has measured nothing but the limiter.
pub fn judge_ramp(r: &RampReport, accept: Accept) -> Option<Objection> {
    let mut all = Counts::default();
    for a in &r.attempts {
        all += a.counts;
    }
    let silent = r
        .steps
        .first()
        .and_then(|s| silent_ratelimit(&s.counts, socket_drops(s.server_socket_drops, s.client_drops, s.tx_refused)));
    judge(&all, silent, accept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::StepResult;

    /// A load step's verdict, with these socket drops.
    fn j(c: &Counts, drops: Option<u64>, accept: Accept) -> Option<Objection> {
        judge(c, silent_ratelimit(c, drops), accept)
    }

    fn counts(sent: u64, answered: u64) -> Counts {
        Counts { sent, received: answered, answered, valid: answered, ..Counts::default() }
    }

    #[test]
    fn kod_rate_is_rate_limiting_and_either_accept_flag_takes_it() {
        let c = Counts { kod: 3, kod_rate: 3, ..counts(1000, 1000) };
        assert_eq!(j(&c, Some(0), Accept::default()), Some(Objection::RateLimitedKod { kod_rate: 3 }));
        assert_eq!(j(&c, Some(0), Accept { ratelimit: true, ..Accept::default() }), None);
        assert_eq!(j(&c, Some(0), Accept { kod: true, ..Accept::default() }), None);
        let text = Objection::RateLimitedKod { kod_rate: 3 }.to_string();
        assert!(text.contains("3 KoD RATE replies") && text.contains("--accept-ratelimit"), "{text}");
    }

    #[test]
    fn silent_loss_without_socket_drops_is_rate_limiting() {
        // The shipped configs: 3 in 4 unanswered, no socket drop, no KoD.
        let c = counts(1000, 250);
        let o = j(&c, Some(0), Accept::default()).unwrap();
        assert_eq!(o, Objection::RateLimitedSilently { sent: 1000, unanswered: 750, socket_drops: 0 });
        assert!(o.to_string().contains("750 of 1000 requests unanswered (75.0 %)"), "{o}");
        assert_eq!(j(&c, Some(0), Accept { ratelimit: true, ..Accept::default() }), None);
        // Overload: the socket dropped most of what was lost.
        assert_eq!(j(&c, Some(700), Accept::default()), None);
        // A server out of sight, or a small loss: no verdict.
        assert_eq!(j(&c, None, Accept::default()), None);
        assert_eq!(j(&counts(1000, 700), Some(0), Accept::default()), None);
        assert_eq!(j(&counts(0, 0), Some(0), Accept::default()), None);
    }

    #[test]
    fn a_ramp_objects_to_silent_loss_only_at_its_first_rate() {
        use crate::ramp::report::tests::report;
        use crate::ramp::step::tests::step;
        // On loopback, the server's socket dropped nothing.
        let at = |offered, answered| {
            let mut s = step(offered, 0.0);
            s.counts = counts(offered, answered);
            s.loss_pct = crate::report::loss_pct(offered, answered);
            s.server_socket_drops = Some(0);
            s
        };
        // Clean at 1000/s, then half lost at 4000/s: the ramp found a limit.
        let found = report(vec![at(1000, 1000), at(4000, 2000)], 1000);
        assert_eq!(judge_ramp(&found, Accept::default()), None);
        // Three in four lost at the first rate: the ramp measured a rate limiter.
        let limited = report(vec![at(1000, 250)], 0);
        let o = judge_ramp(&limited, Accept::default());
        assert_eq!(o, Some(Objection::RateLimitedSilently { sent: 1000, unanswered: 750, socket_drops: 0 }));
        assert_eq!(judge_ramp(&limited, Accept { ratelimit: true, ..Accept::default() }), None);
        // A KoD in any try counts, not only in the rates' results.
        let mut kod = report(vec![at(1000, 1000)], 1000);
        kod.attempts
            .push(StepResult { counts: Counts { kod: 1, kod_rate: 1, ..counts(1000, 1000) }, ..at(1000, 1000) });
        assert_eq!(judge_ramp(&kod, Accept::default()), Some(Objection::RateLimitedKod { kod_rate: 1 }));
    }

    #[test]
    fn other_kod_and_unsynced_replies_have_their_own_objections() {
        let c = Counts { kod: 5, kod_deny_rstr: 4, unsynced: 2, ..counts(1000, 1000) };
        assert_eq!(j(&c, Some(0), Accept::default()), Some(Objection::Kod { kod: 5, kod_deny_rstr: 4 }));
        // --accept-ratelimit does not take a DENY.
        let ratelimit = Accept { ratelimit: true, ..Accept::default() };
        assert_eq!(j(&c, Some(0), ratelimit), Some(Objection::Kod { kod: 5, kod_deny_rstr: 4 }));
        let kod = Accept { kod: true, ..Accept::default() };
        assert_eq!(j(&c, Some(0), kod), Some(Objection::Unsynchronised { unsynced: 2, received: 1000 }));
        assert_eq!(j(&c, Some(0), Accept { unsynced: true, ..kod }), None);
    }
}
