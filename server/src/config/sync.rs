//! The keys of `source = "sync"`: the discipline's settings in `[clock]`, and the upstream servers
//! in `[[upstream]]` and `[[pool]]` tables. Each value is checked as it is parsed (one line per
//! error: file, line, key); what spans keys is checked in [`super::Config::validate`].

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use stratum_proto::sync::{MAX_POLL, MIN_POLL};

/// How the disciplined time reaches clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discipline {
    /// The system clock is never touched: the offset and frequency corrections live in the time
    /// core's snapshot and the workers apply them to every timestamp (no CAP_SYS_TIME).
    #[default]
    Virtual,
    /// stratumd steers CLOCK_REALTIME itself with clock_adjtime (frequency, slews as frequency,
    /// rare steps) and keeps the kernel's synchronisation status, error estimates and leap bits
    /// right; the snapshot then carries the identity correction. Needs CAP_SYS_TIME, and nothing
    /// else disciplining the clock.
    System,
}

/// `[clock] leap-mode`: how the served clock takes a leap second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeapMode {
    /// stratumd steps the served clock at the boundary (the virtual correction, or with `system`
    /// a step of the host clock).
    Step,
    /// The kernel inserts or deletes the second (STA_INS/STA_DEL): `system` only.
    Kernel,
    /// A linear smear over 24 h centred on the leap, no leap announced. Never for a public
    /// server: smeared and unsmeared servers disagree by up to 0.5 s.
    Smear,
}

impl LeapMode {
    /// The mode in force: the configured one, else `kernel` with the system discipline and
    /// `step` with the virtual one.
    pub fn or_default_for(mode: Option<Self>, discipline: Discipline) -> Self {
        mode.unwrap_or(match discipline {
            Discipline::Virtual => Self::Step,
            Discipline::System => Self::Kernel,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Kernel => "kernel",
            Self::Smear => "smear",
        }
    }
}

/// `[[upstream]]`: one NTP server to poll.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamConfig {
    /// `host`, `host:port`, `1.2.3.4`, `[2001:db8::1]:123`.
    #[serde(deserialize_with = "upstream_address")]
    pub address: HostPort,
    #[serde(default)]
    pub iburst: bool,
    #[serde(default = "default_minpoll", deserialize_with = "poll_exponent")]
    pub minpoll: i8,
    #[serde(default = "default_maxpoll", deserialize_with = "poll_exponent")]
    pub maxpoll: i8,
    #[serde(default)]
    pub prefer: bool,
    #[serde(default)]
    pub noselect: bool,
    /// chrony's `trust`: only other trusted sources can outvote it.
    #[serde(default)]
    pub trust: bool,
    /// chrony's `require`: the clock is steered only while a `require` source survives.
    #[serde(default)]
    pub require: bool,
    /// A key id of `[auth] keys`: requests are signed with it, and only replies signed with it
    /// count (RFC 8573; chrony's and ntpd's `key`).
    #[serde(default)]
    pub key: Option<u32>,
}

/// `[[pool]]`: a name whose addresses are polled, up to `max-sources` of them at once.
///
/// Its poll keys repeat `[[upstream]]`'s on purpose: serde's `flatten` would share them but
/// cannot be combined with `deny_unknown_fields`, and a misspelt key must stay an error.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoolConfig {
    #[serde(deserialize_with = "upstream_address")]
    pub name: HostPort,
    #[serde(default = "default_max_sources", deserialize_with = "max_sources")]
    pub max_sources: usize,
    #[serde(default)]
    pub iburst: bool,
    #[serde(default = "default_minpoll", deserialize_with = "poll_exponent")]
    pub minpoll: i8,
    #[serde(default = "default_maxpoll", deserialize_with = "poll_exponent")]
    pub maxpoll: i8,
    /// chrony's selection options, as `[[upstream]]`'s: every server the name resolves to has
    /// them.
    #[serde(default)]
    pub prefer: bool,
    #[serde(default)]
    pub noselect: bool,
    #[serde(default)]
    pub trust: bool,
    #[serde(default)]
    pub require: bool,
}

