//! Reference clocks for stratumd (issue 18): a GPS receiver's NMEA sentences, a PPS line, gpsd's
//! shared memory segment and chrony's SOCK protocol.
//!
//! Each driver has a **pure** half, deterministic and tested without a device, and a thin **IO
//! edge** that a driver thread in the server runs:
//!
//! | driver | pure | IO edge |
//! | --- | --- | --- |
//! | NMEA | [`nmea::LineBuffer`] (82 chars), [`nmea::NmeaDecoder`] (checksum, fix, dates, leap second, bursts) | [`nmea::NmeaReader`] over any `Read` (a serial port: [`nmea::open_serial`]) |
//! | PPS | [`pps::PpsLock`] (numbering pulses from a time-of-day source, double/wrong-edge filter) | [`pps::PpsSource`]: [`pps::LinuxPps`] (RFC 2783 ioctls) or [`pps::SimPps`] |
//! | gpsd SHM | [`shm::ShmTime`] layout, [`shm::decode`] (mode 0/1, count/valid, nsec rule) | [`shm::ShmSegment`] (SysV shm): reader and writer |
//! | SOCK | [`sock::SockSample`] encode/decode (40 bytes, magic) | [`sock::SockReceiver`], [`sock::SockSender`] |
//!
//! A driver yields [`TimeSample`]s (a reference time against the host clock's local time) or
//! pulses (the host clock at an edge), which [`pps::PpsLock`] turns into samples. Every time is
//! an [`NtpTimestamp`] of the **host clock** (CLOCK_REALTIME), as the sync engine takes them.

pub mod nmea;
pub mod pps;
pub mod shm;
pub mod sock;

use stratum_proto::packet::LeapIndicator;
use stratum_proto::NtpTimestamp;

/// One measurement of a reference clock: at host time `local`, the reference read `reference`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeSample {
    /// The reference's time (UTC as NTP time), the configured `offset` already added.
    pub reference: NtpTimestamp,
    /// The host clock when the reference had that time.
    pub local: NtpTimestamp,
    /// The reference's leap warning (NoWarning when it has none to give).
    pub leap: LeapIndicator,
    /// The sample's own error bound (the driver's precision), seconds.
    pub dispersion: f64,
    /// The configured `delay` (the reference's assumed path delay: half of it is an error bound).
    pub delay: f64,
}

impl TimeSample {
    /// Reference minus host clock, seconds.
    pub fn offset(&self) -> f64 {
        self.reference.since(self.local).to_seconds_f64()
    }
}

/// Seconds as an NTP duration (for offsets added to timestamps).
pub(crate) fn seconds(s: f64) -> stratum_proto::NtpDuration {
    stratum_proto::NtpDuration::from_seconds_f64(s)
}

/// Days since 1970-01-01 of a civil date: proto's, the one calendar of the workspace.
pub(crate) use stratum_proto::sync::calendar::days_from_civil;
