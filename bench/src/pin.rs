//! Pinning generator threads to cores.

/// Pins the calling thread to `core` (nothing to do for None): each generator thread to its
/// `--cores` entry.
pub fn pin_to(core: Option<usize>) -> anyhow::Result<()> {
    match core {
        Some(core) if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) => {
            anyhow::bail!("cannot pin to core {core}")
        }
        _ => Ok(()),
    }
}
