//! The socket engine: an open-loop NTP load generator on UDP sockets, in one thread.
//!
//! It offers NTPv4 client (mode 3) requests at a fixed rate in sendmmsg batches of 64, spread over
//! `sockets` connected UDP sockets (distinct source ports, so SO_REUSEPORT spreads them across a
//! server's workers), reads the replies with recvmmsg in the same thread, and checks every one
//! against the request it answers.
//!
//! The send records and the reply checks are [`super::book`]'s (shared with the AF_XDP engine):
//! the engine clock there is monotonic time since the run started. Nothing allocates per packet
//! (the NTS reply check opens the authenticator in a stack buffer).
//!
//! With an NTS session (`load --nts-ke`), buffer i of a batch is an NTS request with cookie
//! i mod (cookies), made once; before each send its transmit timestamp and unique identifier are
//! renumbered and its authenticator sealed again ([`crate::nts::restamp`]). Cookies are re-used
//! (a real client must not; the server cannot tell and still opens, verifies and seals each
//! request). Only replies whose authenticator opens with S2C go on to the book's checks; an NTS
//! NAK counts as kiss code NTSN, anything else NTS-invalid.
//!
//! The send phase runs for `duration`, then replies are drained for [`DRAIN`] (or until every
//! request is answered).
//!
//! The sockets, batches and both phases are [`Clients`]'; what goes in a request and what is
//! made of a reply is a [`Traffic`]'s: the plain and NTS load here, the interleaved one
//! (`load --interleaved`, [`crate::interleaved`]) there, on the same loops.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use stratum_host::clock::{from_timespec, now as now_ntp};
use stratum_host::mmsg::{self, zeroed_vec};
use stratum_host::sockopt::set_int;
use stratum_proto::client::TRANSMIT_AT;
use stratum_proto::packet::HEADER_LEN;
use stratum_proto::NtpTimestamp;

pub use super::book::BATCH;
use super::book::{Pacer, SendBook, REQUEST};
use crate::config::LoadConfig;
use crate::counts::Invalid;
use crate::outcome::LoadOutcome;
use crate::pin::pin_to;

/// How long replies are collected after the last request was sent.
pub const DRAIN: Duration = Duration::from_millis(200);
/// Socket buffers we ask for (forced past rmem_max/wmem_max when privileged).
const SOCKET_BUFFER_BYTES: libc::c_int = 8 << 20;

/// Receive buffer length; larger than a reply so that oversized ones are seen as such.
pub(crate) const RECV_LEN: usize = 512;
/// Room for one SCM_TIMESTAMPNS control message (and slack), when receives are stamped.
const CONTROL_LEN: usize = 64;

/// 64 datagram buffers with their iovecs, mmsghdrs and (when receives are stamped) control
/// buffers. The headers point into the other vectors' heap allocations, which are never resized
/// or reallocated after construction.
pub(crate) struct Batch {
    buffers: Vec<[u8; RECV_LEN]>,
    /// Empty, or one control buffer a header.
    control: Vec<[u64; CONTROL_LEN / 8]>,
    iov: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    /// Buffers of `len` bytes to send or receive; with `stamped`, room in each header for a
    /// receive timestamp ([`stamp`](Self::stamp)).
    fn new(len: usize, stamped: bool) -> Self {
        let (iov, headers) = (zeroed_vec(BATCH), zeroed_vec(BATCH));
        let control = vec![[0; CONTROL_LEN / 8]; if stamped { BATCH } else { 0 }];
        let mut batch = Self { buffers: vec![[0u8; RECV_LEN]; BATCH], control, iov, headers };
        for i in 0..BATCH {
            batch.iov[i].iov_base = batch.buffers[i].as_mut_ptr().cast();
            batch.iov[i].iov_len = len;
            batch.headers[i].msg_hdr.msg_iov = &mut batch.iov[i];
            batch.headers[i].msg_hdr.msg_iovlen = 1;
        }
        for (h, c) in batch.headers.iter_mut().zip(&mut batch.control) {
            h.msg_hdr.msg_control = c.as_mut_ptr().cast();
        }
        batch
    }

