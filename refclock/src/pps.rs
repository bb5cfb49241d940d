//! Pulse per second: the host clock at each edge of a PPS line ([`PpsSource`]: the Linux PPS API
//! or a simulator), numbered by a time-of-day source ([`PpsLock`], chrony's `lock`).
//!
//! A pulse says *when* a second began, never *which* second: [`PpsLock`] takes the locked
//! source's latest sample (NMEA, SHM, SOCK) and numbers a pulse only when that sample is at most
//! `max_lock_age` pulses old and puts the edge within 0.4 s of a whole second. Without a locked
//! source no pulse is numbered (BAD_INPUTS 36). A pulse less than half a second after the last
//! one is a double (BAD_INPUTS 37); with `width` set, an edge the lock puts nearer `width` than
//! the second is the other edge of the pulse.

use std::io;
use std::time::Duration;

use stratum_proto::packet::LeapIndicator;
use stratum_proto::NtpTimestamp;

use crate::{seconds, TimeSample};

/// Which edge of the pulse marks the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Edge {
    #[default]
    Assert,
    Clear,
}

/// What the device captured: each edge's sequence number and host time (RFC 2783's
/// `pps_info_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PpsInfo {
    pub assert_sequence: u32,
    pub assert_time: Option<NtpTimestamp>,
    pub clear_sequence: u32,
    pub clear_time: Option<NtpTimestamp>,
}

impl PpsInfo {
    pub fn edge(&self, edge: Edge) -> (u32, Option<NtpTimestamp>) {
        match edge {
            Edge::Assert => (self.assert_sequence, self.assert_time),
            Edge::Clear => (self.clear_sequence, self.clear_time),
        }
    }
}

/// A PPS device: the Linux PPS API ([`LinuxPps`]) or a simulator ([`SimPps`]).
pub trait PpsSource {
    /// Waits up to `timeout` for the next edge (of any kind the device captures) and returns the
    /// device's state then; on a timeout, the state unchanged.
    fn fetch(&mut self, timeout: Duration) -> io::Result<PpsInfo>;
}

/// Turns a device's successive [`PpsInfo`] into new edges of one kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgeTracker {
    edge: Edge,
    last_sequence: Option<u32>,
}

impl EdgeTracker {
    pub fn new(edge: Edge) -> Self {
        Self { edge, last_sequence: None }
    }

    /// The host time of a new edge of our kind, if `info` holds one (edges of the other kind,
    /// and a sequence already seen, give None).
    pub fn next(&mut self, info: &PpsInfo) -> Option<NtpTimestamp> {
        let (seq, time) = info.edge(self.edge);
        let time = time?;
        if self.last_sequence == Some(seq) {
            return None;
        }
        self.last_sequence = Some(seq);
        Some(time)
    }
}

/// The settings of a PPS refclock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpsConfig {
    /// Seconds added to every pulse's reference time (cable and receiver delays).
    pub offset: f64,
    pub delay: f64,
    /// The locked source's sample may be at most this many pulses old (chrony's default 2).
    pub max_lock_age: u32,
    /// Pulse width, seconds (0: unknown): an edge nearer `width` after the second is the wrong one.
    pub width: f64,
    /// The pulse's own error bound, seconds.
    pub precision: f64,
}

// Alike in shape to NmeaConfig's offset, delay and precision (the same three things every
// reference clock has), kept apart because each driver documents its own defaults.
impl Default for PpsConfig {
    fn default() -> Self {
        Self { offset: 0.0, delay: 0.0, max_lock_age: 2, width: 0.0, precision: 1e-7 }
    }
}

/// Why a pulse gave no sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PulseReject {
    /// No sample from the locked source yet, or it is older than `max_lock_age` pulses.
    NoLock,
    /// The locked source puts this edge further than 0.4 s from any second (by this much).
    LockDisagrees(f64),
    /// Less than half a second after the last pulse used.
    Double,
    /// The lock puts this edge nearer `width` than the second: the pulse's other edge.
    WrongEdge,
}