/// `[[refclock]]`: a reference clock (issue 18). The device is not opened, nor checked for
/// existence, when the configuration is read (`--check-config` passes without the hardware);
/// what spans keys (device by driver, `lock`, duplicates) is checked in
/// [`super::Config::validate`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RefclockTable {
    pub driver: RefclockDriver,
    /// shm: the unit number; sock: the socket path stratumd creates; nmea: the serial device;
    /// pps: the PPS device (/dev/ppsN).
    pub device: String,
    /// nmea: the serial port's speed (default 9600).
    #[serde(default, deserialize_with = "baud")]
    pub baud: Option<u32>,
    /// Default `GPS` (`PPS` for the pps driver).
    #[serde(default, deserialize_with = "refclock_refid")]
    pub refid: Option<String>,
    /// Seconds added to every sample (NMEA: how late the sentences come after the second).
    #[serde(default, deserialize_with = "refclock_offset")]
    pub offset: f64,
    /// The reference's assumed delay, seconds (half of it counts as error).
    #[serde(default, deserialize_with = "refclock_delay")]
    pub delay: f64,
    #[serde(default)]
    pub prefer: bool,
    #[serde(default)]
    pub noselect: bool,
    /// chrony's `trust`: only other trusted sources can outvote it.
    #[serde(default)]
    pub trust: bool,
    /// chrony's `require`: the clock is steered only while this one (or another `require`
    /// source) survives the selection.
    #[serde(default)]
    pub require: bool,
    /// Seconds without a sample after which the refclock is stale (default 2.5: one missed
    /// second of a 1 Hz driver; a slower one needs more). A number or "5s", "2m".
    #[serde(default = "default_refclock_max_age", deserialize_with = "refclock_max_age")]
    pub max_age: f64,
    /// pps and locked sock: how many pulses old the lock's sample may be (chrony's
    /// `maxlockage`, default 2).
    #[serde(default, deserialize_with = "max_lock_age")]
    pub max_lock_age: Option<u32>,
    /// pps and locked sock: the pulse's width, seconds; an edge the lock puts that far after the
    /// second is the pulse's other edge and dropped (chrony's `width`; default 0, unknown).
    #[serde(default, deserialize_with = "pulse_width")]
    pub width: Option<f64>,
    /// pps, and sock's pulse samples: the refid of the time-of-day refclock that numbers the
    /// pulses.
    #[serde(default)]
    pub lock: Option<String>,
    /// pps: the edge that marks the second.
    #[serde(default)]
    pub edge: Option<PpsEdge>,
    /// The median filter's interval, log2 s (default 4).
    #[serde(default = "default_refclock_poll", deserialize_with = "refclock_poll")]
    pub poll: i8,
    /// Most samples in one interval (default 64).
    #[serde(default = "default_refclock_filter", deserialize_with = "refclock_filter")]
    pub filter: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefclockDriver {
    Shm,
    Sock,
    Nmea,
    Pps,
}

impl RefclockDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shm => "shm",
            Self::Sock => "sock",
            Self::Nmea => "nmea",
            Self::Pps => "pps",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PpsEdge {
    Assert,
    Clear,
}

impl RefclockTable {
    /// The refid: configured, else `PPS` for the pps driver and `GPS` for the others.
    pub fn refid(&self) -> &str {
        self.refid.as_deref().unwrap_or(if self.driver == RefclockDriver::Pps { "PPS" } else { "GPS" })
    }

    /// `driver:device`, as the operator interfaces name it.
    pub fn name(&self) -> String {
        format!("{}:{}", self.driver.as_str(), self.device)
    }

    /// shm: the unit (checked by the configuration's validation).
    pub fn shm_unit(&self) -> Option<u32> {
        self.device.parse::<u32>().ok().filter(|u| *u <= MAX_SHM_UNIT)
    }
}

/// The highest SHM unit whose key (0x4E545030 + unit) is still a positive `key_t`.
pub const MAX_SHM_UNIT: u32 = (i32::MAX - 0x4E54_5030) as u32;

fn baud<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|b| (300..=4_000_000).contains(b))
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 300..=4000000")))
}

fn refclock_refid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(de::Error::custom(format!("`{text}` is not 1 to 4 printable ASCII characters")));
    }
    Ok(Some(text))
}

fn refclock_offset<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = f64::deserialize(d)?;
    if !(-10.0..=10.0).contains(&s) {
        return Err(de::Error::custom(format!("{s} s is outside -10..=10")));
    }
    Ok(s)
}

fn refclock_delay<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&s) {
        return Err(de::Error::custom(format!("{s} s is outside 0..=1")));
    }
    Ok(s)
}

fn default_refclock_max_age() -> f64 {
    stratum_proto::sync::refclock::DEFAULT_MAX_AGE
}

/// Seconds (a number, or "5s", "2m"), 0.1 s..=1 day.
fn refclock_max_age<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Written(String),
    }
    let seconds = match Text::deserialize(d)? {
        Text::Seconds(s) => s,
        Text::Written(t) => parse_duration(&t).map_err(de::Error::custom)?,
    };
    if !(0.1..=86_400.0).contains(&seconds) {
        return Err(de::Error::custom(format!("{seconds} s is outside 0.1 s..=1 day")));
    }
    Ok(seconds)
}

fn max_lock_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=64).contains(n))
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 1..=64 (pulses)")))
}

fn pulse_width<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let s = f64::deserialize(d)?;
    if !(0.0..0.5).contains(&s) {
        return Err(de::Error::custom(format!("{s} s is outside 0..0.5")));
    }
    Ok(Some(s))
}

fn default_refclock_poll() -> i8 {
    stratum_proto::sync::RefclockConfig::default().poll
}

fn refclock_poll<'de, D: Deserializer<'de>>(d: D) -> Result<i8, D::Error> {
    let n = i64::deserialize(d)?;
    i8::try_from(n)
        .ok()
        .filter(|p| (-6..=10).contains(p))
        .ok_or_else(|| de::Error::custom(format!("{n} is outside -6..=10 (log2 seconds)")))
}

