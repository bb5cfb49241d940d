//! `source = "sync"`: the thread that polls the upstream servers and drives the sans-IO sync
//! engine ([`stratum_proto::sync`]). It owns one UDP socket per source (a random local port,
//! connected to the upstream, kernel receive timestamps), asks the resolver for names and asks
//! again for a source that has gone unreachable, and publishes the engine's snapshot to the time
//! core after every event and at least every [`PUBLISH_INTERVAL`]. Workers keep reading the
//! snapshot once per batch: nothing on the request path changes.
//!
//! With `discipline = "system"` it also steers CLOCK_REALTIME ([`crate::time::system`]): before
//! each publication it applies what the engine asks of the host clock and tells the engine when,
//! so the published snapshot carries the identity correction; and it keeps the kernel's status
//! and error estimates current. A kernel that refuses leaves the correction in the snapshot.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngCore;
use stratum_host::clock;
use stratum_proto::sync::{
    refid_for_address, DisciplineConfig, HostClock, LeapMode, RefclockConfig, RefclockSample, SourceConfig, SourceId,
    SourceState, SourceStatus, SyncConfig, SyncEngine, Tracking,
};
use stratum_proto::{NtpTimestamp, RefId, ServerSnapshot};
use stratum_refclock::pps::{PpsConfig, PpsLock, PulseCounters};
use stratum_refclock::TimeSample;

use super::refclock::{self as drivers, Delivery, Reading, Refclocks};

use super::resolve::{Resolved, Resolver};
use super::served;
use crate::config::sync::{self as sync_keys, HostPort};
use crate::config::Config;
use crate::mgmt::stats::SyncStats;
use crate::mgmt::stats_format::Kind;
use crate::time::core::SnapshotCell;
use crate::time::system::{KernelClock, KernelStatus, LinuxKernel, SystemClock};
use stratum_proto::auth::{SymmetricKey, MAX_DIGEST_LEN};
use stratum_proto::packet::HEADER_LEN;

/// The longest the served snapshot goes without being published again.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);
/// How long a name that did not resolve, or a source that went unreachable, waits before the
/// name is asked again.
const RESOLVE_RETRY: Duration = Duration::from_secs(60);
/// The rate the engine may ask of the kernel, frequency and slew together: under the kernel's
/// 500 ppm, with room for a leap smear's 11.6 ppm.
const SYSTEM_MAX_RATE: f64 = 480e-6;
use crate::privileges::CAP_SYS_TIME;

/// One source as the operator interfaces show it.
#[derive(Clone, Debug)]
pub struct SourceRow {
    /// The configured name (`[[upstream]] address` or `[[pool]] name`; a refclock's
    /// `driver:device`).
    pub name: String,
    /// A refclock's is ntpd's pseudo-address for its kind, 127.127.T.N (T 28 shm, 46 sock,
    /// 20 nmea, 22 pps; N its index in `[[refclock]]`), port 0: distinct per refclock for the
    /// metrics' labels; `stratumctl sources` shows "-" for it (`status.refclock` is set).
    pub address: SocketAddr,
    /// The local address its requests leave from (the kernel's choice when the socket was
    /// connected; ntpq's `dstadr`). None for a refclock.
    pub local: Option<IpAddr>,
    pub status: SourceStatus,
    /// A refclock's driver state (None for an upstream).
    pub refclock: Option<RefclockRow>,
}

/// What a refclock's driver and PPS lock say, for `stratumctl sources` and /metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefclockRow {
    /// "nmea", "pps", "shm" or "sock".
    pub driver: &'static str,
    /// nmea: whether the receiver has a good fix (None before it said).
    pub fix: Option<bool>,
    /// nmea: satellites in use, as GGA last said.
    pub satellites: Option<u32>,
    /// pps: whether its last pulse was numbered by the lock (None for other drivers).
    pub pps_locked: Option<bool>,
    /// pps: what the lock made of the pulses.
    pub pulses: Option<PulseCounters>,
    /// pps: the last numbered pulse's offset (reference minus host), seconds.
    pub last_pulse_offset: Option<f64>,
    /// Readings dropped because the channel to the sync thread was full.
    pub dropped: u64,
}

