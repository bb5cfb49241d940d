//! Shared test harness: start the built `stratumd`, talk NTP to it, run real peers, and make
//! network namespaces. Privileged or tool-dependent tests skip with one line outside CI and fail
//! when `CI` is set (CI runs as root with every tool installed by the test command).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratum_proto::{NtpPacket, NtpTimestamp};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratumd");
pub const CTL: &str = env!("CARGO_BIN_EXE_stratumctl");

/// Whether a prerequisite holds; outside CI a missing one skips the test with a reason, in CI it
/// fails it.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {what}; the test command installs and runs everything as root");
    }
    eprintln!("skipped: {what}");
    false
}

pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A port nobody listens on right now (bound and released).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    // Also free on ::1, since most tests listen on both.
    if UdpSocket::bind(("::1", port)).is_err() {
        return free_port();
    }
    port
}

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Server {
    /// Starts stratumd with `config` (a TOML text) and waits until 127.0.0.1:`port` answers,
    /// or, when `wait_addr` is None, only until the process has started.
    pub fn start(config: &str, port: u16) -> Self {
        Self::start_with(Command::new(BIN), config, port, Some(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    pub fn start_with(mut cmd: Command, config: &str, port: u16, wait_addr: Option<SocketAddr>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratumd.toml");
        std::fs::write(&path, config).unwrap();
        let child = cmd
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stratumd");
        let mut server = Self { child: Some(child), dir, port };
        if let Some(addr) = wait_addr {
            let deadline = Instant::now() + Duration::from_secs(10);
            while query(addr, 4, Duration::from_millis(200)).is_none() {
                if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("stratumd exited early ({status}): {}", server.stop_output());
                }
                assert!(Instant::now() < deadline, "stratumd did not answer on {addr}");
            }
        }
        server
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("running").id() as libc::pid_t
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("stratumd.toml")
    }

    /// SIGTERM, wait, and return what it logged.
    pub fn stop_output(&mut self) -> String {
        self.stop().1
    }

    pub fn stop(&mut self) -> (ExitStatus, String, Duration) {
        let mut child = self.child.take().expect("already stopped");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (status, log, took)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn now_ntp() -> NtpTimestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos())
}

/// Sends raw bytes from a fresh socket and returns the reply, if one comes within `wait`.
pub fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if addr.is_ipv4() { "127.0.0.1:0".parse().unwrap() } else { "[::1]:0".parse().unwrap() };
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(request, addr).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((len, from)) => {
            assert_eq!(from, addr, "reply from an unexpected address");
            Some(buf[..len].to_vec())
        }
        Err(_) => None,
    }
}

/// One client exchange: (reply, offset seconds, round-trip seconds).
pub fn query(addr: SocketAddr, version: u8, wait: Duration) -> Option<(NtpPacket, f64, f64)> {
    let t1 = now_ntp();
    let reply = exchange(addr, &NtpPacket::client_request(version, t1).to_bytes(), wait)?;
    let t4 = now_ntp();
    let p = NtpPacket::parse(&reply)?;
    assert_eq!(p.origin_timestamp, t1, "origin must echo our transmit timestamp");
    let (t2, t3) = (p.receive_timestamp, p.transmit_timestamp);
    let offset = (t2.since(t1).to_seconds_f64() + t3.since(t4).to_seconds_f64()) / 2.0;
    let delay = t4.since(t1).to_seconds_f64() - t3.since(t2).to_seconds_f64();
    Some((p, offset, delay))
}

pub fn config(listen: &[String], workers: usize, clock: &str) -> String {
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[server]\nlisten = [{}]\nworkers = {workers}\n\n[clock]\n{clock}\n", listen.join(", "))
}

/// `chronyd -Q` against a server: Ok(offset) when chronyd accepted the server, Err(log) if not.
pub fn chronyd_query(host: &str, port: u16, timeout_s: u32) -> Result<f64, String> {
    let out = Command::new("chronyd")
        .args(["-Q", "-t", &timeout_s.to_string(), &format!("server {host} port {port} iburst maxsamples 1")])
        .output()
        .expect("run chronyd");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(log);
    }
    chronyd_offset(&log)
}

