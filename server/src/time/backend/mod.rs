//! Clock backends: what the served time's state (stratum, leap, dispersion...) is right now.
//!
//! A [`ClockBackend`] turns "what is true about the host clock" into a [`ServerSnapshot`]. The sync
//! thread asks it once a second and publishes the result. The upstream/refclock discipline (a later
//! piece of work) becomes another implementation of this trait.

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

pub fn from_config(config: &Config) -> Box<dyn ClockBackend> {
    match config.clock.source {
        ClockSource::Local => Box::new(local::LocalClock::new(config.clock.identity())),
        ClockSource::External => Box::new(external::ExternalClock::new(config.clock.identity())),
    }
}
