//! Management: what operators and their tools talk to. The endpoint plumbing (accept loop,
//! bounded connection threads), Prometheus `/metrics` over HTTP, the control socket that
//! `stratumctl` asks, and the status model both read.
//!
//! Nothing here is on the request path: it reads counters and the time core, and never writes
//! anything a worker reads.

pub mod control;
pub mod control_path;
pub mod endpoint;
pub mod http;
pub mod metrics;
pub mod ntpq;
pub mod ntske;
pub mod stats;
pub mod stats_format;
pub mod status;
pub mod status_json;
