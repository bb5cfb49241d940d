//! Time: the time core (the seqlock'd [`stratum_proto::ServerSnapshot`] one writer publishes and
//! every worker reads) the clock backends that say what state the served time is in, and the kernel's clock
//! interface they read, and the system discipline's hold on it ([`system`]).
//!
//! Nothing here runs per packet except [`core::SnapshotReader::refresh`], once a batch.

pub mod backend;
pub mod core;
pub mod kernel;
pub mod system;
