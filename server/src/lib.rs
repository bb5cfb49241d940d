//! stratumd: the daemon's composition root. It wires the parts together and owns nothing else:
//! `config` (the file), `time` (the time core and clock backends), `sync` (the one writer of the
//! time core), `dataplane` (the workers that answer, on either backend) and `mgmt` (`/metrics`, the
//! control socket). `main.rs` only parses the command line and calls [`run`].

pub mod auth;
pub mod config;
pub mod dataplane;
pub mod mgmt;
pub mod notify;
pub mod privileges;
pub mod sync;
pub mod time;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratum_proto::ServerSnapshot;

use config::{Backend, Config};
use dataplane::admission::Admission;
use dataplane::{DataPlane, WorkerInputs};
use mgmt::control::ControlServer;
use mgmt::http::MetricsServer;
use mgmt::ntpq::{NtpqHandoff, NtpqServer};
use mgmt::stats::{StatsSink, StatsWriter, SyncStats};
use mgmt::status::ServerStatus;
use sync::upstream::{SyncView, UpstreamSync};
use sync::SyncLoop;
use time::core::SnapshotCell;

/// The thread that writes the time core.
enum SyncThread {
    Loop(std::thread::JoinHandle<()>),
    Upstream(UpstreamSync),
}

impl SyncThread {
    fn join(self) {
        match self {
            Self::Loop(t) => {
                let _ = t.join();
            }
            Self::Upstream(u) => u.join(),
        }
    }
}

