//! Which core each worker runs on, and starting a worker thread pinned to it (both backends).

use std::thread::JoinHandle;

use anyhow::Context;

/// Core of each of `workers` workers: the configured list (cycled), else worker i on the i-th
/// CPU this process may use; None where nothing is known (no affinity information).
pub fn assign_cores(workers: usize, configured: Option<&[usize]>) -> Vec<Option<usize>> {
    let available = core_affinity::get_core_ids().unwrap_or_default();
    match configured {
        Some(list) if !list.is_empty() => list.iter().copied().map(Some).cycle().take(workers).collect(),
        _ if available.is_empty() => vec![None; workers],
        _ => (0..workers).map(|i| Some(available[i % available.len()].id)).collect(),
    }
}

/// Starts `run` on a thread named `name`, pinned to `core` (a warning, not an error, if the
/// kernel refuses the pin: the worker still serves).
pub fn spawn_worker(
    name: String,
    id: usize,
    core: Option<usize>,
    run: impl FnOnce() + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    tracing::warn!(worker = id, core, "could not pin worker to its core");
                }
            }
            #[cfg(debug_assertions)]
            fault::worker_start(id);
            run();
        })
        .context("cannot start a worker thread")
}

/// Fault injection for the tests of what a dying worker does to the process; compiled into debug
/// builds only (release builds have no such hook).
#[cfg(debug_assertions)]
mod fault {
    /// `STRATUMD_FAULT_PANIC_WORKER=ID:MS`: worker ID panics MS milliseconds after it starts,
    /// while the others serve.
    pub(super) fn worker_start(id: usize) {
        let Ok(spec) = std::env::var("STRATUMD_FAULT_PANIC_WORKER") else { return };
        let Some((worker, ms)) = spec.split_once(':') else { return };
        if worker.parse() == Ok(id) {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
            panic!("injected fault (STRATUMD_FAULT_PANIC_WORKER={spec})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_cores_cycle_and_default_covers_every_worker() {
        assert_eq!(assign_cores(3, Some(&[5, 7])), vec![Some(5), Some(7), Some(5)]);
        let default = assign_cores(4, None);
        assert_eq!(default.len(), 4);
    }

    #[test]
    fn a_spawned_worker_runs() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn_worker("test-w0".into(), 0, None, move || {
            tx.send(std::thread::current().name().map(String::from)).unwrap()
        })
        .unwrap();
        t.join().unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("test-w0"));
    }
}
