//! stratum-bench: an NTP query tool and an open-loop load generator that checks every reply.
//!
//! - [`query`]: one client exchange (offset, delay, stratum, refid, ...), as `ntpdig` does.
//! - [`load`]: a fixed-rate step against one server, with per-reply validation, RTT and server
//!   turnaround histograms; its engines are in [`engine`]. What the engines, `load` and `ramp`
//!   share has a module each, below all three: the step's [`config`] (with the loopback rule,
//!   [`target`]), its [`counts`], an engine's [`outcome`], the step's [`report`], and [`pin`]
//!   for the generator threads.
//! - [`ramp`]: `load --ramp`, load steps at a rising rate until the server loses requests, and
//!   the sustainable rate; [`plot`] draws a ramp into an SVG or a PNG.
//! - [`xdp`]: `load --engine xdp`, raw frames over AF_XDP, and `reflect` ([`reflect`]), a
//!   do-nothing AF_XDP responder for the generator's own ceiling (both need the `xdp` feature).
//! - [`verdict`]: whether a load or a ramp measured the server, or its rate limiter, access
//!   list or unsynchronised clock (the exit status says which).
//! - [`cli`]: the command line; `main.rs` only calls [`cli::run`].
//!
//! The pure half, the requests, the reply checks and the timestamp arithmetic, is
//! stratum-proto's `client` module, which stratumd's upstream client will share.

pub mod cli;
pub mod config;
pub mod counts;
pub mod engine;
pub mod interleaved;
pub mod load;
pub mod nts;
pub mod outcome;
pub mod pin;
pub mod plot;
pub mod query;
pub mod ramp;
#[cfg(feature = "xdp")]
pub mod reflect;
pub mod report;
pub mod target;
pub mod verdict;
pub mod xdp;
