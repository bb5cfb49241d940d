//! Batched datagram IO: one recvmmsg fills up to `capacity` buffers, one sendmmsg sends the
//! replies written over them. All the raw pointers the kernel needs point into this struct's own
//! heap allocations, which never move or resize after construction.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use stratum_host::mmsg::{self, zeroed_vec};

use super::cmsg::{self, PacketInfo, RECV_SPACE, SEND_SPACE};

/// Larger than any request we answer, so oversized datagrams are seen as such (and MSG_TRUNC).
pub const BUFFER_LEN: usize = 2048;

/// 8-byte aligned control buffer.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control<const N: usize>([u8; N]);

pub struct MessageBatch {
    capacity: usize,
    buffers: Vec<[u8; BUFFER_LEN]>,
    names: Vec<libc::sockaddr_storage>,
    recv_control: Vec<Control<RECV_SPACE>>,
    recv_iov: Vec<libc::iovec>,
    recv_headers: Vec<libc::mmsghdr>,
    send_control: Vec<Control<SEND_SPACE>>,
    send_iov: Vec<libc::iovec>,
    send_headers: Vec<libc::mmsghdr>,
    queued: usize,
}

impl std::fmt::Debug for MessageBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBatch").field("capacity", &self.capacity).field("queued", &self.queued).finish()
    }
}

