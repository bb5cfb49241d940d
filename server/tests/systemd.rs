//! The systemd units (#17, item 4): deploy/stratumd.service with and without the xdp drop-in, and
//! deploy/anycast/stratumd-anycast-gate.service, pass `systemd-analyze verify` with no warning;
//! `systemd-analyze security --offline=true` rates stratumd.service at most 3.0, "OK" (2.5 for the
//! socket backend, 2.9 with the xdp drop-in's capabilities, systemd 252); and every system call
//! stratumd makes serving clients, /metrics and its control socket is in the unit's
//! SystemCallFilter (run under strace). The xdp drop-in's one addition, `bpf`, is from the same
//! check run by hand over tests/xdp.rs (the calls outside @system-service: bpf, clock_adjtime).
//! The unit is Type=notify with WatchdogSec=: stratumd run with NOTIFY_SOCKET on a socket the
//! test owns and WATCHDOG_USEC says READY=1, then WATCHDOG=1 from the sync thread (both of its
//! loops: `local` and `sync`) at half that interval, and STOPPING=1 on SIGTERM; with the sync
//! thread alone stopped (ptrace) the pings stop while the workers still answer. Without
//! systemd-analyze or strace these skip, in CI they fail.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// deploy/stratumd.service in `dir` with its paths pointing at the built binary and a real
/// config; with `xdp`, the drop-in beside it as stratumd.service.d/xdp.conf.
fn install(dir: &Path, xdp: bool) {
    let unit = std::fs::read_to_string(format!("{DEPLOY}/stratumd.service")).unwrap();
    assert!(unit.contains("/usr/local/bin/stratumd") && unit.contains("/etc/stratumd/stratumd.toml"));
    let unit = unit
        .replace("/usr/local/bin/stratumd", BIN)
        .replace("/etc/stratumd/stratumd.toml", &format!("{DEPLOY}/stratumd.toml"));
    std::fs::write(dir.join("stratumd.service"), unit).unwrap();
    if xdp {
        std::fs::create_dir_all(dir.join("stratumd.service.d")).unwrap();
        std::fs::copy(format!("{DEPLOY}/stratumd-xdp.conf"), dir.join("stratumd.service.d/xdp.conf")).unwrap();
    }
}

/// `systemd-analyze ARGS` with the unit search path `dir` first: (success, stdout, stderr).
fn analyze(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("run systemd-analyze");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn have_analyze() -> bool {
    require(have_tool("systemd-analyze"), "systemd-analyze is not installed (apt-get install systemd)")
}

#[test]
fn units_verify_without_a_warning() {
    if !have_analyze() {
        return;
    }
    for xdp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), xdp);
        let (ok, out, err) = analyze(dir.path(), &["verify", "stratumd.service"]);
        assert!(ok && err.trim().is_empty(), "verify (xdp drop-in: {xdp}): {out}{err}");
    }
    // The gate's unit binds to Debian's bird.service (installed with bird2).
    if require(have_tool("bird"), "BIRD 2 is not installed (apt-get install bird2)") {
        let gate = format!("{DEPLOY}/anycast/stratumd-anycast-gate.service");
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = analyze(dir.path(), &["verify", &gate]);
        assert!(ok && err.trim().is_empty(), "verify the gate's unit: {out}{err}");
    }
}

#[test]
fn security_exposure_is_at_most_3() {
    if !have_analyze() {
        return;
    }
    for xdp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), xdp);
        let (_, out, err) = analyze(dir.path(), &["security", "--offline=true", "stratumd.service"]);
        // "→ Overall exposure level for stratumd.service: 2.0 OK 🙂"
        let score: f64 = (out.clone() + &err)
            .lines()
            .find_map(|l| l.split("Overall exposure level for stratumd.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no score in: {out}{err}"));
        eprintln!("systemd-analyze security (xdp drop-in: {xdp}): {score}");
        assert!(score <= 3.0, "exposure {score} (xdp drop-in: {xdp}): {out}");
    }
}

