//! `[[refclock]]` end to end (issue 18): stratumd fed by the refclock crate's own gpsd-like SHM
//! writer and SOCK sender, carrying the host clock's time, serves stratum 1 with the refclock's
//! refid; a real chronyd reads the same SHM segment (`refclock SHM`) and the same SOCK stream
//! (`refclock SOCK`) and reports the same, and a real chronyd client in a network namespace
//! accepts stratumd as a stratum-1 server. An NMEA talker on a pty numbers SOCK pulse samples
//! (the appliance's PPS), also fed to a chronyd; fix loss with and without an upstream.
//! chronyd never touches the clock (`-x`, `-Q`). The SOCK, NMEA and fix-loss tests need nothing;
//! the chronyd ones need root (namespaces, port 123, SysV shm units of their own, chronyd's
//! command socket) and chronyd: they skip outside CI without them, fail in CI.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use stratum_refclock::shm::{self, ShmSegment};
use stratum_refclock::sock::{SockSample, SockSender};

fn now_unix() -> (i64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// A thread doing something every `period` until dropped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn every(period: Duration, mut each: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                each();
                std::thread::sleep(period);
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The SHM segment of a unit this test owns, removed on drop.
struct Unit(u32);

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = shm::remove(self.0);
    }
}

/// The body of a stratumd config: [clock] source = "sync", the refclock table, a control socket.
fn refclock_config(listen: &str, refclock: &str, control: &Path) -> String {
    format!(
        "[server]\nlisten = [\"{listen}\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n[[refclock]]\n{refclock}\n\n\
         [control]\nsocket = \"{}\"\n",
        control.display()
    )
}

/// stratumd on a free loopback port with `refclock` (its table's body) as its refclock and its
/// control socket in `dir` (`refclock_config`), the config text through `edit` first: the server,
/// its port and the control socket.
fn start_on_loopback(dir: &Path, refclock: &str, edit: impl FnOnce(String) -> String) -> (Server, u16, PathBuf) {
    let control = dir.join("control.sock");
    let port = free_port();
    let text = edit(refclock_config(&format!("127.0.0.1:{port}"), refclock, &control));
    (Server::start(&text, port), port, control)
}

/// The one refclock row of a `sources` answer, once it is selected.
fn selected_refclock(sources: &Value) -> Option<Value> {
    let list = sources["sources"].as_array()?;
    list.iter().find(|s| s["state"] == "selected" && s["refclock"] == true).cloned()
}

/// The selected refclock's row of `sources`, waiting up to 5 s for it.
fn wait_selected_refclock(control: &Path) -> Value {
    let sources = wait_for(Duration::from_secs(5), "the refclock selected", control, "sources", |s| {
        selected_refclock(s).is_some()
    });
    selected_refclock(&sources).unwrap()
}

/// A directory only root can enter (chronyd's command socket refuses a world-accessible one).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir
}

/// chronyd with `refclock` as its only source, never touching the clock (-x), no NTP port, its
/// command socket in `dir`.
fn chronyd_refclock(dir: &Path, refclock: &str) -> (Running, PathBuf) {
    let d = dir.display();
    let socket = dir.join("chronyd.sock");
    let conf = format!(
        "{refclock}\nport 0\ncmdport 0\nbindcmdaddress {}\npidfile {d}/chronyd.pid\ndriftfile {d}/chrony.drift\n",
        socket.display()
    );
    (spawn_chronyd(None, dir, &conf, &["-u", "root"]), socket)
}

