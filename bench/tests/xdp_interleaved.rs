//! `load --interleaved --engine xdp` over a veth pair between two network namespaces the test
//! creates (removed on drop), against a kernel UDP responder that answers as an interleaved
//! server does (RFC 9769, chrony's rules: a request whose origin is one of its receive
//! timestamps, with receive != transmit, gets the transmit time of that earlier reply). Needs root
//! and the `xdp` feature; skips with a reason when not root, fails when CI is set.
#![cfg(feature = "xdp")]

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_stratum-bench");

fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: needs root, and CI is set");
    eprintln!("skipping {test}: needs root (network namespaces, XDP and AF_XDP)");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Namespaces `gen` and `srv` joined by veth (10.N.M.1 - .2), the simulated clients routed back
/// to the generator (as tests/xdp_engine.rs sets them up).
struct Pair {
    gen: String,
    srv: String,
    gen_if: String,
    v4: [String; 2],
}

impl Pair {
    fn new() -> Self {
        let n = std::process::id();
        let (gen, srv) = (format!("sbxig{n}"), format!("sbxis{n}"));
        let (gen_if, srv_if) = (format!("sbxig{}", n % 100_000), format!("sbxis{}", n % 100_000));
        let (a, b) = ((n >> 8) % 200 + 20, (n + 7) % 256);
        let v4 = [format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2")];
        let pair = Self { gen, srv, gen_if: gen_if.clone(), v4 };
        for ns in [&pair.gen, &pair.srv] {
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", &gen_if, "type", "veth", "peer", "name", &srv_if]);
        for (ns, dev, i) in [(&pair.gen, &gen_if, 0), (&pair.srv, &srv_if, 1)] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{}/24", pair.v4[i]), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &pair.srv, "route", "add", "10.200.0.0/16", "via", &pair.v4[0]]);
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// An interleaved responder on `addr` in namespace `ns` (a thread that joined it), until `stop`:
/// T2 = now with its LSB set, T3 = now with it clear, read before the send (no kernel stamp: the
/// generator measures what it gets). Returns (replies, interleaved replies).
fn interleaved_responder(ns: &str, addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let ns = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("the namespace's handle");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns with an open namespace fd; it moves only this thread.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let socket = std::net::UdpSocket::bind(&addr).expect("bind the responder");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        ready_tx.send(()).unwrap();
        let now = || stratum_host::clock::now().to_bits();
        // Receive timestamp -> transmit time of our replies; bounded.
        let mut sent: HashMap<u64, u64> = HashMap::new();
        let (mut buf, mut replies, mut interleaved) = ([0u8; 64], 0, 0);
        while !stop.load(Ordering::Relaxed) {
            let Ok((48, from)) = socket.recv_from(&mut buf) else { continue };
            let t2 = now() | 1;
            let field = |b: &[u8; 64], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
            let (origin, receive, transmit) = (field(&buf, 24), field(&buf, 32), field(&buf, 40));
            let earlier = (origin & 1 == 1 && receive != transmit).then(|| sent.remove(&origin)).flatten();
            buf[0] = 0x24;
            buf[1] = 2;
            buf[24..32].copy_from_slice(&if earlier.is_some() { receive } else { transmit }.to_be_bytes());
            buf[32..40].copy_from_slice(&t2.to_be_bytes());
            let t3 = now() & !1;
            buf[40..48].copy_from_slice(&earlier.unwrap_or(t3).to_be_bytes());
            if sent.len() > 100_000 {
                sent.clear();
            }
            sent.insert(t2, t3);
            if socket.send_to(&buf[..48], from).is_ok() {
                replies += 1;
                interleaved += u64::from(earlier.is_some());
            }
        }
        (replies, interleaved)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("the responder is ready");
    handle
}

#[test]
fn the_xdp_engine_measures_the_t3_error_of_interleaved_replies() {
    if !require_root("xdp engine in interleaved mode") {
        return;
    }
    let pair = Pair::new();
    let stop = Arc::new(AtomicBool::new(false));
    let target = format!("{}:11123", pair.v4[1]);
    let responder = interleaved_responder(&pair.srv, target.clone(), stop.clone());
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.gen, BIN, "load", "--engine", "xdp", "--interface", &pair.gen_if])
        .args(["--target", &target, "--i-own-this-target", "--rate", "5000", "--duration", "1.5"])
        .args(["--clients", "1000", "--interleaved", "--json"])
        .output()
        .expect("run the load");
    stop.store(true, Ordering::Relaxed);
    let (replies, interleaved) = responder.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "load failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("load JSON {stdout:?}: {e}"));
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    let il = &r["interleaved"];
    // 64 chains at 5000/s: each client's first reply is basic, nearly every other interleaved.
    assert_eq!((n(&r, "valid"), n(&r, "invalid")), (n(&r, "received"), 0), "{r}");
    assert!(n(&r, "sent") >= 7_000 && n(&r, "received") * 100 >= n(&r, "sent") * 99, "{r}");
    assert!(il["interleaved_pct"].as_f64().unwrap() >= 90.0, "{il}");
    assert!(n(il, "replies_interleaved") <= interleaved && interleaved <= replies, "{il}: {interleaved} of {replies}");
    let (x, b) = (&il["interleaved_error"], &il["basic_error"]);
    assert!(n(x, "samples") >= 6_000 && n(b, "samples") >= 64, "{il}");
    // This responder's T3 is its clock read before the send: the error is that of a daemon's T3,
    // positive and well under a millisecond, for both kinds of reply.
    for e in [x, b] {
        let mean = e["mean_ns"].as_i64().unwrap();
        assert!((0..1_000_000).contains(&mean), "{il}");
    }
}
