//! The client side of an NTP exchange: building a request, checking a reply against it, and the
//! offset and delay from the exchange's four timestamps. One copy, used by stratum-bench (its
//! `query` and its load generator), by tests, and by stratumd's upstream client when it comes.
//!
//! - [`request`](mod@request): the 48-byte mode 3 request and where its transmit timestamp goes.
//! - [`reply`]: RFC 5905's on-wire checks of a reply against the request it answers (length,
//!   origin, mode, version, kiss-o'-death, zero timestamps), and what a reply says of its server
//!   (synchronised, kiss-o'-death, unsynchronised).
//! - [`numbered`]: requests whose transmit timestamp carries a run nonce and a sequence number,
//!   so that a reply names the request it answers (the load generator's millions in flight).
//! - [`timestamps`]: T1 (our send time), T2 (the server's receive timestamp), T3 (its transmit
//!   timestamp) and T4 (our receive time): offset θ = ((T2 - T1) + (T3 - T4)) / 2, delay
//!   δ = (T4 - T1) - (T3 - T2), and the check that they lie in that order. Every difference goes
//!   through [`NtpTimestamp::since`](crate::time::NtpTimestamp::since), so it stays right across
//!   an era boundary (2036) as long as the true difference is under 68 years.
//!
//! This module owns those rules and nothing else: no sockets, no retries, no poll intervals, no
//! clock filter. It must never do IO, read a clock (T1 and T4 are the caller's, passed in),
//! allocate, or panic on any reply: a reply is whatever the network brought.

pub mod numbered;
pub mod reply;
pub mod request;
pub mod timestamps;

pub use numbered::{check_numbered_reply, numbered_transmit, origin_nonce, NumberedError, NumberedReply};
pub use reply::{check_reply, classify, ReplyClass, ReplyError};
pub use request::{request, TRANSMIT_AT, VERSION};
pub use timestamps::{precision_allowance, OutOfOrder, Timestamps};
