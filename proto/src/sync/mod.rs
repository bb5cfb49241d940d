//! The time plane's pure half (issue 20): upstream NTP sources, RFC 5905's mitigation rules, the
//! clock discipline, holdover and leap seconds, as sans-IO code. Nothing here reads a clock or a
//! socket: every time is a parameter, read by the caller from the **host clock** (the sync
//! thread's clock, never corrected), and every datagram is bytes in or bytes out.
//!
//! - [`SyncEngine`] ([`engine`]): the one type a sync thread drives. It owns the sources, runs
//!   [`filter`] → [`select`] (select, cluster, combine, system peer) → [`discipline`], and gives
//!   the [`ServerSnapshot`](crate::ServerSnapshot) to publish, with the virtual clock's
//!   [`ClockCorrection`](crate::ClockCorrection) inside.
//! - [`source`]: one upstream's poll process, reach, request and reply checks ([`Flash`] bits),
//!   kiss-o'-death handling.
//! - [`leap`]: the leap-seconds.list parser and the leap indicator's rules.
//! - [`refid`]: the refid of an upstream address (IPv6: MD5).
//! - [`refclock`]: reference clocks (GPS, PPS, SHM, SOCK: issue 18) as stratum-0 sources, their
//!   samples through a median filter ([`SyncEngine::add_refclock`],
//!   [`SyncEngine::handle_refclock_sample`]).
//!
//! # One poll cycle
//!
//! ```
//! use stratum_proto::sync::{SourceConfig, SyncConfig, SyncEngine};
//! use stratum_proto::NtpTimestamp;
//! # let host_clock = || NtpTimestamp::from_parts(3_980_000_000, 0);
//! # let random = || 0x0123_4567_89ab_cdefu64;
//! let mut engine = SyncEngine::new(SyncConfig::default());
//! let now = host_clock();
//! let id = engine.add_source("192.0.2.10".parse().unwrap(), SourceConfig { iburst: true, ..Default::default() }, now)?;
//! // Loop: sleep on the sockets until `engine.next_deadline(now)`, then:
//! engine.handle_timeout(host_clock());
//! while let Some(tx) = engine.poll_transmit(host_clock(), random()) {
//!     // send tx.packet to tx.address from tx.source's socket, right away
//! }
//! // When a datagram arrives on source `id`'s socket (t4: kernel receive stamp, host clock):
//! # let datagram = [0u8; 48]; let t4 = host_clock();
//! let outcome = engine.handle_reply(id, &datagram, t4);
//! // After any call: publish the state (the workers read it once per batch).
//! let snapshot = engine.snapshot(host_clock());
//! assert!(!snapshot.is_synchronized());
//! # let _ = outcome;
//! # Ok::<(), stratum_proto::sync::SourceConfigError>(())
//! ```
//!
//! Costs: no allocation per sample or request (scratch buffers grow in `add_source`); one update
//! with 64 sources is measured by `cargo bench -p stratum-proto --bench sync`; one source's state
//! is [`SOURCE_STATE_BYTES`] bytes.

pub mod calendar;
pub mod discipline;
pub mod engine;
pub mod filter;
mod flash;
pub mod leap;
pub mod refclock;
pub mod refid;
pub mod select;
pub mod source;

use crate::packet::RefId;

pub use discipline::{ClockAction, DisciplineConfig};
pub use engine::{
    HostAdjustment, RefclockOutcome, SourceId, SourceState, SourceStatus, SyncEngine, Tracking, Transmit,
};
pub use flash::Flash;
pub use leap::{leap_smear, Expiry, LeapDirection, LeapEvent, LeapFileError, LeapSecondsList, SMEAR_WINDOW_S};
pub use refclock::{RefclockConfig, RefclockConfigError, RefclockSample};
pub use refid::refid_for_address;
pub use source::{ReplyOutcome, SourceConfig, SourceConfigError, MAX_POLL, MIN_POLL};

/// Dispersion growth: 15 ppm, RFC 5905's PHI (a clock's assumed worst frequency error).
pub const PHI: f64 = 15e-6;
/// A stage's dispersion past this counts it as empty (RFC 5905's MAXDISP), seconds.
pub const MAX_DISPERSION: f64 = 16.0;
/// Root distance past which a source, or our own served state, is not synchronised, seconds.
pub const MAX_DISTANCE: f64 = 1.5;
/// Bytes of one source's state inside the engine (target: at most 4 KiB).
pub const SOURCE_STATE_BYTES: usize = core::mem::size_of::<source::Source>() + 48;

/// 2^`exponent` seconds, for precision fields.
pub(crate) fn log2_seconds(exponent: i8) -> f64 {
    2f64.powi(i32::from(exponent))
}

/// What the served clock does at a leap second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LeapMode {
    /// The engine steps the virtual clock's correction by the leap at the month boundary (the
    /// `virtual` backend: the host clock is nobody's to touch).
    #[default]
    Step,
    /// The kernel inserts or deletes the second in the host clock (the `system` backend sets
    /// STA_INS/STA_DEL from the served leap indicator); the engine only announces it, and with
    /// [`HostClock::Disciplined`] counts the kernel's step as applied to the host clock.
    Kernel,
    /// The served clock takes the leap second as a linear smear over [`SMEAR_WINDOW_S`] centred
    /// on it ([`leap_smear`]), and serves no leap warning (a client would take it twice). Never
    /// for a public server: smeared and unsmeared servers disagree by up to 0.5 s.
    Smear,
}

/// Who carries the discipline's correction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostClock {
    /// The host clock is nobody's to touch (or another's): the correction is in the snapshot
    /// (the `virtual` backend).
    #[default]
    Free,
    /// The caller disciplines the host clock as [`SyncEngine::host_adjustment`] asks and tells the
    /// engine when it has ([`SyncEngine::host_adjusted`]); the snapshot's correction is then the
    /// identity (the `system` backend). Every time given to the engine is still the host clock.
    Disciplined,
}

/// The system's settings (the `[clock]` table, less what is the server's).
#[derive(Clone, Debug, PartialEq)]
pub struct SyncConfig {
    /// Step threshold, panic threshold, max steps, build date, slew limit, wander.
    pub discipline: DisciplineConfig,
    /// Fewest truechimers needed to steer the clock (default 1).
    pub minsane: usize,
    /// How long holdover lasts without a clock update before we serve LI = 3, stratum 16,
    /// seconds (default 86 400).
    pub max_holdover: f64,
    /// Root distance limit, for sources and for our own served state, seconds (default 1.5).
    pub max_distance: f64,
    /// The host clock's precision, log2 s (what the server measured; default -20).
    pub precision: i8,
    /// Refids of our own addresses ([`refid_for_address`]): an upstream announcing one of them
    /// is synchronised to us (a loop) and is not used.
    pub own_refids: Vec<RefId>,
    pub leap_mode: LeapMode,
    pub host_clock: HostClock,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            discipline: DisciplineConfig::default(),
            minsane: 1,
            max_holdover: 86_400.0,
            max_distance: MAX_DISTANCE,
            precision: -20,
            own_refids: Vec::new(),
            leap_mode: LeapMode::Step,
            host_clock: HostClock::Free,
        }
    }
}
