//! The sync thread: the only writer of the time core. Once a second it asks the clock source for
//! the state to serve, publishes it, and logs when that state changes (never per packet).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_proto::ServerSnapshot;

use crate::time::backend::ClockBackend;
use crate::time::core::SnapshotCell;
use stratum_host::clock;

const UPDATE_INTERVAL: Duration = Duration::from_secs(1);
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Tracks the served state so that only changes are logged.
#[derive(Debug)]
pub struct SyncLoop {
    source: Box<dyn ClockBackend>,
    cell: Arc<SnapshotCell>,
    precision: i8,
    last: Option<(bool, u8, u8)>,
    failing: bool,
}

impl SyncLoop {
    pub fn new(source: Box<dyn ClockBackend>, cell: Arc<SnapshotCell>, precision: i8) -> Self {
        Self { source, cell, precision, last: None, failing: false }
    }

    /// Computes and publishes the current snapshot.
    pub fn update(&mut self) -> ServerSnapshot {
        let snapshot = match self.source.snapshot(clock::now(), self.precision) {
            Ok(s) => {
                if self.failing {
                    tracing::info!("clock state readable again");
                    self.failing = false;
                }
                s
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(error = %e, "cannot read the clock state; serving unsynchronised (LI=3)");
                    self.failing = true;
                }
                ServerSnapshot::unsynchronized(self.precision)
            }
        };
        self.cell.publish(&snapshot);
        let state = (snapshot.is_synchronized(), snapshot.stratum, snapshot.leap.to_bits());
        if self.last != Some(state) {
            if snapshot.is_synchronized() {
                tracing::info!(stratum = snapshot.stratum, leap = ?snapshot.leap, refid = ?snapshot.ref_id,
                    root_dispersion_s = snapshot.root_dispersion.to_seconds_f64(), "serving synchronised time");
            } else {
                tracing::warn!("serving unsynchronised: replies carry LI=3, stratum 16");
            }
            self.last = Some(state);
        }
        snapshot
    }

    pub fn spawn(mut self, shutdown: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("stratumd-sync".into()).spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let mut waited = Duration::ZERO;
                while waited < UPDATE_INTERVAL && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(SHUTDOWN_CHECK);
                    waited += SHUTDOWN_CHECK;
                }
                self.update();
            }
        })
    }
}

impl std::fmt::Debug for dyn ClockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
