//! The server state that workers read for every reply, published by the one sync thread.
//!
//! [`ServerSnapshot`] is small and `Copy`. It encodes to a fixed array of words so that the
//! publisher can store it in atomics (a seqlock) without any `unsafe`.

use crate::packet::{LeapIndicator, RefId};
use crate::time::{NtpDuration, NtpShort, NtpTimestamp};

/// The stratum a server announces when it is not synchronised (RFC 5905 section 7.3).
pub const STRATUM_UNSYNCHRONIZED: u8 = 16;

/// The mapping from the host clock to the time we serve: `served = t + offset + (t - base) * rate`.
///
/// Identity when the host clock itself is disciplined (system and external clock backends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockCorrection {
    pub offset: NtpDuration,
    pub base: NtpTimestamp,
    /// Frequency correction in units of 2^-32 (see [`crate::time::ppm_to_rate`]).
    pub rate: i32,
}

impl ClockCorrection {
    pub const IDENTITY: Self = Self { offset: NtpDuration::ZERO, base: NtpTimestamp::ZERO, rate: 0 };

    pub const fn apply(&self, t: NtpTimestamp) -> NtpTimestamp {
        let drift = if self.rate == 0 { NtpDuration::ZERO } else { t.since(self.base).scale(self.rate as i64) };
        t.add(self.offset).add(drift)
    }
}

/// Everything a worker needs to fill in a reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSnapshot {
    pub leap: LeapIndicator,
    /// 1..=15 when synchronised; [`STRATUM_UNSYNCHRONIZED`] otherwise.
    pub stratum: u8,
    /// log2 seconds of the served clock's precision.
    pub precision: i8,
    pub ref_id: RefId,
    pub reference_time: NtpTimestamp,
    pub root_delay: NtpShort,
    /// Root dispersion at `dispersion_base`; it grows at `dispersion_rate` from then on.
    pub root_dispersion: NtpShort,
    pub dispersion_base: NtpTimestamp,
    /// Dispersion growth in units of 2^-32 seconds per second (15 ppm is about 64425).
    pub dispersion_rate: u32,
    /// TAI - UTC in seconds, for converting TAI receive stamps (AF_XDP metadata).
    pub tai_offset: i32,
    pub correction: ClockCorrection,
}

/// Number of 64-bit words in [`ServerSnapshot::to_words`].
pub const SNAPSHOT_WORDS: usize = 8;

impl ServerSnapshot {
    /// The state to serve before anything is known: unsynchronised, stratum 16, no reference.
    pub const fn unsynchronized(precision: i8) -> Self {
        Self {
            leap: LeapIndicator::Unsynchronized,
            stratum: STRATUM_UNSYNCHRONIZED,
            precision,
            ref_id: RefId::NONE,
            reference_time: NtpTimestamp::ZERO,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            dispersion_base: NtpTimestamp::ZERO,
            dispersion_rate: 0,
            tai_offset: 0,
            correction: ClockCorrection::IDENTITY,
        }
    }

    pub const fn is_synchronized(&self) -> bool {
        !matches!(self.leap, LeapIndicator::Unsynchronized) && self.stratum < STRATUM_UNSYNCHRONIZED
    }

    /// Root dispersion as of `now` (a served-time timestamp): the base value plus its growth.
    pub const fn root_dispersion_at(&self, now: NtpTimestamp) -> NtpShort {
        let elapsed = now.since(self.dispersion_base);
        if elapsed.to_bits() <= 0 || self.dispersion_rate == 0 {
            return self.root_dispersion;
        }
        let growth = NtpShort::from_duration(elapsed.scale(self.dispersion_rate as i64));
        self.root_dispersion.saturating_add(growth)
    }

    pub const fn to_words(&self) -> [u64; SNAPSHOT_WORDS] {
        [
            self.leap.to_bits() as u64
                | (self.stratum as u64) << 8
                | (self.precision as u8 as u64) << 16
                | (self.tai_offset as u32 as u64) << 32,
            self.ref_id.to_bits() as u64 | (self.root_delay.to_bits() as u64) << 32,
            self.reference_time.to_bits(),
            self.root_dispersion.to_bits() as u64 | (self.dispersion_rate as u64) << 32,
            self.dispersion_base.to_bits(),
            self.correction.offset.to_bits() as u64,
            self.correction.base.to_bits(),
            self.correction.rate as u32 as u64,
        ]
    }

