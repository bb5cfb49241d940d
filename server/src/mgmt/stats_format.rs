//! ntpd's statistics files, their lines and names, without IO (every time a parameter): the
//! layouts ntpd's monitoring documentation gives, so the scripts and dashboards that read ntpd's
//! loopstats/peerstats read ours.
//!
//! Every line starts with the modified Julian day and the seconds past UTC midnight
//! (`60649 50400.123`), then:
//!
//! | file       | columns after the date                                                        |
//! |------------|-------------------------------------------------------------------------------|
//! | loopstats  | offset (s) frequency (ppm) jitter (s) wander (ppm) time constant              |
//! | peerstats  | source address, status word (hex), offset (s) delay (s) dispersion (s) jitter (s) |
//! | rawstats   | source address, destination address, T1 T2 T3 T4 (NTP seconds.nanoseconds)    |
//! | clockstats | refclock address, last timecode                                               |
//! | sysstats   | seconds since the last line, received, processed, current version, old version, denied, bad format, bad auth, declined, rate limited, KoD |
//!
//! A file per day, named `KIND.YYYYMMDD` as ntpd's `filegen ... type day` names them.

use std::net::IpAddr;

use stratum_proto::sync::calendar::civil_from_days;
use stratum_proto::NtpTimestamp;

/// Days from the modified Julian day epoch (1858-11-17) to the Unix epoch.
const MJD_UNIX_EPOCH: i64 = 40_587;
/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

/// The five files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Loop,
    Peer,
    Raw,
    Clock,
    Sys,
}

impl Kind {
    pub const ALL: [Self; 5] = [Self::Loop, Self::Peer, Self::Raw, Self::Clock, Self::Sys];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Loop => "loopstats",
            Self::Peer => "peerstats",
            Self::Raw => "rawstats",
            Self::Clock => "clockstats",
            Self::Sys => "sysstats",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A UTC time as Unix seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime {
    pub seconds: i64,
    pub nanos: u32,
}

impl UnixTime {
    pub fn from_ntp(t: NtpTimestamp) -> Self {
        // Era 0 and 1 around now: pivot on 2000.
        let (seconds, nanos) = t.to_unix(946_684_800);
        Self { seconds, nanos }
    }

    fn days(self) -> i64 {
        self.seconds.div_euclid(86_400)
    }

    /// The line's first two columns: `MJD seconds.mmm`.
    pub fn stamp(self) -> String {
        let secs = self.seconds.rem_euclid(86_400);
        format!("{} {}.{:03}", self.days() + MJD_UNIX_EPOCH, secs, self.nanos / 1_000_000)
    }

    /// The day's file suffix, `YYYYMMDD`.
    pub fn day(self) -> u32 {
        let (y, m, d) = civil_from_days(self.days());
        (y as u32) * 10_000 + m * 100 + d
    }
}

/// `dir/KIND.YYYYMMDD`'s file name.
pub fn file_name(kind: Kind, day: u32) -> String {
    format!("{}.{day:08}", kind.name())
}

/// Which of `names` (a directory's entries) are `kind`'s day files beyond the newest `keep`:
/// the ones to delete. Other names are never touched.
pub fn expired(kind: Kind, names: &[String], keep: usize) -> Vec<String> {
    let prefix = format!("{}.", kind.name());
    let mut days: Vec<&String> = names
        .iter()
        .filter(|n| n.strip_prefix(&prefix).is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    days.sort();
    let excess = days.len().saturating_sub(keep);
    days.into_iter().take(excess).cloned().collect()
}

/// loopstats: what the discipline did at a clock update.
pub fn loop_line(offset: f64, frequency_ppm: f64, jitter: f64, wander_ppm: f64, tc: i8) -> String {
    format!("{offset:.9} {frequency_ppm:.3} {jitter:.9} {wander_ppm:.6} {tc}")
}

/// peerstats: one source's sample.
pub fn peer_line(address: IpAddr, status: u16, offset: f64, delay: f64, dispersion: f64, jitter: f64) -> String {
    format!("{address} {status:04x} {offset:.9} {delay:.9} {dispersion:.9} {jitter:.9}")
}

/// rawstats: one reply's four timestamps.
pub fn raw_line(source: IpAddr, destination: IpAddr, t: [NtpTimestamp; 4]) -> String {
    let ts = |t: NtpTimestamp| {
        let nanos = (u64::from(t.fraction()) * 1_000_000_000) >> 32;
        format!("{}.{nanos:09}", t.seconds())
    };
    format!("{source} {destination} {} {} {} {}", ts(t[0]), ts(t[1]), ts(t[2]), ts(t[3]))
}

/// clockstats: a refclock's last reading.
pub fn clock_line(address: IpAddr, timecode: &str) -> String {
    let timecode: String = timecode.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("{address} {timecode}")
}

/// sysstats' counters over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysCounts {
    pub seconds: u64,
    pub received: u64,
    pub processed: u64,
    pub current_version: u64,
    pub old_version: u64,
    pub denied: u64,
    pub bad_format: u64,
    pub bad_auth: u64,
    pub declined: u64,
    pub limited: u64,
    pub kod: u64,
}

pub fn sys_line(c: &SysCounts) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {} {} {}",
        c.seconds,
        c.received,
        c.processed,
        c.current_version,
        c.old_version,
        c.denied,
        c.bad_format,
        c.bad_auth,
        c.declined,
        c.limited,
        c.kod
    )
}

