//! The operator interface: --version, --check-config, start-up errors and a clean, quick stop.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::*;

fn check(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN).arg("--check-config").arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string(), path.display().to_string())
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("stratumd {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_accepts_shipped_and_example_configs() {
    let (ok, err, _) = check(&config(&["127.0.0.1:11123".into()], 2, "source = \"local\"\nstratum = 3"));
    assert!(ok, "{err}");
    let out = Command::new(BIN).arg("--print-default-config").output().unwrap();
    let (ok, err, _) = check(&String::from_utf8_lossy(&out.stdout));
    assert!(ok, "embedded default: {err}");
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("backend = \"xdp\"") {
            // The example names a NIC this host may not have: check it against loopback instead,
            // and without the xdp feature expect the one-line refusal that names the feature.
            let (ok, err, _) = check(&text.replace("interface = \"eth0\"", "interface = \"lo\""));
            if cfg!(feature = "xdp") {
                assert!(ok, "{}: {err}", path.display());
            } else {
                assert!(
                    !ok && err.contains("server.backend: this stratumd was built without the xdp backend"),
                    "{err}"
                );
            }
            continue;
        }
        let out = Command::new(BIN).arg("--check-config").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bad_configs_fail_with_one_line_naming_file_line_and_key() {
    let cases = [
        (
            "[server]\nlisten = [\"127.0.0.1:1\"]\nworkers = 1\nbogus = 1\n[clock]\nsource = \"local\"\n",
            ":4: server.bogus: ",
            "unknown field",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:1\"]\nworkers = -2\n[clock]\nsource = \"local\"\n",
            ":3: server.workers: ",
            "",
        ),
        ("[server]\nlisten = [\"127.0.0.1\"]\n[clock]\nsource = \"local\"\n", ":2: server.listen: ", "socket address"),
        (
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[clock]\nsource = \"local\"\nstratum = 0\n",
            ":5: clock.stratum: ",
            "outside",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:1\"]\nbackend = \"dpdk\"\n[clock]\nsource = \"local\"\n",
            ":3: server.backend: ",
            "dpdk",
        ),
    ];
    for (text, location, detail) in cases {
        let (ok, err, path) = check(text);
        assert!(!ok, "accepted: {text}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("{path}{location}")), "{err} (wanted {location})");
        assert!(err.contains(detail), "{err}");
    }
    let out = Command::new(BIN).args(["--check-config", "/nonexistent/stratumd.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/stratumd.toml: cannot read"));
}

#[test]
fn a_taken_port_is_a_clear_start_up_error() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"")).unwrap();
    let out = Command::new(BIN).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{log}");
}

#[test]
fn sigterm_stops_within_a_second_under_load() {
    let port = free_port();
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 2, "source = \"local\""), port);
    // Keep requests flowing while the signal arrives (bounded: at most 2 s, loopback only).
    let flood = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let req = stratum_proto::NtpPacket::client_request(4, now_ntp()).to_bytes();
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            for _ in 0..100 {
                let _ = s.send_to(&req, ("127.0.0.1", port));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, log, took) = server.stop();
    flood.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
    assert!(log.contains("stopped: received="), "{log}");
}

#[test]
fn systemd_unit_uses_real_flags_and_a_shipped_config_shape() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/stratumd.service")).unwrap();
    let help = String::from_utf8(Command::new(BIN).arg("--help").output().unwrap().stdout).unwrap();
    let exec_lines: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart")).collect();
    assert_eq!(exec_lines.len(), 2, "{unit}");
    for line in exec_lines {
        let flags: Vec<&str> = line.split_whitespace().filter(|w| w.starts_with("--")).collect();
        assert!(!flags.is_empty(), "{line}");
        for flag in flags {
            assert!(help.contains(flag), "unit uses {flag}, which stratumd --help does not list");
        }
    }
    // The unit grants exactly what port 123 needs and stops within its timeout.
    assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert!(unit.contains("TimeoutStopSec="));
}

#[test]
fn restart_right_after_kill_9_works() {
    let port = free_port();
    let text = config(&[format!("127.0.0.1:{port}"), format!("[::1]:{port}")], 2, "source = \"local\"\nstratum = 4");
    let first = Server::start(&text, port);
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    drop(first); // reaps the child
                 // The same port at once: nothing is left bound or attached by the killed process.
    let mut second = Server::start(&text, port);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(query(addr, 4, Duration::from_secs(1)).expect("answered after restart").0.stratum, 4);
    second.stop();
}

#[cfg(feature = "xdp")]
#[test]
fn xdp_config_errors_name_the_key() {
    let base = "[server]\nbackend = \"xdp\"\ninterface = \"lo\"\n[clock]\nsource = \"local\"\n";
    let cases = [
        (base.replace("\"lo\"", "\"nosuchif0\""), "server.interface: no such interface `nosuchif0`"),
        (base.replace("interface = \"lo\"\n", ""), "server.interface: the xdp backend needs the interface"),
        (base.replace("[clock]", "listen = [\"127.0.0.1:123\"]\n[clock]"), "server.listen: the xdp backend serves"),
        (base.replace("[clock]", "workers = 2\n[clock]"), "server.workers: the xdp backend runs one worker per queue"),
        (base.replace("[clock]", "queues = [0, 0]\n[clock]"), "server.queues: queue 0 is listed twice"),
        (base.replace("[clock]", "queues = \"some\"\n[clock]"), "server.queues: "),
        (base.replace("[clock]", "queues = [0, 1]\ncores = [1]\n[clock]"), "server.cores: 1 cores listed for 2 queues"),
        (base.replace("[clock]", "xdp-mode = \"native\"\n[clock]"), "server.xdp-mode: "),
        (base.replace("[clock]", "port = 0\n[clock]"), "server.port: "),
        (base.replace("[clock]", "idle-spin-us = -1\n[clock]"), "server.idle-spin-us: -1 is outside"),
    ];
    for (text, expected) in cases {
        let (ok, err, path) = check(&text);
        assert!(!ok, "accepted:\n{text}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&path) && err.contains(expected), "expected `{expected}` in: {err}");
    }
    let (ok, err, _) = check(base);
    assert!(ok, "{err}");
}
