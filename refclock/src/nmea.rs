//! NMEA 0183 from a GPS receiver: the time of day of the second just begun (RMC, ZDA), the fix
//! quality (RMC status, GGA fix and satellites, GSA mode).
//!
//! A sentence arrives 100-500 ms after the second it names (receiver dependent): the configured
//! `offset` is added to every sample's reference time to take that out, and the sentence's
//! arrival is only good to milliseconds, which is why a PPS line locked to it gives the edge.
//!
//! What is refused, and why (each has a test):
//! - a wrong checksum, a line over 82 characters, bytes that are not NMEA (a wrong baud rate):
//!   [`Reject::Checksum`], [`Reject::Garbage`], counted by [`LineBuffer`];
//! - no fix (RMC status V, GGA fix 0, GSA mode 1) or fewer satellites than `min_satellites`:
//!   [`NmeaEvent::Stale`];
//! - a date before the build date: a receiver past a GPS week rollover reports a date 1024
//!   weeks back ([`Reject::DateBeforeBuild`]); never stepped to;
//! - sentences that do not advance like the host clock (a burst of buffered sentences after a
//!   stall, a skipped second): [`Reject::Burst`];
//! - 23:59:60, the leap second itself (the `nmea` crate refuses seconds >= 60): recognised and
//!   skipped, no sample for that second ([`NmeaEvent::LeapSecond`]).

use std::io::{self, Read};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
use nmea::sentences::gsa::GsaMode2;
use nmea::sentences::rmc::RmcStatusOfFix;
use nmea::sentences::FixType;
use nmea::ParseResult;
use stratum_proto::packet::LeapIndicator;
use stratum_proto::NtpTimestamp;

use crate::{days_from_civil, seconds, TimeSample};

/// The longest NMEA 0183 sentence: 82 characters, `$` to the line feed.
pub const MAX_LINE: usize = 82;

/// The driver's settings (the `[[refclock]]` table's NMEA keys).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmeaConfig {
    /// Seconds added to every sample's reference time: how late the sentences arrive after the
    /// second they name (0.3 for a receiver that talks 300 ms after the second).
    pub offset: f64,
    /// The reference's assumed delay, seconds (its half is an error bound).
    pub delay: f64,
    /// Fewer satellites than this in the last GGA: stale.
    pub min_satellites: u32,
    /// A date before this (Unix seconds; the build date) is refused: a GPS week rollover.
    pub not_before_unix: i64,
    /// The sample's own error bound, seconds.
    pub precision: f64,
}

impl Default for NmeaConfig {
    fn default() -> Self {
        Self { offset: 0.0, delay: 0.0, min_satellites: 4, not_before_unix: 1_735_689_600, precision: 1e-3 }
    }
}

/// One complete line from [`LineBuffer`]: its text (no CR/LF) and the host time its `$` arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub text: &'a str,
    pub start: NtpTimestamp,
}

/// Counts of what the line buffer threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCounters {
    pub lines: u64,
    /// Lines longer than [`MAX_LINE`], dropped whole.
    pub overflows: u64,
    /// Bytes outside a sentence, or lines that are not printable ASCII (noise, a wrong baud).
    pub garbage_bytes: u64,
    pub garbage_lines: u64,
}

/// Cuts a byte stream into sentences, at most [`MAX_LINE`] characters each, never allocating.
/// A `$` always starts a new sentence (resynchronising after noise); anything before the first
/// `$` of a line is garbage; a line past 82 characters is dropped up to its end.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    buf: [u8; MAX_LINE],
    len: usize,
    start: NtpTimestamp,
    in_line: bool,
    overflow: bool,
    counters: LineCounters,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_LINE],
            len: 0,
            start: NtpTimestamp::from_bits(0),
            in_line: false,
            overflow: false,
            counters: LineCounters { lines: 0, overflows: 0, garbage_bytes: 0, garbage_lines: 0 },
        }
    }

    pub fn counters(&self) -> LineCounters {
        self.counters
    }

    /// Takes one byte that arrived at host time `now`; returns a line when `byte` ends one.
    pub fn push(&mut self, byte: u8, now: NtpTimestamp) -> Option<Line<'_>> {
        match byte {
            b'$' => {
                if self.in_line && !self.overflow && self.len > 0 {
                    // A sentence cut short by a new one: its bytes were garbage.
                    self.counters.garbage_lines += 1;
                }
                self.buf[0] = b'$';
                self.len = 1;
                self.start = now;
                self.in_line = true;
                self.overflow = false;
                None
            }
            b'\r' | b'\n' => {
                if !self.in_line {
                    return None;
                }
                self.in_line = false;
                if self.overflow {
                    return None;
                }
                // (CR LF count towards the 82: the text itself is at most 80.)
                let text = &self.buf[..self.len];
                if self.len > MAX_LINE - 2 || !text.iter().all(|b| (0x20..0x7f).contains(b)) {
                    self.counters.garbage_lines += 1;
                    return None;
                }
                self.counters.lines += 1;
                // Printable ASCII is UTF-8.
                let text = core::str::from_utf8(text).ok()?;
                Some(Line { text, start: self.start })
            }
            _ if !self.in_line => {
                self.counters.garbage_bytes += 1;
                None
            }
            _ if self.overflow => None,
            _ => {
                if self.len == MAX_LINE {
                    self.overflow = true;
                    self.counters.overflows += 1;
                    return None;
                }
                self.buf[self.len] = byte;
                self.len += 1;
                None
            }
        }
    }
}