/// chronyc's CSV source line for `refid` once chronyd has selected it (`*`): its fields.
fn chronyc_selected(socket: &Path, refid: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        let out = Command::new("chronyc").arg("-h").arg(socket).args(["-n", "-c", "sources"]).output();
        if let Ok(out) = out {
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let line = last
                .lines()
                .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
                .find(|f| f.len() >= 10 && f[0] == "#" && f[1] == "*" && f[2] == refid);
            if let Some(fields) = line {
                return fields;
            }
        }
        assert!(Instant::now() < deadline, "chronyd did not select {refid} within {limit:?}: {last}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SOCK: a sender carrying the host clock's time (offset 0) makes stratumd serve stratum 1,
/// refid GPS, and `stratumctl sources` shows the refclock as `sock:PATH`, address "-".
#[test]
fn a_sock_sender_makes_stratumd_stratum_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gps.sock");
    let refclock = format!("driver = \"sock\"\ndevice = \"{}\"\npoll = 0", path.display());
    let (mut server, port, control) = start_on_loopback(dir.path(), &refclock, |text| text);
    let sender = SockSender::new().unwrap();
    let target = path.clone();
    let _feed = Feeder::every(Duration::from_millis(100), move || {
        let (sec, nsec) = now_unix();
        let sample = SockSample { tv_sec: sec, tv_usec: i64::from(nsec / 1000), offset: 0.0, pulse: 0, leap: 0 };
        // Until stratumd has made its socket, sends fail: the next one is tried.
        let _ = sender.send(&target, &sample);
    });
    let tracking = wait_for(Duration::from_secs(20), "synchronised to the SOCK refclock", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1
    });
    assert_eq!(tracking["refid"], "GPS", "{tracking}");
    assert_eq!(tracking["system_peer"], format!("sock:{}", path.display()), "{tracking}");
    let row = wait_selected_refclock(&control);
    assert_eq!((row["address"].as_str(), row["refid"].as_str()), (Some("-"), Some("GPS")), "{row}");
    assert_eq!(row["name"], format!("sock:{}", path.display()), "{row}");
    let offset = row["last_offset_seconds"].as_f64().unwrap();
    assert!(offset.abs() < 1e-3, "the host clock's own time: offset {offset}");

    // Served on the wire: stratum 1, refid GPS.
    let (reply, _, _) =
        query(SocketAddr::from(([127, 0, 0, 1], port)), 4, Duration::from_secs(1)).expect("stratumd answers");
    assert_eq!(reply.stratum, 1, "{reply:?}");
    assert_eq!(reply.ref_id.0, *b"GPS\0", "{reply:?}");

    // The table shows it too.
    let out = Command::new(CTL).arg("--socket").arg(&control).arg("sources").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("sock:{}", path.display())) && table.contains("GPS"), "{table}");
    eprintln!("{table}");
    server.stop();
}

