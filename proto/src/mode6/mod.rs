//! NTP mode 6 (control messages, RFC 9327; RFC 1305 appendix B), read-only: what `ntpq` asks
//! and what a management listener answers. Pure: the caller gives the state to report, the
//! client's address, the time and a secret; this module gives back the reply datagrams.
//!
//! - [`header`]: the 12-byte control header, request parsing, fragmentation of a reply.
//! - [`vars`]: the `name=value, ...` text of system and peer variables, and status words.
//! - [`mru`]: the nonce exchange and `mrulist` (REQ_NONCE, READ_MRU) as NTPsec's ntpq does them.
//! - [`answer`]: one request in, its reply fragments out.
//!
//! Mode 6 is an amplification vector (one request, many reply fragments): nothing here decides
//! who may ask. The listener answers only sources on its management allow list, and everyone
//! else's mode 6 is dropped on the data plane (BAD_INPUTS 7 and 58).

pub mod header;
pub mod mru;
pub mod vars;

mod answer;

pub use answer::{answer, Mode6State, Outcome};
pub use header::{parse_request, ErrorCode, Rejection, Request};
pub use mru::{MruEntry, NonceKey};
pub use vars::{PeerVars, Selection, SystemVars, TimeSource};

/// Opcodes (RFC 9327 section 2.1, and ntpd's later ones).
pub mod op {
    pub const READSTAT: u8 = 1;
    pub const READVAR: u8 = 2;
    pub const WRITEVAR: u8 = 3;
    pub const READCLOCK: u8 = 4;
    pub const WRITECLOCK: u8 = 5;
    pub const SETTRAP: u8 = 6;
    pub const ASYNCMSG: u8 = 7;
    pub const CONFIGURE: u8 = 8;
    pub const SAVECONFIG: u8 = 9;
    pub const READ_MRU: u8 = 10;
    pub const READ_ORDLIST_A: u8 = 11;
    pub const REQ_NONCE: u8 = 12;
    pub const UNSETTRAP: u8 = 31;
}
