//! NTPsec's real `ntpq` against a synchronised stratumd (issue 15): stratumd on port 123 in a
//! namespace, polling a chronyd in another; `ntpq -p`, `-c rv`, `-c as`, `-c "rv 0 offset"` and
//! `-c mrulist` from loopback (on `[ntpq] allow` by default) print what `stratumctl` shows, and
//! the chronyd's namespace, not on the list, gets nothing (dropped and counted).
//!
//! Needs root, ip, chronyd, /usr/bin/python3 with python3-ntp (from ntpsec-ntpdate) and ntpq
//! unpacked by scripts/test into target/peers/ntpsec: skips outside CI without them, fails in CI.

mod common;

use std::path::PathBuf;
#[cfg(feature = "xdp")]
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SERVER: &str = "10.93.1.1";
const LEAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/data/leap-seconds.list");
const PEER: &str = "10.93.1.2";

fn ntpq_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers/ntpsec/usr/bin/ntpq")
}

fn available() -> bool {
    require(is_root(), "ntpq only talks to port 123: needs root and a network namespace")
        && require(have_tool("ip") && have_tool("chronyd"), "ip or chronyd is not installed")
        && require(
            ntpq_script().exists() && std::path::Path::new("/usr/lib/python3/dist-packages/ntp/packet.py").exists(),
            "NTPsec's ntpq is not unpacked in target/peers/ntpsec or python3-ntp is missing (scripts/test does both)",
        )
}

/// stratumd's namespace and the chronyd's, joined by a veth pair.
struct Lab {
    server: Netns,
    peer: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Self::new_named("ntpqs", "ntpqp", "nq0", "nq1")
    }

    /// Namespaces `server_tag` and `peer_tag` joined by veth `a` (server end) and `b`.
    fn new_named(server_tag: &str, peer_tag: &str, a: &str, b: &str) -> Self {
        let server = Netns::new(server_tag);
        let peer = Netns::new(peer_tag);
        server.link(a, &format!("{SERVER}/24"), &peer, b, &format!("{PEER}/24"));
        Self { server, peer, dir: tempfile::tempdir().unwrap() }
    }

    fn chronyd(&self) -> Running {
        chronyd_local_server(&self.peer, self.dir.path(), PEER)
    }

    /// `ntpq ARGS HOST` from inside `ns`: its stdout and stderr.
    fn ntpq(ns: &Netns, host: &str, args: &[&str]) -> (String, String) {
        let out = ns
            .command("/usr/bin/python3")
            .arg(ntpq_script())
            .arg("-n")
            .args(args)
            .arg(host)
            .output()
            .expect("run ntpq");
        (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }
}

fn ms(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}")) * 1e3
}

/// The `name=value` of `text` (ntpq's `rv` output; it pads some names, `filtdelay =`).
fn var(text: &str, name: &str) -> Option<String> {
    text.split([',', '\n'])
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// Runs `f` with a UDP socket on 127.0.0.1 inside `ns` (a thread that joins it).
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce(std::net::UdpSocket) -> T + Send + 'static) -> T {
    in_ns_from(ns, "127.0.0.1:0", f)
}

/// Runs `f` with a UDP socket bound to `local` inside `ns`.
fn in_ns_from<T: Send + 'static>(
    ns: &Netns,
    local: &'static str,
    f: impl FnOnce(std::net::UdpSocket) -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(path).unwrap();
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }, 0);
        let s = std::net::UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        f(s)
    })
    .join()
    .unwrap()
}

/// Sends `n` client requests to 127.0.0.1:123 from inside `ns`.
fn requests_in(ns: &Netns, n: usize) {
    in_ns(ns, move |s| {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 128];
        for _ in 0..n {
            let request = stratum_proto::NtpPacket::client_request(4, now_ntp()).to_bytes();
            s.send_to(&request, "127.0.0.1:123").unwrap();
            let _ = s.recv(&mut buf);
        }
    });
}

