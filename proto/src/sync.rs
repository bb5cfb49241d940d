//! The atomics the shared tables use, swapped for loom's under `--cfg loom` so that the model
//! checker can explore every interleaving of their updates.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};