/// What `stratumctl sources`/`tracking` and /metrics read of the sync thread, updated by it after
/// every event.
#[derive(Debug, Default)]
pub struct SyncView {
    state: Mutex<(Vec<SourceRow>, Option<Tracking>)>,
}

impl SyncView {
    pub fn sources(&self) -> Vec<SourceRow> {
        self.state.lock().map(|s| s.0.clone()).unwrap_or_default()
    }

    pub fn tracking(&self) -> Option<Tracking> {
        self.state.lock().ok().and_then(|s| s.1)
    }

    pub(crate) fn set(&self, sources: Vec<SourceRow>, tracking: Tracking) {
        if let Ok(mut s) = self.state.lock() {
            *s = (sources, Some(tracking));
        }
    }
}

/// One `[[upstream]]` or `[[pool]]` entry and the sources it has in the engine now.
#[derive(Debug)]
struct Entry {
    name: HostPort,
    config: SourceConfig,
    /// How many sources it may have at once (1 for an upstream).
    max_sources: usize,
    sources: Vec<SourceId>,
    /// When to ask the resolver again (None: a question is out, or nothing to ask).
    resolve_at: Option<Instant>,
    /// Addresses that sent a kiss-o'-death DENY or RSTR: never taken again from this name.
    banned: Vec<SocketAddr>,
    /// `key`: the symmetric key its requests are signed with and its replies must carry.
    key: Option<SymmetricKey>,
}

/// A source's socket and where it points.
#[derive(Debug)]
struct Link {
    entry: usize,
    socket: UdpSocket,
    address: SocketAddr,
    /// The socket's local address (read once, when it was connected).
    local: Option<IpAddr>,
    /// Its entry's key, if any.
    key: Option<SymmetricKey>,
}

/// One `[[refclock]]` in the engine.
#[derive(Debug)]
struct RefclockSlot {
    name: String,
    address: SocketAddr,
    id: SourceId,
    driver: &'static str,
    /// pps: numbers the pulses from the samples of refclock `lock_of`.
    lock: Option<PpsLock>,
    lock_of: Option<usize>,
}

/// The running upstream thread.
#[derive(Debug)]
pub struct UpstreamSync {
    thread: JoinHandle<()>,
    pub view: Arc<SyncView>,
}

impl UpstreamSync {
    /// Starts polling the configured upstreams; the time core serves unsynchronised until the
    /// engine has selected a source.
    pub fn start(
        config: &Config,
        cell: Arc<SnapshotCell>,
        precision: i8,
        view: Arc<SyncView>,
        stats: Option<SyncStats>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let engine = SyncEngine::new(sync_config(config, precision));
        let system = match config.clock.discipline {
            sync_keys::Discipline::Virtual => None,
            sync_keys::Discipline::System => Some(system_clock(config)?),
        };
        let mut entries: Vec<Entry> = Vec::new();
        for u in &config.upstream {
            let source = SourceConfig {
                minpoll: u.minpoll,
                maxpoll: u.maxpoll,
                iburst: u.iburst,
                prefer: u.prefer,
                noselect: u.noselect,
                trust: u.trust,
                require: u.require,
            };
            let mut entry = Entry::new(u.address.clone(), source, 1);
            // Checked when the configuration was: the key is in [auth] keys.
            entry.key = u.key.and_then(|id| config.auth.keys.as_ref()?.table.get(id).cloned());
            entries.push(entry);
        }
        for p in &config.pool {
            // The servers the name resolves to share the pool's options.
            let source = SourceConfig {
                minpoll: p.minpoll,
                maxpoll: p.maxpoll,
                iburst: p.iburst,
                prefer: p.prefer,
                noselect: p.noselect,
                trust: p.trust,
                require: p.require,
            };
            entries.push(Entry::new(p.name.clone(), source, p.max_sources));
        }
        let mut engine = engine;
        let mut refclock_slots = Vec::new();
        for (i, r) in config.refclock.iter().enumerate() {
            let refid = RefId::from_ascii(r.refid()).ok_or_else(|| anyhow::anyhow!("refid {}", r.refid()))?;
            let rc = RefclockConfig {
                prefer: r.prefer,
                noselect: r.noselect,
                trust: r.trust,
                require: r.require,
                poll: r.poll,
                filter: r.filter,
                max_age: r.max_age,
            };
            let id = engine
                .add_refclock(refid, rc, clock::now())
                .map_err(|e| anyhow::anyhow!("refclock {}: {e}", r.name()))?;
            let kind = match r.driver {
                sync_keys::RefclockDriver::Shm => 28,
                sync_keys::RefclockDriver::Sock => 46,
                sync_keys::RefclockDriver::Nmea => 20,
                sync_keys::RefclockDriver::Pps => 22,
            };
            let address = SocketAddr::from(([127, 127, kind, u8::try_from(i).unwrap_or(u8::MAX)], 0));
            let lock_of = r.lock.as_ref().and_then(|l| config.refclock.iter().position(|o| o.refid() == l));
            let defaults = PpsConfig::default();
            let pps = PpsConfig {
                offset: r.offset,
                delay: r.delay,
                max_lock_age: r.max_lock_age.unwrap_or(defaults.max_lock_age),
                width: r.width.unwrap_or(defaults.width),
                ..defaults
            };
            let lock = lock_of.map(|_| PpsLock::new(pps));
            refclock_slots.push(RefclockSlot { name: r.name(), address, id, driver: r.driver.as_str(), lock, lock_of });
        }
        let readings =
            if config.refclock.is_empty() { None } else { Some(drivers::start(&config.refclock, &shutdown)?) };
        let resolver = Resolver::start()?;
        let mut driver = Driver {
            engine,
            refclocks: refclock_slots,
            readings,
            entries,
            links: HashMap::new(),
            resolver,
            cell,
            view: view.clone(),
            // What the start-up line already said.
            served: served(&ServerSnapshot::unsynchronized(precision)),
            states: HashMap::new(),
            lost_since: HashMap::new(),
            system,
            kernel_failing: false,
            stats,
        };
        if let Some(leap) = &config.clock.leap_seconds {
            driver.engine.set_leap_seconds(Some(leap.list.clone()));
        }
        let thread = std::thread::Builder::new().name("stratumd-sync".into()).spawn(move || driver.run(&shutdown))?;
        Ok(Self { thread, view })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }

