//! The atomics the shared tables (the rate limiter's) use, swapped for loom's under `--cfg loom`
//! so that the model checker can explore every interleaving of their updates. Named for what it
//! is, so that "sync" is free for the RFC 5905 pipeline.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};
