//! stratum-bench against the real stratumd binary, on a free loopback port, in seconds: `query
//! --json` and a 1-second `load --rate 2000 --json` (issue 5's CI smoke; never a benchmark).
//!
//! Why this lives here and calls a library function: a test can only start a binary of its own
//! package by a path cargo guarantees is fresh (`CARGO_BIN_EXE_stratumd`), stable cargo cannot
//! build another package's binary for a test (artifact dependencies are unstable), and a test must
//! not run `cargo build` itself. Looking for `target/debug/stratumd` from a bench test would work
//! under `cargo test --workspace` but find a missing or stale binary under `cargo test -p
//! stratum-bench`. So the smoke test sits with the binary it starts, and runs stratum-bench through
//! `stratum_bench::cli::run`, the function the `stratum-bench` binary's `main` hands its arguments
//! to, compiled from source with this test (a dev-dependency; nothing depends on stratumd). The
//! binary's own behaviour (exit statuses, stdout) is tested in bench/tests/cli.rs.

mod common;

use common::*;
use serde_json::Value;

/// Runs `stratum-bench ARGS` in this process: (exit status, stdout, stderr).
fn stratum_bench(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        stratum_bench::cli::run(std::iter::once("stratum-bench").chain(args.iter().copied()), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn one_json_object(stdout: &str) -> Value {
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(v.is_object(), "{stdout}");
    v
}

#[test]
fn query_and_load_against_stratumd() {
    let port = free_port();
    let clock = "source = \"local\"\nstratum = 2\nrefid = \"192.0.2.7\"";
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 1, clock), port);
    let target = format!("127.0.0.1:{port}");

    let (code, out, err) = stratum_bench(&["query", &target, "--json"]);
    assert_eq!(code, 0, "{err}");
    let q = one_json_object(&out);
    assert_eq!(q["stratum"], 2, "{q}");
    assert_eq!(q["leap"], 0, "{q}");
    assert_eq!(q["refid"], "192.0.2.7", "{q}");
    let offset = q["offset"].as_f64().unwrap();
    assert!(offset.abs() < 0.05, "offset {offset} s: {q}");
    let delay = q["delay"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&delay), "delay {delay} s: {q}");

    // No [ratelimit] section: rate limiting is off, so every request is answered.
    let (code, out, err) = stratum_bench(&["load", "--target", &target, "--rate", "2000", "--duration", "1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let l = one_json_object(&out);
    let n = |key: &str| l[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {l}"));
    assert!(n("sent") >= 1900, "{l}");
    assert!(n("received") > 0 && n("received") == n("valid"), "every reply valid: {l}");
    assert_eq!((n("kod"), n("invalid"), n("unsynced")), (0, 0, 0), "{l}");
    assert_eq!((n("invalid_t2_window"), n("invalid_t3_window")), (0, 0), "{l}");
    assert!(l["loss_pct"].as_f64().unwrap() < 1.0, "{l}");
    assert!(n("rtt_p50_ns") > 0 && n("rtt_p50_ns") <= n("rtt_p99_ns"), "{l}");
    assert!(n("turnaround_p99_ns") < 1_000_000_000, "{l}");

    // stratumd's own count agrees: every valid reply we saw, it counted as answered.
    let log = server.stop_output();
    let summary = log.lines().find(|l| l.contains("stopped: ")).unwrap_or_else(|| panic!("{log}"));
    let answered: u64 = summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("answered="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    // (It also answered the harness's readiness probe and the query.)
    assert!(answered > n("valid"), "stratumd answered {answered}: {l}");
}
