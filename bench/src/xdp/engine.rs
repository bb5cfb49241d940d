//! The AF_XDP engine of `stratum-bench load --engine xdp`.
//!
//! One AF_XDP socket per `--cores` entry, bound to RX/TX queue i of `--interface` and driven by a
//! thread pinned to core i. Each socket has its own UMEM: half its frames sit on the fill ring for
//! replies, the other half are transmit frames, each written once with the request template
//! before the run ([`RequestTemplate`]) and then only stamped per request (client address,
//! transmit timestamp, checksums). Requests come from `--clients` addresses of `--client-net`,
//! round-robin, all from one UDP port (`--client-port`, 40123). The steering program is attached
//! to the generator's interface with that port as its "NTP port", so the replies (addressed to the
//! simulated clients, port 40123) are redirected to the generator's sockets by queue and never
//! reach the kernel; everything else on the interface (ARP, neighbour discovery) passes.
//!
//! Pacing is by batch of 64 ([`Pacer`]): a due batch is stamped, pushed on the TX ring and sent
//! with one wakeup (`sendto`) at most; sent frames come back on the completion ring and are reused.
//! Replies are popped 64 at a time, checked as the socket engine checks them ([`SendBook`]:
//! origin, duplicates, T1 <= T2 <= T3 <= T4 windows), and their frames go back to the fill ring.
//! Nothing allocates once a step runs.
//!
//! NTS (`load --nts-ke`, `--tx xsk` only): one NTS-KE before the load (the caller's); transmit
//! frame n holds an NTS request with cookie n mod (cookies), written once
//! ([`RequestTemplate::nts`]); per request its transmit timestamp and unique identifier are
//! renumbered and its authenticator sealed again with C2S ([`RequestTemplate::stamp_nts`]), as the
//! socket engine does. The cookies are re-used (a real client must not; the server cannot tell
//! and opens, verifies and seals every request). A reply goes on to the book's checks only if its
//! unique identifier is its request's and its authenticator opens with S2C (checked in a stack
//! buffer, [`crate::nts::check_load_reply`]); an NTS NAK counts as kiss code NTSN, anything else
//! NTS-invalid. The identifiers' random prefix is the load's, so a late reply to an earlier step
//! of a ramp still checks and counts as stale.
//!
//! Clocks: the engine's clock is CLOCK_TAI in nanoseconds (CLOCK_REALTIME + the kernel's TAI
//! offset, read once before the run). T1 is one vDSO read per batch, just before the batch is
//! pushed and sent: a request's RTT therefore also holds the time the kernel took to send the
//! requests before it in the same wakeup (a few microseconds for 64 in copy mode). T4 is the
//! steering program's receive stamp (`bpf_ktime_get_tai_ns()` at XDP entry, in the frame's
//! metadata) of each reply, exact per reply and free; one clock read per batch of replies only
//! where a frame has none. RTT is T4 - T1 on that clock.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use stratum_proto::packet::HEADER_LEN;
use stratum_proto::NtpTimestamp;
use stratum_xdp::inject::{self, InjectQueue, InjectSetup, RunControl, SendClocks};
use stratum_xdp::meta::RxMetadata;
use stratum_xdp::program::{ProgramConfig, SteeringProgram, XdpMode};
use stratum_xdp::xsk::{BindMode, UmemConfig, XskConfig, XskSocket, XskStatistics, ZeroCopy};

use super::frame::{
    reply_payload, ClientNet, ClientRotation, InjectionTemplate, MacAddr, RequestTemplate, MAX_CLIENTS,
};
use super::net;
use super::TxPath;
#[cfg(test)]
use super::DEFAULT_CLIENT_PORT;
use crate::config::{split, LoadConfig};
use crate::counts::Invalid;
use crate::engine::book::{Pacer, SendBook, BATCH};
use crate::engine::socket::{nts_header, DRAIN};
use crate::interleaved::{Chains, InterleavedReport};
use crate::outcome::LoadOutcome;
use crate::pin::pin_to;
use crate::report::LoadReport;

/// Entries per ring; the UMEM has twice as many frames (half for replies, half for requests).
const RING: u32 = 4096;
const FRAME_SIZE: u32 = 2048;
/// When the next batch is further away than this and no reply waits, sleep in ppoll...
const WAIT_MIN: Duration = Duration::from_micros(100);
/// ... and wake this much before it is due.
const WAIT_EARLY: Duration = Duration::from_micros(30);

const EMPTY_DESC: libc::xdp_desc = libc::xdp_desc { addr: 0, len: 0, options: 0 };

/// A validated `load --engine xdp` (a step's rate and duration, or a ramp's, come separately).
#[derive(Clone, Debug)]
pub struct XdpLoadConfig {
    /// Target, rate, duration and cores; `sockets` is the number of AF_XDP sockets (one a core).
    pub step: LoadConfig,
    pub interface: String,
    pub client_net: ClientNet,
    pub clients: u32,
    pub client_port: u16,
    /// The next hop's MAC address; resolved from the kernel's neighbour table when None.
    pub dst_mac: Option<MacAddr>,
    /// How requests are sent (`--tx`; [`XdpLoadConfig::new`] says xsk).
    pub tx: TxPath,
}

