//! `stratum-bench load` with the socket engine: one step, over one generator thread or one per
//! core of `--cores`. The step's config is [`crate::config`], its counters [`crate::counts`], the
//! engines' outcome [`crate::outcome`] and its report [`crate::report`].

use std::sync::Barrier;
use std::thread;

use crate::config::LoadConfig;
use crate::engine;
use crate::outcome::LoadOutcome;
use crate::report::LoadReport;

/// Runs one step with the socket engine: one generator thread per core of `--cores` (their send
/// phases start together), one thread otherwise.
pub fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    // Only a loopback server's socket is in our view of /proc/net/udp.
    let port = config.target.port();
    let server_drops_before = config.target.ip().is_loopback().then(|| engine::socket::socket_drops(&[port]));
    let mut outcome = if config.threads() == 1 {
        engine::socket::run(config, None)?
    } else {
        let parts = config.per_thread();
        let start = Barrier::new(parts.len());
        let outcomes: Vec<anyhow::Result<LoadOutcome>> = thread::scope(|scope| {
            let handles: Vec<_> =
                parts.iter().map(|part| scope.spawn(|| engine::socket::run(part, Some(&start)))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked"))))
                .collect()
        });
        let mut outcomes = outcomes.into_iter();
        let mut total = outcomes.next().expect("at least one thread")?;
        for o in outcomes {
            total.merge(o?)?;
        }
        total
    };
    outcome.server_socket_drops =
        server_drops_before.map(|before| engine::socket::socket_drops(&[port]).saturating_sub(before));
    Ok(LoadReport::new(config, "socket", &outcome))
}
