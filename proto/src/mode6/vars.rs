//! System and peer variables as ntpd reports them: `name=value` pairs joined by `, `, in ntpd's
//! units (offsets, delays, dispersions and jitters in milliseconds, frequency and wander in
//! ppm, timestamps as `0xSSSSSSSS.FFFFFFFF`), and the status words (RFC 9327 section 2.3).
//!
//! Values the caller does not know are `None` and left out of the list, never made up.

use core::fmt::Write;
use std::net::IpAddr;

use super::header::ErrorCode;
use crate::time::NtpTimestamp;

/// Where the system's time comes from: the status word's "clock source" field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    Unspecified = 0,
    /// A PPS signal.
    Atom = 1,
    /// A GNSS receiver (ntpd files GPS under "UHF radio").
    Uhf = 4,
    Local = 5,
    Ntp = 6,
}

/// The system variables (association 0).
#[derive(Clone, Debug, PartialEq)]
pub struct SystemVars<'a> {
    pub version: &'a str,
    pub processor: &'a str,
    pub system: &'a str,
    /// Leap indicator bits (3: unsynchronised).
    pub leap: u8,
    pub stratum: u8,
    pub precision: i8,
    pub root_delay_ms: f64,
    pub root_dispersion_ms: f64,
    /// The refid as text (an address or a refclock's code); sanitised before it is written.
    pub refid: &'a str,
    pub reftime: Option<NtpTimestamp>,
    /// The served clock now.
    pub clock: NtpTimestamp,
    /// The system peer's association id (0: none).
    pub peer: u16,
    pub source: TimeSource,
    /// Poll exponent of the discipline, and its minimum.
    pub tc: i8,
    pub mintc: i8,
    pub offset_ms: f64,
    pub frequency_ppm: f64,
    pub sys_jitter_ms: f64,
    pub clk_jitter_ms: Option<f64>,
    pub clk_wander_ppm: Option<f64>,
    /// TAI − UTC, seconds, from the leap-seconds list (None without one).
    pub tai: Option<i32>,
    /// The leap-seconds list's next leap (or, none scheduled, its last) and its expiry; written
    /// as ntpd writes them, `yyyymmddhhmm` UTC.
    pub leapsec: Option<NtpTimestamp>,
    pub expire: Option<NtpTimestamp>,
}

impl SystemVars<'_> {
    /// `leap:2 | source:6 | event count:4 | last event:4` (no events are kept here).
    pub fn status_word(&self) -> u16 {
        u16::from(self.leap & 3) << 14 | (self.source as u16 & 0x3f) << 8
    }

    /// Every variable, in ntpd's order.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::with_capacity(24);
        v.push(("version", quoted(self.version)));
        v.push(("processor", quoted(self.processor)));
        v.push(("system", quoted(self.system)));
        v.push(("leap", self.leap.to_string()));
        v.push(("stratum", self.stratum.to_string()));
        v.push(("precision", self.precision.to_string()));
        v.push(("rootdelay", ms(self.root_delay_ms)));
        v.push(("rootdisp", ms(self.root_dispersion_ms)));
        v.push(("refid", token(self.refid)));
        if let Some(t) = self.reftime {
            v.push(("reftime", timestamp(t)));
        }
        v.push(("clock", timestamp(self.clock)));
        v.push(("peer", self.peer.to_string()));
        v.push(("tc", self.tc.to_string()));
        v.push(("mintc", self.mintc.to_string()));
        v.push(("offset", ms(self.offset_ms)));
        v.push(("frequency", ms(self.frequency_ppm)));
        v.push(("sys_jitter", ms(self.sys_jitter_ms)));
        if let Some(j) = self.clk_jitter_ms {
            v.push(("clk_jitter", ms(j)));
        }
        if let Some(w) = self.clk_wander_ppm {
            v.push(("clk_wander", ms(w)));
        }
        if let Some(tai) = self.tai {
            v.push(("tai", tai.to_string()));
        }
        if let Some(t) = self.leapsec {
            v.push(("leapsec", filestamp(t)));
        }
        if let Some(t) = self.expire {
            v.push(("expire", filestamp(t)));
        }
        v
    }
}

