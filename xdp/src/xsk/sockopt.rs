//! `setsockopt`/`getsockopt` at `SOL_XDP`, the one place their pointers and lengths are handled:
//! ring sizes, the UMEM registration and the TX budget going in; the ring offsets and the
//! statistics coming out.
//!
//! Owns the calls only. Never decides what an option's value means (its caller does), and reads
//! into no type the kernel could fill with an invalid value ([`Plain`]).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A type the kernel may fill with any bytes: a C struct of integers.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value of the type.
pub(super) unsafe trait Plain: Copy {}

// SAFETY: six u64 counters.
unsafe impl Plain for libc::xdp_statistics {}
// SAFETY: four xdp_ring_offset, each four u64.
unsafe impl Plain for libc::xdp_mmap_offsets {}

/// Sets the `SOL_XDP` option `opt` of the AF_XDP socket `fd` to `value`.
pub(super) fn set<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T and the length passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads the `SOL_XDP` option `opt` of the AF_XDP socket `fd` into `value`; returns how many
/// bytes the kernel wrote (fewer than the size of T for an older layout).
pub(super) fn get<T: Plain>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &mut T) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live T and `len` its size; the kernel writes at most `len` bytes, and
    // any bytes are a valid T (Plain).
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (value as *mut T).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}
