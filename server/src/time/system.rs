//! `discipline = "system"`: stratumd steers CLOCK_REALTIME itself with clock_adjtime, as the sync
//! engine asks ([`stratum_proto::sync::HostAdjustment`]), and keeps the kernel's view of the
//! clock right (STA_UNSYNC, maxerror, esterror, STA_INS/STA_DEL, the TAI offset) so that other
//! readers (chronyc, ntptime, adjtimex, another stratumd's `external` source) see it synchronised.
//!
//! - **Frequency** with ADJ_FREQUENCY, relative to the frequency the kernel had when stratumd
//!   started, in the kernel's 2^-16 ppm units (at most ±500 ppm).
//! - **Slews as frequency**: the engine's correction is a line whose rate is the frequency plus
//!   the slew's rate until the slew ends, and the kernel carries that rate; the kernel PLL is off
//!   (STA_PLL clear) and its pending offset zeroed, as chronyd does. Chosen over ADJ_OFFSET in PLL
//!   mode (the kernel's own exponential, time-constant-driven slew, which the engine's model could
//!   not follow exactly) and over ADJ_OFFSET_SINGLESHOT (a fixed 500 ppm slew beside the
//!   frequency, whose end the engine could not know to the microsecond): a line applied by its
//!   rate is exact, and when it was applied the engine is told, so a late change costs nothing.
//! - **Steps** with ADJ_SETOFFSET (in the same call as the frequency), only when the served clock
//!   steps, which the engine decides (`step-threshold`, `max-steps`, never before the build date),
//!   or at a leap second with `leap-mode = "step"`.
//!
//! Nothing is written to the kernel before the first adjustment: until stratumd has a clock
//! update to apply it only reads. The kernel sits behind [`KernelClock`] so that all of this is
//! tested against a fake one; the real [`LinuxKernel`] is tested with no-op calls only.

use std::io;
use std::time::{Duration, Instant};

use stratum_proto::sync::HostAdjustment;
use stratum_proto::LeapIndicator;

/// The largest frequency the kernel takes: 500 ppm, in its units (ppm × 2^16).
const MAX_KERNEL_FREQ: libc::c_long = 500 << 16;
/// The kernel's maxerror at which it gives up on the clock (NTP_PHASE_LIMIT, 16 s), µs.
const MAX_ERROR_US: i64 = 16_000_000;
/// How often the kernel's error estimates are written when nothing else changed (the kernel
/// grows maxerror by 500 µs a second on its own in between).
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// The kernel's clock_adjtime on CLOCK_REALTIME.
pub trait KernelClock: Send {
    /// One call: `tx.modes` says what to set; the kernel's state comes back in `tx`. Returns the
    /// clock state (TIME_OK, TIME_INS, ...).
    fn adjtime(&mut self, tx: &mut libc::timex) -> io::Result<libc::c_int>;
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct LinuxKernel;

impl KernelClock for LinuxKernel {
    fn adjtime(&mut self, tx: &mut libc::timex) -> io::Result<libc::c_int> {
        // SAFETY: `tx` is a valid, exclusively borrowed timex for the duration of the call.
        let state = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, tx) };
        if state < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(state)
    }
}

impl KernelClock for Box<dyn KernelClock> {
    fn adjtime(&mut self, tx: &mut libc::timex) -> io::Result<libc::c_int> {
        (**self).adjtime(tx)
    }
}

/// What the kernel should say about the clock: from the served snapshot and the tracking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelStatus {
    pub synchronized: bool,
    /// The served leap indicator (written as STA_INS/STA_DEL only with `leap-mode = "kernel"`).
    pub leap: LeapIndicator,
    /// Root distance (root delay / 2 + root dispersion), seconds: the kernel's maxerror.
    pub max_error: f64,
    /// The estimated offset error, seconds: the kernel's esterror.
    pub est_error: f64,
    /// TAI − UTC (0: unknown, left alone).
    pub tai_offset: i32,
}

/// The system discipline's hold on the kernel clock.
#[derive(Debug)]
pub struct SystemClock<K> {
    kernel: K,
    /// The kernel's frequency when stratumd started (ppm × 2^16): the engine's frequencies are
    /// relative to it.
    base_freq: libc::c_long,
    /// Whether the kernel's leap bits follow the served leap indicator.
    kernel_leaps: bool,
    taken_over: bool,
    /// The status bits last written and when.
    written: Option<(libc::c_int, Instant)>,
}

fn timex() -> libc::timex {
    // SAFETY: timex is plain old data; all-zeroes is valid and means modes = 0 (read only).
    unsafe { std::mem::zeroed() }
}