/// Where a peer stands in the selection: the low 3 bits of its status, the character `ntpq -p`
/// prints (` x.-+#*o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    Reject = 0,
    Falseticker = 1,
    Excess = 2,
    Outlier = 3,
    Candidate = 4,
    Backup = 5,
    SystemPeer = 6,
    PpsPeer = 7,
}

/// One association's variables.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerVars {
    pub association: u16,
    pub selection: Selection,
    /// The reach register (8 polls).
    pub reach: u8,
    pub srcadr: IpAddr,
    pub srcport: u16,
    /// A name for it: a refclock's `driver:device`, an upstream's configured name.
    pub srchost: Option<String>,
    pub dstadr: Option<IpAddr>,
    pub leap: Option<u8>,
    pub stratum: Option<u8>,
    pub precision: Option<i8>,
    pub root_delay_ms: Option<f64>,
    pub root_dispersion_ms: Option<f64>,
    /// The peer's refid as text (sanitised before it is written).
    pub refid: Option<String>,
    /// When its last sample arrived (host time; `ntpq -p`'s "when").
    pub rec: Option<NtpTimestamp>,
    pub unreach: Option<u32>,
    /// Our mode (3, client) and its (4, server).
    pub hmode: u8,
    pub pmode: u8,
    pub hpoll: i8,
    pub ppoll: i8,
    pub headway: u32,
    /// RFC 5905 flash bits of its last reply.
    pub flash: u16,
    pub offset_ms: Option<f64>,
    pub delay_ms: Option<f64>,
    pub dispersion_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    /// Interleaved mode's extra delay (0: basic mode).
    pub xleave_ms: f64,
    /// The clock filter's samples (newest first; empty when not known).
    pub filtdelay_ms: Vec<f64>,
    pub filtoffset_ms: Vec<f64>,
    pub filtdisp_ms: Vec<f64>,
}

impl PeerVars {
    /// `config | reach | selection` in the high byte; no events are kept here.
    pub fn status_word(&self) -> u16 {
        const CONFIG: u16 = 0x80;
        const REACH: u16 = 0x10;
        let reach = if self.reach != 0 { REACH } else { 0 };
        (CONFIG | reach | self.selection as u16) << 8
    }

    /// Every variable, in ntpd's order.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::with_capacity(32);
        v.push(("srcadr", self.srcadr.to_string()));
        v.push(("srcport", self.srcport.to_string()));
        if let Some(h) = &self.srchost {
            v.push(("srchost", quoted(h)));
        }
        if let Some(d) = self.dstadr {
            v.push(("dstadr", d.to_string()));
        }
        let opt = |v: &mut Vec<(&'static str, String)>, name, value: Option<String>| {
            if let Some(value) = value {
                v.push((name, value));
            }
        };
        opt(&mut v, "leap", self.leap.map(|l| l.to_string()));
        opt(&mut v, "stratum", self.stratum.map(|s| s.to_string()));
        opt(&mut v, "precision", self.precision.map(|p| p.to_string()));
        opt(&mut v, "rootdelay", self.root_delay_ms.map(ms));
        opt(&mut v, "rootdisp", self.root_dispersion_ms.map(ms));
        opt(&mut v, "refid", self.refid.as_deref().map(token));
        opt(&mut v, "rec", self.rec.map(timestamp));
        v.push(("reach", format!("{:#04x}", self.reach)));
        opt(&mut v, "unreach", self.unreach.map(|u| u.to_string()));
        v.push(("hmode", self.hmode.to_string()));
        v.push(("pmode", self.pmode.to_string()));
        v.push(("hpoll", self.hpoll.to_string()));
        v.push(("ppoll", self.ppoll.to_string()));
        v.push(("headway", self.headway.to_string()));
        v.push(("flash", format!("{:#x}", self.flash)));
        opt(&mut v, "offset", self.offset_ms.map(ms));
        opt(&mut v, "delay", self.delay_ms.map(ms));
        opt(&mut v, "dispersion", self.dispersion_ms.map(ms));
        opt(&mut v, "jitter", self.jitter_ms.map(ms));
        v.push(("xleave", ms(self.xleave_ms)));
        for (name, values) in
            [("filtdelay", &self.filtdelay_ms), ("filtoffset", &self.filtoffset_ms), ("filtdisp", &self.filtdisp_ms)]
        {
            if !values.is_empty() {
                // ntpd's own layout: a quoted, space-separated list.
                let text: Vec<String> = values.iter().map(|x| format!("{x:.3}")).collect();
                v.push((name, format!("\"{}\"", text.join(" "))));
            }
        }
        v
    }
}

