//! stratumctl as an operator meets it: its own name, version and help, and its tables from a
//! control socket that answers with canned JSON (no stratumd needed).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;

const CTL: &str = env!("CARGO_BIN_EXE_stratumctl");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CTL).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// #19 (9): stratumctl is not stratumd.
#[test]
fn version_and_help_name_stratumctl() {
    let (ok, out, _) = run(&["--version"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("stratumctl {}", env!("CARGO_PKG_VERSION")));
    let (ok, out, _) = run(&["--help"]);
    assert!(ok);
    assert!(out.starts_with("stratumctl: query a running stratumd over its control socket"), "{out}");
    assert!(out.contains("Usage: stratumctl "), "{out}");
    assert!(!out.contains("NTP server (daemon)"), "the daemon's description: {out}");
}

/// #19 (7): `clients --help` documents the `--top` default and what it takes to be listed.
#[test]
fn clients_help_documents_top_and_sampling() {
    let (ok, out, _) = run(&["clients", "--help"]);
    assert!(ok);
    assert!(out.contains("--top <TOP>") && out.contains("[default: 10]"), "{out}");
    assert!(out.contains("at most 10000"), "{out}");
    assert!(out.contains("1 request in 16"), "{out}");
}

/// Serves one connection on a fresh socket with `response`; returns the socket's path.
fn canned(dir: &tempfile::TempDir, response: serde_json::Value) -> String {
    let path = dir.path().join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = (&stream).write_all(format!("{response}\n").as_bytes());
        }
    });
    path.display().to_string()
}

/// #19 (8): the human status of the xdp backend, through the binary.
#[test]
fn xdp_status_through_the_binary_names_interface_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let status = serde_json::json!({
        "version": "0.1.0", "uptime_seconds": 1.0, "backend": "xdp", "workers": 1, "listen": [],
        "clock_source": "local", "synchronized": true, "stratum": 2, "leap": 0, "refid": "LOCL",
        "root_delay_seconds": 0.0, "root_dispersion_seconds": 0.0, "ratelimit": false,
        "requests": { "received": 0, "answered": 0, "kod": {}, "dropped": {}, "send_failed": 0 },
        "xdp": { "interface": "eth0", "attach_mode": "generic", "bind_mode": "copy", "hardware_timestamps": false,
                 "program": { "no_socket": 3 }, "queues": [{ "queue": 0, "worker": 0 }] },
    });
    let socket = canned(&dir, status);
    let (ok, out, err) = run(&["-s", &socket, "status"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("interface") && l.ends_with("eth0")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("xdp mode") && l.ends_with("generic, copy")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("queues") && l.ends_with('0')), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("listen")), "{out}");
}

/// #19 (7): an empty clients list through the binary says why.
#[test]
fn empty_clients_list_through_the_binary_explains_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let socket = canned(&dir, serde_json::json!({ "ratelimit": true, "tracked": 1, "capacity": 1024, "clients": [] }));
    let (ok, out, err) = run(&["-s", &socket, "clients", "--top", "5"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 of 1024 clients tracked"), "{out}");
    assert!(out.contains("only clients with a sampled request are listed"), "{out}");
}
