//! The sync thread: the only writer of the time core. For `local` and `external` sources
//! ([`SyncLoop`]) it asks the clock backend once a second for the state to serve, publishes it,
//! and logs when that state changes (never per packet). For `sync`, [`upstream`] polls the
//! upstream servers and drives the sans-IO sync engine instead, with [`resolve`] beside it.

pub mod refclock;
pub mod resolve;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_proto::packet::LeapIndicator;
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
    /// Set for the first update, which the start-up summary reports instead (so that a start
    /// that fails logs its error and nothing else).
    quiet: bool,
    /// Why the first update could not read the clock state, for the start-up summary.
    first_error: Option<String>,
}

impl SyncLoop {
    pub fn new(source: Box<dyn ClockBackend>, cell: Arc<SnapshotCell>, precision: i8) -> Self {
        Self { source, cell, precision, last: None, failing: false, quiet: false, first_error: None }
    }

    /// Computes and publishes the first snapshot without logging it; see [`Self::first_error`].
    pub fn first_update(&mut self) -> ServerSnapshot {
        self.quiet = true;
        let snapshot = self.update();
        self.quiet = false;
        snapshot
    }

    /// Why the first update served unsynchronised time, when the clock state was unreadable.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
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
                if self.quiet {
                    self.first_error = Some(format!("cannot read the clock state: {e}"));
                } else if !self.failing {
                    tracing::error!(error = %e, "cannot read the clock state; serving unsynchronised (LI=3)");
                }
                self.failing = true;
                ServerSnapshot::unsynchronized(self.precision)
            }
        };
        self.cell.publish(&snapshot);
        let state = (snapshot.is_synchronized(), snapshot.stratum, snapshot.leap.to_bits());
        if self.last != Some(state) && !self.quiet {
            if snapshot.is_synchronized() {
                tracing::info!(
                    root_dispersion_s = snapshot.root_dispersion.to_seconds_f64(),
                    "now serving {}",
                    served(&snapshot)
                );
            } else {
                tracing::warn!("now serving {}", served(&snapshot));
            }
        }
        self.last = Some(state);
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
                // Only a loop that still turns keeps systemd's watchdog quiet.
                crate::notify::watchdog();
            }
        })
    }
}

impl std::fmt::Debug for dyn ClockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The state a snapshot serves, in plain words, as the logs show it.
pub fn served(snapshot: &ServerSnapshot) -> String {
    if !snapshot.is_synchronized() {
        return "unsynchronised time (replies carry LI=3, stratum 16)".into();
    }
    let leap = match snapshot.leap {
        LeapIndicator::InsertSecond => ", a leap second to insert at the end of the day",
        LeapIndicator::DeleteSecond => ", a leap second to delete at the end of the day",
        LeapIndicator::NoWarning | LeapIndicator::Unsynchronized => "",
    };
    format!(
        "synchronised time at stratum {}, refid {}{leap}",
        snapshot.stratum,
        snapshot.ref_id.to_text(snapshot.stratum)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::RefId;

    #[test]
    fn the_served_state_reads_as_words() {
        let unsynced = ServerSnapshot::unsynchronized(-20);
        assert_eq!(served(&unsynced), "unsynchronised time (replies carry LI=3, stratum 16)");
        let mut local = ServerSnapshot { leap: LeapIndicator::NoWarning, stratum: 10, ..unsynced };
        local.ref_id = RefId([127, 127, 1, 1]);
        assert_eq!(served(&local), "synchronised time at stratum 10, refid 127.127.1.1");
        let gps = ServerSnapshot { stratum: 1, ref_id: RefId(*b"GPS\0"), leap: LeapIndicator::InsertSecond, ..local };
        assert_eq!(
            served(&gps),
            "synchronised time at stratum 1, refid GPS, a leap second to insert at the end of the day"
        );
    }
}