/// The text of `vars` as a reply's data: all of them for an empty request, else the names the
/// request lists (comma-separated; a `=value` part is a write and refused). An unknown name is
/// the protocol's UNKNOWNVAR error, as ntpd answers it.
pub fn render(vars: &[(&'static str, String)], wanted: &[u8]) -> Result<String, ErrorCode> {
    let wanted = core::str::from_utf8(wanted).map_err(|_| ErrorCode::BadFormat)?;
    let mut out = String::new();
    let mut put = |name: &str, value: &str| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{name}={value}");
    };
    let names: Vec<&str> =
        wanted.split(',').map(|n| n.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0')).collect();
    if names.iter().all(|n| n.is_empty()) {
        for (name, value) in vars {
            put(name, value);
        }
        return Ok(out);
    }
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        if name.contains('=') {
            return Err(ErrorCode::Permission);
        }
        match vars.iter().find(|(n, _)| *n == name) {
            Some((n, value)) => put(n, value),
            None => return Err(ErrorCode::UnknownVariable),
        }
    }
    Ok(out)
}

/// Milliseconds (or ppm) as ntpd writes them: six decimals.
fn ms(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "0.000000".to_string()
    }
}

/// An l_fp timestamp as ntpd writes it.
pub fn timestamp(t: NtpTimestamp) -> String {
    format!("{:#010x}.{:08x}", t.seconds(), t.fraction())
}

/// A date as ntpd's `leapsec` and `expire` show it: `yyyymmddhhmm`, UTC.
pub fn filestamp(t: NtpTimestamp) -> String {
    let (unix, _) = t.to_unix(946_684_800);
    let (y, m, d) = crate::sync::calendar::civil_from_days(unix.div_euclid(86_400));
    let minutes = unix.rem_euclid(86_400) / 60;
    format!("{y:04}{m:02}{d:02}{:02}{:02}", minutes / 60, minutes % 60)
}

/// A quoted string: no quote or control character inside (the list's parser would split on it).
fn quoted(s: &str) -> String {
    let clean: String = s.chars().filter(|c| *c != '"' && !c.is_control()).collect();
    format!("\"{clean}\"")
}