/// Runs the server until SIGTERM or SIGINT, then stops within a second.
pub fn run(config: &Config, config_name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before any thread starts: the sync thread's watchdog pings read it.
    notify::init_from_env();
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, shutdown.clone())?;
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    // SIGHUP's default would end the process, and systemd counts that as a clean stop (no
    // restart): an operator's habitual `kill -HUP` would take the server down. It re-reads the
    // NTS-KE certificate where `[nts]` is on (mgmt::ntske), and is logged either way.
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())?;

    let precision = stratum_host::clock::measure_precision();
    let cell = SnapshotCell::new(ServerSnapshot::unsynchronized(precision));
    // `local` and `external`: a backend the sync loop asks once a second, its first state known
    // now. `sync`: the upstream thread, started with the rest; unsynchronised until it selects.
    let (mut sync_loop, description) = match time::backend::from_config(config) {
        Some(source) => {
            let description = source.describe();
            (Some(SyncLoop::new(source, cell.clone(), precision)), description)
        }
        None => (None, UpstreamSync::describe(config)),
    };
    let first = sync_loop.as_mut().map_or(ServerSnapshot::unsynchronized(precision), SyncLoop::first_update);
    let sync_view = sync_loop.is_none().then(|| Arc::new(SyncView::default()));

    // Over AF_XDP, loopback sources cannot be real clients (the kernel never routes them to a NIC).
    let admission = Admission::from_config(config, config.server.backend == Backend::Xdp);
    // `[nts] master-keys`: one set for the workers and the KE server, rotated by its own thread.
    let nts_keys = match config.nts.master_keys.as_ref().map(|m| auth::SharedKeys::start(m, config.nts.rotation())) {
        Some(Ok(keys)) => Some(keys),
        Some(Err(e)) => anyhow::bail!("cannot write the NTS master key file: {e}"),
        None => None,
    };
    let keys = auth::WorkerAuth::new(config, nts_keys.as_ref());
    // Mode 6 from `[ntpq] allow`: the socket workers hand it to the ntpq thread (mgmt/ntpq.rs).
    let ntpq = config.ntpq.enabled.then(|| NtpqHandoff::new(&config.ntpq.allow));
    let inputs = WorkerInputs {
        admission: &admission,
        cell: &cell,
        shutdown: &shutdown,
        ntpq: ntpq.as_ref().map(|n| &n.0),
        keys: &keys,
    };
    let backend = DataPlane::start(config, inputs)?;
    // `[stats]`: the sync thread makes the lines, a writer thread writes them (mgmt/stats.rs).
    let stats = config.stats.as_ref().map(|c| (c, StatsSink::new(c)));
    let status = Arc::new(ServerStatus {
        version: env!("CARGO_PKG_VERSION"),
        started,
        backend: config.server.backend.as_str(),
        tx_timestamps: backend.tx_stamps().as_str(),
        xdp: backend.xdp_status(),
        addresses: backend.addresses(),
        workers: backend.worker_handles(),
        clock_source: description.clone(),
        cell: cell.clone(),
        limiter: admission.limiter.clone(),
        sync: sync_view.clone(),
        ntpq: ntpq.as_ref().map(|n| n.0.counters.clone()),
        stats: stats.as_ref().map(|(_, (sink, _))| sink.counters.clone()),
        ntske: config.nts.listen.map(|_| Arc::default()),
    });
    // Management interfaces start after the data plane, so their errors (a taken port, a live
    // control socket) stop stratumd with a message; the workers it started stop with it.
    let (metrics_server, control_server) = match start_management(config, &status, &shutdown) {
        Ok(m) => m,
        Err(e) => {
            shutdown.store(true, Ordering::Relaxed);
            backend.join();
            return Err(e);
        }
    };
    let ntpq_server = match (ntpq, backend.reply_sockets()) {
        (Some((handoff, rx)), Some(sockets)) => {
            let leap = config.clock.leap_seconds.as_ref().map(|l| l.list.clone());
            match NtpqServer::start(rx, sockets, status.clone(), handoff.counters.clone(), leap, shutdown.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    shutdown.store(true, Ordering::Relaxed);
                    backend.join();
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    // NTS-KE (`[nts] listen`): its own threads, never a worker's; it tells clients the NTP port.
    let ntp_port = match config.server.backend {
        Backend::Xdp => Some(config.server.port),
        Backend::Socket => config.server.listen.first().map(|a| a.port()),
    };
    let ke_counters = status.ntske.clone().unwrap_or_default();
    let ntske = match mgmt::ntske::start(&config.nts, nts_keys.clone(), ntp_port, ke_counters, shutdown.clone())
        .and_then(|ke| Ok((ke, nts_keys.as_ref().map(|k| k.spawn(shutdown.clone())).transpose()?)))
    {
        Ok(k) => k,
        Err(e) => {
            shutdown.store(true, Ordering::Relaxed);
            backend.join();
            return Err(e);
        }
    };
    let (stats_writer, stats_sink) = match stats {
        Some((c, (sink, rx))) => match StatsWriter::start(c, rx, sink.clone(), status.clone(), shutdown.clone()) {
            Ok(w) => (Some(w), Some(sink)),
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                backend.join();
                return Err(e);
            }
        },
        None => (None, None),
    };
    // Everything privileged is done (sockets bound, the XDP program attached, the control socket
    // made): from here on, every thread holds only what the configuration needs (privileges.rs):
    // nothing, or with discipline = "system" CAP_SYS_TIME in this thread, for the sync thread it
    // spawns below, which then gives it up. Started as root: as `[server] user`; started as a user
    // (with ambient capabilities or none): as that user. Root without `[server] user` stays root.
    let system_clock =
        config.clock.source == config::ClockSource::Sync && config.clock.discipline == config::sync::Discipline::System;
    let restricted = match restrict_privileges(config, control_server.as_ref(), system_clock) {
        Ok(r) => r,
        Err(e) => {
            shutdown.store(true, Ordering::Relaxed);
            backend.join();
            return Err(e);
        }
    };
    let first_error = sync_loop.as_ref().and_then(|s| s.first_error().map(str::to_owned));
    let sync_thread = match (sync_loop, sync_view) {
        (Some(sync_loop), _) => SyncThread::Loop(sync_loop.spawn(shutdown.clone())?),
        (None, view) => {
            let view = view.unwrap_or_default();
            let stats = stats_sink.map(SyncStats::new);
            let upstream = UpstreamSync::start(config, cell.clone(), precision, view, stats, shutdown.clone());
            if system_clock && restricted {
                // The sync thread has CAP_SYS_TIME now; this thread needs it no more.
                privileges::drop_thread_capabilities()?;
            }
            SyncThread::Upstream(upstream?)
        }
    };

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = config_name,
        backend = config.server.backend.as_str(),
        listen = %backend.describe_listen(),
        workers = backend.counters().len(),
        cores = %describe_cores(backend.cores()),
        precision,
        clock = %description,
        "stratumd started, serving {}",
        sync::served(&first)
    );
    if let Some(why) = first_error {
        tracing::error!("{why}; serving unsynchronised (LI=3) until it can be read");
    } else if matches!(sync_thread, SyncThread::Upstream(_)) {
        tracing::info!("polling the upstream servers: unsynchronised (LI=3, stratum 16) until one is selected");
    } else if !first.is_synchronized() {
        tracing::warn!("the clock source is not synchronised: clients will ignore this server until it is");
    }
    log_rate_limiting(&admission);
    log_how_to_reach(&backend, metrics_server.as_ref(), control_server.as_ref());
    if let Some(interval) = notify::watchdog_interval_in_use() {
        tracing::info!("systemd watchdog: the sync thread pings every {:?}", interval / 2);
    }
    notify::ready(&format!("serving {}", sync::served(&first)));

    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if hangup.swap(false, Ordering::Relaxed) {
            if config.nts.listen.is_some() {
                tracing::info!("SIGHUP: the NTS-KE certificate and key are read again; any other configuration change takes a restart");
            } else {
                tracing::info!("SIGHUP: nothing to read again (the configuration is read at start); a configuration change takes a restart");
            }
        }
    }
    notify::stopping();
    tracing::info!("stopping");
    backend.join();
    sync_thread.join();
    if let Some(n) = ntpq_server {
        n.join();
    }
    if let Some(k) = ntske.0 {
        k.join();
    }
    if let Some(rotation) = ntske.1 {
        let _ = rotation.join();
    }
    if let Some(w) = stats_writer {
        w.join();
    }
    if let Some(m) = metrics_server {
        m.join();
    }
    if let Some(c) = control_server {
        c.join();
    }
    // The workers' counters, and the XDP program's denials (its maps outlive the workers).
    tracing::info!("stopped: {}", status.totals().summary());
    Ok(())
}