/// SOCK (issue 18): one stream of time-of-day samples (10 Hz, the host clock's time with 100 ns
/// of jitter) sent to a real chronyd's `refclock SOCK` socket and to stratumd's: both report the
/// same offset within 1 µs. Root and chronyd (its command socket in a 0700 directory).
#[test]
fn one_sock_sample_stream_gives_stratumd_and_chronyd_the_same_offset() {
    let ok = require(is_root(), "refclock SOCK vs chronyd: chronyd's command socket needs root")
        && require(have_tool("chronyd") && have_tool("chronyc"), "chronyd is not installed (apt-get install chrony)");
    if !ok {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gps.sock");
    let refclock = format!("driver = \"sock\"\ndevice = \"{}\"\npoll = 2", path.display());
    let (mut server, _, control) = start_on_loopback(dir.path(), &refclock, |text| text);
    let private = private_dir();
    let chrony_path = private.path().join("gps.sock");
    let (_chronyd, socket) =
        chronyd_refclock(private.path(), &format!("refclock SOCK {} refid GPS poll 2", chrony_path.display()));
    let sender = SockSender::new().unwrap();
    let paths = [path.clone(), chrony_path];
    let mut rng = Jitter(0x5851_f42d_4c95_7f2d);
    let _feed = Feeder::every(Duration::from_millis(100), move || {
        let (sec, nsec) = now_unix();
        let sample =
            SockSample { tv_sec: sec, tv_usec: i64::from(nsec / 1000), offset: rng.normal(100e-9), pulse: 0, leap: 0 };
        for p in &paths {
            let _ = sender.send(p, &sample);
        }
    });
    wait_for(Duration::from_secs(20), "synchronised to the SOCK refclock", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1
    });
    let fields = chronyc_selected(&socket, "GPS", Duration::from_secs(30));
    // A few estimates more on both sides.
    std::thread::sleep(Duration::from_secs(8));
    let fields = chronyc_selected(&socket, "GPS", Duration::from_secs(5)).into_iter().chain(fields).collect::<Vec<_>>();
    let chrony_offset: f64 = fields[8].parse().unwrap();
    let sources = ctl_json(&control, &["sources"]).unwrap();
    let row = selected_refclock(&sources).expect("the SOCK refclock selected");
    let stratumd_offset = row["last_offset_seconds"].as_f64().unwrap();
    eprintln!(
        "SOCK time samples: stratumd offset {:+.3} us, chronyd {:+.3} us ({})",
        stratumd_offset * 1e6,
        chrony_offset * 1e6,
        fields[..10].join(",")
    );
    assert!((stratumd_offset - chrony_offset).abs() < 1e-6, "{stratumd_offset} {chrony_offset}");
    server.stop();
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("namespace file");
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// gpsd's SHM, as the refclock crate's writer fills it with the host clock's time (mode 1,
/// 10 Hz): stratumd in a namespace serves stratum 1 refid GPS; a real chronyd reading the same
/// segment selects it with the same (near zero) offset; a real chronyd client in a second
/// namespace accepts stratumd.
#[test]
fn a_gpsd_shm_segment_feeds_stratumd_and_chronyd_and_a_chronyd_client_accepts_stratumd() {
    let ok = require(is_root() && have_tool("ip"), "refclock SHM: needs root and ip (namespaces, port 123)")
        && require(have_tool("chronyd") && have_tool("chronyc"), "chronyd is not installed (apt-get install chrony)");
    if !ok {
        return;
    }
    // A unit of this test's own (the refclock crate's unit test uses 0x5000..0x6000).
    let unit = Unit(0x6000 + std::process::id() % 0x1000);
    let writer = ShmSegment::attach(unit.0, true, 0o600).unwrap();
    let _feed = Feeder::every(Duration::from_millis(100), move || {
        let now = now_unix();
        writer.write(now, now, 0, -20);
    });

    let server_ns = Netns::new("rcs");
    let client_ns = Netns::new("rcc");
    server_ns.link("rcv1", "10.92.1.1/24", &client_ns, "rcv2", "10.92.1.2/24");
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let text =
        refclock_config("0.0.0.0:123", &format!("driver = \"shm\"\ndevice = \"{}\"\npoll = 0", unit.0), &control);
    let mut server = Server::start_with(server_ns.command(BIN), &text, 123, None);
    let tracking = wait_for(Duration::from_secs(20), "synchronised to SHM", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1
    });
    assert_eq!(tracking["refid"], "GPS", "{tracking}");
    assert_eq!(tracking["system_peer"], format!("shm:{}", unit.0), "{tracking}");
    let row = wait_selected_refclock(&control);
    assert_eq!((row["address"].as_str(), row["refid"].as_str()), (Some("-"), Some("GPS")), "{row}");
    let stratumd_offset = row["last_offset_seconds"].as_f64().unwrap();

    // The wire, from the client's namespace: stratum 1, refid GPS.
    let reply = in_netns(&client_ns, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let request = stratum_proto::NtpPacket::client_request(4, now_ntp()).to_bytes();
        socket.send_to(&request, "10.92.1.1:123").unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("stratumd answers");
        stratum_proto::NtpPacket::parse(&buf[..n]).expect("an NTP reply")
    });
    assert_eq!((reply.stratum, reply.ref_id.0), (1, *b"GPS\0"), "{reply:?}");

    // A real chronyd reading the same segment. Each reader clears `valid` (as chrony's SHM
    // driver does), so two readers share the writer's samples: chronyd reads every 125 ms
    // (dpoll -3) against stratumd's 250 ms, so half its reads fall at least 125 ms after
    // stratumd's, past a fresh 10 Hz write, whatever the two timers' phase (at dpoll -2 the
    // same period as stratumd's, a phase with chronyd just behind starved it for 30 s once).
    let private = private_dir();
    let (_chronyd, socket) =
        chronyd_refclock(private.path(), &format!("refclock SHM {} refid GPS poll 0 dpoll -3", unit.0));
    let fields = chronyc_selected(&socket, "GPS", Duration::from_secs(30));
    let chrony_offset: f64 = fields[8].parse().unwrap();
    eprintln!(
        "SHM unit {}: stratumd offset {:+.3} us, chronyd offset {:+.3} us ({})",
        unit.0,
        stratumd_offset * 1e6,
        chrony_offset * 1e6,
        fields.join(",")
    );
    assert!(stratumd_offset.abs() < 1e-4 && chrony_offset.abs() < 1e-4, "{stratumd_offset} {chrony_offset}");

    // A real chronyd client accepts stratumd (stratum 1).
    let out = client_ns
        .command("chronyd")
        .args(["-Q", "-t", "4", "server 10.92.1.1 iburst maxsamples 1"])
        .output()
        .expect("run chronyd -Q");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let offset = log
        .lines()
        .find_map(|l| l.split("System clock wrong by ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(offset.is_some_and(|o| o.abs() < 0.01), "the chronyd client refused stratumd: {log}");
    eprintln!("chronyd client: offset {offset:?} s");
    server.stop();
}

fn hms(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}{:02}{:02}.00", s / 3600, s / 60 % 60, s % 60)
}

/// Day, month, year of `unix`.
fn ddmmyy(unix: i64) -> (i64, i64, i64) {
    let (y, m, d) = stratum_proto::sync::calendar::civil_from_days(unix.div_euclid(86_400));
    (i64::from(d), i64::from(m), y)
}

/// A pty pair: the master's writer, the slave (kept open while the test runs) and its path.
fn pty() -> (std::fs::File, std::fs::File, PathBuf) {
    let (mut master_fd, mut slave_fd) = (-1, -1);
    // SAFETY: openpty fills the two fds (no name buffer, termios or window size passed).
    let rc = unsafe {
        libc::openpty(&mut master_fd, &mut slave_fd, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: fresh fds from openpty, owned from here on.
    let (master_file, slave_file) = unsafe {
        use std::os::fd::FromRawFd;
        (std::fs::File::from_raw_fd(master_fd), std::fs::File::from_raw_fd(slave_fd))
    };
    let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave_file.as_raw_fd())).unwrap();
    (master_file, slave_file, slave_path)
}