/// An NTP timestamp as ISO 8601 (a refclock's timecode).
pub fn iso8601(t: NtpTimestamp) -> String {
    let u = UnixTime::from_ntp(t);
    let (y, m, d) = civil_from_days(u.days());
    let s = u.seconds.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z", s / 3600, s / 60 % 60, s % 60, u.nanos / 1000)
}

/// Unix seconds as an NTP timestamp (tests and callers holding Unix time).
pub fn ntp_from_unix(seconds: i64) -> NtpTimestamp {
    NtpTimestamp::from_parts((seconds + NTP_UNIX_OFFSET) as u32, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_columns_are_mjd_and_seconds_of_day() {
        // 2026-12-05 14:00:00.250 UTC.
        let t = UnixTime { seconds: 1_796_479_200, nanos: 250_000_000 };
        assert_eq!(t.stamp(), "61379 50400.250");
        assert_eq!(t.day(), 20261205);
        assert_eq!(file_name(Kind::Peer, t.day()), "peerstats.20261205");
        assert_eq!(UnixTime::from_ntp(ntp_from_unix(1_796_479_200)).seconds, 1_796_479_200);
        assert_eq!(iso8601(ntp_from_unix(1_796_479_200)), "2026-12-05T14:00:00.000000Z");
    }

    #[test]
    fn lines_in_ntpds_layouts() {
        assert_eq!(
            loop_line(0.000006019, 13.77819, 0.000351733, 0.01338, 6),
            "0.000006019 13.778 0.000351733 0.013380 6"
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            peer_line(a, 0x9614, -0.001605376, 0.0, 0.001424877, 0.000958674),
            "192.0.2.1 9614 -0.001605376 0.000000000 0.001424877 0.000958674"
        );
        let b: IpAddr = "192.0.2.20".parse().unwrap();
        let t = NtpTimestamp::from_parts(3_102_453_281, 0x8000_0000);
        assert_eq!(raw_line(a, b, [t; 4]).split(' ').nth(2), Some("3102453281.500000000"));
        assert_eq!(clock_line(a, "x\ny"), "192.0.2.1 x y");
        assert_eq!(
            sys_line(&SysCounts { seconds: 3600, received: 5, ..Default::default() }),
            "3600 5 0 0 0 0 0 0 0 0 0"
        );
    }

    #[test]
    fn retention_keeps_the_newest_days_of_one_kind() {
        let names: Vec<String> = [
            "loopstats.20261203",
            "loopstats.20261205",
            "loopstats.20261204",
            "peerstats.20261201",
            "loopstats",
            "loopstats.x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(expired(Kind::Loop, &names, 2), vec!["loopstats.20261203".to_string()]);
        assert!(expired(Kind::Loop, &names, 5).is_empty());
        assert_eq!(expired(Kind::Peer, &names, 0), vec!["peerstats.20261201".to_string()]);
    }
}