impl XdpLoadConfig {
    /// Checks what the socket engine's [`LoadConfig`] does not: an address AF_XDP can reach, a
    /// client network of the target's family with room for `clients`, at least a client a thread.
    pub fn new(
        step: LoadConfig,
        interface: String,
        client_net: Option<ClientNet>,
        clients: u32,
        client_port: u16,
        dst_mac: Option<MacAddr>,
    ) -> anyhow::Result<Self> {
        let target = step.target;
        if target.ip().is_loopback() {
            bail!("--engine xdp sends raw frames on --interface; a loopback target ({}) is not reachable so", target);
        }
        if interface.is_empty() {
            bail!("--engine xdp needs --interface");
        }
        let client_net = client_net.unwrap_or_else(|| ClientNet::default_for(target.ip()));
        if client_net.is_ipv4() != target.is_ipv4() {
            bail!("--client-net {client_net} is not of the target's address family");
        }
        let room = client_net.capacity().min(u64::from(MAX_CLIENTS));
        if clients == 0 || u64::from(clients) > room {
            bail!("--clients must be from 1 to {room} (the addresses of --client-net {client_net})");
        }
        if (clients as usize) < step.threads() {
            bail!("--clients ({clients}) must be at least the number of --cores ({})", step.threads());
        }
        if client_port == 0 {
            bail!("--client-port must not be 0");
        }
        Ok(Self { step, interface, client_net, clients, client_port, dst_mac, tx: TxPath::Xsk })
    }
}

/// What the AF_XDP side saw during a step, beside the load report.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct XdpNotes {
    pub interface: String,
    /// How requests were sent: xsk or inject.
    pub tx: String,
    /// XDP attach mode on the generator's interface: driver or generic.
    pub attach_mode: String,
    /// AF_XDP bind mode: zero-copy or copy.
    pub bind_mode: String,
    /// Frames one copy-mode TX wakeup sends: 64 where the kernel lets us raise it, else its 32.
    pub tx_budget: u32,
    pub dst_mac: String,
    /// Frames steered to us that were not a reply from the target (another source, a bad
    /// checksum): ignored, as the kernel would drop them.
    pub ignored_frames: u64,
    /// How long a batch took from its T1 to the end of its TX wakeup (the kernel sending it):
    /// the most a request's RTT can overstate by. Mean and max over the batches, in ns (tx xsk
    /// only: the injector reads T1 in the kernel just before it builds a batch).
    pub send_call_mean_ns: u64,
    pub send_call_max_ns: u64,
    /// The kernel's AF_XDP counters over the step, summed over the sockets.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub tx_invalid_descs: u64,
}

impl XdpNotes {
    pub fn to_text(&self) -> String {
        format!(
            "xdp: {} (tx {}, {} mode, {} bind, tx budget {}) to {}; T1 to sent: mean {:.1} us, max {:.1} us; \
             ignored frames {}, rx dropped {}, rx ring full {}, fill ring empty {}, tx invalid {}\n",
            self.interface,
            self.tx,
            self.attach_mode,
            self.bind_mode,
            self.tx_budget,
            self.dst_mac,
            self.send_call_mean_ns as f64 / 1000.0,
            self.send_call_max_ns as f64 / 1000.0,
            self.ignored_frames,
            self.rx_dropped,
            self.rx_ring_full,
            self.fill_ring_empty,
            self.tx_invalid_descs
        )
    }

    /// Adds worker `w`, the `n`-th (from 0), to the notes of the workers before it.
    fn add(&mut self, n: u64, w: &WorkerNotes) {
        let mean = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
        self.send_call_mean_ns = mean(self.send_call_mean_ns * n + mean(w.send_ns, w.batches), n + 1);
        self.send_call_max_ns = self.send_call_max_ns.max(w.send_max_ns);
        self.ignored_frames += w.ignored;
        self.rx_dropped += w.stats.rx_dropped;
        self.rx_ring_full += w.stats.rx_ring_full;
        self.fill_ring_empty += w.stats.rx_fill_ring_empty;
        self.tx_invalid_descs += w.stats.tx_invalid_descs;
    }
}

/// The program and the sockets of an AF_XDP load, opened once and used for one step or every
/// step of a ramp.
#[derive(Debug)]
pub struct XdpLoad {
    workers: Vec<Worker>,
    notes: XdpNotes,
    // Dropped last: the sockets go before the program that steers to them.
    _program: SteeringProgram,
}

