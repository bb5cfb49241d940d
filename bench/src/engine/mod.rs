//! Load engines. Each sends paced requests, checks every reply against the request it answers
//! ([`book`], shared by all) and hands back a [`crate::outcome::LoadOutcome`]. The socket engine is
//! here; the AF_XDP one is [`crate::xdp`] (feature `xdp`).

pub mod book;
pub mod socket;
