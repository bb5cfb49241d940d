//! Leap seconds: the `leap-seconds.list` file (IERS/NIST format) and the rule for the leap
//! indicator we serve.
//!
//! The file's data lines are `NTP-seconds TAI-UTC # comment`, each the first second at which that
//! TAI−UTC applies; `#$` is its last update, `#@` its expiry, `#h` the SHA-1 of the digits of the
//! `#$` and `#@` values and of every data line's fields, in file order (five hex words). A file
//! whose hash does not match is refused. The server reads the file; this module only parses it.
//!
//! The leap indicator ([`leap_vote`], [`served_leap`]) follows an unexpired file when there is one,
//! else a majority of the selected sources with at least two votes, never one source alone; it
//! is served only on the last day (UTC) of the month the leap ends.

use core::fmt;

use sha1::{Digest, Sha1};

use super::calendar::{start_of_next_month, DAY};
use crate::packet::LeapIndicator;
use crate::time::UNIX_EPOCH_NTP_SECONDS;

/// A leap second's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeapDirection {
    /// 23:59:60 is inserted (TAI−UTC grows by one).
    Insert,
    /// 23:59:59 is skipped (TAI−UTC shrinks by one).
    Delete,
}

impl LeapDirection {
    /// The leap indicator that announces it.
    pub const fn indicator(self) -> LeapIndicator {
        match self {
            Self::Insert => LeapIndicator::InsertSecond,
            Self::Delete => LeapIndicator::DeleteSecond,
        }
    }

    /// How the served clock moves against true elapsed time at the leap: −1 s for an insert
    /// (the second 23:59:59 repeats), +1 s for a delete.
    pub const fn clock_shift(self) -> f64 {
        match self {
            Self::Insert => -1.0,
            Self::Delete => 1.0,
        }
    }
}

/// A leap second from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeapEvent {
    /// Unix time of the first second after the leap (00:00:00 of the 1st of a month).
    pub at_unix: i64,
    pub direction: LeapDirection,
    /// TAI − UTC from `at_unix` on.
    pub tai_offset: i32,
}

/// Why a leap-seconds file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeapFileError {
    /// A line that is neither a comment nor `seconds offset`: its number (1-based).
    Syntax { line: usize },
    /// Data lines not in increasing time, or a step other than ±1 s.
    Order { line: usize },
    /// No data line, no `#@` expiry or no `#h` hash.
    Missing(&'static str),
    /// The `#h` hash does not match the data.
    HashMismatch,
}

impl fmt::Display for LeapFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { line } => write!(f, "line {line}: not a leap second entry"),
            Self::Order { line } => write!(f, "line {line}: entries must rise in time, by one second of TAI-UTC each"),
            Self::Missing(what) => write!(f, "no {what}"),
            Self::HashMismatch => f.write_str("the #h hash does not match the file's data"),
        }
    }
}

/// How soon a file expires ([`LeapSecondsList::expiry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// More than [`EXPIRY_WARNING_DAYS`] left.
    Valid,
    /// Expires within [`EXPIRY_WARNING_DAYS`]: this many whole days left (warn the operator).
    Soon { days: i64 },
    /// Past its `#@` date: not used any more.
    Expired,
}

/// Warn this many days before a file expires.
pub const EXPIRY_WARNING_DAYS: i64 = 28;

/// A parsed, hash-checked leap-seconds.list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeapSecondsList {
    /// (Unix time from which it applies, TAI − UTC), rising.
    entries: Vec<(i64, i32)>,
    updated_unix: Option<i64>,
    expires_unix: i64,
}

fn ntp_to_unix(ntp: i64) -> i64 {
    ntp - UNIX_EPOCH_NTP_SECONDS
}

