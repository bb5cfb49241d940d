//! Civil (proleptic Gregorian, UTC) dates from NTP seconds, for the leap-second rules: a leap
//! second happens at the end of a month, and its warning is served only on that month's last day;
//! and for the reference clocks' dates (stratum-refclock's NMEA decoder).

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Days since 1970-01-01 of the civil date `y-m-d` (H. Hinnant's `days_from_civil`).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1..=12, day 1..=31) of `days` since 1970-01-01.
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// Unix seconds of the first second of the month after the one that holds `unix` (the instant a
/// leap second at the end of this month takes effect).
pub(crate) const fn start_of_next_month(unix: i64) -> i64 {
    let (y, m, _) = civil_from_days(unix.div_euclid(DAY));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * DAY
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2016-12-31, the day of the last leap second; 2017-01-01 starts at 1483228800.
        assert_eq!(days_from_civil(2017, 1, 1) * DAY, 1_483_228_800);
        assert_eq!(start_of_next_month(1_483_228_800 - 1), 1_483_228_800);
        assert_eq!(start_of_next_month(1_483_228_800), days_from_civil(2017, 2, 1) * DAY);
        // Across NTP era 1 (2036-02-07).
        assert_eq!(civil_from_days(2_085_978_496 / DAY), (2036, 2, 7));
        assert_eq!(civil_from_days(days_from_civil(2036, 2, 29)), (2036, 2, 29));
    }

    proptest! {
        #[test]
        fn civil_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        }
    }
}