/// An NMEA talker on `master`: GGA (fix, 8 satellites) and RMC for each second of the host
/// clock, 50 ms after it; while `fix` is false, RMC status V and GGA fix 0, no satellites.
fn nmea_talker(master: std::fs::File, fix: Arc<AtomicBool>) -> Feeder {
    use stratum_refclock::nmea::sentence;
    let mut master = master;
    let mut last = 0i64;
    Feeder::every(Duration::from_millis(2), move || {
        let (sec, nsec) = now_unix();
        if sec == last || nsec < 50_000_000 {
            return;
        }
        last = sec;
        let good = fix.load(Ordering::Relaxed);
        let (d, m, y) = ddmmyy(sec);
        let (quality, sats, status) = if good { (1, 8, 'A') } else { (0, 0, 'V') };
        let gga =
            sentence(&format!("GPGGA,{},4807.038,N,01131.000,E,{quality},{sats:02},0.9,545.4,M,46.9,M,,", hms(sec)));
        let rmc = sentence(&format!(
            "GPRMC,{},{status},4807.038,N,01131.000,E,0.0,0.0,{d:02}{m:02}{:02},,,A",
            hms(sec),
            y % 100
        ));
        let _ = std::io::Write::write_all(&mut master, format!("{gga}\r\n{rmc}\r\n").as_bytes());
    })
}

/// NMEA alone over a pty (issue 18's judged case): a talker writes GGA (fix, 8 satellites) and
/// RMC for each second of the host clock (truth here), 300 ms after it with 5 ms jitter;
/// stratumd's nmea driver (`offset = 0.3`, the calibration; the default poll 4, 16 samples an
/// estimate)
/// on the pty's other end makes it serve stratum 1 refid GPS, the served clock within 2 ms of the
/// host's (a client on loopback, every 2 s for 30 s) once the mean (the calibration's part: the
/// pty's own delay) is removed, within 5 ms with it; one estimate's offset within 10 ms.
#[test]
fn an_nmea_talker_on_a_pty_makes_stratumd_stratum_1() {
    let (master_file, slave_file, slave_path) = pty();
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let refclock =
        format!("driver = \"nmea\"\ndevice = \"{}\"\nbaud = 9600\noffset = 0.3\npoll = 4", slave_path.display());
    let (mut server, port, control) =
        start_on_loopback(dir.path(), &refclock, |text| text + &format!("\n[metrics]\nlisten = \"{metrics}\"\n"));
    let _talker = nmea_talker_late(master_file, 0.3, 5e-3, |_, _| {});
    let tracking = wait_for(Duration::from_secs(20), "synchronised to NMEA", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1
    });
    assert_eq!(tracking["refid"], "GPS", "{tracking}");
    let row = wait_selected_refclock(&control);
    assert_eq!(row["name"], format!("nmea:{}", slave_path.display()), "{row}");
    // Past the first estimate (4 samples), into the poll-4 ones (16 samples each); then served
    // against host every 2 s for 30 s, each the reply of the shortest round trip of 5.
    std::thread::sleep(Duration::from_secs(16));
    let mut errors = Vec::new();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(2));
        let best = (0..5)
            .filter_map(|_| query(SocketAddr::from(([127, 0, 0, 1], port)), 4, Duration::from_secs(1)))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .expect("stratumd answers");
        errors.push(best.1);
    }
    let sources = ctl_json(&control, &["sources"]).unwrap();
    let row = selected_refclock(&sources).expect("still selected");
    let offset = row["last_offset_seconds"].as_f64().unwrap();
    let jitter = row["jitter_seconds"].as_f64().unwrap_or(f64::NAN);
    // The mean is the bias an operator's calibration removes: the pty's own delivery delay (1-2
    // ms on a loaded host) on top of the talker's 300 ms; what is left must be within 2 ms.
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    let max = errors.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    let calibrated = errors.iter().fold(0.0f64, |m, e| m.max((e - mean).abs()));
    eprintln!(
        "NMEA alone (300 ms late, 5 ms jitter, offset 0.3, poll 4): served - host over 30 s: mean {:+.3} ms, max \
         {:.3} ms, max after calibration (mean removed) {:.3} ms; last estimate {:+.3} ms, jitter {:.3} ms",
        mean * 1e3,
        max * 1e3,
        calibrated * 1e3,
        offset * 1e3,
        jitter * 1e3
    );
    assert!(calibrated < 2e-3, "served clock up to {calibrated} s off the host's, calibrated: {errors:?}");
    assert!(mean.abs() < 5e-3, "uncalibrated bias {mean} s: {errors:?}");
    assert!(offset.abs() < 10e-3, "offset {offset}");
    // The driver's state in `sources --json`: the fix and satellites the talker reports.
    assert_eq!(row["driver"], "nmea", "{row}");
    assert_eq!(row["fix"], true, "{row}");
    assert_eq!(row["satellites"], 8, "{row}");
    assert_eq!(row["stale"], false, "{row}");
    assert!(row["pps_locked"].is_null() && row["samples"].as_u64() > Some(0), "{row}");
    assert_eq!(row["samples_dropped"], 0, "{row}");

    // /metrics: the refclock's series, and every stratumd_refclock_ name the dashboard and the
    // alert rules use (the PPS ones from a pps refclock are checked by the unit test's exposition).
    let scraped = scrape(metrics);
    let label = format!("{{refclock=\"nmea:{}\",source=\"127.127.20.0:0\"}}", slave_path.display());
    for line in [format!("stratumd_refclock_fix{label} 1"), format!("stratumd_refclock_satellites{label} 8")] {
        assert!(scraped.lines().any(|l| l == line), "no `{line}` in:\n{scraped}");
    }
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let referenced = std::fs::read_to_string(format!("{deploy}/grafana-dashboard.json")).unwrap()
        + &std::fs::read_to_string(format!("{deploy}/alerts.yml")).unwrap();
    let mut names: Vec<&str> = referenced
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("stratumd_refclock_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");
    // A pps refclock's names need a /dev/pps this test cannot have: those must be in the metric
    // catalogue (whose unit test renders a pps row).
    let pps_only = ["stratumd_refclock_pps_locked", "stratumd_refclock_pulses_total"];
    let catalogue = include_str!("../src/mgmt/metrics.rs");
    for name in names {
        let exported = scraped.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])));
        let described = catalogue.contains(&format!("family(\"{name}\""));
        assert!(
            exported || (pps_only.contains(&name) && described),
            "{name} is referenced but not exported:\n{scraped}"
        );
    }
    drop(slave_file);
    server.stop();
}

