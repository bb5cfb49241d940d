//! The `stratum-bench` binary against small NTP servers made here, on loopback: the exit statuses,
//! the JSON shapes, every counter of `load` (each reply kind provoked on purpose), and the stop rules
//! of `load --ramp` (a fake that answers 1500 requests/s) with its PNG plot. The same
//! binary against the real stratumd is in server/tests/bench_smoke.rs.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use stratum_host::clock::now as now_ntp;
use stratum_proto::{LeapIndicator, NtpDuration, NtpMode, NtpPacket, NtpShort, NtpTimestamp, RefId};

const BIN: &str = env!("CARGO_BIN_EXE_stratum-bench");

/// What a fake server sends back for one request: zero or more datagrams.
type Answer = dyn Fn(&NtpPacket, NtpTimestamp) -> Vec<Vec<u8>> + Send + Sync;

/// A UDP server on 127.0.0.1 that answers with `answer`; stops on drop (and after 30 s anyway).
struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(answer: Box<Answer>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
                let t2 = now_ntp();
                let Some(request) = NtpPacket::parse(&buf[..len]) else { continue };
                for datagram in answer(&request, t2) {
                    let _ = socket.send_to(&datagram, from);
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An honest server reply to `request`: T2 as given, T3 read now.
fn reply(request: &NtpPacket, t2: NtpTimestamp) -> NtpPacket {
    NtpPacket {
        leap: LeapIndicator::NoWarning,
        version: request.version,
        mode: NtpMode::Server,
        stratum: 1,
        poll: 6,
        precision: -25,
        root_delay: NtpShort::from_micros(15_625),
        root_dispersion: NtpShort::from_micros(500),
        ref_id: RefId(*b"GPS\0"),
        reference_timestamp: t2,
        origin_timestamp: request.transmit_timestamp,
        receive_timestamp: t2,
        transmit_timestamp: now_ntp(),
    }
}

fn stratum_bench(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run stratum-bench")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exactly one JSON object on stdout, one line.
fn one_json_object(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(v.is_object(), "{stdout}");
    v
}

#[test]
fn query_json_has_offset_delay_stratum_leap_refid() {
    let server = FakeServer::start(Box::new(|req, t2| vec![reply(req, t2).to_bytes().to_vec()]));
    let out = stratum_bench(&["query", &server.addr.to_string(), "--json", "--timeout", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = one_json_object(&out);
    assert!(v["offset"].as_f64().unwrap().abs() < 0.05, "{v}");
    let delay = v["delay"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&delay), "{v}");
    assert_eq!(v["stratum"], 1);
    assert_eq!(v["leap"], 0);
    assert_eq!(v["refid"], "GPS");
    assert_eq!(v["root_delay"], 0.015625);
    assert!((v["root_dispersion"].as_f64().unwrap() - 0.0005).abs() < 1e-4, "{v}");
    assert_eq!(
        (v["precision_log2"].clone(), v["poll_log2"].clone(), v["poll"].clone()),
        ((-25).into(), 6.into(), 64.0.into())
    );
    assert_eq!(v["synchronized"], true);
}

#[test]
fn query_text_names_every_field() {
    let server = FakeServer::start(Box::new(|req, t2| vec![reply(req, t2).to_bytes().to_vec()]));
    let out = stratum_bench(&["query", &server.addr.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for field in ["offset", "delay", "stratum          1", "refid            GPS", "leap             0 (none)"] {
        assert!(stdout.contains(field), "{field}: {stdout}");
    }
    for field in ["root delay", "root dispersion", "precision        2^-25", "poll             2^6 (64 s)"] {
        assert!(stdout.contains(field), "{field}: {stdout}");
    }
}

/// A server that answers every request with a kiss-o'-death of this code.
fn kod_server(code: &'static [u8; 4]) -> FakeServer {
    FakeServer::start(Box::new(move |req, t2| {
        let kod = NtpPacket { stratum: 0, ref_id: RefId(*code), ..reply(req, t2) };
        vec![kod.to_bytes().to_vec()]
    }))
}

#[test]
fn query_kiss_of_death_exits_2_and_says_what_its_code_asks() {
    let server = kod_server(b"RATE");
    let out = stratum_bench(&["query", &server.addr.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    // Before: nothing on stdout with --json. Now one object naming the outcome and the code.
    let v = one_json_object(&out);
    assert_eq!((v["outcome"].clone(), v["kod_code"].clone()), ("kod".into(), "RATE".into()), "{v}");
    assert_eq!(v["server"], server.addr.to_string(), "{v}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("kiss-o'-death RATE") && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("slow down") && !stderr.contains("stop"), "{stderr}");
    assert_eq!(v["message"].as_str().map(|m| stderr.contains(m)), Some(true), "{v}");

    // DENY and RSTR: the server refuses us (RATE's "slow down" was said of them before).
    for code in [b"DENY", b"RSTR"] {
        let server = kod_server(code);
        let out = stratum_bench(&["query", &server.addr.to_string()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("refuses to serve us: stop") && !stderr.contains("slow down"), "{stderr}");
    }
    // Any other code is named as it is.
    let out = stratum_bench(&["query", &kod_server(b"INIT").addr.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v = one_json_object(&out);
    assert_eq!(v["kod_code"], "INIT", "{v}");
    assert!(v["message"].as_str().unwrap().ends_with("kiss code INIT"), "{v}");
}

#[test]
fn query_json_prints_one_object_on_every_outcome() {
    let outcome = |args: &[&str]| {
        let out = stratum_bench(&[args, &["--json", "--timeout", "0.5"]].concat());
        let v = one_json_object(&out);
        assert_eq!(text(&out.stderr).lines().count(), usize::from(v["outcome"] != "answered"), "{v}");
        (out.status.code(), v)
    };
    let good = FakeServer::start(Box::new(|req, t2| vec![reply(req, t2).to_bytes().to_vec()]));
    let (code, v) = outcome(&["query", &good.addr.to_string()]);
    assert_eq!((code, v["outcome"].clone(), v["stratum"].clone()), (Some(0), "answered".into(), 1.into()), "{v}");

    // Nothing comes back: a timeout.
    let silent = FakeServer::start(Box::new(|_, _| vec![]));
    let (code, v) = outcome(&["query", &silent.addr.to_string()]);
    assert_eq!((code, v["outcome"].clone(), v["ignored"].clone()), (Some(1), "timeout".into(), 0.into()), "{v}");
    assert!(v["message"].as_str().unwrap().contains("no valid reply"), "{v}");

    // Only replies that fail the checks: invalid.
    let foreign = FakeServer::start(Box::new(|req, t2| {
        vec![NtpPacket { origin_timestamp: NtpTimestamp::from_bits(42), ..reply(req, t2) }.to_bytes().to_vec()]
    }));
    let (code, v) = outcome(&["query", &foreign.addr.to_string()]);
    assert_eq!((code, v["outcome"].clone(), v["ignored"].clone()), (Some(1), "invalid".into(), 1.into()), "{v}");
    assert!(v["message"].as_str().unwrap().contains("origin"), "{v}");

    // A closed port, and a name that does not resolve.
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, v) = outcome(&["query", &format!("127.0.0.1:{port}")]);
    assert_eq!((code, v["outcome"].clone()), (Some(1), "refused".into()), "{v}");
    let (code, v) = outcome(&["query", "127.0.0.1:notaport"]);
    assert_eq!(
        (code, v["outcome"].clone(), v["server"].clone()),
        (Some(1), "error".into(), "127.0.0.1:notaport".into())
    );
}

#[test]
fn query_of_an_unsynchronised_server_exits_3_and_prints_its_reply() {
    // LI 3 at stratum 16, LI 3 alone, stratum 16 alone: each says the clock is not synchronised.
    let cases =
        [(LeapIndicator::Unsynchronized, 16), (LeapIndicator::Unsynchronized, 2), (LeapIndicator::NoWarning, 16)];
    for (leap, stratum) in cases {
        let server = FakeServer::start(Box::new(move |req, t2| {
            vec![NtpPacket { leap, stratum, ..reply(req, t2) }.to_bytes().to_vec()]
        }));
        let out = stratum_bench(&["query", &server.addr.to_string(), "--json"]);
        assert_eq!(out.status.code(), Some(3), "{leap:?} {stratum}: {}", text(&out.stderr));
        let v = one_json_object(&out);
        assert_eq!(v["outcome"], "unsynchronised", "{v}");
        assert_eq!((v["stratum"].clone(), v["synchronized"].clone()), (stratum.into(), false.into()), "{v}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("is not synchronised") && stderr.lines().count() == 1, "{stderr}");
    }
    // In text too: the reply is printed, the status says what it is.
    let server = FakeServer::start(Box::new(|req, t2| {
        vec![NtpPacket { leap: LeapIndicator::Unsynchronized, stratum: 16, ..reply(req, t2) }.to_bytes().to_vec()]
    }));
    let out = stratum_bench(&["query", &server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains("leap             3 (unsynchronised)"), "{}", text(&out.stdout));
    // --help names the status.
    let help = text(&stratum_bench(&["query", "--help"]).stdout);
    assert!(help.contains("3 on an unsynchronised one"), "{help}");
}

#[test]
fn query_ignores_invalid_packets_and_takes_the_valid_reply() {
    // First a reply with someone else's origin, a client-mode echo and a runt, then the real one.
    let server = FakeServer::start(Box::new(|req, t2| {
        let good = reply(req, t2);
        let foreign = NtpPacket { origin_timestamp: good.origin_timestamp.add(NtpDuration::from_bits(1)), ..good };
        let echo = NtpPacket { mode: NtpMode::Client, ..good };
        vec![foreign.to_bytes().to_vec(), echo.to_bytes().to_vec(), vec![0x24; 20], good.to_bytes().to_vec()]
    }));
    let out = stratum_bench(&["query", &server.addr.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(one_json_object(&out)["refid"], "GPS");
}

#[test]
fn query_without_a_valid_reply_exits_1_and_says_why() {
    let server = FakeServer::start(Box::new(|req, t2| {
        let wrong = NtpPacket { origin_timestamp: NtpTimestamp::from_bits(42), ..reply(req, t2) };
        vec![wrong.to_bytes().to_vec()]
    }));
    let started = Instant::now();
    let out = stratum_bench(&["query", &server.addr.to_string(), "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no valid reply") && stderr.contains("origin"), "{stderr}");

    // A closed port: refused at once, not after the timeout.
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let out = stratum_bench(&["query", &format!("127.0.0.1:{port}"), "--timeout", "10"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5), "{}", text(&out.stderr));
}

#[test]
fn load_refuses_a_non_loopback_target_in_one_line() {
    let out = stratum_bench(&["load", "--target", "192.0.2.1:123", "--rate", "100", "--duration", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--i-own-this-target"), "{stderr}");
}

/// The low 32 bits of a load request's transmit timestamp: its sequence number.
fn seq(request: &NtpPacket) -> u64 {
    request.transmit_timestamp.to_bits() & 0xffff_ffff
}

#[test]
fn load_counts_each_kind_of_reply() {
    // By sequence number mod 8: 0 valid, 1 valid + a duplicate, 2 T2 before the request was sent,
    // 3 T3 before T2, 4 KoD, 5 unsynchronised, 6 no reply, 7 49 bytes.
    let server = FakeServer::start(Box::new(|req, t2| {
        let good = reply(req, t2);
        let second = NtpDuration::from_seconds(1);
        let datagram = |p: NtpPacket| p.to_bytes().to_vec();
        match seq(req) % 8 {
            0 => vec![datagram(good)],
            1 => vec![datagram(good), datagram(good)],
            2 => vec![datagram(NtpPacket {
                receive_timestamp: t2.add(NtpDuration::from_bits(-second.to_bits())),
                ..good
            })],
            3 => vec![datagram(NtpPacket { transmit_timestamp: t2.add(NtpDuration::from_nanos(-1_000_000)), ..good })],
            4 => vec![datagram(NtpPacket { stratum: 0, ref_id: RefId(*b"RATE"), ..good })],
            5 => vec![datagram(NtpPacket { leap: LeapIndicator::Unsynchronized, stratum: 16, ..good })],
            6 => vec![],
            _ => {
                let mut long = datagram(good);
                long.push(0);
                vec![long]
            }
        }
    }));
    // 2000/s in batches of 64: one batch every 32 ms, 10 batches in 0.3 s. KoD and unsynchronised
    // replies are provoked on purpose here, so accepted (else the run exits 2, see below).
    let out = stratum_bench(&[
        "load",
        "--target",
        &server.addr.to_string(),
        "--rate",
        "2000",
        "--duration",
        "0.3",
        "--sockets",
        "4",
        "--json",
        "--accept-kod",
        "--accept-unsynced",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = one_json_object(&out);
    let n = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {v}"));
    let sent = n("sent");
    assert!(sent > 0 && sent % 64 == 0, "{v}");
    let per_kind = sent / 8;
    assert_eq!(n("valid"), 2 * per_kind, "{v}");
    assert_eq!(n("duplicate"), per_kind, "{v}");
    assert_eq!(n("invalid_t2_window"), per_kind, "{v}");
    assert_eq!(n("invalid_t3_window"), per_kind, "{v}");
    assert_eq!((n("kod"), n("kod_rate"), n("kod_deny_rstr")), (per_kind, per_kind, 0), "{v}");
    assert_eq!(n("unsynced"), per_kind, "{v}");
    assert_eq!(n("invalid_length"), per_kind, "{v}");
    assert_eq!(n("invalid"), 4 * per_kind, "{v}");
    assert_eq!(n("received"), 8 * per_kind, "{v}");
    // Answered: every kind but "no reply" and the 49-byte one, which cannot be trusted to name its request.
    assert_eq!(n("answered"), 6 * per_kind, "{v}");
    assert_eq!(v["loss_pct"], 25.0, "{v}");
    assert_eq!((n("invalid_origin"), n("invalid_header"), n("invalid_late")), (0, 0, 0), "{v}");
    assert!(n("rtt_p50_ns") > 0 && n("rtt_p50_ns") <= n("rtt_p99_ns") && n("rtt_p99_ns") <= n("rtt_max_ns"), "{v}");
    assert!(n("turnaround_p50_ns") <= n("turnaround_p99_ns"), "{v}");
    for key in ["offered_rate", "send_rate", "achieved_reply_rate", "rtt_p50_us", "rtt_p99_us", "client_socket_drops"] {
        assert!(v[key].is_number(), "{key}: {v}");
    }
}

/// A server that answers one request in four, by sequence number, and the rest with `over`:
/// what a `[ratelimit]` does to one source address.
fn limiter(over: fn(&NtpPacket, NtpTimestamp) -> Vec<Vec<u8>>) -> FakeServer {
    FakeServer::start(Box::new(move |req, t2| {
        if seq(req) % 4 == 0 {
            vec![reply(req, t2).to_bytes().to_vec()]
        } else {
            over(req, t2)
        }
    }))
}

/// `load --json` for 0.3 s at 2000/s against `server`, with `extra` flags.
fn load_json(server: &FakeServer, extra: &[&str]) -> (Option<i32>, Value, String) {
    let target = server.addr.to_string();
    let args = ["load", "--target", &target, "--rate", "2000", "--duration", "0.3", "--sockets", "2", "--json"];
    let out = stratum_bench(&[&args[..], extra].concat());
    // The report is printed whatever the status.
    (out.status.code(), one_json_object(&out), text(&out.stderr))
}

#[test]
fn load_against_a_silent_rate_limiter_exits_2_with_its_report() {
    // The shipped configs: 3 in 4 requests dropped by the server, no KoD. This run used to exit 0
    // with loss_pct 75, as if the server could not carry 2000 requests/s.
    let server = limiter(|_, _| vec![]);
    let (code, v, stderr) = load_json(&server, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!((v["loss_pct"].clone(), v["kod"].clone()), (75.0.into(), 0.into()), "{v}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("the server rate-limits this load") && stderr.contains("--accept-ratelimit"), "{stderr}");
    assert!(stderr.contains("turn [ratelimit] off on the server under test"), "{stderr}");
    let (code, v, stderr) = load_json(&server, &["--accept-ratelimit"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(v["loss_pct"], 75.0, "{v}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn load_against_kiss_o_death_exits_2_and_names_the_code() {
    // A limiter that says so: KoD RATE to 3 in 4.
    let server = limiter(|req, t2| {
        vec![NtpPacket { stratum: 0, ref_id: RefId(*b"RATE"), ..reply(req, t2) }.to_bytes().to_vec()]
    });
    let (code, v, stderr) = load_json(&server, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let kod = v["kod_rate"].as_u64().unwrap();
    assert!(kod > 0 && v["kod"] == kod, "{v}");
    assert!(stderr.contains(&format!("the server rate-limits this load: {kod} KoD RATE replies")), "{stderr}");
    assert_eq!(load_json(&server, &["--accept-ratelimit"]).0, Some(0));
    assert_eq!(load_json(&server, &["--accept-kod"]).0, Some(0));

    // DENY: the server refuses us; accepting rate limiting does not cover it.
    let server = limiter(|req, t2| {
        vec![NtpPacket { stratum: 0, ref_id: RefId(*b"DENY"), ..reply(req, t2) }.to_bytes().to_vec()]
    });
    let (code, v, stderr) = load_json(&server, &["--accept-ratelimit"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(v["kod_deny_rstr"].as_u64().unwrap() > 0, "{v}");
    assert!(stderr.contains("the server refuses this load") && stderr.contains("--accept-kod"), "{stderr}");
    assert_eq!(load_json(&server, &["--accept-kod"]).0, Some(0));
}

#[test]
fn load_against_an_unsynchronised_server_exits_3_with_its_report() {
    let server = FakeServer::start(Box::new(|req, t2| {
        vec![NtpPacket { leap: LeapIndicator::Unsynchronized, stratum: 16, ..reply(req, t2) }.to_bytes().to_vec()]
    }));
    let (code, v, stderr) = load_json(&server, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(v["unsynced"].as_u64().unwrap() > 0 && v["loss_pct"] == 0.0, "{v}");
    assert!(stderr.contains("the server is not synchronised") && stderr.contains("--accept-unsynced"), "{stderr}");
    assert_eq!(load_json(&server, &["--accept-unsynced"]).0, Some(0));
}

#[test]
fn ramp_against_a_rate_limiter_or_an_unsynchronised_server_exits_non_zero_with_its_report() {
    let target_args = |server: &FakeServer, extra: &[&str]| {
        let target = server.addr.to_string();
        let args = ["load", "--target", &target, "--ramp", "1000,2,0.3", "--max-steps", "2"];
        let out = stratum_bench(
            &[&args[..], &["--refine", "0", "--settle", "0", "--sockets", "2", "--json"], extra].concat(),
        );
        (out.status.code(), one_json_object(&out), text(&out.stderr))
    };
    // A silent limiter: the first step already loses 75 %, so "sustainable: 0" was the server's
    // rate limiter, not its capacity.
    let server = limiter(|_, _| vec![]);
    let (code, v, stderr) = target_args(&server, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!((v["stopped_because"].clone(), v["sustainable_rate"].clone()), ("loss".into(), 0.into()), "{v}");
    assert!(stderr.contains("the server rate-limits this load"), "{stderr}");
    assert_eq!(target_args(&server, &["--accept-ratelimit"]).0, Some(0));

    // Unsynchronised replies: no step is sustainable, unless accepted.
    let server = FakeServer::start(Box::new(|req, t2| {
        vec![NtpPacket { leap: LeapIndicator::Unsynchronized, stratum: 16, ..reply(req, t2) }.to_bytes().to_vec()]
    }));
    let (code, v, stderr) = target_args(&server, &[]);
    assert_eq!((code, v["sustainable_rate"].clone()), (Some(3), 0.into()), "{stderr}");
    assert!(stderr.contains("--accept-unsynced"), "{stderr}");
    let (code, v, stderr) = target_args(&server, &["--accept-unsynced"]);
    assert_eq!(
        (code, v["sustainable_rate"].clone(), v["unsynced_ok"].clone()),
        (Some(0), 2000.into(), true.into()),
        "{stderr}"
    );
}

/// Runs a ramp with `extra` flags against `server` and returns its one JSON object.
fn ramp_json(server: &FakeServer, ramp: &str, extra: &[&str]) -> Value {
    let target = server.addr.to_string();
    let args = [&["load", "--target", &target, "--ramp", ramp, "--sockets", "2", "--settle", "50", "--json"], extra];
    let out = stratum_bench(&args.concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "no progress lines with --json: {}", text(&out.stderr));
    one_json_object(&out)
}

#[test]
fn ramp_stops_past_the_loss_threshold_of_a_server_that_answers_1500_per_second() {
    // A token bucket: 1500 replies/s, bursts of 256 (four batches, so the generator's jitter at
    // 1000/s never drains it). At 1000/s every request is answered; at 4000/s about half are lost.
    let bucket = std::sync::Mutex::new((256.0f64, Instant::now()));
    let server = FakeServer::start(Box::new(move |req, t2| {
        let mut b = bucket.lock().unwrap();
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * 1500.0).min(256.0);
        b.1 = now;
        if b.0 < 1.0 {
            return vec![];
        }
        b.0 -= 1.0;
        vec![reply(req, t2).to_bytes().to_vec()]
    }));
    // ntpperf's plain ramp: one try a step, no refinement.
    let started = Instant::now();
    let v = ramp_json(&server, "1000,4,0.3", &["--tries", "1", "--refine", "0"]);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(v["target"], server.addr.to_string(), "{v}");
    assert_eq!(v["stopped_because"], "loss", "{v}");
    assert_eq!(v["sustainable_rate"], 1000, "{v}");
    assert_eq!(v["sustainable_rate_is_lower_bound"], false, "the ramp found the limit: {v}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{v}");
    assert_eq!((steps[0]["offered"].clone(), steps[1]["offered"].clone()), (1000.into(), 4000.into()), "{v}");
    let f = |s: &Value, key: &str| s[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {s}"));
    assert!(f(&steps[0], "loss_pct") < 1.0, "{v}");
    assert!(f(&steps[1], "loss_pct") > 5.0, "{v}");
    for s in steps {
        for key in ["offered", "sent", "answered", "answered_rate", "rtt_p50_ns", "rtt_p99_ns"] {
            assert!(s[key].as_u64().is_some(), "{key}: {s}");
        }
        for key in ["loss_pct", "kod_pct", "invalid_pct"] {
            assert!(f(s, key) >= 0.0, "{key}: {s}");
        }
        assert!(s["turnaround_p50_ns"].as_u64().unwrap() <= s["turnaround_p99_ns"].as_u64().unwrap(), "{s}");
        assert!(s["sent"].as_u64().unwrap() > 0 && s["answered"].as_u64().unwrap() > 0, "{s}");
    }
    assert_eq!(v["attempts"], v["steps"], "one try a step: {v}");

    // With tries and refinement: 4000/s fails both its tries, then the rate is bisected between
    // 1000 and 4000 (geometric midpoints, from 2000) until the bracket is at most 10 % wide. The
    // bucket's burst carries a 0.3 s step up to about 1500 + 256 / 0.3 = 2350/s.
    let v = ramp_json(&server, "1000,4,0.3", &["--tries", "2", "--refine", "10"]);
    assert_eq!(
        (v["stopped_because"].clone(), v["tries"].clone(), v["refine_pct"].clone()),
        ("loss".into(), 2.into(), 10.0.into())
    );
    let (steps, attempts) = (v["steps"].as_array().unwrap(), v["attempts"].as_array().unwrap());
    let of = |s: &Value, key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {s}"));
    let at_4000: Vec<&Value> = attempts.iter().filter(|a| of(a, "offered") == 4000).collect();
    assert_eq!(at_4000.len(), 2, "{v}");
    assert!(at_4000.iter().all(|a| f(a, "loss_pct") > 5.0) && of(at_4000[1], "attempt") == 2, "{v}");
    let refined: Vec<u64> = steps.iter().filter(|s| s["phase"] == "refine").map(|s| of(s, "offered")).collect();
    assert_eq!(refined.first(), Some(&2000), "{v}");
    assert!(refined.iter().all(|&r| 1000 < r && r < 4000), "{v}");
    let sustainable = of(&v, "sustainable_rate");
    assert!((1414..2828).contains(&sustainable), "{v}");
    let clean = |s: &&Value| f(s, "loss_pct") < 1.0 && of(s, "invalid") == 0;
    assert_eq!(steps.iter().filter(clean).map(|s| of(s, "offered")).max(), Some(sustainable), "{v}");
    let above = steps.iter().map(|s| of(s, "offered")).filter(|&r| r > sustainable).min().unwrap();
    assert!(above as f64 <= sustainable as f64 * 1.1, "the bracket ends at most 10 % wide: {v}");
    assert!(attempts.len() >= steps.len(), "{v}");
}

#[test]
fn ramp_stops_at_max_rate_and_max_steps_and_draws_a_png() {
    let server = FakeServer::start(Box::new(|req, t2| vec![reply(req, t2).to_bytes().to_vec()]));
    let dir = std::env::temp_dir().join(format!("stratum-bench-ramp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("ramp.png");
    let v = ramp_json(&server, "1000,2,0.3", &["--max-rate", "2500", "--plot", png.to_str().unwrap()]);
    assert_eq!(v["stopped_because"], "max_rate", "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["sustainable_rate"], 2000, "{v}");
    // Every step was clean: the server's limit lies above, and the report says so.
    assert_eq!(v["sustainable_rate_is_lower_bound"], true, "{v}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    std::fs::remove_dir_all(&dir).unwrap();

    // --max-steps, in text: one row a step, then the stop reason and the sustainable rate.
    let target = server.addr.to_string();
    let out = stratum_bench(&["load", "--target", &target, "--ramp", "1000,2,0.3", "--max-steps", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let bound = "sustainable: at least 1000/s (the ramp stopped after --max-steps 1, not at the server's limit)\n";
    assert!(stdout.ends_with(&format!("stopped because: max_steps\n{bound}")), "{stdout}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert_eq!(text(&out.stderr).lines().count(), 1, "one progress line: {}", text(&out.stderr));

    // The loopback rule holds for ramps.
    let out = stratum_bench(&["load", "--target", "192.0.2.1:123", "--ramp", "1000,2,0.3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--i-own-this-target"), "{}", text(&out.stderr));
}

#[test]
fn load_with_cores_runs_one_pinned_thread_per_core_and_adds_their_counts() {
    let cores: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    let [a, b, ..] = cores[..] else {
        eprintln!("skipped: this test needs two cores to pin to, found {cores:?}");
        return;
    };
    let server = FakeServer::start(Box::new(|req, t2| vec![reply(req, t2).to_bytes().to_vec()]));
    let list = format!("{a},{b}");
    // 2000/s over two threads: each sends a batch of 64 every 64 ms, 5 batches in 0.3 s.
    let target = server.addr.to_string();
    let args = ["load", "--target", &target, "--rate", "2000", "--duration", "0.3", "--sockets", "3", "--cores", &list];
    let out = stratum_bench(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = one_json_object(&out);
    assert_eq!(
        (v["threads"].clone(), v["cores"].clone(), v["core"].clone()),
        (2.into(), vec![a, b].into(), Value::Null)
    );
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent % 64 == 0 && sent <= 12 * 64, "{v}");
    assert_eq!(
        (v["valid"].as_u64(), v["answered"].as_u64(), v["invalid"].as_u64()),
        (Some(sent), Some(sent), Some(0)),
        "{v}"
    );
    assert_eq!(v["loss_pct"], 0.0, "{v}");
    // Text names the cores.
    let out = stratum_bench(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("cores {list} (2 threads)")), "{}", text(&out.stdout));
}

#[test]
fn ramp_stops_when_the_generator_falls_behind_twice_in_a_row() {
    // Nobody reads this socket: every request is lost, and --max-loss 100 lets the ramp go on
    // anyway. No generator offers 4 M and then 6 M requests/s from one thread with every reply
    // checked, so both steps fall behind and the ramp ends there, before its third step.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap().to_string();
    let args = ["load", "--target", &target, "--ramp", "4000000,1.5,0.1", "--max-steps", "3", "--max-loss", "100"];
    let out = stratum_bench(&[&args[..], &["--settle", "0", "--sockets", "2", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = one_json_object(&out);
    assert_eq!(v["stopped_because"], "generator_behind", "{v}");
    assert_eq!(v["sustainable_rate"], 0, "{v}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{v}");
    assert!(steps.iter().all(|s| s["generator_behind"] == true), "{v}");
}

/// bench/compare (the side-by-side benchmark script) is never run here, as no benchmark is: only
/// its syntax and its --help, which exits before anything is checked or created.
#[test]
fn compare_script_parses_and_prints_its_help() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/compare");
    let syntax = Command::new("bash").args(["-n", script]).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let help = Command::new(script).arg("--help").output().unwrap();
    assert!(help.status.success(), "{}", text(&help.stderr));
    let usage = text(&help.stdout);
    for option in [
        "--runs",
        "--ramp",
        "--tries",
        "--refine",
        "--server-core",
        "--client-core",
        "--queues",
        "--only",
        "--nts",
        "--out",
    ] {
        assert!(usage.contains(option), "{option} missing: {usage}");
    }
    let bad = Command::new(script).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("unknown option: --frobnicate"), "{}", text(&bad.stderr));
}

/// bench/scale (bench/compare at 1, 2, 4 and 8 queues) likewise: syntax, --help, a wrong option.
#[test]
fn scale_script_parses_and_prints_its_help() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scale");
    let syntax = Command::new("bash").args(["-n", script]).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let help = Command::new(script).arg("--help").output().unwrap();
    assert!(help.status.success(), "{}", text(&help.stderr));
    let usage = text(&help.stdout);
    for option in ["--queues", "--runs", "--gen-cores", "--engine", "--nts", "--out"] {
        assert!(usage.contains(option), "{option} missing: {usage}");
    }
    let bad = Command::new(script).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("unknown option: --frobnicate"), "{}", text(&bad.stderr));
}
