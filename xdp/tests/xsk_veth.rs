//! The AF_XDP socket layer against a real kernel: a veth pair the test creates in the root
//! namespace (unique names, removed on drop). Needs root; skips with a reason elsewhere, fails when
//! CI is set.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use stratum_xdp::xsk::{BindMode, ReplyScratch, XskConfig, XskSocket, ZeroCopy};

mod common;
use common::{clock_tai_ns, ifindex, mac, veth_for, Veth};

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame (UDP checksum 0: none, legal for IPv4).
fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Frames out of end a to end b's address (10.77.N.2, given to b here), from a made-up
/// 10.77.N.1: the kernel's stack at b takes them.
struct PathToB {
    mac_a: [u8; 6],
    mac_b: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl PathToB {
    fn new(veth: &Veth) -> Self {
        let dst = veth.address_b();
        let src = Ipv4Addr::new(10, 77, dst.octets()[2], 1);
        Self { mac_a: mac(&veth.a), mac_b: mac(&veth.b), src, dst }
    }

    fn frame(&self, dport: u16, payload: &[u8]) -> Vec<u8> {
        udp_frame(self.mac_a, self.mac_b, self.src, self.dst, dport, payload)
    }

    /// A UDP socket at b's address that the frames reach (2 s read timeout), and its port.
    fn receiver(&self) -> (UdpSocket, u16) {
        let receiver = UdpSocket::bind((self.dst, 0)).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = receiver.local_addr().unwrap().port();
        (receiver, port)
    }
}

/// Copies `frame` into a spare UMEM frame, after a 256-byte headroom like a received frame's (so
/// TX metadata fits in front), and returns its TX descriptor (no options).
fn stage(xsk: &mut XskSocket, frame: &[u8]) -> libc::xdp_desc {
    let addr = xsk.spare.pop().unwrap() + 256;
    xsk.umem.data_mut(addr, frame.len() as u32).unwrap().copy_from_slice(frame);
    libc::xdp_desc { addr, len: frame.len() as u32, options: 0 }
}

#[test]
fn frames_sent_on_the_tx_ring_arrive_and_complete_with_a_transmit_stamp() {
    let Some(veth) = veth_for("xsk tx", "xt") else { return };
    let path = PathToB::new(&veth);
    let (receiver, port) = path.receiver();

    let config = XskConfig { initial_fill: 1024, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).expect("open AF_XDP socket on veth");
    assert_eq!(xsk.mode(), BindMode::Copy, "veth has no zero-copy mode");
    assert_eq!(xsk.spare.len(), 4096 - 1024);
    let tx_meta = xsk.umem.tx_metadata_len() > 0;
    // With the budget raised (kernels with XDP_MAX_TX_SKB_BUDGET) one wakeup sends all 64 frames;
    // without it, 32 per wakeup.
    let frames = if xsk.set_tx_budget(64) { 64u32 } else { 32 };

    let before = clock_tai_ns();
    let mut descs = Vec::new();
    for i in 0..frames {
        let mut desc = stage(&mut xsk, &path.frame(port, format!("frame {i}").as_bytes()));
        if tx_meta && xsk.umem.request_tx_timestamp(desc.addr) {
            desc.options = libc::XDP_TX_METADATA;
        }
        descs.push(desc);
    }
    assert_eq!(xsk.tx.push(&descs), frames as usize);
    xsk.kick_tx().unwrap();

    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..frames {
        let (n, from) = receiver.recv_from(&mut buf).expect("frame sent through AF_XDP arrives");
        assert_eq!(from.ip(), path.src);
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got, (0..frames).map(|i| format!("frame {i}")).collect::<Vec<_>>());

    // Every frame comes back on the completion ring, with a transmit stamp when asked.
    let mut done = [0u64; 64];
    let mut completed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while completed.len() < frames as usize && Instant::now() < deadline {
        let n = xsk.completion.pop(&mut done);
        completed.extend_from_slice(&done[..n]);
    }
    completed.sort_unstable();
    let mut sent: Vec<u64> = descs.iter().map(|d| d.addr).collect();
    sent.sort_unstable();
    assert_eq!(completed, sent);
    if tx_meta {
        for d in &descs {
            let stamp = xsk.umem.tx_timestamp(d.addr).expect("a software transmit stamp on veth");
            assert!(stamp >= before && stamp <= clock_tai_ns(), "stamp {stamp} outside [{before}, now]");
        }
    }
    let stats = xsk.statistics().unwrap();
    assert_eq!(stats.tx_invalid_descs, 0);
}

#[test]
fn invalid_tx_descriptors_are_counted_by_the_kernel() {
    let Some(veth) = veth_for("xsk invalid descs", "xi") else { return };
    let config = XskConfig { initial_fill: 0, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).unwrap();
    // Runs past its frame: the kernel must refuse it, count it, and return it on completion.
    let bad = libc::xdp_desc { addr: 2048 - 10, len: 100, options: 0 };
    assert_eq!(xsk.tx.push(&[bad]), 1);
    let _ = xsk.kick_tx();
    let deadline = Instant::now() + Duration::from_secs(2);
    while xsk.statistics().unwrap().tx_invalid_descs == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(xsk.statistics().unwrap().tx_invalid_descs, 1);
}

#[test]
fn bind_errors_name_the_problem() {
    let Some(veth) = veth_for("xsk bind errors", "xe") else { return };
    let ifindex = ifindex(&veth.a);
    let config = XskConfig { initial_fill: 16, ..XskConfig::default() };
    let e = XskSocket::open(ifindex, 7, &config).unwrap_err();
    assert!(e.to_string().contains("queue 7"), "{e}");
    let e = XskSocket::open(ifindex, 0, &XskConfig { zero_copy: ZeroCopy::Required, ..config }).unwrap_err();
    assert!(e.to_string().contains("zero-copy") || e.to_string().contains("bind"), "{e}");
    let _first = XskSocket::open(ifindex, 0, &config).unwrap();
    let e = XskSocket::open(ifindex, 0, &config).unwrap_err();
    assert!(e.to_string().contains("already") || e.to_string().contains("bound"), "{e}");
}

#[test]
fn recycled_frames_the_fill_ring_has_no_room_for_wait_in_spare() {
    let Some(veth) = veth_for("xsk recycle into spare", "xr") else { return };
    let path = PathToB::new(&veth);
    // A fill ring of 1024 entries, full from the start (nothing is received), and 3072 spare frames.
    let config = XskConfig { ring_size: 1024, initial_fill: 1024, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).unwrap();
    assert_eq!(xsk.spare.len(), 3072);
    let frame = path.frame(9, b"recycle me");
    let descs: Vec<_> = (0..64).map(|_| stage(&mut xsk, &frame)).collect();
    assert_eq!(xsk.tx.push(&descs), 64);
    for _ in 0..64usize.div_ceil(xsk.tx_budget() as usize) {
        xsk.kick_tx().unwrap();
    }
    let mut scratch = ReplyScratch::default();
    let deadline = Instant::now() + Duration::from_secs(2);
    while xsk.spare.len() < 3072 && Instant::now() < deadline {
        xsk.recycle_completions(&mut scratch);
    }
    assert_eq!(xsk.spare.len(), 3072, "every sent frame is back, none lost to a full fill ring");
    let mut back: Vec<u64> = xsk.spare[3008..].to_vec();
    back.sort_unstable();
    let mut sent: Vec<u64> = descs.iter().map(|d| xsk.umem.frame_of(d.addr)).collect();
    sent.sort_unstable();
    assert_eq!(back, sent);
}

#[test]
fn drive_tx_sends_a_backlog_larger_than_one_wakeup_takes() {
    let Some(veth) = veth_for("xsk drive_tx", "xd") else { return };
    let path = PathToB::new(&veth);
    let (receiver, port) = path.receiver();
    let config = XskConfig { initial_fill: 0, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).unwrap();
    // Three wakeups' worth: one wakeup sends one budget, so a responder that woke the kernel once
    // per batch left the rest waiting until its next batch.
    let frames = 3 * xsk.tx_budget() as usize;
    let descs: Vec<_> = (0..frames).map(|i| stage(&mut xsk, &path.frame(port, format!("{i}").as_bytes()))).collect();
    assert!(!xsk.drive_tx(), "nothing waits on an empty TX ring");
    assert_eq!(xsk.tx.push(&descs), frames);
    assert_eq!(xsk.tx.pending(), frames as u32);
    assert!(!xsk.drive_tx(), "a veth peer that keeps up takes everything");
    assert_eq!(xsk.tx.pending(), 0);
    let mut buf = [0u8; 16];
    for _ in 0..frames {
        receiver.recv_from(&mut buf).expect("every frame of the backlog arrives");
    }
}

/// One datagram from `socket` (SO_TIMESTAMPNS on) with the kernel's receive stamp, CLOCK_REALTIME
/// in ns: its payload length and the stamp.
fn recv_stamped(socket: &UdpSocket, buf: &mut [u8]) -> (usize, u64) {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; the pointers set below stay live for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: walking the control buffer the kernel filled, with the CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return (n as usize, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    panic!("no SCM_TIMESTAMPNS on a datagram");
}

/// CLOCK_TAI - CLOCK_REALTIME in whole seconds (the kernel's TAI offset), in ns.
fn tai_minus_realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for clock_gettime to write.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) }, 0);
    let real = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let diff = clock_tai_ns().saturating_sub(real);
    (diff + 500_000_000) / 1_000_000_000 * 1_000_000_000
}

