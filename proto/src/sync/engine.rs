//! [`SyncEngine`]: the whole sans-IO time plane for the sync thread. It owns the sources (poll
//! process, clock filter), runs select, cluster and combine on every sample, feeds the discipline,
//! follows leap seconds and holdover, and says what to publish ([`SyncEngine::snapshot`]).
//!
//! Every time it takes is the **host clock** (the clock the sync thread reads): T1 when a request
//! is built, T4 when its reply arrives, `now` otherwise. The served clock is the host clock plus the
//! snapshot's [`ClockCorrection`].
//!
//! # A disciplined host clock
//!
//! The model (filter, Kalman estimate, poll deadlines) assumes a host clock nobody touches. With
//! [`HostClock::Disciplined`] the caller steers the host clock itself, so the engine keeps a
//! record of what the host clock carries (`applied`, a line like the correction): every time
//! given to it is turned back into the untouched clock's time base at the door, every time it
//! gives out is turned into the host clock's, and the model inside never sees the difference.
//! [`SyncEngine::host_adjustment`] says what to do to the host clock for it to carry the served
//! correction (a frequency, and a step only when the served clock steps), and
//! [`SyncEngine::host_adjusted`] takes note that it was done, and when: a change applied late
//! leaves the host clock `rate × lateness` off, which the correction takes over (the next update
//! slews it away). The snapshot then carries the identity correction. With [`HostClock::Free`]
//! the record stays the identity and nothing changes.

use core::net::IpAddr;

use super::discipline::{ClockAction, Discipline};
use super::filter::{FilterVerdict, Sample};
use super::leap::{leap_smear, leap_vote, served_leap, LeapDirection, LeapSecondsList, SMEAR_WINDOW_S};
use super::refclock::{RefclockConfig, RefclockConfigError, RefclockSample, RefclockState};
use super::select::{cluster, combine, requirement_met, system_peer, truechimers, Candidate, Endpoint};
use super::source::{poll_seconds, ReplyContext, ReplyOutcome, Source, SourceConfig, SourceConfigError, MIN_POLL};
use super::{calendar, log2_seconds, refid_for_address, Flash, HostClock, LeapMode, SyncConfig, PHI};
use crate::packet::{KissCode, LeapIndicator, RefId, HEADER_LEN};
use crate::server::snapshot::{ClockCorrection, ServerSnapshot, STRATUM_UNSYNCHRONIZED};
use crate::time::{ppm_to_rate, NtpDuration, NtpShort, NtpTimestamp};

/// A source's handle, stable for its life (never reused after [`SyncEngine::remove_source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u32);

impl SourceId {
    /// The number behind the handle (for logs and metrics labels).
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Where a source stands in the mitigation (chronyc's symbols in [`SourceState::symbol`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// The system peer: its stratum and refid are served (`*`).
    SystemPeer,
    /// Survived select and cluster, steers the clock (`+`).
    Candidate,
    /// A truechimer dropped by the cluster step (`-`).
    Outlier,
    /// Its interval misses the majority's intersection (`x`).
    Falseticker,
    /// Not (yet) usable: no sample, upstream unsynchronised, root distance over the limit, fewer
    /// than `minsane` truechimers, or `noselect` (`?`).
    Unselectable,
    /// No reply to any of the last 8 polls (`~`... chrony's "unreachable" `?` too).
    Unreachable,
    /// Dropped for good after a kiss-o'-death DENY or RSTR.
    Demobilised(KissCode),
}

impl SourceState {
    /// One character as chronyc prints it: `* + - x ? ~`, `!` for demobilised.
    pub const fn symbol(self) -> char {
        match self {
            Self::SystemPeer => '*',
            Self::Candidate => '+',
            Self::Outlier => '-',
            Self::Falseticker => 'x',
            Self::Unselectable => '?',
            Self::Unreachable => '~',
            Self::Demobilised(_) => '!',
        }
    }

    /// A lowercase word for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SystemPeer => "selected",
            Self::Candidate => "candidate",
            Self::Outlier => "outlier",
            Self::Falseticker => "falseticker",
            Self::Unselectable => "unselectable",
            Self::Unreachable => "unreachable",
            Self::Demobilised(_) => "demobilised",
        }
    }
}

/// One source as `stratumctl sources` shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceStatus {
    pub id: SourceId,
    pub address: IpAddr,
    pub config: SourceConfig,
    pub state: SourceState,
    /// The upstream's stratum from its last reply (None before one).
    pub stratum: Option<u8>,
    /// The upstream's own refid from its last reply.
    pub upstream_ref_id: Option<RefId>,
    /// The upstream's leap indicator from its last reply.
    pub leap: Option<LeapIndicator>,
    /// Poll exponent in use (log2 s).
    pub poll: i8,
    /// Reach register: print with `{:o}` (377 is 8 of 8 answered).
    pub reach: u8,
    /// Polls (a refclock: intervals) since it was last reached (ntpd's `unreach`).
    pub unreach: u32,
    /// Last good sample: upstream minus served clock, seconds, and its round-trip delay.
    pub last_offset: Option<f64>,
    pub last_delay: Option<f64>,
    /// Host time of the last good sample.
    pub last_sample_time: Option<NtpTimestamp>,
    /// The clock filter's jitter, seconds.
    pub jitter: Option<f64>,
    /// Root distance (the error bound chronyc shows after ±), seconds, as of the last selection.
    pub root_distance: Option<f64>,
    /// Why the last reply was not used (empty when it was).
    pub last_flash: Flash,
    /// Host time of the next request.
    pub next_poll: NtpTimestamp,
    /// A reference clock's refid (None for an upstream server; `address` is then unspecified).
    pub refclock: Option<RefId>,
    /// A reference clock's samples taken since it was added.
    pub refclock_samples: u64,
    /// A reference clock out of the selection until its next estimate (fix lost, no sample for
    /// its `max_age`).
    pub refclock_stale: bool,
    /// The upstream's precision (log2 s), root delay and root dispersion (s) from its last reply.
    pub upstream_precision: Option<i8>,
    pub upstream_root_delay: Option<f64>,
    pub upstream_root_dispersion: Option<f64>,
    /// The clock filter's dispersion, seconds.
    pub dispersion: Option<f64>,
    /// The clock filter's stages, newest first, offsets against the served clock as
    /// `last_offset` (what `ntpq`'s filtoffset, filtdelay and filtdisp show).
    pub filter: [Option<Sample>; super::filter::STAGES],
}

/// The system's state as `stratumctl tracking` shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tracking {
    pub system_peer: Option<SourceId>,
    pub system_peer_address: Option<IpAddr>,
    /// Served stratum (16 when unsynchronised).
    pub stratum: u8,
    pub ref_id: RefId,
    /// Estimated offset of true time from the served clock now, seconds.
    pub offset: f64,
    /// The survivors' combined offset at the last update, seconds.
    pub combined_offset: f64,
    /// Estimated standard deviation of the served clock's offset, seconds.
    pub offset_error: f64,
    /// Frequency correction applied to the host clock, ppm (positive: the host clock is slow).
    pub frequency_ppm: f64,
    /// RMS of the frequency's change from one clock update to the next, ppm (ntpd's clock
    /// wander, averaged over 8 updates).
    pub wander_ppm: f64,
    /// Selection jitter among the survivors, seconds.
    pub system_jitter: f64,
    pub root_delay: f64,
    /// Root dispersion now (grown since the last update), seconds.
    pub root_dispersion: f64,
    pub leap: LeapIndicator,
    /// Host time of the last clock update, and its age now in seconds.
    pub last_update: Option<NtpTimestamp>,
    pub update_age: Option<f64>,
    pub synchronized: bool,
    pub steps: u32,
    /// The poll exponent the discipline asks for (each source clamps it to its range).
    pub system_poll: i8,
}

