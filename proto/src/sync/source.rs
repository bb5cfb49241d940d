//! One upstream source: its poll process (interval, iburst, reach register), the request it sends
//! and the on-wire and peer checks of the reply, kiss-o'-death handling. The clock filter it feeds
//! is [`super::filter`]; what to do with a sample is the engine's ([`super::engine`]).

use core::fmt;
use core::net::IpAddr;

use super::filter::{ClockFilter, Sample};
use super::flash::Flash;
use super::{log2_seconds, PHI};
use crate::client::{check_reply, classify, request, ReplyClass, ReplyError, Timestamps};
use crate::packet::{KissCode, LeapIndicator, RefId, HEADER_LEN};
use crate::time::{NtpDuration, NtpTimestamp};

/// Lowest `minpoll`/`maxpoll` accepted (2^-6 s = 15.6 ms), as chrony.
pub const MIN_POLL: i8 = -6;
/// Highest `minpoll`/`maxpoll` accepted (2^17 s = 36 h), as chrony.
pub const MAX_POLL: i8 = 17;
/// Quick requests an `iburst` start sends at most.
pub const IBURST_REQUESTS: u8 = 8;
/// The `iburst` ends early once this many of its requests were answered.
pub const IBURST_ENOUGH: u8 = 4;
/// Spacing of `iburst` requests (chrony's), unless `minpoll` is below 1: then 2^minpoll.
pub const IBURST_SPACING_S: f64 = 2.0;

/// How one upstream is polled and used (an `[[upstream]]` entry, less its address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Shortest poll interval, log2 seconds ([`MIN_POLL`]..=[`MAX_POLL`]; default 6, 64 s).
    pub minpoll: i8,
    /// Longest poll interval, log2 seconds (default 10, 1024 s).
    pub maxpoll: i8,
    /// Start with a burst of up to 8 requests about 2 s apart (default false).
    pub iburst: bool,
    /// Prefer this source as the system peer whenever it survives selection (default false).
    pub prefer: bool,
    /// Poll and show the source, never select it (default false).
    pub noselect: bool,
    /// chrony's `trust`: outvoted only by other trusted sources ([`super::select::truechimers`]).
    pub trust: bool,
    /// chrony's `require`: while any source has it, the clock is steered only when one of them
    /// survives the selection.
    pub require: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self { minpoll: 6, maxpoll: 10, iburst: false, prefer: false, noselect: false, trust: false, require: false }
    }
}

/// A [`SourceConfig`] that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceConfigError {
    /// `minpoll` outside -6..=17.
    Minpoll(i8),
    /// `maxpoll` outside -6..=17.
    Maxpoll(i8),
    /// `maxpoll` below `minpoll`.
    MaxpollBelowMinpoll { minpoll: i8, maxpoll: i8 },
}

impl fmt::Display for SourceConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Minpoll(p) => write!(f, "minpoll {p} is outside {MIN_POLL}..={MAX_POLL}"),
            Self::Maxpoll(p) => write!(f, "maxpoll {p} is outside {MIN_POLL}..={MAX_POLL}"),
            Self::MaxpollBelowMinpoll { minpoll, maxpoll } => {
                write!(f, "maxpoll {maxpoll} is below minpoll {minpoll}")
            }
        }
    }
}

impl SourceConfig {
    /// Checks the poll range.
    pub fn validate(&self) -> Result<(), SourceConfigError> {
        let range = MIN_POLL..=MAX_POLL;
        if !range.contains(&self.minpoll) {
            return Err(SourceConfigError::Minpoll(self.minpoll));
        }
        if !range.contains(&self.maxpoll) {
            return Err(SourceConfigError::Maxpoll(self.maxpoll));
        }
        if self.maxpoll < self.minpoll {
            return Err(SourceConfigError::MaxpollBelowMinpoll { minpoll: self.minpoll, maxpoll: self.maxpoll });
        }
        Ok(())
    }
}

/// 2^`exponent` seconds.
pub fn poll_seconds(exponent: i8) -> f64 {
    2f64.powi(i32::from(exponent))
}

