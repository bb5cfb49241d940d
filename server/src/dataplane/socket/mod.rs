//! The socket backend: N worker threads, each pinned to a core, each with its own SO_REUSEPORT
//! socket per listen address. A worker moves requests in recvmmsg batches, prefetches the batch's
//! rate-limiter sets ([`WorkerPolicy::prepare`]), answers them in place with
//! [`crate::dataplane::answer`] (proto's `respond`), and sends the replies back with one sendmmsg
//! per `send-slice` replies (see [`Worker::receive_and_answer`]).
//!
//! Per packet there is no allocation, no lock, no syscall and no log line; the kernel receive
//! stamp (SO_TIMESTAMPING) is T2 and the clock is read for T3 as the last step of each reply;
//! T3 − T2 goes into the worker's own turnaround histogram.

pub mod bind;
pub mod cmsg;
pub mod errqueue;
pub mod mmsg;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::SeedableRng;
use socket2::Socket;
use stratum_proto::{DropReason, Verdict};

use crate::config::{ServerConfig, Timestamping, TxTimestamps, Workers};
use crate::dataplane::admission::WorkerPolicy;
use crate::dataplane::answer::answer;
use crate::dataplane::interleave::{self, TxStampMode, WorkerInterleave};
use crate::dataplane::pinning::{assign_cores, spawn_worker};
use crate::dataplane::stats::WorkerCounters;
use crate::dataplane::WorkerInputs;
use crate::time::core::SnapshotReader;
use errqueue::TxStamps;
use mmsg::MessageBatch;
use stratum_host::clock;

/// The running backend: its workers and their counters.
#[derive(Debug)]
pub struct SocketBackend {
    pub addresses: Vec<SocketAddr>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub cores: Vec<Option<usize>>,
    /// A clone of the first worker's socket per listen address: the ntpq thread answers from it.
    pub reply_sockets: Vec<Socket>,
    /// The transmit stamps interleaved replies carry.
    pub tx_stamps: TxStampMode,
    threads: Vec<JoinHandle<()>>,
}

impl SocketBackend {
    /// Opens every socket (so that bind errors surface before anything runs) and starts the workers.
    pub fn start(config: &ServerConfig, inputs: WorkerInputs<'_>) -> anyhow::Result<Self> {
        let WorkerInputs { admission, cell, shutdown, keys, ntpq } = inputs;
        let workers = match config.workers {
            Workers::Count(n) => n,
            Workers::Auto => core_affinity::get_core_ids().map_or(1, |c| c.len().max(1)),
        };
        let cores = assign_cores(workers, config.cores.as_ref().map(|c| c.get_ref().as_slice()));
        // Hardware transmit stamps need the NIC told too (SIOCSHWTSTAMP tx_type ON).
        let tx_hardware = config.interleaved
            && (config.tx_timestamps == TxTimestamps::Hardware
                || (config.tx_timestamps == TxTimestamps::Auto && config.timestamping == Timestamping::Hardware));
        let mut hardware_ok = false;
        if config.timestamping == Timestamping::Hardware || tx_hardware {
            let interface = config.interface.as_deref().unwrap_or_default();
            match bind::enable_hardware_rx_stamps(interface, tx_hardware) {
                Ok(()) => {
                    hardware_ok = true;
                    tracing::info!(interface, tx = tx_hardware, "hardware timestamps enabled");
                }
                Err(e) => {
                    tracing::warn!(interface, error = %e, "no hardware timestamps; using kernel software stamps")
                }
            }
        }
        let tx_stamps = TxStampMode::for_socket(config, hardware_ok);
        let store = interleave::store(config);
        // Sockets report hardware stamps when either direction uses them.
        let socket_stamps =
            if tx_stamps == TxStampMode::Hardware { Timestamping::Hardware } else { config.timestamping };

        let addresses = resolve_ports(&config.listen)?;
        let mut per_worker: Vec<Vec<Socket>> = Vec::with_capacity(workers);
        for _ in 0..workers {
            let sockets = addresses
                .iter()
                .map(|addr| bind::open(*addr, socket_stamps).map_err(|e| listen_error(*addr, e)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            per_worker.push(sockets);
        }
        let reply_sockets = per_worker[0].iter().map(Socket::try_clone).collect::<std::io::Result<Vec<_>>>()?;

        let mut counters = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for (id, sockets) in per_worker.into_iter().enumerate() {
            let worker_counters = Arc::new(WorkerCounters::default());
            counters.push(worker_counters.clone());
            let policy = admission.for_worker(worker_counters.clone(), workers);
            let wildcard = addresses.iter().map(|a| a.ip().is_unspecified()).collect();
            let worker = Worker {
                sockets,
                wildcard,
                batch_size: config.batch,
                send_slice: config.send_slice(),
                reader: SnapshotReader::new(cell.clone()),
                counters: worker_counters.clone(),
                shutdown: shutdown.clone(),
                socket_drops: vec![0; addresses.len()],
                keys: keys.clone().counting_into(worker_counters.clone()),
                ntpq: ntpq.cloned(),
                interleave: WorkerInterleave::new(store.clone(), worker_counters.clone()),
                tx_stamps,
            };
            threads.push(spawn_worker(format!("stratumd-w{id}"), id, cores[id], move || worker.run(policy))?);
        }
        Ok(Self { addresses, counters, cores, reply_sockets, tx_stamps, threads })
    }

    /// Waits for every worker to finish (after shutdown was raised).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Claims every listen address for this process alone (see [`bind::claim`]) and resolves port
/// 0 ("any free port") to the port the kernel chose, so that every worker shares it.
fn resolve_ports(listen: &[SocketAddr]) -> anyhow::Result<Vec<SocketAddr>> {
    listen.iter().map(|addr| bind::claim(*addr).map_err(|e| listen_error(*addr, e))).collect()
}

fn listen_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; the embedded default uses 11123)".to_string()
        }
        Some(libc::EADDRINUSE) => port_in_use_hint(addr.port()),
        Some(libc::EADDRNOTAVAIL) => " (no interface on this host has that address)".to_string(),
        _ => String::new(),
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
}

