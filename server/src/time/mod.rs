//! Time: the time core (the seqlock'd [`stratum_proto::ServerSnapshot`] one writer publishes and
//! every worker reads) and the clock backends that say what state the served time is in.
//!
//! Nothing here runs per packet except [`core::SnapshotReader::refresh`], once a batch.

pub mod clock;
pub mod core;