/// What to do to the host clock now ([`SyncEngine::host_adjustment`], [`HostClock::Disciplined`]):
/// step it by `step` seconds (0: no step), then run it at `frequency` from now on. Apply both at
/// once (one `clock_adjtime` with ADJ_SETOFFSET and ADJ_FREQUENCY), then call
/// [`SyncEngine::host_adjusted`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostAdjustment {
    /// Seconds to add to the host clock at once (a step the served clock took too).
    pub step: f64,
    /// The host clock's frequency correction against its own when the engine started, s/s
    /// (positive: run faster); the kernel's frequency is the one it had then plus this.
    pub frequency: f64,
}

/// A phase difference between the host clock and the served clock below this is rounding (or
/// lateness the correction takes over); past it the host clock is stepped, seconds.
const HOST_STEP_EPSILON: f64 = 1e-6;
/// A difference between the host clock and the served clock this small (2^-24 s, 60 ns) is the
/// rounding of the lines' arithmetic: the snapshot then carries the identity.
const IDENTITY_BITS: u64 = 1 << 8;
/// 2^32, the unit of a correction's rate.
const RATE_UNIT: f64 = 4_294_967_296.0;

/// A request to send now ([`SyncEngine::poll_transmit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub source: SourceId,
    pub address: IpAddr,
    pub packet: [u8; HEADER_LEN],
}

#[derive(Clone, Debug)]
struct Slot {
    id: SourceId,
    source: Source,
    state: SourceState,
    root_distance: Option<f64>,
    /// Set for a reference clock (no requests; its samples come from a driver).
    refclock: Option<Box<RefclockState>>,
}

/// What [`SyncEngine::handle_refclock_sample`] made of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RefclockOutcome {
    /// No refclock with that id.
    UnknownSource,
    /// Kept for the median filter; no estimate yet.
    Filtered,
    /// The median filter gave an estimate (reference minus served clock, seconds), which went to
    /// the selection.
    Estimate { offset: f64 },
}

/// The system variables set by the last clock update.
#[derive(Clone, Copy, Debug)]
struct SystemVars {
    peer: Option<usize>,
    stratum: u8,
    ref_id: RefId,
    root_delay: f64,
    root_dispersion: f64,
    jitter: f64,
    combined: f64,
    last_update: Option<NtpTimestamp>,
}

/// The sans-IO time plane. See the [module docs](super) for one poll cycle.
#[derive(Debug)]
pub struct SyncEngine {
    config: SyncConfig,
    slots: Vec<Slot>,
    next_id: u32,
    discipline: Discipline,
    system: SystemVars,
    system_poll: i8,
    leap_list: Option<LeapSecondsList>,
    leap_direction: Option<LeapDirection>,
    leap_done_at: Option<i64>,
    candidates: Vec<Candidate>,
    endpoints: Vec<Endpoint>,
    last_action: Option<ClockAction>,
    /// The frequency at the last clock update (ppm) and the running mean square of its change
    /// from one update to the next (ppm²): ntpd's clock wander.
    last_frequency: Option<f64>,
    wander_squared: f64,
    /// What the host clock carries: host = untouched + `applied` (the identity unless
    /// [`HostClock::Disciplined`]). Times inside the engine are the untouched clock's.
    applied: ClockCorrection,
    /// The last leap taken (Unix time of its instant, direction): a smear goes on after it.
    leap_taken: Option<(i64, LeapDirection)>,
}

impl SyncEngine {
    /// An engine with no sources, unsynchronised.
    pub fn new(config: SyncConfig) -> Self {
        Self {
            discipline: Discipline::new(config.discipline),
            config,
            slots: Vec::new(),
            next_id: 0,
            system: SystemVars {
                peer: None,
                stratum: STRATUM_UNSYNCHRONIZED,
                ref_id: RefId::NONE,
                root_delay: 0.0,
                root_dispersion: 0.0,
                jitter: 0.0,
                combined: 0.0,
                last_update: None,
            },
            system_poll: MIN_POLL,
            leap_list: None,
            leap_direction: None,
            leap_done_at: None,
            candidates: Vec::new(),
            endpoints: Vec::new(),
            last_action: None,
            last_frequency: None,
            wander_squared: 0.0,
            applied: ClockCorrection::IDENTITY,
            leap_taken: None,
        }
    }

    /// The host clock's time `host` in the engine's time base (the host clock as if never
    /// adjusted). The identity unless the host clock is disciplined.
    fn raw(&self, host: NtpTimestamp) -> NtpTimestamp {
        let a = self.applied;
        if a == ClockCorrection::IDENTITY {
            return host;
        }
        // host = raw + offset + rate (raw − base), so raw = x − (x − base) rate / (1 + rate) with
        // x = host − offset.
        let x = host.add(NtpDuration::from_bits(a.offset.to_bits().wrapping_neg()));
        let rate = f64::from(a.rate) / RATE_UNIT;
        let dt = x.since(a.base).to_seconds_f64();
        x.add(NtpDuration::from_seconds_f64(-dt * rate / (1.0 + rate)))
    }

    /// The engine's time `raw` as the host clock reads it.
    fn host(&self, raw: NtpTimestamp) -> NtpTimestamp {
        self.applied.apply(raw)
    }

    /// The served clock at engine time `r`, as a correction of the untouched clock: the
    /// discipline's, with the leap smear in it while one runs ([`LeapMode::Smear`]).
    fn served_line(&self, r: NtpTimestamp) -> ClockCorrection {
        let c = self.discipline.correction();
        if self.config.leap_mode != LeapMode::Smear {
            return c;
        }
        let leaping = c.apply(r);
        let unix = leaping.to_unix(self.config.discipline.build_date_unix).0;
        // The leap ahead (announced, within a day) or the one just taken; its instant and how
        // far the never-leaping clock is from the leaping one (the leap, once taken).
        let (at, direction, taken) = match (self.leap_direction, self.leap_taken) {
            // (The month's end from half a day back: the leaping clock may be a moment past the
            // boundary before handle_timeout takes the leap.)
            (Some(d), _) => (calendar::start_of_next_month(unix - calendar::DAY / 2), d, 0.0),
            (None, Some((at, d))) => (at, d, d.clock_shift()),
            (None, None) => return c,
        };
        let since = leaping.since(NtpTimestamp::from_unix(at, 0)).to_seconds_f64() - taken;
        if since.abs() >= SMEAR_WINDOW_S / 2.0 {
            return c;
        }
        // Served = the never-leaping clock + the smear = the leaping clock − taken + smear.
        let extra = leap_smear(since, direction) - taken;
        let rate = (direction.clock_shift() / SMEAR_WINDOW_S * RATE_UNIT).round() as i32;
        ClockCorrection {
            offset: NtpDuration::from_bits(
                leaping.since(r).to_bits().wrapping_add(NtpDuration::from_seconds_f64(extra).to_bits()),
            ),
            base: r,
            rate: c.rate.saturating_add(rate),
        }
    }