/// Why a sentence gave no sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No `*hh`, or it does not match.
    Checksum,
    /// Not a sentence the `nmea` crate (RMC, ZDA, GGA, GSA) can read, or a field out of range.
    Garbage,
    /// A date before the build date (GPS week rollover: 1024 weeks back).
    DateBeforeBuild { unix: i64 },
    /// The sentence's second does not follow the previous one as the host clock does (a burst
    /// of buffered sentences, a skipped or repeated second), or it is the first one seen.
    Burst,
}

/// Why the receiver's time is not to be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// RMC status V.
    RmcInvalid,
    /// GGA fix quality 0 or GSA mode "no fix".
    NoFix,
    /// Fewer satellites than `min_satellites` in the last GGA.
    TooFewSatellites(u32),
}

/// What one line meant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NmeaEvent {
    /// The time of a second: a sample.
    Sample(TimeSample),
    /// A time sentence while the fix is not good.
    Stale(Stale),
    /// The sentence was refused.
    Rejected(Reject),
    /// 23:59:60 (an inserted leap second): read, no sample.
    LeapSecond,
    /// Fix information (GGA, GSA), a second already sampled, or a sentence of no interest.
    Info,
}

/// The receiver's fix as the last sentences told it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixStatus {
    /// GGA's or GSA's verdict: Some(false) when either said "no fix".
    pub fix: Option<bool>,
    pub satellites: Option<u32>,
}

/// Counts of the decoder's verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NmeaCounters {
    pub samples: u64,
    pub stale: u64,
    pub checksum: u64,
    pub garbage: u64,
    pub date_rejected: u64,
    pub bursts: u64,
    pub leap_seconds: u64,
}

/// Turns sentences into samples (pure: the caller gives each line's arrival time).
#[derive(Clone, Debug)]
pub struct NmeaDecoder {
    config: NmeaConfig,
    gga: FixStatus,
    gsa_fix: Option<bool>,
    /// The last time sentence: its Unix second and arrival.
    last_seen: Option<(i64, NtpTimestamp)>,
    counters: NmeaCounters,
}

/// The time and date of a sentence, the leap second's `60` read as 59 with `leap` set.
struct Stamp {
    unix: i64,
    nanos: u32,
    leap: bool,
}

impl NmeaDecoder {
    pub fn new(config: NmeaConfig) -> Self {
        Self { config, gga: FixStatus::default(), gsa_fix: None, last_seen: None, counters: NmeaCounters::default() }
    }

    pub fn config(&self) -> &NmeaConfig {
        &self.config
    }

    pub fn counters(&self) -> NmeaCounters {
        self.counters
    }

