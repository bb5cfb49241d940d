//! ntpd-format statistics files (issue 15, item 2): a stratumd synchronised to a chronyd in
//! another namespace writes loopstats, peerstats and rawstats that parse with the columns ntpd
//! documents and agree with `stratumctl`; a statistics directory that does not exist is logged
//! once and counted while serving and sync go on. (The day boundary's rotation and retention are
//! unit tests in mgmt/stats.rs, with the dates injected.)
//!
//! clockstats (with loopstats and peerstats) from a SOCK refclock needs nothing; the others
//! need root, ip and chronyd: they skip outside CI without them, and fail in CI.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SERVER: &str = "10.94.1.1";
const PEER: &str = "10.94.1.2";

fn available() -> bool {
    require(is_root(), "the upstream chronyd runs in a network namespace, which needs root")
        && require(have_tool("ip") && have_tool("chronyd"), "ip or chronyd is not installed")
}

struct Lab {
    server: Netns,
    peer: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let server = Netns::new(&format!("{tag}s"));
        let peer = Netns::new(&format!("{tag}p"));
        server.link("st0", &format!("{SERVER}/24"), &peer, "st1", &format!("{PEER}/24"));
        Self { server, peer, dir: tempfile::tempdir().unwrap() }
    }

    fn chronyd(&self) -> Running {
        chronyd_local_server(&self.peer, self.dir.path(), PEER)
    }

    /// stratumd on port 123 polling the chronyd, with [stats] in `stats_dir` and /metrics on
    /// 127.0.0.1:9123 inside the namespace.
    fn stratumd(&self, stats_dir: &Path) -> (Server, std::path::PathBuf) {
        let control = self.dir.path().join("control.sock");
        let text = format!(
            "[server]\nlisten = [\"{SERVER}:123\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n\
             [[upstream]]\naddress = \"{PEER}\"\niburst = true\n\n\
             [stats]\ndirectory = \"{}\"\nrawstats = true\nsysstats = true\n\n[control]\nsocket = \"{}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:9123\"\n",
            stats_dir.display(),
            control.display()
        );
        (Server::start_with(self.server.command(BIN), &text, 123, None), control)
    }
}

/// Today's (UTC) file of `kind`, through the `kind` link, as lines of columns.
fn rows(dir: &Path, kind: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join(kind))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// The date columns: MJD within a day of now's, seconds of the day below 86400 with 3 decimals.
fn check_date(row: &[String]) {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mjd: i64 = row[0].parse().unwrap();
    assert!((mjd - (unix / 86_400) as i64 - 40_587).abs() <= 1, "{row:?}");
    let (secs, millis) = row[1].split_once('.').unwrap();
    assert!(secs.parse::<u32>().unwrap() < 86_400 && millis.len() == 3, "{row:?}");
}

