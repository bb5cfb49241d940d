//! One AF_XDP socket bound to one queue of one interface, with its own UMEM and four rings.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::mmap::Mmap;
use super::ring::{ConsumerRing, ProducerRing, Region, RingOffsets};
use super::sockopt;
use super::umem::{Umem, UmemConfig};

/// Whether to bind in zero-copy mode (the driver DMAs into the UMEM) or copy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy where the driver has it, else copy mode.
    Auto,
    Required,
    Never,
}

/// The mode a socket was bound in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET)` (not in the libc crate yet).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// What one copy-mode TX wakeup sends when the budget cannot be set.
pub const DEFAULT_TX_BUDGET: u32 = 32;

/// Shape of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    pub umem: UmemConfig,
    /// Entries in each of the four rings (a power of two).
    pub ring_size: u32,
    /// Frames put on the fill ring at start; the rest are handed back as [`XskSocket::spare`]
    /// (a responder answers in place and fills them all; a load generator keeps some to send).
    pub initial_fill: u32,
    pub zero_copy: ZeroCopy,
    /// Ask the kernel to flag when it needs a syscall to make progress (saves one per batch).
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            umem: UmemConfig::default(),
            ring_size: 4096,
            initial_fill: 4096,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        }
    }
}

/// The kernel's per-socket counters (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for reasons other than the ones below (e.g. no space: RX ring full).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

impl XskStatistics {
    /// Frames the kernel dropped on their way into this socket: no free frame (or too long), or
    /// a full RX ring. (The two counters are disjoint; the fill-ring-empty one counts events.)
    pub fn receive_drops(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

/// A bound AF_XDP socket. Fields are public so a worker can borrow the UMEM and the rings at once.
#[derive(Debug)]
pub struct XskSocket {
    // Declared first so it is closed first: the kernel lets go of the rings and the UMEM before
    // they are unmapped.
    fd: OwnedFd,
    pub fill: ProducerRing<u64>,
    pub completion: ConsumerRing<u64>,
    pub rx: ConsumerRing<libc::xdp_desc>,
    pub tx: ProducerRing<libc::xdp_desc>,
    pub umem: Umem,
    /// Frames not put on the fill ring at start (see [`XskConfig::initial_fill`]).
    pub spare: Vec<u64>,
    mode: BindMode,
    ifindex: u32,
    queue: u32,
    /// Frames one copy-mode TX wakeup sends (see [`XskSocket::set_tx_budget`]).
    tx_budget: u32,
}

impl XskSocket {
    /// Creates the socket, registers a new UMEM, maps the rings, binds to `queue` of `ifindex`
    /// (zero-copy falling back to copy mode as configured) and fills the fill ring.
    pub fn open(ifindex: u32, queue: u32, config: &XskConfig) -> io::Result<Self> {
        let context = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("AF_XDP {what}: {e}"));
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EPERM) { " (needs root or CAP_NET_RAW)" } else { "" };
            return Err(io::Error::new(e.kind(), format!("AF_XDP socket: {e}{hint}")));
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut umem = Umem::new(&config.umem).map_err(context("UMEM allocation"))?;
        umem.register(fd.as_fd(), config.umem.tx_metadata).map_err(context("UMEM registration"))?;
        let size = config.ring_size;
        if !size.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "AF_XDP ring size must be a power of two"));
        }
        for opt in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING, libc::XDP_TX_RING] {
            sockopt::set(fd.as_fd(), opt, &size).map_err(context("ring size"))?;
        }
        let offsets = mmap_offsets(fd.as_fd()).map_err(context("ring offsets"))?;
        let map = |off: libc::xdp_ring_offset, entry: usize, pgoff: u64| -> io::Result<Region> {
            let len = super::ring::map_len(RingOffsets::from(off).desc, size, entry).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "AF_XDP ring offsets past the address space")
            })?;
            Ok(Region::Mapped(Mmap::ring(fd.as_fd(), len, pgoff).map_err(context("ring mmap"))?))
        };
        let fill = ProducerRing::new(map(offsets.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING)?, offsets.fr.into(), size)?;
        let completion =
            ConsumerRing::new(map(offsets.cr, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?, offsets.cr.into(), size)?;
        let desc = size_of::<libc::xdp_desc>();
        let rx = ConsumerRing::new(map(offsets.rx, desc, libc::XDP_PGOFF_RX_RING as u64)?, offsets.rx.into(), size)?;
        let tx = ProducerRing::new(map(offsets.tx, desc, libc::XDP_PGOFF_TX_RING as u64)?, offsets.tx.into(), size)?;

        let wakeup = if config.need_wakeup { libc::XDP_USE_NEED_WAKEUP } else { 0 };
        let mode = match config.zero_copy {
            ZeroCopy::Never => bind(fd.as_fd(), ifindex, queue, libc::XDP_COPY | wakeup).map(|()| BindMode::Copy),
            ZeroCopy::Required => {
                bind(fd.as_fd(), ifindex, queue, libc::XDP_ZEROCOPY | wakeup).map(|()| BindMode::ZeroCopy)
            }
            ZeroCopy::Auto => match bind(fd.as_fd(), ifindex, queue, libc::XDP_ZEROCOPY | wakeup) {
                Ok(()) => Ok(BindMode::ZeroCopy),
                Err(_) => bind(fd.as_fd(), ifindex, queue, libc::XDP_COPY | wakeup).map(|()| BindMode::Copy),
            },
        }
        .map_err(|e| bind_error(e, ifindex, queue))?;

        let frames: Vec<u64> = umem.frames().collect();
        // Room for every frame, so returning frames to `spare` never allocates.
        let spare = Vec::with_capacity(frames.len());
        let mut socket =
            Self { fd, fill, completion, rx, tx, umem, spare, mode, ifindex, queue, tx_budget: DEFAULT_TX_BUDGET };
        let first = (config.initial_fill as usize).min(frames.len()).min(size as usize);
        let pushed = socket.fill.push(&frames[..first]);
        socket.spare.extend_from_slice(&frames[pushed..]);
        Ok(socket)
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        statistics(self.fd.as_fd())
    }

    /// Lets one copy-mode TX wakeup send up to `frames` frames instead of the kernel's default 32,
    /// so a whole batch leaves with one syscall (`XDP_MAX_TX_SKB_BUDGET`, kernel 6.16+). False
    /// where the kernel has no such option: batches then need a wakeup per 32 frames.
    pub fn set_tx_budget(&mut self, frames: u32) -> bool {
        let raised = frames > 0 && sockopt::set(self.fd.as_fd(), XDP_MAX_TX_SKB_BUDGET, &frames).is_ok();
        if raised {
            self.tx_budget = frames;
        }
        raised
    }

    /// Frames one copy-mode TX wakeup sends: the kernel's 32, or what [`set_tx_budget`] raised it to.
    ///
    /// [`set_tx_budget`]: XskSocket::set_tx_budget
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// Tells the kernel there is something on the TX ring (copy mode needs this every time; with
    /// need_wakeup in zero-copy mode, only when the TX ring asks). Busy or full is not an error:
    /// the frames stay queued and the next kick sends them.
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with no buffer or address is the documented TX wakeup.
        let rc =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(e),
        }
    }

    /// Waits up to `timeout_ms` for frames on the RX ring (this also wakes a driver that stopped
    /// for an empty fill ring). True when some are ready.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        match rc {
            n if n > 0 => Ok(pfd.revents & libc::POLLIN != 0),
            0 => Ok(false),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's counters for the AF_XDP socket `fd` (any descriptor of it: a metrics thread reads