/// Who holds the port, where /proc tells (another stratumd, chronyd, ntpd...), and what to do.
fn port_in_use_hint(port: u16) -> String {
    let holders = stratum_host::udp_owner::udp_port_holders(port);
    if holders.is_empty() {
        return format!(" (another process already serves UDP port {port}; stop it, or listen on another port)");
    }
    let named: Vec<String> = holders.iter().map(|h| format!("{} (pid {})", h.command, h.pid)).collect();
    format!(" (UDP port {port} is held by {}; stop it, or listen on another port)", named.join(", "))
}

struct Worker {
    sockets: Vec<Socket>,
    wildcard: Vec<bool>,
    batch_size: usize,
    /// Replies answered before they are sent with one sendmmsg (1..=batch_size): a reply's T3
    /// is read when it is answered, and the kernel sends a sendmmsg's datagrams one after the
    /// other, so the k-th of a slice leaves k sends (~1-2 µs each over veth) after its T3.
    send_slice: usize,
    reader: SnapshotReader,
    counters: Arc<WorkerCounters>,
    shutdown: Arc<AtomicBool>,
    /// The kernel's latest drop count for each of this worker's sockets.
    socket_drops: Vec<u32>,
    /// Where mode 6 from a management source goes after `respond()` dropped it.
    ntpq: Option<crate::mgmt::ntpq::NtpqHandoff>,
    /// This worker's own copy of `[auth]`'s keys (a MAC is checked without touching another core's memory).
    keys: crate::auth::WorkerAuth,
    /// Interleaved mode: this worker's side of the shared store.
    interleave: WorkerInterleave,
    /// Transmit stamps asked for per interleaved reply and read back from the error queue
    /// ([`TxStamps`], made on the worker's thread like its [`MessageBatch`]).
    tx_stamps: TxStampMode,
}