impl XdpLoad {
    /// Attaches the steering program to the interface, opens and registers one socket per core
    /// and writes the request template into every transmit frame.
    pub fn open(config: &XdpLoadConfig) -> anyhow::Result<Self> {
        let interface = &config.interface;
        let target = config.step.target;
        let src_mac = net::interface_mac(interface)?;
        let dst_mac = match config.dst_mac {
            Some(mac) => mac,
            None => net::resolve_next_hop(interface, target)?,
        };
        let threads = config.step.threads();
        let template = RequestTemplate::new(src_mac, dst_mac, target, config.client_port);
        let nts = match &config.step.nts {
            None => None,
            Some(_) if config.tx != TxPath::Xsk => bail!("--nts-ke with --engine xdp needs --tx xsk"),
            Some(session) => Some(NtsFrames::new(session, src_mac, dst_mac, target, config.client_port)?),
        };
        let tai_offset_ns = tai_offset_s()? * 1_000_000_000;
        let shares = split(u64::from(config.clients), threads);
        let xsk_config = XskConfig {
            umem: UmemConfig { frame_size: FRAME_SIZE, frame_count: 2 * RING, tx_metadata: false, huge_pages: false },
            ring_size: RING,
            initial_fill: RING,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        };
        let (program, sockets, tx_budget) = attach(interface, config.client_port, threads, &xsk_config)?;
        let mut injectors = match config.tx {
            TxPath::Xsk => Vec::new(),
            TxPath::Inject => inject::open(program.ifindex(), threads as u32)
                .with_context(|| format!("cannot load the request injector for {interface}"))?,
        }
        .into_iter();
        let mut workers = Vec::with_capacity(threads);
        let mut first = 0u32;
        for (mut xsk, &share) in sockets.into_iter().zip(&shares) {
            let injector = injectors.next().map(|(queue, clocks)| Injector {
                queue,
                clocks,
                template: template.injection(config.client_net.client(first)),
                clients: share as u32,
            });
            // The spare frames become transmit frames; the new spare has room for every receive
            // frame that must wait for the fill ring.
            let free = std::mem::replace(&mut xsk.spare, Vec::with_capacity(RING as usize));
            for &addr in &free {
                let t = nts.as_ref().map_or(&template, |n| n.template(addr));
                let frame = xsk.umem.data_mut(addr, t.len() as u32).context("UMEM frame too small")?;
                frame.copy_from_slice(t.bytes());
            }
            workers.push(Worker {
                xsk,
                free,
                template: template.clone(),
                clients: ClientRotation::new(&config.client_net, first, share as u32),
                target,
                client_port: config.client_port,
                tai_offset_ns,
                rx: [EMPTY_DESC; BATCH],
                tx: [EMPTY_DESC; BATCH],
                recycle: [0; BATCH],
                notes: WorkerNotes::default(),
                injector,
                nonces: None,
                chains: None,
                nts: nts.clone(),
            });
            first += share as u32;
        }
        let notes = XdpNotes {
            interface: interface.clone(),
            tx: config.tx.to_string(),
            attach_mode: program.mode().to_string(),
            bind_mode: workers.first().map_or(BindMode::Copy, |w| w.xsk.mode()).to_string(),
            tx_budget,
            dst_mac: dst_mac.to_string(),
            ..XdpNotes::default()
        };
        Ok(Self { workers, notes, _program: program })
    }