    /// What the snapshot carries at engine time `r`: the served clock against the host clock.
    fn residual(&self, r: NtpTimestamp) -> ClockCorrection {
        let target = self.served_line(r);
        if self.applied == ClockCorrection::IDENTITY {
            return target;
        }
        let host = self.applied.apply(r);
        let offset = target.apply(r).since(host);
        let rate = target.rate.saturating_sub(self.applied.rate);
        if rate == 0 && offset.to_bits().unsigned_abs() <= IDENTITY_BITS {
            return ClockCorrection::IDENTITY;
        }
        ClockCorrection { offset, base: host, rate }
    }

    /// With [`HostClock::Disciplined`]: what to do to the host clock at host time `now` for it to
    /// carry the served clock (None when it does). Call after every other call (a reply, a
    /// timeout), apply it at once, then call [`host_adjusted`](Self::host_adjusted). Until that is
    /// called the snapshot keeps carrying the difference, so a kernel that refuses leaves the
    /// served time right.
    pub fn host_adjustment(&self, now: NtpTimestamp) -> Option<HostAdjustment> {
        if self.config.host_clock != HostClock::Disciplined {
            return None;
        }
        let r = self.raw(now);
        let target = self.served_line(r);
        let phase = target.apply(r).since(self.applied.apply(r)).to_seconds_f64();
        let step = if phase.abs() >= HOST_STEP_EPSILON { phase } else { 0.0 };
        if step == 0.0 && target.rate == self.applied.rate {
            return None;
        }
        Some(HostAdjustment { step, frequency: f64::from(target.rate) / RATE_UNIT })
    }