fn default_refclock_filter() -> usize {
    stratum_proto::sync::RefclockConfig::default().filter
}

fn refclock_filter<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let max = stratum_proto::sync::refclock::MAX_FILTER;
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 1..={max}")))
}

/// A host name or address and a port (123 unless given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `host`, `host:port`, `v4`, `v4:port`, `v6`, `[v6]`, `[v6]:port`.
pub fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let bad = || format!("`{text}` is not a host, host:port or [IPv6]:port");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
        (text, None)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => 123,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("`{p}` is not a port (1..=65535)"))?
        }
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !name_ok {
        return Err(bad());
    }
    Ok(HostPort { host: host.to_string(), port })
}

fn upstream_address<'de, D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
    parse_host_port(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn default_minpoll() -> i8 {
    6
}

fn default_maxpoll() -> i8 {
    10
}

fn poll_exponent<'de, D: Deserializer<'de>>(d: D) -> Result<i8, D::Error> {
    let n = i64::deserialize(d)?;
    i8::try_from(n)
        .ok()
        .filter(|p| (MIN_POLL..=MAX_POLL).contains(p))
        .ok_or_else(|| de::Error::custom(format!("{n} is outside {MIN_POLL}..={MAX_POLL} (log2 seconds)")))
}

fn default_max_sources() -> usize {
    4
}

fn max_sources<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=16).contains(n))
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 1..=16")))
}

pub fn default_step_threshold() -> f64 {
    0.128
}

/// Seconds, from 0 (never step) to 1000 (the panic threshold).
pub fn step_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = f64::deserialize(d)?;
    if !(0.0..=1000.0).contains(&s) {
        return Err(de::Error::custom(format!("{s} s is outside 0..=1000")));
    }
    Ok(s)
}

pub fn default_max_steps() -> u32 {
    1
}

pub fn max_steps<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n).ok().filter(|n| *n <= 1000).ok_or_else(|| de::Error::custom(format!("{n} is outside 0..=1000")))
}

pub fn default_max_holdover() -> f64 {
    86_400.0
}

/// `"24h"`, `"90m"`, `"30s"`, `"2d"`, or a number of seconds; at least 1 s, at most 30 days.
pub fn max_holdover<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Written(String),
    }
    let seconds = match Text::deserialize(d)? {
        Text::Seconds(s) => s,
        Text::Written(t) => parse_duration(&t).map_err(de::Error::custom)?,
    };
    if !(1.0..=30.0 * 86_400.0).contains(&seconds) {
        return Err(de::Error::custom(format!("{seconds} s is outside 1 s..=30 days")));
    }
    Ok(seconds)
}

pub fn parse_duration(text: &str) -> Result<f64, String> {
    let bad = || format!("`{text}` is not a duration like \"24h\", \"90m\", \"30s\" or \"2d\"");
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    Ok(n * scale)
}

pub fn default_minsane() -> usize {
    1
}

pub fn minsane<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=16).contains(n))
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 1..=16")))
}

/// A leap-seconds.list file: read and checked (its hash) when the configuration is.
pub fn leap_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LeapFile>, D::Error> {
    let path = PathBuf::from(String::deserialize(d)?);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| de::Error::custom(format!("cannot read {}: {e}", path.display())))?;
    let list = stratum_proto::sync::LeapSecondsList::parse(&text)
        .map_err(|e| de::Error::custom(format!("{}: {e}", path.display())))?;
    Ok(Some(LeapFile { path, list }))
}

/// The leap-seconds.list file named in `[clock]`, as read at start.
#[derive(Clone, Debug)]
pub struct LeapFile {
    pub path: PathBuf,
    pub list: stratum_proto::sync::LeapSecondsList,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_ports_and_names() {
        let hp = |h: &str, p| HostPort { host: h.into(), port: p };
        assert_eq!(parse_host_port("192.0.2.10"), Ok(hp("192.0.2.10", 123)));
        assert_eq!(parse_host_port("192.0.2.10:1123"), Ok(hp("192.0.2.10", 1123)));
        assert_eq!(parse_host_port("pool.ntp.org"), Ok(hp("pool.ntp.org", 123)));
        assert_eq!(parse_host_port("time.example:123"), Ok(hp("time.example", 123)));
        assert_eq!(parse_host_port("2001:db8::1"), Ok(hp("2001:db8::1", 123)));
        assert_eq!(parse_host_port("[2001:db8::1]"), Ok(hp("2001:db8::1", 123)));
        assert_eq!(parse_host_port("[2001:db8::1]:4123"), Ok(hp("2001:db8::1", 4123)));
        assert_eq!(hp("2001:db8::1", 4123).to_string(), "[2001:db8::1]:4123");
        for bad in ["", "host:0", "host:99999", "[::1", "[nope]:1", "a b", "host:", "[::1]x"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86_400.0));
        assert_eq!(parse_duration("90m"), Ok(5400.0));
        assert_eq!(parse_duration("1.5s"), Ok(1.5));
        assert_eq!(parse_duration("2d"), Ok(172_800.0));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