    /// One load step at `step`'s rate and duration (its target and cores are those the load was
    /// opened with): one pinned thread per socket, their send phases starting together.
    pub fn step(&mut self, step: &LoadConfig) -> anyhow::Result<(LoadReport, XdpNotes)> {
        let parts = step.per_thread();
        if parts.len() != self.workers.len() {
            bail!("a step of {} threads on a load opened with {}", parts.len(), self.workers.len());
        }
        let start = Barrier::new(parts.len());
        let refused_before = tx_dropped(&self.notes.interface);
        let results: Vec<anyhow::Result<(LoadOutcome, WorkerNotes)>> = thread::scope(|scope| {
            let handles: Vec<_> = self
                .workers
                .iter_mut()
                .zip(&parts)
                .map(|(worker, part)| {
                    let start = &start;
                    scope.spawn(move || worker.run(part, start))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked"))))
                .collect()
        });
        let mut notes = self.notes.clone();
        let mut total: Option<LoadOutcome> = None;
        for (n, r) in results.into_iter().enumerate() {
            let (outcome, w) = r?;
            notes.add(n as u64, &w);
            match &mut total {
                Some(t) => t.merge(outcome)?,
                None => total = Some(outcome),
            }
        }
        let outcome = total.context("no generator thread")?;
        let mut report = LoadReport::new(step, "xdp", &outcome);
        report.tx_refused = refused_before.zip(tx_dropped(&self.notes.interface)).map(|(a, b)| b.saturating_sub(a));
        Ok((report, notes))
    }
}

impl XdpLoad {
    /// [`step`](Self::step) in interleaved mode (`load --interleaved`, one socket, `--tx xsk`):
    /// `chains` simulated clients, `one_way_ns` subtracted from every T3 error, measured
    /// against the XDP receive stamps.
    pub fn step_interleaved(
        &mut self,
        step: &LoadConfig,
        chains: usize,
        one_way_ns: i64,
    ) -> anyhow::Result<(LoadReport, XdpNotes, InterleavedReport)> {
        if self.workers.len() != 1 || self.workers[0].injector.is_some() {
            bail!("--interleaved with --engine xdp runs one socket (at most one core) and --tx xsk");
        }
        if self.workers[0].nts.is_some() {
            bail!("--interleaved and --nts-ke do not go together");
        }
        self.workers[0].chains = Some(Chains::new(chains, one_way_ns));
        let result = self.step(step);
        let chains = self.workers[0].chains.take().context("the chains are back")?;
        let (report, notes) = result?;
        let interleaved = chains.report(report.valid, step.rate);
        Ok((report, notes, interleaved))
    }
}

/// The interface's tx_dropped counter (sysfs), where the kernel counts the frames a driver refused
/// at transmit (veth: `ndo_xdp_xmit` found the peer's ring full). None if it cannot be read.
fn tx_dropped(interface: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/statistics/tx_dropped")).ok()?.trim().parse().ok()
}

/// One step with the AF_XDP engine: open, run, close.
pub fn run(config: &XdpLoadConfig) -> anyhow::Result<(LoadReport, XdpNotes)> {
    XdpLoad::open(config)?.step(&config.step)
}

/// Attaches the steering program to `interface` for UDP port `port` and opens and registers one
/// AF_XDP socket on each of its queues 0..`queues` (the generator's and the reflector's setup).
/// Each socket's copy-mode TX budget is raised to a batch (64) where the kernel has the option;
/// the budget in force comes back third.
pub fn attach(
    interface: &str,
    port: u16,
    queues: usize,
    xsk_config: &XskConfig,
) -> anyhow::Result<(SteeringProgram, Vec<XskSocket>, u32)> {
    let available = stratum_host::netif::rx_queues(interface);
    if queues > available {
        bail!("{interface} has {available} RX queue(s); --cores lists {queues} (one AF_XDP socket a queue)");
    }
    let program =
        SteeringProgram::attach(interface, XdpMode::Auto, &ProgramConfig { port, hardware_timestamps: false })
            .with_context(|| format!("cannot attach the XDP program to {interface}"))?;
    let queues: Vec<u32> = (0..queues as u32).collect();
    let sockets = program.open_queue_sockets(&queues, xsk_config, BATCH as u32)?;
    let budget = sockets.iter().map(XskSocket::tx_budget).min().unwrap_or(BATCH as u32);
    Ok((program, sockets, budget))
}

/// The kernel's TAI - UTC offset in seconds (adjtimex, read only).
pub fn tai_offset_s() -> anyhow::Result<i64> {
    // SAFETY: timex is a plain C struct for which all-zero bytes are valid (modes = 0: read only).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: tx is a live timex; with modes = 0 adjtimex only writes into it.
    if unsafe { libc::adjtimex(&mut tx) } < 0 {
        return Err(io::Error::last_os_error()).context("adjtimex");
    }
    Ok(i64::from(tx.tai))
}

/// The requests a step at `rate` for `duration` makes: its batches of 64 due before the end, as
/// the paced engines send them (every batch until the end when the rate is 0: as fast as possible).
/// Sequence numbers are 32 bits, so never more than they can count.
fn injection_limit(rate: u64, duration: Duration) -> u64 {
    let most = u64::from(u32::MAX) / BATCH as u64 * BATCH as u64;
    if rate == 0 {
        return most;
    }
    if duration.is_zero() {
        return 0;
    }
    let batches = Pacer::new(rate).due_by(duration - Duration::from_nanos(1));
    batches.saturating_mul(BATCH as u64).min(most)
}

/// Stops an injector call when dropped, on every way out of a step.
struct StopOnDrop<'a>(&'a RunControl);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// SCHED_IDLE for the calling thread: it runs only when nothing else on its core wants to.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a live sched_param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// CLOCK_TAI in nanoseconds (a vDSO read).
#[inline]
pub fn tai_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a live timespec; CLOCK_TAI always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A CLOCK_TAI reading as a UTC NTP timestamp.
#[inline]
pub fn tai_to_ntp(tai_ns: u64, tai_offset_ns: i64) -> NtpTimestamp {
    let unix_ns = tai_ns as i64 - tai_offset_ns;
    NtpTimestamp::from_unix(unix_ns.div_euclid(1_000_000_000), unix_ns.rem_euclid(1_000_000_000) as u32)
}

/// What one worker saw in one step beside its outcome.
#[derive(Debug, Default)]
struct WorkerNotes {
    ignored: u64,
    stats: XskStatistics,
    batches: u64,
    send_ns: u64,
    send_max_ns: u64,
}

/// One AF_XDP socket and what its thread needs.
#[derive(Debug)]
struct Worker {
    xsk: XskSocket,
    /// Transmit frames not in flight (as many as the TX ring has entries: a push always fits).
    free: Vec<u64>,
    template: RequestTemplate,
    clients: ClientRotation,
    target: SocketAddr,
    client_port: u16,
    tai_offset_ns: i64,
    rx: [libc::xdp_desc; BATCH],
    tx: [libc::xdp_desc; BATCH],
    recycle: [u64; BATCH],
    /// This step's notes so far.
    notes: WorkerNotes,
    /// With `--tx inject`: requests are made in the kernel, not on the TX ring.
    injector: Option<Injector>,
    /// The nonces of this socket's first and latest step: the socket lives across a ramp's
    /// steps, so a reply to an earlier one can still arrive (counted as stale).
    nonces: Option<(u32, u32)>,
    /// `load --interleaved`: this step's simulated clients' chains ([`XdpLoad::step_interleaved`]).
    chains: Option<Chains>,
    /// `load --nts-ke`: every request an NTS request.
    nts: Option<NtsFrames>,
}

/// The NTS requests of a load (`--nts-ke`): one frame template per cookie of the KE, the keys and
/// the unique identifiers' prefix.
#[derive(Clone)]
struct NtsFrames {
    templates: Vec<RequestTemplate>,
    c2s: [u8; 32],
    s2c: [u8; 32],
    /// The first 24 bytes of every unique identifier ([`crate::nts::load_uid`]).
    uid_prefix: [u8; 24],
}

impl std::fmt::Debug for NtsFrames {
    // Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtsFrames").field("templates", &self.templates.len()).finish_non_exhaustive()
    }
}

