//! Least privilege (#13): stratumd started as root with `[server] user` serves as that user with
//! no capabilities in any of its threads once it is up. (The xdp backend's case is in xdp.rs.)

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

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

/// Name, CapPrm and CapEff of every thread of `pid`.
fn threads_capabilities(pid: i32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let mask = |field: &str| {
            let hex = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim();
            u64::from_str_radix(hex, 16).unwrap()
        };
        out.push((name, mask("CapPrm:"), mask("CapEff:")));
    }
    out
}

/// `discipline = "system"` as a configured user: the sync thread, which calls clock_adjtime,
/// keeps CAP_SYS_TIME (and nothing else); every other thread has no capability at all.
///
/// This test must never let stratumd adjust this machine's clock, and it cannot: its only
/// upstream is a UDP socket held here that never answers, so the engine never makes a clock
/// update, and stratumd writes nothing to the kernel before its first clock update (it only reads
/// the kernel's frequency at start; time/system.rs). The capability sets are read right after
/// start, once the silent upstream has seen a request (so the sync thread runs), and stratumd is
/// stopped at once.
#[test]
fn the_system_discipline_keeps_cap_sys_time_in_the_sync_thread_only() {
    if !require(is_root(), "starting as root and dropping to a user needs root") {
        return;
    }
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let upstream = silent.local_addr().unwrap();
    let port = free_port();
    let clock =
        format!("source = \"sync\"\ndiscipline = \"system\"\n\n[[upstream]]\naddress = \"{upstream}\"\niburst = true");
    let text = config(&[format!("127.0.0.1:{port}")], 2, &clock).replace("[clock]", "user = \"nobody\"\n\n[clock]");
    let mut server = Server::start(&text, port);
    let mut buf = [0u8; 64];
    let (len, _) = silent.recv_from(&mut buf).expect("the sync thread polls the upstream");
    assert_eq!(len, 48);
    // Never answered: unsynchronised, no clock update.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(query(addr, 4, Duration::from_secs(1)).unwrap().0.stratum, 16);
    let sys_time = 1u64 << 25;
    let deadline = Instant::now() + Duration::from_secs(3);
    let threads = loop {
        let threads = threads_capabilities(server.pid());
        let settled = threads.iter().all(|(name, prm, eff)| {
            let want = if name == "stratumd-sync" { sys_time } else { 0 };
            *prm == want && *eff == want
        });
        if settled || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let identities = threads_identity(server.pid());
    let log = server.stop_output();
    for (uid, _, _) in &identities {
        assert!(uid.split_whitespace().all(|u| u == "65534"), "uid {uid}");
    }
    assert_eq!(threads.iter().filter(|t| t.0 == "stratumd-sync").count(), 1, "{threads:?}");
    for (name, prm, eff) in &threads {
        let want = if name == "stratumd-sync" { sys_time } else { 0 };
        assert_eq!((*prm, *eff), (want, want), "{name}: permitted {prm:x}, effective {eff:x} in {threads:?}");
    }
    assert!(log.contains("running as nobody with CAP_SYS_TIME in the sync thread only"), "{log}");
    assert!(!log.contains("stepped the system clock") && !log.contains("cannot adjust"), "{log}");
}
