//! The AF_XDP backend: the steering program on `interface`, one AF_XDP socket and one pinned
//! worker per RX queue.
//!
//! A worker takes a batch of frames off its RX ring, answers each in place in the same UMEM frame
//! with the same proto code the socket backend uses (`parse_frame`, `respond`, `write_reply`), puts
//! the replies on the TX ring and everything else straight back on the fill ring, and wakes the
//! kernel at most once per batch. T2 is the receive stamp the XDP program wrote in front of the
//! frame (CLOCK_TAI, or the NIC's clock), converted to UTC with the snapshot's TAI offset; T3 is
//! the clock read as the last step of each reply. Every frame ends up counted: answered, KoD,
//! dropped with a reason, or (in the program) passed to the kernel.

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use stratum_proto::frame::{parse_frame, write_reply, FrameVerdict};
use stratum_proto::server::access::Cidr;
use stratum_proto::{respond, DropReason, NtpTimestamp, RxMeta, ServerSnapshot, Verdict};
use stratum_xdp::meta::RxMetadata;
use stratum_xdp::program::{AttachedMode, ProgramConfig, SteeringProgram, XdpMode as ProgramMode};
use stratum_xdp::xsk::{self, BatchOutcome, BindMode, ReplyScratch, XskConfig, XskSocket, MAX_BATCH, TX_WAIT_SLEEP_MS};

use crate::config::{Config, Queues, Timestamping, XdpMode};
use crate::dataplane::admission::{Admission, WorkerPolicy};
use crate::dataplane::pinning::{assign_cores, spawn_worker};
use crate::dataplane::stats::WorkerCounters;
use crate::mgmt::status::{XdpQueueStatus, XdpStatus, XdpStatusSource};
use crate::time::core::{SnapshotCell, SnapshotReader};
use stratum_host::clock;

/// Empty polls of the RX ring between two looks at the clock while spinning.
const SPINS_PER_CLOCK_READ: u32 = 64;
/// Longest sleep, so shutdown is noticed promptly.
const SLEEP_MS: i32 = 20;

/// The running backend.
#[derive(Debug)]
pub struct XdpBackend {
    pub interface: String,
    pub queues: Vec<u32>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub cores: Vec<Option<usize>>,
    pub status: Arc<XdpStatusReader>,
    threads: Vec<JoinHandle<()>>,
}