impl MessageBatch {
    pub fn new(capacity: usize) -> Self {
        let mut batch = Self {
            capacity,
            buffers: vec![[0u8; BUFFER_LEN]; capacity],
            names: zeroed_vec(capacity),
            recv_control: vec![Control([0; RECV_SPACE]); capacity],
            recv_iov: zeroed_vec(capacity),
            recv_headers: zeroed_vec(capacity),
            send_control: vec![Control([0; SEND_SPACE]); capacity],
            send_iov: zeroed_vec(capacity),
            send_headers: zeroed_vec(capacity),
            queued: 0,
        };
        for i in 0..capacity {
            batch.recv_iov[i].iov_base = batch.buffers[i].as_mut_ptr().cast();
            let h = &mut batch.recv_headers[i].msg_hdr;
            h.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut batch.recv_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = batch.recv_control[i].0.as_mut_ptr().cast();
            let h = &mut batch.send_headers[i].msg_hdr;
            h.msg_iov = &mut batch.send_iov[i];
            h.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to `capacity` datagrams. `flags` is MSG_WAITFORONE (block for the first) or
    /// MSG_DONTWAIT. Returns how many arrived; EAGAIN/EINTR/timeouts come back as `Ok(0)`.
    pub fn receive(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        for i in 0..self.capacity {
            self.recv_iov[i].iov_len = BUFFER_LEN;
            let h = &mut self.recv_headers[i].msg_hdr;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_controllen = RECV_SPACE;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at buffers owned by `self` with the lengths set just above;
        // they stay valid and unaliased for the duration of the call.
        unsafe { mmsg::receive(fd, &mut self.recv_headers, flags) }
    }

    /// Datagram `i` of the last receive: its payload (as far as it fit), whether it was cut short,
    /// its source, and its control messages.
    pub fn datagram(&mut self, i: usize) -> (&mut [u8], bool, Option<SocketAddr>, cmsg::RecvInfo) {
        let h = &self.recv_headers[i];
        let len = (h.msg_len as usize).min(BUFFER_LEN);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let control_len = h.msg_hdr.msg_controllen.min(RECV_SPACE);
        let source = sockaddr_to_std(&self.names[i], h.msg_hdr.msg_namelen);
        let info = cmsg::parse(&self.recv_control[i].0[..control_len]);
        (&mut self.buffers[i][..len], truncated, source, info)
    }

    /// Datagram `i`'s source address alone (a batch's first pass, which prefetches).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        sockaddr_to_std(&self.names[i], self.recv_headers[i].msg_hdr.msg_namelen)
    }

    /// Queues datagram `i`'s buffer, first `len` bytes, back to its source; from the address the
    /// request was sent to when `source` is given (wildcard sockets).
    pub fn queue_reply(&mut self, i: usize, len: usize, source: Option<&PacketInfo>) {
        let j = self.queued;
        self.send_iov[j].iov_base = self.buffers[i].as_mut_ptr().cast();
        self.send_iov[j].iov_len = len.min(BUFFER_LEN);
        let control_len = source.map_or(0, |s| cmsg::write_source(&mut self.send_control[j].0, s));
        let h = &mut self.send_headers[j].msg_hdr;
        h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.recv_headers[i].msg_hdr.msg_namelen;
        h.msg_control =
            if control_len == 0 { std::ptr::null_mut() } else { self.send_control[j].0.as_mut_ptr().cast() };
        h.msg_controllen = control_len;
        self.queued += 1;
    }

    /// Replies queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Asks the kernel to stamp the reply queued last as it leaves (`flags`: SO_TIMESTAMPING
    /// recording flags); the stamp comes back on the socket's error queue
    /// ([`super::errqueue::TxStamps`]). Only that datagram asks; the others cost nothing.
    pub fn request_tx_stamp(&mut self, flags: u32) {
        let Some(j) = self.queued.checked_sub(1) else { return };
        let used = self.send_headers[j].msg_hdr.msg_controllen;
        let written = self.send_control[j].0.get_mut(used..).map_or(0, |out| cmsg::write_tx_stamp_request(out, flags));
        if written > 0 {
            let h = &mut self.send_headers[j].msg_hdr;
            h.msg_control = self.send_control[j].0.as_mut_ptr().cast();
            h.msg_controllen = used + written;
        }
    }

    /// Sends every queued reply without blocking. Returns (sent, not sent); a full socket buffer
    /// or a per-datagram error drops that reply (counted by the caller), never blocks the worker.
    pub fn send_queued(&mut self, fd: RawFd) -> (usize, usize) {
        let total = std::mem::take(&mut self.queued);
        let mut at = 0;
        let mut failed = 0;
        while at < total {
            // SAFETY: headers at..total were filled by queue_reply and point into buffers owned by
            // `self`, unchanged since.
            match unsafe { mmsg::send(fd, &mut self.send_headers[at..total], libc::MSG_DONTWAIT) } {
                Ok(n) if n > 0 => at += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Ok(_) => {
                    failed += total - at;
                    break;
                }
                Err(e) if mmsg::is_would_block(&e) => {
                    failed += total - at;
                    break;
                }
                // This datagram failed on its own (e.g. EPERM from a firewall); skip it.
                Err(_) => {
                    failed += 1;
                    at += 1;
                }
            }
        }
        (total - failed, failed)
    }
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and sockaddr_storage is
            // large and aligned enough for any address type.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_a_batch_and_echoes_it() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 48], server.local_addr().unwrap()).unwrap();
        }
        client.send_to(&[9u8; 3000], server.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));

        let mut batch = MessageBatch::new(8);
        let n = batch.receive(server.as_raw_fd(), libc::MSG_DONTWAIT).unwrap();
        assert_eq!(n, 6);
        for i in 0..n {
            let (payload, truncated, source, _) = batch.datagram(i);
            assert_eq!(source, Some(client.local_addr().unwrap()));
            if i < 5 {
                assert_eq!((payload.len(), truncated, payload[0]), (48, false, i as u8));
                batch.queue_reply(i, 48, None);
            } else {
                assert!(truncated && payload.len() == BUFFER_LEN);
            }
        }
        assert_eq!(batch.send_queued(server.as_raw_fd()), (5, 0));
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((len, from, buf[0]), (48, server.local_addr().unwrap(), i));
        }
        // Nothing waiting: a non-blocking receive returns zero, not an error.
        assert_eq!(batch.receive(server.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 0);
    }
}
