//! NTP time formats and era-safe arithmetic.
//!
//! The 64-bit NTP timestamp counts seconds since 1900 in 32 bits, so it wraps every 136 years (the
//! next wrap, "era 1", starts on 2036-02-07). Timestamps are therefore only ever compared by their
//! wrapping difference, and converted to absolute (Unix) time against a pivot that the caller
//! supplies (usually the current time or the build date); the result lies within 68 years of it.

use core::fmt;

/// Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const UNIX_EPOCH_NTP_SECONDS: i64 = 2_208_988_800;

const FRACTION_PER_SECOND: u64 = 1 << 32;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// An NTP 64-bit timestamp: 32 bits of era seconds and 32 bits of fraction.
///
/// Zero is special on the wire ("unknown"), but this type gives it no other meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    pub const ZERO: Self = Self(0);

    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub const fn to_bits(self) -> u64 {
        self.0
    }

    pub const fn from_parts(seconds: u32, fraction: u32) -> Self {
        Self(((seconds as u64) << 32) | fraction as u64)
    }

    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    pub const fn from_be_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Converts Unix time (seconds since 1970, may be negative; nanoseconds below one second) into
    /// the NTP era that contains it. The fraction is rounded to the nearest 2^-32 s.
    pub const fn from_unix(seconds: i64, nanos: u32) -> Self {
        let ntp_seconds = seconds.wrapping_add(UNIX_EPOCH_NTP_SECONDS) as u32;
        let nanos = if nanos as u64 >= NANOS_PER_SECOND { NANOS_PER_SECOND - 1 } else { nanos as u64 };
        let fraction = ((nanos << 32) + NANOS_PER_SECOND / 2) / NANOS_PER_SECOND;
        // Rounding up from 999_999_999.9 ns lands on the next second.
        Self(((ntp_seconds as u64) << 32).wrapping_add(fraction))
    }

    /// Converts to Unix time, choosing the era that puts the result within 2^31 seconds (68 years)
    /// of `pivot_unix_seconds`. Returns (seconds, nanoseconds).
    pub const fn to_unix(self, pivot_unix_seconds: i64) -> (i64, u32) {
        let pivot_ntp = pivot_unix_seconds.wrapping_add(UNIX_EPOCH_NTP_SECONDS) as u32;
        let delta = self.seconds().wrapping_sub(pivot_ntp) as i32 as i64;
        let nanos = ((self.fraction() as u64 * NANOS_PER_SECOND) >> 32) as u32;
        (pivot_unix_seconds + delta, nanos)
    }

    /// This timestamp shifted by a signed duration, wrapping across eras.
    pub const fn add(self, d: NtpDuration) -> Self {
        Self(self.0.wrapping_add(d.0 as u64))
    }

    /// The signed difference `self - earlier`, correct whenever the true difference is under 68
    /// years, across an era boundary too.
    pub const fn since(self, earlier: Self) -> NtpDuration {
        NtpDuration(self.0.wrapping_sub(earlier.0) as i64)
    }
}

impl fmt::Debug for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpTimestamp({}.{:08x})", self.seconds(), self.fraction())
    }
}

/// A signed duration in NTP's 32.32 fixed point (range ±68 years, resolution 233 ps).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NtpDuration(i64);

impl NtpDuration {
    pub const ZERO: Self = Self(0);

    pub const fn from_bits(bits: i64) -> Self {
        Self(bits)
    }

    pub const fn to_bits(self) -> i64 {
        self.0
    }

    pub const fn from_seconds(seconds: i32) -> Self {
        Self((seconds as i64) << 32)
    }

    /// Saturates outside ±2^63 ns (±292 years, far beyond the 32.32 range, which wraps).
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(((nanos as i128 * FRACTION_PER_SECOND as i128) / NANOS_PER_SECOND as i128) as i64)
    }

    pub const fn to_nanos(self) -> i64 {
        ((self.0 as i128 * NANOS_PER_SECOND as i128) >> 32) as i64
    }

    pub fn from_seconds_f64(seconds: f64) -> Self {
        Self((seconds * FRACTION_PER_SECOND as f64) as i64)
    }

    pub fn to_seconds_f64(self) -> f64 {
        self.0 as f64 / FRACTION_PER_SECOND as f64
    }

    /// `self * rate / 2^32`, where `rate` is a dimensionless ratio in units of 2^-32 (so 1 ppm is
    /// about 4295). Used for frequency corrections and dispersion growth.
    pub const fn scale(self, rate: i64) -> Self {
        Self(((self.0 as i128 * rate as i128) >> 32) as i64)
    }
}

impl fmt::Debug for NtpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpDuration({:.9}s)", self.to_seconds_f64())
    }
}

/// Converts a ratio in parts per million into the 2^-32 units that [`NtpDuration::scale`] takes.
pub const fn ppm_to_rate(ppm: f64) -> i64 {
    (ppm * 4294.967296) as i64
}

/// NTP's 32-bit short format: unsigned 16.16 seconds, used for root delay and root dispersion.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NtpShort(u32);

impl NtpShort {
    pub const ZERO: Self = Self(0);
    pub const MAX: Self = Self(u32::MAX);

    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// Negative durations become zero, durations past 65536 s saturate.
    pub const fn from_duration(d: NtpDuration) -> Self {
        let bits = d.0 >> 16;
        if bits < 0 {
            Self(0)
        } else if bits > u32::MAX as i64 {
            Self::MAX
        } else {
            Self(bits as u32)
        }
    }