    /// The caller applied `adjustment` to the host clock; `at` is the host clock read right
    /// after (the step in it). From then on the host clock carries it.
    pub fn host_adjusted(&mut self, adjustment: &HostAdjustment, at: NtpTimestamp) {
        let r = self.raw(at.add(NtpDuration::from_seconds_f64(-adjustment.step)));
        let host = self.applied.apply(r).add(NtpDuration::from_seconds_f64(adjustment.step));
        let rate = (adjustment.frequency * RATE_UNIT).round() as i32;
        self.applied = ClockCorrection { offset: host.since(r), base: r, rate };
        // Applied late: the host clock ran the old rate a little longer than the served clock.
        // The correction follows the host clock; the next update slews the difference away.
        let late = host.since(self.served_line(r).apply(r)).to_seconds_f64();
        if late.abs() < 1e-3 {
            self.discipline.adjust_correction(late);
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Adds an upstream at `address`; its first request is due at `now`.
    pub fn add_source(
        &mut self,
        address: IpAddr,
        config: SourceConfig,
        now: NtpTimestamp,
    ) -> Result<SourceId, SourceConfigError> {
        config.validate()?;
        let now = self.raw(now);
        let id = SourceId(self.next_id);
        self.next_id += 1;
        let source = Source::new(address, refid_for_address(address), config, now);
        self.slots.push(Slot { id, source, state: SourceState::Unselectable, root_distance: None, refclock: None });
        self.candidates.reserve(self.slots.len().saturating_sub(self.candidates.capacity()));
        self.endpoints.reserve((3 * self.slots.len()).saturating_sub(self.endpoints.capacity()));
        Ok(id)
    }

    /// Adds a reference clock (stratum 0: served as stratum 1 with `refid` while it is the system
    /// peer). Its samples come through [`handle_refclock_sample`](Self::handle_refclock_sample).
    pub fn add_refclock(
        &mut self,
        refid: RefId,
        config: RefclockConfig,
        now: NtpTimestamp,
    ) -> Result<SourceId, RefclockConfigError> {
        config.validate()?;
        let now = self.raw(now);
        let id = SourceId(self.next_id);
        self.next_id += 1;
        let source_config = SourceConfig {
            minpoll: config.poll,
            maxpoll: config.poll,
            iburst: false,
            prefer: config.prefer,
            noselect: config.noselect,
            trust: config.trust,
            require: config.require,
        };
        let address = IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED);
        let mut source = Source::new(address, refid, source_config, now);
        source.min_delay = 0.0;
        let refclock = Some(Box::new(RefclockState::new(config, now)));
        self.slots.push(Slot { id, source, state: SourceState::Unselectable, root_distance: None, refclock });
        self.candidates.reserve(self.slots.len().saturating_sub(self.candidates.capacity()));
        self.endpoints.reserve((3 * self.slots.len()).saturating_sub(self.endpoints.capacity()));
        Ok(id)
    }

    /// A sample of refclock `id` (its driver's thread read it). The median filter keeps it; at
    /// the end of the refclock's poll interval the filtered estimate goes to the selection and
    /// the discipline, as an upstream's reply does.
    pub fn handle_refclock_sample(&mut self, id: SourceId, sample: RefclockSample) -> RefclockOutcome {
        let Some(i) = self.slot_index(id) else { return RefclockOutcome::UnknownSource };
        let t = self.raw(sample.local_receive_time);
        let offset = sample.reference_time.since(sample.local_receive_time).to_seconds_f64();
        let freq = self.discipline.frequency();
        let slot = &mut self.slots[i];
        let Some(rc) = slot.refclock.as_mut() else { return RefclockOutcome::UnknownSource };
        rc.leap = sample.leap;
        let Some(estimate) = rc.add(offset, t, sample.dispersion, sample.delay, freq) else {
            slot.source.reached();
            return RefclockOutcome::Filtered;
        };
        // A fresh estimate: selectable again after a fix loss.
        rc.stale = false;
        let s = &mut slot.source;
        s.reached();
        s.last_flash = Flash::NONE;
        s.upstream = Some(super::source::UpstreamHeader {
            leap: sample.leap,
            stratum: 0,
            precision: self.config.precision,
            ref_id: s.refid,
            root_delay: 0.0,
            root_dispersion: 0.0,
        });
        s.min_delay = sample.delay;
        s.mean_excess = 0.0;
        s.samples_seen = (s.samples_seen + 1).min(1000);
        s.last_sample = Some(estimate.sample);
        s.filter.set_estimate(estimate);
        self.mitigate(t, Some((i, estimate.sample)));
        RefclockOutcome::Estimate { offset: estimate.sample.offset - self.discipline.correction_at(t) }
    }

    /// Refclock `id`'s driver says its reference is not good now (an NMEA receiver without a fix,
    /// too few satellites): it leaves the selection at once, and comes back with its next
    /// median-filter estimate. Returns whether it was selectable-fresh before (false: already
    /// stale, or no such refclock).
    pub fn refclock_stale(&mut self, id: SourceId, now: NtpTimestamp) -> bool {
        let Some(i) = self.slot_index(id) else { return false };
        let Some(rc) = self.slots[i].refclock.as_mut() else { return false };
        if !rc.go_stale() {
            return false;
        }
        let now = self.raw(now);
        self.mitigate(now, None);
        true
    }

    /// Drops a source (a re-resolved name, a pool member replaced). Returns whether it existed.
    pub fn remove_source(&mut self, id: SourceId) -> bool {
        let Some(i) = self.slot_index(id) else { return false };
        self.slots.remove(i);
        match self.system.peer {
            Some(p) if p == i => self.system.peer = None,
            Some(p) if p > i => self.system.peer = Some(p - 1),
            _ => {}
        }
        true
    }

    /// Loads (or with None, drops) the leap-seconds list; the server reads and parses the file.
    pub fn set_leap_seconds(&mut self, list: Option<LeapSecondsList>) {
        self.leap_list = list;
    }

    fn slot_index(&self, id: SourceId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// The earliest host time at which the engine wants [`poll_transmit`](Self::poll_transmit) or
    /// [`handle_timeout`](Self::handle_timeout) called: a poll due, a slew ending, the leap
    /// warning starting or the leap itself, holdover running out. None with nothing to do.
    pub fn next_deadline(&self, now: NtpTimestamp) -> Option<NtpTimestamp> {
        let now = self.raw(now);
        let mut best: Option<NtpTimestamp> = None;
        let mut consider = |t: NtpTimestamp| {
            if best.is_none_or(|b| t.since(b).to_bits() < 0) {
                best = Some(t);
            }
        };
        for s in &self.slots {
            if let Some(rc) = &s.refclock {
                consider(rc.interval_end);
                if let Some(at) = rc.stale_at() {
                    consider(at);
                }
            } else if s.source.demobilised.is_none() {
                consider(s.source.next_poll);
            }
        }
        if let Some(t) = self.discipline.slew_end() {
            consider(t);
        }
        if let Some(last) = self.system.last_update {
            let left = (self.config.max_distance - self.system.root_delay / 2.0 - self.system.root_dispersion) / PHI;
            for end in [self.config.max_holdover, left] {
                let at = last.add(NtpDuration::from_seconds_f64(end.max(0.0)));
                if at.since(now).to_bits() > 0 {
                    consider(at);
                }
            }
        }
        // Served-clock instants, to the fraction of a second (a leap applied at the boundary,
        // not up to a second after it).
        let served = self.discipline.correction().apply(now);
        let mut consider_served = |unix: i64| {
            let ahead = NtpTimestamp::from_unix(unix, 0).since(served);
            if ahead.to_bits() > 0 && ahead.to_seconds_f64() <= 2.0 * calendar::DAY as f64 {
                consider(now.add(ahead));
            }
        };
        if self.leap_direction.is_some() {
            let end = calendar::start_of_next_month(self.served_unix(now) - calendar::DAY / 2);
            let half = (SMEAR_WINDOW_S / 2.0) as i64;
            let smear = self.config.leap_mode == LeapMode::Smear;
            for at in [end - calendar::DAY, end, end - half].into_iter().take(if smear { 3 } else { 2 }) {
                consider_served(at);
            }
        }
        if let Some((at, d)) = self.leap_taken.filter(|_| self.config.leap_mode == LeapMode::Smear) {
            // The smear's end, on the leaping clock (a second off the never-leaping one).
            consider_served(at + (SMEAR_WINDOW_S / 2.0) as i64 + d.clock_shift() as i64);
        }
        best.map(|b| self.host(b))
    }

    /// The next request due at `now`, if any: send `packet` to `address` at once. `random` (64 bits
    /// from a good RNG, fresh per call) becomes its transmit timestamp; `now` is kept as T1. Call
    /// again until it returns None. A poll left unanswered counts as lost when the next one goes.
    pub fn poll_transmit(&mut self, now: NtpTimestamp, random: u64) -> Option<Transmit> {
        let now = self.raw(now);
        let system_poll = self.system_poll;
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| {
                s.refclock.is_none() && s.source.demobilised.is_none() && s.source.next_poll.since(now).to_bits() <= 0
            })
            .min_by_key(|s| s.source.next_poll.since(now).to_bits())?;
        let packet = slot.source.transmit(now, random, system_poll);
        if slot.source.reach == 0 && slot.source.last_sample.is_some() {
            slot.state = SourceState::Unreachable;
        }
        Some(Transmit { source: slot.id, address: slot.source.address, packet })
    }

    /// A datagram from source `id`'s socket, received at host time `t4` (the kernel's receive
    /// stamp when there is one). Runs the checks, the filter, the mitigation and the discipline.
    pub fn handle_reply(&mut self, id: SourceId, datagram: &[u8], t4: NtpTimestamp) -> ReplyOutcome {
        let Some(i) = self.slot_index(id) else { return ReplyOutcome::UnknownSource };
        let t4 = self.raw(t4);
        if self.slots[i].source.demobilised.is_some() {
            return ReplyOutcome::UnknownSource;
        }
        let ctx = ReplyContext {
            own_refids: &self.config.own_refids,
            precision: log2_seconds(self.config.precision),
            max_distance: self.config.max_distance,
        };
        let sample = match self.slots[i].source.receive(datagram, t4, &ctx) {
            Ok(sample) => sample,
            Err(outcome) => {
                if let ReplyOutcome::KissDemobilised(kiss) = outcome {
                    self.slots[i].state = SourceState::Demobilised(kiss);
                    self.mitigate(t4, None);
                }
                return outcome;
            }
        };
        let poll = poll_seconds(self.slots[i].source.poll);
        let freq = self.discipline.frequency();
        let verdict = self.slots[i].source.filter.add(sample, poll, freq, ctx.precision);
        let fresh = (verdict != FilterVerdict::Popcorn).then_some((i, sample));
        self.mitigate(t4, fresh);
        ReplyOutcome::Sample { offset: sample.offset - self.discipline.correction_at(t4), delay: sample.delay }
    }

    /// Does what is due at `now`: ends a slew, applies a leap second to the served clock
    /// ([`LeapMode::Step`]). Requests are [`poll_transmit`](Self::poll_transmit)'s.
    pub fn handle_timeout(&mut self, now: NtpTimestamp) {
        let now = self.raw(now);
        self.discipline.finish_slew(now);
        // Refclock intervals ended: shift the reach register (ntpd's: bit 0 is the interval now
        // begun, set by its first sample, so a silent interval stays a 0 once samples resume);
        // one that gave no sample for a whole interval leaves the selection now.
        let mut went_quiet = false;
        for slot in &mut self.slots {
            let Some(rc) = slot.refclock.as_mut() else { continue };
            while rc.interval_end.since(now).to_bits() <= 0 {
                let step = NtpDuration::from_seconds_f64(rc.interval());
                rc.interval_end = rc.interval_end.add(step);
                let r = slot.source.reach;
                went_quiet |= r & 0b11 != 0 && r & 0b1 == 0;
                slot.source.shift_reach();
                rc.sampled = false;
            }
            // No sample for `max_age`: stale now, not at the interval's end.
            if rc.stale_at().is_some_and(|at| at.since(now).to_bits() <= 0) {
                went_quiet |= rc.go_stale();
            }
        }
        if went_quiet {
            self.mitigate(now, None);
        }
        let Some(dir) = self.leap_direction else { return };
        // The leap takes effect at the first second of a month (served time): the month boundary
        // at or before `served`, if it is less than a day ago.
        let served = self.served_unix(now);
        let boundary = calendar::start_of_next_month(served - calendar::DAY);
        if served < boundary || self.leap_done_at == Some(boundary) {
            return;
        }
        self.leap_done_at = Some(boundary);
        self.leap_direction = None;
        self.leap_taken = Some((boundary, dir));
        let kernel_took_it = self.config.host_clock == HostClock::Disciplined;
        if self.config.leap_mode != LeapMode::Kernel || kernel_took_it {
            let by = dir.clock_shift();
            if self.config.leap_mode == LeapMode::Kernel {
                // The kernel stepped the host clock by the leap at the boundary: the record of
                // what the host clock carries takes the step, so the engine's time base goes on
                // untouched and no adjustment follows.
                self.applied.offset = NtpDuration::from_bits(
                    self.applied.offset.to_bits().wrapping_add(NtpDuration::from_seconds_f64(by).to_bits()),
                );
            }
            let at = now.add(NtpDuration::from_seconds_f64(-((served - boundary) as f64)));
            self.discipline.shift(by);
            for s in &mut self.slots {
                s.source.filter.shift_offsets(at, by);
                if let Some(last) = s.source.last_sample.as_mut().filter(|l| l.time.since(at).to_bits() < 0) {
                    last.offset += by;
                }
            }
        }
    }

    fn served_unix(&self, now: NtpTimestamp) -> i64 {
        self.discipline.correction().apply(now).to_unix(self.config.discipline.build_date_unix).0
    }

    /// Select, cluster and combine as of `now`; then, with `fresh` a new sample of source `i`
    /// that survived, a clock update.
    fn mitigate(&mut self, now: NtpTimestamp, fresh: Option<(usize, Sample)>) {
        let freq = self.discipline.frequency();
        let correction_now = self.discipline.correction_at(now);
        self.candidates.clear();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let s = &slot.source;
            slot.root_distance = None;
            if let Some(kiss) = s.demobilised {
                slot.state = SourceState::Demobilised(kiss);
                continue;
            }
            if s.reach == 0 {
                slot.state = if s.last_sample.is_some() { SourceState::Unreachable } else { SourceState::Unselectable };
                continue;
            }
            slot.state = SourceState::Unselectable;
            if slot.refclock.as_ref().is_some_and(|rc| rc.stale || s.reach & 0b11 == 0) {
                // Stale (its driver said so, or no sample for `max_age`), or no sample in the last
                // whole poll interval nor this one: a fix or a lock lost.
                continue;
            }
            let (Some(est), Some(up)) = (s.filter.last(), s.upstream) else { continue };
            let age = now.since(est.sample.time).to_seconds_f64().max(0.0);
            let distance =
                (up.root_delay + est.sample.delay) / 2.0 + up.root_dispersion + est.dispersion + PHI * age + est.jitter;
            slot.root_distance = Some(distance);
            if !s.last_flash.is_empty() || s.config.noselect || distance > self.config.max_distance {
                continue;
            }
            slot.state = SourceState::Falseticker;
            self.candidates.push(Candidate {
                index: i,
                offset: est.sample.offset + freq * age - correction_now,
                root_distance: distance,
                jitter: est.jitter,
                stratum: up.stratum,
                prefer: s.config.prefer,
                trust: s.config.trust,
                require: s.config.require,
            });
        }
        if truechimers(&mut self.candidates, &mut self.endpoints).is_none() {
            self.no_selection();
            return;
        }
        let any_required = self.slots.iter().any(|s| s.source.config.require);
        if self.candidates.len() < self.config.minsane.max(1) || !requirement_met(any_required, &self.candidates) {
            for c in &self.candidates {
                self.slots[c.index].state = SourceState::Unselectable;
            }
            self.no_selection();
            return;
        }
        for c in &self.candidates {
            self.slots[c.index].state = SourceState::Outlier;
        }
        let jitter = cluster(&mut self.candidates);
        for c in &self.candidates {
            self.slots[c.index].state = SourceState::Candidate;
        }
        let peer = system_peer(&self.candidates, self.system.peer).unwrap_or(self.candidates[0].index);
        self.slots[peer].state = SourceState::SystemPeer;
        let combined = combine(&self.candidates).unwrap_or(0.0);

        let Some((i, sample)) = fresh else {
            self.follow_peer(peer, now);
            return;
        };
        if !matches!(self.slots[i].state, SourceState::Candidate | SourceState::SystemPeer) {
            self.follow_peer(peer, now);
            return;
        }
        // The sample's error: uniform within ±(delay − minimum delay)/2, plus both precisions.
        let s = &self.slots[i].source;
        // The minimum delay learned from n samples is itself too high by an unknown amount, which
        // is added to the excess. With an exponential delay each way the round trip's excess is
        // the sum of two (density rising from 0), whose minimum over n samples shrinks only as
        // mean-excess / √n (not / n, as for a single exponential): a sample at the minimum
        // is not exact, and taking it as exact made the filter trust a few early samples to a
        // microsecond and learn a frequency error from their milliseconds of noise. While a
        // source has few samples its mean excess says little either, so the error is also
        // at least the minimum delay / n (one sample: RFC 5905's bound of half the delay).
        let n = f64::from(s.samples_seen.max(1));
        let unsure = (s.mean_excess / n.sqrt()).max(s.min_delay / n);
        let excess = (sample.delay - s.min_delay).max(0.0) + unsure;
        let floor = sample.dispersion;
        let variance = excess * excess / 12.0 + floor * floor;
        // The very first update starts from all survivors' combined offset, not from whichever
        // source answered first (a 2-against-2 split must not pull the clock towards one side).
        self.discipline.set_poll_interval(poll_seconds(s.poll));
        let action = if self.discipline.has_estimate() {
            self.discipline.update(sample.time, sample.offset, variance, now)
        } else {
            let raw = combined + self.discipline.correction_at(now);
            self.discipline.update(now, raw, variance.max(jitter * jitter), now)
        };
        self.last_action = Some(action);
        let frequency = self.discipline.frequency() * 1e6;
        if let Some(before) = self.last_frequency {
            // ntpd's clock_stability: an exponential average over CLOCK_AVG = 8 updates.
            let change = frequency - before;
            self.wander_squared += (change * change - self.wander_squared) / 8.0;
        }
        self.last_frequency = Some(frequency);
        if matches!(action, ClockAction::PanicRefused { .. } | ClockAction::BeforeBuildDate { .. }) {
            self.system.peer = Some(peer);
            return;
        }
        let p = &self.slots[peer];
        let (Some(up), Some(est)) = (p.source.upstream, p.source.filter.last()) else { return };
        self.system = SystemVars {
            peer: Some(peer),
            stratum: up.stratum.saturating_add(1).min(STRATUM_UNSYNCHRONIZED),
            ref_id: p.source.refid,
            root_delay: up.root_delay + est.sample.delay,
            root_dispersion: up.root_dispersion
                + est.dispersion
                + PHI * now.since(est.sample.time).to_seconds_f64().max(0.0)
                + est.jitter
                + jitter
                + combined.abs(),
            jitter,
            combined,
            last_update: Some(now),
        };
        self.system_poll = self.discipline.suggested_poll(MIN_POLL, super::source::MAX_POLL);
        let leaps = self.candidates.iter().filter_map(|c| self.slots[c.index].source.upstream.map(|u| u.leap));
        let file = self.leap_list.as_ref().and_then(|l| l.leap_this_month(self.served_unix(now)));
        let direction = leap_vote(file, leaps);
        // Only a leap at the end of this very day counts (upstreams announce it on its last day
        // at the latest); anything else waits for the next update.
        let served = self.served_unix(now);
        let end = calendar::start_of_next_month(served);
        self.leap_direction = direction.filter(|_| end - served <= calendar::DAY && self.leap_done_at != Some(end));
    }

