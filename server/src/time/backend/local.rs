//! `local`: serve the host clock at a fixed stratum, like chrony's `local stratum N`.
//!
//! Nothing vouches for the host clock here; the operator asserts it. The start-up summary says so.

use stratum_proto::{LeapIndicator, NtpShort, NtpTimestamp, ServerSnapshot};

use super::ClockBackend;
use crate::config::ServedIdentity;

#[derive(Debug)]
pub struct LocalClock {
    identity: ServedIdentity,
}

impl LocalClock {
    pub fn new(identity: ServedIdentity) -> Self {
        Self { identity }
    }
}

impl ClockBackend for LocalClock {
    fn describe(&self) -> String {
        format!("local: serving the host clock as stratum {}, not disciplined by any source", self.identity.stratum)
    }

    fn snapshot(&mut self, now: NtpTimestamp, precision: i8) -> std::io::Result<ServerSnapshot> {
        Ok(ServerSnapshot {
            leap: LeapIndicator::NoWarning,
            stratum: self.identity.stratum,
            ref_id: self.identity.ref_id,
            reference_time: now,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            dispersion_base: now,
            // The kernel's TAI - UTC (0 until someone sets it): converts AF_XDP's CLOCK_TAI
            // receive stamps to the UTC this source serves.
            tai_offset: crate::time::kernel::read_kernel_state().map_or(0, |k| k.tai_offset),
            ..ServerSnapshot::unsynchronized(precision)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::RefId;

    #[test]
    fn local_is_synchronised_at_the_configured_stratum() {
        let now = NtpTimestamp::from_parts(0xEC00_0000, 0);
        let s = LocalClock::new(ServedIdentity { stratum: 3, ref_id: RefId(*b"LOCL") }).snapshot(now, -24).unwrap();
        assert!(s.is_synchronized());
        assert_eq!((s.stratum, s.ref_id, s.reference_time, s.precision), (3, RefId(*b"LOCL"), now, -24));
    }
}
