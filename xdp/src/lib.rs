//! stratum-xdp: the XDP steering program and its loader, and the AF_XDP socket layer (UMEM, rings).
//!
//! The only crate with substantial `unsafe`: each unsafe function is small and says in its
//! `# Safety` section what the caller must hold.

pub mod inject;
pub mod meta;
pub mod program;
pub mod xsk;
