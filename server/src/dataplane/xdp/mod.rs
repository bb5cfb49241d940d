//! The AF_XDP backend: the steering program on `interface`, one AF_XDP socket and one pinned
//! worker per RX queue.
//!
//! This file starts the backend (attach, open and register the sockets, push the deny list, start
//! the workers) and stops it; `worker` is the per-queue loop, `status` what management reads.
//!
//! A worker takes a batch of frames off its RX ring, answers each in place in the same UMEM frame
//! with the same proto code the socket backend uses (`parse_frame`, `respond`, `write_reply`), puts
//! the replies on the TX ring and everything else straight back on the fill ring, and wakes the
//! kernel once per `send-slice` replies. T2 is the receive stamp the XDP program wrote in front of the
//! frame (CLOCK_TAI, or the NIC's clock), converted to UTC with the snapshot's TAI offset; T3 is
//! the clock read as the last step of each reply. Every frame ends up counted: answered, KoD,
//! dropped with a reason, or (in the program) passed to the kernel.

mod local;
mod status;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use stratum_proto::server::access::{prefilter_denies, Cidr};
use stratum_xdp::program::{AttachedMode, ProgramConfig, SteeringProgram, XdpMode as ProgramMode};
use stratum_xdp::xsk::{BindMode, XskConfig, MAX_BATCH};

// The configured batch is clamped to the ring batch the xdp crate sizes its arrays for; the config's
// own limit (the socket backend's too) must not promise more.
const _: () = assert!(crate::config::MAX_BATCH <= MAX_BATCH);

use crate::config::{Config, DenyAction, Queues, Timestamping, XdpMode};
use crate::dataplane::admission::Admission;
use crate::dataplane::interleave::{self, TxStampMode, WorkerInterleave};
use crate::dataplane::pinning::{assign_cores, spawn_worker};
use crate::dataplane::stats::WorkerCounters;
use crate::dataplane::WorkerInputs;
use crate::time::core::SnapshotReader;
pub use status::XdpStatusReader;
use worker::Worker;

/// The running backend.
#[derive(Debug)]
pub struct XdpBackend {
    pub interface: String,
    pub queues: Vec<u32>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub cores: Vec<Option<usize>>,
    pub status: Arc<XdpStatusReader>,
    /// The transmit stamps interleaved replies carry.
    pub tx_stamps: TxStampMode,
    /// Kernel sockets on our port (IPv4, IPv6) the ntpq thread answers from: the program steers
    /// every datagram to our port to the workers, so they never receive.
    pub reply_sockets: Vec<socket2::Socket>,
    threads: Vec<JoinHandle<()>>,
}

impl XdpBackend {
    /// Attaches the program, opens and registers one socket per queue (every error surfaces
    /// before a worker runs), pushes the deny list into the program, and starts the workers.
    pub fn start(config: &Config, inputs: WorkerInputs<'_>) -> anyhow::Result<Self> {
        let WorkerInputs { admission, cell, shutdown, keys, ntpq } = inputs;
        let server = &config.server;
        let interface = server.interface.clone().context("the xdp backend needs `interface`")?;
        let queues: Vec<u32> = match &server.queues {
            Queues::All => (0..stratum_host::netif::rx_queues(&interface) as u32).collect(),
            Queues::List(list) => list.clone(),
        };
        let cores = assign_cores(queues.len(), server.cores.as_ref().map(|c| c.get_ref().as_slice()));
        let program = attach_program(config, admission, &interface)?;
        let batch = server.batch.clamp(1, MAX_BATCH);
        // One socket per queue (zero-copy where the driver has it, else copy mode), each
        // registered before the next opens. Copy mode sends at most tx_budget frames per wakeup:
        // make it a whole batch where the kernel lets us (drive_tx wakes once per budget otherwise).
        let sockets = program.open_queue_sockets(&queues, &XskConfig::default(), batch as u32)?;
        let status = Arc::new(XdpStatusReader::new(program, &sockets)?);
        // Per-reply stamps through the TX metadata (kernel 6.8+): a zero-copy driver fills in the
        // NIC's, copy mode the kernel's software stamp (when it frees the frame's skb); without a
        // metadata area, the clock read before the send wakeup.
        let metadata = sockets.iter().all(|s| s.umem.tx_metadata_len() > 0);
        let zero_copy = sockets.iter().all(|s| s.mode() == BindMode::ZeroCopy);
        let tx_stamps = TxStampMode::for_xdp(server, metadata, zero_copy);
        if server.tx_timestamps == crate::config::TxTimestamps::Hardware && tx_stamps != TxStampMode::Hardware {
            let using = tx_stamps.as_str();
            tracing::warn!(interface, using, "no NIC transmit stamps (copy mode or no TX metadata area)");
        }
        let store = interleave::store(server);
        let watcher = local::spawn_watcher(status.clone(), shutdown.clone())
            .context("cannot watch the host's addresses (netlink)")?;

        let mut counters = Vec::with_capacity(queues.len());
        let mut threads = Vec::with_capacity(queues.len());
        for (id, socket) in sockets.into_iter().enumerate() {
            let worker_counters = Arc::new(WorkerCounters::default());
            counters.push(worker_counters.clone());
            let policy = admission.for_worker(worker_counters.clone(), queues.len());
            let worker = Worker {
                xsk: socket,
                port: server.port,
                batch,
                send_slice: server.send_slice().min(batch),
                idle_spin: std::time::Duration::from_micros(server.idle_spin_us),
                reader: SnapshotReader::new(cell.clone()),
                counters: worker_counters.clone(),
                shutdown: shutdown.clone(),
                keys: keys.clone().counting_into(worker_counters.clone()),
                interleave: WorkerInterleave::new(store.clone(), worker_counters.clone()),
                tx_stamps,
                stamp_wanted: Vec::new(),
                ntpq: ntpq.cloned(),
            };
            threads.push(spawn_worker(format!("stratumd-x{id}"), id, cores[id], move || worker.run(policy))?);
        }
        threads.push(watcher);
        let reply_sockets = if ntpq.is_some() { ntpq_sockets(server.port) } else { Vec::new() };
        Ok(Self { interface, queues, counters, cores, status, tx_stamps, reply_sockets, threads })
    }

