//! What the operator interfaces (`/metrics`, the control socket) read: shared handles to the
//! workers' counters, the time core and the rate limiter, plus the facts fixed at start.
//!
//! The control socket's JSON view of this model is [`super::status_json`]'s; `/metrics` renders
//! it in [`super::metrics`].
//!
//! Everything here is read-only and lock-free: counters and histograms are loaded atomically, the
//! snapshot is a seqlock read, the rate limiter is scanned without stopping anyone. A reader
//! never makes a worker wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use stratum_proto::server::ratelimit::RateLimiter;
use stratum_proto::{RefId, ServerSnapshot};

use crate::dataplane::stats::{Totals, WorkerCounters};
use crate::time::core::SnapshotCell;
use stratum_host::clock;

/// One worker as the operator sees it.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub id: usize,
    pub core: Option<usize>,
    pub counters: Arc<WorkerCounters>,
}

/// The AF_XDP data plane as the operator sees it, read at scrape / query time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdpStatus {
    pub interface: String,
    /// How the XDP program is attached: "driver" or "generic".
    pub attach_mode: &'static str,
    /// How the AF_XDP sockets are bound: "zero-copy" or "copy".
    pub bind_mode: &'static str,
    /// The NIC's receive stamps are used (device-bound program), else a TAI clock read at XDP entry.
    pub hardware_timestamps: bool,
    /// The XDP program's own counters (summed over CPUs).
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub no_socket: u64,
    pub denied: u64,
    /// Requests to our port for another host (MAC or IP) or from one of ours: the kernel's.
    pub not_ours: u64,
    pub queues: Vec<XdpQueueStatus>,
}

/// One queue's AF_XDP socket counters (the kernel's XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpQueueStatus {
    pub queue: u32,
    pub worker: usize,
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

/// Reads the AF_XDP data plane's state (the xdp backend implements it).
pub trait XdpStatusSource: std::fmt::Debug + Send + Sync {
    fn read(&self) -> XdpStatus;
}

/// The running server, for readers.
#[derive(Debug)]
pub struct ServerStatus {
    pub version: &'static str,
    pub started: Instant,
    /// The data plane: `"socket"` or `"xdp"`.
    pub backend: &'static str,
    /// Where interleaved replies' transmit times come from: `"off"`, `"software"`, `"send-clock"`
    /// (xdp without TX metadata), `"hardware"`.
    pub tx_timestamps: &'static str,
    /// The AF_XDP data plane's counters (xdp backend only).
    pub xdp: Option<Arc<dyn XdpStatusSource>>,
    pub addresses: Vec<SocketAddr>,
    pub workers: Vec<WorkerHandle>,
    /// The clock source as the start-up summary describes it.
    pub clock_source: String,
    pub cell: Arc<SnapshotCell>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// The upstream sources and the system's tracking state (`source = "sync"` only).
    pub sync: Option<Arc<crate::sync::upstream::SyncView>>,
    /// Mode 6 (ntpq) handed to the management thread (None: `[ntpq] enabled = false`).
    pub ntpq: Option<Arc<crate::mgmt::ntpq::NtpqCounters>>,
    /// `[stats]` files' lines written, dropped and failed (None without `[stats]`).
    pub stats: Option<Arc<crate::mgmt::stats::StatsCounters>>,
    /// The NTS-KE server's connections by outcome (None without `[nts] listen`).
    pub ntske: Option<Arc<crate::mgmt::ntske::KeCounters>>,
}

/// The answer of a health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub healthy: bool,
    /// One line: why, either way.
    pub reason: String,
    pub root_distance: f64,
    pub stratum: u8,
}

/// The clock state as operators read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockState {
    pub synchronized: bool,
    pub stratum: u8,
    pub leap: u8,
    pub precision_seconds: f64,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    pub ref_id: RefId,
}

impl ClockState {
    pub fn of(snapshot: &ServerSnapshot) -> Self {
        // Root dispersion grows from its base: report it as of now, as a reply now would carry it.
        let now = snapshot.correction.apply(clock::now());
        Self {
            synchronized: snapshot.is_synchronized(),
            stratum: snapshot.stratum,
            leap: snapshot.leap.to_bits(),
            precision_seconds: 2f64.powi(snapshot.precision.into()),
            root_delay_seconds: snapshot.root_delay.to_seconds_f64(),
            root_dispersion_seconds: snapshot.root_dispersion_at(now).to_seconds_f64(),
            ref_id: snapshot.ref_id,
        }
    }
}

impl ServerStatus {
    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Whether this server should be in service: synchronised, with a root distance (half the
    /// root delay plus the root dispersion a reply now would carry) within `max_root_distance`
    /// seconds. What `/healthz`, `stratumctl health` and so container probes and routing
    /// daemons go by.
    pub fn health(&self, max_root_distance: f64) -> Health {
        let clock = self.clock();
        let distance = clock.root_delay_seconds / 2.0 + clock.root_dispersion_seconds;
        let (healthy, reason) = if !clock.synchronized {
            (false, "unsynchronised: serving LI=3, stratum 16".to_string())
        } else if distance > max_root_distance {
            (false, format!("root distance {distance:.6} s is over the {max_root_distance} s allowed"))
        } else {
            (true, format!("synchronised at stratum {}, root distance {distance:.6} s", clock.stratum))
        };
        Health { healthy, reason, root_distance: distance, stratum: clock.stratum }
    }

    pub fn clock(&self) -> ClockState {
        ClockState::of(&self.cell.load().1)
    }

    /// Every request counted once: the workers' counters, and on the xdp backend the requests
    /// its program dropped on the deny list before any worker saw them.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::sum(self.workers.iter().map(|w| w.counters.as_ref()));
        if let Some(x) = &self.xdp {
            totals.add_program_denied(x.read().denied);
        }
        totals
    }

    /// Records in use in the rate limiter's table, from the workers' counters: a record is never
    /// freed, so every insert that evicted nobody filled an empty one. No table scan.
    pub fn tracked_clients(&self) -> u64 {
        let t = self.totals();
        t.ratelimit_inserted.saturating_sub(t.ratelimit_evicted)
    }
}