impl XdpBackend {
    /// Attaches the program, opens and registers one socket per queue (every error surfaces
    /// before a worker runs), pushes the deny list into the program, and starts the workers.
    pub fn start(
        config: &Config,
        admission: &Admission,
        cell: &Arc<SnapshotCell>,
        shutdown: &Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let server = &config.server;
        let interface = server.interface.clone().context("the xdp backend needs `interface`")?;
        let queues: Vec<u32> = match &server.queues {
            Queues::All => (0..stratum_host::netif::rx_queues(&interface) as u32).collect(),
            Queues::List(list) => list.clone(),
        };
        let cores = assign_cores(queues.len(), server.cores.as_ref().map(|c| c.get_ref().as_slice()));

        let mode = match server.xdp_mode {
            XdpMode::Auto => ProgramMode::Auto,
            XdpMode::Driver => ProgramMode::Driver,
            XdpMode::Generic => ProgramMode::Generic,
        };
        let program_config =
            ProgramConfig { port: server.port, hardware_timestamps: server.timestamping == Timestamping::Hardware };
        let program = SteeringProgram::attach(&interface, mode, &program_config)?;
        if program.mode() == AttachedMode::Generic {
            tracing::warn!(interface, "XDP runs in generic (SKB) mode: correct but slower than driver mode");
        }
        if server.timestamping == Timestamping::Hardware && !program.hardware_timestamps() {
            let why = program.hardware_timestamps_fallback().unwrap_or("not available");
            tracing::warn!(interface, why, "no NIC receive timestamps through XDP; using CLOCK_TAI at XDP entry");
        }
        if admission.deny_action == crate::config::DenyAction::Drop {
            let pushed = push_deny_list(&program, &config.access.allow, &config.access.deny)?;
            if pushed > 0 {
                tracing::info!(entries = pushed, "deny list pushed into the XDP program (dropped before the workers)");
            }
        }

        // Copy mode in generic XDP; zero-copy where the driver has it.
        let xsk_config = XskConfig::default();
        let mut sockets = Vec::with_capacity(queues.len());
        for &queue in &queues {
            let socket = XskSocket::open(program.ifindex(), queue, &xsk_config)
                .with_context(|| format!("cannot open the AF_XDP socket for {interface} queue {queue}"))?;
            program
                .register_socket(queue, socket.as_fd())
                .with_context(|| format!("cannot register the AF_XDP socket of {interface} queue {queue}"))?;
            sockets.push(socket);
        }
        let batch = server.batch.clamp(1, MAX_BATCH);
        // Copy mode sends at most tx_budget frames per wakeup: make it a whole batch where the
        // kernel lets us (drive_tx wakes it once per budget otherwise).
        for socket in &mut sockets {
            socket.set_tx_budget(batch as u32);
        }
        let bind_mode = sockets.first().map_or(BindMode::Copy, |s| s.mode());
        let stats_fds = sockets
            .iter()
            .enumerate()
            .map(|(worker, s)| Ok((s.queue(), worker, s.as_fd().try_clone_to_owned()?)))
            .collect::<std::io::Result<Vec<_>>>()?;

        let mut counters = Vec::with_capacity(queues.len());
        let mut threads = Vec::with_capacity(queues.len());
        for (id, socket) in sockets.into_iter().enumerate() {
            let worker_counters = Arc::new(WorkerCounters::default());
            counters.push(worker_counters.clone());
            let policy = admission.for_worker(worker_counters.clone());
            let worker = Worker {
                xsk: socket,
                port: server.port,
                batch,
                idle_spin: std::time::Duration::from_micros(server.idle_spin_us),
                reader: SnapshotReader::new(cell.clone()),
                counters: worker_counters,
                shutdown: shutdown.clone(),
            };
            threads.push(spawn_worker(format!("stratumd-x{id}"), id, cores[id], move || worker.run(policy))?);
        }
        let status = Arc::new(XdpStatusReader {
            attach_mode: match program.mode() {
                AttachedMode::Driver => "driver",
                AttachedMode::Generic => "generic",
            },
            bind_mode: match bind_mode {
                BindMode::ZeroCopy => "zero-copy",
                BindMode::Copy => "copy",
            },
            hardware_timestamps: program.hardware_timestamps(),
            interface: interface.clone(),
            program: Mutex::new(Some(program)),
            sockets: stats_fds,
        });
        Ok(Self { interface, queues, counters, cores, status, threads })
    }

    /// Waits for every worker to finish (after shutdown was raised), then detaches the program.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.status.detach();
    }
}

/// Pushes each deny entry into the program's deny map, except one with a more specific allow
/// entry inside it: the access list lets that allow win, and XDP cannot tell them apart.
fn push_deny_list(program: &SteeringProgram, allow: &[Cidr], deny: &[Cidr]) -> anyhow::Result<usize> {
    let mut pushed = 0;
    for d in deny {
        if allow.iter().any(|a| a.len > d.len && contains(d, a.addr)) {
            continue;
        }
        program.deny(d.addr, d.len).with_context(|| format!("cannot add {}/{} to the XDP deny map", d.addr, d.len))?;
        pushed += 1;
    }
    Ok(pushed)
}

fn contains(net: &Cidr, ip: IpAddr) -> bool {
    let (net_bits, ip_bits, width) = match (net.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)) << 96, u128::from(u32::from(i)) << 96, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    let len = u32::from(net.len).min(width);
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    net_bits & mask == ip_bits & mask
}

/// What `/metrics` and `stratumctl` read of the data plane: the program's maps and each socket's
/// XDP_STATISTICS (through a duplicate of its descriptor; the worker owns the socket).
#[derive(Debug)]
pub struct XdpStatusReader {
    interface: String,
    attach_mode: &'static str,
    bind_mode: &'static str,
    hardware_timestamps: bool,
    /// None once detached at stop.
    program: Mutex<Option<SteeringProgram>>,
    sockets: Vec<(u32, usize, OwnedFd)>,
}