/// Every system call in `@group` (recursively) or named, from `systemd-analyze syscall-filter`.
fn expand(items: &[String]) -> BTreeSet<String> {
    let out = Command::new("systemd-analyze").arg("syscall-filter").output().expect("run systemd-analyze");
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            current = Some(t.to_string());
            groups.entry(t.to_string()).or_default();
        } else if let Some(g) = &current {
            groups.get_mut(g).unwrap().push(t.to_string());
        }
    }
    let (mut todo, mut seen, mut calls) = (items.to_vec(), BTreeSet::new(), BTreeSet::new());
    while let Some(item) = todo.pop() {
        if item.starts_with('@') {
            if seen.insert(item.clone()) {
                todo.extend(groups.get(&item).unwrap_or_else(|| panic!("unknown group {item}")).iter().cloned());
            }
        } else {
            calls.insert(item);
        }
    }
    calls
}

/// The unit's SystemCallFilter= entries (allow-lists, which add up).
fn filter_of(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect()
}

#[test]
fn every_system_call_stratumd_makes_is_in_the_units_filter() {
    if !have_analyze() || !require(have_tool("strace"), "strace is not installed (apt-get install strace)") {
        return;
    }
    let unit = std::fs::read_to_string(format!("{DEPLOY}/stratumd.service")).unwrap();
    let filter = filter_of(&unit);
    assert!(!filter.is_empty() && filter.iter().all(|f| !f.starts_with('~')), "an allow-list: {filter:?}");
    let allowed = expand(&filter);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let control = dir.path().join("c.sock");
    let trace = dir.path().join("trace");
    let text = config(&[format!("127.0.0.1:{port}")], 2, "source = \"local\"\nstratum = 2")
        + &format!("\n[metrics]\nlisten = \"{metrics}\"\n\n[control]\nsocket = \"{}\"\n", control.display());
    // Under systemd's notification protocol too, as the unit runs it.
    let notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"]).arg(&trace).arg("--").arg(BIN);
    cmd.env("NOTIFY_SOCKET", dir.path().join("notify")).env("WATCHDOG_USEC", "2000000");
    let mut server = Server::start_with(cmd, &text, port, Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !control.exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        assert!(query(SocketAddr::from(([127, 0, 0, 1], port)), 4, Duration::from_secs(1)).is_some());
    }
    let mut s = TcpStream::connect(metrics).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    std::io::Read::read_to_end(&mut s, &mut Vec::new()).unwrap();
    for sub in ["status", "tracking", "health", "workers"] {
        let out = Command::new(CTL).arg("--socket").arg(&control).arg(sub).stdout(Stdio::null()).status().unwrap();
        assert!(out.success(), "stratumctl {sub}");
    }
    // SIGTERM to stratumd itself (strace's child), so that its shutdown path is traced too.
    let traced = std::fs::read_to_string(&trace).unwrap();
    let pid: libc::pid_t = traced.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: kill(2) on the stratumd our strace child started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let (status, log, _) = server.stop();
    drop(notify);
    let traced = std::fs::read_to_string(&trace).unwrap();
    let after_exec = traced.split_once(&format!("execve(\"{BIN}\"")).map_or(traced.as_str(), |(_, rest)| rest);
    let made: BTreeSet<String> = after_exec
        .lines()
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (call.contains('(') && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect();
    assert!(made.len() > 20 && (made.contains("recvmmsg") || made.contains("recvfrom")), "{made:?} ({status}: {log})");
    let outside: Vec<&String> = made.difference(&allowed).collect();
    assert!(outside.is_empty(), "system calls outside SystemCallFilter={filter:?}: {outside:?}");
}

/// Every notification stratumd sent on `socket` within `limit` (or until STOPPING=1), with when.
fn notifications(socket: &UnixDatagram, limit: Duration) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let stop = text.contains("STOPPING=1");
            got.push((Instant::now(), text));
            if stop {
                break;
            }
        }
    }
    got
}