/// Copy mode (veth) fills the TX metadata timestamp too (kernel 6.8+: the skb destructor,
/// xsk_destruct_skb, writes CLOCK_TAI when the frame's skb is let go of), one stamp per frame, not
/// one per wakeup. Measured against a clock read before and after the wakeup and against the
/// peer's kernel receive stamp of each frame (printed with --nocapture); on veth the destructor
/// runs inside the wakeup, frame by frame, after the peer has received the frame.
#[test]
fn copy_mode_tx_metadata_stamps_are_per_frame() {
    let Some(veth) = veth_for("xsk copy-mode tx stamps", "xm") else { return };
    let path = PathToB::new(&veth);
    let (receiver, port) = path.receiver();
    common::set_timestampns(&receiver);
    let config = XskConfig { initial_fill: 0, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).unwrap();
    assert_eq!(xsk.mode(), BindMode::Copy);
    assert!(xsk.umem.tx_metadata_len() > 0, "kernel 6.8+ registers a TX metadata area (this one: {})", kernel());
    let frames = if xsk.set_tx_budget(64) { 64usize } else { 32 };
    let offset = tai_minus_realtime_ns();
    let mut rounds = Vec::new();
    for round in 0..20 {
        let mut descs = Vec::new();
        for i in 0..frames {
            let mut desc = stage(&mut xsk, &path.frame(port, format!("{round} {i}").as_bytes()));
            assert!(xsk.umem.request_tx_timestamp(desc.addr));
            desc.options = libc::XDP_TX_METADATA;
            descs.push(desc);
        }
        assert_eq!(xsk.tx.push(&descs), frames);
        let before = clock_tai_ns();
        xsk.kick_tx().unwrap();
        let after = clock_tai_ns();
        let mut arrived = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..frames {
            let (n, at) = recv_stamped(&receiver, &mut buf);
            arrived.push((String::from_utf8_lossy(&buf[..n]).into_owned(), at + offset));
        }
        let mut done = [0u64; 64];
        let mut completed = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while completed < frames && Instant::now() < deadline {
            let n = xsk.completion.pop(&mut done[..]);
            completed += n;
            xsk.spare.extend(done[..n].iter().map(|a| xsk.umem.frame_of(*a)));
        }
        assert_eq!(completed, frames);
        let stamps: Vec<u64> =
            descs.iter().map(|d| xsk.umem.tx_timestamp(d.addr).expect("a copy-mode TX metadata stamp")).collect();
        for (i, (text, _)) in arrived.iter().enumerate() {
            assert_eq!(text, &format!("{round} {i}"), "in order");
        }
        for &s in &stamps {
            assert!(s >= before, "stamp {s} before the wakeup at {before}");
        }
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "stamps in send order");
        rounds.push((before, after, stamps, arrived.iter().map(|a| a.1).collect::<Vec<_>>()));
    }
    // Stamp minus the peer's receive stamp, per frame; stamp minus the clock read before the
    // wakeup for the first and last frame; spacing of stamps.
    let mut d_rx: Vec<i64> = Vec::new();
    let (mut first, mut last, mut wake) = (Vec::new(), Vec::new(), Vec::new());
    for (before, after, stamps, rx) in &rounds {
        d_rx.extend(stamps.iter().zip(rx).map(|(&s, &r)| s as i64 - r as i64));
        first.push(stamps[0] - before);
        last.push(stamps[stamps.len() - 1] - before);
        wake.push(after - before);
    }
    d_rx.sort_unstable();
    let pct = |v: &[i64], p: usize| v[(v.len() - 1) * p / 100];
    eprintln!(
        "copy-mode TX stamps, {frames} frames x {} wakeups: stamp - peer rx: min {} p50 {} p99 {} max {} ns; \
         first frame - clock before wakeup: {:?} ns; last: {:?} ns; wakeup took {:?} ns",
        rounds.len(),
        d_rx[0],
        pct(&d_rx, 50),
        pct(&d_rx, 99),
        d_rx[d_rx.len() - 1],
        first,
        last,
        wake
    );
    let distinct = rounds[0].2.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(distinct > frames / 2, "one stamp per frame, not one per wakeup: {:?}", rounds[0].2);
    // The destructor runs when the peer's IP layer takes the skb (ip_rcv orphans it), after the
    // peer's receive stamp (taken as it was queued): a copy-mode stamp is never early on veth.
    assert!(d_rx[0] >= 0, "a stamp {} ns before the peer received the frame", -d_rx[0]);
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// answer_in_place_with sends every `slice` replies as soon as they are answered: each slice's
/// wakeup comes before the next reply is answered, and every reply arrives, in order.
#[test]
fn replies_leave_in_slices() {
    let Some(veth) = veth_for("xsk slices", "xs") else { return };
    let path = PathToB::new(&veth);
    let (receiver, port) = path.receiver();
    let config = XskConfig { initial_fill: 0, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.a), 0, &config).unwrap();
    // Ten "received" frames (staged in spare frames); the 6th gets no reply.
    let rx: Vec<_> = (0..10).map(|i| stage(&mut xsk, &path.frame(port, format!("{i}").as_bytes()))).collect();
    let events = std::cell::RefCell::new(Vec::new());
    let mut scratch = ReplyScratch::default();
    let outcome = xsk.answer_in_place_with(
        &rx,
        &mut scratch,
        4,
        |_, desc| {
            let i = rx.iter().position(|d| d.addr == desc.addr).unwrap();
            events.borrow_mut().push(format!("a{i}"));
            (i != 5).then_some((desc.len as usize, 0))
        },
        |k| events.borrow_mut().push(format!("s{k}")),
    );
    assert_eq!(
        events.into_inner().join(" "),
        "a0 a1 a2 a3 s0 a4 a5 a6 a7 a8 s1 a9 s2",
        "a slice of 4 replies leaves before the next is answered; the last one with the batch's end"
    );
    assert_eq!((outcome.sent, outcome.not_answered, outcome.tx_ring_full, outcome.drained_slices), (9, 1, 0, 3));
    assert_eq!(scratch.sent().len(), 9);
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    for _ in 0..9 {
        let n = receiver.recv(&mut buf).expect("every reply arrives");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got, ["0", "1", "2", "3", "4", "6", "7", "8", "9"]);
    // The sent frames come back as completions.
    let mut done = [0u64; 16];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut completed = 0;
    while completed < 9 && Instant::now() < deadline {
        completed += xsk.completion.pop(&mut done);
    }
    assert_eq!(completed, 9);
}