impl XdpStatusReader {
    fn detach(&self) {
        if let Ok(mut p) = self.program.lock() {
            p.take();
        }
    }
}

impl XdpStatusSource for XdpStatusReader {
    fn read(&self) -> XdpStatus {
        let program =
            self.program.lock().ok().and_then(|p| p.as_ref().and_then(|p| p.counters().ok())).unwrap_or_default();
        let queues = self
            .sockets
            .iter()
            .map(|(queue, worker, fd)| {
                let s = xsk::statistics(fd.as_fd()).unwrap_or_default();
                XdpQueueStatus {
                    queue: *queue,
                    worker: *worker,
                    rx_dropped: s.rx_dropped,
                    rx_invalid_descs: s.rx_invalid_descs,
                    tx_invalid_descs: s.tx_invalid_descs,
                    rx_ring_full: s.rx_ring_full,
                    fill_ring_empty: s.rx_fill_ring_empty,
                    tx_ring_empty: s.tx_ring_empty,
                }
            })
            .collect();
        XdpStatus {
            interface: self.interface.clone(),
            attach_mode: self.attach_mode,
            bind_mode: self.bind_mode,
            hardware_timestamps: self.hardware_timestamps,
            redirected: program.redirected,
            passed: program.passed,
            malformed: program.malformed,
            no_socket: program.no_socket,
            denied: program.denied,
            queues,
        }
    }
}

struct Worker {
    xsk: XskSocket,
    port: u16,
    batch: usize,
    /// How long to spin on an empty RX ring before sleeping in poll(2).
    idle_spin: std::time::Duration,
    reader: SnapshotReader,
    counters: Arc<WorkerCounters>,
    shutdown: Arc<AtomicBool>,
}

const EMPTY_DESC: libc::xdp_desc = libc::xdp_desc { addr: 0, len: 0, options: 0 };

impl Worker {
    fn run(mut self, mut admission: WorkerPolicy) {
        let mut rx = [EMPTY_DESC; MAX_BATCH];
        let mut scratch = ReplyScratch::default();
        let mut rng = StdRng::from_entropy();
        // Spinning on an empty ring for `idle_spin` keeps a busy queue's latency low (no wakeup
        // from poll(2) between bursts); sleeping after it keeps an idle queue off the CPU.
        let mut spins = 0u32;
        let mut idle_since: Option<std::time::Instant> = None;
        while !self.shutdown.load(Ordering::Relaxed) {
            self.xsk.recycle_completions(&mut scratch);
            let n = self.xsk.rx.pop(&mut rx[..self.batch]);
            if n == 0 {
                // Replies a busy device left on the TX ring go out now, not with the next request
                // (measured on veth: a burst's last ~1000 replies otherwise left 0.4 s to 3 s late,
                // one budget per 20 ms sleep).
                let tx_waiting = self.xsk.drive_tx();
                spins += 1;
                if spins % SPINS_PER_CLOCK_READ == 0 || self.idle_spin.is_zero() {
                    let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= self.idle_spin {
                        let sleep = if tx_waiting { TX_WAIT_SLEEP_MS } else { SLEEP_MS };
                        if self.xsk.wait_readable(sleep).is_err() {
                            self.counters.add_receive_error();
                        }
                        idle_since = None;
                    }
                }
                continue;
            }
            spins = 0;
            idle_since = None;
            self.counters.add_received(n as u64);
            let outcome = self.answer_batch(&rx[..n], &mut scratch, &mut rng, &mut admission);
            // TX ring full: those replies are lost (counted); their frames went back to the fill ring.
            if outcome.tx_ring_full > 0 {
                self.counters.add_send_failed(outcome.tx_ring_full as u64);
            }
        }
    }

