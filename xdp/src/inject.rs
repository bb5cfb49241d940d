//! The load generator's request injector: src/bpf/inject.bpf.c run with BPF_PROG_RUN in live
//! frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18).
//!
//! Why: a request pushed on an AF_XDP TX ring in copy mode (every veth, and any NIC without
//! zero-copy) costs the sender a socket buffer and a trip through the transmit path, a couple of
//! microseconds each on the 2-core VM. In live frames mode the kernel builds frames from pages of
//! its own page pool, runs the program on each, and hands them to the driver's ndo_xdp_xmit in
//! batches: about a hundred nanoseconds a request. The interface must accept XDP frames: a NIC
//! whose driver has ndo_xdp_xmit, or a veth whose peer has an XDP program attached or GRO on
//! (otherwise the driver drops them and the load sees them as lost).
//!
//! Each call costs the kernel tens of milliseconds to set up and tear down, so a generator thread
//! makes one call a step ([`InjectQueue::run_until_stopped`]) and the program paces itself (see
//! inject.bpf.c); another thread ends the call at the step's end ([`RunControl::stop`]) with a
//! signal, which the kernel checks between batches.
//!
//! Each generator thread owns one queue number: a slot of the program's mmapped array map, which
//! it names by the context's rx_queue_index, and a ring of batch send times ([`SendClocks`]).
//! Before the call only that thread writes its slot; during it only the program does, on that
//! thread's CPU. The thread that checks the replies reads the slot and the ring.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, Object, ObjectBuilder};

use crate::program::route_libbpf_messages;
use crate::xsk::mmap::Mmap;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inject.bpf.o"));
const PROG: &str = "stratum_inject";
const SLOTS_MAP: &str = "inject_slots";
const CLOCKS_MAP: &str = "inject_clocks";

/// Slots in the map (generator threads, by queue number); mirrors MAX_SLOTS.
pub const MAX_QUEUES: u32 = 16;
/// Requests per batch: one send time each, and the unit of pacing; mirrors BATCH.
pub const BATCH: u32 = 64;
/// Batch send times a queue keeps (2^14 batches, 1 M requests); mirrors CLOCK_RING.
pub const CLOCK_RING: u32 = 16384;
/// Program runs the kernel makes between its checks for a signal, and frames it hands the driver
/// at once at most. 64, the kernel's default and a NAPI budget: a veth's ring holds 256.
const KERNEL_BATCH: u32 = 64;
/// The signal that ends a call: the first real-time signal glibc leaves to applications.
fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Layout of `struct inject_slot` in inject.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    rate: u64,
    limit: u64,
    start_tai_ns: u64,
    made: u64,
    nonce: u32,
    next_seq: u32,
    client_base: u32,
    client_next: u32,
    client_count: u32,
    ipv4: u32,
    ip_sum: u32,
    udp_sum: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64, "a slot is one cache line");

/// Layout of `struct batch_clock` in inject.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct BatchClock {
    batch: u64,
    tai_ns: u64,
}

/// What a thread's requests are made of. The partial sums are the folded ones'-complement sums
/// of the IPv4 header and of the UDP pseudo-header and datagram, each taken with the varying
/// fields zero: the source address (IPv4; for IPv6 its last 32 bits only, the rest being fixed in
/// the frame), the checksum fields and the transmit timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectSetup {
    /// Requests a second, in batches of [`BATCH`]; 0: as fast as the core can.
    pub rate: u64,
    /// The most requests this step makes.
    pub limit: u64,
    /// The high 32 bits of every transmit timestamp; the low 32 are the sequence number.
    pub nonce: u32,
    /// The sequence number of the first request, a multiple of [`BATCH`].
    pub next_seq: u32,
    /// The first client: its IPv4 address, or the last 32 bits of its IPv6 address.
    pub client_base: u32,
    /// Clients used in turn from `client_base` on (at least 1).
    pub client_count: u32,
    pub ipv4: bool,
    pub ip_sum: u16,
    pub udp_sum: u16,
}

/// The program and its slots, shared by the queues.
struct Shared {
    /// Keeps the program and the maps loaded.
    _object: Object,
    /// The program's fd (owned by the object).
    prog_fd: RawFd,
    slots: Mmap,
    clocks: Mmap,
    ifindex: u32,
}

impl Shared {
    fn slot(&self, queue: u32) -> *mut Slot {
        // SAFETY: queue < MAX_QUEUES (checked in open), and the mapping holds MAX_QUEUES slots.
        unsafe { self.slots.as_ptr().cast::<Slot>().add(queue as usize) }
    }

    /// Requests the queue's slot has made in this step (read by the queue's own thread, or while
    /// the program may be writing it on another CPU).
    fn made(&self, queue: u32) -> u64 {
        // SAFETY: an aligned u64 of the shared mapping, alive as long as self.
        unsafe { shared_u64(std::ptr::addr_of!((*self.slot(queue)).made)) }
    }
}