/// What the upstream said of itself in its last reply that passed the on-wire checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpstreamHeader {
    pub leap: LeapIndicator,
    pub stratum: u8,
    pub precision: i8,
    pub ref_id: RefId,
    /// Root delay, seconds.
    pub root_delay: f64,
    /// Root dispersion, seconds.
    pub root_dispersion: f64,
}

/// What became of one datagram handed to [`SyncEngine::handle_reply`](super::SyncEngine::handle_reply).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplyOutcome {
    /// A good sample: it went into the source's clock filter.
    Sample {
        /// Upstream minus served clock at T4, seconds (what `stratumctl sources` shows).
        offset: f64,
        /// Round-trip delay, seconds.
        delay: f64,
    },
    /// The upstream answered (reach counts it), but a peer check failed: no sample.
    Rejected(Flash),
    /// Not an answer to our outstanding request (or a second copy of one): ignored entirely.
    Ignored(Flash),
    /// Kiss-o'-death RATE: the source's poll interval went up by one step (to `poll`).
    KissRate { poll: i8 },
    /// Kiss-o'-death DENY or RSTR: the source is demobilised and never polled again.
    KissDemobilised(KissCode),
    /// Any other kiss code: no sample, nothing else changes.
    KissOther(RefId),
    /// The source id is unknown or the source was demobilised.
    UnknownSource,
}

/// The checks' parameters that come from the system, not the source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplyContext<'a> {
    pub own_refids: &'a [RefId],
    /// Our clock's precision, seconds.
    pub precision: f64,
    pub max_distance: f64,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    transmit: NtpTimestamp,
    t1: NtpTimestamp,
}

/// One upstream's protocol state. About 600 bytes; see [`super::SOURCE_STATE_BYTES`].
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub config: SourceConfig,
    pub address: IpAddr,
    pub refid: RefId,
    /// Reach register: bit 0 the latest poll, set when it was answered.
    pub reach: u8,
    /// Polls since the source was last reached (ntpd's `unreach`: counted at each poll, 0 when
    /// an answer sets the reach bit), saturating.
    pub unreach: u32,
    /// Current poll exponent (the system's choice, clamped to this source's range and floor).
    pub poll: i8,
    /// Raised by each kiss-o'-death RATE; the poll never goes below it.
    pub poll_floor: i8,
    pub next_poll: NtpTimestamp,
    burst_left: u8,
    burst_answered: u8,
    outstanding: Option<Outstanding>,
    last_answered: Option<NtpTimestamp>,
    pub filter: ClockFilter,
    pub upstream: Option<UpstreamHeader>,
    pub demobilised: Option<KissCode>,
    pub last_flash: Flash,
    /// The last good sample, raw (for `stratumctl sources`).
    pub last_sample: Option<Sample>,
    /// Long-term minimum delay (slowly aged upward), the base of a sample's error estimate.
    pub min_delay: f64,
    /// Running mean of the delay above `min_delay`, seconds, and samples seen (capped).
    pub mean_excess: f64,
    pub samples_seen: u32,
}

/// How fast the long-term minimum delay ages upward, seconds per second (so a lasting route
/// rise is learned within a day or so; until then its samples only count for less).
const MIN_DELAY_AGING: f64 = 1e-9;

impl Source {
    pub(crate) fn new(address: IpAddr, refid: RefId, config: SourceConfig, now: NtpTimestamp) -> Self {
        Self {
            config,
            address,
            refid,
            reach: 0,
            unreach: 0,
            poll: config.minpoll,
            poll_floor: config.minpoll,
            next_poll: now,
            burst_left: if config.iburst { IBURST_REQUESTS } else { 0 },
            burst_answered: 0,
            outstanding: None,
            last_answered: None,
            filter: ClockFilter::new(),
            upstream: None,
            demobilised: None,
            last_flash: Flash::NONE,
            last_sample: None,
            min_delay: f64::INFINITY,
            mean_excess: 0.0,
            samples_seen: 0,
        }
    }