/// Fix loss (issue 18): the talker switches to RMC status V / GGA no fix; within 3 s the NMEA
/// refclock (at the default poll 4, a 16 s filter interval) is out of the selection, stratumd
/// has no system peer, and with no upstream it serves LI=3 once `max-holdover` (2 s) has run out.
#[test]
fn an_nmea_fix_loss_takes_the_refclock_out_within_3_s_then_holdover_then_unsynchronised() {
    let (master_file, slave_file, slave_path) = pty();
    let dir = tempfile::tempdir().unwrap();
    let refclock = format!("driver = \"nmea\"\ndevice = \"{}\"\nbaud = 9600\noffset = 0.05", slave_path.display());
    let (mut server, _, control) = start_on_loopback(dir.path(), &refclock, |text| {
        text.replace("source = \"sync\"\n", "source = \"sync\"\nmax-holdover = \"2s\"\n")
    });
    let fix = Arc::new(AtomicBool::new(true));
    let _talker = nmea_talker(master_file, fix.clone());
    wait_for(Duration::from_secs(20), "synchronised to NMEA", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1 && t["refid"] == "GPS"
    });
    wait_selected_refclock(&control);

    fix.store(false, Ordering::Relaxed);
    let lost = Instant::now();
    let sources = wait_for(Duration::from_secs(3), "the refclock out of the selection", &control, "sources", |s| {
        s["sources"].as_array().is_some_and(|l| l.iter().any(|r| r["refclock"] == true && r["state"] != "selected"))
    });
    eprintln!("NMEA fix loss: out of the selection after {:?}", lost.elapsed());
    let row = sources["sources"].as_array().unwrap().iter().find(|r| r["refclock"] == true).unwrap().clone();
    assert_eq!(row["stale"], true, "{row}");
    assert_eq!(row["fix"], false, "{row}");
    let tracking = ctl_json(&control, &["tracking"]).unwrap();
    assert!(tracking["system_peer"].is_null(), "no system peer: {tracking}");
    assert!(lost.elapsed() < Duration::from_secs(3), "{:?}", lost.elapsed());
    let status = wait_for(Duration::from_secs(10), "LI=3 after max-holdover", &control, "status", |s| {
        s["synchronized"] == false
    });
    assert_eq!(status["leap"], 3, "{status}");
    assert_eq!(status["stratum"], 16, "{status}");
    drop(slave_file);
    server.stop();
}

