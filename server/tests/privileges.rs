//! Least privilege (#13): stratumd started as root with `[server] user` serves as that user with
//! no capabilities in any of its threads once it is up (the xdp backend's case is in xdp.rs), and
//! stratumd started as a user with ambient capabilities (as systemd's `AmbientCapabilities=` or
//! `setpriv` start it) gives them up in every thread, on both backends, with no_new_privs set.

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
    // Every thread, the workers started before the drop included: no_new_privs, nothing ambient
    // or inheritable (once the drop is done: it follows the first answer closely).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = threads_held(server.pid());
    while !settled(&held, 0, None) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = threads_held(server.pid());
    }
    assert!(settled(&held, 0, None), "{held:#?}");
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

/// Every thread's status fields, as numbers: CapInh, CapPrm, CapEff, CapAmb, CapBnd, NoNewPrivs.
#[derive(Debug)]
struct Held {
    name: String,
    uid: String,
    inh: u64,
    prm: u64,
    eff: u64,
    amb: u64,
    bnd: u64,
    no_new_privs: bool,
}

fn threads_held(pid: i32) -> Vec<Held> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().trim().to_string();
        let mask = |key: &str| u64::from_str_radix(&field(key), 16).unwrap();
        out.push(Held {
            name,
            uid: field("Uid:"),
            inh: mask("CapInh:"),
            prm: mask("CapPrm:"),
            eff: mask("CapEff:"),
            amb: mask("CapAmb:"),
            bnd: mask("CapBnd:"),
            no_new_privs: field("NoNewPrivs:") == "1",
        });
    }
    out
}

/// Whether every thread holds exactly what it should: `sync` in the sync thread, nothing in the
/// others, nothing ambient or inheritable anywhere, no_new_privs everywhere, and, with `bounding`,
/// that bounding set.
fn settled(threads: &[Held], sync: u64, bounding: Option<u64>) -> bool {
    threads.iter().all(|t| {
        let want = if t.name == "stratumd-sync" { sync } else { 0 };
        t.uid.split_whitespace().all(|u| u == "65534")
            && (t.prm, t.eff, t.inh, t.amb) == (want, want, 0, 0)
            && t.no_new_privs
            && bounding.is_none_or(|b| t.bnd == b)
    })
}

