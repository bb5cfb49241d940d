//! `source = "sync"` against real upstream servers (issue #20): stratumd in a network namespace
//! of its own polls two chronyd servers and one NTPsec ntpd server, each in another, and a real
//! chronyd client in a fifth takes stratumd as its source. Then the upstreams go away (holdover,
//! then LI=3) and come back; and upstreams that answer kiss-o'-death RATE or DENY (stratumd
//! itself, configured to) are polled less often or dropped. Needs root (namespaces, port 123),
//! chronyd and NTPsec's ntpd: skips outside CI without them, fails in CI.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn available(test: &str) -> bool {
    require(is_root() && have_tool("ip"), &format!("{test}: needs root and ip (network namespaces, port 123)"))
        && require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)")
        && require(ntpd().is_some(), "NTPsec's ntpd is not unpacked (./scripts/test does it, into target/peers/)")
}

/// NTPsec's ntpd: where ./scripts/test unpacks it (the ntpsec package conflicts with chrony),
/// else $STRATUM_NTPD, else one on the PATH.
fn ntpd() -> Option<String> {
    let unpacked = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/peers/ntpsec/usr/sbin/ntpd");
    [std::env::var("STRATUM_NTPD").ok(), Some(unpacked.to_string())]
        .into_iter()
        .flatten()
        .find(|p| std::path::Path::new(p).is_file())
        .or_else(|| have_tool("ntpd").then(|| "ntpd".to_string()))
}