/// Counts of what the lock made of pulses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PulseCounters {
    pub pulses: u64,
    pub locked: u64,
    pub unlocked: u64,
    pub doubles: u64,
    pub wrong_edges: u64,
    /// Seconds between two numbered pulses that had no pulse at all (neither numbered nor
    /// refused): the line or the feed missed them.
    pub missing: u64,
}

/// chrony's `lock`: numbers pulses from a time-of-day source's samples.
#[derive(Clone, Debug)]
pub struct PpsLock {
    config: PpsConfig,
    reference: Option<TimeSample>,
    last_pulse: Option<NtpTimestamp>,
    last_offset: Option<f64>,
    /// The second the last numbered pulse named, and the pulses refused as unlocked since.
    last_second: Option<NtpTimestamp>,
    unlocked_since: u64,
    counters: PulseCounters,
}

impl PpsLock {
    pub fn new(config: PpsConfig) -> Self {
        Self {
            config,
            reference: None,
            last_pulse: None,
            last_offset: None,
            last_second: None,
            unlocked_since: 0,
            counters: PulseCounters::default(),
        }
    }

    pub fn counters(&self) -> PulseCounters {
        self.counters
    }

    /// The last pulse's offset (reference minus host), seconds.
    pub fn last_offset(&self) -> Option<f64> {
        self.last_offset
    }

    /// Whether the last pulse was numbered.
    pub fn is_locked(&self) -> bool {
        self.last_offset.is_some()
    }

    /// A sample of the locked time-of-day source (its own offset applied).
    pub fn time_of_day(&mut self, sample: TimeSample) {
        self.reference = Some(sample);
    }

    /// The locked source went stale: no pulse is numbered until it is back.
    pub fn forget_time_of_day(&mut self) {
        self.reference = None;
        self.last_offset = None;
    }

    /// An edge at host time `local`: a sample naming the whole second it marks, or why not.
    pub fn pulse(&mut self, local: NtpTimestamp) -> Result<TimeSample, PulseReject> {
        self.counters.pulses += 1;
        let result = self.number(local);
        match result {
            Ok(s) => {
                self.counters.locked += 1;
                if let Some(prev) = self.last_second {
                    // Seconds skipped since the last numbered pulse, less those whose pulse
                    // came but was refused (counted as unlocked already).
                    let gap = s.reference.since(prev).to_seconds_f64().round();
                    let skipped = if gap > 1.0 { (gap - 1.0).min(u64::MAX as f64) as u64 } else { 0 };
                    self.counters.missing += skipped.saturating_sub(self.unlocked_since);
                }
                self.last_second = Some(s.reference);
                self.unlocked_since = 0;
                self.last_pulse = Some(local);
                self.last_offset = Some(s.offset());
            }
            Err(PulseReject::Double) => self.counters.doubles += 1,
            Err(PulseReject::WrongEdge) => self.counters.wrong_edges += 1,
            Err(PulseReject::NoLock | PulseReject::LockDisagrees(_)) => {
                self.counters.unlocked += 1;
                self.unlocked_since += 1;
                self.last_offset = None;
            }
        }
        result
    }

