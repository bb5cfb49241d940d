//! `external`: another daemon (chrony, ptp4l + phc2sys) disciplines the host clock; we serve it
//! and read the kernel's view of its quality with `adjtimex` (read-only, modes = 0).
//!
//! Honesty rules: an unsynchronised kernel (STA_UNSYNC, or TIME_ERROR) means LI=3 and stratum 16;
//! root dispersion is the kernel's maximum error, growing at the kernel's own 500 ppm between reads;
//! leap flags come from the kernel's STA_INS / STA_DEL.

use std::io;

use stratum_proto::time::ppm_to_rate;
use stratum_proto::{LeapIndicator, NtpShort, NtpTimestamp, RefId, ServerSnapshot};

use super::ClockSource;

/// The kernel grows `maxerror` by 500 us each second (MAXFREQ).
const KERNEL_MAXERROR_GROWTH_PPM: f64 = 500.0;

/// What the kernel says about the clock, as far as serving time is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClockState {
    pub synchronized: bool,
    pub leap: LeapIndicator,
    pub max_error_us: u64,
    pub tai_offset: i32,
}

/// Reads the kernel's clock state without changing anything.
pub fn read_kernel_state() -> io::Result<KernelClockState> {
    // SAFETY: timex is plain old data; all-zeroes is valid and means modes = 0 (read only).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(interpret(state, tx.status, tx.maxerror, tx.tai))
}

fn interpret(
    state: libc::c_int,
    status: libc::c_int,
    max_error_us: libc::c_long,
    tai: libc::c_int,
) -> KernelClockState {
    let synchronized = state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0;
    let leap = if !synchronized {
        LeapIndicator::Unsynchronized
    } else if status & libc::STA_INS != 0 {
        LeapIndicator::InsertSecond
    } else if status & libc::STA_DEL != 0 {
        LeapIndicator::DeleteSecond
    } else {
        LeapIndicator::NoWarning
    };
    KernelClockState { synchronized, leap, max_error_us: max_error_us.max(0) as u64, tai_offset: tai }
}

#[derive(Debug)]
pub struct ExternalClock {
    stratum: u8,
    ref_id: RefId,
}

impl ExternalClock {
    pub fn new(stratum: u8, ref_id: RefId) -> Self {
        Self { stratum, ref_id }
    }

    fn snapshot_for(&self, k: KernelClockState, now: NtpTimestamp, precision: i8) -> ServerSnapshot {
        if !k.synchronized {
            return ServerSnapshot { tai_offset: k.tai_offset, ..ServerSnapshot::unsynchronized(precision) };
        }
        ServerSnapshot {
            leap: k.leap,
            stratum: self.stratum,
            precision,
            ref_id: self.ref_id,
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

impl ClockSource for ExternalClock {
    fn describe(&self) -> String {
        format!("external: serving the host clock as stratum {} while the kernel reports it synchronised", self.stratum)
    }

    fn snapshot(&mut self, now: NtpTimestamp, precision: i8) -> io::Result<ServerSnapshot> {
        Ok(self.snapshot_for(read_kernel_state()?, now, precision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: NtpTimestamp = NtpTimestamp::from_parts(0xEC00_0000, 0);

    #[test]
    fn unsynchronised_kernel_serves_li3_stratum_16() {
        let k = interpret(libc::TIME_ERROR, libc::STA_UNSYNC, 16_000_000, 0);
        let s = ExternalClock::new(2, RefId(*b"XTRN")).snapshot_for(k, NOW, -24);
        assert_eq!((s.leap, s.stratum), (LeapIndicator::Unsynchronized, 16));
        // TIME_ERROR alone (e.g. after a PPS fault) also means unsynchronised.
        assert!(!interpret(libc::TIME_ERROR, 0, 0, 0).synchronized);
    }

    #[test]
    fn synchronised_kernel_serves_configured_stratum_and_maxerror() {
        let k = interpret(libc::TIME_OK, libc::STA_PLL, 1500, 37);
        let s = ExternalClock::new(2, RefId(*b"XTRN")).snapshot_for(k, NOW, -24);
        assert_eq!((s.leap, s.stratum, s.tai_offset), (LeapIndicator::NoWarning, 2, 37));
        assert!((s.root_dispersion.to_seconds_f64() - 0.0015).abs() < 1e-4);
        let later = s.root_dispersion_at(NtpTimestamp::from_parts(0xEC00_0000 + 10, 0));
        assert!((later.to_seconds_f64() - 0.0065).abs() < 1e-4, "{later:?}");
    }

    #[test]
    fn kernel_leap_flags_become_leap_indicator() {
        assert_eq!(interpret(libc::TIME_INS, libc::STA_INS, 0, 37).leap, LeapIndicator::InsertSecond);
        assert_eq!(interpret(libc::TIME_DEL, libc::STA_DEL, 0, 37).leap, LeapIndicator::DeleteSecond);
    }

    #[test]
    fn reading_the_kernel_works_here() {
        read_kernel_state().expect("adjtimex(modes=0) needs no privilege");
    }
}