    /// How the clock source describes itself in the start-up line.
    pub fn describe(config: &Config) -> String {
        let names: Vec<String> = config
            .upstream
            .iter()
            .map(|u| u.address.to_string())
            .chain(config.pool.iter().map(|p| format!("pool {} (up to {})", p.name, p.max_sources)))
            .chain(config.refclock.iter().map(|r| format!("refclock {} ({})", r.name(), r.refid())))
            .collect();
        let how = match config.clock.discipline {
            sync_keys::Discipline::Virtual => "disciplined (virtual clock)",
            sync_keys::Discipline::System => "disciplining the system clock (clock_adjtime)",
        };
        let leap = sync_keys::LeapMode::or_default_for(config.clock.leap_mode, config.clock.discipline);
        format!("sync: {how}, leap seconds by {}, from {}", leap.as_str(), names.join(", "))
    }
}

/// The system discipline's hold on the kernel clock: CAP_SYS_TIME checked in this thread (the
/// sync thread is spawned from it and inherits its capabilities), the kernel's frequency read.
/// Nothing is written to the kernel here.
fn system_clock(config: &Config) -> anyhow::Result<SystemClock<Box<dyn KernelClock>>> {
    let caps = crate::privileges::effective_capabilities()?;
    if caps & (1 << CAP_SYS_TIME) == 0 {
        anyhow::bail!(
            "discipline = \"system\" needs CAP_SYS_TIME (run as root, or give the service \
             AmbientCapabilities=CAP_SYS_TIME); or use discipline = \"virtual\""
        );
    }
    let leap = sync_keys::LeapMode::or_default_for(config.clock.leap_mode, config.clock.discipline);
    let kernel: Box<dyn KernelClock> = Box::new(LinuxKernel);
    let clock = SystemClock::new(kernel, leap == sync_keys::LeapMode::Kernel)
        .map_err(|e| anyhow::anyhow!("cannot read the kernel clock: {e}"))?;
    tracing::info!(
        frequency_ppm = clock.base_frequency_ppm(),
        "discipline = \"system\": the system clock is stratumd's from the first clock update on (nothing else may discipline it)"
    );
    Ok(clock)
}