#[test]
fn ntpq_reads_a_synchronised_stratumd_and_other_sources_get_nothing() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let _chronyd = lab.chronyd();
    let control = lab.dir.path().join("control.sock");
    let text = format!(
        "[server]\nlisten = [\"0.0.0.0:123\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\nleap-seconds = \"{LEAP}\"\n\n\
         [[upstream]]\naddress = \"{PEER}\"\niburst = true\n\n[ratelimit]\n\n[control]\nsocket = \"{}\"\n",
        control.display()
    );
    let _server = Server::start_with(lab.server.command(BIN), &text, 123, None);
    wait_for(Duration::from_secs(20), "synchronised to the chronyd", &control, "tracking", |t| {
        t["synchronized"] == true
    });
    // A client for the MRU list: 200 requests from loopback (the rate limiter samples one in 16).
    requests_in(&lab.server, 200);

    // ntpq -p: one line, the chronyd, selected ('*'), stratum 1, its refid, reach, and the
    // same offset as stratumctl sources (within 1 ms: they are read a moment apart).
    // The iburst may shift one more poll into the reach register meanwhile: read it around ntpq.
    let reach_before = ctl_json(&control, &["sources"]).unwrap()["sources"][0]["reach"].clone();
    let (peers, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-p"]);
    eprintln!("ntpq -p:\n{peers}{err}");
    let sources = ctl_json(&control, &["sources"]).expect("stratumctl sources");
    let source = &sources["sources"][0];
    let line = peers.lines().find(|l| l.starts_with('*')).unwrap_or_else(|| panic!("no system peer in:\n{peers}"));
    let cols: Vec<&str> = line[1..].split_whitespace().collect();
    assert_eq!(cols[0], PEER, "{line}");
    // The refid as ntpd writes it (unprintable bytes as '.'; chronyd's `local` one is 7f7f0101).
    let refid = source["refid"].as_str().unwrap().replace("\\x7f", ".").replace("\\x01", ".");
    // ntpq puts dots around a refid with none of its own.
    let shown = if refid.contains('.') { refid } else { format!(".{refid}.") };
    assert_eq!(cols[1], shown, "{line}");
    assert_eq!(cols[2], "1", "stratum: {line}");
    assert_eq!(cols[3], "u", "unicast: {line}");
    let reach = [reach_before.as_str().unwrap(), source["reach"].as_str().unwrap()];
    assert!(reach.contains(&cols[6]), "reach: {line} vs {reach:?}");
    let offset: f64 = cols[8].parse().unwrap();
    assert!((offset - ms(source, "last_offset_seconds")).abs() < 1.0, "offset {offset} ms vs {source}");

    // ntpq -c rv: the system variables match stratumctl tracking.
    let (rv, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "rv"]);
    eprintln!("ntpq -c rv:\n{rv}{err}");
    let tracking = ctl_json(&control, &["tracking"]).expect("stratumctl tracking");
    assert!(rv.contains("leap_none") && rv.contains("sync_ntp"), "status word: {rv}");
    assert_eq!(var(&rv, "stratum").as_deref(), Some("2"), "{rv}");
    assert_eq!(var(&rv, "refid"), tracking["refid"].as_str().map(String::from), "{rv}");
    assert_eq!(var(&rv, "peer").as_deref(), Some("1"), "{rv}");
    assert!(var(&rv, "version").is_some_and(|v| v.starts_with("stratumd ")), "{rv}");
    // From the leap-seconds list: TAI - UTC, the last leap (none is scheduled), its expiry.
    assert_eq!(var(&rv, "tai").as_deref(), Some("37"), "{rv}");
    assert!(var(&rv, "clk_wander").is_some_and(|w| w.parse::<f64>().is_ok_and(|w| w >= 0.0)), "{rv}");
    assert_eq!(var(&rv, "leapsec").as_deref(), Some("201701010000"), "{rv}");
    assert_eq!(var(&rv, "expire").as_deref(), Some("202606280000"), "{rv}");
    let rootdelay: f64 = var(&rv, "rootdelay").unwrap().parse().unwrap();
    assert!((rootdelay - ms(&tracking, "root_delay_seconds")).abs() < 0.5, "{rv} vs {tracking}");

    // rv 0 offset: one variable, the offset stratumctl tracking shows at about the same time.
    let (one, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "rv 0 offset"]);
    let tracking = ctl_json(&control, &["tracking"]).expect("stratumctl tracking");
    eprintln!("ntpq -c 'rv 0 offset':\n{one}{err}");
    let offset: f64 = var(&one, "offset").unwrap_or_else(|| panic!("{one}")).parse().unwrap();
    assert!(var(&one, "stratum").is_none(), "only what was asked: {one}");
    assert!((offset - ms(&tracking, "offset_seconds")).abs() < 0.5, "{offset} ms vs {tracking}");

    // The peer's clock filter: one to eight stages, the newest delay the one stratumctl shows.
    let (filt, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "rv 1 filtdelay,filtoffset,filtdisp,dispersion"]);
    eprintln!("ntpq -c 'rv 1 filtdelay,...':\n{filt}{err}");
    let delays: Vec<f64> =
        var(&filt, "filtdelay").unwrap_or_default().split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!((1..=8).contains(&delays.len()), "{filt}");
    let newest = ctl_json(&control, &["sources"]).unwrap()["sources"][0]["last_delay_seconds"].as_f64().unwrap() * 1e3;
    assert!((delays[0] - newest).abs() < 0.001, "{filt} vs {newest} ms");
    assert!(var(&filt, "dispersion").is_some_and(|d| d.parse::<f64>().is_ok()), "{filt}");

    // unreach: polls since the chronyd last answered (0, or 1 while a poll's answer is on its
    // way); dstadr: the address stratumd's requests to it leave from.
    let (peer, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "rv 1 unreach,dstadr"]);
    eprintln!("ntpq -c 'rv 1 unreach,dstadr':\n{peer}{err}");
    let unreach: u32 = var(&peer, "unreach").unwrap_or_else(|| panic!("{peer}{err}")).parse().unwrap();
    assert!(unreach <= 1, "{peer}");
    assert_eq!(var(&peer, "dstadr").as_deref(), Some(SERVER), "{peer}");
    // ntpq -c opeers prints dstadr as its `local` column.
    let (opeers, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "opeers"]);
    eprintln!("ntpq -c opeers:\n{opeers}{err}");
    let line = opeers.lines().find(|l| l.starts_with('*')).unwrap_or_else(|| panic!("{opeers}{err}"));
    assert_eq!(line[1..].split_whitespace().nth(1), Some(SERVER), "local: {line}");

    // as: one association, reachable, the system peer.
    let (assoc, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "as"]);
    eprintln!("ntpq -c as:\n{assoc}{err}");
    let row = assoc.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap_or_else(|| panic!("{assoc}"));
    assert!(row.contains("sys.peer") && row.contains("yes"), "{row}");

    // mrulist: the nonce exchange, then loopback among the rate limiter's clients, last seen
    // (lstint) when its requests were sent, at least the 2 s waited here ago.
    std::thread::sleep(Duration::from_secs(2));
    let (mru, err) = Lab::ntpq(&lab.server, "127.0.0.1", &["-c", "mrulist"]);
    eprintln!("ntpq -c mrulist:\n{mru}{err}");
    assert!(mru.contains("lstint avgint rstr r m v  count"), "{mru}{err}");
    let row = mru.lines().find(|l| l.trim_end().ends_with(" 127.0.0.1")).unwrap_or_else(|| panic!("{mru}{err}"));
    let clients = ctl_json(&control, &["clients"]).expect("stratumctl clients");
    let client = clients["clients"].as_array().unwrap().iter().find(|c| c["prefix"] == "127.0.0.1/32").unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[6].parse::<u64>().ok(), client["requests"].as_u64(), "count: {row} vs {client}");
    assert_eq!(cols[8].parse::<u64>().ok(), client["limited"].as_u64(), "drop: {row} vs {client}");
    let lstint: u64 = cols[0].parse().unwrap_or_else(|_| panic!("lstint: {row}"));
    assert!((2..60).contains(&lstint), "lstint: {row}");

    // Writes are refused with the protocol's error (ntpq itself will not send one without a
    // key, so the request is made here): one 12-byte reply, error bit, code 1 (permission).
    let reply = in_ns(&lab.server, |s| {
        let writevar =
            [0x26, 0x03, 0, 9, 0, 0, 0, 0, 0, 0, 0, 9, b's', b't', b'r', b'a', b't', b'u', b'm', b'=', b'1', 0, 0, 0];
        s.send_to(&writevar, "127.0.0.1:123").unwrap();
        let mut buf = [0u8; 600];
        let n = s.recv(&mut buf).expect("an error reply");
        buf[..n].to_vec()
    });
    assert_eq!(reply, [0x26, 0xc3, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0], "WRITEVAR refused");

    // From the chronyd's namespace (not on [ntpq] allow): no reply, counted as a control drop.
    let before = ctl_json(&control, &["status"]).unwrap()["requests"]["dropped"]["control"].as_u64().unwrap();
    let (none, err) = Lab::ntpq(&lab.peer, SERVER, &["-c", "timeout 500", "-c", "rv"]);
    eprintln!("ntpq -c rv from {PEER}:\n{none}{err}");
    assert!(!none.contains("stratum="), "answered a source not on the allow list: {none}");
    assert!(err.contains("timed out") || none.contains("timed out"), "{none}{err}");
    let after = ctl_json(&control, &["status"]).unwrap()["requests"]["dropped"]["control"].as_u64().unwrap();
    assert!(after >= before + 2, "dropped and counted: {before} -> {after}");
}

