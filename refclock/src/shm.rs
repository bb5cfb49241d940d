//! gpsd's (and ntpd's) shared memory refclock: a SysV segment at key 0x4E545030 + unit holding
//! one `struct shmTime` (96 bytes on x86-64). The writer (gpsd) bumps `count`, writes the fields,
//! bumps `count` again and sets `valid`; a mode-1 reader uses the fields only when `count` is the
//! same before and after reading them, then clears `valid`. The nanosecond fields are used only
//! when they agree with the microsecond ones (an old writer leaves them 0 or stale).

use std::io;

use stratum_proto::packet::LeapIndicator;
use stratum_proto::NtpTimestamp;

use crate::TimeSample;

/// ntpd's SHM base key ("NTP0"); unit N is at `SHM_KEY_BASE + N`.
pub const SHM_KEY_BASE: i32 = 0x4E54_5030;

/// `struct shmTime` as ntpd, gpsd and chrony lay it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShmTime {
    pub mode: i32,
    pub count: i32,
    pub clock_sec: libc::time_t,
    pub clock_usec: i32,
    pub receive_sec: libc::time_t,
    pub receive_usec: i32,
    pub leap: i32,
    pub precision: i32,
    pub nsamples: i32,
    pub valid: i32,
    pub clock_nsec: u32,
    pub receive_nsec: u32,
    pub dummy: [i32; 8],
}

/// Why a segment's contents gave no sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmReject {
    /// `valid` is 0: nothing new since the last read.
    NotValid,
    /// Mode 1 and `count` changed while reading: the writer was in the middle of an update.
    Torn,
    /// A mode other than 0 or 1.
    BadMode(i32),
    /// Microseconds or nanoseconds out of range.
    BadTime,
}

/// The sample in a segment read as `snapshot` (copied field by field), with `count_after` the
/// count read after the copy. `precision_floor` is the least error bound, seconds.
pub fn decode(snapshot: &ShmTime, count_after: i32, precision_floor: f64) -> Result<TimeSample, ShmReject> {
    let t = snapshot;
    if t.mode != 0 && t.mode != 1 {
        return Err(ShmReject::BadMode(t.mode));
    }
    if t.valid == 0 {
        return Err(ShmReject::NotValid);
    }
    if t.mode == 1 && t.count != count_after {
        return Err(ShmReject::Torn);
    }
    if !(0..1_000_000).contains(&t.clock_usec) || !(0..1_000_000).contains(&t.receive_usec) {
        return Err(ShmReject::BadTime);
    }
    let nsec_agree = t.clock_nsec / 1000 == t.clock_usec as u32 && t.receive_nsec / 1000 == t.receive_usec as u32;
    let (clock_ns, receive_ns) = if nsec_agree {
        (t.clock_nsec, t.receive_nsec)
    } else {
        (t.clock_usec as u32 * 1000, t.receive_usec as u32 * 1000)
    };
    let leap = match t.leap {
        1 => LeapIndicator::InsertSecond,
        2 => LeapIndicator::DeleteSecond,
        3 => LeapIndicator::Unsynchronized,
        _ => LeapIndicator::NoWarning,
    };
    let precision = if (-30..=0).contains(&t.precision) { 2f64.powi(t.precision) } else { 1.0 };
    Ok(TimeSample {
        reference: NtpTimestamp::from_unix(t.clock_sec, clock_ns),
        local: NtpTimestamp::from_unix(t.receive_sec, receive_ns),
        leap,
        dispersion: precision.max(precision_floor),
        delay: 0.0,
    })
}

/// Fills `t` as gpsd does for a sample (mode 1; both microsecond and nanosecond fields).
pub fn encode(t: &mut ShmTime, reference: (i64, u32), local: (i64, u32), leap: i32, precision: i32) {
    t.mode = 1;
    t.clock_sec = reference.0 as libc::time_t;
    t.clock_usec = (reference.1 / 1000) as i32;
    t.clock_nsec = reference.1;
    t.receive_sec = local.0 as libc::time_t;
    t.receive_usec = (local.1 / 1000) as i32;
    t.receive_nsec = local.1;
    t.leap = leap;
    t.precision = precision;
    t.nsamples = 3;
}

/// An attached segment: [`read`](Self::read) as chrony's SHM driver does, [`write`](Self::write)
/// as gpsd does.
#[derive(Debug)]
pub struct ShmSegment {
    ptr: *mut ShmTime,
}

// SAFETY: the pointer is to a shared memory mapping that lives as long as the value; every access
// goes through volatile reads and writes, and the protocol (count, valid) is what makes
// concurrent access by other processes safe.
unsafe impl Send for ShmSegment {}