/// Fix loss with upstream servers configured (issue 18): the NMEA refclock (stratum 0) is the
/// system peer while the receiver has a fix; when the talker switches to RMC status V the
/// refclock is out within 3 s and the system peer is the upstream (a stratumd serving its local
/// clock at stratum 1 on loopback): still synchronised, now stratum 2. One upstream: its
/// microsecond interval and the NMEA refclock's 50 ms one agree without either holding the
/// other's offset, which RFC 5905's midpoint count took for no majority. No root needed.
#[test]
fn an_nmea_fix_loss_hands_the_system_peer_to_an_upstream_within_3_s() {
    let upstream = |_| {
        let port = free_port();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n\n[clock]\nsource = \"local\"\nstratum = 1\n"
        );
        (Server::start(&text, port), format!("127.0.0.1:{port}"))
    };
    let mut upstreams: Vec<(Server, String)> = (0..1).map(upstream).collect();
    let (master_file, slave_file, slave_path) = pty();
    let dir = tempfile::tempdir().unwrap();
    let refclock = format!("driver = \"nmea\"\ndevice = \"{}\"\noffset = 0.05\ndelay = 0.1", slave_path.display());
    let (mut server, _, control) = start_on_loopback(dir.path(), &refclock, |mut text| {
        for (_, address) in &upstreams {
            text += &format!("\n[[upstream]]\naddress = \"{address}\"\niburst = true\nminpoll = -2\nmaxpoll = 0\n");
        }
        text
    });
    let fix = Arc::new(AtomicBool::new(true));
    let _talker = nmea_talker(master_file, fix.clone());
    let nmea = format!("nmea:{}", slave_path.display());
    wait_for(Duration::from_secs(30), "the NMEA refclock the system peer", &control, "tracking", |t| {
        t["system_peer"] == nmea.as_str() && t["stratum"] == 1 && t["refid"] == "GPS"
    });

    fix.store(false, Ordering::Relaxed);
    let lost = Instant::now();
    let tracking = wait_for(Duration::from_secs(3), "an upstream the system peer", &control, "tracking", |t| {
        // Served as stratum 2 from the upstream's next sample (polled every second here).
        t["system_peer"] == "127.0.0.1" && t["stratum"] == 2
    });
    eprintln!("NMEA fix loss with an upstream: system peer moved after {:?}: {tracking}", lost.elapsed());
    assert!(lost.elapsed() < Duration::from_secs(3), "{:?}", lost.elapsed());
    assert_eq!((tracking["synchronized"].as_bool(), tracking["stratum"].as_u64()), (Some(true), Some(2)), "{tracking}");
    let row = refclock_row(&ctl_json(&control, &["sources"]).unwrap(), &nmea).unwrap();
    assert_eq!((row["stale"].as_bool(), row["fix"].as_bool()), (Some(true), Some(false)), "{row}");
    drop(slave_file);
    server.stop();
    for (u, _) in &mut upstreams {
        u.stop();
    }
}

/// A small deterministic generator for the feeds' jitter (xorshift64, about normal by the sum
/// of four uniforms).
struct Jitter(u64);

impl Jitter {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard deviation `sigma`.
    fn normal(&mut self, sigma: f64) -> f64 {
        let sum: f64 = (0..4).map(|_| self.uniform()).sum();
        (sum - 2.0) * 3f64.sqrt() * sigma
    }
}

/// Sleeps until host Unix time `t`.
fn sleep_until_unix(t: f64) {
    let (s, ns) = now_unix();
    let ahead = t - (s as f64 + f64::from(ns) * 1e-9);
    if ahead > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(ahead));
    }
}

/// An NMEA talker as a receiver is: GGA + RMC naming each host second, written `delay` seconds
/// after it with `jitter` (standard deviation); each time also handed to `also` (the second
/// named and the host time written), for a chronyd fed the same sentences over SOCK.
fn nmea_talker_late(
    master: std::fs::File,
    delay: f64,
    jitter: f64,
    mut also: impl FnMut(i64, f64) + Send + 'static,
) -> Feeder {
    use stratum_refclock::nmea::sentence;
    let mut master = master;
    let mut rng = Jitter(0x9e37_79b9_7f4a_7c15);
    Feeder::every(Duration::ZERO, move || {
        let (sec, _) = now_unix();
        let at = sec as f64 + 1.0 + delay + rng.normal(jitter);
        sleep_until_unix(at);
        let named = sec + 1;
        let (d, m, y) = ddmmyy(named);
        let gga = sentence(&format!("GPGGA,{},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", hms(named)));
        let rmc =
            sentence(&format!("GPRMC,{},A,4807.038,N,01131.000,E,0.0,0.0,{d:02}{m:02}{:02},,,A", hms(named), y % 100));
        let _ = std::io::Write::write_all(&mut master, format!("{gga}\r\n{rmc}\r\n").as_bytes());
        let (s, ns) = now_unix();
        also(named, s as f64 + f64::from(ns) * 1e-9);
    })
}

/// What the pulse feed leaves out or adds: every `missing`-th second no pulse, every
/// `double`-th a second one 1 ms after it (0: never).
#[derive(Clone, Copy, Default)]
struct PulseFaults {
    missing: i64,
    double: i64,
}

