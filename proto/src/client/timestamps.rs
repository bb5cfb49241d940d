//! The four timestamps of one exchange (RFC 5905 section 8), and what they measure.

use crate::packet::NtpHeader;
use crate::time::{NtpDuration, NtpTimestamp};

/// T1 is the client's send time, T2 the server's receive timestamp, T3 its transmit timestamp, T4
/// the client's receive time. T1 and T4 are on the client's clock, T2 and T3 on the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    pub t1: NtpTimestamp,
    pub t2: NtpTimestamp,
    pub t3: NtpTimestamp,
    pub t4: NtpTimestamp,
}

/// Which server timestamp lies outside the window it must be in ([`Timestamps::check_order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutOfOrder {
    /// T2 is not within [T1, T4].
    T2,
    /// T3 is not within [T2, T4].
    T3,
}

impl Timestamps {
    /// The exchange of a reply sent at `t1` and received at `t4`: T2 and T3 are the reply's.
    pub fn of_reply(t1: NtpTimestamp, reply: &NtpHeader<'_>, t4: NtpTimestamp) -> Self {
        Self { t1, t2: reply.receive_timestamp(), t3: reply.transmit_timestamp(), t4 }
    }

    /// θ = ((T2 - T1) + (T3 - T4)) / 2: how far the server's clock is ahead of ours.
    pub fn offset(&self) -> NtpDuration {
        let sum = i128::from(self.t2.since(self.t1).to_bits()) + i128::from(self.t3.since(self.t4).to_bits());
        NtpDuration::from_bits((sum / 2) as i64)
    }