/// them through a duplicate while the worker owns the socket).
pub fn statistics(fd: BorrowedFd<'_>) -> io::Result<XskStatistics> {
    let mut s = libc::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    sockopt::get(fd, libc::XDP_STATISTICS, &mut s)?;
    Ok(XskStatistics {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
        tx_ring_empty: s.tx_ring_empty_descs,
    })
}

fn mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<libc::xdp_mmap_offsets> {
    let zero = libc::xdp_ring_offset { producer: 0, consumer: 0, desc: 0, flags: 0 };
    let mut off = libc::xdp_mmap_offsets { rx: zero, tx: zero, fr: zero, cr: zero };
    if sockopt::get(fd, libc::XDP_MMAP_OFFSETS, &mut off)? != size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 return the layout without the flags word (no need_wakeup either).
        return Err(io::Error::new(io::ErrorKind::Unsupported, "kernel too old for AF_XDP ring flags (needs 5.4+)"));
    }
    Ok(off)
}

fn bind(fd: BorrowedFd<'_>, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: addr is a live sockaddr_xdp and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind_error(e: io::Error, ifindex: u32, queue: u32) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EINVAL) => " (no such queue on the interface?)",
        Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
        Some(libc::EOPNOTSUPP) => " (the driver has no zero-copy mode)",
        Some(libc::EPERM) => " (needs root or CAP_NET_RAW)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("AF_XDP bind to ifindex {ifindex} queue {queue}: {e}{hint}"))
}