    /// Waits for every worker to finish (after shutdown was raised), then detaches the program.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.status.detach();
    }
}

/// Attaches the steering program in the configured mode, says where it falls short of what was
/// asked (generic mode, no NIC stamps), and pushes the deny list into it when denials are drops.
fn attach_program(config: &Config, admission: &Admission, interface: &str) -> anyhow::Result<SteeringProgram> {
    let server = &config.server;
    let mode = match server.xdp_mode {
        XdpMode::Auto => ProgramMode::Auto,
        XdpMode::Driver => ProgramMode::Driver,
        XdpMode::Generic => ProgramMode::Generic,
    };
    let program_config =
        ProgramConfig { port: server.port, hardware_timestamps: server.timestamping == Timestamping::Hardware };
    let program = SteeringProgram::attach(interface, mode, &program_config)?;
    // Before any socket is registered: from the first request on, only ours are steered.
    let addresses =
        local::sync(&program).with_context(|| format!("cannot give the XDP program {interface}'s host addresses"))?;
    tracing::debug!(addresses, "XDP program steers only requests addressed to this host");
    if program.mode() == AttachedMode::Generic {
        tracing::warn!(interface, "XDP runs in generic (SKB) mode: correct but slower than driver mode");
    }
    if server.timestamping == Timestamping::Hardware && !program.hardware_timestamps() {
        let why = program.hardware_timestamps_fallback().unwrap_or("not available");
        tracing::warn!(interface, why, "no NIC receive timestamps through XDP; using CLOCK_TAI at XDP entry");
    }
    if admission.deny_action == DenyAction::Drop {
        let pushed = push_deny_list(&program, &config.access.allow, &config.access.deny)?;
        if pushed > 0 {
            tracing::info!(entries = pushed, "deny list pushed into the XDP program (dropped before the workers)");
        }
    }
    Ok(program)
}

/// Pushes the deny entries the program can enforce on its own into its deny map (see
/// [`prefilter_denies`]).
fn push_deny_list(program: &SteeringProgram, allow: &[Cidr], deny: &[Cidr]) -> anyhow::Result<usize> {
    let mut pushed = 0;
    for d in prefilter_denies(allow, deny) {
        program.deny(d.addr, d.len).with_context(|| format!("cannot add {d} to the XDP deny map"))?;
        pushed += 1;
    }
    Ok(pushed)
}

/// The sockets mode 6 replies leave from: UDP on our port, IPv4 and IPv6 apart. A port the
/// kernel already gives someone else leaves ntpq unanswered (logged), never stops the server.
fn ntpq_sockets(port: u16) -> Vec<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |domain: Domain, addr: std::net::SocketAddr| -> std::io::Result<Socket> {
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if domain == Domain::IPV6 {
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        Ok(s)
    };
    let v4 = open(Domain::IPV4, (std::net::Ipv4Addr::UNSPECIFIED, port).into());
    let v6 = open(Domain::IPV6, (std::net::Ipv6Addr::UNSPECIFIED, port).into());
    match (v4, v6) {
        (Ok(a), Ok(b)) => vec![a, b],
        (a, b) => {
            let e = a.err().or(b.err()).map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(port, error = %e, "no kernel socket on the port to answer ntpq from; mode 6 goes unanswered");
            Vec::new()
        }
    }
}