/// A PPS feed over chrony's SOCK protocol, the way a pulse tool feeds chrony: for each host
/// second (truth here: the host clock), 1 ms after it, a pulse sample stamped at the second
/// with the edge's 100 ns jitter as its offset (chrony's convention: the host's lead over the
/// pulse), sent to every path in `paths`.
fn pps_sock_feed(paths: Vec<PathBuf>, faults: Arc<std::sync::Mutex<PulseFaults>>) -> Feeder {
    let sender = SockSender::new().unwrap();
    let mut rng = Jitter(0x2545_f491_4f6c_dd1d);
    Feeder::every(Duration::ZERO, move || {
        let (sec, _) = now_unix();
        let second = sec + 1;
        sleep_until_unix(second as f64 + 1e-3);
        let f = *faults.lock().unwrap();
        let every = |n: i64| n > 0 && second % n == 0;
        if every(f.missing) {
            return;
        }
        let pulse = SockSample { tv_sec: second, tv_usec: 0, offset: rng.normal(100e-9), pulse: 1, leap: 0 };
        let double = SockSample { offset: pulse.offset + 1e-3, ..pulse };
        for path in &paths {
            let _ = sender.send(path, &pulse);
            if every(f.double) {
                let _ = sender.send(path, &double);
            }
        }
    })
}

/// The refclock row named `name` in a `sources` answer.
fn refclock_row(sources: &Value, name: &str) -> Option<Value> {
    sources["sources"].as_array()?.iter().find(|s| s["name"] == name).cloned()
}

