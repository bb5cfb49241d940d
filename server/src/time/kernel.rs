//! The kernel's clock discipline interface (adjtimex): what the kernel says about the host clock.
//! Read-only here (modes = 0); the pure interpretation of its answer is kept apart from the
//! system call, so it is tested without one.

use std::io;

use stratum_proto::LeapIndicator;

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

pub(crate) fn interpret(
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

#[cfg(test)]
mod tests {
    use super::*;

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