    /// A system peer chosen without a clock update (the last one went stale, a refclock lost
    /// its fix): the served stratum, refid and root delay follow it now, not at its next sample
    /// (an upstream polled every 1024 s would leave a lost GPS's stratum 1 served that long).
    /// The discipline and its update time stay; the root dispersion is the new peer's own.
    fn follow_peer(&mut self, peer: usize, now: NtpTimestamp) {
        let changed = self.system.peer != Some(peer);
        self.system.peer = Some(peer);
        if !changed || self.system.last_update.is_none() {
            return;
        }
        let p = &self.slots[peer];
        let (Some(up), Some(est)) = (p.source.upstream, p.source.filter.last()) else { return };
        let age = now.since(est.sample.time).to_seconds_f64().max(0.0);
        self.system.stratum = up.stratum.saturating_add(1).min(STRATUM_UNSYNCHRONIZED);
        self.system.ref_id = p.source.refid;
        self.system.root_delay = up.root_delay + est.sample.delay;
        self.system.root_dispersion = up.root_dispersion
            + est.dispersion
            + PHI * age
            + est.jitter
            + self.system.jitter
            + self.system.combined.abs();
    }

    fn no_selection(&mut self) {
        self.system.peer = None;
    }

    /// Whether the served clock counts as synchronised at `now`: updated at least once, within
    /// `max_holdover`, and a root distance within `max_distance`.
    pub fn is_synchronized(&self, now: NtpTimestamp) -> bool {
        self.synchronized_at(self.raw(now))
    }