impl Entry {
    fn new(name: HostPort, config: SourceConfig, max_sources: usize) -> Self {
        let (sources, banned, key) = (Vec::new(), Vec::new(), None);
        Self { name, config, max_sources, sources, resolve_at: Some(Instant::now()), banned, key }
    }
}

/// The engine's settings from `[clock]`, with the host's own addresses as loop refids.
fn sync_config(config: &Config, precision: i8) -> SyncConfig {
    let c = &config.clock;
    let own_refids = stratum_host::netif::addresses()
        .unwrap_or_default()
        .into_iter()
        .map(|a| refid_for_address(a.address))
        .collect();
    let system = c.discipline == sync_keys::Discipline::System;
    SyncConfig {
        discipline: DisciplineConfig {
            step_threshold: c.step_threshold,
            max_steps: c.max_steps,
            max_rate: if system { SYSTEM_MAX_RATE } else { DisciplineConfig::default().max_rate },
            ..Default::default()
        },
        minsane: c.minsane,
        max_holdover: c.max_holdover,
        precision,
        own_refids,
        leap_mode: match sync_keys::LeapMode::or_default_for(c.leap_mode, c.discipline) {
            sync_keys::LeapMode::Step => LeapMode::Step,
            sync_keys::LeapMode::Kernel => LeapMode::Kernel,
            sync_keys::LeapMode::Smear => LeapMode::Smear,
        },
        host_clock: if system { HostClock::Disciplined } else { HostClock::Free },
        ..Default::default()
    }
}

struct Driver {
    engine: SyncEngine,
    /// `[[refclock]]`, in the configuration's order.
    refclocks: Vec<RefclockSlot>,
    /// The refclock driver threads' channel (None without refclocks).
    readings: Option<Refclocks>,
    entries: Vec<Entry>,
    links: HashMap<SourceId, Link>,
    resolver: Resolver,
    cell: Arc<SnapshotCell>,
    view: Arc<SyncView>,
    /// The served state as last logged.
    served: String,
    /// Each source's state as last logged.
    states: HashMap<SourceId, SourceState>,
    /// Since when each unreachable or demobilised source has been so.
    lost_since: HashMap<SourceId, Instant>,
    /// `discipline = "system"`: the kernel clock the engine's adjustments go to.
    system: Option<SystemClock<Box<dyn KernelClock>>>,
    /// Whether the kernel refused the last write (logged once per change).
    kernel_failing: bool,
    /// `[stats]`: the lines for loopstats, peerstats, rawstats and clockstats.
    stats: Option<SyncStats>,
}

impl Driver {
    fn run(&mut self, shutdown: &AtomicBool) {
        let mut rng = rand::thread_rng();
        while !shutdown.load(Ordering::Relaxed) {
            self.take_resolved();
            self.ask_resolver();
            self.engine.handle_timeout(clock::now());
            while let Some(tx) = self.engine.poll_transmit(clock::now(), rng.next_u64()) {
                if let Some(link) = self.links.get(&tx.source) {
                    // A failed send is an unanswered poll: the reach register shows it.
                    let _ = match &link.key {
                        None => link.socket.send(&tx.packet),
                        Some(key) => {
                            let mut signed = [0u8; HEADER_LEN + 4 + MAX_DIGEST_LEN];
                            signed[..HEADER_LEN].copy_from_slice(&tx.packet);
                            let len = key.sign(&mut signed, HEADER_LEN).unwrap_or(HEADER_LEN);
                            link.socket.send(&signed[..len])
                        }
                    };
                }
            }
            self.publish();
            self.wait_and_receive();
            self.publish();
            self.replace_lost_sources();
            // Only a loop that still turns keeps systemd's watchdog quiet.
            crate::notify::watchdog();
        }
    }

