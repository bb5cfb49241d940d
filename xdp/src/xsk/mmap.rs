//! An owned memory mapping, unmapped on drop: the UMEM area and the four rings live in these.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A mapping of `len` bytes at `ptr`, owned: nothing else unmaps it.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; who may touch which bytes is governed by the rings (the
// kernel's side) and by &/&mut borrows of the owner (ours), not by the thread that mapped it.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Anonymous, private, zeroed memory for a UMEM; huge pages when `huge` and the system has them
    /// reserved, else ordinary pages.
    pub(crate) fn anonymous(len: usize, huge: bool) -> io::Result<Self> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if huge {
            if let Ok(m) = Self::map(len, libc::PROT_READ | libc::PROT_WRITE, flags | libc::MAP_HUGETLB, -1, 0) {
                return Ok(m);
            }
        }
        Self::map(len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
    }

    /// A ring of an AF_XDP socket, shared with the kernel (`offset` is one of the XDP_PGOFF_*).
    pub(crate) fn ring(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Self> {
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        Self::map(len, libc::PROT_READ | libc::PROT_WRITE, flags, fd.as_raw_fd(), offset as libc::off_t)
    }

    /// A BPF map's values (an array map created with BPF_F_MMAPABLE), shared with the programs
    /// that use it.
    pub(crate) fn bpf_map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        Self::map(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    }

    fn map(
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: libc::c_int,
        offset: libc::off_t,
    ) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases nothing we hold.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and this is the only unmap.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_memory_is_zeroed_and_writable() {
        let m = Mmap::anonymous(1 << 16, false).unwrap();
        assert_eq!(m.len(), 1 << 16);
        // SAFETY: in bounds of a live mapping we own.
        unsafe {
            assert_eq!(*m.as_ptr().add(100), 0);
            *m.as_ptr().add(100) = 7;
            assert_eq!(*m.as_ptr().add(100), 7);
        }
    }

    #[test]
    fn empty_mapping_is_refused() {
        assert!(Mmap::anonymous(0, false).is_err());
    }
}
