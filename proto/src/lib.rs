//! stratum-proto: the pure half of stratumd.
//!
//! Bytes and timestamps go in, decisions come out. This crate owns the NTP wire format, timestamp
//! arithmetic, the published server state ([`ServerSnapshot`]) and the server's per-request decision
//! ([`respond`]). It must never do IO, read a clock, allocate on the request path, or panic on any
//! input: every other crate depends on it, and the data plane calls it millions of times a second.
#![forbid(unsafe_code)]

mod atomic;
pub mod auth;
pub mod client;
pub mod frame;
pub mod mode6;
pub mod nts;
pub mod packet;
pub mod server;
pub mod sync;
pub mod time;

pub use auth::{Authenticate, NoAuth};
pub use packet::{KissCode, LeapIndicator, NtpHeader, NtpMode, NtpPacket, RefId};
pub use server::respond::{
    respond, AdmissionPolicy, AdmitAction, ClientRequest, DropReason, RxMeta, ServeAll, Verdict,
};
pub use server::snapshot::{ClockCorrection, ServerSnapshot};
pub use time::{NtpDuration, NtpShort, NtpTimestamp};