    /// Waits for replies until the engine's next deadline (at most [`PUBLISH_INTERVAL`]) and
    /// hands every reply to the engine with its kernel receive time.
    fn wait_and_receive(&mut self) {
        let now = clock::now();
        let wait = self
            .engine
            .next_deadline(now)
            .map_or(PUBLISH_INTERVAL, |d| Duration::from_secs_f64(d.since(now).to_seconds_f64().max(0.0)))
            .min(PUBLISH_INTERVAL);
        let ids: Vec<SourceId> = self.links.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = ids
            .iter()
            .map(|id| libc::pollfd { fd: self.links[id].socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // The refclock drivers' eventfd, last: a reading wakes the wait at once.
        if let Some(r) = &self.readings {
            fds.push(libc::pollfd { fd: r.wake_fd(), events: libc::POLLIN, revents: 0 });
        }
        if fds.is_empty() {
            std::thread::sleep(wait);
            return;
        }
        // SAFETY: fds is a live array of pollfd of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
        if let Some(r) = &self.readings {
            if fds.last().is_some_and(|f| f.revents != 0) {
                r.clear_wake();
            }
        }
        self.take_readings();
        if ready <= 0 {
            return;
        }
        let mut buf = [0u8; 1024];
        for (id, fd) in ids.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            let Some(link) = self.links.get(id) else { continue };
            while let Some((len, t4)) = receive(&link.socket, &mut buf) {
                // A keyed source: only a reply signed with its key counts (a crypto-NAK or a
                // forged one is as if lost), and the engine sees the header the MAC covers.
                let reply = match &link.key {
                    None => &buf[..len],
                    Some(key) => match key.verify_packet(&buf[..len]) {
                        Some(header) => header,
                        None => continue,
                    },
                };
                let outcome = self.engine.handle_reply(*id, reply, t4);
                if let Some(s) = self.stats.as_ref().filter(|s| s.wants(Kind::Raw)) {
                    let local = link.local.unwrap_or(link.address.ip());
                    s.raw(link.address.ip(), local, reply, t4, &outcome);
                }
            }
        }
    }

    /// Every reading the refclock drivers have sent: samples to the engine (and to the PPS locks
    /// that number pulses from them), pulses through their lock.
    fn take_readings(&mut self) {
        let Some(r) = &self.readings else { return };
        let deliveries: Vec<Delivery> = r.receiver.try_iter().collect();
        for Delivery { index, reading } in deliveries {
            let Some(id) = self.refclocks.get(index).map(|s| s.id) else { continue };
            let sample = match reading {
                Reading::Stale(at) => {
                    // No pulse is numbered from a receiver without a fix.
                    for pps in self.refclocks.iter_mut().filter(|p| p.lock_of == Some(index)) {
                        if let Some(lock) = pps.lock.as_mut() {
                            lock.forget_time_of_day();
                        }
                    }
                    if self.engine.refclock_stale(id, at) {
                        tracing::warn!(refclock = %self.refclocks[index].name, "the reference went stale (no fix); out of the selection");
                    }
                    continue;
                }
                Reading::Sample(s) => {
                    for pps in self.refclocks.iter_mut().filter(|p| p.lock_of == Some(index)) {
                        if let Some(lock) = pps.lock.as_mut() {
                            lock.time_of_day(s);
                        }
                    }
                    s
                }
                Reading::Pulse(t) => {
                    let Some(lock) = self.refclocks[index].lock.as_mut() else { continue };
                    match lock.pulse(t) {
                        Ok(s) => s,
                        // Counted by the lock (unlocked, double, wrong edge).
                        Err(_) => continue,
                    }
                }
            };
            self.engine.handle_refclock_sample(id, engine_sample(&sample));
            if let Some(s) = &self.stats {
                let slot = &self.refclocks[index];
                s.clock(slot.address.ip(), slot.driver, sample.reference, sample.local);
            }
        }
    }

    /// `discipline = "system"`: applies what the engine asks of the host clock, then tells it
    /// when (the clock read right after). A refusal leaves the correction in the snapshot.
    fn adjust_system_clock(&mut self) {
        let Some(system) = self.system.as_mut() else { return };
        let Some(adjustment) = self.engine.host_adjustment(clock::now()) else { return };
        match system.apply(&adjustment) {
            Ok(()) => {
                self.engine.host_adjusted(&adjustment, clock::now());
                if adjustment.step != 0.0 {
                    tracing::warn!(step_s = adjustment.step, "stepped the system clock by {:+.6} s", adjustment.step);
                }
                self.kernel_ok();
            }
            Err(e) => self.kernel_refused(&e),
        }
    }

    /// `discipline = "system"`: the kernel's status, maxerror and esterror (and leap bits with
    /// `leap-mode = "kernel"`) from what is served.
    fn update_kernel_status(&mut self, snapshot: &ServerSnapshot, tracking: &Tracking) {
        let Some(system) = self.system.as_mut() else { return };
        let status = KernelStatus {
            synchronized: snapshot.is_synchronized(),
            leap: snapshot.leap,
            max_error: snapshot.root_delay.to_duration().to_seconds_f64() / 2.0 + tracking.root_dispersion,
            est_error: tracking.offset_error,
            tai_offset: snapshot.tai_offset,
        };
        match system.update_status(&status, Instant::now()) {
            Ok(()) => self.kernel_ok(),
            Err(e) => self.kernel_refused(&e),
        }
    }

    fn kernel_ok(&mut self) {
        if self.kernel_failing {
            tracing::info!("the kernel takes the system clock's adjustments again");
            self.kernel_failing = false;
        }
    }

    fn kernel_refused(&mut self, e: &io::Error) {
        if !self.kernel_failing {
            tracing::error!(error = %e, "cannot adjust the system clock; serving the correction from the snapshot meanwhile");
            self.kernel_failing = true;
        }
    }

    /// Publishes the snapshot, updates the operator view, and logs what changed.
    fn publish(&mut self) {
        self.adjust_system_clock();
        let now = clock::now();
        let snapshot: ServerSnapshot = self.engine.snapshot(now);
        self.cell.publish(&snapshot);
        let rows: Vec<SourceRow> = self
            .engine
            .sources()
            .filter_map(|status| {
                if status.refclock.is_some() {
                    let index = self.refclocks.iter().position(|r| r.id == status.id)?;
                    let slot = &self.refclocks[index];
                    let state = self.readings.as_ref().and_then(|r| r.state.get(index));
                    let refclock = RefclockRow {
                        driver: slot.driver,
                        fix: state.and_then(|s| s.fix()),
                        satellites: state.and_then(|s| s.satellites()),
                        pps_locked: slot.lock.as_ref().map(|l| l.is_locked() && !status.refclock_stale),
                        pulses: slot.lock.as_ref().map(PpsLock::counters),
                        last_pulse_offset: slot.lock.as_ref().and_then(PpsLock::last_offset),
                        dropped: state.map_or(0, |s| s.dropped()),
                    };
                    let (name, address) = (slot.name.clone(), slot.address);
                    return Some(SourceRow { name, address, local: None, status, refclock: Some(refclock) });
                }
                let link = self.links.get(&status.id)?;
                let name = self.entries[link.entry].name.to_string();
                Some(SourceRow { name, address: link.address, local: link.local, status, refclock: None })
            })
            .collect();
        for row in &rows {
            let before = self.states.insert(row.status.id, row.status.state);
            if before.is_some_and(|b| b != row.status.state)
                || (before.is_none() && row.status.state != SourceState::Unselectable)
            {
                tracing::info!(source = %row.address, name = %row.name, "source is now {}", row.status.state.name());
            }
        }
        let tracking = self.engine.tracking(now);
        self.update_kernel_status(&snapshot, &tracking);
        if let Some(s) = &mut self.stats {
            s.observe(&rows, &tracking);
        }
        self.view.set(rows, tracking);
        let state = served(&snapshot);
        if state != self.served {
            if snapshot.is_synchronized() {
                tracing::info!("now serving {state}");
            } else {
                tracing::warn!("now serving {state}");
            }
            self.served = state;
        }
    }

    /// Asks the resolver for every entry that needs sources and whose time has come.
    fn ask_resolver(&mut self) {
        let now = Instant::now();
        for (key, entry) in self.entries.iter_mut().enumerate() {
            if entry.resolve_at.is_some_and(|at| at <= now) && entry.sources.len() < entry.max_sources {
                entry.resolve_at = None;
                self.resolver.ask(key, &entry.name);
            }
        }
    }

    /// Adds the sources that resolved names give: new addresses only, up to each entry's count.
    fn take_resolved(&mut self) {
        while let Ok(Resolved { key, addresses }) = self.resolver.results.try_recv() {
            let Some(entry) = self.entries.get_mut(key) else { continue };
            let addresses = match addresses {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => Vec::new(),
                Err(e) => {
                    tracing::warn!(name = %entry.name, error = %e, "cannot resolve; asking again in {} s", RESOLVE_RETRY.as_secs());
                    entry.resolve_at = Some(Instant::now() + RESOLVE_RETRY);
                    continue;
                }
            };
            let in_use: Vec<SocketAddr> =
                entry.sources.iter().filter_map(|id| self.links.get(id)).map(|l| l.address).collect();
            for address in addresses.into_iter().filter(|a| !in_use.contains(a) && !entry.banned.contains(a)) {
                if entry.sources.len() >= entry.max_sources {
                    break;
                }
                match open_socket(address) {
                    Ok(socket) => match self.engine.add_source(address.ip(), entry.config, clock::now()) {
                        Ok(id) => {
                            entry.sources.push(id);
                            let local = socket.local_addr().ok().map(|a| a.ip());
                            let link = Link { entry: key, socket, address, local, key: entry.key.clone() };
                            self.links.insert(id, link);
                            tracing::info!(name = %entry.name, source = %address, "polling");
                        }
                        Err(e) => tracing::error!(name = %entry.name, error = ?e, "source refused by the engine"),
                    },
                    Err(e) => tracing::warn!(name = %entry.name, source = %address, error = %e, "cannot open a socket"),
                }
            }
            if entry.sources.len() < entry.max_sources {
                entry.resolve_at = Some(Instant::now() + RESOLVE_RETRY);
            }
        }
    }

    /// A source unreachable, or told to go away (KoD DENY/RSTR), for [`RESOLVE_RETRY`] makes
    /// room for what its name resolves to now: a server that moved, or another pool member. One
    /// given as an address stays: its state says why it is not used.
    fn replace_lost_sources(&mut self) {
        let now = Instant::now();
        let states: Vec<(SourceId, SourceState)> = self.engine.sources().map(|s| (s.id, s.state)).collect();
        for (id, state) in states {
            if !matches!(state, SourceState::Unreachable | SourceState::Demobilised(_)) {
                self.lost_since.remove(&id);
                continue;
            }
            let since = *self.lost_since.entry(id).or_insert(now);
            let Some(link) = self.links.get(&id) else { continue };
            let entry = &mut self.entries[link.entry];
            if entry.name.host.parse::<IpAddr>().is_ok() || now.duration_since(since) < RESOLVE_RETRY {
                continue;
            }
            if matches!(state, SourceState::Demobilised(_)) {
                entry.banned.push(link.address);
            }
            tracing::info!(name = %entry.name, source = %link.address, "{}: asking for another address", state.name());
            entry.sources.retain(|s| *s != id);
            entry.resolve_at = Some(now);
            self.links.remove(&id);
            self.states.remove(&id);
            self.lost_since.remove(&id);
            self.engine.remove_source(id);
        }
    }
}

/// A driver's sample as the engine takes it.
fn engine_sample(s: &TimeSample) -> RefclockSample {
    RefclockSample {
        reference_time: s.reference,
        local_receive_time: s.local,
        leap: s.leap,
        dispersion: s.dispersion,
        delay: s.delay,
    }
}

/// A UDP socket on a random local port, connected to `address`, with kernel receive stamps.
fn open_socket(address: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if address.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }
        .map_err(|_| io::Error::other("literal"))?;
    let socket = UdpSocket::bind(local)?;
    socket.connect(address)?;
    socket.set_nonblocking(true)?;
    stratum_host::sockopt::set_int(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    Ok(socket)
}

/// One datagram, non-blocking, with its kernel receive time (the host clock now when the kernel
/// gave none). None when nothing is waiting.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, NtpTimestamp)> {
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel just filled, within its length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                stamp = Some(clock::from_timespec(ts.tv_sec, ts.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((n as usize, stamp.unwrap_or_else(clock::now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_comes_with_its_kernel_receive_time() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = open_socket(server.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        assert!(receive(&client, &mut buf).is_none(), "nothing yet");
        client.send(&[1; 48]).unwrap();
        let (_, from) = server.recv_from(&mut buf).unwrap();
        let before = clock::now();
        server.send_to(&[2; 48], from).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (len, t4) = receive(&client, &mut buf).unwrap();
        let after = clock::now();
        assert_eq!((len, buf[0]), (48, 2));
        // The kernel's stamp lies between the send and now.
        assert!(t4.since(before).to_seconds_f64() >= -0.001 && after.since(t4).to_seconds_f64() >= 0.0, "{t4:?}");
    }
}
