//! `external`: another daemon (chrony, ptp4l + phc2sys) disciplines the host clock; we serve it
//! and read the kernel's view of its quality (see [`crate::time::kernel`]).
//!
//! Honesty rules: an unsynchronised kernel (STA_UNSYNC, or TIME_ERROR) means LI=3 and stratum 16;
//! root dispersion is the kernel's maximum error, growing at the kernel's own 500 ppm between reads;
//! leap flags come from the kernel's STA_INS / STA_DEL.

use std::io;

use stratum_proto::time::ppm_to_rate;
use stratum_proto::{NtpShort, NtpTimestamp, ServerSnapshot};

use super::ClockBackend;
use crate::config::ServedIdentity;
use crate::time::kernel::{read_kernel_state, KernelClockState};

/// The kernel grows `maxerror` by 500 us each second (MAXFREQ).
const KERNEL_MAXERROR_GROWTH_PPM: f64 = 500.0;

#[derive(Debug)]
pub struct ExternalClock {
    identity: ServedIdentity,
}

impl ExternalClock {
    pub fn new(identity: ServedIdentity) -> Self {
        Self { identity }
    }

    fn snapshot_for(&self, k: KernelClockState, now: NtpTimestamp, precision: i8) -> ServerSnapshot {
        if !k.synchronized {
            return ServerSnapshot { tai_offset: k.tai_offset, ..ServerSnapshot::unsynchronized(precision) };
        }
        ServerSnapshot {
            leap: k.leap,
            stratum: self.identity.stratum,
            precision,
            ref_id: self.identity.ref_id,
            reference_time: now,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::from_micros(k.max_error_us),
            dispersion_base: now,
            dispersion_rate: ppm_to_rate(KERNEL_MAXERROR_GROWTH_PPM) as u32,
            tai_offset: k.tai_offset,
            correction: Default::default(),
        }
    }
}

impl ClockBackend for ExternalClock {
    fn describe(&self) -> String {
        format!(
            "external: serving the host clock as stratum {} while the kernel reports it synchronised",
            self.identity.stratum
        )
    }

    fn snapshot(&mut self, now: NtpTimestamp, precision: i8) -> io::Result<ServerSnapshot> {
        Ok(self.snapshot_for(read_kernel_state()?, now, precision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::kernel::interpret;
    use stratum_proto::{LeapIndicator, RefId};

    const NOW: NtpTimestamp = NtpTimestamp::from_parts(0xEC00_0000, 0);

    #[test]
    fn unsynchronised_kernel_serves_li3_stratum_16() {
        let k = interpret(libc::TIME_ERROR, libc::STA_UNSYNC, 16_000_000, 0);
        let s = ExternalClock::new(ServedIdentity { stratum: 2, ref_id: RefId(*b"XTRN") }).snapshot_for(k, NOW, -24);
        assert_eq!((s.leap, s.stratum), (LeapIndicator::Unsynchronized, 16));
        // TIME_ERROR alone (e.g. after a PPS fault) also means unsynchronised.
        assert!(!interpret(libc::TIME_ERROR, 0, 0, 0).synchronized);
    }

    #[test]
    fn synchronised_kernel_serves_configured_stratum_and_maxerror() {
        let k = interpret(libc::TIME_OK, libc::STA_PLL, 1500, 37);
        let s = ExternalClock::new(ServedIdentity { stratum: 2, ref_id: RefId(*b"XTRN") }).snapshot_for(k, NOW, -24);
        assert_eq!((s.leap, s.stratum, s.tai_offset), (LeapIndicator::NoWarning, 2, 37));
        assert!((s.root_dispersion.to_seconds_f64() - 0.0015).abs() < 1e-4);
        let later = s.root_dispersion_at(NtpTimestamp::from_parts(0xEC00_0000 + 10, 0));
        assert!((later.to_seconds_f64() - 0.0065).abs() < 1e-4, "{later:?}");
    }
}