fn float(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

#[test]
fn loopstats_peerstats_and_rawstats_in_ntpds_columns() {
    if !available() {
        return;
    }
    let lab = Lab::new("stl");
    let _chronyd = lab.chronyd();
    let stats = lab.dir.path().join("stats");
    std::fs::create_dir(&stats).unwrap();
    let (_server, control) = lab.stratumd(&stats);
    wait_for(Duration::from_secs(20), "synchronised to the chronyd", &control, "tracking", |t| {
        t["synchronized"] == true
    });
    // Lines reach the files within a second or two of the samples (the writer flushes each second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&stats, "peerstats").len() < 2 || rows(&stats, "loopstats").is_empty() {
        assert!(Instant::now() < deadline, "no lines in {:?}", std::fs::read_dir(&stats).unwrap().collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let sources = ctl_json(&control, &["sources"]).unwrap();
    let tracking = ctl_json(&control, &["tracking"]).unwrap();
    // What stratumctl just showed is in the files once the writer's next flush (200 ms) is done.
    std::thread::sleep(Duration::from_millis(600));

    // peerstats: MJD secs address status offset delay dispersion jitter.
    let peer = rows(&stats, "peerstats");
    for row in &peer {
        assert_eq!(row.len(), 8, "{row:?}");
        check_date(row);
        assert_eq!(row[2], PEER);
        assert!(u16::from_str_radix(&row[3], 16).is_ok() && row[3].len() == 4, "status word: {row:?}");
        for c in &row[4..] {
            float(c);
        }
    }
    // The line of the sample stratumctl showed (the iburst may have added one since): by its delay.
    let source = &sources["sources"][0];
    let delay = source["last_delay_seconds"].as_f64().unwrap();
    let last = peer.iter().rev().take(2).find(|r| (float(&r[5]) - delay).abs() < 1e-9);
    let last = last.unwrap_or_else(|| panic!("no line with delay {delay} among the last two: {peer:?}"));
    // The engine re-expresses a source's last offset against the served clock after each clock
    // update; the line has it as sampled.
    let offset = source["last_offset_seconds"].as_f64().unwrap();
    assert!((float(&last[4]) - offset).abs() < 1e-4, "offset: {last:?} vs {source}");
    assert_eq!(&last[3][..2], "96", "configured, reachable, system peer: {last:?}");

    // loopstats: MJD secs offset frequency jitter wander tc.
    let looped = rows(&stats, "loopstats");
    for row in &looped {
        assert_eq!(row.len(), 7, "{row:?}");
        check_date(row);
        for c in &row[2..6] {
            float(c);
        }
        row[6].parse::<i8>().unwrap();
    }
    // The update stratumctl showed is one of the last two lines (the iburst may have added one).
    let frequency = tracking["frequency_ppm"].as_f64().unwrap();
    let near = |r: &&Vec<String>| (float(&r[3]) - frequency).abs() < 0.001;
    assert!(looped.iter().rev().take(2).any(|r| near(&r)), "frequency {frequency} not in {looped:?}");

    // rawstats: MJD secs source destination T1 T2 T3 T4, T1 <= T4 and T2 <= T3.
    let raw = rows(&stats, "rawstats");
    assert!(raw.len() >= peer.len(), "a raw line per reply: {} vs {}", raw.len(), peer.len());
    for row in &raw {
        assert_eq!(row.len(), 8, "{row:?}");
        check_date(row);
        assert_eq!((row[2].as_str(), row[3].as_str()), (PEER, SERVER), "{row:?}");
        let t: Vec<f64> = row[4..].iter().map(|s| float(s)).collect();
        assert!(t[0] <= t[3] && t[1] <= t[2] && t[0] > 3.9e9, "{row:?}");
    }

    // The files are named by the UTC day, and `KIND` links to today's.
    let link = std::fs::read_link(stats.join("peerstats")).unwrap();
    let name = link.to_string_lossy().to_string();
    assert!(name.starts_with("peerstats.") && name.len() == "peerstats.YYYYMMDD".len(), "{name}");
}

#[test]
fn a_missing_statistics_directory_is_logged_once_and_serving_goes_on() {
    if !available() {
        return;
    }
    let lab = Lab::new("stm");
    let _chronyd = lab.chronyd();
    let gone = lab.dir.path().join("no-such-dir");
    let (mut server, control) = lab.stratumd(&gone);
    wait_for(
        Duration::from_secs(20),
        "synchronised although no statistics can be written",
        &control,
        "tracking",
        |t| t["synchronized"] == true,
    );
    std::thread::sleep(Duration::from_secs(2));
    // Counted, and what the shipped alert rule reads is exported.
    let metrics = scrape_in(&lab.server, "127.0.0.1:9123".parse().unwrap()).expect("a scrape");
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stratumd_stats_lines_total{file=\"peerstats\",outcome=\"failed\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(failed.is_some_and(|n| n >= 1.0), "peerstats lines counted as failed: {failed:?}");
    let alerts = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/alerts.yml")).unwrap();
    let named: Vec<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("stratumd_stats_"))
        .collect();
    assert!(!named.is_empty());
    for name in named {
        assert!(metrics.lines().any(|l| l.starts_with(&format!("{name}{{"))), "{name} in alerts.yml is not exported");
    }
    let log = server.stop_output();
    assert_eq!(log.matches("cannot write statistics files").count(), 1, "logged once:\n{log}");
}

/// clockstats and loopstats from a reference clock, no root needed: a SOCK sender (chrony's
/// protocol, the host clock's time 10 times a second) makes stratumd stratum 1; clockstats gets
/// a line per reading with the refclock's pseudo-address, and loopstats the clock updates.
#[test]
fn clockstats_from_a_sock_refclock() {
    use stratum_refclock::sock::{SockSample, SockSender};
    let dir = tempfile::tempdir().unwrap();
    let (path, control, stats) =
        (dir.path().join("gps.sock"), dir.path().join("control.sock"), dir.path().join("stats"));
    std::fs::create_dir(&stats).unwrap();
    let port = free_port();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n[[refclock]]\n\
         driver = \"sock\"\ndevice = \"{}\"\npoll = 0\n\n[stats]\ndirectory = \"{}\"\nclockstats = true\n\n\
         [control]\nsocket = \"{}\"\n",
        path.display(),
        stats.display(),
        control.display()
    );
    let _server = Server::start(&text, port);
    let sender = SockSender::new().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let feeder = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            let sample = SockSample {
                tv_sec: d.as_secs() as i64,
                tv_usec: i64::from(d.subsec_micros()),
                offset: 0.0,
                pulse: 0,
                leap: 0,
            };
            // Until stratumd has made its socket, sends fail: the next one is tried.
            let _ = sender.send(&path, &sample);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    wait_for(Duration::from_secs(20), "synchronised to the SOCK refclock", &control, "tracking", |t| {
        t["synchronized"] == true && t["stratum"] == 1
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&stats, "clockstats").len() < 5 || rows(&stats, "loopstats").is_empty() {
        assert!(Instant::now() < deadline, "no lines in {:?}", std::fs::read_dir(&stats).unwrap().collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();

    // clockstats: MJD secs address driver timecode (the reading's reference time, ISO 8601).
    for row in rows(&stats, "clockstats") {
        assert_eq!(row.len(), 5, "{row:?}");
        check_date(&row);
        assert_eq!((row[2].as_str(), row[3].as_str()), ("127.127.46.0", "sock"), "{row:?}");
        assert!(row[4].len() == 27 && row[4].ends_with('Z') && row[4].as_bytes()[10] == b'T', "{row:?}");
    }
    // loopstats: the refclock's updates, 7 columns.
    for row in rows(&stats, "loopstats") {
        assert_eq!(row.len(), 7, "{row:?}");
        check_date(&row);
    }
    // peerstats: the refclock as a peer, by its pseudo-address.
    assert!(rows(&stats, "peerstats").iter().all(|r| r.len() == 8 && r[2] == "127.127.46.0"));
}