    /// Sends all 64 buffers (first `len` bytes, as set in `new`) on a connected socket; returns
    /// how many left.
    fn send(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: every header points at a buffer and iovec owned by `self` (set up in `new`,
        // never moved); the socket is connected, so no address is needed.
        match unsafe { mmsg::send(fd, &mut self.headers, libc::MSG_DONTWAIT) } {
            Err(e) if mmsg::is_would_block(&e) || refused(&e) => Ok(0),
            sent => sent,
        }
    }

    /// Receives up to 64 datagrams without blocking; returns how many arrived.
    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let control_len = if self.control.is_empty() { 0 } else { CONTROL_LEN };
        for h in &mut self.headers {
            h.msg_hdr.msg_flags = 0;
            // The kernel sets it to the length it used.
            h.msg_hdr.msg_controllen = control_len as _;
            h.msg_len = 0;
        }
        // SAFETY: as in `send`; each iovec has the length of the buffer it points at, and each
        // control pointer (null when not stamped) a buffer of CONTROL_LEN bytes owned by `self`.
        match unsafe { mmsg::receive(fd, &mut self.headers, libc::MSG_DONTWAIT) } {
            Err(e) if refused(&e) => Ok(0),
            received => received,
        }
    }

    /// Datagram `i` of the latest receive, unless it was longer than its buffer.
    pub(crate) fn payload(&self, i: usize) -> Result<&[u8], Invalid> {
        let h = &self.headers[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            Err(Invalid::Length)
        } else {
            Ok(&self.buffers[i][..(h.msg_len as usize).min(RECV_LEN)])
        }
    }

    /// The kernel's receive stamp of datagram `i` (SCM_TIMESTAMPNS), if it came with one.
    pub(crate) fn stamp(&self, i: usize) -> Option<NtpTimestamp> {
        let hdr = &self.headers[i].msg_hdr;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
        // msg_controllen (0 when not stamped); the timespec is read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(from_timespec(ts.tv_sec as i64, ts.tv_nsec as i64));
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }
}

/// ECONNREFUSED: an ICMP port unreachable came back (no server yet, or it went away); the load
/// goes on and the requests count as unanswered.
fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// What one kind of load writes in its requests and makes of their replies, for [`Clients`]
/// (the plain and NTS load here, the interleaved one in [`crate::interleaved`]). Called per
/// packet, through generics: nothing may allocate.
pub(crate) trait Traffic {
    /// The send phase also stops before a batch would number a request past this (the book's
    /// own limit, 32 bits, always holds).
    const SEQ_LIMIT: u64 = u64::MAX;

    /// Writes request `seq`, the `i`-th of the batch about to be sent, into `buf` (which holds
    /// what was written there before: the template, then the last request sent from it).
    fn fill(&mut self, book: &SendBook, i: usize, seq: u64, buf: &mut [u8; RECV_LEN]);

    /// Checks datagram `i` of `rx` against `book`: its T4 is `now_ns` on the book's clock and
    /// `now` in NTP time, read once after its batch arrived.
    fn check(&mut self, book: &mut SendBook, rx: &Batch, i: usize, now_ns: u64, now: NtpTimestamp);
}

/// What the generator needs to make and check NTS requests.
struct NtsLoad {
    c2s: [u8; 32],
    s2c: [u8; 32],
    /// The first 24 bytes of every unique identifier ([`crate::nts::load_uid`]).
    uid_prefix: [u8; 24],
    /// The length of each of the 64 requests (cookies may differ in length).
    lens: Vec<usize>,
}

/// The socket engine's load: plain requests, or NTS ones.
impl Traffic for Option<NtsLoad> {
    #[inline]
    fn fill(&mut self, book: &SendBook, i: usize, seq: u64, buf: &mut [u8; RECV_LEN]) {
        let transmit = book.transmit_bytes(seq);
        match self {
            None => buf[TRANSMIT_AT..HEADER_LEN].copy_from_slice(&transmit),
            Some(nts) => crate::nts::restamp(&nts.c2s, &mut buf[..nts.lens[i]], &transmit),
        }
    }

    #[inline]
    fn check(&mut self, book: &mut SendBook, rx: &Batch, i: usize, now_ns: u64, now: NtpTimestamp) {
        let mut payload = rx.payload(i);
        if let (Some(nts), Ok(p)) = (self, payload) {
            payload = nts_header(&nts.s2c, &nts.uid_prefix, p);
        }
        book.reply(payload, now_ns, now);
    }
}

/// The connected UDP sockets of one generator thread, its send and receive batches and its
/// book: the send and drain phases of a step, for any [`Traffic`].
pub(crate) struct Clients {
    sockets: Vec<Socket>,
    poll_fds: Vec<libc::pollfd>,
    tx: Batch,
    rx: Batch,
    pub(crate) book: SendBook,
    start: Instant,
}