/// An atomic load of a u64 the BPF program writes on another CPU: through an atomic, so neither
/// the compiler nor the CPU may tear, cache or reorder it past what follows.
///
/// # Safety
/// `at` is an aligned u64 inside a mapping that outlives the call.
unsafe fn shared_u64(at: *const u64) -> u64 {
    // SAFETY: the caller's promise; AtomicU64 has u64's size and (on 64-bit targets) alignment.
    unsafe { AtomicU64::from_ptr(at.cast_mut()) }.load(Ordering::Acquire)
}

/// As [`shared_u64`], for a u32.
///
/// # Safety
/// `at` is an aligned u32 inside a mapping that outlives the call.
unsafe fn shared_u32(at: *const u32) -> u32 {
    // SAFETY: the caller's promise; AtomicU32 has u32's size and alignment.
    unsafe { std::sync::atomic::AtomicU32::from_ptr(at.cast_mut()) }.load(Ordering::Acquire)
}

// SAFETY: the mapping is touched only through an InjectQueue's own slot (see InjectQueue); the
// object is only used to find the program's fd, which the kernel lets any thread run.
unsafe impl Send for Shared {}
// SAFETY: as above: nothing in Shared is mutated through a shared reference.
unsafe impl Sync for Shared {}

/// Loads the injector for transmitting out of `ifindex` and returns, for each queue
/// 0..`queues`, its sending handle and its reader of send times. Needs CAP_BPF and CAP_NET_ADMIN
/// (and CAP_PERFMON on kernels that ask for it).
pub fn open(ifindex: u32, queues: u32) -> io::Result<Vec<(InjectQueue, SendClocks)>> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("1 to {MAX_QUEUES} injector queues")));
    }
    route_libbpf_messages();
    let open = ObjectBuilder::default().name("stratum_inject").and_then(|b| b.open_memory(OBJECT));
    let object = open.and_then(|o| o.load()).map_err(|e| io::Error::other(format!("loading {PROG}: {e:#}")))?;
    let slots = map_values::<Slot>(&object, SLOTS_MAP, MAX_QUEUES)?;
    let clocks = map_values::<BatchClock>(&object, CLOCKS_MAP, MAX_QUEUES * CLOCK_RING)?;
    let prog_fd =
        object.progs().find(|p| p.name() == PROG).expect("inject.bpf.c defines the program").as_fd().as_raw_fd();
    let shared = Arc::new(Shared { _object: object, prog_fd, slots, clocks, ifindex });
    let handles = (0..queues).map(|queue| {
        (InjectQueue { shared: Arc::clone(&shared), queue }, SendClocks { shared: Arc::clone(&shared), queue })
    });
    Ok(handles.collect())
}

/// The values of the mmapable array map `name`, which must hold `entries` values of type T.
fn map_values<T>(object: &Object, name: &str, entries: u32) -> io::Result<Mmap> {
    let map = object.maps().find(|m| m.name() == name).expect("inject.bpf.c defines the map");
    if map.value_size() as usize != std::mem::size_of::<T>() || map.max_entries() != entries {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{name} differs from src/inject.rs")));
    }
    let len = (entries as usize * std::mem::size_of::<T>()).next_multiple_of(page_size());
    Mmap::bpf_map(map.as_fd(), len)
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// One generator thread's handle: its slot and the right to run the program for it.
pub struct InjectQueue {
    shared: Arc<Shared>,
    queue: u32,
}

impl std::fmt::Debug for InjectQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectQueue").field("ifindex", &self.shared.ifindex).field("queue", &self.queue).finish()
    }
}

/// `struct xdp_md` as BPF_PROG_RUN takes it: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
const XDP_MD_WORDS: usize = 6;

impl InjectQueue {
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Sets the slot up for a step; nothing is made yet.
    pub fn set_up(&mut self, s: &InjectSetup) {
        let slot = Slot {
            rate: s.rate,
            limit: s.limit,
            start_tai_ns: 0,
            made: 0,
            nonce: s.nonce,
            next_seq: s.next_seq,
            client_base: s.client_base,
            client_next: 0,
            client_count: s.client_count.max(1),
            ipv4: u32::from(s.ipv4),
            ip_sum: u32::from(s.ip_sum),
            udp_sum: u32::from(s.udp_sum),
        };
        // SAFETY: the slot is ours alone outside a call (&mut self: none is in progress), and the
        // mapping is writable and aligned for Slot (page-aligned, 64-byte slots).
        unsafe { self.shared.slot(self.queue).write_volatile(slot) };
    }

    /// Makes and transmits requests from `frame` (the request template, already holding
    /// everything that does not vary) as the slot says, until `control` is stopped (or the step's
    /// `limit` is reached and then `control` is stopped). Returns how many requests were made. A
    /// frame the driver refuses is not seen here: it is lost on the way.
    pub fn run_until_stopped(&mut self, frame: &[u8], control: &RunControl) -> io::Result<u64> {
        install_stop_handler();
        // SAFETY: pthread_self has no preconditions.
        control.thread.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
        control.running.store(true, Ordering::Release);
        let result = self.run_loop(frame, control);
        control.running.store(false, Ordering::Release);
        result.map(|()| self.made())
    }