impl Worker {
    fn run(mut self, mut admission: WorkerPolicy) {
        let mut batch = MessageBatch::new(self.batch_size);
        let mut tx = TxStamps::new(self.tx_stamps, self.sockets.len(), self.batch_size);
        let mut rng = StdRng::from_entropy();
        let fds: Vec<RawFd> = self.sockets.iter().map(|s| s.as_raw_fd()).collect();
        let mut poll_fds: Vec<libc::pollfd> =
            fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();

        while !self.shutdown.load(Ordering::Relaxed) {
            if fds.len() == 1 {
                // Blocks for the first datagram (up to the socket's read timeout), then takes
                // whatever else is already queued.
                self.receive_and_answer(&mut batch, &mut tx, 0, fds[0], libc::MSG_WAITFORONE, &mut rng, &mut admission);
                continue;
            }
            let timeout_ms = bind::WAKE_INTERVAL.as_millis() as libc::c_int;
            // SAFETY: poll_fds is a live, correctly sized array of pollfd.
            let ready = unsafe { libc::poll(poll_fds.as_mut_ptr(), poll_fds.len() as libc::nfds_t, timeout_ms) };
            if ready <= 0 {
                continue;
            }
            for s in 0..poll_fds.len() {
                if poll_fds[s].revents & libc::POLLIN != 0 {
                    self.receive_and_answer(
                        &mut batch,
                        &mut tx,
                        s,
                        fds[s],
                        libc::MSG_DONTWAIT,
                        &mut rng,
                        &mut admission,
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_and_answer(
        &mut self,
        batch: &mut MessageBatch,
        tx: &mut Option<TxStamps>,
        socket: usize,
        fd: RawFd,
        flags: libc::c_int,
        rng: &mut StdRng,
        admission: &mut WorkerPolicy,
    ) {
        let n = match batch.receive(fd, flags) {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => {
                self.counters.add_receive_error();
                return;
            }
        };
        self.counters.add_received(n as u64);
        let snapshot = *self.reader.refresh();
        self.interleave.watch_steps(&snapshot);
        admission.set_time(clock::monotonic());
        // First pass: every client's rate-limiter set requested at once (their misses overlap);
        // the second pass below decides.
        if admission.prepares() {
            for i in 0..n {
                if let Some(source) = batch.source(i) {
                    admission.prepare(source.ip());
                }
            }
        }
        let wildcard = self.wildcard[socket];
        // Read once per batch, and only when a datagram came without a kernel stamp.
        let mut fallback_rx = None;
        let mut drops_seen = None;
        let mut stamps_asked = 0;
        for i in 0..n {
            let (payload, truncated, source, info) = batch.datagram(i);
            drops_seen = info.socket_drops.or(drops_seen);
            let verdict = match (source, info.packet_info) {
                _ if truncated => Verdict::Drop(DropReason::TooLong),
                (_, Some(dst)) if !dst.is_unicast() => Verdict::Drop(DropReason::Destination),
                (None, _) => Verdict::Drop(DropReason::Malformed),
                (Some(client), _) => {
                    match info.rx_stamp().or_else(|| *fallback_rx.get_or_insert_with(clock::try_now)) {
                        Some(rx_time) => answer(
                            payload,
                            client,
                            rx_time,
                            &snapshot,
                            admission,
                            &mut self.keys,
                            &mut self.interleave,
                            rng,
                            &self.counters,
                            clock::try_now,
                        ),
                        // No kernel stamp and no clock: no true receive time to give.
                        None => Verdict::Drop(DropReason::Clock),
                    }
                }
            };
            self.counters.count(&verdict);
            // Mode 6 never gets a reply here; an allowed source's goes to the ntpq thread.
            if let (Verdict::Drop(DropReason::Control), Some(ntpq), Some(client)) = (verdict, &self.ntpq, source) {
                ntpq.offer(payload, client, info.packet_info, socket);
            }
            if let Some(len) = verdict.reply_len() {
                let reply_from = if wildcard { info.packet_info } else { None };
                batch.queue_reply(i, len, reply_from.as_ref());
                // An interleaved client's reply: its true transmit time goes into the store.
                if let (Some(tx), Some(_)) = (&tx, self.interleave.saved()) {
                    batch.request_tx_stamp(tx.request_flags());
                    stamps_asked += 1;
                }
                // Send a full slice now, so that no reply waits behind more than a slice's sends
                // after its T3 was read (the batch's remainder goes after the loop).
                if batch.queued() >= self.send_slice {
                    self.send(batch, fd);
                }
            }
        }
        if let Some(drops) = drops_seen {
            // The kernel's count is cumulative per socket; the worker publishes the sum.
            self.socket_drops[socket] = drops;
            self.counters.set_socket_drops(self.socket_drops.iter().map(|d| u64::from(*d)).sum());
        }
        self.send(batch, fd);
        // Every slice's TX stamps are read together, once per batch. Software stamps are on the
        // error queue by the time sendmmsg returns; a NIC's may come a batch later. Either way
        // one read, and none while no stamp is outstanding.
        if let Some(tx) = tx {
            tx.asked(socket, stamps_asked);
            let interleave = &self.interleave;
            tx.drain(socket, fd, |key, stamp| interleave.tx_stamp(key, stamp, &snapshot));
        }
    }

    /// Sends the replies queued so far (none: no syscall); a reply the socket refused is counted.
    fn send(&self, batch: &mut MessageBatch, fd: RawFd) {
        if batch.queued() == 0 {
            return;
        }
        let (_, failed) = batch.send_queued(fd);
        if failed > 0 {
            self.counters.add_send_failed(failed as u64);
        }
    }
}