impl NtsFrames {
    fn new(
        session: &crate::nts::Session,
        src_mac: MacAddr,
        dst_mac: MacAddr,
        target: SocketAddr,
        client_port: u16,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!session.cookies.is_empty(), "the NTS-KE gave no cookie");
        let uid_prefix: [u8; 24] = rand::random();
        let uid = crate::nts::load_uid(&uid_prefix, &[0; 8]);
        let templates = session
            .cookies
            .iter()
            .map(|cookie| {
                let request = crate::nts::request(&session.c2s, cookie, &uid, NtpTimestamp::ZERO, 0, &rand::random());
                RequestTemplate::nts(src_mac, dst_mac, target, client_port, &request).with_context(|| {
                    format!("an NTS cookie of {} bytes does not fit an AF_XDP request frame", cookie.len())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { templates, c2s: session.c2s, s2c: session.s2c, uid_prefix })
    }

    /// The template of the transmit frame at `addr`: frame n has cookie n mod (cookies).
    #[inline]
    fn template(&self, addr: u64) -> &RequestTemplate {
        &self.templates[(addr / u64::from(FRAME_SIZE)) as usize % self.templates.len()]
    }
}

/// A worker's share of the request injector.
#[derive(Debug)]
struct Injector {
    queue: InjectQueue,
    clocks: SendClocks,
    template: InjectionTemplate,
    clients: u32,
}

impl Worker {
    fn run(&mut self, part: &LoadConfig, ready: &Barrier) -> anyhow::Result<(LoadOutcome, WorkerNotes)> {
        if let Some(mut injector) = self.injector.take() {
            let result = self.run_injected(&mut injector, part, ready);
            self.injector = Some(injector);
            return result;
        }
        let pinned = pin_to(part.core());
        // Best effort: 1 µs timer slack, so that short pacing waits end close to when they should.
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
        let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
        let mut book = self.next_book();
        let before = self.start_step();
        // Every thread reaches the barrier, ready or not, so that none waits forever.
        ready.wait();
        pinned?;

        let pacer = Pacer::new(part.rate);
        let start = Instant::now();
        let end = start + part.duration;
        let mut batches: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= end || book.exhausted() {
                break;
            }
            self.reclaim()?;
            let owed = pacer.due_by(now - start);
            let sent = batches < owed && self.send_batch(&mut book)?;
            batches += u64::from(sent);
            let received = self.receive(&mut book);
            if !sent && received == 0 && batches >= owed {
                let due = start + pacer.due(batches);
                let now = Instant::now();
                if due > now + WAIT_MIN {
                    self.wait((due - now - WAIT_EARLY).min(end.saturating_duration_since(now)));
                }
            }
        }
        let send_elapsed = start.elapsed();
        let drain_end = Instant::now() + DRAIN;
        while Instant::now() < drain_end && !book.all_answered() {
            self.reclaim()?;
            if self.receive(&mut book) == 0 {
                self.wait(Duration::from_millis(1));
            }
        }
        Ok(self.finish_step(before, book, send_elapsed))
    }

    /// One step with the requests made in the kernel ([`inject`]): a second thread on the same
    /// core, at the lowest priority (SCHED_IDLE), makes them in one long call while this one
    /// checks the replies, so that the replies never wait for the sender; at the step's end this
    /// thread stops the call and drains what is still coming.
    fn run_injected(
        &mut self,
        injector: &mut Injector,
        part: &LoadConfig,
        ready: &Barrier,
    ) -> anyhow::Result<(LoadOutcome, WorkerNotes)> {
        let core = part.core();
        let pinned = pin_to(core);
        let mut book = self.next_book();
        let before = self.start_step();
        let t = &injector.template;
        injector.queue.set_up(&InjectSetup {
            rate: part.rate,
            limit: injection_limit(part.rate, part.duration),
            nonce: book.nonce(),
            next_seq: 0,
            client_base: t.client_base,
            client_count: injector.clients,
            ipv4: t.ipv4,
            ip_sum: t.ip_sum,
            udp_sum: t.udp_sum,
        });
        let control = RunControl::new();
        ready.wait();
        pinned?;

        let (queue, clocks, frame) = (&mut injector.queue, &injector.clocks, injector.template.frame());
        let tai_offset_ns = self.tai_offset_ns;
        let sent_at = |batch: u64| clocks.batch_sent(batch).map(|ns| (ns, tai_to_ntp(ns, tai_offset_ns)));
        let (made, send_elapsed) = thread::scope(|scope| -> anyhow::Result<(u64, Duration)> {
            let control = &control;
            let maker = scope.spawn(move || {
                // Best effort: unpinned, it still only runs when nothing else wants its core.
                let _ = pin_to(core);
                lowest_priority();
                queue.run_until_stopped(frame, control)
            });
            // Should this thread panic below, the call is stopped all the same: the scope waits
            // for the maker, which would otherwise run until killed.
            let _stop_on_unwind = StopOnDrop(control);
            // The step ends when the program has made every request due (it paces from its own
            // first run, which the kernel's setup of the call delays by some milliseconds), or
            // `duration` after that first run; or, should it never start, a second after the end.
            let limit = injection_limit(part.rate, part.duration);
            let duration_ns = part.duration.as_nanos() as u64;
            let give_up = Instant::now() + part.duration + Duration::from_secs(1);
            loop {
                let started = clocks.started_tai_ns();
                let over = started.is_some_and(|t| tai_now_ns().saturating_sub(t) >= duration_ns);
                if over || clocks.made() >= limit || maker.is_finished() || Instant::now() >= give_up {
                    break;
                }
                book.made_up_to(u64::from(clocks.next_seq()));
                if self.receive_made(&mut book, &sent_at) == 0 {
                    self.wait(WAIT_MIN);
                }
            }
            control.stop();
            let started = clocks.started_tai_ns().unwrap_or_else(tai_now_ns);
            let send_elapsed = Duration::from_nanos(tai_now_ns().saturating_sub(started));
            let made = maker.join().map_err(|_| anyhow::anyhow!("the request injector's thread panicked"))?;
            Ok((made.context("the request injector failed")?, send_elapsed))
        })?;
        book.made_up_to(u64::from(clocks.next_seq()));
        book.made(made);
        let drain_end = Instant::now() + DRAIN;
        while Instant::now() < drain_end && !book.all_answered() {
            if self.receive_made(&mut book, &sent_at) == 0 {
                self.wait(Duration::from_millis(1));
            }
        }
        Ok(self.finish_step(before, book, send_elapsed))
    }

    /// This step's book: its nonce follows the last step's, so late replies to that one are told
    /// apart from invalid ones.
    fn next_book(&mut self) -> SendBook {
        let book = match self.nonces {
            Some((first, last)) => SendBook::after(first, last),
            None => SendBook::new(),
        };
        self.nonces = Some((book.first_nonce(), book.nonce()));
        book
    }

    /// Before a step: what the last one left is cleared away, and the kernel's AF_XDP counters
    /// as they stand are returned for [`finish_step`](Self::finish_step).
    fn start_step(&mut self) -> XskStatistics {
        self.flush();
        self.notes = WorkerNotes::default();
        self.xsk.statistics().unwrap_or_default()
    }

    /// The step's outcome and notes: the kernel's AF_XDP counters over the step go into the
    /// notes, and the frames it dropped on their way to this socket are the client's drops.
    fn finish_step(
        &mut self,
        before: XskStatistics,
        book: SendBook,
        send_elapsed: Duration,
    ) -> (LoadOutcome, WorkerNotes) {
        let after = self.xsk.statistics().unwrap_or_default();
        let stats = XskStatistics {
            rx_dropped: after.rx_dropped.saturating_sub(before.rx_dropped),
            rx_invalid_descs: after.rx_invalid_descs.saturating_sub(before.rx_invalid_descs),
            tx_invalid_descs: after.tx_invalid_descs.saturating_sub(before.tx_invalid_descs),
            rx_ring_full: after.rx_ring_full.saturating_sub(before.rx_ring_full),
            rx_fill_ring_empty: after.rx_fill_ring_empty.saturating_sub(before.rx_fill_ring_empty),
            tx_ring_empty: after.tx_ring_empty.saturating_sub(before.tx_ring_empty),
        };
        self.notes.stats = stats;
        (book.finish(send_elapsed, stats.receive_drops()), std::mem::take(&mut self.notes))
    }

    /// Stamps, pushes and sends one batch of 64 requests; false (nothing sent) when fewer than 64
    /// transmit frames are back from the kernel yet.
    fn send_batch(&mut self, book: &mut SendBook) -> io::Result<bool> {
        if self.free.len() < BATCH {
            // The kernel may need a wakeup to finish sending (and complete) what it has.
            self.xsk.kick_tx()?;
            return Ok(false);
        }
        let base = book.next_seq();
        let first = self.free.len() - BATCH;
        for (i, (&addr, desc)) in self.free[first..].iter().zip(&mut self.tx).enumerate() {
            let template = self.nts.as_ref().map_or(&self.template, |n| n.template(addr));
            let len = template.len() as u32;
            let Some(frame) = self.xsk.umem.data_mut(addr, len) else { unreachable!("transmit frames hold a request") };
            let (seq, client) = (base + i as u64, self.clients.next_client());
            match (&mut self.chains, &self.nts) {
                (Some(chains), _) => {
                    let fields = chains.request(book.nonce(), seq, book.transmit_bytes(seq));
                    template.stamp_fields(frame, client, &fields);
                }
                (None, Some(nts)) => template.stamp_nts(frame, client, book.transmit_bytes(seq), &nts.c2s),
                (None, None) => template.stamp(frame, client, book.transmit_bytes(seq)),
            }
            *desc = libc::xdp_desc { addr, len, options: 0 };
        }
        self.free.truncate(first);
        // T1 as late as possible, but before the requests leave.
        let t1 = tai_now_ns();
        book.start_batch(t1, tai_to_ntp(t1, self.tai_offset_ns));
        let pushed = self.xsk.tx.push(&self.tx);
        // Never short (the ring has an entry for every transmit frame); if it were, the frames
        // not pushed are free again and their requests count as send errors.
        self.free.extend(self.tx[pushed..].iter().map(|d| d.addr));
        // Copy mode sends only from a syscall; zero-copy only when the driver asks for one.
        if pushed > 0 && (self.xsk.mode() == BindMode::Copy || self.xsk.tx.needs_wakeup()) {
            self.xsk.kick_tx()?;
        }
        let took = tai_now_ns().saturating_sub(t1);
        self.notes.batches += 1;
        self.notes.send_ns += took;
        self.notes.send_max_ns = self.notes.send_max_ns.max(took);
        book.sent(pushed);
        Ok(true)
    }

    /// Checks up to 64 waiting replies and gives their frames back to the fill ring. Returns how
    /// many frames it popped.
    fn receive(&mut self, book: &mut SendBook) -> usize {
        if let Some(nts) = &self.nts {
            // NTS: only an authentic reply (or a NAK) goes on to the book's checks.
            let (s2c, uid_prefix) = (nts.s2c, nts.uid_prefix);
            return self.receive_with(book, |book, payload, t4, t4_ntp| {
                book.reply(payload.and_then(|p| nts_header(&s2c, &uid_prefix, p)), t4, t4_ntp)
            });
        }
        let Some(mut chains) = self.chains.take() else {
            return self.receive_with(book, |book, payload, t4, t4_ntp| book.reply(payload, t4, t4_ntp));
        };
        // Interleaved: the chains check each reply; T4, the XDP receive stamp, is also the
        // stamp its T3 error is measured against.
        let n = self.receive_with(book, |book, payload, t4, t4_ntp| match payload {
            Ok(p) if p.len() == HEADER_LEN => {
                let mut reply = [0u8; HEADER_LEN];
                reply.copy_from_slice(p);
                chains.reply(book, &mut reply, t4, t4_ntp, t4_ntp);
            }
            other => book.reply(other, t4, t4_ntp),
        });
        self.chains = Some(chains);
        n
    }

    /// As [`receive`](Self::receive), for requests made by the injector: `sent_at` gives a batch's
    /// send time.
    fn receive_made(&mut self, book: &mut SendBook, sent_at: &impl Fn(u64) -> Option<(u64, NtpTimestamp)>) -> usize {
        self.receive_with(book, |book, payload, t4, t4_ntp| book.reply_made(payload, t4, t4_ntp, sent_at))
    }

    #[inline]
    fn receive_with(
        &mut self,
        book: &mut SendBook,
        mut count: impl FnMut(&mut SendBook, Result<&[u8], Invalid>, u64, NtpTimestamp),
    ) -> usize {
        let n = self.xsk.rx.pop(&mut self.rx);
        if n == 0 {
            if self.xsk.fill.needs_wakeup() {
                let _ = self.xsk.wait_readable(0);
            }
            return 0;
        }
        let mut fallback = None;
        for i in 0..n {
            let desc = self.rx[i];
            self.recycle[i] = self.xsk.umem.frame_of(desc.addr);
            let payload =
                self.xsk.umem.data(desc.addr, desc.len).and_then(|f| reply_payload(f, self.client_port, self.target));
            let Some(payload) = payload else {
                self.notes.ignored += 1;
                continue;
            };
            let t4 = match self.xsk.umem.rx_metadata(desc.addr).and_then(|m| RxMetadata::decode(&m)) {
                Some(meta) => meta.rx_time_ns,
                None => *fallback.get_or_insert_with(tai_now_ns),
            };
            count(book, Ok(payload), t4, tai_to_ntp(t4, self.tai_offset_ns));
        }
        self.xsk.refill(&self.recycle[..n]);
        n
    }

    /// Sent frames come back on the completion ring: they are free again.
    fn reclaim(&mut self) -> io::Result<()> {
        loop {
            let n = self.xsk.completion.pop(&mut self.recycle);
            for &addr in &self.recycle[..n] {
                self.free.push(self.xsk.umem.frame_of(addr));
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// Before a step: replies left from the last one go back unread, sent frames are reclaimed.
    fn flush(&mut self) {
        let _ = self.reclaim();
        loop {
            let n = self.xsk.rx.pop(&mut self.rx);
            for i in 0..n {
                self.recycle[i] = self.xsk.umem.frame_of(self.rx[i].addr);
            }
            self.xsk.refill(&self.recycle[..n]);
            if n == 0 {
                return;
            }
        }
    }

    /// Sleeps until a reply arrives or `timeout` passes (ppoll, nanosecond timeout).
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd { fd: self.xsk.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: one live pollfd, a live timespec; a null signal mask leaves the mask unchanged.
        let _ = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(target: &str, cores: Vec<usize>) -> LoadConfig {
        LoadConfig::new(target.parse().unwrap(), true, 1000, 1.0, cores.len().max(1), cores).unwrap()
    }

    #[test]
    fn the_injector_makes_the_batches_due_within_the_step() {
        // 1000/s: a batch of 64 every 64 ms, batches 0..=15 due before 1 s.
        assert_eq!(injection_limit(1000, Duration::from_secs(1)), 16 * 64);
        // 20 k/s for 1.5 s: 469 batches (the last due at 1.4976 s).
        assert_eq!(injection_limit(20_000, Duration::from_millis(1500)), 469 * 64);
        assert_eq!(injection_limit(5, Duration::ZERO), 0);
        // As fast as possible: as many as 32-bit sequence numbers count, in whole batches.
        assert_eq!(injection_limit(0, Duration::from_secs(1)), (u64::from(u32::MAX) / 64) * 64);
    }

    #[test]
    fn xdp_arguments_are_checked() {
        let ok = |target: &str, net: Option<&str>, clients: u32, cores: Vec<usize>| {
            XdpLoadConfig::new(
                step(target, cores),
                "veth0".into(),
                net.map(|n| n.parse().unwrap()),
                clients,
                DEFAULT_CLIENT_PORT,
                None,
            )
        };
        let c = ok("10.0.0.2:123", None, 4096, vec![0]).unwrap();
        assert_eq!(c.client_net.to_string(), "10.200.0.0/16");
        assert_eq!(ok("[fd00::2]:123", None, 10, vec![]).unwrap().client_net.to_string(), "fd00:5354:c1::/64");
        let e = |r: anyhow::Result<XdpLoadConfig>| r.unwrap_err().to_string();
        assert!(e(ok("127.0.0.1:123", None, 10, vec![])).contains("loopback"));
        assert!(e(ok("10.0.0.2:123", Some("fd00::/64"), 10, vec![])).contains("family"));
        assert!(e(ok("10.0.0.2:123", Some("10.9.0.0/30"), 3, vec![])).contains("from 1 to 2"));
        assert!(e(ok("10.0.0.2:123", None, 0, vec![])).contains("--clients"));
        assert!(e(ok("10.0.0.2:123", None, 1, vec![0, 1])).contains("at least the number of --cores"));
        let no_if = XdpLoadConfig::new(step("10.0.0.2:123", vec![]), String::new(), None, 1, 40123, None);
        assert!(e(no_if).contains("--interface"));
        let port0 = XdpLoadConfig::new(step("10.0.0.2:123", vec![]), "x".into(), None, 1, 0, None);
        assert!(e(port0).contains("--client-port"));
    }

    #[test]
    fn tai_readings_convert_to_utc() {
        let t = tai_to_ntp(37_000_000_000 + 1_500_000_000, 37_000_000_000);
        assert_eq!(t, NtpTimestamp::from_unix(1, 500_000_000));
        let realtime = stratum_host::clock::now();
        let tai = tai_to_ntp(tai_now_ns(), tai_offset_s().unwrap() * 1_000_000_000);
        assert!(tai.since(realtime).to_seconds_f64().abs() < 0.1, "CLOCK_TAI - offset is CLOCK_REALTIME");
    }
}
