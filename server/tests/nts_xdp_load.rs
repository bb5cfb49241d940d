//! `stratum-bench load --engine xdp --nts-ke` (issue 16, the AF_XDP generator's NTS) against a
//! real stratumd with `[nts]` and `backend = "xdp"`, over a veth pair between two network
//! namespaces the test creates: one NTS-KE over TCP, then a second of NTS requests as raw frames
//! from simulated clients, each renumbered and sealed again; the replies must be authentic (their
//! authenticators open with S2C), none a NAK or invalid, and the server must have sealed at least
//! as many. Needs root and the `xdp` feature (which also builds stratum-bench's AF_XDP engine);
//! skips with a reason when not root, fails when CI is set.
//!
//! The generator runs in its own namespace as a process, because the AF_XDP engine reads its
//! interface from /sys/class/net, which shows the namespace of whoever mounted it: `ip netns exec`
//! mounts the namespace's own. That process is this test binary run again, its one test
//! [`stratum_bench_in_the_generator_namespace`] calling `stratum_bench::cli::run` (the function
//! the stratum-bench binary's main calls, compiled with this test, so never stale: see
//! tests/bench_smoke.rs for why a test cannot start the stratum-bench binary itself).
#![cfg(feature = "xdp")]

mod common;

use std::time::Duration;

use common::*;
use stratum_proto::nts::{KeySet, MasterKey};

/// Set in the environment of the generator's process: stratum-bench's arguments, one a line.
const ARGS_VAR: &str = "STRATUM_TEST_BENCH_ARGS";
/// The generator's JSON report follows this on its stdout.
const REPORT: &str = "stratum-bench report: ";

/// Not a test of its own: the generator's entry point when [`an_xdp_nts_load_against_stratumd`]
/// runs this binary again in the generator's namespace (with [`ARGS_VAR`] set); without the
/// variable it returns at once.
#[test]
fn stratum_bench_in_the_generator_namespace() {
    let Ok(args) = std::env::var(ARGS_VAR) else { return };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = stratum_bench::cli::run(std::iter::once("stratum-bench").chain(args.lines()), &mut out, &mut err);
    eprint!("{}", String::from_utf8_lossy(&err));
    for line in String::from_utf8_lossy(&out).lines() {
        println!("{REPORT}{line}");
    }
    println!("stratum-bench exit: {code}");
}

#[test]
fn an_xdp_nts_load_against_stratumd() {
    if !require(is_root(), "the xdp backend and the AF_XDP generator need root (XDP, AF_XDP, network namespaces)")
        || !require(have_tool("ip") && have_tool("openssl"), "ip or openssl is missing (scripts/test installs them)")
    {
        return;
    }
    let (srv, gen) = (Netns::new("ntsls"), Netns::new("ntslg"));
    let net = (std::process::id() % 200) as u8 + 11;
    let (server_ip, gen_ip) = (format!("10.89.{net}.1"), format!("10.89.{net}.2"));
    srv.link("ls", &format!("{server_ip}/24"), &gen, "lg", &format!("{gen_ip}/24"));
    // The generator's simulated clients (10.200.0.0/16) live behind its end.
    run_ok(std::process::Command::new("ip").args(["-n", &srv.name, "route", "add", "10.200.0.0/16", "via", &gen_ip]));
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), &server_ip);
    let masterfile = dir.path().join("nts.keys");
    std::fs::write(&masterfile, KeySet::new(MasterKey { id: 4, key: [0x47; 32] }, 3).to_text()).unwrap();
    let metrics: std::net::SocketAddr = format!("{server_ip}:9123").parse().unwrap();
    let text = format!(
        "[server]\nbackend = \"xdp\"\ninterface = \"ls\"\nport = 123\nxdp-mode = \"auto\"\n\n\
         [clock]\nsource = \"local\"\nstratum = 2\n\n[metrics]\nlisten = \"{metrics}\"\n\n\
         [nts]\nmaster-keys = \"{}\"\nlisten = \"{server_ip}:4460\"\ncertificate = \"{}\"\nprivate-key = \"{}\"\n",
        masterfile.display(),
        cert.display(),
        key.display()
    );
    let mut server = Server::start_with(srv.command(BIN), &text, 123, None);
    // The KE listener and the XDP program take a moment (seconds on a loaded host).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scrape_in(&srv, metrics).is_none() {
        assert!(std::time::Instant::now() < deadline, "stratumd's /metrics never came up");
        std::thread::sleep(Duration::from_millis(200));
    }

    let load = |ca: &std::path::Path, rate: &str| {
        let args = [
            "load",
            "--target",
            &format!("{server_ip}:123"),
            "--i-own-this-target",
            "--engine",
            "xdp",
            "--interface",
            "lg",
            "--clients",
            "64",
            "--rate",
            rate,
            "--duration",
            "1",
            "--nts-ke",
            &format!("{server_ip}:4460"),
            "--nts-ca",
            &ca.display().to_string(),
            "--json",
        ]
        .join("\n");
        let exe = std::env::current_exe().unwrap();
        let out = gen
            .command(exe.to_str().unwrap())
            .args(["stratum_bench_in_the_generator_namespace", "--exact", "--nocapture", "--test-threads", "1"])
            .env(ARGS_VAR, args)
            .output()
            .expect("run the generator");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        // The harness may print "test ... " before either on the same line.
        let after = |mark: &str| stdout.lines().find_map(|l| l.split_once(mark)).map(|(_, r)| r.trim().to_string());
        let (code, report) = (after("stratum-bench exit: "), after(REPORT));
        (code.unwrap_or_else(|| panic!("the generator did not run: {all}")), report, all)
    };

    // The first load also waits out the XDP program's attach: a step that found no server yet
    // is tried again.
    let report = loop {
        let (code, report, all) = load(&ca, "2000");
        let v: serde_json::Value =
            report.as_deref().map(|r| serde_json::from_str(r).expect("JSON")).unwrap_or_default();
        if code == "0" || std::time::Instant::now() >= deadline {
            assert_eq!(code, "0", "{all}");
            assert!(v.is_object(), "no report: {all}");
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(report["engine"], "xdp", "{report}");
    let valid = assert_authentic_nts_load(&report, 1900);
    assert!(
        auth_replies_in(&scrape_in(&srv, metrics).expect("/metrics"), "nts") >= valid,
        "the server sealed each: {report}"
    );

    // A CA that does not vouch for the KE server: the KE, and so the load, fails (exit 1).
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certificates(other.path(), &server_ip);
    let (code, _, all) = load(&other_ca, "100");
    assert_eq!(code, "1", "{all}");
    assert!(all.contains("NTS-KE"), "{all}");
    let log = server.stop_output();
    assert!(log.contains("backend=\"xdp\""), "it ran the xdp backend: {log}");
}
