//! stratum-host: the host's facilities that the daemon (stratumd) and the load generator
//! (stratum-bench) both need, written once: reading the system clock as an NTP timestamp, socket
//! options, batched datagram calls, network interface facts, which process holds a UDP port, and
//! memory on huge pages.
//!
//! It owns the thin edge between the operating system and the pure protocol crate: each function
//! wraps one system call or one file the kernel publishes, and carries no policy of its own (no
//! logging, no configuration, no decisions about what to serve). Policy stays with the callers.

pub mod clock;
pub mod cpu;
pub mod hugemem;
pub mod mmsg;
pub mod netif;
pub mod sockopt;
pub mod udp_owner;