impl Clients {
    /// `config.sockets` sockets connected to `config.target`, each send buffer holding the
    /// plain request; with `stamped`, the kernel stamps every receive (SO_TIMESTAMPNS).
    pub(crate) fn open(config: &LoadConfig, stamped: bool) -> anyhow::Result<Self> {
        let sockets = (0..config.sockets)
            .map(|_| {
                let s = open_socket(config.target)?;
                if stamped {
                    set_int(&s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).context("SO_TIMESTAMPNS")?;
                }
                Ok(s)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .context("cannot open the client sockets")?;
        let poll_fds =
            sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let mut tx = Batch::new(HEADER_LEN, false);
        for buf in &mut tx.buffers {
            buf[..HEADER_LEN].copy_from_slice(&REQUEST);
        }
        let rx = Batch::new(RECV_LEN, stamped);
        Ok(Self { sockets, poll_fds, tx, rx, book: SendBook::new(), start: Instant::now() })
    }

    /// The sockets' local ports.
    pub(crate) fn local_ports(&self) -> Vec<u16> {
        self.sockets.iter().filter_map(|s| s.local_addr().ok()?.as_socket()).map(|a| a.port()).collect()
    }

    /// Runs a step: the send phase at `config.rate` for `config.duration`, then replies are
    /// drained for [`DRAIN`] (or until every request is answered). Returns the send phase's
    /// length.
    pub(crate) fn run<T: Traffic>(&mut self, traffic: &mut T, config: &LoadConfig) -> io::Result<Duration> {
        // Send phase: batch k is due at start + k * 64 / rate; a late generator catches up at once.
        // The sequence numbers are 32 bits: the send phase also stops before they would wrap.
        let pacer = Pacer::new(config.rate);
        self.start = Instant::now();
        let end = self.start + config.duration;
        let mut batch_no: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= end || self.book.exhausted() || self.book.next_seq() + BATCH as u64 > T::SEQ_LIMIT {
                break;
            }
            let due = self.start + pacer.due(batch_no);
            if now >= due {
                self.send_batch(traffic, batch_no as usize % config.sockets)?;
                batch_no += 1;
                self.receive_ready(traffic, Duration::ZERO)?;
            } else {
                self.receive_ready(traffic, (due - now).min(end - now))?;
            }
        }
        let send_elapsed = self.start.elapsed();
        let drain_end = Instant::now() + DRAIN;
        loop {
            let now = Instant::now();
            if now >= drain_end || self.book.all_answered() {
                break;
            }
            self.receive_ready(traffic, (drain_end - now).min(Duration::from_millis(5)))?;
        }
        Ok(send_elapsed)
    }

    fn send_batch<T: Traffic>(&mut self, traffic: &mut T, socket: usize) -> io::Result<()> {
        let base = self.book.next_seq();
        for (i, buf) in self.tx.buffers.iter_mut().enumerate() {
            traffic.fill(&self.book, i, base + i as u64, buf);
        }
        // T1 as late as possible, but before the requests leave.
        self.book.start_batch(self.start.elapsed().as_nanos() as u64, now_ntp());
        let n = self.tx.send(self.sockets[socket].as_raw_fd())?;
        self.book.sent(n);
        Ok(())
    }

    /// Waits up to `timeout` for replies, then reads every socket that has some until it is empty.
    fn receive_ready<T: Traffic>(&mut self, traffic: &mut T, timeout: Duration) -> io::Result<()> {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: poll_fds is a live array of pollfd of the length passed; `ts` outlives the call;
        // a null signal mask leaves the mask unchanged.
        let ready = unsafe {
            libc::ppoll(self.poll_fds.as_mut_ptr(), self.poll_fds.len() as libc::nfds_t, &ts, std::ptr::null())
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) { Ok(()) } else { Err(e) };
        }
        if ready == 0 {
            return Ok(());
        }
        for s in 0..self.poll_fds.len() {
            if self.poll_fds[s].revents == 0 {
                continue;
            }
            let fd = self.poll_fds[s].fd;
            loop {
                let n = self.rx.receive(fd)?;
                // T4 of every reply in this recvmmsg: read once, after they all arrived.
                let now_ns = self.start.elapsed().as_nanos() as u64;
                let now = now_ntp();
                for i in 0..n {
                    traffic.check(&mut self.book, &self.rx, i, now_ns, now);
                }
                if n < BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The step's outcome, once [`run`](Self::run) returned `send_elapsed`.
    pub(crate) fn finish(self, send_elapsed: Duration) -> LoadOutcome {
        let drops = socket_drops(&self.local_ports());
        self.book.finish(send_elapsed, drops)
    }
}

/// The header of an NTS reply for the book's checks, if it is authentic (its unique identifier
/// is the one its origin timestamp names, and its authenticator opens with S2C) or an NTS NAK
/// (a kiss-o'-death NTSN, which the book counts as one). Shared with the AF_XDP engine.
pub(crate) fn nts_header<'a>(s2c: &[u8; 32], uid_prefix: &[u8; 24], p: &'a [u8]) -> Result<&'a [u8], Invalid> {
    let origin: &[u8; 8] = p.get(24..32).and_then(|o| o.try_into().ok()).ok_or(Invalid::Length)?;
    let uid = crate::nts::load_uid(uid_prefix, origin);
    match crate::nts::check_load_reply(s2c, p, &uid) {
        Ok(_) | Err(crate::nts::NtsReplyError::Nak) => Ok(&p[..HEADER_LEN]),
        Err(_) => Err(Invalid::Nts),
    }
}

pub(crate) fn open_socket(target: SocketAddr) -> anyhow::Result<Socket> {
    let domain = if target.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if set_int(&socket, libc::SOL_SOCKET, force, SOCKET_BUFFER_BYTES).is_err() {
            // Unprivileged: capped at net.core.[rw]mem_max.
            let _ = set_int(&socket, libc::SOL_SOCKET, plain, SOCKET_BUFFER_BYTES);
        }
    }
    // Loopback targets get a loopback source (as before: the sockets never touch another
    // interface); others an unspecified one, which the kernel fills in on connect.
    let local: SocketAddr = match (target.is_ipv4(), target.ip().is_loopback()) {
        (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket.bind(&local.into())?;
    socket.connect(&target.into())?;
    Ok(socket)
}

/// Sum of the kernel's per-socket drop counters (/proc/net/udp{,6}, last column) over the
/// sockets of this network namespace whose local port is in `ports`.
pub fn socket_drops(ports: &[u16]) -> u64 {
    let mut total = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p)) {
                total += fields.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

/// The sockets and records of one generator thread, ready to send.
fn prepare(config: &LoadConfig) -> anyhow::Result<(Clients, Option<NtsLoad>)> {
    pin_to(config.core())?;
    // Best effort: 1 µs timer slack, so that short pacing waits end close to when they should.
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };

    let mut clients = Clients::open(config, false)?;
    let tx = &mut clients.tx;
    let nts = match &config.nts {
        None => None,
        Some(session) => {
            anyhow::ensure!(!session.cookies.is_empty(), "the NTS-KE gave no cookie");
            let uid_prefix: [u8; 24] = rand::random();
            let mut lens = Vec::with_capacity(BATCH);
            for i in 0..BATCH {
                let cookie = &session.cookies[i % session.cookies.len()];
                let uid = crate::nts::load_uid(&uid_prefix, &[0; 8]);
                let request = crate::nts::request_with(
                    session.aead,
                    &session.c2s,
                    cookie,
                    &uid,
                    NtpTimestamp::ZERO,
                    0,
                    &rand::random(),
                );
                anyhow::ensure!(request.len() <= RECV_LEN, "an NTS cookie of {} bytes is too long", cookie.len());
                tx.buffers[i][..request.len()].copy_from_slice(&request);
                tx.iov[i].iov_len = request.len();
                lens.push(request.len());
            }
            Some(NtsLoad { c2s: session.c2s, s2c: session.s2c, uid_prefix, lens })
        }
    };
    Ok((clients, nts))
}

/// Runs one generator thread of a load step: `config` was validated by [`LoadConfig::new`] and
/// names at most one core (see [`LoadConfig::per_thread`]). With `start`, the send phase begins
/// once every thread sharing that barrier is ready (or has failed to get ready). The server's
/// socket drops are left to the caller (`None` here).
pub fn run(config: &LoadConfig, start: Option<&Barrier>) -> anyhow::Result<LoadOutcome> {
    let prepared = prepare(config);
    // Every thread reaches the barrier, ready or not, so that none waits forever.
    if let Some(barrier) = start {
        barrier.wait();
    }
    let (mut clients, mut nts) = prepared?;
    let send_elapsed = clients.run(&mut nts, config)?;
    Ok(clients.finish(send_elapsed))
}