    fn run_loop(&mut self, frame: &[u8], control: &RunControl) -> io::Result<()> {
        let mut ctx = [0u32; XDP_MD_WORDS];
        ctx[1] = u32::try_from(frame.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        ctx[3] = self.shared.ifindex;
        ctx[4] = self.queue;
        while !control.stop.load(Ordering::Acquire) {
            let mut opts = libbpf_sys::bpf_test_run_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
                data_in: frame.as_ptr().cast(),
                data_size_in: ctx[1],
                ctx_in: ctx.as_ptr().cast(),
                ctx_size_in: std::mem::size_of_val(&ctx) as u32,
                repeat: i32::MAX,
                flags: libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES,
                batch_size: KERNEL_BATCH,
                ..Default::default()
            };
            // SAFETY: opts points at live buffers (frame, ctx) of the sizes it states and asks for
            // no output buffer; the kernel reads them during the call only.
            let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.shared.prog_fd, &mut opts) };
            // Interrupted (the stop signal, or another): the loop looks at `stop` again.
            if rc < 0 && rc != -libc::EINTR {
                return Err(io::Error::from_raw_os_error(-rc));
            }
        }
        Ok(())
    }

    /// Requests made since [`set_up`](Self::set_up).
    pub fn made(&self) -> u64 {
        self.shared.made(self.queue)
    }
}

/// Ends a [`InjectQueue::run_until_stopped`] from another thread.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    running: AtomicBool,
    /// The pthread_t of the thread in the call.
    thread: AtomicU64,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready for the next step.
    pub fn reset(&self) {
        self.stop.store(false, Ordering::Release);
    }

    /// Stops the call: sets the flag the calling thread checks between calls, then signals it
    /// until it has left (a signal that lands just before it enters the kernel is followed by
    /// another). Returns at once when no call is running.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        while self.running.load(Ordering::Acquire) {
            let thread = self.thread.load(Ordering::Acquire) as libc::pthread_t;
            // SAFETY: `thread` runs run_until_stopped (running is true) and so has the handler
            // for this signal installed; it is alive until running goes false.
            unsafe { libc::pthread_kill(thread, stop_signal()) };
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {}

/// The stop signal must interrupt the call (no SA_RESTART) and do nothing else.
fn install_stop_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (it does nothing).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(stop_signal(), &action, std::ptr::null_mut());
        }
    });
}

/// What the thread that checks a queue's replies reads while its requests are being made: how
/// far the sequence numbers have gone, and each batch's send time.
pub struct SendClocks {
    shared: Arc<Shared>,
    queue: u32,
}

impl std::fmt::Debug for SendClocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendClocks").field("queue", &self.queue).finish()
    }
}

impl SendClocks {
    /// The sequence number the next request will carry.
    pub fn next_seq(&self) -> u32 {
        // SAFETY: an aligned u32 of the shared mapping, which the program may be writing on
        // another CPU; the mapping lives as long as self.
        unsafe { shared_u32(std::ptr::addr_of!((*self.shared.slot(self.queue)).next_seq)) }
    }

    /// CLOCK_TAI (ns) when the program first ran in this step (its pacing counts from there), or
    /// None before that: the kernel takes a while to set a call up.
    pub fn started_tai_ns(&self) -> Option<u64> {
        // SAFETY: as in next_seq (an aligned u64).
        let t = unsafe { shared_u64(std::ptr::addr_of!((*self.shared.slot(self.queue)).start_tai_ns)) };
        (t != 0).then_some(t)
    }

    /// Requests made so far in the step.
    pub fn made(&self) -> u64 {
        self.shared.made(self.queue)
    }

    /// CLOCK_TAI (ns) when batch `batch` (requests 64 * batch ..) started, read by the program
    /// before it made the batch's first request; None when the ring no longer (or not yet) holds it.
    pub fn batch_sent(&self, batch: u64) -> Option<u64> {
        let i = self.queue as usize * CLOCK_RING as usize + (batch % u64::from(CLOCK_RING)) as usize;
        // SAFETY: i < MAX_QUEUES * CLOCK_RING, the entries the mapping holds; aligned volatile
        // loads as in next_seq. The program writes the entry before it sends the batch, so a reply
        // to the batch cannot be read before it. (A reply to the batch 2^14 before, read while its
        // entry is being overwritten, may pair with the newer time: its T1 then lies after its T2
        // and it counts as invalid instead of late.)
        let entry = unsafe { self.shared.clocks.as_ptr().cast::<BatchClock>().add(i) };
        // The batch number before and after the time: a pair torn by a rewrite in between is
        // refused rather than misread.
        // SAFETY: as above, each an aligned u64 field of the entry.
        let (before, tai_ns, after) = unsafe {
            (
                shared_u64(std::ptr::addr_of!((*entry).batch)),
                shared_u64(std::ptr::addr_of!((*entry).tai_ns)),
                shared_u64(std::ptr::addr_of!((*entry).batch)),
            )
        };
        (before == batch && after == batch).then_some(tai_ns)
    }
}
