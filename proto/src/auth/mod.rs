//! Authentication of NTP packets: symmetric keys (RFC 5905 section 7.3, RFC 8573), a MAC after
//! the header and extension fields, and NTS (RFC 8915, [`crate::nts`]), both checked and written
//! by [`respond`](crate::respond) through the [`Authenticate`] seam.
//!
//! Pure like the rest of the crate: the keys are parsed from text the caller read
//! ([`keyfile::parse_keys`]) and passed in; nothing here reads a file or a clock. Checking and
//! signing allocate nothing, so they may run on the data plane.

pub mod keyfile;
pub mod keys;

pub use keyfile::{parse_keys, KeyEntry, KeyFileError};
pub use keys::{KeyTable, KeyType, SymmetricKey, MAX_DIGEST_LEN};

use crate::nts::server::{NtsCheck, Verified};

/// Which key verified a request: an opaque handle the same authenticator signs the reply with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef(pub(crate) u32);

/// What the server's authenticator says about a request's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacCheck {
    /// The MAC is right: the reply is signed with the same key.
    Valid(KeyRef),
    /// An unknown key id, a MAC of the wrong length for its key, or one that does not match:
    /// the answer is a crypto-NAK (RFC 5905 section 7.3; what chrony and ntpd send).
    Invalid,
    /// This server holds no keys at all: the request is dropped as before authentication existed
    /// (BAD_INPUTS 10), so a server without keys sends nothing new.
    Unsupported,
}

/// The seam [`respond`](crate::respond) checks a request's MAC and signs its reply through.
///
/// `&mut self` so that a per-worker authenticator may keep state (scratch, counters) without a lock.
pub trait Authenticate {
    /// Checks `digest` (the MAC after its key id) against `signed`, everything before the key id.
    fn check(&mut self, signed: &[u8], key_id: u32, digest: &[u8]) -> MacCheck;

    /// Appends the key id and the MAC of `buf[..len]` at `buf[len..]` with `key` (from
    /// [`MacCheck::Valid`]); returns the new length, or `None` if `buf` has no room for it.
    fn sign(&mut self, key: KeyRef, buf: &mut [u8], len: usize) -> Option<usize>;

    /// NTS (RFC 8915): checks a request with extension fields and no MAC, which may decrypt its
    /// authenticator in place. Without NTS every request is [`NtsCheck::NotNts`] (answered as
    /// a basic request, as before NTS existed).
    fn check_nts(&mut self, _packet: &mut [u8]) -> NtsCheck {
        NtsCheck::NotNts
    }

    /// Writes the NTS fields of the reply (header already in `buf[..48]`) to a request that
    /// [`Authenticate::check_nts`] verified, within its `request_len` bytes; the reply's length.
    fn sign_nts(&mut self, _buf: &mut [u8], _request_len: usize, _verified: &Verified) -> Option<usize> {
        None
    }
}

/// No keys: every MAC is [`MacCheck::Unsupported`]. The authenticator of a server without
/// `[auth] keys`, of the benchmarks and of tests that do not authenticate.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl Authenticate for NoAuth {
    fn check(&mut self, _: &[u8], _: u32, _: &[u8]) -> MacCheck {
        MacCheck::Unsupported
    }

    fn sign(&mut self, _: KeyRef, _: &mut [u8], _: usize) -> Option<usize> {
        None
    }
}
