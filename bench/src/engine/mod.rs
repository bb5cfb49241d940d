//! Load engines. Each sends paced requests, checks every reply against the request it answers and
//! hands back a [`crate::load::LoadOutcome`]. Only the socket engine exists so far; the AF_XDP one
//! comes with the xdp crate.

pub mod socket;
