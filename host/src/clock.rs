//! Reading the host clock as NTP timestamps, and measuring its precision.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use stratum_proto::NtpTimestamp;

/// CLOCK_REALTIME now (a vDSO call, no syscall).
pub fn now() -> NtpTimestamp {
    from_system_time(SystemTime::now())
}

/// CLOCK_REALTIME now, or None when clock_gettime fails (std's `SystemTime::now` panics then):
/// what the request path reads, so that a failing clock costs a counted drop, never the process.
pub fn try_now() -> Option<NtpTimestamp> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a live timespec for the kernel (or the vDSO) to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return None;
    }
    Some(from_timespec(ts.tv_sec, ts.tv_nsec))
}

/// A monotonic clock in NTP form (seconds since this process first asked, plus one era-safe base):
/// for the rate limiter, whose buckets must not jump when the real-time clock is stepped.
pub fn monotonic() -> NtpTimestamp {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    NtpTimestamp::from_parts(1 << 31, 0).add(stratum_proto::NtpDuration::from_nanos(elapsed.as_nanos() as i64))
}

pub fn from_system_time(t: SystemTime) -> NtpTimestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            NtpTimestamp::from_unix(secs, nanos)
        }
    }
}

pub fn from_timespec(secs: i64, nanos: i64) -> NtpTimestamp {
    NtpTimestamp::from_unix(secs, nanos.clamp(0, 999_999_999) as u32)
}

/// The clock's precision as log2 seconds: the smallest step between two distinct readings (as
/// ntpd and chrony measure it), so that the bits we randomise are the ones we cannot vouch for.
pub fn measure_precision() -> i8 {
    let mut best = u64::MAX;
    for _ in 0..64 {
        let a = SystemTime::now();
        let mut b = SystemTime::now();
        while b == a {
            b = SystemTime::now();
        }
        if let Ok(step) = b.duration_since(a) {
            best = best.min(step.as_nanos() as u64);
        }
    }
    precision_from_nanos(best)
}

fn precision_from_nanos(nanos: u64) -> i8 {
    let seconds = nanos.max(1) as f64 * 1e-9;
    (seconds.log2().ceil() as i32).clamp(-30, -1) as i8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn precision_of_common_resolutions() {
        assert_eq!(precision_from_nanos(1), -29);
        assert_eq!(precision_from_nanos(30), -24);
        assert_eq!(precision_from_nanos(29), -25);
        assert_eq!(precision_from_nanos(1000), -19);
        assert_eq!(precision_from_nanos(1_000_000), -9);
        let measured = measure_precision();
        assert!((-30..=-10).contains(&measured), "{measured}");
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic();
        assert!(b.since(a).to_nanos() >= 5_000_000);
    }

    #[test]
    fn system_time_before_1970_converts() {
        let t = from_system_time(UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(t.to_unix(0), (-2, 500_000_000));
        assert_eq!(from_system_time(UNIX_EPOCH + Duration::from_secs(5)).to_unix(0), (5, 0));
    }
}
