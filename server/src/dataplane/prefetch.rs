//! Prefetch hints: a worker's first pass over a batch names the memory its second pass will read
//! (each request's rate-limiter set, each frame's headers), so that the cache misses overlap
//! instead of stalling the decisions one by one.

/// Bytes of one cache line.
pub const LINE: usize = 64;

/// Asks the CPU to bring the `bytes` from `p` (rounded out to whole cache lines) into its caches.
/// Only a hint: it never faults, never blocks on the data, and does nothing where the target has
/// no prefetch instruction we use.
#[inline(always)]
pub fn prefetch(p: *const u8, bytes: usize) {
    let lines = (p as usize % LINE + bytes.max(1)).div_ceil(LINE);
    let first = p.wrapping_sub(p as usize % LINE);
    for line in 0..lines {
        prefetch_line(first.wrapping_add(line * LINE));
    }
}

#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint; it never faults, whatever the address, and writes nothing.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_anywhere_are_harmless() {
        let data = [7u8; 300];
        prefetch(data.as_ptr(), data.len());
        prefetch(std::ptr::null(), 128);
        prefetch(usize::MAX as *const u8, 1);
        assert_eq!(data[299], 7);
    }
}