    /// δ = (T4 - T1) - (T3 - T2): the round trip, less the server's turnaround (saturating at
    /// the ends of the 32.32 range).
    pub fn delay(&self) -> NtpDuration {
        let d = i128::from(self.t4.since(self.t1).to_bits()) - i128::from(self.t3.since(self.t2).to_bits());
        NtpDuration::from_bits(d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// Checks T1 <= T2 <= T3 <= T4, each step widened by [`precision_allowance`] of the reply's
    /// `precision`, and returns the server's turnaround T3 - T2, never negative. Holds only when
    /// the server serves the clock the client reads: loopback, or a network namespace on the
    /// same host.
    pub fn check_order(&self, precision: i8) -> Result<NtpDuration, OutOfOrder> {
        let Self { t1, t2, t3, t4 } = *self;
        let allowance = precision_allowance(precision);
        let before = NtpDuration::from_bits(-allowance.to_bits());
        if t2.since(t1) < before || t4.since(t2) < before {
            return Err(OutOfOrder::T2);
        }
        let turnaround = t3.since(t2);
        if turnaround < before || t4.since(t3) < before {
            return Err(OutOfOrder::T3);
        }
        Ok(turnaround.max(NtpDuration::ZERO))
    }
}

/// How far a server timestamp may lie outside the window it must be in: one unit of its
/// precision, since a server may put random bits below it (2^-32 s at least, 2^30 s at most).
pub fn precision_allowance(precision: i8) -> NtpDuration {
    let shift = (32 + i32::from(precision)).clamp(0, 62);
    NtpDuration::from_bits(1i64 << shift)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::client::reply::tests::ts;

    fn exchange(t1: NtpTimestamp, t2: NtpTimestamp, t3: NtpTimestamp, t4: NtpTimestamp) -> Timestamps {
        Timestamps { t1, t2, t3, t4 }
    }

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        // The server is 1 s ahead; 100 µs each way; 20 µs turnaround.
        let e = exchange(ts(1000, 0), ts(1001, 100), ts(1001, 120), ts(1000, 220));
        assert!((e.offset().to_seconds_f64() - 1.0).abs() < 1e-9);
        assert!((e.delay().to_seconds_f64() - 200e-6).abs() < 1e-9);
        // Behind by 0.5 s, asymmetric path: offset error is half the asymmetry.
        let e = exchange(ts(10, 0), ts(9, 500_300), ts(9, 500_310), ts(10, 410));
        assert!((e.offset().to_seconds_f64() - (-0.5 + (300e-6 - 100e-6) / 2.0)).abs() < 1e-9);
        assert!((e.delay().to_seconds_f64() - 400e-6).abs() < 1e-9);
    }

    #[test]
    fn offset_and_delay_are_era_safe() {
        // Client still in era 0 (just before 2036-02-07), server already in era 1.
        let t1 = NtpTimestamp::from_parts(u32::MAX, 0);
        let t2 = t1.add(NtpDuration::from_seconds(2));
        let t3 = t2.add(NtpDuration::from_nanos(10_000));
        let t4 = t1.add(NtpDuration::from_nanos(30_000));
        assert!(t2.seconds() < t1.seconds(), "the server's timestamps wrapped");
        let o = exchange(t1, t2, t3, t4).offset().to_seconds_f64();
        assert!((o - (2.0 - 10e-6)).abs() < 1e-8, "{o}");
        assert!((exchange(t1, t2, t3, t4).delay().to_seconds_f64() - 20e-6).abs() < 1e-8);
    }

    #[test]
    fn timestamp_window_allows_one_unit_of_precision() {
        let check = |t1, t2, t3, t4, precision| exchange(t1, t2, t3, t4).check_order(precision);
        let (t1, t4) = (ts(1000, 0), ts(1000, 100));
        let us = |n: i64| NtpDuration::from_nanos(n * 1000);
        // -20: about 0.95 µs.
        let turnaround = check(t1, t1.add(us(40)), t1.add(us(55)), t4, -20).unwrap();
        assert_eq!(turnaround.to_nanos(), 15_000);
        // At the edges, inside the allowance.
        assert!(check(t1, t1.add(NtpDuration::from_nanos(-900)), t1, t4, -20).is_ok());
        assert!(check(t1, t4.add(NtpDuration::from_nanos(900)), t4, t4, -20).is_ok());
        // T2 before we sent, after we received.
        assert_eq!(check(t1, t1.add(us(-2)), t1.add(us(10)), t4, -20), Err(OutOfOrder::T2));
        assert_eq!(check(t1, t4.add(us(2)), t4.add(us(3)), t4, -20), Err(OutOfOrder::T2));
        // A coarse server (2^-10 s, about 1 ms) gets a wider window.
        assert!(check(t1, t1.add(us(-500)), t1.add(us(10)), t4, -10).is_ok());
        // T3 before T2, or after T4.
        assert_eq!(check(t1, t1.add(us(50)), t1.add(us(45)), t4, -20), Err(OutOfOrder::T3));
        assert_eq!(check(t1, t1.add(us(50)), t4.add(us(5)), t4, -20), Err(OutOfOrder::T3));
        // T3 a little below T2, within the allowance: turnaround 0, not negative.
        let z = check(t1, t1.add(us(50)), t1.add(us(50)).add(NtpDuration::from_nanos(-500)), t4, -20);
        assert_eq!(z, Ok(NtpDuration::ZERO));
        // Across the era boundary.
        let t1 = NtpTimestamp::from_parts(u32::MAX, u32::MAX - 1000);
        let t2 = t1.add(us(10));
        assert!(t2.seconds() == 0);
        assert!(check(t1, t2, t2.add(us(1)), t2.add(us(20)), -20).is_ok());
    }

    #[test]
    fn precision_allowance_is_clamped() {
        assert_eq!(precision_allowance(-20).to_bits(), 1 << 12);
        assert_eq!(precision_allowance(0).to_bits(), 1 << 32);
        assert_eq!(precision_allowance(-128).to_bits(), 1);
        assert_eq!(precision_allowance(127).to_bits(), 1 << 62);
    }

    proptest! {
        /// Shifting all four timestamps by the same amount, across any era boundary, changes
        /// neither offset nor delay nor the order check.
        #[test]
        fn offset_and_delay_do_not_depend_on_the_era(
            t1 in any::<u64>(),
            out_ns in 0i64..1_000_000_000,
            turn_ns in 0i64..1_000_000,
            back_ns in 0i64..1_000_000_000,
            ahead_ns in -3_600_000_000_000i64..3_600_000_000_000,
            shift in any::<u64>(),
        ) {
            let t1 = NtpTimestamp::from_bits(t1);
            let ahead = NtpDuration::from_nanos(ahead_ns);
            let t2 = t1.add(NtpDuration::from_nanos(out_ns)).add(ahead);
            let t3 = t2.add(NtpDuration::from_nanos(turn_ns));
            let t4 = t3.add(NtpDuration::from_bits(-ahead.to_bits())).add(NtpDuration::from_nanos(back_ns));
            let e = exchange(t1, t2, t3, t4);
            let by = NtpDuration::from_bits(shift as i64);
            let moved = exchange(t1.add(by), t2.add(by), t3.add(by), t4.add(by));
            prop_assert_eq!(e.offset(), moved.offset());
            prop_assert_eq!(e.delay(), moved.delay());
            // The delay is the time on the wire, to a few units of 2^-32 s.
            let wire = NtpDuration::from_nanos(out_ns + back_ns).to_bits();
            prop_assert!((e.delay().to_bits() - wire).abs() <= 4, "{:?} {}", e.delay(), wire);
            // The offset is the server's lead plus half the path's asymmetry.
            let expected = ahead.to_bits() + (NtpDuration::from_nanos(out_ns).to_bits() - NtpDuration::from_nanos(back_ns).to_bits()) / 2;
            prop_assert!((e.offset().to_bits() - expected).abs() <= 4, "{:?} {}", e.offset(), expected);
        }
    }
}
