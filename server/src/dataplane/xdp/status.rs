//! What `/metrics` and `stratumctl` read of the xdp data plane: the steering program's counters
//! and each AF_XDP socket's XDP_STATISTICS. Read on demand by the management threads; never
//! touches a worker's rings.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use stratum_xdp::program::{AttachedMode, SteeringProgram};
use stratum_xdp::xsk::{self, BindMode, XskSocket};

use crate::mgmt::status::{XdpQueueStatus, XdpStatus, XdpStatusSource};

/// What `/metrics` and `stratumctl` read of the data plane: the program's maps and each socket's
/// XDP_STATISTICS (through a duplicate of its descriptor; the worker owns the socket).
#[derive(Debug)]
pub struct XdpStatusReader {
    interface: String,
    attach_mode: &'static str,
    bind_mode: &'static str,
    hardware_timestamps: bool,
    /// None once detached at stop.
    program: Mutex<Option<SteeringProgram>>,
    sockets: Vec<(u32, usize, OwnedFd)>,
}

impl XdpStatusReader {
    /// Takes the program (detached when this is) and a duplicate of each socket's descriptor.
    pub(super) fn new(program: SteeringProgram, sockets: &[XskSocket]) -> std::io::Result<Self> {
        let bind_mode = match sockets.first().map_or(BindMode::Copy, |s| s.mode()) {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        };
        let attach_mode = match program.mode() {
            AttachedMode::Driver => "driver",
            AttachedMode::Generic => "generic",
        };
        let sockets = sockets
            .iter()
            .enumerate()
            .map(|(worker, s)| Ok((s.queue(), worker, s.as_fd().try_clone_to_owned()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            interface: program.interface().to_string(),
            attach_mode,
            bind_mode,
            hardware_timestamps: program.hardware_timestamps(),
            program: Mutex::new(Some(program)),
            sockets,
        })
    }

    /// Runs `f` on the program while it is attached (None after [`Self::detach`]).
    pub(super) fn with_program<R>(&self, f: impl FnOnce(&SteeringProgram) -> R) -> Option<R> {
        self.program.lock().ok().and_then(|p| p.as_ref().map(f))
    }

    pub(super) fn detach(&self) {
        if let Ok(mut p) = self.program.lock() {
            p.take();
        }
    }
}

impl XdpStatusSource for XdpStatusReader {
    fn read(&self) -> XdpStatus {
        let program =
            self.program.lock().ok().and_then(|p| p.as_ref().and_then(|p| p.counters().ok())).unwrap_or_default();
        let queues = self
            .sockets
            .iter()
            .map(|(queue, worker, fd)| {
                let s = xsk::statistics(fd.as_fd()).unwrap_or_default();
                XdpQueueStatus {
                    queue: *queue,
                    worker: *worker,
                    rx_dropped: s.rx_dropped,
                    rx_invalid_descs: s.rx_invalid_descs,
                    tx_invalid_descs: s.tx_invalid_descs,
                    rx_ring_full: s.rx_ring_full,
                    fill_ring_empty: s.rx_fill_ring_empty,
                    tx_ring_empty: s.tx_ring_empty,
                }
            })
            .collect();
        XdpStatus {
            interface: self.interface.clone(),
            attach_mode: self.attach_mode,
            bind_mode: self.bind_mode,
            hardware_timestamps: self.hardware_timestamps,
            redirected: program.redirected,
            passed: program.passed,
            malformed: program.malformed,
            no_socket: program.no_socket,
            not_ours: program.not_ours,
            denied: program.denied,
            queues,
        }
    }
}
