//! The server's interleaved-mode adapter in its simplest form, straight to the shared store
//! (included with `#[path]` by benches/respond.rs and tests/no_alloc.rs).

use stratum_proto::server::interleaved::{Interleave, InterleavedStore};
use stratum_proto::NtpTimestamp;

/// Takes and saves entries of one `InterleavedStore`, as a worker does.
pub(crate) struct Shared<'a>(pub(crate) &'a InterleavedStore);

impl Interleave for Shared<'_> {
    fn take(&mut self, origin: NtpTimestamp) -> Option<NtpTimestamp> {
        self.0.take(origin).map(|s| s.transmit)
    }
    fn save(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp) {
        self.0.save(receive, transmit);
    }
}