/// The offset in `chronyd -Q`'s log ("System clock wrong by -0.000006 seconds (ignored)"): the
/// server was accepted; Err(log) when there is no such line (it was refused).
pub fn chronyd_offset(log: &str) -> Result<f64, String> {
    log.lines()
        .find_map(|l| l.split("System clock wrong by ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| log.to_string())
}

/// `chronyd -Q` from inside `ns` against `host` port 123: the offset, or why it refused.
pub fn chronyd_client(ns: &Netns, host: &str, timeout_s: u32) -> Result<f64, String> {
    let out = ns
        .command("chronyd")
        .args(["-Q", "-t", &timeout_s.to_string(), &format!("server {host} iburst maxsamples 1")])
        .output()
        .expect("run chronyd -Q");
    chronyd_offset(&String::from_utf8_lossy(&out.stderr))
}

/// A child process killed and reaped on drop (or at `stop`).
pub struct Running(pub Option<Child>);

impl Running {
    pub fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `stratumctl --socket CONTROL ARGS --json`: its answer, None when it failed.
pub fn ctl_json(control: &std::path::Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(CTL).arg("--socket").arg(control).args(args).arg("--json").output().ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// Asks `command` every 100 ms until its answer satisfies `ok` (returns it) or `limit` passes
/// (panics, with the last answer).
pub fn wait_for(
    limit: Duration,
    what: &str,
    control: &std::path::Path,
    command: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let answer = ctl_json(control, &[command]);
        if let Some(v) = answer.as_ref().filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}; last `{command}`: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stratumd --check-config` on `text`: (ok, stdout, stderr, the file's path).
pub fn check_config(text: &str) -> (bool, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stratumd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).arg("--check-config").arg(&path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into());
    (out.status.success(), stdout, stderr, path.display().to_string())
}

/// Asserts `text` is refused with one line starting `FILE:LINE: KEY: ` and containing `detail`.
pub fn assert_refused(text: &str, line: usize, key: &str, detail: &str) {
    let (ok, _, err, path) = check_config(text);
    assert!(!ok, "accepted:\n{text}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with(&format!("{path}:{line}: {key}: ")), "wanted line {line} and {key}: {err}");
    assert!(err.contains(detail), "wanted `{detail}` in: {err}");
}

/// A long-running chronyd: `conf` written to `dir/chrony.conf`, run in `ns` (None: here) as
/// `chronyd -d -x ARGS -f DIR/chrony.conf`: in the foreground, never touching this machine's clock
/// (-x is always there), `args` e.g. `["-u", "root"]` (keep root, for a command socket in a private
/// directory). What it logs goes to `dir/chronyd.log`; stdout is dropped. Killed and reaped on drop.
pub fn spawn_chronyd(ns: Option<&Netns>, dir: &Path, conf: &str, args: &[&str]) -> Running {
    let path = dir.join("chrony.conf");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(dir.join("chronyd.log")).unwrap();
    let mut cmd = ns.map_or_else(|| Command::new("chronyd"), |ns| ns.command("chronyd"));
    let child = cmd
        .args(["-d", "-x"])
        .args(args)
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start chronyd");
    Running(Some(child))
}

/// chronyd in `ns` serving its host clock at stratum 1 on `bind` to anyone, never touching the
/// clock (-x), its config, pid, drift and log files in `dir`: an upstream for a stratumd under test.
pub fn chronyd_local_server(ns: &Netns, dir: &Path, bind: &str) -> Running {
    let d = dir.display();
    let conf = format!(
        "local stratum 1\nallow all\ncmdport 0\npidfile {d}/chronyd.pid\ndriftfile {d}/chrony.drift\n\
         bindaddress {bind}\n"
    );
    spawn_chronyd(Some(ns), dir, &conf, &[])
}

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("stratum-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Self { name }
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// A veth pair made straight into two namespaces (`dev` here, `peer_dev` in `peer`), each
    /// end given its address (`10.0.0.1/24`) and brought up. Goes with the namespaces.
    pub fn link(&self, dev: &str, addr: &str, peer: &Netns, peer_dev: &str, peer_addr: &str) {
        let pair =
            ["link", "add", dev, "netns", &self.name, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name];
        run_ok(Command::new("ip").args(pair));
        for (ns, dev, addr) in [(self, dev, addr), (peer, peer_dev, peer_addr)] {
            run_ok(Command::new("ip").args(["-n", &ns.name, "addr", "add", addr, "dev", dev]));
            run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Everything ntpdig needs: root (a namespace, since it only speaks to port 123) and the tool.
pub fn ntpdig_available() -> bool {
    require(is_root(), "ntpdig only queries port 123, which needs root and a network namespace")
        && require(
            have_tool("ntpdig") && have_tool("ip"),
            "ntpdig or ip is not installed (apt-get install ntpsec-ntpdate iproute2)",
        )
}

/// Waits until a server inside `ns` answers on 127.0.0.1:123 (probing with ntpdig itself).
pub fn ntpdig(ns: &Netns, host: &str) -> Output {
    ns.command("ntpdig").args(["-j", "-t", "2", host]).output().expect("run ntpdig")
}

/// `GET /metrics` from inside `ns` (a thread that joins the namespace), HTTP/1.0: the body.
pub fn scrape_in(ns: &Netns, addr: SocketAddr) -> Option<String> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(path).ok()?;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    })
    .join()
    .ok()?
}

/// A test CA and a certificate for `ip` (and DNS name localhost) signed by it (openssl), in `dir`:
/// (ca, cert, key), for the NTS-KE tests.
pub fn make_certificates(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=stratumd test CA"],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(p("san.ext"), format!("subjectAltName=IP:{ip},DNS:localhost\n")).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// Checks a `stratum-bench load --nts-ke` JSON report: at least `min_sent` requests sent, at least
/// 95 % (and at least one) of them answered authentically, no NTS-invalid, KoD or invalid reply;
/// returns the count of authentic replies.
pub fn assert_authentic_nts_load(report: &serde_json::Value, min_sent: u64) -> u64 {
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("no {k} in {report}"));
    assert!(n("sent") >= min_sent, "{report}");
    assert!(n("valid") > 0 && n("valid") * 100 >= n("sent") * 95, "at least 95 % authentic replies: {report}");
    assert_eq!((n("invalid_nts"), n("kod"), n("invalid")), (0, 0, 0), "{report}");
    n("valid")
}

/// `stratumd_auth_replies_total{kind}` summed over the workers, from a /metrics body (the family
/// must be there).
pub fn auth_replies_in(metrics: &str, kind: &str) -> u64 {
    let label = format!(",kind=\"{kind}\"}} ");
    let n: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("stratumd_auth_replies_total{"))
        .filter_map(|l| l.split_once(&label).and_then(|(_, v)| v.parse().ok()))
        .collect();
    assert!(!n.is_empty(), "no stratumd_auth_replies_total kind {kind} in:\n{metrics}");
    n.iter().sum()
}

/// [`auth_replies_in`] the /metrics on 127.0.0.1:`metrics_port`.
pub fn auth_replies(metrics_port: u16, kind: &str) -> u64 {
    auth_replies_in(&scrape(SocketAddr::from(([127, 0, 0, 1], metrics_port))), kind)
}

/// `GET /metrics` over HTTP/1.0 from `addr` (this namespace): the body of a 200 answer.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}
