//! Clock backends: what the served time's state (stratum, leap, dispersion...) is right now.
//!
//! A [`ClockBackend`] turns "what is true about the host clock" into a [`ServerSnapshot`]. The sync
//! thread asks it once a second and publishes the result. `source = "sync"` is not one of these:
//! its upstream thread ([`crate::sync::upstream`]) drives the sync engine and publishes itself, on
//! every clock update.

pub mod external;
pub mod local;

use stratum_proto::{NtpTimestamp, ServerSnapshot};

use crate::config::{ClockSource, Config};

pub trait ClockBackend: Send {
    /// How the source describes itself in the start-up summary.
    fn describe(&self) -> String;

    /// The snapshot to serve as of `now` (host clock). An error means the state cannot be known;
    /// the caller then serves "unsynchronised" and reports the error.
    fn snapshot(&mut self, now: NtpTimestamp, precision: i8) -> std::io::Result<ServerSnapshot>;
}

/// The backend of a `local` or `external` source; None for `sync`, which has its own thread.
pub fn from_config(config: &Config) -> Option<Box<dyn ClockBackend>> {
    match config.clock.source {
        ClockSource::Local => Some(Box::new(local::LocalClock::new(config.clock.identity()))),
        ClockSource::External => Some(Box::new(external::ExternalClock::new(config.clock.identity()))),
        ClockSource::Sync => None,
    }
}