    /// The poll exponent to use given the system's preference.
    pub(crate) fn effective_poll(&self, system_poll: i8) -> i8 {
        system_poll.clamp(self.config.minpoll, self.config.maxpoll).max(self.poll_floor).min(MAX_POLL)
    }

    /// Builds the request for the poll due at `now` (the host clock, kept as T1), with `random` as
    /// its transmit timestamp, and schedules the next one.
    pub(crate) fn transmit(&mut self, now: NtpTimestamp, random: u64, system_poll: i8) -> [u8; HEADER_LEN] {
        self.shift_reach();
        if self.reach == 0 && self.outstanding.is_some() {
            self.last_flash = Flash::NONE;
        }
        self.poll = self.effective_poll(system_poll);
        let transmit = NtpTimestamp::from_bits(random);
        self.outstanding = Some(Outstanding { transmit, t1: now });
        let interval = if self.burst_left > 0 {
            self.burst_left -= 1;
            if self.config.minpoll < 1 {
                poll_seconds(self.config.minpoll)
            } else {
                IBURST_SPACING_S
            }
        } else {
            poll_seconds(self.poll)
        };
        self.next_poll = now.add(NtpDuration::from_seconds_f64(interval));
        request(self.poll, -20, transmit)
    }

    /// Checks `buf`, received at `t4` (host clock), against the outstanding request. On success
    /// returns the sample and the upstream's header; the filter is the caller's to feed.
    pub(crate) fn receive(
        &mut self,
        buf: &[u8],
        t4: NtpTimestamp,
        ctx: &ReplyContext<'_>,
    ) -> Result<Sample, ReplyOutcome> {
        let Some(out) = self.outstanding else {
            let dup =
                crate::packet::NtpHeader::new(buf).is_some_and(|h| Some(h.origin_timestamp()) == self.last_answered);
            return Err(ReplyOutcome::Ignored(if dup { Flash::DUPLICATE } else { Flash::BOGUS }));
        };
        let header = match check_reply(buf, out.transmit) {
            Ok(h) => h,
            Err(ReplyError::OriginMismatch) => {
                let dup = crate::packet::NtpHeader::new(buf)
                    .is_some_and(|h| Some(h.origin_timestamp()) == self.last_answered);
                return Err(ReplyOutcome::Ignored(if dup { Flash::DUPLICATE } else { Flash::BOGUS }));
            }
            Err(ReplyError::KissOfDeath(code)) => {
                self.outstanding = None;
                self.last_answered = Some(out.transmit);
                return Err(self.kiss(code, out.t1));
            }
            Err(ReplyError::ZeroTimestamp) => return Err(self.reject_answered(out, Flash::ZERO_TIMESTAMP)),
            Err(ReplyError::Short(_) | ReplyError::Mode(_) | ReplyError::Version(_)) => {
                return Err(ReplyOutcome::Ignored(Flash::MALFORMED))
            }
        };
        self.outstanding = None;
        self.last_answered = Some(out.transmit);
        self.reached();

        let up = UpstreamHeader {
            leap: header.leap(),
            stratum: header.stratum(),
            precision: header.precision(),
            ref_id: header.ref_id(),
            root_delay: header.root_delay().to_seconds_f64(),
            root_dispersion: header.root_dispersion().to_seconds_f64(),
        };
        self.upstream = Some(up);
        let ts = Timestamps::of_reply(out.t1, &header, t4);
        let delay = ts.delay().to_seconds_f64().max(0.0);
        let mut flash = Flash::NONE;
        if classify(&header) == ReplyClass::Unsynchronized {
            flash |= Flash::UNSYNCHRONISED;
        } else if up.stratum >= 15 {
            flash |= Flash::STRATUM;
        }
        if up.root_delay / 2.0 + up.root_dispersion + delay / 2.0 > ctx.max_distance {
            flash |= Flash::DISTANCE;
        }
        if up.stratum > 1 && ctx.own_refids.contains(&up.ref_id) {
            flash |= Flash::LOOP;
        }
        self.last_flash = flash;
        if !flash.is_empty() {
            return Err(ReplyOutcome::Rejected(flash));
        }
        if self.burst_left > 0 {
            self.burst_answered += 1;
            if self.burst_answered >= IBURST_ENOUGH {
                self.burst_left = 0;
                self.next_poll = t4.add(NtpDuration::from_seconds_f64(poll_seconds(self.poll)));
            }
        }
        let sample = Sample {
            offset: ts.offset().to_seconds_f64(),
            delay,
            dispersion: log2_seconds(up.precision) + ctx.precision + PHI * delay,
            time: t4,
        };
        let aged = if let Some(last) = self.last_sample {
            self.min_delay + MIN_DELAY_AGING * t4.since(last.time).to_seconds_f64().max(0.0)
        } else {
            f64::INFINITY
        };
        self.min_delay = aged.min(delay);
        self.samples_seen = (self.samples_seen + 1).min(1000);
        let excess = delay - self.min_delay;
        let weight = 1.0 / f64::from(self.samples_seen.min(64));
        self.mean_excess += (excess - self.mean_excess) * weight;
        self.last_sample = Some(sample);
        Ok(sample)
    }

