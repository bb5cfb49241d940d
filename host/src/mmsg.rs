//! recvmmsg/sendmmsg over header arrays the caller owns: the one place the raw batch calls and
//! their "nothing to do now" errors live, for the daemon's socket workers and the load generator.
//!
//! The callers keep their own buffers and header layout (the daemon's carries control messages and
//! source addresses, the load generator's does not); what they share is the call, the
//! would-block rule and the all-zero construction of the C structs.

use std::io;
use std::os::fd::RawFd;

/// Receives into `headers` (at most their count). EAGAIN and EINTR (nothing there, or a signal
/// or socket timeout before the first datagram) come back as `Ok(0)`; other errors as they are.
///
/// # Safety
/// Every header must point at a name buffer, iovecs and a control buffer (where set) that are
/// valid for the kernel to write, with the lengths the header states, for the whole call.
pub unsafe fn receive(fd: RawFd, headers: &mut [libc::mmsghdr], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the caller vouches for every buffer the headers point at.
    let n =
        unsafe { libc::recvmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, flags, std::ptr::null_mut()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// Sends `headers` (all of them, or as many as the socket takes); returns how many left. Errors
/// come back as they are: what a failed datagram means differs between a server (skip that
/// reply) and a load generator (count it), so [`is_would_block`] and the caller decide.
///
/// # Safety
/// Every header must point at iovecs, an address (or none, on a connected socket) and a control
/// buffer (or none) that are valid to read, with the lengths the header states, for the call.
pub unsafe fn send(fd: RawFd, headers: &mut [libc::mmsghdr], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the caller vouches for every buffer the headers point at.
    let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Whether a send error only means "not now": the socket buffer is full (EAGAIN) or a signal
/// came first (EINTR).
pub fn is_would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

/// C structs for which all-zero bytes are a valid value.
///
/// # Safety
/// Implementors guarantee that all-zero bytes are a valid value of the type.
pub unsafe trait ZeroIsValid {}
// SAFETY: plain C structs of integers and raw pointers; zero means null pointers and zero lengths.
unsafe impl ZeroIsValid for libc::sockaddr_storage {}
// SAFETY: as above.
unsafe impl ZeroIsValid for libc::iovec {}
// SAFETY: as above.
unsafe impl ZeroIsValid for libc::mmsghdr {}

/// `n` all-zero values, for header, iovec and address arrays that are filled in afterwards.
pub fn zeroed_vec<T: ZeroIsValid>(n: usize) -> Vec<T> {
    // SAFETY: ZeroIsValid says all-zero bytes are a valid T.
    (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Two datagrams through one receive and one send, and the would-block rules on both sides.
    #[test]
    fn a_batch_goes_through_and_an_empty_socket_is_not_an_error() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        let mut out = [[7u8; 48], [8u8; 48]];
        let mut out_iov: Vec<libc::iovec> = zeroed_vec(2);
        let mut out_headers: Vec<libc::mmsghdr> = zeroed_vec(2);
        for i in 0..2 {
            out_iov[i] = libc::iovec { iov_base: out[i].as_mut_ptr().cast(), iov_len: 48 };
            out_headers[i].msg_hdr.msg_iov = &mut out_iov[i];
            out_headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one live 48-byte buffer; the socket is connected.
        assert_eq!(unsafe { send(client.as_raw_fd(), &mut out_headers, 0) }.unwrap(), 2);

        server.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut input = [[0u8; 64]; 4];
        let mut in_iov: Vec<libc::iovec> = zeroed_vec(4);
        let mut in_headers: Vec<libc::mmsghdr> = zeroed_vec(4);
        for i in 0..4 {
            in_iov[i] = libc::iovec { iov_base: input[i].as_mut_ptr().cast(), iov_len: 64 };
            in_headers[i].msg_hdr.msg_iov = &mut in_iov[i];
            in_headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one live 64-byte buffer and no name or control buffer.
        let n = unsafe { receive(server.as_raw_fd(), &mut in_headers, libc::MSG_WAITFORONE) }.unwrap();
        // Both were sent before the receive, on loopback: both are there.
        assert_eq!(n, 2);
        assert_eq!((in_headers[0].msg_len, input[0][0], input[1][0]), (48, 7, 8));
        // SAFETY: as above.
        assert_eq!(unsafe { receive(server.as_raw_fd(), &mut in_headers, libc::MSG_DONTWAIT) }.unwrap(), 0);

        assert!(is_would_block(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_would_block(&io::Error::from_raw_os_error(libc::EPERM)));
    }
}