/// The xdp backend: its workers hand allowed mode 6 to the same thread, which answers from a
/// kernel socket on port 123; a source not on `[ntpq] allow` gets nothing and is counted.
#[cfg(feature = "xdp")]
#[test]
fn ntpq_over_the_xdp_backend_and_only_for_allowed_sources() {
    if !available() {
        return;
    }
    let lab = Lab::new_named("nqxs", "nqxc", "nqx0", "nqx1");
    // A second client address, not on the allow list.
    run_ok(Command::new("ip").args(["-n", &lab.peer.name, "addr", "add", "10.93.1.3/24", "dev", "nqx1"]));
    let control = lab.dir.path().join("control.sock");
    let text = format!(
        "[server]\nbackend = \"xdp\"\ninterface = \"nqx0\"\nport = 123\nxdp-mode = \"auto\"\n\n\
         [clock]\nsource = \"local\"\nstratum = 2\n\n[ntpq]\nallow = [\"{PEER}/32\"]\n\n\
         [control]\nsocket = \"{}\"\n",
        control.display()
    );
    let mut server = Server::start_with(lab.server.command(BIN), &text, 123, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ctl_json(&control, &["status"]).is_none() {
        assert!(std::time::Instant::now() < deadline, "stratumd (xdp) did not come up: {}", server.stop_output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (rv, err) = Lab::ntpq(&lab.peer, SERVER, &["-c", "rv"]);
    eprintln!("ntpq -c rv over xdp:\n{rv}{err}");
    assert_eq!(var(&rv, "stratum").as_deref(), Some("2"), "{rv}{err}");
    assert!(var(&rv, "version").is_some_and(|v| v.starts_with("stratumd ")), "{rv}");

    // From 10.93.1.3: a READVAR gets nothing; the worker counts the drop, the handoff the denial.
    let before = ctl_json(&control, &["status"]).unwrap()["requests"]["dropped"]["control"].as_u64().unwrap();
    let reply = in_ns_from(&lab.peer, "10.93.1.3:0", |s| {
        s.send_to(&[0x26, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], format!("{SERVER}:123")).unwrap();
        let mut buf = [0u8; 600];
        s.recv(&mut buf).ok()
    });
    assert_eq!(reply, None, "answered a source not on [ntpq] allow");
    let after = ctl_json(&control, &["status"]).unwrap()["requests"]["dropped"]["control"].as_u64().unwrap();
    assert_eq!(after, before + 1, "the drop is counted");
}

/// `[ntpq]` and `[stats]` mistakes are one `FILE:LINE: KEY: ...` line each.
#[test]
fn ntpq_and_stats_config_errors_name_file_line_and_key() {
    let head = "[server]\nlisten = [\"127.0.0.1:11123\"]\n\n";
    assert_refused(&format!("{head}[ntpq]\nallow = [\"10.0.0.0/33\"]\n"), 5, "ntpq.allow", "prefix length");
    assert_refused(&format!("{head}[ntpq]\nalow = []\n"), 5, "ntpq.alow", "unknown field");
    assert_refused(&format!("{head}[stats]\ndirectory = \"/tmp\"\nkeep-days = 0\n"), 6, "stats.keep-days", "1..=3650");
    assert_refused(&format!("{head}[stats]\nloopstats = true\n"), 4, "stats", "missing field `directory`");
    let (ok, _, err, _) = check_config(&format!(
        "{head}[ntpq]\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]\n\n[stats]\ndirectory = \"/var/log/stratumd\"\nrawstats = true\nkeep-days = 30\n\n[clock]\nsource = \"local\"\nstratum = 2\n"
    ));
    assert!(ok, "{err}");
}
