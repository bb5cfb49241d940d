//! stratumd: the daemon's composition root. Config, time core, clock sources, the sync thread,
//! the socket backend and its counters; `main.rs` only parses the command line and calls [`run`].

pub mod admission;
pub mod clock;
pub mod config;
pub mod histogram;
pub mod hostclock;
pub mod socket;
pub mod stats;
pub mod sync;
pub mod timecore;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stratum_proto::ServerSnapshot;

use admission::Admission;
use config::Config;
use socket::SocketBackend;
use stats::Totals;
use sync::SyncLoop;
use timecore::SnapshotCell;

/// Runs the server until SIGTERM or SIGINT, then stops within a second.
pub fn run(config: &Config, config_name: &str) -> anyhow::Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, shutdown.clone())?;
        signal_hook::flag::register(signal, shutdown.clone())?;
    }

    let precision = hostclock::measure_precision();
    let source = clock::from_config(config);
    let description = source.describe();
    let cell = SnapshotCell::new(ServerSnapshot::unsynchronized(precision));
    let mut sync = SyncLoop::new(source, cell.clone(), precision);
    let first = sync.update();

    let admission = Admission::from_config(config, false);
    let backend = SocketBackend::start(&config.server, &admission, &cell, &shutdown)?;
    let sync_thread = sync.spawn(shutdown.clone())?;

    let cores: Vec<String> =
        backend.cores.iter().map(|c| c.map_or_else(|| "unpinned".to_string(), |c| c.to_string())).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = config_name,
        backend = "socket",
        listen = ?backend.addresses,
        workers = backend.counters.len(),
        cores = %cores.join(","),
        precision,
        clock = %description,
        stratum = first.stratum,
        leap = ?first.leap,
        "stratumd started"
    );
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
    for addr in &backend.addresses {
        let host = if addr.is_ipv6() { format!("{}", addr.ip()) } else { addr.ip().to_string() };
        let host = if host == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else if host == "::" {
            "::1".into()
        } else {
            host
        };
        tracing::info!("query it with: chronyd -Q -t 6 'server {host} port {} iburst maxsamples 1'", addr.port());
    }

    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping");
    let counters = backend.counters.clone();
    backend.join();
    let _ = sync_thread.join();
    let totals = Totals::sum(counters.iter().map(|c| c.as_ref()));
    tracing::info!("stopped: {}", totals.summary());
    Ok(())
}