/// Leaves every thread with what the configuration needs (see `privileges`); false for root
/// without `[server] user`, which keeps root's power.
fn restrict_privileges(config: &Config, control: Option<&ControlServer>, system_clock: bool) -> anyhow::Result<bool> {
    // SAFETY: getuid and geteuid have no preconditions.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let user = config.server.user.as_ref();
    if euid == 0 && user.is_none() {
        return Ok(false);
    }
    let keep = if system_clock { 1u64 << privileges::CAP_SYS_TIME } else { 0 };
    let limit = |e: std::io::Error| anyhow::anyhow!("cannot give up capabilities: {e}");
    privileges::limit_every_thread(keep).map_err(limit)?;
    let name = match user {
        Some(user) if euid == 0 => {
            control.map_or(Ok(()), |c| c.hand_to(user.uid, user.gid))?;
            privileges::drop_to(user, system_clock)
                .map_err(|e| anyhow::anyhow!("cannot become user {}: {e}", user.name))?;
            user.name.clone()
        }
        Some(user) if user.uid != uid => {
            anyhow::bail!("cannot become user {}: started as uid {uid}, not root", user.name)
        }
        Some(user) => user.name.clone(),
        None => format!("uid {uid}"),
    };
    privileges::restrict_every_thread(keep).map_err(limit)?;
    let here = privileges::this_thread().map_or(0, |p| p.effective);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if here & keep != 0 {
        tracing::info!(uid, "running as {name} with CAP_SYS_TIME in the sync thread only");
    } else {
        tracing::info!(uid, "running as {name} with no capabilities");
    }
    Ok(true)
}

fn describe_cores(cores: &[Option<usize>]) -> String {
    let cores: Vec<String> =
        cores.iter().map(|c| c.map_or_else(|| "unpinned".to_string(), |c| c.to_string())).collect();
    cores.join(",")
}

fn log_rate_limiting(admission: &Admission) {
    match &admission.limiter {
        Some(l) => {
            let c = l.config();
            tracing::info!(
                clients = l.capacity(),
                memory_mib = l.memory_bytes() >> 20,
                interval = c.interval,
                burst = c.burst,
                leak = c.leak,
                kod = c.kod,
                ipv4_prefix = c.ipv4_prefix,
                ipv6_prefix = c.ipv6_prefix,
                "rate limiting on"
            );
        }
        None => tracing::info!("rate limiting off"),
    }
}

/// How to query the server, scrape it and ask it, one line each.
fn log_how_to_reach(backend: &DataPlane, metrics: Option<&MetricsServer>, control: Option<&ControlServer>) {
    for addr in &backend.addresses() {
        // A wildcard listener is reached on the loopback address of its family.
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        tracing::info!("query it with: chronyd -Q -t 6 'server {host} port {} iburst maxsamples 1'", addr.port());
    }
    if let Some(m) = metrics {
        tracing::info!("metrics on http://{}/metrics", m.address);
    }
    if let Some(c) = control {
        tracing::info!("control socket {} (stratumctl --socket {} status)", c.path.display(), c.path.display());
    }
}

type Management = (Option<MetricsServer>, Option<ControlServer>);

fn start_management(
    config: &Config,
    status: &Arc<ServerStatus>,
    shutdown: &Arc<AtomicBool>,
) -> anyhow::Result<Management> {
    let metrics = match &config.metrics {
        Some(m) => Some(MetricsServer::start(
            m.listen,
            &m.allow,
            config.health.max_root_distance,
            status.clone(),
            shutdown.clone(),
        )?),
        None => None,
    };
    let control = match &config.control {
        Some(c) => match ControlServer::start(
            &c.socket,
            c.group,
            config.health.max_root_distance,
            status.clone(),
            shutdown.clone(),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                if let Some(m) = metrics {
                    m.join();
                }
                return Err(e);
            }
        },
        None => None,
    };
    Ok((metrics, control))
}
