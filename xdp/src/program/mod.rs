//! The XDP steering program (`src/bpf/steer.bpf.c`): load, attach through a BPF link, and the maps
//! the server talks to (the AF_XDP socket per queue, the deny tries, the counters).
//!
//! The program redirects NTP requests (UDP to the configured port, IPv4 or IPv6, up to two VLAN
//! tags) to the AF_XDP socket of the receive queue they arrived on, with the receive metadata
//! ([`crate::meta`]) written in front of the frame; everything else goes to the kernel untouched.
//!
//! Deny tries: two LPM tries on the source address, `deny_v4` keyed `{u32 prefixlen, [u8; 4]}`
//! and `deny_v6` keyed `{u32 prefixlen, [u8; 16]}` (prefix length in bits, host byte order;
//! address in network order, host bits cleared). An IPv4-mapped IPv6 network is kept in the v6
//! trie as written: a frame's source address is looked up in the trie of its own IP version.
//!
//! [`TestProgram`] loads the same program without attaching it and runs frames through it with
//! BPF_PROG_TEST_RUN (tests, and the `stratumd` self-check).
//!
//! One file a job: `load` (the object, the port knob, the entry point), `attach` (the BPF link,
//! modes, [`AttachError`], [`SteeringProgram`]), `maps` (socket slots, deny tries, counters),
//! `query` ([`query_xdp`]) and `test_run` ([`TestProgram`]). This file holds only the public
//! names, the XDP action values and the libbpf error conversion they share; it never talks to
//! the kernel itself.

mod attach;
mod load;
mod maps;
mod query;
mod test_run;

use std::io;

use libbpf_rs::ErrorKind;

pub use attach::{AttachError, AttachedMode, QueueSocketError, SteeringProgram, XdpMode};
pub(crate) use load::route_libbpf_messages;
pub use load::ProgramConfig;
pub use maps::{LocalAddress, ProgramCounters, XSK_QUEUES};
pub use query::{query_xdp, xdp_link_holder, LinkHolder, XdpQuery};
pub use test_run::{TestProgram, TestRunOutput};

/// XDP actions (the values a program returns).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// A libbpf error as an `io::Error` of the same kind, its context chain in the message.
fn to_io(e: libbpf_rs::Error) -> io::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
        ErrorKind::InvalidData => io::ErrorKind::InvalidData,
        ErrorKind::Unsupported => io::ErrorKind::Unsupported,
        ErrorKind::OutOfMemory => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{e:#}"))
}
