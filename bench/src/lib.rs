//! stratum-bench: an NTP query tool and an open-loop load generator that checks every reply.
//!
//! - [`query`]: one client exchange (offset, delay, stratum, refid, ...), as `ntpdig` does.
//! - [`load`]: a fixed-rate step against one server, with per-reply validation, RTT and server
//!   turnaround histograms; its engines are in [`engine`].
//! - [`ramp`]: `load --ramp`, load steps at a rising rate until the server loses requests, and
//!   the sustainable rate; [`plot`] draws a ramp into a PNG.
//! - [`reply`]: the pure half: reply checks and timestamp arithmetic, built on stratum-proto.
//! - [`xdp`]: `load --engine xdp`, raw frames over AF_XDP, and `reflect` ([`reflect`]), a
//!   do-nothing AF_XDP responder for the generator's own ceiling (both need the `xdp` feature).
//! - [`cli`]: the command line; `main.rs` only calls [`cli::run`].

pub mod cli;
pub mod engine;
pub mod load;
pub mod plot;
pub mod query;
pub mod ramp;
#[cfg(feature = "xdp")]
pub mod reflect;
pub mod reply;
pub mod xdp;
