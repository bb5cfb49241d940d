//! The server's side of the protocol: what a request gets. The per-request decision
//! ([`respond::respond`]), the access lists and martian sources it checks, the lock-free rate
//! limiter with Kiss-o'-Death, and the published state a reply is built from
//! ([`snapshot::ServerSnapshot`]).
//!
//! Everything here runs on the data plane's hot path: no allocation, no lock, no clock read (the
//! caller passes every time in), no panic on any input.

pub mod access;
pub mod interleaved;
pub mod ratelimit;
pub mod respond;
pub mod snapshot;