impl ShmSegment {
    /// Attaches unit `unit`'s segment, creating it (mode `perm`: chrony uses 0600 for units 0
    /// and 1, 0666 from 2) when `create`.
    pub fn attach(unit: u32, create: bool, perm: u32) -> io::Result<Self> {
        let key = SHM_KEY_BASE.wrapping_add(unit as i32);
        let flags = if create { libc::IPC_CREAT | perm as i32 } else { perm as i32 };
        // SAFETY: shmget takes plain integers.
        let id = unsafe { libc::shmget(key, core::mem::size_of::<ShmTime>(), flags) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: attaching a segment id we just got, at an address of the kernel's choosing.
        let ptr = unsafe { libc::shmat(id, core::ptr::null(), 0) };
        if ptr as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: ptr.cast() })
    }

    /// Reads a sample (mode 0 or 1) and clears `valid`, as chrony's SHM driver does.
    pub fn read(&self, precision_floor: f64) -> Result<TimeSample, ShmReject> {
        let p = self.ptr;
        // SAFETY: `p` points at a live mapping of at least size_of::<ShmTime>() bytes (shmget
        // asked for that size), aligned by the page; volatile because another process writes it.
        unsafe {
            let before = core::ptr::read_volatile(core::ptr::addr_of!((*p).count));
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            let mut t = core::ptr::read_volatile(p);
            t.count = before;
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            let after = core::ptr::read_volatile(core::ptr::addr_of!((*p).count));
            let result = decode(&t, after, precision_floor);
            if t.valid != 0 {
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).valid), 0);
            }
            result
        }
    }

    /// Writes a sample as gpsd does: valid = 0, count++, the fields, count++, valid = 1.
    pub fn write(&self, reference: (i64, u32), local: (i64, u32), leap: i32, precision: i32) {
        let p = self.ptr;
        // SAFETY: as in `read`; the count/valid protocol tells readers when the fields are whole.
        unsafe {
            let mut t = core::ptr::read_volatile(p);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).valid), 0);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).count), t.count.wrapping_add(1));
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            encode(&mut t, reference, local, leap, precision);
            t.count = t.count.wrapping_add(1);
            t.valid = 0;
            core::ptr::write_volatile(p, t);
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).count), t.count.wrapping_add(1));
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).valid), 1);
        }
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: detaching the address shmat gave; nothing uses it after this.
        unsafe {
            libc::shmdt(self.ptr.cast());
        }
    }
}

/// Removes unit `unit`'s segment (tests: leave no segment behind).
pub fn remove(unit: u32) -> io::Result<()> {
    // SAFETY: plain integers; IPC_RMID with a null buffer.
    unsafe {
        let id = libc::shmget(SHM_KEY_BASE.wrapping_add(unit as i32), 0, 0);
        if id < 0 || libc::shmctl(id, libc::IPC_RMID, core::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_96_bytes_with_the_fields_where_ntpd_has_them() {
        assert_eq!(core::mem::size_of::<ShmTime>(), 96);
        assert_eq!(core::mem::offset_of!(ShmTime, clock_sec), 8);
        assert_eq!(core::mem::offset_of!(ShmTime, receive_sec), 24);
        assert_eq!(core::mem::offset_of!(ShmTime, valid), 48);
        assert_eq!(core::mem::offset_of!(ShmTime, clock_nsec), 52);
    }

    fn sample() -> ShmTime {
        let mut t = ShmTime::default();
        encode(&mut t, (1_773_144_000, 123_456_789), (1_773_144_000, 400_000_001), 0, -20);
        t.valid = 1;
        t
    }

    #[test]
    fn mode_1_count_valid_and_the_nanosecond_rule() {
        let t = sample();
        let s = decode(&t, t.count, 0.0).unwrap();
        assert!((s.offset() - (0.123_456_789 - 0.400_000_001)).abs() < 1e-9, "{s:?}");
        assert_eq!(decode(&t, t.count + 1, 0.0), Err(ShmReject::Torn));
        assert_eq!(decode(&ShmTime { valid: 0, ..t }, t.count, 0.0), Err(ShmReject::NotValid));
        assert_eq!(decode(&ShmTime { mode: 7, ..t }, t.count, 0.0), Err(ShmReject::BadMode(7)));
        // Mode 0 ignores the count.
        assert!(decode(&ShmTime { mode: 0, ..t }, t.count + 5, 0.0).is_ok());
        // Nanoseconds that disagree with the microseconds (an old writer): microseconds used.
        let old = ShmTime { clock_nsec: 0, ..t };
        let s = decode(&old, t.count, 0.0).unwrap();
        assert!((s.offset() - (0.123_456 - 0.400_000)).abs() < 1e-9, "{s:?}");
        assert_eq!(decode(&ShmTime { clock_usec: 1_000_000, ..t }, t.count, 0.0), Err(ShmReject::BadTime));
        assert_eq!(decode(&ShmTime { leap: 1, ..t }, t.count, 0.0).unwrap().leap, LeapIndicator::InsertSecond);
    }

    #[test]
    fn a_segment_written_then_read_once() {
        // A unit no gpsd or chrony uses (the test's own), removed after.
        let unit = 0x5000 + (std::process::id() % 0x1000);
        let writer = ShmSegment::attach(unit, true, 0o600).unwrap();
        let reader = ShmSegment::attach(unit, false, 0o600).unwrap();
        assert_eq!(reader.read(0.0), Err(ShmReject::NotValid));
        writer.write((1_773_144_000, 5_000), (1_773_144_000, 6_000), 0, -20);
        let s = reader.read(0.0).unwrap();
        assert!((s.offset() + 1e-6).abs() < 1e-9, "{s:?}");
        assert_eq!(reader.read(0.0), Err(ShmReject::NotValid), "valid is cleared");
        drop((writer, reader));
        remove(unit).unwrap();
    }
}