/// stratumd's namespace joined to each peer's by a veth pair: peer `k` is 10.91.k.2, stratumd is
/// 10.91.k.1 on that link.
struct Lab {
    server: Netns,
    peers: Vec<Netns>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str, peers: usize) -> Self {
        let server = Netns::new(&format!("{tag}s"));
        let peers: Vec<Netns> = (1..=peers).map(|k| Netns::new(&format!("{tag}{k}"))).collect();
        for (k, peer) in peers.iter().enumerate().map(|(i, p)| (i + 1, p)) {
            let (a, b) = (format!("sv{k}"), format!("pv{k}"));
            server.link(&a, &format!("10.91.{k}.1/24"), peer, &b, &format!("10.91.{k}.2/24"));
        }
        Self { server, peers, dir: tempfile::tempdir().unwrap() }
    }

    fn peer_address(k: usize) -> String {
        format!("10.91.{k}.2")
    }

    /// chronyd serving its host clock at `stratum` in peer `k`'s namespace, never touching the
    /// clock (-x); its config and log in the folder `chrony{k}`.
    fn chronyd_server(&self, k: usize, stratum: u8) -> Running {
        let d = self.dir.path().display();
        let conf = format!(
            "local stratum {stratum}\nallow all\ncmdport 0\npidfile {d}/chronyd{k}.pid\n\
             driftfile {d}/chrony{k}.drift\nbindaddress {}\n",
            Self::peer_address(k)
        );
        let own = self.dir.path().join(format!("chrony{k}"));
        std::fs::create_dir_all(&own).unwrap();
        spawn_chronyd(Some(&self.peers[k - 1]), &own, &conf, &[])
    }

    /// NTPsec's ntpd in orphan mode (stratum 2 of its own, at once), never touching the clock.
    fn ntpd_server(&self, k: usize) -> Running {
        let conf = self.dir.path().join(format!("ntp{k}.conf"));
        let d = self.dir.path().display();
        std::fs::write(
            &conf,
            format!("tos orphan 2 orphanwait 0\ndisable ntp\ndisable kernel\ndriftfile {d}/ntp{k}.drift\nrestrict default\n"),
        )
        .unwrap();
        let child = self.peers[k - 1]
            .command(&ntpd().expect("checked by available()"))
            .args(["-n", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.path().join(format!("ntpd{k}.pid")))
            .arg("-l")
            .arg(self.dir.path().join(format!("ntpd{k}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ntpd");
        Running(Some(child))
    }

    /// stratumd in the server namespace on port 123, with `body` after its [server] section.
    fn stratumd(&self, body: &str) -> (Server, std::path::PathBuf) {
        let control = self.dir.path().join("control.sock");
        let text = format!(
            "[server]\nlisten = [\"0.0.0.0:123\"]\nworkers = 1\n\n{body}\n[control]\nsocket = \"{}\"\n",
            control.display()
        );
        (Server::start_with(self.server.command(BIN), &text, 123, None), control)
    }
}

fn synchronized(t: &Value) -> bool {
    t["synchronized"] == true
}

/// The source at peer `k`'s address in a `sources` answer.
fn source_of(sources: &Value, k: usize) -> Option<Value> {
    let address = format!("{}:123", Lab::peer_address(k));
    sources["sources"].as_array()?.iter().find(|x| x["address"] == address).cloned()
}

fn upstream(k: usize, extra: &str) -> String {
    format!("[[upstream]]\naddress = \"{}\"\niburst = true\n{extra}\n", Lab::peer_address(k))
}

/// Two chronyd servers and one NTPsec ntpd: all reached (reach 377), one selected, stratum and
/// refid from it, and a real chronyd client accepts stratumd. First, how long the first
/// synchronisation takes with iburst at the default minpoll (chronyd needs about 8 s on a LAN).
#[test]
fn syncs_to_chronyd_and_ntpd_and_serves_a_chronyd_client() {
    if !available("syncs_to_chronyd_and_ntpd") {
        return;
    }
    let lab = Lab::new("sy", 4);
    let _a = lab.chronyd_server(1, 1);
    let _b = lab.chronyd_server(2, 1);
    let _c = lab.ntpd_server(3);
    std::thread::sleep(Duration::from_millis(500));
    let body = format!("[clock]\nsource = \"sync\"\n\n{}{}{}", upstream(1, ""), upstream(2, ""), upstream(3, ""));
    let started = Instant::now();
    let (mut server, control) = lab.stratumd(&body);
    let tracking = wait_for(Duration::from_secs(20), "synchronised", &control, "tracking", synchronized);
    let took = started.elapsed();
    eprintln!("synchronised after {took:?} (iburst, minpoll 6): {tracking}");
    assert!(took < Duration::from_secs(10), "slower than chronyd's ~8 s: {took:?}");
    server.stop();

    // Polled every half second from here on, so that 8 polls in a row fit a test: every source
    // reached (reach 377), one selected.
    let fast = "minpoll = -1\nmaxpoll = -1";
    let body = format!("[clock]\nsource = \"sync\"\n\n{}{}{}", upstream(1, fast), upstream(2, fast), upstream(3, fast));
    let body = body + "\n[metrics]\nlisten = \"10.91.4.1:9123\"\n";
    let (mut server, control) = lab.stratumd(&body);
    let sources = wait_for(Duration::from_secs(30), "reach 377 on all three, one selected", &control, "sources", |s| {
        let list = s["sources"].as_array().cloned().unwrap_or_default();
        list.len() == 3 && list.iter().all(|x| x["reach"] == "377") && list.iter().any(|x| x["state"] == "selected")
    });
    eprintln!("{sources}");
    let list = sources["sources"].as_array().unwrap();
    let selected: Vec<&Value> = list.iter().filter(|s| s["state"] == "selected").collect();
    assert_eq!(selected.len(), 1, "{sources}");
    let peer = selected[0]["address"].as_str().unwrap().trim_end_matches(":123").to_string();
    assert!(peer == Lab::peer_address(1) || peer == Lab::peer_address(2), "a stratum-1 chronyd is selected: {sources}");
    assert_eq!(source_of(&sources, 3).unwrap()["stratum"], 2, "ntpd reached: {sources}");

    // Served: stratum 2 (the system peer's + 1), refid its address, to a real chronyd client.
    let tracking = ctl_json(&control, &["tracking"]).unwrap();
    assert_eq!(
        (tracking["stratum"].as_u64(), tracking["refid"].as_str()),
        (Some(2), Some(peer.as_str())),
        "{tracking}"
    );
    let client = &lab.peers[3];
    let offset = chronyd_client(client, "10.91.4.1", 4).expect("the chronyd client accepts stratumd");
    eprintln!("chronyd client: offset {offset} s");
    assert!(offset.abs() < 0.01, "{offset}");

    // /metrics has every upstream name the dashboard and the alert rules use.
    let metrics = scrape_in(&lab.server, "10.91.4.1:9123".parse().unwrap()).expect("/metrics");
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let referenced = std::fs::read_to_string(format!("{deploy}/grafana-dashboard.json")).unwrap()
        + &std::fs::read_to_string(format!("{deploy}/alerts.yml")).unwrap();
    let mut names: Vec<&str> = referenced
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("stratumd_source_") || w.starts_with("stratumd_sync_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let exported = metrics.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])));
        assert!(exported, "{name} is referenced but not exported:\n{metrics}");
    }
    assert!(metrics.contains("stratumd_source_state{source=\"10.91.3.2:123\""), "{metrics}");
    server.stop();
}

/// The upstreams die: holdover (still synchronised, dispersion growing), then after a short
/// max-holdover LI=3 stratum 16, which a chronyd client refuses; they come back: synchronised
/// again without a restart.
#[test]
fn holdover_then_unsynchronised_then_back_without_a_restart() {
    if !available("holdover") {
        return;
    }
    let lab = Lab::new("sh", 2);
    let mut a = lab.chronyd_server(1, 1);
    std::thread::sleep(Duration::from_millis(300));
    let body =
        format!("[clock]\nsource = \"sync\"\nmax-holdover = \"4s\"\n\n{}", upstream(1, "minpoll = -2\nmaxpoll = -1"));
    let (mut server, control) = lab.stratumd(&body);
    wait_for(Duration::from_secs(15), "synchronised", &control, "tracking", synchronized);
    let client = &lab.peers[1];
    assert!(chronyd_client(client, "10.91.2.1", 4).is_ok());

    a.stop();
    // Holdover first: still served as synchronised for a while, then LI=3.
    let lost = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let held = ctl_json(&control, &["tracking"]).unwrap();
    assert_eq!(held["synchronized"], true, "in holdover: {held}");
    let status = wait_for(Duration::from_secs(15), "LI=3 after max-holdover", &control, "status", |s| {
        s["synchronized"] == false
    });
    assert_eq!(status["stratum"], 16, "{status}");
    assert!(lost.elapsed() >= Duration::from_secs(3), "LI=3 before max-holdover: {:?}", lost.elapsed());
    assert!(chronyd_client(client, "10.91.2.1", 4).is_err(), "a client must refuse an unsynchronised server");

    let _a = lab.chronyd_server(1, 1);
    wait_for(Duration::from_secs(20), "synchronised again", &control, "tracking", synchronized);
    assert!(chronyd_client(client, "10.91.2.1", 4).is_ok());
    server.stop();
}

/// Upstreams that answer kiss-o'-death (stratumd itself, configured to): RATE makes stratumd
/// poll that one less often and keep it; DENY drops it for good.
#[test]
fn kiss_o_death_rate_slows_the_poll_and_deny_drops_the_source() {
    if !available("kod") {
        return;
    }
    let lab = Lab::new("sk", 3);
    let upstream_stratumd = |k: usize, extra: &str| {
        let text = format!(
            "[server]\nlisten = [\"{}:123\"]\nworkers = 1\n\n[clock]\nsource = \"local\"\nstratum = 1\n{extra}",
            Lab::peer_address(k)
        );
        Server::start_with(lab.peers[k - 1].command(BIN), &text, 123, None)
    };
    // 1: rate limited, a KoD for every other request over the limit; 2: denies stratumd, with a KoD.
    let _rate = upstream_stratumd(1, "[ratelimit]\ninterval = 4\nburst = 1\nleak = 16\nkod = 1\n");
    let _deny = upstream_stratumd(2, "[access]\ndeny = [\"10.91.2.1/32\"]\ndeny-action = \"kod\"\n");
    let _good = lab.chronyd_server(3, 1);
    std::thread::sleep(Duration::from_millis(500));
    let poll = "minpoll = -2\nmaxpoll = 4";
    let body = format!("[clock]\nsource = \"sync\"\n\n{}{}{}", upstream(1, poll), upstream(2, poll), upstream(3, poll));
    let (mut server, control) = lab.stratumd(&body);
    let sources = wait_for(Duration::from_secs(20), "RATE backs off, DENY demobilised", &control, "sources", |s| {
        let rate_ok =
            source_of(s, 1).is_some_and(|x| x["poll"].as_i64().unwrap_or(-2) > -2 && x["state"] != "demobilised");
        let deny_ok = source_of(s, 2).is_some_and(|x| x["state"] == "demobilised" && x["kod"] == "deny");
        rate_ok && deny_ok
    });
    eprintln!("{sources}");
    // The good one is still used.
    wait_for(Duration::from_secs(15), "synchronised to the chronyd", &control, "tracking", |t| {
        t["system_peer"] == Lab::peer_address(3)
    });
    server.stop();
}