    /// A poll (or a refclock's interval) begins: the reach register shifts, one more poll
    /// since the source was last reached.
    pub(crate) fn shift_reach(&mut self) {
        self.reach <<= 1;
        self.unreach = self.unreach.saturating_add(1);
    }

    /// The source answered in the current poll (a refclock: gave a sample in its interval).
    pub(crate) fn reached(&mut self) {
        self.reach |= 1;
        self.unreach = 0;
    }

    fn reject_answered(&mut self, out: Outstanding, flash: Flash) -> ReplyOutcome {
        self.outstanding = None;
        self.last_answered = Some(out.transmit);
        self.last_flash = flash;
        ReplyOutcome::Rejected(flash)
    }

    fn kiss(&mut self, code: RefId, t1: NtpTimestamp) -> ReplyOutcome {
        if code == KissCode::Rate.ref_id() {
            self.burst_left = 0;
            self.poll_floor = (self.poll.max(self.poll_floor) + 1).min(MAX_POLL);
            self.poll = self.poll_floor;
            self.next_poll = t1.add(NtpDuration::from_seconds_f64(poll_seconds(self.poll)));
            ReplyOutcome::KissRate { poll: self.poll }
        } else if code == KissCode::Deny.ref_id() || code == KissCode::Rstr.ref_id() {
            let kiss = if code == KissCode::Deny.ref_id() { KissCode::Deny } else { KissCode::Rstr };
            self.demobilised = Some(kiss);
            self.reach = 0;
            ReplyOutcome::KissDemobilised(kiss)
        } else {
            ReplyOutcome::KissOther(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::packet::{NtpMode, NtpPacket};
    use crate::time::NtpShort;

    fn at(s: u32) -> NtpTimestamp {
        NtpTimestamp::from_parts(s, 0)
    }

    const CTX: ReplyContext<'static> =
        ReplyContext { own_refids: &[RefId([198, 51, 100, 1])], precision: 1e-6, max_distance: 1.5 };

    fn reply_to(req: &[u8; HEADER_LEN], server_now: NtpTimestamp) -> NtpPacket {
        let h = crate::packet::NtpHeader::new(req).unwrap();
        NtpPacket {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: NtpMode::Server,
            stratum: 2,
            poll: h.poll(),
            precision: -20,
            root_delay: NtpShort::from_micros(1000),
            root_dispersion: NtpShort::from_micros(1000),
            ref_id: RefId([192, 0, 2, 99]),
            reference_timestamp: at(1),
            origin_timestamp: h.transmit_timestamp(),
            receive_timestamp: server_now,
            transmit_timestamp: server_now.add(NtpDuration::from_nanos(10_000)),
        }
    }

    fn source(config: SourceConfig) -> Source {
        Source::new("192.0.2.1".parse().unwrap(), RefId([192, 0, 2, 1]), config, at(1000))
    }

    #[test]
    fn config_accepts_chrony_range() {
        assert!(SourceConfig::default().validate().is_ok());
        assert!(SourceConfig { minpoll: -6, maxpoll: 17, ..Default::default() }.validate().is_ok());
        assert_eq!(SourceConfig { minpoll: -7, ..Default::default() }.validate(), Err(SourceConfigError::Minpoll(-7)));
        assert_eq!(SourceConfig { maxpoll: 18, ..Default::default() }.validate(), Err(SourceConfigError::Maxpoll(18)));
        let e = SourceConfig { minpoll: 8, maxpoll: 7, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "maxpoll 7 is below minpoll 8");
    }

    #[test]
    fn good_reply_is_a_sample_and_sets_reach() {
        let mut s = source(SourceConfig::default());
        let req = s.transmit(at(1000), 0x1234_5678_9abc_def0, 6);
        assert_eq!(s.next_poll, at(1064));
        // Upstream 1 s ahead, 100 µs each way.
        let p = reply_to(&req, at(1001).add(NtpDuration::from_nanos(100_000)));
        let t4 = at(1000).add(NtpDuration::from_nanos(210_000));
        let sample = s.receive(&p.to_bytes(), t4, &CTX).unwrap();
        assert!((sample.offset - 1.0).abs() < 1e-6 && (sample.delay - 200e-6).abs() < 1e-8, "{sample:?}");
        assert_eq!(s.reach, 1);
        // The same reply again is a duplicate; another origin is bogus.
        assert_eq!(s.receive(&p.to_bytes(), t4, &CTX), Err(ReplyOutcome::Ignored(Flash::DUPLICATE)));
        let q = NtpPacket { origin_timestamp: at(5), ..p };
        assert_eq!(s.receive(&q.to_bytes(), t4, &CTX), Err(ReplyOutcome::Ignored(Flash::BOGUS)));
        // An unanswered poll shifts a zero in.
        s.transmit(at(1064), 1, 6);
        s.transmit(at(1128), 2, 6);
        assert_eq!(s.reach, 0b100);
        assert_eq!(s.unreach, 2, "two polls since it was last reached");
    }

    #[test]
    fn unreach_counts_polls_since_the_last_answer() {
        let mut s = source(SourceConfig::default());
        assert_eq!(s.unreach, 0);
        for i in 0..3 {
            s.transmit(at(1000 + 64 * i), u64::from(i) + 1, 6);
        }
        assert_eq!((s.reach, s.unreach), (0, 3), "never answered");
        let req = s.transmit(at(1192), 9, 6);
        assert_eq!(s.unreach, 4, "counted when the poll goes out, as ntpd does");
        s.receive(&reply_to(&req, at(1192)).to_bytes(), at(1192), &CTX).unwrap();
        assert_eq!((s.reach, s.unreach), (1, 0));
        s.unreach = u32::MAX;
        s.transmit(at(1256), 10, 6);
        assert_eq!(s.unreach, u32::MAX, "saturates");
    }

    #[test]
    fn peer_checks_set_flash_bits() {
        let mut s = source(SourceConfig::default());
        let check = |s: &mut Source, edit: &dyn Fn(&mut NtpPacket)| {
            let req = s.transmit(at(1000), 77, 6);
            let mut p = reply_to(&req, at(1000));
            edit(&mut p);
            s.receive(&p.to_bytes(), at(1000), &CTX)
        };
        let unsync = check(&mut s, &|p| p.leap = LeapIndicator::Unsynchronized);
        assert_eq!(unsync, Err(ReplyOutcome::Rejected(Flash::UNSYNCHRONISED)));
        assert_eq!(check(&mut s, &|p| p.stratum = 16), Err(ReplyOutcome::Rejected(Flash::UNSYNCHRONISED)));
        assert_eq!(check(&mut s, &|p| p.stratum = 15), Err(ReplyOutcome::Rejected(Flash::STRATUM)));
        let far = check(&mut s, &|p| p.root_dispersion = NtpShort::from_micros(1_600_000));
        assert_eq!(far, Err(ReplyOutcome::Rejected(Flash::DISTANCE)));
        assert_eq!(check(&mut s, &|p| p.ref_id = RefId([198, 51, 100, 1])), Err(ReplyOutcome::Rejected(Flash::LOOP)));
        // A stratum 1 whose refid happens to spell our address is a reference clock name.
        assert!(check(&mut s, &|p| {
            p.ref_id = RefId([198, 51, 100, 1]);
            p.stratum = 1
        })
        .is_ok());
        let zero = check(&mut s, &|p| p.receive_timestamp = NtpTimestamp::ZERO);
        assert_eq!(zero, Err(ReplyOutcome::Rejected(Flash::ZERO_TIMESTAMP)));
        assert_eq!(check(&mut s, &|p| p.version = 3), Err(ReplyOutcome::Ignored(Flash::MALFORMED)));
        assert_eq!(s.reach.count_ones(), 6, "every answer but the zero timestamps and malformed one counts");
    }

    #[test]
    fn kiss_rate_backs_off_deny_demobilises_spoof_is_ignored() {
        let mut s = source(SourceConfig { iburst: true, ..Default::default() });
        let req = s.transmit(at(1000), 5, 6);
        let kod = |req: &[u8; HEADER_LEN], code: KissCode| {
            NtpPacket { stratum: 0, ref_id: code.ref_id(), ..reply_to(req, NtpTimestamp::ZERO) }.to_bytes()
        };
        assert_eq!(s.receive(&kod(&req, KissCode::Rate), at(1000), &CTX), Err(ReplyOutcome::KissRate { poll: 7 }));
        assert_eq!(s.next_poll, at(1128), "burst stopped, next poll at the raised interval");
        assert_eq!(s.effective_poll(6), 7);
        // A spoofed DENY (wrong origin) changes nothing.
        let req = s.transmit(at(1128), 6, 6);
        let mut spoof = kod(&req, KissCode::Deny);
        spoof[24] ^= 1;
        assert_eq!(s.receive(&spoof, at(1128), &CTX), Err(ReplyOutcome::Ignored(Flash::BOGUS)));
        assert!(s.demobilised.is_none());
        assert_eq!(
            s.receive(&kod(&req, KissCode::Deny), at(1128), &CTX),
            Err(ReplyOutcome::KissDemobilised(KissCode::Deny))
        );
        assert_eq!(s.demobilised, Some(KissCode::Deny));
    }

    #[test]
    fn iburst_sends_quickly_then_settles() {
        let mut s = source(SourceConfig { iburst: true, ..Default::default() });
        let mut t = at(1000);
        for i in 0..4 {
            let req = s.transmit(t, 100 + i, 6);
            assert_eq!(s.next_poll, t.add(NtpDuration::from_seconds(2)));
            s.receive(&reply_to(&req, t).to_bytes(), t, &CTX).unwrap();
            t = s.next_poll;
        }
        assert_eq!(s.next_poll.since(at(1000)).to_seconds_f64(), 6.0 + 64.0);
        // Sub-second minpoll: the burst spacing follows it.
        let mut fast = source(SourceConfig { iburst: true, minpoll: -2, maxpoll: 0, ..Default::default() });
        fast.transmit(at(1000), 1, -2);
        assert_eq!(fast.next_poll.since(at(1000)).to_seconds_f64(), 0.25);
    }

    proptest! {
        #[test]
        fn any_datagram_is_handled_without_panicking(buf in proptest::collection::vec(any::<u8>(), 0..80), aim in any::<bool>()) {
            let mut s = source(SourceConfig::default());
            let req = s.transmit(at(1000), 0xfeed, 6);
            let mut buf = buf;
            if aim && buf.len() >= 32 {
                buf[24..32].copy_from_slice(&req[40..48]);
            }
            let _ = s.receive(&buf, at(1000), &CTX);
        }
    }
}