    /// The fix as last reported (for `stratumctl sources`).
    pub fn fix(&self) -> FixStatus {
        let fix = match (self.gga.fix, self.gsa_fix) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (None, None) => None,
            _ => Some(true),
        };
        FixStatus { fix, satellites: self.gga.satellites }
    }

    /// One line (without CR/LF) whose `$` arrived at host time `arrival`.
    pub fn handle_line(&mut self, line: &str, arrival: NtpTimestamp) -> NmeaEvent {
        let event = self.decode(line, arrival);
        let c = &mut self.counters;
        match event {
            NmeaEvent::Sample(_) => c.samples += 1,
            NmeaEvent::Stale(_) => c.stale += 1,
            NmeaEvent::Rejected(Reject::Checksum) => c.checksum += 1,
            NmeaEvent::Rejected(Reject::Garbage) => c.garbage += 1,
            NmeaEvent::Rejected(Reject::DateBeforeBuild { .. }) => c.date_rejected += 1,
            NmeaEvent::Rejected(Reject::Burst) => c.bursts += 1,
            NmeaEvent::LeapSecond => c.leap_seconds += 1,
            NmeaEvent::Info => {}
        }
        event
    }

    fn decode(&mut self, line: &str, arrival: NtpTimestamp) -> NmeaEvent {
        let Some(body) = checked_body(line) else { return NmeaEvent::Rejected(Reject::Checksum) };
        // The leap second: seconds 60 are read as 59 (the crate refuses 60), then put back.
        let mut rewritten = [0u8; MAX_LINE];
        let (text, leap) = match leap_rewrite(body, &mut rewritten) {
            Some(text) => (text, true),
            None => (line, false),
        };
        let parsed = match nmea::parse_str(text) {
            Ok(p) => p,
            Err(_) => return NmeaEvent::Rejected(Reject::Garbage),
        };
        let (stamp, rmc_status) = match parsed {
            ParseResult::GGA(gga) => {
                self.gga = FixStatus {
                    fix: Some(!matches!(gga.fix_type, None | Some(FixType::Invalid))),
                    satellites: gga.fix_satellites,
                };
                return NmeaEvent::Info;
            }
            ParseResult::GSA(gsa) => {
                self.gsa_fix = Some(gsa.mode2 != GsaMode2::NoFix);
                return NmeaEvent::Info;
            }
            ParseResult::RMC(rmc) => {
                let (Some(time), Some(date)) = (rmc.fix_time, rmc.fix_date) else {
                    return if rmc.status_of_fix == RmcStatusOfFix::Invalid {
                        NmeaEvent::Stale(Stale::RmcInvalid)
                    } else {
                        NmeaEvent::Rejected(Reject::Garbage)
                    };
                };
                // Two-digit year: the century from 50 years before the build date's year.
                let year = self.century_year(date.year());
                (stamp(year, date, time, leap), Some(rmc.status_of_fix))
            }
            ParseResult::ZDA(zda) => {
                let (Some(time), Some(day), Some(month), Some(year)) = (zda.utc_time, zda.day, zda.month, zda.year)
                else {
                    return NmeaEvent::Stale(Stale::NoFix);
                };
                let Some(date) = NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day)) else {
                    return NmeaEvent::Rejected(Reject::Garbage);
                };
                (stamp(i64::from(year), date, time, leap), None)
            }
            _ => return NmeaEvent::Info,
        };

        // The leap second: keep the sequence (the next second, 00:00:00, follows it), no sample.
        if stamp.leap {
            self.last_seen = Some((stamp.unix - 1, arrival));
            return NmeaEvent::LeapSecond;
        }
        // One sample a second: the first time sentence naming it.
        let previous = self.last_seen;
        if previous.is_some_and(|(s, _)| s == stamp.unix) {
            return NmeaEvent::Info;
        }
        self.last_seen = Some((stamp.unix, arrival));
        if rmc_status == Some(RmcStatusOfFix::Invalid) {
            return NmeaEvent::Stale(Stale::RmcInvalid);
        }
        let fix = self.fix();
        if fix.fix == Some(false) {
            return NmeaEvent::Stale(Stale::NoFix);
        }
        if let Some(n) = fix.satellites.filter(|&n| n < self.config.min_satellites) {
            return NmeaEvent::Stale(Stale::TooFewSatellites(n));
        }
        if stamp.unix < self.config.not_before_unix {
            return NmeaEvent::Rejected(Reject::DateBeforeBuild { unix: stamp.unix });
        }
        let Some((s0, a0)) = previous else { return NmeaEvent::Rejected(Reject::Burst) };
        let named = (stamp.unix - s0) as f64;
        let elapsed = arrival.since(a0).to_seconds_f64();
        if (named - elapsed).abs() > 0.5 {
            return NmeaEvent::Rejected(Reject::Burst);
        }
        let reference = NtpTimestamp::from_unix(stamp.unix, stamp.nanos).add(seconds(self.config.offset));
        NmeaEvent::Sample(TimeSample {
            reference,
            local: arrival,
            leap: LeapIndicator::NoWarning,
            dispersion: self.config.precision,
            delay: self.config.delay,
        })
    }

    /// The year of a two-digit RMC year (the `nmea` crate read it as 1983-2082): the one in the
    /// century starting 50 years before the build date's year.
    fn century_year(&self, crate_year: i32) -> i64 {
        let yy = i64::from(crate_year.rem_euclid(100));
        let build_year = 1970 + self.config.not_before_unix.div_euclid(86_400 * 36_525 / 100);
        let low = build_year - 50;
        let mut year = low - low.rem_euclid(100) + yy;
        if year < low {
            year += 100;
        }
        year
    }
}