    /// Answers every frame of the batch in place and sends the replies.
    fn answer_batch(
        &mut self,
        rx: &[libc::xdp_desc],
        scratch: &mut ReplyScratch,
        rng: &mut StdRng,
        admission: &mut WorkerPolicy,
    ) -> BatchOutcome {
        let snapshot = *self.reader.refresh();
        admission.set_time(clock::monotonic());
        let (port, counters) = (self.port, &self.counters);
        // Read at most once per batch, and only for a frame without a stamp from the program.
        let mut fallback_rx = None;
        self.xsk.answer_in_place(rx, scratch, |umem, desc| {
            let meta = umem.rx_metadata(desc.addr).and_then(|m| RxMetadata::decode(&m));
            let rx_time = match meta {
                Some(m) => tai_to_utc(m.rx_time_ns, &snapshot),
                None => *fallback_rx.get_or_insert_with(clock::now),
            };
            match umem.data_mut(desc.addr, desc.len) {
                Some(frame) => answer_frame(frame, port, rx_time, &snapshot, rng, admission, counters),
                None => {
                    // A descriptor outside its frame: never from a sane kernel, counted all the same.
                    counters.count(&Verdict::Drop(DropReason::Malformed));
                    None
                }
            }
        })
    }
}

/// One frame: parse, decide, and rewrite into the reply in place. Returns the reply frame's
/// length, or None when nothing is sent (the verdict is counted either way).
fn answer_frame(
    frame: &mut [u8],
    port: u16,
    rx_time: NtpTimestamp,
    snapshot: &ServerSnapshot,
    rng: &mut StdRng,
    admission: &mut WorkerPolicy,
    counters: &WorkerCounters,
) -> Option<usize> {
    let parsed = match parse_frame(frame, port) {
        FrameVerdict::Ntp(parsed) => parsed,
        // The program steered it here, so it was for our port; whatever proto finds wrong with it
        // (a corrupt IPv4 header, say) is a counted drop: AF_XDP cannot hand a frame back.
        FrameVerdict::Pass => {
            counters.count(&Verdict::Drop(DropReason::Malformed));
            return None;
        }
        FrameVerdict::Drop(reason) => {
            counters.count(&Verdict::Drop(reason));
            return None;
        }
    };
    let payload = &mut frame[parsed.payload()..parsed.payload() + parsed.payload_len];
    let rx = RxMeta { client: parsed.source, rx_time, noise: rng.next_u64() };
    let mut tx_time = None;
    let verdict = respond(payload, rx, snapshot, admission, || {
        let t3 = clock::now();
        tx_time = Some(t3);
        t3
    });
    if let Some(t3) = tx_time {
        counters.turnaround.record(t3.since(rx_time));
    }
    counters.count(&verdict);
    let len = verdict.reply_len()?;
    let total = write_reply(frame, &parsed, len);
    if total.is_none() {
        counters.add_send_failed(1);
    }
    total
}

/// A CLOCK_TAI stamp in nanoseconds, as UTC in NTP form (TAI - UTC from the snapshot).
fn tai_to_utc(tai_ns: u64, snapshot: &ServerSnapshot) -> NtpTimestamp {
    let unix_ns = tai_ns as i64 - i64::from(snapshot.tai_offset) * 1_000_000_000;
    NtpTimestamp::from_unix(unix_ns.div_euclid(1_000_000_000), unix_ns.rem_euclid(1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn containment_respects_family_and_length() {
        assert!(contains(&cidr("10.0.0.0/8"), "10.1.2.3".parse().unwrap()));
        assert!(!contains(&cidr("10.0.0.0/8"), "11.0.0.1".parse().unwrap()));
        assert!(!contains(&cidr("10.0.0.0/8"), "::a00:1".parse().unwrap()));
        assert!(contains(&cidr("2001:db8::/32"), "2001:db8:1::1".parse().unwrap()));
        assert!(contains(&cidr("0.0.0.0/0"), "192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn tai_stamps_convert_with_the_snapshot_offset() {
        let mut s = ServerSnapshot::unsynchronized(-20);
        let tai_ns = 1_700_000_037_250_000_000u64;
        s.tai_offset = 37;
        assert_eq!(tai_to_utc(tai_ns, &s), NtpTimestamp::from_unix(1_700_000_000, 250_000_000));
        s.tai_offset = 0;
        assert_eq!(tai_to_utc(tai_ns, &s), NtpTimestamp::from_unix(1_700_000_037, 250_000_000));
    }
}
