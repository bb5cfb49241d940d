//! `[[refclock]]` driver threads (issue 18): one per reference clock, each doing its driver's
//! blocking IO (gpsd's SHM segment polled four times a second as chrony reads it, chrony's SOCK
//! socket, an NMEA serial port, a PPS device) and handing what it read to the upstream sync
//! thread over one bounded channel. A full channel drops the reading and counts it. After each
//! reading the driver writes an eventfd the sync thread's poll(2) waits on, so a sample is taken
//! at once rather than at the next timer.
//!
//! Devices are opened in [`start`], so a missing or unusable device fails stratumd's start with
//! its path; the configuration check (`--check-config`) never opens them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_host::clock;
use stratum_proto::NtpTimestamp;
use stratum_refclock::nmea::{open_serial, NmeaConfig, NmeaEvent, NmeaReader, SerialPort};
use stratum_refclock::pps::{Edge, EdgeTracker, LinuxPps, PpsSource};
use stratum_refclock::shm::{ShmReject, ShmSegment};
use stratum_refclock::sock::SockReceiver;
use stratum_refclock::TimeSample;

use crate::config::sync::{PpsEdge, RefclockDriver, RefclockTable};

/// Readings the channel holds before a driver's next one is dropped.
pub const CHANNEL_DEPTH: usize = 64;
/// How often the SHM segment is read, and the longest a driver blocks before it looks at the
/// shutdown flag.
const POLL_PERIOD: Duration = Duration::from_millis(250);
/// The least error bound of an SHM or SOCK sample, seconds (their writers give none finer).
const PRECISION_FLOOR: f64 = 1e-9;

/// What a driver read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// A time-of-day sample, the configured `offset` and `delay` applied.
    Sample(TimeSample),
    /// The host time of a PPS edge, /dev/pps or a SOCK pulse (numbered by the sync thread's lock).
    Pulse(NtpTimestamp),
    /// The reference is not good now (NMEA: RMC status V, no fix, too few satellites), read at
    /// this host time: the refclock leaves the selection at once.
    Stale(NtpTimestamp),
}

/// What a driver thread knows of its device that the operator views show (`stratumctl
/// sources`, /metrics), shared with the sync thread.
#[derive(Debug)]
pub struct DriverState {
    /// Readings dropped because the channel was full.
    pub dropped: AtomicU64,
    /// nmea: 0 not told yet, 1 no fix (or stale), 2 a good fix.
    fix: AtomicU8,
    /// nmea: satellites in use as GGA last said (u32::MAX: not told).
    satellites: AtomicU32,
}

impl Default for DriverState {
    fn default() -> Self {
        Self { dropped: AtomicU64::new(0), fix: AtomicU8::new(0), satellites: AtomicU32::new(u32::MAX) }
    }
}