impl LeapSecondsList {
    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> Result<Self, LeapFileError> {
        let mut hasher = Sha1::new();
        let mut entries: Vec<(i64, i32)> = Vec::new();
        let (mut updated, mut expires, mut hash) = (None, None, None);
        let digits = |s: &str, h: &mut Sha1| {
            for b in s.bytes().filter(u8::is_ascii_digit) {
                h.update([b]);
            }
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if let Some(rest) = raw.strip_prefix("#$") {
                digits(rest, &mut hasher);
                updated = Some(parse_int(rest.trim()).ok_or(LeapFileError::Syntax { line })?);
            } else if let Some(rest) = raw.strip_prefix("#@") {
                digits(rest, &mut hasher);
                expires = Some(parse_int(rest.trim()).ok_or(LeapFileError::Syntax { line })?);
            } else if let Some(rest) = raw.strip_prefix("#h") {
                let mut words = [0u32; 5];
                let mut n = 0;
                for w in rest.split_whitespace() {
                    *words.get_mut(n).ok_or(LeapFileError::Syntax { line })? =
                        u32::from_str_radix(w, 16).map_err(|_| LeapFileError::Syntax { line })?;
                    n += 1;
                }
                if n != 5 {
                    return Err(LeapFileError::Syntax { line });
                }
                hash = Some(words);
            } else if raw.starts_with('#') || raw.trim().is_empty() {
                continue;
            } else {
                let data = raw.split('#').next().unwrap_or("");
                digits(data, &mut hasher);
                let mut fields = data.split_whitespace();
                let (Some(t), Some(o), None) = (fields.next(), fields.next(), fields.next()) else {
                    return Err(LeapFileError::Syntax { line });
                };
                let t = parse_int(t).ok_or(LeapFileError::Syntax { line })?;
                let o = parse_int(o).and_then(|o| i32::try_from(o).ok()).ok_or(LeapFileError::Syntax { line })?;
                let at = ntp_to_unix(t);
                if let Some(&(prev_at, prev_o)) = entries.last() {
                    if at <= prev_at || (o - prev_o).abs() != 1 {
                        return Err(LeapFileError::Order { line });
                    }
                }
                entries.push((at, o));
            }
        }
        if entries.is_empty() {
            return Err(LeapFileError::Missing("leap second entries"));
        }
        let expires = expires.ok_or(LeapFileError::Missing("#@ expiry line"))?;
        let hash = hash.ok_or(LeapFileError::Missing("#h hash line"))?;
        let digest = hasher.finalize();
        let mut computed = [0u32; 5];
        for (i, w) in computed.iter_mut().enumerate() {
            *w = u32::from_be_bytes([digest[4 * i], digest[4 * i + 1], digest[4 * i + 2], digest[4 * i + 3]]);
        }
        if computed != hash {
            return Err(LeapFileError::HashMismatch);
        }
        Ok(Self { entries, updated_unix: updated.map(ntp_to_unix), expires_unix: ntp_to_unix(expires) })
    }

    /// Unix time of the `#@` expiry.
    pub fn expires_unix(&self) -> i64 {
        self.expires_unix
    }

    /// Unix time of the `#$` last update, if the file has one.
    pub fn updated_unix(&self) -> Option<i64> {
        self.updated_unix
    }

    /// How soon the file expires, seen at `now_unix`.
    pub fn expiry(&self, now_unix: i64) -> Expiry {
        let left = self.expires_unix - now_unix;
        if left <= 0 {
            Expiry::Expired
        } else if left <= EXPIRY_WARNING_DAYS * DAY {
            Expiry::Soon { days: left / DAY }
        } else {
            Expiry::Valid
        }
    }

