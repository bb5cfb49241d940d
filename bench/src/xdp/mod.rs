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

/// How `load --engine xdp` sends its requests (`--tx`); replies always come back on AF_XDP sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxPath {
    /// Frames written in user space and pushed on the AF_XDP TX ring (copy mode allocates a
    /// socket buffer per frame: about 0.3-0.5 M/s a core on veth).
    #[default]
    Xsk,
    /// Frames made in the kernel by a BPF program run in live frames mode and handed to the
    /// driver's ndo_xdp_xmit (several M/s a core). The interface must take XDP frames: a NIC
    /// driver with ndo_xdp_xmit, or a veth whose peer has an XDP program or GRO on.
    Inject,
}

impl std::fmt::Display for TxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxPath::Xsk => "xsk",
            TxPath::Inject => "inject",
        })
    }
}