fn stamp(year: i64, date: NaiveDate, time: NaiveTime, leap: bool) -> Stamp {
    let days = days_from_civil(year, date.month(), date.day());
    let secs = i64::from(time.num_seconds_from_midnight()) + i64::from(leap);
    Stamp { unix: days * 86_400 + secs, nanos: time.nanosecond().min(999_999_999), leap }
}

/// The text between `$` and `*` when the line's checksum (XOR of those bytes) is right.
fn checked_body(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('$')?;
    let (body, sum) = rest.rsplit_once('*')?;
    if sum.len() != 2 {
        return None;
    }
    let want = u8::from_str_radix(sum, 16).ok()?;
    (body.bytes().fold(0u8, |a, b| a ^ b) == want).then_some(body)
}

/// When the time field (the first after the address: RMC, ZDA, GGA) reads seconds 60, the line
/// with 59 there and its checksum recomputed, in `out`.
fn leap_rewrite<'a>(body: &str, out: &'a mut [u8; MAX_LINE]) -> Option<&'a str> {
    let (address, fields) = body.split_once(',')?;
    if !(address.ends_with("RMC") || address.ends_with("ZDA") || address.ends_with("GGA")) {
        return None;
    }
    let time = fields.split(',').next()?;
    if time.len() < 6 || !time.as_bytes()[..6].iter().all(u8::is_ascii_digit) || &time[4..6] != "60" {
        return None;
    }
    // "$" + body + "*hh" fits: the line did.
    let len = body.len() + 4;
    if len > out.len() {
        return None;
    }
    out[0] = b'$';
    out[1..=body.len()].copy_from_slice(body.as_bytes());
    let at = 1 + address.len() + 1 + 4;
    out[at..at + 2].copy_from_slice(b"59");
    let sum = out[1..=body.len()].iter().fold(0u8, |a, b| a ^ b);
    out[body.len() + 1] = b'*';
    out[body.len() + 2..len].copy_from_slice(&hex2(sum));
    core::str::from_utf8(&out[..len]).ok()
}

fn hex2(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// `$` + `body` + `*hh` with its checksum (for talkers and tests).
pub fn sentence(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    let h = hex2(sum);
    format!("${body}*{}{}", h[0] as char, h[1] as char)
}

/// The NMEA IO edge: bytes from `R` (a serial port, a pty) cut into lines, each stamped with the
/// host clock when its read returned, decoded. Blocking; run it on the driver's thread.
pub struct NmeaReader<R> {
    input: R,
    lines: LineBuffer,
    decoder: NmeaDecoder,
    buf: [u8; 256],
}

impl<R> core::fmt::Debug for NmeaReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NmeaReader").field("decoder", &self.decoder).finish_non_exhaustive()
    }
}

impl<R: Read> NmeaReader<R> {
    pub fn new(input: R, config: NmeaConfig) -> Self {
        Self { input, lines: LineBuffer::new(), decoder: NmeaDecoder::new(config), buf: [0; 256] }
    }

    pub fn decoder(&self) -> &NmeaDecoder {
        &self.decoder
    }

    pub fn line_counters(&self) -> LineCounters {
        self.lines.counters()
    }

    /// Reads once (blocking, or up to the port's timeout) and hands every event of the bytes read
    /// to `each`; `clock` reads the host clock right after the read returns. Ok(0) at the end
    /// of the input (or a timeout with nothing read).
    pub fn poll(&mut self, clock: impl Fn() -> NtpTimestamp, mut each: impl FnMut(NmeaEvent)) -> io::Result<usize> {
        let n = match self.input.read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let now = clock();
        for i in 0..n {
            let byte = self.buf[i];
            if let Some(line) = self.lines.push(byte, now) {
                let (text, start) = (line.text, line.start);
                // Borrow split: the decoder does not touch the line buffer.
                let event = self.decoder.handle_line(text, start);
                each(event);
            }
        }
        Ok(n)
    }
}

/// The serial port [`open_serial`] gives.
pub use serialport::SerialPort;

/// Opens a serial device at `baud`, 8N1, with reads returning after `timeout` at the latest.
pub fn open_serial(path: &str, baud: u32, timeout: Duration) -> io::Result<Box<dyn serialport::SerialPort>> {
    serialport::new(path, baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(timeout)
        .open()
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
