//! `udp_load`: an open-loop NTP load generator for loopback benchmarks.
//!
//! It offers NTPv4 client (mode 3) requests at a fixed rate in sendmmsg batches of 64, spread over
//! `--sockets` connected UDP sockets (distinct source ports, so SO_REUSEPORT spreads them across
//! a server's workers), reads the replies with recvmmsg in the same thread, and checks every one:
//! 48 bytes, version 4, mode 4, its origin timestamp one of our transmit timestamps (not seen
//! before), and a non-zero stratum (stratum 0 is counted as a kiss-o'-death).
//!
//! Each transmit timestamp is `(run nonce << 32) | sequence number`, so a reply names the request
//! it answers. The send phase runs for `--duration` seconds, then replies are drained for 200 ms.
//!
//! Only loopback targets are accepted, and both rate and duration are bounded, so a run always
//! stops by itself and never leaves the host.
//!
//! ```text
//! cargo run --release -p stratumd --example udp_load -- --target 127.0.0.1:11123 --rate 100000 --duration 3
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};
use stratumd::socket::bind::set_int;

/// Requests per sendmmsg (and replies per recvmmsg).
const BATCH: usize = 64;
/// NTP header length: the only reply length we accept.
const NTP_LEN: usize = 48;
/// Receive buffer length; larger than a reply so that oversized ones are seen as such.
const RECV_LEN: usize = 512;
/// How long replies are collected after the last request was sent.
const DRAIN: Duration = Duration::from_millis(200);
/// Socket buffers we ask for (forced past rmem_max/wmem_max when privileged).
const SOCKET_BUFFER_BYTES: libc::c_int = 8 << 20;
const MAX_DURATION_S: f64 = 60.0;
const MAX_RATE: u64 = 10_000_000;

/// Open-loop NTP load generator (loopback only).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Server to load: a loopback address and port, e.g. 127.0.0.1:11123.
    #[arg(long)]
    target: SocketAddr,
    /// Requests per second offered; 0 sends as fast as possible.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Length of the send phase, in seconds (at most 60).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Client sockets (distinct source ports), used round-robin one batch at a time.
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Pin the generator to this CPU core.
    #[arg(long)]
    core: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// 64 datagram buffers with their iovecs and mmsghdrs. The headers point into the other vectors'
/// heap allocations, which are never resized or reallocated after construction.
struct Batch {
    buffers: Vec<[u8; RECV_LEN]>,
    iov: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(len: usize) -> Self {
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are a valid value
        // (null pointers and zero lengths).
        let (iov, headers) = unsafe { (vec![std::mem::zeroed(); BATCH], vec![std::mem::zeroed(); BATCH]) };
        let mut batch = Self { buffers: vec![[0u8; RECV_LEN]; BATCH], iov, headers };
        for i in 0..BATCH {
            batch.iov[i].iov_base = batch.buffers[i].as_mut_ptr().cast();
            batch.iov[i].iov_len = len;
            batch.headers[i].msg_hdr.msg_iov = &mut batch.iov[i];
            batch.headers[i].msg_hdr.msg_iovlen = 1;
        }
        batch
    }