/// stratumd run as uid/gid 65534 by `setpriv` with `caps` inheritable and ambient (the bounding
/// set left whole), in `ns` or here; a copy of the binary and the config that
/// user can read. Its log goes to a file read at [`AsUser::stop`].
struct AsUser {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl AsUser {
    fn start(ns: Option<&Netns>, caps: &[&str], config: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (bin, conf, log) = (dir.path().join("stratumd"), dir.path().join("stratumd.toml"), dir.path().join("log"));
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::write(&conf, config).unwrap();
        for (path, mode) in [(dir.path(), 0o755), (bin.as_path(), 0o755), (conf.as_path(), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
        let mut cmd = match ns {
            Some(ns) => ns.command("setpriv"),
            None => std::process::Command::new("setpriv"),
        };
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all{set}"))
            .arg(format!("--ambient-caps=-all{set}"));
        let child = cmd
            .arg(&bin)
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start setpriv stratumd");
        Self { child: Some(child), dir }
    }

    /// stratumd's pid: setpriv execs it, so the child's.
    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Every thread's sets once they hold what they should (at most 5 s after the start), or the
    /// last ones read; fails if stratumd has exited.
    fn wait_settled(&mut self, sync: u64, bounding: Option<u64>) -> Vec<Held> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("stratumd exited ({status}): {}", self.log());
            }
            let threads = threads_held(self.pid());
            if settled(&threads, sync, bounding) || Instant::now() > deadline {
                return threads;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, the log.
    fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.log()
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn check(threads: &[Held], sync: u64, bounding: Option<u64>, log: &str) {
    assert!(threads.len() >= 3, "main and workers at least: {threads:#?}");
    assert!(settled(threads, sync, bounding), "capabilities left (sync thread may keep {sync:x}): {threads:#?}\n{log}");
}

fn setpriv_available() -> bool {
    require(is_root(), "starting stratumd as another user with ambient capabilities needs root")
        && require(
            have_tool("setpriv") && have_tool("ip") && have_tool("ntpdig"),
            "setpriv, ip or ntpdig is missing (util-linux, iproute2, ntpsec-ntpdate)",
        )
}

/// Started as a user with ambient CAP_NET_BIND_SERVICE (the systemd unit's way) on port 123:
/// once up, no thread holds any capability, ambient and inheritable are empty, no_new_privs is set
/// everywhere, and it still answers ntpdig. Without CAP_SETPCAP the bounding set stays as it was.
#[test]
fn a_user_with_ambient_capabilities_gives_them_up_in_every_thread_socket_backend() {
    if !setpriv_available() {
        return;
    }
    let ns = Netns::new("pvs");
    let config = "[server]\nlisten = [\"127.0.0.1:123\"]\nworkers = 2\n\n[clock]\nsource = \"local\"\nstratum = 3\n\n\
                  [metrics]\nlisten = \"127.0.0.1:9123\"\n";
    let mut server = AsUser::start(Some(&ns), &["net_bind_service"], config);
    let threads = server.wait_settled(0, None);
    let log = server.log();
    check(&threads, 0, None, &log);
    assert!(threads.iter().any(|t| t.name == "stratumd-metric"), "{threads:#?}");
    let out = ntpdig(&ns, "127.0.0.1");
    assert!(out.status.success(), "ntpdig after the drop: {}", String::from_utf8_lossy(&out.stderr));
    let log = server.stop();
    assert!(log.contains("running as uid 65534 with no capabilities"), "{log}");
}

/// The xdp backend on a veth in a namespace, started as a user with the systemd drop-in's four
/// capabilities ambient: the same, and it still answers ntpdig from the other namespace.
#[cfg(feature = "xdp")]
#[test]
fn a_user_with_ambient_capabilities_gives_them_up_in_every_thread_xdp_backend() {
    if !setpriv_available() {
        return;
    }
    let srv = Netns::new("pvxs");
    let cli = Netns::new("pvxc");
    let net = (std::process::id() % 200) as u8 + 20;
    let (server_ip, client_ip) = (format!("10.91.{net}.1"), format!("10.91.{net}.2"));
    srv.link("xs", &format!("{server_ip}/24"), &cli, "xc", &format!("{client_ip}/24"));
    let config =
        "[server]\nbackend = \"xdp\"\ninterface = \"xs\"\nqueues = \"all\"\nport = 123\nxdp-mode = \"auto\"\n\n\
                  [clock]\nsource = \"local\"\nstratum = 2\n";
    let caps = ["bpf", "perfmon", "net_admin", "net_raw"];
    let mut server = AsUser::start(Some(&srv), &caps, config);
    let threads = server.wait_settled(0, None);
    let log = server.log();
    check(&threads, 0, None, &log);
    assert!(threads.iter().any(|t| t.name.starts_with("stratumd-x")), "an AF_XDP worker: {threads:#?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ntpdig(&cli, &server_ip);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ntpdig over AF_XDP after the drop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = server.stop();
    assert!(log.contains("running as uid 65534 with no capabilities"), "{log}");
}

/// `discipline = "system"` as a user with CAP_SYS_TIME (and CAP_SETPCAP) ambient: the sync thread
/// alone keeps CAP_SYS_TIME, and the bounding set of every thread is cut to it. Never adjusts the
/// clock: as in the root test above, the only upstream is a socket held here that never answers,
/// so there is no clock update, and nothing is written to the kernel before one.
#[test]
fn a_user_with_ambient_cap_sys_time_keeps_it_in_the_sync_thread_only() {
    if !setpriv_available() {
        return;
    }
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let upstream = silent.local_addr().unwrap();
    let port = free_port();
    let clock =
        format!("source = \"sync\"\ndiscipline = \"system\"\n\n[[upstream]]\naddress = \"{upstream}\"\niburst = true");
    let text = config(&[format!("127.0.0.1:{port}")], 2, &clock);
    let mut server = AsUser::start(None, &["sys_time", "setpcap"], &text);
    let mut buf = [0u8; 64];
    let (len, _) = silent.recv_from(&mut buf).expect("the sync thread polls the upstream");
    assert_eq!(len, 48);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(query(addr, 4, Duration::from_secs(1)).unwrap().0.stratum, 16);
    let sys_time = 1u64 << 25;
    let threads = server.wait_settled(sys_time, Some(sys_time));
    let log = server.stop();
    assert_eq!(threads.iter().filter(|t| t.name == "stratumd-sync").count(), 1, "{threads:#?}");
    check(&threads, sys_time, Some(sys_time), &log);
    assert!(log.contains("running as uid 65534 with CAP_SYS_TIME in the sync thread only"), "{log}");
    assert!(!log.contains("stepped the system clock") && !log.contains("cannot adjust"), "{log}");
}

/// With `discipline = "system"` and a `[[refclock]]`, the reference clock readers are started
/// from the main thread while it still holds CAP_SYS_TIME (for the sync thread started right
/// after): each reader gives it up at its start. Never adjusts the clock: a silent upstream and a
/// SOCK refclock nothing writes to, so there is no clock update.
#[test]
fn with_a_refclock_the_readers_give_up_cap_sys_time_too() {
    if !require(is_root(), "starting as root and dropping to a user needs root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let clock = format!(
        "source = \"sync\"\ndiscipline = \"system\"\n\n[[upstream]]\naddress = \"{upstream}\"\n\n\
         [[refclock]]\ndriver = \"sock\"\ndevice = \"{}\"\n",
        dir.path().join("rc.sock").display()
    );
    let text = config(&[format!("127.0.0.1:{port}")], 1, &clock).replace("[clock]", "user = \"nobody\"\n\n[clock]");
    let mut server = Server::start(&text, port);
    std::thread::sleep(Duration::from_millis(500));
    let threads = threads_capabilities(server.pid());
    let log = server.stop_output();
    assert!(threads.iter().any(|t| t.0 == "stratumd-rc0"), "the refclock reader: {threads:?}\n{log}");
    for (name, prm, eff) in &threads {
        let want = if name == "stratumd-sync" { 1u64 << 25 } else { 0 };
        assert_eq!((*prm, *eff), (want, want), "{name}: permitted {prm:x}, effective {eff:x} in {threads:?}");
    }
}