impl DriverState {
    /// nmea: whether the receiver has a good fix (None before it said, or another driver).
    pub fn fix(&self) -> Option<bool> {
        match self.fix.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == 2),
        }
    }

    /// nmea: satellites in use (None before a GGA, or another driver).
    pub fn satellites(&self) -> Option<u32> {
        Some(self.satellites.load(Ordering::Relaxed)).filter(|&n| n != u32::MAX)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Marks the fix lost (keeping the satellite count) before the stale reading is sent, so no
    /// one sees the refclock stale while its fix still reads good.
    fn lose_fix(&self) {
        self.fix.store(1, Ordering::Relaxed);
    }

    fn set_fix(&self, fix: bool, satellites: Option<u32>) {
        self.fix.store(if fix { 2 } else { 1 }, Ordering::Relaxed);
        self.satellites.store(satellites.unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}

/// A reading and the refclock (its index in `[[refclock]]`) it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delivery {
    pub index: usize,
    pub reading: Reading,
}

/// The driver threads, the channel's receiving end and the eventfd that says it has data.
#[derive(Debug)]
pub struct Refclocks {
    pub receiver: Receiver<Delivery>,
    wake: Arc<OwnedFd>,
    /// Per refclock: its driver's state (drops, NMEA fix).
    pub state: Vec<Arc<DriverState>>,
    threads: Vec<JoinHandle<()>>,
}

impl Refclocks {
    /// The eventfd to poll for POLLIN.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Clears the eventfd (after a poll said it was readable).
    pub fn clear_wake(&self) {
        let mut n = 0u64;
        // SAFETY: reading 8 bytes into a u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(self.wake.as_raw_fd(), (&mut n as *mut u64).cast(), 8);
        }
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A driver's end of the channel.
struct Outlet {
    index: usize,
    tx: SyncSender<Delivery>,
    wake: Arc<OwnedFd>,
    state: Arc<DriverState>,
}

impl Outlet {
    /// Hands a reading on; false once the sync thread is gone.
    fn send(&self, reading: Reading) -> bool {
        match self.tx.try_send(Delivery { index: self.index, reading }) {
            Ok(()) => {
                let one = 1u64;
                // SAFETY: writing 8 bytes from a u64 to our own eventfd.
                unsafe {
                    libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Opens every refclock's device and starts its thread.
pub fn start(tables: &[RefclockTable], shutdown: &Arc<AtomicBool>) -> anyhow::Result<Refclocks> {
    // SAFETY: eventfd takes plain integers; the fd is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd nobody else owns.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (tx, receiver) = sync_channel(CHANNEL_DEPTH);
    let mut refclocks = Refclocks { receiver, wake: wake.clone(), state: Vec::new(), threads: Vec::new() };
    for (index, table) in tables.iter().enumerate() {
        let state = Arc::new(DriverState::default());
        refclocks.state.push(state.clone());
        let outlet = Outlet { index, tx: tx.clone(), wake: wake.clone(), state };
        let device = open(table).map_err(|e| anyhow::anyhow!("refclock {}: cannot open: {e}", table.name()))?;
        let (table, shutdown) = (table.clone(), shutdown.clone());
        let name = format!("stratumd-rc{index}");
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            // Started from the main thread, which may still hold CAP_SYS_TIME for the sync
            // thread it spawns next (`discipline = "system"`): a reader needs no capability.
            if let Err(e) = crate::privileges::drop_thread_capabilities() {
                tracing::error!(error = %e, "a reference clock reader cannot give up its capabilities; it stops");
                return;
            }
            device.run(&table, &outlet, &shutdown)
        })?;
        refclocks.threads.push(thread);
    }
    Ok(refclocks)
}

/// An opened device.
enum Device {
    Shm(ShmSegment),
    Sock(SockReceiver),
    Nmea(Box<NmeaReader<Box<dyn SerialPort>>>),
    Pps(Box<dyn PpsSource + Send>, Edge),
}

fn open(table: &RefclockTable) -> io::Result<Device> {
    Ok(match table.driver {
        RefclockDriver::Shm => {
            let unit = table.shm_unit().ok_or_else(|| io::Error::other("not a unit number"))?;
            // chrony's permissions: units 0 and 1 for root only, the others for any writer.
            let perm = if unit < 2 { 0o600 } else { 0o666 };
            Device::Shm(ShmSegment::attach(unit, true, perm)?)
        }
        RefclockDriver::Sock => Device::Sock(SockReceiver::bind(Path::new(&table.device))?),
        RefclockDriver::Nmea => {
            let port = open_serial(&table.device, table.baud.unwrap_or(9600), POLL_PERIOD)?;
            let config = NmeaConfig { offset: table.offset, delay: table.delay, ..NmeaConfig::default() };
            Device::Nmea(Box::new(NmeaReader::new(port, config)))
        }
        RefclockDriver::Pps => {
            let edge = match table.edge {
                Some(PpsEdge::Clear) => Edge::Clear,
                _ => Edge::Assert,
            };
            Device::Pps(Box::new(LinuxPps::open(Path::new(&table.device), edge)?), edge)
        }
    })
}

/// A driver's sample with the table's `offset` added and its `delay`.
fn adjusted(table: &RefclockTable, mut sample: TimeSample) -> TimeSample {
    sample.reference = sample.reference.add(stratum_proto::NtpDuration::from_seconds_f64(table.offset));
    sample.delay = table.delay;
    sample
}

impl Device {
    fn run(self, table: &RefclockTable, out: &Outlet, shutdown: &AtomicBool) {
        let name = table.name();
        match self {
            Device::Shm(segment) => {
                while !shutdown.load(Ordering::Relaxed) {
                    match segment.read(PRECISION_FLOOR) {
                        Ok(s) => {
                            if !out.send(Reading::Sample(adjusted(table, s))) {
                                return;
                            }
                        }
                        Err(ShmReject::NotValid) => {}
                        Err(e) => tracing::debug!(refclock = %name, "sample refused: {e:?}"),
                    }
                    std::thread::sleep(POLL_PERIOD);
                }
            }
            Device::Sock(socket) => {
                let mut pulses_ignored = false;
                while !shutdown.load(Ordering::Relaxed) {
                    match socket.recv(POLL_PERIOD) {
                        Ok(None) => {}
                        // A pulse names no second: with `lock` the sync thread numbers it as a
                        // /dev/pps edge; without, it is unused (as chrony would need its own
                        // synchronised clock for it, which a stratum-1 appliance must not lean on).
                        Ok(Some(Ok(s))) if s.pulse != 0 && table.lock.is_some() => {
                            if !out.send(Reading::Pulse(s.pulse_edge())) {
                                return;
                            }
                        }
                        Ok(Some(Ok(s))) if s.pulse != 0 => {
                            if !pulses_ignored {
                                tracing::warn!(refclock = %name, "SOCK pulse samples need lock = \"REFID\" (a time-of-day refclock to number them); ignored");
                                pulses_ignored = true;
                            }
                        }
                        Ok(Some(Ok(s))) => {
                            if !out.send(Reading::Sample(adjusted(table, s.to_time_sample(PRECISION_FLOOR)))) {
                                return;
                            }
                        }
                        Ok(Some(Err(e))) => tracing::debug!(refclock = %name, "datagram refused: {e:?}"),
                        // A signal (SIGHUP for the NTS certificate, a privilege broadcast) landed
                        // on this thread: a recv with a timeout is never restarted.
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::error!(refclock = %name, error = %e, "cannot read the socket; driver stopped");
                            return;
                        }
                    }
                }
            }
            Device::Nmea(mut reader) => {
                let mut alive = true;
                // Whether the last time sentence gave a sample (true) or said stale (false).
                let mut good = None;
                while alive && !shutdown.load(Ordering::Relaxed) {
                    let mut told = None;
                    let read = reader.poll(clock::now, |event| match event {
                        // The reader adds offset and delay itself.
                        NmeaEvent::Sample(s) => {
                            told = Some(true);
                            alive &= out.send(Reading::Sample(s));
                        }
                        NmeaEvent::Stale(why) => {
                            told = Some(false);
                            tracing::debug!(refclock = %name, "stale: {why:?}");
                            out.state.lose_fix();
                            alive &= out.send(Reading::Stale(clock::now()));
                        }
                        _ => {}
                    });
                    good = told.or(good);
                    let fix = reader.decoder().fix();
                    if let Some(g) = good.or(fix.fix) {
                        out.state.set_fix(g && fix.fix != Some(false), fix.satellites);
                    }
                    if let Err(e) = read {
                        tracing::error!(refclock = %name, error = %e, "cannot read the serial port; retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            Device::Pps(mut source, edge) => {
                let mut edges = EdgeTracker::new(edge);
                while !shutdown.load(Ordering::Relaxed) {
                    match source.fetch(POLL_PERIOD) {
                        Ok(info) => {
                            if let Some(t) = edges.next(&info) {
                                if !out.send(Reading::Pulse(t)) {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(refclock = %name, error = %e, "cannot fetch a pulse; retrying in 1 s");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            }
        }
    }
}
