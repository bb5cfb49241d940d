//! Zero-filled anonymous memory on huge pages where the kernel gives them, for tables that every
//! request touches at a random place (the rate limiter's): with 4 KiB pages each such access is
//! also a TLB miss; with 2 MiB pages a 32 MiB table needs 16 TLB entries.
//!
//! [`HugeRegion::map`] tries, in order: a `MAP_HUGETLB` mapping (the administrator's reserved
//! pool, `vm.nr_hugepages`; empty by default), then an ordinary mapping with
//! `madvise(MADV_HUGEPAGE)` (transparent huge pages, when THP is `always` or `madvise`), aligned to
//! 2 MiB so that every part of it can be a huge page. Either way the pages are faulted in at once
//! (nothing faults later, on the hot path). [`HugeRegion::pages`] says what the kernel gave.

use std::io;
use std::ptr::NonNull;

use stratum_proto::server::ratelimit::{RateLimitConfig, SetBlock, TableMemory};

/// The huge page size this module aligns to (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// What backs a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// Reserved huge pages (`MAP_HUGETLB`).
    HugeTlb,
    /// Transparent huge pages: `huge_bytes` of the region are on huge pages now (read back from
    /// /proc/self/smaps after faulting it in).
    Transparent { huge_bytes: usize },
    /// Base pages: the kernel gave no huge pages (THP `never`, or none free).
    Base,
}

impl std::fmt::Display for PageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HugeTlb => f.write_str("reserved huge pages (MAP_HUGETLB)"),
            Self::Transparent { huge_bytes } => {
                write!(f, "transparent huge pages ({} MiB on huge pages)", huge_bytes >> 20)
            }
            Self::Base => f.write_str("base pages (no huge pages from the kernel)"),
        }
    }
}

/// An anonymous, private, zero-filled mapping, unmapped on drop.
#[derive(Debug)]
pub struct HugeRegion {
    ptr: NonNull<u8>,
    len: usize,
    kind: PageKind,
}

// SAFETY: the region is plain memory owned by this value; sharing it is what its users' atomics
// (the only views handed out, see LimiterMemory) are for.
unsafe impl Send for HugeRegion {}
// SAFETY: as above; HugeRegion itself never writes after map().
unsafe impl Sync for HugeRegion {}

impl HugeRegion {
    /// Maps `len` bytes (rounded up to [`HUGE_PAGE`]), 2 MiB aligned, all zero, faulted in.
    pub fn map(len: usize) -> io::Result<Self> {
        let len = len.max(1).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a new anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB | libc::MAP_POPULATE, -1, 0)
        };
        if p != libc::MAP_FAILED {
            let ptr = NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?;
            return Ok(Self { ptr, len, kind: PageKind::HugeTlb });
        }
        // Over-map by one huge page and trim both ends to a 2 MiB boundary.
        let span = len + HUGE_PAGE;
        // SAFETY: as above.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), span, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        let start = base.next_multiple_of(HUGE_PAGE);
        // SAFETY: both ranges lie inside the mapping just made and nothing refers to them.
        unsafe {
            if start > base {
                libc::munmap(p, start - base);
            }
            let end = start + len;
            if base + span > end {
                libc::munmap(end as *mut libc::c_void, base + span - end);
            }
        }
        let ptr = NonNull::new(start as *mut u8).expect("mmap returned a non-null address");
        // SAFETY: [start, start + len) is our mapping; the advice changes no contents. A kernel
        // without THP refuses it (EINVAL): base pages then, as without it.
        let advised = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } == 0;
        // Fault every page in now, one write per base page (zero: the contents stay as mapped).
        for offset in (0..len).step_by(4096) {
            // SAFETY: inside the mapping, which nothing else refers to yet.
            unsafe { ptr.as_ptr().add(offset).write_volatile(0) };
        }
        let huge_bytes = if advised { anon_huge_bytes(start).unwrap_or(0) } else { 0 };
        let kind = if huge_bytes > 0 { PageKind::Transparent { huge_bytes } } else { PageKind::Base };
        Ok(Self { ptr, len, kind })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pages(&self) -> PageKind {
        self.kind
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for HugeRegion {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; every view of it borrowed from self is gone.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `AnonHugePages` of the mapping that starts at `start`, from /proc/self/smaps.
fn anon_huge_bytes(start: usize) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let header = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&header)).skip(1);
    lines.find_map(|l| {
        let kb = l.strip_prefix("AnonHugePages:")?.trim().strip_suffix("kB")?.trim();
        kb.parse::<usize>().ok().map(|kb| kb << 10)
    })
}

/// The rate limiter's table in a [`HugeRegion`]: hand it to
/// [`RateLimiter::with_memory`](stratum_proto::server::ratelimit::RateLimiter::with_memory).
#[derive(Debug)]
pub struct LimiterMemory {
    region: HugeRegion,
    sets: usize,
}

impl LimiterMemory {
    /// Maps the table `config` needs.
    pub fn map(config: &RateLimitConfig) -> io::Result<Self> {
        let sets = stratum_proto::server::ratelimit::RateLimiter::sets_for(config);
        let region = HugeRegion::map(sets * std::mem::size_of::<SetBlock>())?;
        Ok(Self { region, sets })
    }

    pub fn pages(&self) -> PageKind {
        self.region.pages()
    }
}

impl TableMemory for LimiterMemory {
    fn blocks(&self) -> &[SetBlock] {
        // SAFETY: the region is 2 MiB aligned (more than SetBlock's alignment), at least
        // sets * size_of::<SetBlock>() bytes, zero-filled at map time, and lives as long as self.
        // SetBlock is repr(C) and only AtomicU64s (the representation of u64), for which every bit
        // pattern, zero included, is valid; after map() it is accessed only through these atomics.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr().cast::<SetBlock>(), self.sets) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::server::ratelimit::{RateDecision, RateLimiter};
    use stratum_proto::NtpTimestamp;

    #[test]
    fn a_region_is_aligned_zeroed_and_sized_up() {
        let r = HugeRegion::map(3 << 20).unwrap();
        assert_eq!((r.len(), r.as_ptr() as usize % HUGE_PAGE), (4 << 20, 0));
        // SAFETY: inside the mapping; only read here.
        let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(bytes.iter().all(|b| *b == 0));
        // What the kernel gave depends on the host (THP setting, free memory): any answer is
        // allowed, but THP `always` or `madvise` with memory to spare should give some.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        eprintln!("THP {thp:?}: {}", r.pages());
    }

    #[test]
    fn the_limiter_runs_in_mapped_memory() {
        let config = RateLimitConfig { clients: 1 << 16, burst: 1, ..Default::default() };
        let memory = LimiterMemory::map(&config).unwrap();
        let l = RateLimiter::with_memory(&config, [1, 2], Box::new(memory)).unwrap();
        assert!(l.in_provided_memory());
        let now = NtpTimestamp::from_parts(3_900_000_000, 0);
        let c = "192.0.2.1".parse().unwrap();
        assert!(l.check(c, now, 0).decision.is_answered());
        assert_eq!(l.check(c, now, 1 | 0xFF00).decision, RateDecision::Drop);
        assert_eq!(l.occupancy(), 1);
    }
}
