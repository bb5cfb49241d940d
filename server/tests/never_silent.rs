//! A thread that panics ends the process at once, with one line saying which and why, so that a
//! service manager restarts it; nothing is left behind, and the restart serves at once (#13).
//! The panic is injected through a hook that only debug builds (the tests') contain.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_worker_panic_ends_the_process_with_the_reason_and_a_restart_serves() {
    let port = free_port();
    let text = config(&[format!("127.0.0.1:{port}")], 2, "source = \"local\"\nstratum = 3");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("STRATUMD_FAULT_PANIC_WORKER", "1:300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("a panicked worker left the process running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let log = child.wait_with_output().unwrap().stderr;
    let log = String::from_utf8_lossy(&log);
    assert_eq!(status.code(), Some(70), "{log}");
    // Within a second of the panic (at 300 ms after the worker started).
    assert!(took < Duration::from_millis(1300), "took {took:?}: {log}");
    let line = log.lines().find(|l| l.contains("panicked")).unwrap_or_else(|| panic!("no panic line: {log}"));
    assert!(line.contains("ERROR") && line.contains("stratumd-w1") && line.contains("injected fault"), "{line}");

    // The restart: the port is free at once.
    let mut again = Server::start(&text, port);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(query(addr, 4, Duration::from_secs(1)).expect("answered after the restart").0.stratum, 3);
    again.stop();
}