    fn synchronized_at(&self, now: NtpTimestamp) -> bool {
        let Some(last) = self.system.last_update else { return false };
        let age = now.since(last).to_seconds_f64();
        age <= self.config.max_holdover && self.root_distance_at(now) <= self.config.max_distance
    }

    fn root_distance_at(&self, now: NtpTimestamp) -> f64 {
        let age = self.system.last_update.map_or(0.0, |l| now.since(l).to_seconds_f64().max(0.0));
        self.system.root_delay / 2.0 + self.system.root_dispersion + PHI * age
    }

    /// The state to publish at host time `now`: leap indicator, stratum, refid, root delay and
    /// dispersion (growing at 15 ppm from the last update), reference time, precision, TAI offset
    /// and the virtual clock's correction. Unsynchronised (LI = 3, stratum 16) before the first
    /// update, past `max-holdover` or past the root distance limit; the correction still applies.
    pub fn snapshot(&self, now: NtpTimestamp) -> ServerSnapshot {
        self.snapshot_at(self.raw(now))
    }

    fn snapshot_at(&self, now: NtpTimestamp) -> ServerSnapshot {
        let correction = self.residual(now);
        let served_unix = self.served_unix(now);
        let tai_offset = self.leap_list.as_ref().and_then(|l| l.tai_offset_at(served_unix)).unwrap_or(0);
        let mut snap =
            ServerSnapshot { correction, tai_offset, ..ServerSnapshot::unsynchronized(self.config.precision) };
        let Some(last) = self.system.last_update.filter(|_| self.synchronized_at(now)) else { return snap };
        let reference = self.served_line(last).apply(last);
        // A smeared clock announces no leap: a client would take it a second time.
        snap.leap = match self.config.leap_mode {
            LeapMode::Smear => LeapIndicator::NoWarning,
            LeapMode::Step | LeapMode::Kernel => served_leap(self.leap_direction, served_unix),
        };
        snap.stratum = self.system.stratum;
        snap.ref_id = self.system.ref_id;
        snap.reference_time = reference;
        snap.root_delay = NtpShort::from_duration(NtpDuration::from_seconds_f64(self.system.root_delay));
        snap.root_dispersion = NtpShort::from_duration(NtpDuration::from_seconds_f64(self.system.root_dispersion));
        snap.dispersion_base = reference;
        snap.dispersion_rate = ppm_to_rate(PHI * 1e6) as u32;
        snap
    }

    /// The system's state for `stratumctl tracking` and /metrics.
    pub fn tracking(&self, now: NtpTimestamp) -> Tracking {
        let now = self.raw(now);
        let snap = self.snapshot_at(now);
        let peer = self.system.peer.map(|p| &self.slots[p]);
        Tracking {
            system_peer: peer.map(|p| p.id),
            system_peer_address: peer.map(|p| p.source.address),
            stratum: snap.stratum,
            ref_id: snap.ref_id,
            offset: self.discipline.estimated_offset(now),
            combined_offset: self.system.combined,
            offset_error: self.discipline.phase_error(),
            frequency_ppm: self.discipline.frequency() * 1e6,
            wander_ppm: self.wander_squared.sqrt(),
            system_jitter: self.system.jitter,
            root_delay: self.system.root_delay,
            root_dispersion: self.system.root_dispersion
                + self.system.last_update.map_or(0.0, |l| PHI * now.since(l).to_seconds_f64().max(0.0)),
            leap: snap.leap,
            last_update: self.system.last_update.map(|l| self.host(l)),
            update_age: self.system.last_update.map(|l| now.since(l).to_seconds_f64()),
            synchronized: snap.is_synchronized(),
            steps: self.discipline.steps(),
            system_poll: self.system_poll,
        }
    }

    /// What the last clock update did (a step, a slew, a refused panic), for the log.
    pub fn last_clock_action(&self) -> Option<ClockAction> {
        self.last_action
    }

