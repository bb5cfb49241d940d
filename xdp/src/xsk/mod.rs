//! The AF_XDP socket layer: UMEM, the four rings, bind with zero-copy falling back to copy mode,
//! need_wakeup, XDP_STATISTICS and TX metadata (transmit timestamps).
//!
//! Written here rather than taken from a crate because none supports AF_XDP TX metadata, which
//! hardware transmit timestamps need. One UMEM per socket (one socket per queue): a worker owns
//! its queue's frames outright, so nothing is shared between workers.
//!
//! A responder's cycle ([`XskSocket::answer_in_place`]): frames start on the fill ring; the kernel
//! hands them back on the RX ring with a request in each; the reply is written in place and the
//! same address goes on the TX ring (or, for no reply, straight back on the fill ring); sent frames
//! come back on the completion ring and go onto the fill ring again.

pub(crate) mod mmap;
mod respond;
mod ring;
mod socket;
mod sockopt;
mod umem;

pub use respond::{BatchOutcome, ReplyScratch, EMPTY_DESC, MAX_BATCH, TX_WAIT_SLEEP_MS};
pub use ring::{ConsumerRing, ProducerRing};
pub use socket::{statistics, BindMode, XskConfig, XskSocket, XskStatistics, ZeroCopy, DEFAULT_TX_BUDGET};
pub use umem::{Umem, UmemConfig, TX_METADATA_LEN};
