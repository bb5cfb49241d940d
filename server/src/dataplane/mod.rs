//! The data plane: the workers that answer NTP requests, on one of two backends (`socket`:
//! SO_REUSEPORT sockets with recvmmsg/sendmmsg; `xdp`: AF_XDP rings fed by an XDP program), and
//! what both share: admission (access lists, rate limiter), per-worker counters and turnaround
//! histograms, and pinned worker threads.
//!
//! The hot path lives here: no allocation, no lock, no syscall per packet, no log line per packet.

pub mod admission;
pub mod answer;
pub mod histogram;
pub mod interleave;
pub mod pinning;
pub mod prefetch;
pub mod socket;
pub mod stats;
#[cfg(feature = "xdp")]
pub mod xdp;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use admission::Admission;
use socket::SocketBackend;

use crate::config::{Backend, Config};
use crate::mgmt::status;
use crate::time::core::SnapshotCell;

/// What every worker of either backend is given: the admission rules it applies, the time core's
/// snapshot cell it serves from, and the flag that stops it.
#[derive(Clone, Copy, Debug)]
pub struct WorkerInputs<'a> {
    pub admission: &'a Admission,
    pub cell: &'a Arc<SnapshotCell>,
    pub shutdown: &'a Arc<AtomicBool>,
    /// `[auth]`'s symmetric keys; each worker takes its own clone.
    pub keys: &'a crate::auth::WorkerAuth,
    /// Where allowed mode 6 (ntpq) goes instead of being only dropped (socket backend).
    pub ntpq: Option<&'a crate::mgmt::ntpq::NtpqHandoff>,
}

/// The data plane in use.
#[derive(Debug)]
pub enum DataPlane {
    Socket(SocketBackend),
    #[cfg(feature = "xdp")]
    Xdp(xdp::XdpBackend),
}

impl DataPlane {
    pub fn start(config: &Config, inputs: WorkerInputs<'_>) -> anyhow::Result<Self> {
        match config.server.backend {
            Backend::Socket => Ok(Self::Socket(SocketBackend::start(&config.server, inputs)?)),
            #[cfg(feature = "xdp")]
            Backend::Xdp => Ok(Self::Xdp(xdp::XdpBackend::start(config, inputs)?)),
            #[cfg(not(feature = "xdp"))]
            Backend::Xdp => anyhow::bail!("this stratumd was built without the xdp backend (--features xdp)"),
        }
    }

    pub fn counters(&self) -> &[Arc<stats::WorkerCounters>] {
        match self {
            Self::Socket(b) => &b.counters,
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => &b.counters,
        }
    }

    /// Each worker's counters and core, as the operator interfaces show them.
    pub fn worker_handles(&self) -> Vec<status::WorkerHandle> {
        self.counters()
            .iter()
            .zip(self.cores())
            .enumerate()
            .map(|(id, (counters, core))| status::WorkerHandle { id, core: *core, counters: counters.clone() })
            .collect()
    }

    pub fn cores(&self) -> &[Option<usize>] {
        match self {
            Self::Socket(b) => &b.cores,
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => &b.cores,
        }
    }

    /// Socket addresses served (the socket backend's; the xdp backend serves a port on an interface).
    pub fn addresses(&self) -> Vec<std::net::SocketAddr> {
        match self {
            Self::Socket(b) => b.addresses.clone(),
            #[cfg(feature = "xdp")]
            Self::Xdp(_) => Vec::new(),
        }
    }

    pub fn describe_listen(&self) -> String {
        match self {
            Self::Socket(b) => b.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => {
                let queues: Vec<String> = b.queues.iter().map(ToString::to_string).collect();
                format!("{} queues {}", b.interface, queues.join(","))
            }
        }
    }

    /// Sockets the ntpq thread answers from, one per listen address (socket backend only).
    pub fn reply_sockets(&self) -> Option<Vec<socket2::Socket>> {
        match self {
            Self::Socket(b) => b.reply_sockets.iter().map(|s| s.try_clone().ok()).collect(),
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => b.reply_sockets.iter().map(|s| s.try_clone().ok()).collect(),
        }
    }

    /// The transmit stamps interleaved replies carry.
    pub fn tx_stamps(&self) -> interleave::TxStampMode {
        match self {
            Self::Socket(b) => b.tx_stamps,
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => b.tx_stamps,
        }
    }

    pub fn xdp_status(&self) -> Option<Arc<dyn status::XdpStatusSource>> {
        match self {
            Self::Socket(_) => None,
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => Some(b.status.clone()),
        }
    }

    pub fn join(self) {
        match self {
            Self::Socket(b) => b.join(),
            #[cfg(feature = "xdp")]
            Self::Xdp(b) => b.join(),
        }
    }
}