    /// TAI − UTC at `unix` (None before 1972, where the file starts).
    pub fn tai_offset_at(&self, unix: i64) -> Option<i32> {
        let i = self.entries.partition_point(|&(at, _)| at <= unix);
        i.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// The first leap second that takes effect after `unix`, if the file knows of one.
    pub fn next_leap_after(&self, unix: i64) -> Option<LeapEvent> {
        let i = self.entries.partition_point(|&(at, _)| at <= unix);
        let (at, offset) = *self.entries.get(i)?;
        let prev = i.checked_sub(1).map_or(offset - 1, |p| self.entries[p].1);
        let direction = if offset > prev { LeapDirection::Insert } else { LeapDirection::Delete };
        Some(LeapEvent { at_unix: at, direction, tai_offset: offset })
    }

    /// The leap this file announces for the end of the month that holds `now_unix`, if it is
    /// unexpired then. None for an expired file (it is not to be trusted either way).
    pub fn leap_this_month(&self, now_unix: i64) -> Option<Option<LeapDirection>> {
        if self.expiry(now_unix) == Expiry::Expired {
            return None;
        }
        let end = start_of_next_month(now_unix);
        Some(self.next_leap_after(now_unix).filter(|e| e.at_unix == end).map(|e| e.direction))
    }
}

fn parse_int(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 15 {
        return None;
    }
    s.parse().ok()
}

/// The leap this month by the rule: an unexpired file decides (`file` is
/// [`LeapSecondsList::leap_this_month`]); without one, the direction that more than half of the
/// selected sources announce, with at least two votes (never one source alone).
pub fn leap_vote(
    file: Option<Option<LeapDirection>>,
    selected: impl IntoIterator<Item = LeapIndicator>,
) -> Option<LeapDirection> {
    if let Some(decided) = file {
        return decided;
    }
    let (mut n, mut insert, mut delete) = (0usize, 0usize, 0usize);
    for li in selected {
        n += 1;
        match li {
            LeapIndicator::InsertSecond => insert += 1,
            LeapIndicator::DeleteSecond => delete += 1,
            _ => {}
        }
    }
    if insert >= 2 && 2 * insert > n {
        Some(LeapDirection::Insert)
    } else if delete >= 2 && 2 * delete > n {
        Some(LeapDirection::Delete)
    } else {
        None
    }
}

/// The leap indicator to serve at `now_unix` for a leap `direction` at the end of this month: the
/// warning only on the month's last day (UTC), nothing otherwise.
pub fn served_leap(direction: Option<LeapDirection>, now_unix: i64) -> LeapIndicator {
    match direction {
        Some(d) if start_of_next_month(now_unix) - now_unix <= DAY => d.indicator(),
        _ => LeapIndicator::NoWarning,
    }
}

/// The width of a leap smear ([`LeapMode::Smear`](super::LeapMode::Smear)): 24 h, centred on the
/// leap (noon to noon UTC, as Google's and Amazon's smears), a rate of 1/86 400 s/s (11.6 ppm).
pub const SMEAR_WINDOW_S: f64 = 86_400.0;

/// The smeared clock minus a clock that never leaps, `since_leap` seconds (of that clock) from
/// the leap: 0 before the window, growing linearly to the whole leap at its end, then the whole
/// leap (`direction.clock_shift()`: −1 s for an insert). A pure function of time; a clock that
/// takes the leap as a step is the smeared one only outside the window.
pub fn leap_smear(since_leap: f64, direction: LeapDirection) -> f64 {
    let progress = ((since_leap + SMEAR_WINDOW_S / 2.0) / SMEAR_WINDOW_S).clamp(0.0, 1.0);
    direction.clock_shift() * progress
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FILE: &str = include_str!("../../tests/data/leap-seconds.list");
    /// 2017-01-01T00:00:00Z, just after the last leap second so far.
    const JAN_2017: i64 = 1_483_228_800;

    #[test]
    fn the_smear_is_linear_over_a_day_centred_on_the_leap() {
        let insert = LeapDirection::Insert;
        assert_eq!(leap_smear(-43_200.0, insert), 0.0);
        assert_eq!(leap_smear(-50_000.0, insert), 0.0);
        assert!((leap_smear(0.0, insert) + 0.5).abs() < 1e-12);
        assert!((leap_smear(21_600.0, insert) + 0.75).abs() < 1e-12);
        assert_eq!(leap_smear(43_200.0, insert), -1.0);
        assert_eq!(leap_smear(1e6, insert), -1.0);
        assert!((leap_smear(0.0, LeapDirection::Delete) - 0.5).abs() < 1e-12);
        // 1/86 400 s/s throughout: 11.6 ppm.
        let rate = (leap_smear(1.0, insert) - leap_smear(0.0, insert)) * 1e6;
        assert!((rate + 11.574).abs() < 1e-3, "{rate}");
    }

    #[test]
    fn the_real_file_parses_and_its_hash_checks() {
        let l = LeapSecondsList::parse(FILE).unwrap();
        assert_eq!(l.tai_offset_at(JAN_2017), Some(37));
        assert_eq!(l.tai_offset_at(JAN_2017 - 1), Some(36));
        assert_eq!(l.tai_offset_at(0), None);
        let e = l.next_leap_after(JAN_2017 - 86_400).unwrap();
        assert_eq!(e, LeapEvent { at_unix: JAN_2017, direction: LeapDirection::Insert, tai_offset: 37 });
        assert_eq!(l.next_leap_after(JAN_2017), None);
        assert_eq!(l.expires_unix(), 3_991_593_600 - UNIX_EPOCH_NTP_SECONDS);
        assert_eq!(l.expiry(l.expires_unix() - 10 * DAY), Expiry::Soon { days: 10 });
        assert_eq!(l.expiry(l.expires_unix()), Expiry::Expired);
        assert_eq!(l.expiry(JAN_2017), Expiry::Valid);
        assert_eq!(l.leap_this_month(JAN_2017 - 5 * DAY), Some(Some(LeapDirection::Insert)));
        assert_eq!(l.leap_this_month(JAN_2017 - 40 * DAY), Some(None));
        assert_eq!(l.leap_this_month(l.expires_unix() + 1), None);
    }

    #[test]
    fn a_changed_digit_or_a_bad_line_is_refused() {
        let tampered =
            FILE.replace("3692217600\t37", "3692217601\t37").replace("3692217600      37", "3692217601      37");
        assert_ne!(tampered, FILE);
        assert_eq!(LeapSecondsList::parse(&tampered), Err(LeapFileError::HashMismatch));
        let no_hash: String = FILE.lines().filter(|l| !l.starts_with("#h")).map(|l| format!("{l}\n")).collect();
        assert_eq!(LeapSecondsList::parse(&no_hash), Err(LeapFileError::Missing("#h hash line")));
        let bad = format!("{FILE}\nnonsense here\n");
        assert!(matches!(LeapSecondsList::parse(&bad), Err(LeapFileError::Syntax { .. })));
    }

    #[test]
    fn the_flag_follows_a_majority_or_the_file_never_one_source() {
        use LeapIndicator::*;
        assert_eq!(leap_vote(None, [InsertSecond]), None, "one source alone");
        assert_eq!(leap_vote(None, [InsertSecond, InsertSecond, NoWarning]), Some(LeapDirection::Insert));
        assert_eq!(leap_vote(None, [InsertSecond, NoWarning, NoWarning, NoWarning]), None, "minority");
        assert_eq!(leap_vote(None, [DeleteSecond, DeleteSecond]), Some(LeapDirection::Delete));
        assert_eq!(leap_vote(Some(None), [InsertSecond, InsertSecond]), None, "the file decides");
        assert_eq!(leap_vote(Some(Some(LeapDirection::Insert)), [NoWarning]), Some(LeapDirection::Insert));
        // Served only on the last day of the month.
        assert_eq!(served_leap(Some(LeapDirection::Insert), JAN_2017 - 2 * DAY), NoWarning);
        assert_eq!(served_leap(Some(LeapDirection::Insert), JAN_2017 - DAY), InsertSecond);
        assert_eq!(served_leap(Some(LeapDirection::Insert), JAN_2017 - 1), InsertSecond);
        assert_eq!(served_leap(Some(LeapDirection::Insert), JAN_2017), NoWarning);
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_without_panicking(text in "[#@$h0-9 \t\na-f]{0,300}") {
            let _ = LeapSecondsList::parse(&text);
        }

        #[test]
        fn any_line_mutation_of_the_real_file_is_refused_or_equal(line in 0usize..300, byte in 0u8..128) {
            let mut lines: Vec<String> = FILE.lines().map(str::to_owned).collect();
            let n = line % lines.len();
            lines[n].push(byte as char);
            let text = lines.join("\n");
            if let Ok(l) = LeapSecondsList::parse(&text) {
                // Only a change that leaves the digits alone may pass: then the content is the same.
                prop_assert_eq!(l, LeapSecondsList::parse(FILE).unwrap());
            }
        }
    }
}
