//! chrony's SOCK refclock protocol: a Unix datagram socket the daemon creates, to which a tool
//! (gpsd, a custom driver) sends 40-byte `struct sock_sample`s: the host time of the sample,
//! the reference's offset from it, whether it is a pulse (only the offset's fraction of a second
//! counts), the leap indicator, and the magic 0x534f434b ("SOCK").

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use stratum_proto::packet::LeapIndicator;
use stratum_proto::NtpTimestamp;

use crate::{seconds, TimeSample};

pub const SOCK_MAGIC: i32 = 0x534f_434b;
pub const SOCK_SAMPLE_LEN: usize = 40;

/// `struct sock_sample` (native endianness, as chrony reads it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SockSample {
    /// Host time of the sample: seconds, microseconds (a `struct timeval`).
    pub tv_sec: i64,
    pub tv_usec: i64,
    /// Reference minus host at that time, seconds.
    pub offset: f64,
    /// Non-zero: a pulse (only the fraction of a second of `offset` is meaningful).
    pub pulse: i32,
    /// 0 none, 1 insert, 2 delete.
    pub leap: i32,
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockReject {
    Length(usize),
    Magic(i32),
    BadTime,
}

impl SockSample {
    pub fn encode(&self) -> [u8; SOCK_SAMPLE_LEN] {
        let mut b = [0u8; SOCK_SAMPLE_LEN];
        b[0..8].copy_from_slice(&self.tv_sec.to_ne_bytes());
        b[8..16].copy_from_slice(&self.tv_usec.to_ne_bytes());
        b[16..24].copy_from_slice(&self.offset.to_ne_bytes());
        b[24..28].copy_from_slice(&self.pulse.to_ne_bytes());
        b[28..32].copy_from_slice(&self.leap.to_ne_bytes());
        // 32..36: padding
        b[36..40].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
        b
    }

    pub fn decode(datagram: &[u8]) -> Result<Self, SockReject> {
        let b: &[u8; SOCK_SAMPLE_LEN] = datagram.try_into().map_err(|_| SockReject::Length(datagram.len()))?;
        let i32_at = |i: usize| i32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let magic = i32_at(36);
        if magic != SOCK_MAGIC {
            return Err(SockReject::Magic(magic));
        }
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&b[0..8]);
        let tv_sec = i64::from_ne_bytes(eight);
        eight.copy_from_slice(&b[8..16]);
        let tv_usec = i64::from_ne_bytes(eight);
        eight.copy_from_slice(&b[16..24]);
        let offset = f64::from_ne_bytes(eight);
        if !(0..1_000_000).contains(&tv_usec) || !offset.is_finite() || offset.abs() > 1e9 {
            return Err(SockReject::BadTime);
        }
        Ok(Self { tv_sec, tv_usec, offset, pulse: i32_at(24), leap: i32_at(28) })
    }

    /// The host time of the sample.
    pub fn local(&self) -> NtpTimestamp {
        NtpTimestamp::from_unix(self.tv_sec, (self.tv_usec * 1000) as u32)
    }

    /// A pulse (`pulse` non-zero): the host time, nearest `tv`, at which the reference's second
    /// began, for [`PpsLock::pulse`](crate::pps::PpsLock::pulse). chrony's convention, which
    /// tools feeding its SOCK refclock follow: a pulse's `offset` is the host clock's lead over
    /// the reference within the second (chrony passes it as RCL_AddPulse's `second`, as the PPS
    /// driver passes the edge stamp's fraction), the opposite sign of a time sample's `offset`.
    /// So the reference reads `tv - offset` at `tv`, and a whole second `frac` earlier or later.
    pub fn pulse_edge(&self) -> NtpTimestamp {
        let local = self.local();
        let reference = local.add(seconds(-self.offset));
        let (_, nanos) = reference.to_unix(0);
        let fraction = f64::from(nanos) * 1e-9;
        // How far past its nearest whole second the reference is at `tv`.
        let past = if fraction < 0.5 { fraction } else { fraction - 1.0 };
        local.add(seconds(-past))
    }

    /// As a time sample (not for pulses: their offset names no second).
    pub fn to_time_sample(&self, dispersion: f64) -> TimeSample {
        let local = self.local();
        TimeSample {
            reference: local.add(seconds(self.offset)),
            local,
            leap: match self.leap {
                1 => LeapIndicator::InsertSecond,
                2 => LeapIndicator::DeleteSecond,
                _ => LeapIndicator::NoWarning,
            },
            dispersion,
            delay: 0.0,
        }
    }
}