/// READY=1 once, then WATCHDOG=1 about every second (WATCHDOG_USEC 2 s), then STOPPING=1.
fn notifies_ready_watchdog_and_stopping(clock: &str, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let text = config(&[format!("127.0.0.1:{port}")], 1, clock) + extra;
    let mut cmd = Command::new(BIN);
    cmd.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "2000000");
    let mut server = Server::start_with(cmd, &text, port, None);
    let got = notifications(&socket, Duration::from_secs(5));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let end = notifications(&socket, Duration::from_secs(3));
    let log = server.stop_output();
    let ready: Vec<&(Instant, String)> =
        got.iter().filter(|(_, m)| m.starts_with("READY=1\nSTATUS=serving ")).collect();
    assert_eq!(ready.len(), 1, "one READY=1 with a STATUS: {got:?} ({log})");
    let pings: Vec<Instant> =
        got.iter().filter(|(t, m)| m == "WATCHDOG=1" && *t >= ready[0].0).map(|(t, _)| *t).collect();
    assert!(pings.len() >= 3, "WATCHDOG=1 at least every 1.5 s after READY=1: {got:?}");
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        // Half of WATCHDOG_USEC apart, or one loop turn more: never late enough for systemd.
        assert!(gap >= Duration::from_millis(900) && gap < Duration::from_millis(1600), "pings {gap:?} apart");
    }
    assert!(end.iter().any(|(_, m)| m == "STOPPING=1"), "STOPPING=1 after SIGTERM: {end:?}");
    assert!(got.iter().chain(&end).all(|(_, m)| m.starts_with("READY=1") || m == "WATCHDOG=1" || m == "STOPPING=1"));
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping_from_the_local_loop() {
    notifies_ready_watchdog_and_stopping("source = \"local\"\nstratum = 3", "");
}

#[test]
fn notify_socket_gets_watchdog_from_the_upstream_sync_thread() {
    // Unsynchronised all along (an upstream that never answers): the loop still turns and pings.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = format!("\n[[upstream]]\naddress = \"{}\"\niburst = true\n", silent.local_addr().unwrap());
    notifies_ready_watchdog_and_stopping("source = \"sync\"", &upstream);
}

#[test]
fn without_notify_socket_nothing_is_sent_and_it_serves() {
    // Not under systemd: WATCHDOG_USEC alone is ignored (no socket to tell).
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_remove("NOTIFY_SOCKET").env("WATCHDOG_USEC", "2000000");
    let mut server = Server::start_with(
        cmd,
        &config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\""),
        port,
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
    );
    let log = server.stop_output();
    assert!(!log.contains("watchdog") && !log.contains("NOTIFY_SOCKET"), "{log}");
}

/// The thread id of stratumd's sync thread (named `stratumd-sync`).
fn sync_thread(pid: libc::pid_t) -> libc::pid_t {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| t.ok())
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "stratumd-sync"))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .expect("a thread named stratumd-sync")
}

/// A hung time plane, not a dead process, is what the watchdog is for: the sync thread alone is
/// stopped (ptrace interrupts that one thread); the workers go on answering, the pings stop, so
/// systemd would restart stratumd after WatchdogSec. Let go, the pings resume.
#[test]
fn a_stuck_sync_thread_stops_the_watchdog_while_workers_still_answer() {
    if !require(is_root(), "stopping one thread of stratumd with ptrace needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(BIN);
    cmd.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "2000000");
    let text = config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 3");
    let mut server = Server::start_with(cmd, &text, port, Some(addr));
    let before = notifications(&socket, Duration::from_secs(3));
    assert!(before.iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 2, "{before:?}");

    let tid = sync_thread(server.pid());
    // SAFETY: ptrace on a thread of our own child (we are root); stopped, then waited for.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0), 0, "{}", std::io::Error::last_os_error());
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
    }
    // A ping sent just before the stop may still be queued: drop what is there now.
    socket.set_nonblocking(true).unwrap();
    while socket.recv(&mut [0u8; 512]).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    let stuck = notifications(&socket, Duration::from_secs(3));
    let answered = (0..5).filter(|_| query(addr, 4, Duration::from_secs(1)).is_some()).count();
    // SAFETY: the thread is in a ptrace stop we caused; detaching lets it run on.
    unsafe { assert_eq!(libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0), 0) };
    let after = notifications(&socket, Duration::from_secs(3));
    let log = server.stop_output();
    assert!(stuck.iter().all(|(_, m)| m != "WATCHDOG=1"), "pings while the sync thread was stopped: {stuck:?}");
    assert_eq!(answered, 5, "the workers answer while the time plane is stuck");
    assert!(after.iter().any(|(_, m)| m == "WATCHDOG=1"), "pings again once it runs: {after:?} ({log})");
}