/// An unquoted token (a refid from an upstream's reply): nothing that separates list items.
fn token(s: &str) -> String {
    let clean: String =
        s.chars().map(|c| if c.is_ascii_graphic() && !matches!(c, ',' | '=' | '"') { c } else { '?' }).collect();
    if clean.is_empty() {
        "?".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn system() -> SystemVars<'static> {
        SystemVars {
            version: "stratumd 0.1.0",
            processor: "x86_64",
            system: "Linux",
            leap: 0,
            stratum: 2,
            precision: -24,
            root_delay_ms: 1.5,
            root_dispersion_ms: 0.25,
            refid: "192.0.2.1",
            reftime: Some(NtpTimestamp::from_parts(0xe000_0000, 0x8000_0000)),
            clock: NtpTimestamp::from_parts(0xe000_0010, 0),
            peer: 1,
            source: TimeSource::Ntp,
            tc: 6,
            mintc: 3,
            offset_ms: -0.0123,
            frequency_ppm: 12.5,
            sys_jitter_ms: 0.01,
            clk_jitter_ms: None,
            clk_wander_ppm: None,
            tai: Some(37),
            leapsec: None,
            expire: None,
        }
    }

    #[test]
    fn system_variables_in_ntpds_units_and_layout() {
        let s = system();
        assert_eq!(s.status_word(), 0x0600);
        let all = render(&s.list(), b"").unwrap();
        assert!(all.starts_with("version=\"stratumd 0.1.0\", processor=\"x86_64\""), "{all}");
        assert!(all.contains(", reftime=0xe0000000.80000000, "), "{all}");
        assert!(all.contains(", offset=-0.012300, frequency=12.500000, "), "{all}");
        assert!(all.contains(", tai=37"), "{all}");
        let mut s = s;
        // 2017-01-01 00:00 and 2026-06-28 00:00 UTC, as NTP seconds.
        s.leapsec = Some(NtpTimestamp::from_parts(3_692_217_600, 0));
        s.expire = Some(NtpTimestamp::from_parts(3_991_593_600, 0));
        let all = render(&s.list(), b"leapsec,expire").unwrap();
        assert_eq!(all, "leapsec=201701010000, expire=202606280000");
        assert!(!all.contains("clk_jitter"), "unknown values are left out: {all}");
        assert_eq!(render(&s.list(), b"offset").unwrap(), "offset=-0.012300");
        assert_eq!(render(&s.list(), b" stratum, refid\0").unwrap(), "stratum=2, refid=192.0.2.1");
        assert_eq!(render(&s.list(), b"nosuch"), Err(ErrorCode::UnknownVariable));
        assert_eq!(render(&s.list(), b"stratum=1"), Err(ErrorCode::Permission));
    }

    #[test]
    fn an_upstreams_refid_cannot_break_the_list() {
        let mut s = system();
        s.refid = "A,B=\"";
        assert!(render(&s.list(), b"refid").unwrap() == "refid=A?B??");
        s.version = "x\",y";
        assert_eq!(render(&s.list(), b"version").unwrap(), "version=\"x,y\"");
    }

    #[test]
    fn peer_status_word_and_reach_in_hex() {
        let p = PeerVars {
            association: 1,
            selection: Selection::SystemPeer,
            reach: 0o377,
            srcadr: "192.0.2.1".parse().unwrap(),
            srcport: 123,
            srchost: None,
            dstadr: None,
            leap: Some(0),
            stratum: Some(1),
            precision: None,
            root_delay_ms: None,
            root_dispersion_ms: None,
            refid: Some("GPS".into()),
            rec: None,
            unreach: None,
            hmode: 3,
            pmode: 4,
            hpoll: 6,
            ppoll: 6,
            headway: 0,
            flash: 0,
            offset_ms: Some(0.5),
            delay_ms: Some(1.0),
            dispersion_ms: None,
            jitter_ms: Some(0.1),
            xleave_ms: 0.0,
            filtdelay_ms: vec![1.0, 2.0],
            filtoffset_ms: vec![],
            filtdisp_ms: vec![],
        };
        assert_eq!(p.status_word(), 0x9600);
        let text = render(&p.list(), b"").unwrap();
        assert!(text.starts_with("srcadr=192.0.2.1, srcport=123, leap=0, stratum=1, refid=GPS, reach=0xff"), "{text}");
        assert!(text.contains("filtdelay=\"1.000 2.000\""), "{text}");
        assert!(!text.contains("filtoffset"), "{text}");
        assert_eq!(render(&p.list(), b"unreach,dstadr"), Err(ErrorCode::UnknownVariable), "neither known here");
        let p = PeerVars { unreach: Some(3), dstadr: Some("2001:db8::2".parse().unwrap()), ..p };
        assert_eq!(render(&p.list(), b"unreach,dstadr").unwrap(), "unreach=3, dstadr=2001:db8::2");
        let text = render(&p.list(), b"").unwrap();
        assert!(text.starts_with("srcadr=192.0.2.1, srcport=123, dstadr=2001:db8::2, leap=0"), "{text}");
        assert!(text.contains(", reach=0xff, unreach=3, hmode=3"), "ntpd's order: {text}");
    }
}