    /// Every source, in the order added.
    pub fn sources(&self) -> impl Iterator<Item = SourceStatus> + '_ {
        self.slots.iter().map(|slot| self.status(slot))
    }

    /// One source, if it exists.
    pub fn source(&self, id: SourceId) -> Option<SourceStatus> {
        self.slot_index(id).map(|i| self.status(&self.slots[i]))
    }

    fn status(&self, slot: &Slot) -> SourceStatus {
        let s = &slot.source;
        let est = s.filter.last();
        SourceStatus {
            id: slot.id,
            address: s.address,
            config: s.config,
            state: slot.state,
            stratum: s.upstream.map(|u| u.stratum),
            upstream_ref_id: s.upstream.map(|u| u.ref_id),
            leap: s.upstream.map(|u| u.leap),
            poll: s.poll,
            reach: s.reach,
            unreach: s.unreach,
            last_offset: s.last_sample.map(|l| l.offset - self.discipline.correction_at(l.time)),
            last_delay: s.last_sample.map(|l| l.delay),
            last_sample_time: s.last_sample.map(|l| self.host(l.time)),
            jitter: est.map(|e| e.jitter),
            root_distance: slot.root_distance,
            last_flash: s.last_flash,
            next_poll: self.host(slot.refclock.as_ref().map_or(s.next_poll, |rc| rc.interval_end)),
            refclock: slot.refclock.as_ref().map(|_| s.refid),
            refclock_samples: slot.refclock.as_ref().map_or(0, |rc| rc.samples),
            refclock_stale: slot.refclock.as_ref().is_some_and(|rc| rc.stale),
            upstream_precision: s.upstream.map(|u| u.precision),
            upstream_root_delay: s.upstream.map(|u| u.root_delay),
            upstream_root_dispersion: s.upstream.map(|u| u.root_dispersion),
            // The filter keeps its dispersion referred to the chosen sample's time, which can lie
            // before the stages it was computed from (the lowest-delay sample is often not the
            // newest), so that figure alone may be negative; shown as of the newest sample, it is
            // the weighted dispersion the filter computed then, as ntpd's peer dispersion is.
            dispersion: est.map(|e| {
                let since_chosen = s.last_sample.map_or(0.0, |l| l.time.since(e.sample.time).to_seconds_f64());
                e.dispersion + PHI * since_chosen.max(0.0)
            }),
            filter: s
                .filter
                .stages()
                .map(|stage| stage.map(|x| Sample { offset: x.offset - self.discipline.correction_at(x.time), ..x })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{NtpHeader, NtpMode, NtpPacket};

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(3_990_000_000, 0).add(NtpDuration::from_seconds_f64(seconds))
    }

    /// A stratum-1 server's reply (GPS, root dispersion 50 µs) to `request`, received at `t2` and
    /// sent at `t3`.
    pub(super) fn lan_reply(request: &NtpHeader, t2: NtpTimestamp, t3: NtpTimestamp) -> NtpPacket {
        NtpPacket {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: NtpMode::Server,
            stratum: 1,
            poll: request.poll(),
            precision: -20,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::from_micros(50),
            ref_id: RefId(*b"GPS\0"),
            reference_timestamp: t2,
            origin_timestamp: request.transmit_timestamp(),
            receive_timestamp: t2,
            transmit_timestamp: t3,
        }
    }

    /// Answers every request due at `now` from upstreams 2 ms ahead of the host clock, 150 µs
    /// each way, with a root dispersion of 50 µs (a stratum-1 server on the LAN).
    fn answer_due(engine: &mut SyncEngine, now: f64, random: &mut u64) {
        answer_due_drifting(engine, now, random, 0.0);
    }

    /// As [`answer_due`], from upstreams whose time also runs `ppm` fast against the host's.
    fn answer_due_drifting(engine: &mut SyncEngine, now: f64, random: &mut u64, ppm: f64) {
        while let Some(tx) = engine.poll_transmit(at(now), *random) {
            *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let request = NtpHeader::new(&tx.packet).unwrap();
            let t2 = at(now + 150e-6 + 2e-3 + now * ppm * 1e-6);
            let reply = lan_reply(&request, t2, t2.add(NtpDuration::from_nanos(10_000)));
            let outcome = engine.handle_reply(tx.source, &reply.to_bytes(), at(now + 310e-6));
            assert!(matches!(outcome, ReplyOutcome::Sample { .. }), "{outcome:?}");
        }
    }

    #[test]
    fn a_sources_dispersion_is_never_negative_when_its_best_sample_is_old() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let config = SourceConfig { minpoll: 4, maxpoll: 4, ..Default::default() };
        let id = engine.add_source(core::net::Ipv4Addr::new(192, 0, 2, 10).into(), config, at(0.0)).unwrap();
        let (mut now, mut replies) = (0.0, 0);
        while now < 200.0 {
            while let Some(tx) = engine.poll_transmit(at(now), 7) {
                // The first reply has the lowest delay, so it stays the filter's choice while
                // seven slower, newer ones arrive after it.
                let one_way = if replies == 0 { 100e-6 } else { 2e-3 };
                replies += 1;
                let request = NtpHeader::new(&tx.packet).unwrap();
                let t2 = at(now + one_way);
                let reply = lan_reply(&request, t2, t2);
                engine.handle_reply(tx.source, &reply.to_bytes(), at(now + 2.0 * one_way));
            }
            engine.handle_timeout(at(now));
            if let Some(d) = engine.source(id).and_then(|s| s.dispersion) {
                assert!(d >= 0.0, "dispersion {d} at {now} s after {replies} replies");
            }
            now += 0.5;
        }
        assert!(replies >= 8, "{replies} replies");
    }

    #[test]
    fn wander_is_the_rms_of_the_frequencys_change_between_updates() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let config = SourceConfig { iburst: true, minpoll: 4, maxpoll: 4, ..Default::default() };
        engine.add_source(core::net::Ipv4Addr::new(192, 0, 2, 10).into(), config, at(0.0)).unwrap();
        assert_eq!(engine.tracking(at(0.0)).wander_ppm, 0.0);
        let (mut random, mut now) = (0x5eed, 0.0);
        let mut frequencies = Vec::new();
        while now < 600.0 {
            answer_due_drifting(&mut engine, now, &mut random, 20.0);
            engine.handle_timeout(at(now));
            let t = engine.tracking(at(now));
            if t.last_update.is_some() && frequencies.last().is_none_or(|(u, _)| *u != t.last_update) {
                frequencies.push((t.last_update, t.frequency_ppm));
            }
            now += 0.5;
        }
        // The same exponential average over the frequencies seen at each update.
        let mut squared = 0.0;
        for pair in frequencies.windows(2) {
            let change = pair[1].1 - pair[0].1;
            squared += (change * change - squared) / 8.0;
        }
        let wander = engine.tracking(at(now)).wander_ppm;
        assert!(
            frequencies.len() > 10 && wander > 0.0,
            "{} updates, wander {wander}: {frequencies:?}",
            frequencies.len()
        );
        assert!((wander - f64::sqrt(squared)).abs() < 1e-12, "{wander} vs {}", f64::sqrt(squared));
    }

    #[test]
    fn root_dispersion_is_sane_right_after_the_first_synchronisation() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        for i in 0..3u8 {
            let config = SourceConfig { iburst: true, ..Default::default() };
            engine.add_source(core::net::Ipv4Addr::new(192, 0, 2, 10 + i).into(), config, at(0.0)).unwrap();
        }
        let mut random = 0x5eed;
        let mut now = 0.0;
        while !engine.is_synchronized(at(now)) {
            assert!(now < 10.0, "not synchronised after an iburst");
            answer_due(&mut engine, now, &mut random);
            engine.handle_timeout(at(now));
            now += 0.5;
        }
        // Synchronised on the iburst's fourth samples: the served root dispersion is the
        // upstream's 50 µs, the 2 ms the served clock is still off (RFC 5905 adds |offset|; the
        // slew has only begun) and microseconds of our own, not the 0.94 s that the clock
        // filter's four empty stages (at 16 s each) would add.
        let tracking = engine.tracking(at(now));
        assert!(tracking.synchronized && tracking.stratum == 2, "{tracking:?}");
        assert!((tracking.combined_offset - 2e-3).abs() < 1e-5, "{tracking:?}");
        let own = tracking.root_dispersion - 50e-6 - tracking.combined_offset.abs();
        assert!((0.0..100e-6).contains(&own), "root dispersion {} s", tracking.root_dispersion);
        let served = engine.snapshot(at(now)).root_dispersion.to_duration().to_seconds_f64();
        assert!(served < 2.2e-3, "served root dispersion {served} s");
        for status in engine.sources() {
            let distance = status.root_distance.unwrap();
            assert!(distance < 1e-3, "{status:?}");
        }
    }
}

