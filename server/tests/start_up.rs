//! Starting up as an operator sees it: one instance per port, and start-up lines that appear only
//! after a successful start, in plain words.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn local_config(port: u16) -> String {
    config(&[format!("127.0.0.1:{port}"), format!("[::1]:{port}")], 2, "source = \"local\"\nstratum = 10")
}

/// Runs stratumd on `config` to its end (it is expected to fail at start) and returns its status
/// and log.
fn run_to_end(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("stratumd kept running: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_second_instance_on_the_same_port_refuses_to_start_and_names_the_first() {
    let port = free_port();
    let mut first = Server::start(&local_config(port), port);
    let (ok, log) = run_to_end(&local_config(port));
    assert!(!ok, "the second instance started: {log}");
    let error: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(error.len(), 1, "{log}");
    assert!(error[0].contains(&format!("cannot listen on 127.0.0.1:{port}")), "{log}");
    assert!(error[0].contains(&format!("held by stratumd (pid {})", first.pid())), "{log}");
    // The first instance still has all the traffic: it answers, and it is the only one there.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(query(addr, 4, Duration::from_secs(1)).is_some());
    let (status, _, _) = first.stop();
    assert!(status.success());
}

#[test]
fn a_failed_start_logs_only_its_error() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let (ok, log) = run_to_end(&local_config(port));
    assert!(!ok);
    assert!(!log.contains("serving") && !log.contains("started"), "a failed start looked like a start: {log}");
    assert!(log.contains(&format!("UDP port {port} is held by")) || log.contains("another process"), "{log}");
}

#[test]
fn start_up_lines_are_plain_words_and_come_after_the_start() {
    let port = free_port();
    let mut server = Server::start(&local_config(port), port);
    let log = server.stop_output();
    let started = log.lines().position(|l| l.contains("stratumd started")).expect(&log);
    assert!(
        log.lines().nth(started).unwrap().contains("serving synchronised time at stratum 10, refid 127.127.1.1"),
        "{log}"
    );
    assert!(log.lines().take(started).all(|l| !l.contains("serving")), "{log}");
    for debug_form in ["RefId(", "NoWarning", "leap=", "[127.0.0.1"] {
        assert!(!log.contains(debug_form), "{debug_form} in {log}");
    }
}

/// SIGHUP neither ends stratumd nor stops its answers (its default action would end the process,
/// and systemd would count that as a clean stop and not restart it): it is logged, and SIGTERM
/// still stops it cleanly.
#[test]
fn sighup_is_logged_and_the_server_keeps_answering() {
    let port = free_port();
    let mut server = Server::start(&local_config(port), port);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..3 {
        // SAFETY: kill with a live child's pid and a plain signal number.
        assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(150));
        assert!(query(addr, 4, Duration::from_secs(1)).is_some(), "no answer after SIGHUP");
    }
    let (status, log, _) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("SIGHUP: nothing to read again"), "{log}");
}
