//! The Linux PPS API (RFC 2783 as `linux/pps.h` has it): GETCAP, SETPARAMS, FETCH with a timeout,
//! on `/dev/ppsN`. The ioctl numbers carry a pointer's size, as the kernel header declares them.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use stratum_proto::NtpTimestamp;

use super::{Edge, PpsInfo, PpsSource};

const PPS_API_VERS_1: i32 = 1;
const PPS_CAPTUREASSERT: i32 = 0x01;
const PPS_CAPTURECLEAR: i32 = 0x02;
const PPS_CANWAIT: i32 = 0x100;
const PPS_TSFMT_TSPEC: i32 = 0x1000;

const fn ioc(dir: u64, nr: u64) -> u64 {
    (dir << 30) | ((core::mem::size_of::<usize>() as u64) << 16) | ((b'p' as u64) << 8) | nr
}
const PPS_GETPARAMS: u64 = ioc(2, 0xa1);
const PPS_SETPARAMS: u64 = ioc(1, 0xa2);
const PPS_GETCAP: u64 = ioc(2, 0xa3);
const PPS_FETCH: u64 = ioc(3, 0xa4);

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PpsKtime {
    sec: i64,
    nsec: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PpsKinfo {
    assert_sequence: u32,
    clear_sequence: u32,
    assert_tu: PpsKtime,
    clear_tu: PpsKtime,
    current_mode: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PpsKparams {
    api_version: i32,
    mode: i32,
    assert_off_tu: PpsKtime,
    clear_off_tu: PpsKtime,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PpsFdata {
    info: PpsKinfo,
    timeout: PpsKtime,
}

/// `/dev/ppsN`, capturing one edge, fetched with a timeout (the device must support
/// PPS_CANWAIT, as pps-gpio, pps-ldisc and pps-ktimer do).
#[derive(Debug)]
pub struct LinuxPps {
    file: File,
}

fn ioctl<T>(file: &File, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `request` is one of the PPS ioctls, each reading or writing exactly one `T` (the
    // kernel's struct of the same layout) at `arg`, which is valid and exclusively borrowed.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl LinuxPps {
    /// Opens `path` and sets it to capture `edge` with nanosecond timestamps.
    pub fn open(path: &Path, edge: Edge) -> io::Result<Self> {
        let file = File::options().read(true).write(true).open(path)?;
        let mut caps: i32 = 0;
        ioctl(&file, PPS_GETCAP, &mut caps)?;
        let want = match edge {
            Edge::Assert => PPS_CAPTUREASSERT,
            Edge::Clear => PPS_CAPTURECLEAR,
        };
        if caps & want == 0 || caps & PPS_CANWAIT == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}: cannot capture the {edge:?} edge with a wait (caps {caps:#x})", path.display()),
            ));
        }
        let mut params = PpsKparams::default();
        ioctl(&file, PPS_GETPARAMS, &mut params)?;
        params.api_version = PPS_API_VERS_1;
        params.mode = want | PPS_TSFMT_TSPEC;
        ioctl(&file, PPS_SETPARAMS, &mut params)?;
        Ok(Self { file })
    }
}

fn to_ntp(t: PpsKtime) -> Option<NtpTimestamp> {
    (t.sec != 0 || t.nsec != 0).then(|| NtpTimestamp::from_unix(t.sec, t.nsec.clamp(0, 999_999_999) as u32))
}

impl PpsSource for LinuxPps {
    fn fetch(&mut self, timeout: Duration) -> io::Result<PpsInfo> {
        let mut data = PpsFdata {
            timeout: PpsKtime { sec: timeout.as_secs() as i64, nsec: timeout.subsec_nanos() as i32, flags: 0 },
            ..PpsFdata::default()
        };
        match ioctl(&self.file, PPS_FETCH, &mut data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) || e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let i = data.info;
        Ok(PpsInfo {
            assert_sequence: i.assert_sequence,
            assert_time: to_ntp(i.assert_tu),
            clear_sequence: i.clear_sequence,
            clear_time: to_ntp(i.clear_tu),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_and_layouts_are_the_kernels() {
        assert_eq!(PPS_FETCH, 0xc008_70a4);
        assert_eq!(PPS_GETCAP, 0x8008_70a3);
        assert_eq!(PPS_SETPARAMS, 0x4008_70a2);
        assert_eq!(PPS_GETPARAMS, 0x8008_70a1);
        assert_eq!(core::mem::size_of::<PpsKtime>(), 16);
        assert_eq!(core::mem::size_of::<PpsKinfo>(), 48);
        assert_eq!(core::mem::size_of::<PpsFdata>(), 64);
        assert_eq!(core::mem::size_of::<PpsKparams>(), 40);
    }

    /// Needs a PPS device: `STRATUM_PPS_DEVICE=/dev/pps0 cargo test -p stratum-refclock -- --ignored`
    /// (no test machine has one: no /dev/pps, no pps-ktimer or pps-ldisc module).
    #[test]
    #[ignore = "needs a /dev/ppsN device (STRATUM_PPS_DEVICE)"]
    fn a_real_pps_device_gives_pulses_a_second_apart() {
        let path = std::env::var("STRATUM_PPS_DEVICE").unwrap_or_else(|_| "/dev/pps0".into());
        let mut pps = LinuxPps::open(Path::new(&path), Edge::Assert).expect("open the PPS device");
        let mut tracker = super::super::EdgeTracker::new(Edge::Assert);
        let mut edges = Vec::new();
        while edges.len() < 3 {
            let info = pps.fetch(Duration::from_secs(3)).expect("fetch");
            if let Some(t) = tracker.next(&info) {
                edges.push(t);
            }
        }
        for w in edges.windows(2) {
            let d = w[1].since(w[0]).to_seconds_f64();
            assert!((d - 1.0).abs() < 0.01, "pulses {d} s apart");
        }
    }
}