impl<K: KernelClock> SystemClock<K> {
    /// Reads the kernel's frequency (modes = 0: nothing is written).
    pub fn new(mut kernel: K, kernel_leaps: bool) -> io::Result<Self> {
        let mut tx = timex();
        kernel.adjtime(&mut tx)?;
        Ok(Self { kernel, base_freq: tx.freq, kernel_leaps, taken_over: false, written: None })
    }

    /// The kernel's frequency when stratumd started, ppm.
    pub fn base_frequency_ppm(&self) -> f64 {
        self.base_freq as f64 / 65_536.0
    }

    /// Before the first adjustment: the kernel PLL's pending offset zeroed (STA_PLL on with an
    /// offset of 0, as chronyd does), then the PLL and FLL off, the clock marked unsynchronised
    /// until the status says otherwise, and any adjtime() slew in progress cancelled.
    fn take_over(&mut self) -> io::Result<()> {
        let mut tx = timex();
        self.kernel.adjtime(&mut tx)?;
        let status = tx.status;
        let mut tx = timex();
        tx.modes = libc::ADJ_OFFSET | libc::ADJ_STATUS;
        tx.status = status | libc::STA_PLL;
        tx.offset = 0;
        self.kernel.adjtime(&mut tx)?;
        let mut tx = timex();
        tx.modes = libc::ADJ_STATUS;
        tx.status = (status & !(libc::STA_PLL | libc::STA_FLL | libc::STA_INS | libc::STA_DEL)) | libc::STA_UNSYNC;
        self.kernel.adjtime(&mut tx)?;
        let mut tx = timex();
        tx.modes = libc::ADJ_OFFSET_SINGLESHOT;
        tx.offset = 0;
        self.kernel.adjtime(&mut tx)?;
        self.taken_over = true;
        Ok(())
    }

    /// Applies the engine's adjustment in one clock_adjtime: the step (ADJ_SETOFFSET, ns) if any
    /// and the frequency. The caller then tells the engine, with the clock read after.
    pub fn apply(&mut self, adjustment: &HostAdjustment) -> io::Result<()> {
        if !self.taken_over {
            self.take_over()?;
        }
        let mut tx = timex();
        tx.modes = libc::ADJ_FREQUENCY;
        let freq = self.base_freq + (adjustment.frequency * 1e6 * 65_536.0).round() as libc::c_long;
        tx.freq = freq.clamp(-MAX_KERNEL_FREQ, MAX_KERNEL_FREQ);
        if adjustment.step != 0.0 {
            // ADJ_SETOFFSET with ADJ_NANO: seconds and nanoseconds, the latter in 0..1e9.
            let whole = adjustment.step.floor();
            let mut nanos = ((adjustment.step - whole) * 1e9).round() as i64;
            let mut seconds = whole as i64;
            if nanos >= 1_000_000_000 {
                seconds += 1;
                nanos -= 1_000_000_000;
            }
            tx.modes |= libc::ADJ_SETOFFSET | libc::ADJ_NANO;
            tx.time.tv_sec = seconds as libc::time_t;
            tx.time.tv_usec = nanos as libc::suseconds_t;
        }
        self.kernel.adjtime(&mut tx)?;
        Ok(())
    }