/// Issue 18's appliance through a real stratumd: an NMEA talker on a pty at 1 Hz (sentences
/// 300 ms after the second, 5 ms jitter, `offset = 0.3`, noselect) numbers SOCK pulse samples
/// (100 ns jitter, `lock = "GPS"`, prefer). Truth is the host clock (the virtual discipline
/// serves host time plus its correction). stratumd in a namespace serves stratum 1 refid PPS,
/// the PPS refclock's offset within 5 µs, the served clock within 50 µs of the host's as a
/// client measures it on loopback, and a real chronyd client accepts it. A real chronyd fed the
/// same pulses (`refclock SOCK ... lock NMEA`, its NMEA the same sentences as SOCK samples)
/// reports the same offset within 1 µs. Then pulses go missing and come double: counted
/// (missing, double), the lock and the selection kept.
#[test]
fn nmea_numbering_sock_pulses_serves_stratum_1_refid_pps_as_chronyd_does() {
    let ok = require(is_root() && have_tool("ip"), "refclock PPS: needs root and ip (a namespace, port 123)")
        && require(have_tool("chronyd") && have_tool("chronyc"), "chronyd is not installed (apt-get install chrony)");
    if !ok {
        return;
    }
    let (master_file, slave_file, slave_path) = pty();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let pps_path = dir.path().join("pps.sock");
    let private = private_dir();
    let chrony_pps = private.path().join("pps.sock");
    let chrony_nmea = private.path().join("nmea.sock");
    let ns = Netns::new("rcp");
    let metrics: SocketAddr = "127.0.0.1:9123".parse().unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:123\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n\
         [[refclock]]\ndriver = \"nmea\"\ndevice = \"{}\"\nbaud = 9600\noffset = 0.3\ndelay = 0.1\nnoselect = true\n\n\
         [[refclock]]\ndriver = \"sock\"\ndevice = \"{}\"\nrefid = \"PPS\"\nlock = \"GPS\"\nprefer = true\npoll = 2\n\n\
         [control]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"{metrics}\"\n",
        slave_path.display(),
        pps_path.display(),
        control.display()
    );
    let mut server = Server::start_with(ns.command(BIN), &text, 123, None);
    let (_chronyd, chrony_socket) = chronyd_refclock(
        private.path(),
        &format!(
            "refclock SOCK {} refid NMEA offset 0.3 delay 0.1 noselect\nrefclock SOCK {} refid PPS lock NMEA poll 2 prefer",
            chrony_nmea.display(),
            chrony_pps.display()
        ),
    );
    // chronyd's NMEA: the same sentences, as SOCK time samples (reference minus host).
    let nmea_sender = SockSender::new().unwrap();
    let to_chrony = chrony_nmea.clone();
    let _talker = nmea_talker_late(master_file, 0.3, 5e-3, move |named, at| {
        let (s, us) = (at.floor() as i64, ((at - at.floor()) * 1e6) as i64);
        let sample = SockSample { tv_sec: s, tv_usec: us, offset: named as f64 - at, pulse: 0, leap: 0 };
        let _ = nmea_sender.send(&to_chrony, &sample);
    });
    let faults = Arc::new(std::sync::Mutex::new(PulseFaults::default()));
    let _pulses = pps_sock_feed(vec![pps_path.clone(), chrony_pps.clone()], faults.clone());

    let tracking = wait_for(Duration::from_secs(40), "stratum 1 refid PPS", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1 && t["refid"] == "PPS"
    });
    assert_eq!(tracking["system_peer"], format!("sock:{}", pps_path.display()), "{tracking}");
    let pps_name = format!("sock:{}", pps_path.display());
    // Settled: a few poll-2 estimates after the first.
    std::thread::sleep(Duration::from_secs(12));
    let sources = ctl_json(&control, &["sources"]).unwrap();
    let pps = refclock_row(&sources, &pps_name).unwrap();
    let gps = refclock_row(&sources, &format!("nmea:{}", slave_path.display())).unwrap();
    assert_eq!((pps["state"].as_str(), pps["pps_locked"].as_bool()), (Some("selected"), Some(true)), "{pps}");
    assert_eq!(gps["state"], "unselectable", "NMEA is noselect: {gps}");
    let pps_offset = pps["last_offset_seconds"].as_f64().unwrap();
    let pps_jitter = pps["jitter_seconds"].as_f64().unwrap_or(f64::NAN);
    let nmea_offset = gps["last_offset_seconds"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "NMEA+PPS (SOCK pulses): PPS offset {:+.3} us jitter {:.3} us; NMEA offset {:+.3} ms; pulses {}",
        pps_offset * 1e6,
        pps_jitter * 1e6,
        nmea_offset * 1e3,
        pps["pulses"]
    );
    assert!(pps_offset.abs() < 5e-6, "PPS offset {pps_offset}");

    // Served against the host clock, from a client on the namespace's loopback: the reply of
    // the shortest round trip of 20.
    let (served, delay) = in_netns(&ns, || {
        (0..20)
            .filter_map(|_| query(SocketAddr::from(([127, 0, 0, 1], 123)), 4, Duration::from_secs(1)))
            .map(|(reply, offset, delay)| {
                assert_eq!((reply.stratum, reply.ref_id.0), (1, *b"PPS\0"), "{reply:?}");
                (offset, delay)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("stratumd answers")
    });
    eprintln!("served - host: {:+.3} us (round trip {:.3} us)", served * 1e6, delay * 1e6);
    assert!(served.abs() < 50e-6, "served clock {served} s off the host's");

    // A real chronyd client in the namespace accepts it.
    let client = chronyd_client(&ns, "127.0.0.1", 4).unwrap_or_else(|log| panic!("chronyd refused stratumd: {log}"));
    eprintln!("chronyd client: offset {:+.3} us", client * 1e6);
    assert!(client.abs() < 1e-3, "{client}");

    // chronyd fed the same pulses: the same offset.
    let fields = chronyc_selected(&chrony_socket, "PPS", Duration::from_secs(30));
    let chrony_offset: f64 = fields[8].parse().unwrap();
    let pps = refclock_row(&ctl_json(&control, &["sources"]).unwrap(), &pps_name).unwrap();
    let stratumd_offset = pps["last_offset_seconds"].as_f64().unwrap();
    eprintln!(
        "SOCK pulses: stratumd PPS offset {:+.3} us, chronyd {:+.3} us ({})",
        stratumd_offset * 1e6,
        chrony_offset * 1e6,
        fields.join(",")
    );
    assert!((stratumd_offset - chrony_offset).abs() < 1e-6, "{stratumd_offset} {chrony_offset}");

    // Missing (every 5th second) and double (every 7th) pulses: counted, the lock kept.
    let before = pps["pulses"].clone();
    *faults.lock().unwrap() = PulseFaults { missing: 5, double: 7 };
    std::thread::sleep(Duration::from_secs(22));
    let pps = refclock_row(&ctl_json(&control, &["sources"]).unwrap(), &pps_name).unwrap();
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let p = &pps["pulses"];
    eprintln!("22 s with missing and double pulses: before {before}, after {p}; offset {:+.3} us", {
        pps["last_offset_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6
    });
    assert!(count(p, "missing") >= count(&before, "missing") + 3, "{before} {p}");
    assert!(count(p, "double") >= count(&before, "double") + 2, "{before} {p}");
    assert_eq!(count(p, "unlocked"), count(&before, "unlocked"), "the lock held: {before} {p}");
    assert_eq!((pps["state"].as_str(), pps["pps_locked"].as_bool()), (Some("selected"), Some(true)), "{pps}");
    assert!(pps["last_offset_seconds"].as_f64().is_some_and(|o| o.abs() < 5e-6), "{pps}");
    let scraped = scrape_in(&ns, metrics).expect("/metrics");
    let line = |outcome: &str| {
        format!("stratumd_refclock_pulses_total{{refclock=\"{pps_name}\",source=\"127.127.46.1:0\",outcome=\"{outcome}\"}} ")
    };
    for outcome in ["locked", "missing", "double"] {
        let n = scraped.lines().find_map(|l| l.strip_prefix(&line(outcome))).and_then(|n| n.parse::<u64>().ok());
        assert!(n.is_some_and(|n| n > 0), "{outcome}: {n:?} in\n{scraped}");
    }
    drop(slave_file);
    server.stop();
}