#[cfg(test)]
mod host_clock_tests {
    use super::tests::lan_reply;
    use super::*;
    use crate::packet::NtpHeader;

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(3_990_000_000, 0).add(NtpDuration::from_seconds_f64(seconds))
    }

    /// Upstreams `ahead` seconds ahead of the host clock `host(t)` at true time t, 150 µs each way.
    fn synchronise(engine: &mut SyncEngine, ahead: f64) -> f64 {
        for i in 0..3u8 {
            let config = SourceConfig { iburst: true, ..Default::default() };
            engine.add_source(core::net::Ipv4Addr::new(192, 0, 2, 10 + i).into(), config, at(0.0)).unwrap();
        }
        let mut now = 0.0;
        loop {
            assert!(now < 10.0, "not synchronised after an iburst");
            while let Some(tx) = engine.poll_transmit(at(now), 7) {
                let request = NtpHeader::new(&tx.packet).unwrap();
                let t2 = at(now + 150e-6 + ahead);
                let reply = lan_reply(&request, t2, t2);
                engine.handle_reply(tx.source, &reply.to_bytes(), at(now + 300e-6));
            }
            // The first clock update, its adjustment not yet due to anyone.
            if engine.is_synchronized(at(now + 300e-6)) {
                return now + 300e-6;
            }
            engine.handle_timeout(at(now));
            now += 0.5;
        }
    }

    #[test]
    fn a_free_host_clock_is_never_asked_to_move() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let now = synchronise(&mut engine, 0.5);
        assert_eq!(engine.host_adjustment(at(now)), None);
        assert_ne!(engine.snapshot(at(now)).correction, ClockCorrection::IDENTITY, "the snapshot carries it");
    }

    #[test]
    fn a_disciplined_host_clock_carries_the_slew_and_the_snapshot_the_identity() {
        let config = SyncConfig { host_clock: HostClock::Disciplined, ..SyncConfig::default() };
        let mut engine = SyncEngine::new(config);
        let now = synchronise(&mut engine, 2e-3);
        let adjustment = engine.host_adjustment(at(now)).expect("a slew to apply");
        assert_eq!(adjustment.step, 0.0, "2 ms is slewed");
        assert!(adjustment.frequency > 1e-6 && adjustment.frequency < 500.001e-6, "{adjustment:?}");
        // Not applied yet (a kernel that refused): the snapshot still carries the correction.
        assert_ne!(engine.snapshot(at(now)).correction, ClockCorrection::IDENTITY);
        engine.host_adjusted(&adjustment, at(now));
        assert_eq!(engine.host_adjustment(at(now)), None);
        assert_eq!(engine.snapshot(at(now)).correction, ClockCorrection::IDENTITY);
        // The host clock now runs at the slew's rate: its readings map back to the engine's time
        // base, which is the untouched clock's, and back again.
        let later = at(now + 0.25);
        assert!(engine.host(engine.raw(later)).since(later).to_bits().unsigned_abs() < 4);
        assert_eq!(engine.snapshot(later).correction, ClockCorrection::IDENTITY);
    }

    #[test]
    fn a_step_of_the_served_clock_is_a_step_of_the_host_clock_and_applied_late_is_taken_over() {
        let config = SyncConfig { host_clock: HostClock::Disciplined, ..SyncConfig::default() };
        let mut engine = SyncEngine::new(config);
        let now = synchronise(&mut engine, 0.5);
        let adjustment = engine.host_adjustment(at(now)).expect("a step to apply");
        assert!((adjustment.step - 0.5).abs() < 1e-3, "{adjustment:?}");
        // Applied 10 ms late: the host clock is read after the step.
        let after = at(now + 0.01 + adjustment.step);
        engine.host_adjusted(&adjustment, after);
        assert_eq!(engine.host_adjustment(after), None);
        assert_eq!(engine.snapshot(after).correction, ClockCorrection::IDENTITY);
        assert_eq!(engine.tracking(after).steps, 1);
        // The engine's own clock did not jump: the next deadline is in the host clock's terms.
        let next = engine.next_deadline(after).unwrap();
        assert!(next.since(after).to_seconds_f64() >= 0.0 && next.since(after).to_seconds_f64() < 70.0);
    }
}

#[cfg(test)]
mod refclock_tests {
    use super::*;

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(3_990_000_000, 0).add(NtpDuration::from_seconds_f64(seconds))
    }

    /// A 1 Hz GPS 1 ms ahead of the host clock, sampled 0.1 s after each second.
    fn sample(engine: &mut SyncEngine, id: SourceId, t: f64) -> RefclockOutcome {
        let local = at(t);
        let sample = RefclockSample {
            reference_time: local.add(NtpDuration::from_seconds_f64(1e-3)),
            local_receive_time: local,
            leap: LeapIndicator::NoWarning,
            dispersion: 1e-6,
            delay: 0.0,
        };
        engine.handle_refclock_sample(id, sample)
    }

    /// Runs the engine's timer as the server's loop does (at most 200 ms apart).
    fn run(engine: &mut SyncEngine, id: SourceId, from: f64, to: f64, sampled: bool) {
        let mut t = from;
        while t < to {
            engine.handle_timeout(at(t));
            if sampled && (t.fract() - 0.1).abs() < 1e-6 {
                sample(engine, id, t);
            }
            t = ((t + 0.1) * 10.0).round() / 10.0;
        }
    }

    fn selected(engine: &SyncEngine, id: SourceId) -> bool {
        engine.sources().any(|s| s.id == id && s.state == SourceState::SystemPeer)
    }

    fn gps(engine: &mut SyncEngine) -> SourceId {
        engine.add_refclock(RefId(*b"GPS\0"), RefclockConfig::default(), at(0.0)).unwrap()
    }

    #[test]
    fn a_fix_loss_takes_a_refclock_out_of_the_selection_at_once_and_its_next_estimate_back() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let id = gps(&mut engine);
        run(&mut engine, id, 0.0, 30.0, true);
        assert!(selected(&engine, id), "{:?}", engine.sources().collect::<Vec<_>>());
        // The receiver says "no fix" (poll 4: 16 s intervals; this is 2 s into one).
        assert!(engine.refclock_stale(id, at(30.0)));
        assert!(!engine.refclock_stale(id, at(30.05)), "already stale");
        assert!(!selected(&engine, id));
        let status = engine.sources().find(|s| s.id == id).unwrap();
        assert!(status.refclock_stale && status.state == SourceState::Unselectable, "{status:?}");
        assert!(engine.tracking(at(30.1)).system_peer.is_none());
        // The fix is back: selectable from the first estimate of samples taken since.
        run(&mut engine, id, 31.0, 33.0, true);
        assert!(!selected(&engine, id), "not before an estimate");
        run(&mut engine, id, 33.0, 60.0, true);
        assert!(selected(&engine, id));
    }

    #[test]
    fn a_refclock_sampled_in_every_interval_reaches_377() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let id = gps(&mut engine);
        let reach = |e: &SyncEngine| e.sources().next().unwrap().reach;
        run(&mut engine, id, 0.0, 16.15, true);
        assert_eq!(reach(&engine), 0b11, "one interval and the next begun");
        run(&mut engine, id, 16.15, 32.15, true);
        assert_eq!(reach(&engine), 0b111);
        run(&mut engine, id, 32.15, 200.0, true);
        assert_eq!(reach(&engine), 0xff, "{:o}", reach(&engine));
        assert!(selected(&engine, id));
        // Right after an interval ends, before the next sample: still 376 and selected.
        run(&mut engine, id, 200.0, 208.05, true);
        assert_eq!(reach(&engine), 0xfe, "{:o}", reach(&engine));
        assert_eq!(engine.sources().next().unwrap().unreach, 1, "an interval begun without a sample yet");
        assert!(selected(&engine, id));
        // A whole silent interval (224-240) stays a 0 bit once samples resume.
        run(&mut engine, id, 208.05, 223.15, true);
        run(&mut engine, id, 223.15, 240.05, false);
        run(&mut engine, id, 240.05, 256.15, true);
        assert_eq!(reach(&engine), 0b1111_1011, "{:o}", reach(&engine));
        assert_eq!(engine.sources().next().unwrap().unreach, 0, "reached in the interval now");
    }

    #[test]
    fn a_refclock_that_stops_sampling_is_stale_after_max_age_not_a_poll_interval() {
        let mut engine = SyncEngine::new(SyncConfig::default());
        let id = gps(&mut engine);
        run(&mut engine, id, 0.0, 30.05, true);
        assert!(selected(&engine, id));
        // The last sample at 30.1; then silence (an SHM writer that stopped).
        sample(&mut engine, id, 30.1);
        run(&mut engine, id, 30.2, 32.1, false);
        let deadline = engine.next_deadline(at(32.1)).unwrap();
        assert!(deadline.since(at(32.6)).to_seconds_f64().abs() < 1e-6, "a deadline at max_age");
        run(&mut engine, id, 32.1, 32.6, false);
        assert!(selected(&engine, id), "one missed second is no loss");
        run(&mut engine, id, 32.6, 32.7, false);
        assert!(!selected(&engine, id), "stale 2.5 s after the last sample");
        assert!(engine.sources().next().unwrap().refclock_stale);
        assert!(RefclockConfig { max_age: 0.0, ..Default::default() }.validate().is_err());
    }
}
