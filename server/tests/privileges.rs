//! Least privilege (#13): stratumd started as root with `[server] user` serves as that user with
//! no capabilities in any of its threads once it is up. (The xdp backend's case is in xdp.rs.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Uid, Gid and CapEff of every thread of `pid`.
pub fn threads_identity(pid: i32) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let field =
            |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().trim().to_string();
        let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
        out.push((field("Uid:"), field("Gid:"), caps));
    }
    out
}

#[test]
fn the_socket_backend_serves_as_the_configured_user_with_no_capabilities() {
    if !require(is_root(), "starting as root and dropping to a user needs root") {
        return;
    }
    let port = free_port();
    let text = config(&[format!("127.0.0.1:{port}")], 2, "source = \"local\"\nstratum = 3")
        .replace("[clock]", "user = \"nobody\"\n\n[clock]");
    let mut server = Server::start(&text, port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(query(addr, 4, Duration::from_secs(1)).is_some());
    let threads = threads_identity(server.pid());
    assert!(threads.len() >= 3, "main and two workers at least: {threads:?}");
    for (uid, gid, caps) in &threads {
        assert!(uid.split_whitespace().all(|u| u == "65534"), "uid {uid}");
        assert!(gid.split_whitespace().all(|g| g != "0"), "gid {gid}");
        assert_eq!(*caps, 0, "capabilities left: {caps:x}");
    }
    // Still serving, after the drop as before.
    assert_eq!(query(addr, 4, Duration::from_secs(1)).unwrap().0.stratum, 3);
    let log = server.stop_output();
    assert!(log.contains("running as nobody with no capabilities"), "{log}");
}

#[test]
fn a_user_that_does_not_exist_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.toml");
    let text = config(&["127.0.0.1:11123".into()], 1, "source = \"local\"")
        .replace("[clock]", "user = \"no-such-user-x\"\n\n[clock]");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(BIN).arg("--check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("server.user: no user `no-such-user-x`"), "{err}");
}
