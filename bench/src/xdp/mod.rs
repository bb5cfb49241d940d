//! The AF_XDP side of stratum-bench: raw request frames from a simulated client network
//! ([`frame`]), the interface and next-hop addresses ([`net`]), and with the `xdp` feature the
//! engine of `load --engine xdp` ([`engine`]). The pure parts build and are tested without it.

#[cfg(feature = "xdp")]
pub mod engine;
pub mod frame;
pub mod net;

/// The simulated clients' UDP port (`--client-port`).
pub const DEFAULT_CLIENT_PORT: u16 = 40123;
/// Simulated client addresses (`--clients`).
pub const DEFAULT_CLIENTS: u32 = 4096;