    fn number(&self, local: NtpTimestamp) -> Result<TimeSample, PulseReject> {
        if let Some(last) = self.last_pulse {
            let since = local.since(last).to_seconds_f64();
            if (0.0..0.5).contains(&since)
                && (self.config.width <= 0.0 || (since - self.config.width).abs() > 0.1 * self.config.width.max(0.01))
            {
                return Err(PulseReject::Double);
            }
        }
        let r = self.reference.ok_or(PulseReject::NoLock)?;
        let age = local.since(r.local).to_seconds_f64();
        if age < -0.5 || age > f64::from(self.config.max_lock_age) + 0.5 {
            return Err(PulseReject::NoLock);
        }
        // The edge's time as the locked source tells it, less the pulse's own offset.
        let estimated = local.add(seconds(r.offset()));
        let (unix, nanos) = estimated.to_unix(0);
        let fraction = f64::from(nanos) * 1e-9;
        // Distance to the nearest whole second, signed: the edge is `error` late against it.
        let (second, error) = if fraction < 0.5 { (unix, fraction) } else { (unix + 1, fraction - 1.0) };
        let w = self.config.width;
        if w > 0.0 && (error - w).abs() < error.abs() {
            return Err(PulseReject::WrongEdge);
        }
        if error.abs() > 0.4 {
            return Err(PulseReject::LockDisagrees(error));
        }
        let reference = NtpTimestamp::from_unix(second, 0).add(seconds(self.config.offset));
        Ok(TimeSample {
            reference,
            local,
            leap: LeapIndicator::NoWarning,
            dispersion: self.config.precision,
            delay: self.config.delay,
        })
    }
}

/// A PPS line for tests: pulses at each true second, seen by a host clock `host_offset` ahead of
/// true time (drifting by `host_drift` s/s), with normal-ish edge jitter, missing and double
/// pulses. Deterministic (its own xorshift generator).
#[derive(Clone, Debug)]
pub struct SimPps {
    /// True Unix second of the next pulse.
    pub next_second: i64,
    pub host_offset: f64,
    pub host_drift: f64,
    /// Edge jitter, seconds (uniform in ±jitter·√3, standard deviation `jitter`).
    pub jitter: f64,
    /// Probability a pulse is missing, a pulse is followed by a second edge 1 ms later.
    pub missing: f64,
    pub double: f64,
    /// Pulse width, seconds: a clear edge `width` after each assert.
    pub width: f64,
    pub info: PpsInfo,
    rng: u64,
    pending_double: Option<NtpTimestamp>,
    pending_clear: Option<NtpTimestamp>,
}

impl SimPps {
    pub fn new(first_second: i64, seed: u64) -> Self {
        Self {
            next_second: first_second,
            host_offset: 0.0,
            host_drift: 0.0,
            jitter: 0.0,
            missing: 0.0,
            double: 0.0,
            width: 0.1,
            info: PpsInfo::default(),
            rng: seed | 1,
            pending_double: None,
            pending_clear: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The host clock at true Unix time `t`.
    pub fn host_at(&self, t: f64) -> NtpTimestamp {
        let h = t + self.host_offset + self.host_drift * (t - self.next_second as f64);
        NtpTimestamp::from_unix(h.floor() as i64, ((h - h.floor()) * 1e9) as u32)
    }

    /// Advances to the next edge (assert, clear, or a double) and returns the device's state.
    pub fn step(&mut self) -> PpsInfo {
        if let Some(t) = self.pending_double.take() {
            self.info.assert_sequence += 1;
            self.info.assert_time = Some(t);
            return self.info;
        }
        if let Some(t) = self.pending_clear.take() {
            self.info.clear_sequence += 1;
            self.info.clear_time = Some(t);
            return self.info;
        }
        loop {
            let second = self.next_second;
            self.next_second += 1;
            if self.uniform() < self.missing {
                continue;
            }
            let jitter = (self.uniform() - 0.5) * 2.0 * 3f64.sqrt() * self.jitter;
            let t = self.host_at(second as f64 + jitter);
            self.info.assert_sequence += 1;
            self.info.assert_time = Some(t);
            if self.uniform() < self.double {
                self.pending_double = Some(t.add(seconds(1e-3)));
            }
            if self.width > 0.0 {
                self.pending_clear = Some(self.host_at(second as f64 + jitter + self.width));
            }
            return self.info;
        }
    }
}

impl PpsSource for SimPps {
    fn fetch(&mut self, _timeout: Duration) -> io::Result<PpsInfo> {
        Ok(self.step())
    }
}

mod linux;
pub use linux::LinuxPps;

#[cfg(test)]
mod tests;