    pub const fn from_words(w: &[u64; SNAPSHOT_WORDS]) -> Self {
        Self {
            leap: LeapIndicator::from_bits(w[0] as u8),
            stratum: (w[0] >> 8) as u8,
            precision: (w[0] >> 16) as u8 as i8,
            tai_offset: (w[0] >> 32) as u32 as i32,
            ref_id: RefId::from_bits(w[1] as u32),
            root_delay: NtpShort::from_bits((w[1] >> 32) as u32),
            reference_time: NtpTimestamp::from_bits(w[2]),
            root_dispersion: NtpShort::from_bits(w[3] as u32),
            dispersion_rate: (w[3] >> 32) as u32,
            dispersion_base: NtpTimestamp::from_bits(w[4]),
            correction: ClockCorrection {
                offset: NtpDuration::from_bits(w[5] as i64),
                base: NtpTimestamp::from_bits(w[6]),
                rate: w[7] as u32 as i32,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ppm_to_rate;
    use proptest::prelude::*;

    fn arbitrary_snapshot() -> impl Strategy<Value = ServerSnapshot> {
        (any::<[u64; 6]>(), any::<[u32; 6]>(), 0u8..4, any::<u8>(), any::<i8>(), any::<i32>()).prop_map(
            |(w, s, leap, stratum, precision, rate)| ServerSnapshot {
                leap: LeapIndicator::from_bits(leap),
                stratum,
                precision,
                ref_id: RefId::from_bits(s[0]),
                reference_time: NtpTimestamp::from_bits(w[0]),
                root_delay: NtpShort::from_bits(s[1]),
                root_dispersion: NtpShort::from_bits(s[2]),
                dispersion_base: NtpTimestamp::from_bits(w[1]),
                dispersion_rate: s[3],
                tai_offset: s[4] as i32,
                correction: ClockCorrection {
                    offset: NtpDuration::from_bits(w[2] as i64),
                    base: NtpTimestamp::from_bits(w[3]),
                    rate,
                },
            },
        )
    }

    proptest! {
        #[test]
        fn words_round_trip(s in arbitrary_snapshot()) {
            prop_assert_eq!(ServerSnapshot::from_words(&s.to_words()), s);
        }
    }

    #[test]
    fn dispersion_grows_only_forward() {
        let base = NtpTimestamp::from_parts(1000, 0);
        let s = ServerSnapshot {
            root_dispersion: NtpShort::from_micros(1000),
            dispersion_base: base,
            dispersion_rate: ppm_to_rate(15.0) as u32,
            ..ServerSnapshot::unsynchronized(-20)
        };
        assert_eq!(s.root_dispersion_at(NtpTimestamp::from_parts(900, 0)), s.root_dispersion);
        let day_later = s.root_dispersion_at(NtpTimestamp::from_parts(1000 + 86_400, 0));
        assert!((day_later.to_seconds_f64() - 1.297).abs() < 1e-3, "{day_later:?}");
    }

    #[test]
    fn correction_applies_offset_and_rate() {
        let base = NtpTimestamp::from_parts(1000, 0);
        let c = ClockCorrection { offset: NtpDuration::from_seconds(-2), base, rate: ppm_to_rate(100.0) as i32 };
        let later = NtpTimestamp::from_parts(1000 + 10_000, 0);
        let served = c.apply(later);
        let expected = 10_000.0 - 2.0 + 1.0; // 100 ppm over 10 000 s = 1 s
        assert!((served.since(base).to_seconds_f64() - expected).abs() < 1e-4);
        assert_eq!(ClockCorrection::IDENTITY.apply(later), later);
    }

    #[test]
    fn unsynchronized_is_not_synchronized() {
        assert!(!ServerSnapshot::unsynchronized(-20).is_synchronized());
        let s = ServerSnapshot { leap: LeapIndicator::NoWarning, stratum: 2, ..ServerSnapshot::unsynchronized(-20) };
        assert!(s.is_synchronized());
    }
}