    /// Writes the kernel's status when it changed, and the error estimates at most once a
    /// second otherwise. Nothing before the first adjustment (the clock is not stratumd's yet).
    pub fn update_status(&mut self, status: &KernelStatus, now: Instant) -> io::Result<()> {
        if !self.taken_over {
            return Ok(());
        }
        let mut bits = if status.synchronized { 0 } else { libc::STA_UNSYNC };
        if self.kernel_leaps && status.synchronized {
            bits |= match status.leap {
                LeapIndicator::InsertSecond => libc::STA_INS,
                LeapIndicator::DeleteSecond => libc::STA_DEL,
                LeapIndicator::NoWarning | LeapIndicator::Unsynchronized => 0,
            };
        }
        if self.written.is_some_and(|(b, at)| b == bits && now.duration_since(at) < STATUS_REFRESH) {
            return Ok(());
        }
        let mut tx = timex();
        self.kernel.adjtime(&mut tx)?;
        let keep = tx.status & !(libc::STA_UNSYNC | libc::STA_INS | libc::STA_DEL | libc::STA_PLL | libc::STA_FLL);
        let current_tai = tx.tai;
        let mut tx = timex();
        tx.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        tx.status = keep | bits;
        let micros = |s: f64| ((s * 1e6).round() as i64).clamp(0, MAX_ERROR_US) as libc::c_long;
        tx.maxerror = if status.synchronized { micros(status.max_error) } else { MAX_ERROR_US as libc::c_long };
        tx.esterror = if status.synchronized { micros(status.est_error) } else { MAX_ERROR_US as libc::c_long };
        if status.tai_offset > 0 && status.tai_offset != current_tai {
            tx.modes |= libc::ADJ_TAI;
            tx.constant = status.tai_offset as libc::c_long;
        }
        self.kernel.adjtime(&mut tx)?;
        self.written = Some((bits, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A kernel in memory: what each call asked, and the state a real one would keep.
    #[derive(Clone, Default)]
    struct FakeKernel {
        calls: Arc<Mutex<Vec<libc::timex>>>,
        state: Arc<Mutex<(libc::c_long, libc::c_int, libc::c_int)>>, // freq, status, tai
        refuse: bool,
    }

    impl FakeKernel {
        fn with(freq: libc::c_long, status: libc::c_int) -> Self {
            let k = Self::default();
            *k.state.lock().unwrap() = (freq, status, 0);
            k
        }

        fn calls(&self) -> Vec<libc::timex> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl KernelClock for FakeKernel {
        fn adjtime(&mut self, tx: &mut libc::timex) -> io::Result<libc::c_int> {
            if self.refuse && tx.modes != 0 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.calls.lock().unwrap().push(*tx);
            let mut s = self.state.lock().unwrap();
            if tx.modes & libc::ADJ_FREQUENCY != 0 {
                s.0 = tx.freq;
            }
            if tx.modes & libc::ADJ_STATUS != 0 {
                s.1 = tx.status;
            }
            if tx.modes & libc::ADJ_TAI != 0 && tx.modes != libc::ADJ_OFFSET_SINGLESHOT {
                s.2 = tx.constant as libc::c_int;
            }
            tx.freq = s.0;
            tx.status = s.1;
            tx.tai = s.2;
            Ok(libc::TIME_OK)
        }
    }

    fn synced(leap: LeapIndicator) -> KernelStatus {
        KernelStatus { synchronized: true, leap, max_error: 0.0015, est_error: 20e-6, tai_offset: 37 }
    }

    #[test]
    fn nothing_is_written_before_the_first_adjustment() {
        let kernel = FakeKernel::with(12 << 16, libc::STA_UNSYNC);
        let mut clock = SystemClock::new(kernel.clone(), true).unwrap();
        clock.update_status(&synced(LeapIndicator::NoWarning), Instant::now()).unwrap();
        let calls = kernel.calls();
        assert!(
            calls.iter().all(|c| c.modes == 0),
            "only reads: {:?}",
            calls.iter().map(|c| c.modes).collect::<Vec<_>>()
        );
        assert_eq!(clock.base_frequency_ppm(), 12.0);
    }

    #[test]
    fn the_first_adjustment_takes_the_clock_over_then_sets_the_frequency_against_the_start() {
        let kernel = FakeKernel::with(12 << 16, libc::STA_PLL | libc::STA_INS);
        let mut clock = SystemClock::new(kernel.clone(), true).unwrap();
        kernel.calls();
        clock.apply(&HostAdjustment { step: 0.0, frequency: -25e-6 }).unwrap();
        let calls = kernel.calls();
        let modes: Vec<u32> = calls.iter().map(|c| c.modes).collect();
        assert_eq!(
            modes,
            [
                0,
                libc::ADJ_OFFSET | libc::ADJ_STATUS,
                libc::ADJ_STATUS,
                libc::ADJ_OFFSET_SINGLESHOT,
                libc::ADJ_FREQUENCY
            ]
        );
        // The PLL's offset zeroed with the PLL on, then the PLL off and the clock unsynchronised.
        assert_eq!((calls[1].offset, calls[1].status & libc::STA_PLL), (0, libc::STA_PLL));
        assert_eq!(calls[2].status & (libc::STA_PLL | libc::STA_INS | libc::STA_UNSYNC), libc::STA_UNSYNC);
        assert_eq!(calls[3].offset, 0);
        // 12 ppm at start, the engine asks -25 ppm against it.
        assert_eq!(calls[4].freq, -13 << 16);
        // Later adjustments: one call each.
        clock.apply(&HostAdjustment { step: 0.0, frequency: 600e-6 }).unwrap();
        let calls = kernel.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].freq, 500 << 16, "clamped to what the kernel takes");
    }

    #[test]
    fn steps_go_with_the_frequency_in_nanoseconds() {
        let kernel = FakeKernel::with(0, 0);
        let mut clock = SystemClock::new(kernel.clone(), false).unwrap();
        clock.apply(&HostAdjustment { step: 0.5, frequency: 1e-6 }).unwrap();
        let last = *kernel.calls().last().unwrap();
        assert_eq!(last.modes, libc::ADJ_FREQUENCY | libc::ADJ_SETOFFSET | libc::ADJ_NANO);
        assert_eq!((last.time.tv_sec, last.time.tv_usec), (0, 500_000_000));
        assert_eq!(last.freq, 65_536);
        clock.apply(&HostAdjustment { step: -0.25, frequency: 0.0 }).unwrap();
        let last = *kernel.calls().last().unwrap();
        assert_eq!((last.time.tv_sec, last.time.tv_usec), (-1, 750_000_000));
        clock.apply(&HostAdjustment { step: -2.000_000_000_1, frequency: 0.0 }).unwrap();
        let last = *kernel.calls().last().unwrap();
        assert_eq!((last.time.tv_sec, last.time.tv_usec), (-2, 0));
    }

    #[test]
    fn the_status_follows_the_served_state_and_the_leap_bits_only_in_kernel_mode() {
        let kernel = FakeKernel::with(0, 0);
        let mut clock = SystemClock::new(kernel.clone(), true).unwrap();
        clock.apply(&HostAdjustment { step: 0.0, frequency: 0.0 }).unwrap();
        kernel.calls();
        let t0 = Instant::now();
        clock.update_status(&synced(LeapIndicator::NoWarning), t0).unwrap();
        let w = *kernel.calls().last().unwrap();
        assert_eq!(w.modes, libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR | libc::ADJ_TAI);
        assert_eq!(w.status & (libc::STA_UNSYNC | libc::STA_INS | libc::STA_DEL), 0);
        assert_eq!((w.maxerror, w.esterror, w.constant), (1500, 20, 37));
        // Nothing new within a second: no call; the TAI offset once set is not written again.
        clock.update_status(&synced(LeapIndicator::NoWarning), t0 + Duration::from_millis(200)).unwrap();
        assert!(kernel.calls().is_empty());
        clock.update_status(&synced(LeapIndicator::NoWarning), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(kernel.calls().last().unwrap().modes & libc::ADJ_TAI, 0);
        // A leap to insert: STA_INS at once; then unsynchronised: STA_UNSYNC, errors at 16 s.
        clock.update_status(&synced(LeapIndicator::InsertSecond), t0 + Duration::from_millis(2100)).unwrap();
        assert_eq!(kernel.calls().last().unwrap().status & libc::STA_INS, libc::STA_INS);
        let lost = KernelStatus {
            synchronized: false,
            leap: LeapIndicator::Unsynchronized,
            ..synced(LeapIndicator::NoWarning)
        };
        clock.update_status(&lost, t0 + Duration::from_millis(2200)).unwrap();
        let w = *kernel.calls().last().unwrap();
        assert_eq!(w.status & (libc::STA_UNSYNC | libc::STA_INS), libc::STA_UNSYNC);
        assert_eq!(w.maxerror, 16_000_000);
        // leap-mode = "step" or "smear": stratumd takes the leap itself, the kernel must not.
        let kernel = FakeKernel::with(0, 0);
        let mut clock = SystemClock::new(kernel.clone(), false).unwrap();
        clock.apply(&HostAdjustment { step: 0.0, frequency: 0.0 }).unwrap();
        clock.update_status(&synced(LeapIndicator::InsertSecond), t0).unwrap();
        assert_eq!(kernel.calls().last().unwrap().status & (libc::STA_INS | libc::STA_DEL), 0);
    }

    #[test]
    fn a_kernel_that_refuses_is_an_error_and_nothing_is_taken_over() {
        let kernel = FakeKernel { refuse: true, ..FakeKernel::with(0, 0) };
        let mut clock = SystemClock::new(kernel, true).unwrap();
        let e = clock.apply(&HostAdjustment { step: 0.0, frequency: 1e-6 }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(!clock.taken_over);
    }

    /// The real clock_adjtime, with no-op calls only: this test must never step, slew or change
    /// the frequency of the machine it runs on. It reads the state (modes = 0), then writes back
    /// the very frequency it read (ADJ_FREQUENCY alone: the PLL, the offset, the status and the
    /// clock's time are untouched). Without CAP_SYS_TIME the write is refused, which is fine.
    #[test]
    fn the_real_kernel_answers_reads_and_a_no_op_frequency_write() {
        let mut kernel = LinuxKernel;
        let mut tx = timex();
        kernel.adjtime(&mut tx).expect("clock_adjtime(modes = 0) needs no privilege");
        let freq = tx.freq;
        let mut same = timex();
        same.modes = libc::ADJ_FREQUENCY;
        same.freq = freq;
        match kernel.adjtime(&mut same) {
            // (The kernel keeps the frequency finer than 2^-16 ppm: read back, one unit at most.)
            Ok(_) => assert!((same.freq - freq).abs() <= 1, "{} then {}", freq, same.freq),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
        // SystemClock::new only reads.
        let clock = SystemClock::new(LinuxKernel, true).unwrap();
        assert!((clock.base_frequency_ppm() * 65_536.0 - freq as f64).abs() < 1.0);
    }
}
