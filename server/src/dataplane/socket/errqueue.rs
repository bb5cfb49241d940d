//! Transmit timestamps for the socket backend (SO_TIMESTAMPING TX): only the replies to
//! interleaved clients ask for one (a per-message control message, so a basic reply costs
//! nothing more), and the kernel loops each such reply back on the socket's error queue with the
//! time the driver (software) or NIC (hardware) sent it. The worker reads the error queue with
//! one recvmmsg(MSG_ERRQUEUE) after the batch's sendmmsg, and only while stamps are outstanding,
//! so the receive path is unchanged.
//!
//! Matching a stamp to its reply: the looped-back packet is the reply itself (Ethernet, IP, UDP,
//! NTP), and its receive timestamp is the interleaved store's key, unique per reply. No
//! per-socket counter (OPT_ID) to keep in step with the sends, and nothing to remember per reply.

use std::io;
use std::os::fd::RawFd;

use stratum_host::mmsg::{self, zeroed_vec};
use stratum_proto::NtpTimestamp;

use super::cmsg;
use crate::dataplane::interleave::{reply_key, TxStampMode};

/// Room for a looped-back reply: Ethernet with two VLAN tags, IPv6, UDP, the NTP header (a longer
/// reply is cut short, MSG_TRUNC, which loses nothing we read).
const LOOPED_LEN: usize = 14 + 8 + 40 + 8 + 48;
/// SCM_TIMESTAMPING, IP(V6)_RECVERR (sock_extended_err and the offender's address) and room.
const CONTROL_LEN: usize = 256;
/// Error-queue reads that found nothing before outstanding stamps are given up on (a stamp the
/// driver never made must not keep the worker reading an empty queue every batch).
const EMPTY_READS_BEFORE_GIVING_UP: u32 = 4;

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

/// One worker's error-queue reader and the flags its replies ask with.
pub struct TxStamps {
    mode: TxStampMode,
    buffers: Vec<[u8; LOOPED_LEN]>,
    control: Vec<Control>,
    iov: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Per socket of the worker: stamps asked for and not yet read, and empty reads since.
    outstanding: Vec<(u32, u32)>,
}

impl std::fmt::Debug for TxStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxStamps").field("mode", &self.mode).field("outstanding", &self.outstanding).finish()
    }
}

impl TxStamps {
    /// None when `mode` is off. `sockets`: how many sockets the worker has; `capacity`: stamps
    /// read per call (the worker's batch size).
    pub fn new(mode: TxStampMode, sockets: usize, capacity: usize) -> Option<Self> {
        if mode == TxStampMode::Off {
            return None;
        }
        let capacity = capacity.max(1);
        let mut s = Self {
            mode,
            buffers: vec![[0u8; LOOPED_LEN]; capacity],
            control: vec![Control([0; CONTROL_LEN]); capacity],
            iov: zeroed_vec(capacity),
            headers: zeroed_vec(capacity),
            outstanding: vec![(0, 0); sockets],
        };
        for i in 0..capacity {
            s.iov[i].iov_base = s.buffers[i].as_mut_ptr().cast();
            s.headers[i].msg_hdr.msg_iov = &mut s.iov[i];
            s.headers[i].msg_hdr.msg_iovlen = 1;
            s.headers[i].msg_hdr.msg_control = s.control[i].0.as_mut_ptr().cast();
        }
        Some(s)
    }

    /// The SO_TIMESTAMPING recording flags a reply's control message carries.
    pub fn request_flags(&self) -> u32 {
        match self.mode {
            TxStampMode::Hardware => libc::SOF_TIMESTAMPING_TX_HARDWARE,
            _ => libc::SOF_TIMESTAMPING_TX_SOFTWARE,
        }
    }

    /// `n` replies sent on socket `socket` asked for a stamp.
    pub fn asked(&mut self, socket: usize, n: u32) {
        if let Some(o) = self.outstanding.get_mut(socket) {
            o.0 = o.0.saturating_add(n);
            o.1 = 0;
        }
    }

    /// Reads the stamps waiting on `fd`'s error queue (one call) while any are outstanding, and
    /// hands each as (the reply's receive timestamp, the time it left on the host clock) to
    /// `found`. Returns how many were read.
    pub fn drain(&mut self, socket: usize, fd: RawFd, mut found: impl FnMut(NtpTimestamp, NtpTimestamp)) -> usize {
        let Some(&(waiting, empty)) = self.outstanding.get(socket) else { return 0 };
        if waiting == 0 {
            return 0;
        }
        let n = self.receive(fd).unwrap_or(0);
        for i in 0..n {
            let h = &self.headers[i];
            let len = (h.msg_len as usize).min(LOOPED_LEN);
            let control_len = h.msg_hdr.msg_controllen.min(CONTROL_LEN);
            let info = cmsg::parse(&self.control[i].0[..control_len]);
            let stamp = match self.mode {
                TxStampMode::Hardware => info.hardware_stamp.or(info.software_stamp),
                _ => info.software_stamp,
            };
            if let (Some(stamp), Some(key)) = (stamp, reply_key(&self.buffers[i][..len])) {
                found(key, stamp);
            }
        }
        let o = &mut self.outstanding[socket];
        if n == 0 {
            o.1 = empty + 1;
            if o.1 >= EMPTY_READS_BEFORE_GIVING_UP {
                *o = (0, 0);
            }
        } else {
            *o = (waiting.saturating_sub(n as u32), 0);
        }
        n
    }

    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..self.headers.len() {
            self.iov[i].iov_len = LOOPED_LEN;
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_controllen = CONTROL_LEN;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at buffers owned by `self` with the lengths set above; they
        // stay valid and unaliased for the duration of the call.
        unsafe { mmsg::receive(fd, &mut self.headers, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(receive: u64) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = (4 << 3) | 4;
        p[32..40].copy_from_slice(&receive.to_be_bytes());
        p
    }

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0, 123, 0x9c, 0x40];
        u.extend(((8 + payload.len()) as u16).to_be_bytes());
        u.extend([0, 0]);
        u.extend(payload);
        u
    }