    /// Sends all 64 buffers (first `NTP_LEN` bytes) on a connected socket; returns how many left.
    fn send(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: every header points at a buffer and iovec owned by `self` (set up in `new`,
        // never moved); the socket is connected, so no address is needed.
        let n = unsafe { libc::sendmmsg(fd, self.headers.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR | libc::ECONNREFUSED) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    /// Receives up to 64 datagrams without blocking; returns how many arrived.
    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.headers {
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: as in `send`; each iovec has the length of the buffer it points at.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // ECONNREFUSED: an ICMP port unreachable (no server yet, or it went away).
                Some(libc::EAGAIN | libc::EINTR | libc::ECONNREFUSED) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }
}

#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    send_errors: u64,
    received: u64,
    valid: u64,
    invalid: u64,
    duplicate: u64,
    kod: u64,
    unsynced: u64,
}

struct Generator {
    nonce: u32,
    sockets: Vec<Socket>,
    poll_fds: Vec<libc::pollfd>,
    tx: Batch,
    rx: Batch,
    /// Sequence numbers handed out so far; batch k holds [64k, 64k + 64).
    next_seq: u64,
    /// One bit per sequence number: its reply has been seen.
    seen: Vec<u64>,
    /// Send time of each batch, in nanoseconds since `start`.
    batch_sent_ns: Vec<u64>,
    rtt_us: Vec<u32>,
    counts: Counts,
    start: Instant,
}

impl Generator {
    fn send_batch(&mut self, socket: usize) -> io::Result<()> {
        let base = self.next_seq;
        for (i, buf) in self.tx.buffers.iter_mut().enumerate() {
            let transmit = (u64::from(self.nonce) << 32) | (base + i as u64);
            buf[40..48].copy_from_slice(&transmit.to_be_bytes());
        }
        self.next_seq += BATCH as u64;
        self.seen.resize(self.next_seq.div_ceil(64) as usize, 0);
        self.batch_sent_ns.push(self.start.elapsed().as_nanos() as u64);
        let n = self.tx.send(self.sockets[socket].as_raw_fd())?;
        self.counts.sent += n as u64;
        self.counts.send_errors += (BATCH - n) as u64;
        Ok(())
    }

    /// Waits up to `timeout` for replies, then reads every socket that has some until it is empty.
    fn receive_ready(&mut self, timeout: Duration) -> io::Result<()> {
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
                let now_ns = self.start.elapsed().as_nanos() as u64;
                for i in 0..n {
                    self.check_reply(i, now_ns);
                }
                if n < BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    fn check_reply(&mut self, i: usize, now_ns: u64) {
        let c = &mut self.counts;
        c.received += 1;
        let h = &self.rx.headers[i];
        let len = h.msg_len as usize;
        if len != NTP_LEN || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            c.invalid += 1;
            return;
        }
        let p = &self.rx.buffers[i];
        let (leap, version, mode, stratum) = (p[0] >> 6, (p[0] >> 3) & 7, p[0] & 7, p[1]);
        let origin = u64::from_be_bytes(p[24..32].try_into().expect("8 bytes"));
        let seq = origin & 0xffff_ffff;
        if version != 4 || mode != 4 || (origin >> 32) as u32 != self.nonce || seq >= self.next_seq {
            c.invalid += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            c.invalid += 1;
            c.duplicate += 1;
            return;
        }
        self.seen[word] |= bit;
        let rtt_ns = now_ns.saturating_sub(self.batch_sent_ns[(seq / BATCH as u64) as usize]);
        self.rtt_us.push((rtt_ns / 1000).min(u64::from(u32::MAX)) as u32);
        if stratum == 0 {
            c.kod += 1;
        } else if leap == 3 || stratum >= 16 {
            c.unsynced += 1;
        } else {
            c.valid += 1;
        }
    }
}

fn open_socket(target: SocketAddr) -> anyhow::Result<Socket> {
    let domain = if target.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if set_int(&socket, libc::SOL_SOCKET, force, SOCKET_BUFFER_BYTES).is_err() {
            // Unprivileged: capped at net.core.[rw]mem_max.
            let _ = set_int(&socket, libc::SOL_SOCKET, plain, SOCKET_BUFFER_BYTES);
        }
    }
    let local: SocketAddr = if target.is_ipv4() { "127.0.0.1:0".parse()? } else { "[::1]:0".parse()? };
    socket.bind(&local.into())?;
    socket.connect(&target.into())?;
    Ok(socket)
}

/// Sum of the kernel's per-socket drop counters (/proc/net/udp{,6}, last column) over the
/// loopback sockets whose local port is in `ports`.
fn socket_drops(ports: &[u16]) -> u64 {
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

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        bail!("--target must be a loopback address (127.0.0.0/8 or ::1), not {}", args.target.ip());
    }
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        bail!("--duration must be more than 0 and at most {MAX_DURATION_S} seconds");
    }
    if args.rate > MAX_RATE {
        bail!("--rate must be at most {MAX_RATE} (0 = as fast as possible)");
    }
    if !(1..=1024).contains(&args.sockets) {
        bail!("--sockets must be from 1 to 1024");
    }
    if let Some(core) = args.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            bail!("cannot pin to core {core}");
        }
    }
    // Best effort: 1 µs timer slack, so that short pacing waits end close to when they should.
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };

    let sockets = (0..args.sockets)
        .map(|_| open_socket(args.target))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("cannot open the client sockets")?;
    let local_ports: Vec<u16> =
        sockets.iter().filter_map(|s| s.local_addr().ok()?.as_socket()).map(|a| a.port()).collect();
    let poll_fds =
        sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();

    let mut tx = Batch::new(NTP_LEN);
    for buf in &mut tx.buffers {
        buf[0] = 0x23; // LI 0, version 4, mode 3 (client)
        buf[2] = 6; // poll 2^6 s
        buf[3] = 0xec; // precision 2^-20 s
    }
    let duration = Duration::from_secs_f64(args.duration);
    let batches_expected =
        if args.rate == 0 { 1 << 16 } else { (args.rate as f64 * args.duration) as usize / BATCH + 2 };
    let mut g = Generator {
        nonce: rand::random::<u32>() | 1,
        sockets,
        poll_fds,
        tx,
        rx: Batch::new(RECV_LEN),
        next_seq: 0,
        seen: Vec::with_capacity(batches_expected),
        batch_sent_ns: Vec::with_capacity(batches_expected),
        rtt_us: Vec::with_capacity(batches_expected * BATCH),
        counts: Counts::default(),
        start: Instant::now(),
    };
    let server_drops_before = socket_drops(&[args.target.port()]);

    // Send phase: batch k is due at start + k * 64 / rate; a late generator catches up at once.
    let interval =
        if args.rate == 0 { Duration::ZERO } else { Duration::from_secs_f64(BATCH as f64 / args.rate as f64) };
    g.start = Instant::now();
    let end = g.start + duration;
    let mut batch_no: u32 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = g.start + interval * batch_no;
        if now >= due {
            g.send_batch(batch_no as usize % args.sockets)?;
            batch_no += 1;
            g.receive_ready(Duration::ZERO)?;
        } else {
            g.receive_ready((due - now).min(end - now))?;
        }
    }
    let send_elapsed = g.start.elapsed();
    let drain_end = Instant::now() + DRAIN;
    loop {
        let now = Instant::now();
        if now >= drain_end || g.counts.received >= g.counts.sent {
            break;
        }
        g.receive_ready((drain_end - now).min(Duration::from_millis(5)))?;
    }

    let server_drops = socket_drops(&[args.target.port()]).saturating_sub(server_drops_before);
    let client_drops = socket_drops(&local_ports);
    let c = &g.counts;
    let secs = send_elapsed.as_secs_f64();
    let answered = c.received - c.duplicate;
    let loss_pct = if c.sent == 0 { 0.0 } else { 100.0 * c.sent.saturating_sub(answered) as f64 / c.sent as f64 };
    let offered_rate = if args.rate == 0 { c.sent as f64 / secs } else { args.rate as f64 };
    let send_rate = c.sent as f64 / secs;
    let achieved_reply_rate = c.valid as f64 / secs;
    g.rtt_us.sort_unstable();
    let (p50, p99, max) =
        (percentile(&g.rtt_us, 0.50), percentile(&g.rtt_us, 0.99), g.rtt_us.last().copied().unwrap_or(0));
    let core = args.core.map_or_else(|| "null".to_string(), |c| c.to_string());

    if args.json {
        println!(
            "{{\"target\":\"{}\",\"offered_rate\":{offered_rate:.0},\"send_rate\":{send_rate:.0},\
             \"duration_s\":{secs:.3},\"sockets\":{},\"core\":{core},\"sent\":{},\"send_errors\":{},\
             \"received\":{},\"valid\":{},\"invalid\":{},\"duplicate\":{},\"kod\":{},\"unsynced\":{},\
             \"loss_pct\":{loss_pct:.3},\"achieved_reply_rate\":{achieved_reply_rate:.0},\
             \"server_socket_drops\":{server_drops},\"client_socket_drops\":{client_drops},\
             \"rtt_p50_us\":{p50},\"rtt_p99_us\":{p99},\"rtt_max_us\":{max}}}",
            args.target,
            args.sockets,
            c.sent,
            c.send_errors,
            c.received,
            c.valid,
            c.invalid,
            c.duplicate,
            c.kod,
            c.unsynced,
        );
    } else {
        println!("target        {} ({} sockets, core {core})", args.target, args.sockets);
        println!("offered rate  {offered_rate:.0}/s (sent at {send_rate:.0}/s over {secs:.3} s)");
        if args.rate > 0 && send_rate < 0.98 * offered_rate {
            println!("              WARNING: the generator fell behind the offered rate");
        }
        println!("sent          {} ({} send errors)", c.sent, c.send_errors);
        println!("received      {}", c.received);
        println!("valid         {} ({achieved_reply_rate:.0}/s)", c.valid);
        println!("invalid       {} ({} duplicates)", c.invalid, c.duplicate);
        println!("kod           {}", c.kod);
        println!("unsynced      {}", c.unsynced);
        println!("loss          {loss_pct:.3} %");
        println!("socket drops  server {server_drops}, client {client_drops}");
        println!("rtt           p50 {p50} us, p99 {p99} us, max {max} us");
    }
    Ok(())
}