    pub const fn to_duration(self) -> NtpDuration {
        NtpDuration((self.0 as i64) << 16)
    }

    pub const fn from_micros(micros: u64) -> Self {
        let bits = (micros << 16) / 1_000_000;
        if bits > u32::MAX as u64 {
            Self::MAX
        } else {
            Self(bits as u32)
        }
    }

    pub fn to_seconds_f64(self) -> f64 {
        self.0 as f64 / 65536.0
    }

    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

impl fmt::Debug for NtpShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpShort({:.6}s)", self.to_seconds_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2036-02-07T06:28:16Z, the first second of NTP era 1.
    const ERA1_UNIX: i64 = 2_085_978_496;

    #[test]
    fn unix_epoch_is_the_documented_ntp_second() {
        let t = NtpTimestamp::from_unix(0, 0);
        assert_eq!(t.seconds(), 2_208_988_800);
        assert_eq!(t.fraction(), 0);
        assert_eq!(t.to_unix(0), (0, 0));
    }

    #[test]
    fn era_boundary_wraps_to_zero_and_back() {
        let last = NtpTimestamp::from_unix(ERA1_UNIX - 1, 0);
        let first = NtpTimestamp::from_unix(ERA1_UNIX, 0);
        assert_eq!(last.seconds(), u32::MAX);
        assert_eq!(first.seconds(), 0);
        assert_eq!(first.since(last), NtpDuration::from_seconds(1));
        assert_eq!(last.since(first), NtpDuration::from_seconds(-1));
        // Either side of the boundary resolves correctly from a pivot on the other side.
        assert_eq!(first.to_unix(ERA1_UNIX - 86_400).0, ERA1_UNIX);
        assert_eq!(last.to_unix(ERA1_UNIX + 86_400).0, ERA1_UNIX - 1);
    }

    #[test]
    fn pivot_selects_era_within_68_years() {
        let pivot_2026 = 1_790_000_000;
        let t = NtpTimestamp::from_parts(5, 0); // era 1: early 2036
        assert_eq!(t.to_unix(pivot_2026).0, ERA1_UNIX + 5);
        let t = NtpTimestamp::from_parts(3_000_000_000, 0); // era 0: 1995
        assert_eq!(t.to_unix(pivot_2026).0, 3_000_000_000 - UNIX_EPOCH_NTP_SECONDS);
    }

    #[test]
    fn fraction_rounds_to_nearest() {
        let t = NtpTimestamp::from_unix(0, 500_000_000);
        assert_eq!(t.fraction(), 1 << 31);
        let t = NtpTimestamp::from_unix(10, 999_999_999);
        assert_eq!(t.to_unix(0), (10, 999_999_999));
        let t = NtpTimestamp::from_unix(10, 2_000_000_000); // out-of-range nanos clamp
        assert_eq!(t.to_unix(0).0, 10);
    }

    #[test]
    fn short_format_saturates() {
        assert_eq!(NtpShort::from_duration(NtpDuration::from_seconds(-1)), NtpShort::ZERO);
        assert_eq!(NtpShort::from_duration(NtpDuration::from_seconds(70_000)), NtpShort::MAX);
        assert_eq!(NtpShort::from_micros(1_000_000).to_bits(), 1 << 16);
        assert_eq!(NtpShort::from_micros(u64::MAX >> 16), NtpShort::MAX);
    }

    #[test]
    fn scale_by_ppm() {
        let day = NtpDuration::from_seconds(86_400);
        let grown = day.scale(ppm_to_rate(15.0));
        assert!((grown.to_seconds_f64() - 1.296).abs() < 1e-4, "{grown:?}");
        assert!((day.scale(-ppm_to_rate(15.0)).to_bits() + grown.to_bits()).abs() <= 1);
    }

    proptest! {
        #[test]
        fn unix_round_trip_within_an_era_of_the_pivot(
            secs in -4_000_000_000i64..8_000_000_000,
            nanos in 0u32..1_000_000_000,
            pivot_delta in -2_000_000_000i64..2_000_000_000,
        ) {
            let t = NtpTimestamp::from_unix(secs, nanos);
            let (s, n) = t.to_unix(secs + pivot_delta);
            let back = s as i128 * 1_000_000_000 + n as i128;
            let orig = secs as i128 * 1_000_000_000 + nanos as i128;
            prop_assert!((back - orig).abs() <= 1, "{secs}.{nanos} -> {s}.{n}");
        }

        #[test]
        fn difference_is_era_safe(a in any::<u64>(), d in any::<i64>()) {
            let t = NtpTimestamp::from_bits(a);
            let u = t.add(NtpDuration::from_bits(d));
            prop_assert_eq!(u.since(t).to_bits(), d);
        }

        #[test]
        fn nanos_round_trip(n in -1_000_000_000_000_000i64..1_000_000_000_000_000) {
            let d = NtpDuration::from_nanos(n);
            prop_assert!((d.to_nanos() - n).abs() <= 1);
        }

        #[test]
        fn bytes_round_trip(bits in any::<u64>()) {
            let t = NtpTimestamp::from_bits(bits);
            prop_assert_eq!(NtpTimestamp::from_be_bytes(t.to_be_bytes()), t);
        }
    }
}