    fn ipv4(udp: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
        ip.extend(udp);
        ip
    }

    fn ipv6(udp: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0, 0, udp.len() as u8, 17, 64];
        ip.extend([0u8; 32]);
        ip.extend(udp);
        ip
    }

    fn ethernet(ethertype: [u8; 2], vlan: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend([0x81, 0x00, 0, 7]);
        }
        f.extend(ethertype);
        f.extend(payload);
        f
    }

    #[test]
    fn the_key_is_found_in_every_looped_back_shape() {
        let key = 0xE000_0001_8000_0001u64;
        let r = reply(key);
        let expected = Some(NtpTimestamp::from_bits(key));
        assert_eq!(reply_key(&ethernet([0x08, 0], false, &ipv4(&udp(&r)))), expected);
        assert_eq!(reply_key(&ethernet([0x08, 0], true, &ipv4(&udp(&r)))), expected);
        assert_eq!(reply_key(&ethernet([0x86, 0xDD], false, &ipv6(&udp(&r)))), expected);
        assert_eq!(reply_key(&ipv4(&udp(&r))), expected, "no link-layer header");
        assert_eq!(reply_key(&ipv6(&udp(&r))), expected);
    }

    #[test]
    fn anything_else_has_no_key() {
        let r = reply(0xE000_0001_8000_0001);
        assert_eq!(reply_key(&[]), None);
        assert_eq!(reply_key(&ethernet([0x08, 0x06], false, &ipv4(&udp(&r)))), None, "ARP");
        let mut tcp = ipv4(&udp(&r));
        tcp[9] = 6;
        assert_eq!(reply_key(&ethernet([0x08, 0], false, &tcp)), None);
        assert_eq!(reply_key(&ethernet([0x08, 0], false, &ipv4(&udp(&r[..40])))), None, "short");
        assert_eq!(reply_key(&ipv4(&udp(&reply(0xE000_0001_8000_0000)))), None, "no LSB marker");
        let mut client = r.clone();
        client[0] = (4 << 3) | 3;
        assert_eq!(reply_key(&ipv4(&udp(&client))), None, "not a reply");
    }

    #[test]
    fn a_reply_asking_for_a_stamp_gets_it_from_the_error_queue() {
        use std::net::UdpSocket;
        use std::os::fd::AsRawFd;
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let flags = libc::SOF_TIMESTAMPING_SOFTWARE as libc::c_int;
        stratum_host::sockopt::set_int(&server, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags).unwrap();
        let mut batch = super::super::mmsg::MessageBatch::new(4);
        client.send_to(&[0u8; 48], server.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(batch.receive(server.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 1);
        let key = 0xE000_0001_8000_0001u64;
        batch.datagram(0).0.copy_from_slice(&reply(key));
        let mut tx = TxStamps::new(TxStampMode::Software, 1, 4).unwrap();
        batch.queue_reply(0, 48, None);
        batch.request_tx_stamp(tx.request_flags());
        let before = stratum_host::clock::now();
        assert_eq!(batch.send_queued(server.as_raw_fd()), (1, 0));
        tx.asked(0, 1);
        let mut got = Vec::new();
        for _ in 0..50 {
            if tx.drain(0, server.as_raw_fd(), |k, t| got.push((k, t))) > 0 {
                break;
            }
            tx.asked(0, 0);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(got.len(), 1, "one stamp for the one reply that asked");
        assert_eq!(got[0].0, NtpTimestamp::from_bits(key));
        let after_send = got[0].1.since(before).to_nanos();
        assert!((0..1_000_000_000).contains(&after_send), "stamp {after_send} ns after the clock read");
        // A basic reply asks for nothing, and nothing comes.
        client.send_to(&[0u8; 48], server.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(batch.receive(server.as_raw_fd(), libc::MSG_DONTWAIT).unwrap(), 1);
        batch.queue_reply(0, 48, None);
        assert_eq!(batch.send_queued(server.as_raw_fd()), (1, 0));
        tx.asked(0, 1);
        assert_eq!(tx.drain(0, server.as_raw_fd(), |_, _| panic!("no stamp was asked for")), 0);
    }
}