/// The socket stratumd creates (a stale file at `path` is removed first).
#[derive(Debug)]
pub struct SockReceiver {
    socket: UnixDatagram,
}

impl SockReceiver {
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self { socket: UnixDatagram::bind(path)? })
    }

    /// Waits up to `timeout` for one datagram: None on a timeout.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Result<SockSample, SockReject>>> {
        self.socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 64];
        match self.socket.recv(&mut buf) {
            Ok(n) => Ok(Some(SockSample::decode(&buf[..n]))),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A SOCK client (tests, and any tool written against this crate).
#[derive(Debug)]
pub struct SockSender {
    socket: UnixDatagram,
}

impl SockSender {
    pub fn new() -> io::Result<Self> {
        Ok(Self { socket: UnixDatagram::unbound()? })
    }

    pub fn send(&self, path: &Path, sample: &SockSample) -> io::Result<()> {
        self.socket.send_to(&sample.encode(), path).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_bytes_magic_and_round_trip() {
        let s = SockSample { tv_sec: 1_773_144_000, tv_usec: 250_000, offset: -0.012_5, pulse: 0, leap: 1 };
        let b = s.encode();
        assert_eq!(b.len(), 40);
        assert_eq!(SockSample::decode(&b), Ok(s));
        assert_eq!(SockSample::decode(&b[..39]), Err(SockReject::Length(39)));
        let mut bad = b;
        bad[36] ^= 1;
        assert!(matches!(SockSample::decode(&bad), Err(SockReject::Magic(_))));
        let t = s.to_time_sample(1e-6);
        assert!((t.offset() + 0.012_5).abs() < 1e-9);
        assert_eq!(t.leap, LeapIndicator::InsertSecond);
    }

    /// chrony's pulse convention: the edge a pulse names, whichever way the tool stamps it.
    #[test]
    fn a_pulse_names_the_host_time_of_the_reference_second() {
        // Within 2 ns: the reference time goes through whole nanoseconds.
        let at = |s: &SockSample| s.pulse_edge().since(NtpTimestamp::from_unix(1_773_144_000, 0)).to_seconds_f64();
        // Stamped at the host's whole second, the host 37 µs ahead: the edge 37 µs after it.
        let top = SockSample { tv_sec: 1_773_144_000, tv_usec: 0, offset: 37e-6, pulse: 1, leap: 0 };
        assert!((at(&top) - 37e-6).abs() < 2e-9, "{}", at(&top));
        // Host 2 µs behind.
        let behind = SockSample { offset: -2e-6, ..top };
        assert!((at(&behind) + 2e-6).abs() < 2e-9, "{}", at(&behind));
        // Stamped at the edge itself, the offset its fraction (what chrony's PPS driver passes).
        let edge = SockSample { tv_usec: 123, offset: 123e-6, ..top };
        assert!((at(&edge) - 123e-6).abs() < 2e-9, "{}", at(&edge));
        // Stamped 0.3 s after the edge, the host 5 µs ahead: the edge, not tv's nearest second.
        let later = SockSample { tv_usec: 300_005, offset: 5e-6, ..top };
        assert!((at(&later) - 5e-6).abs() < 2e-9, "{}", at(&later));
    }

    #[test]
    fn a_sender_feeds_a_receiver() {
        let dir = std::env::temp_dir().join(format!("stratum-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("refclock.sock");
        let rx = SockReceiver::bind(&path).unwrap();
        let tx = SockSender::new().unwrap();
        let s = SockSample { tv_sec: 1_773_144_000, tv_usec: 1, offset: 0.5, pulse: 0, leap: 0 };
        tx.send(&path, &s).unwrap();
        assert_eq!(rx.recv(Duration::from_secs(1)).unwrap(), Some(Ok(s)));
        assert_eq!(rx.recv(Duration::from_millis(10)).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
