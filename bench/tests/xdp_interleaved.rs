//! `load --interleaved --engine xdp` over a veth pair between two network namespaces the test
//! creates (removed on drop), against a kernel UDP responder that answers as an interleaved
//! server does (RFC 9769, chrony's rules: a request whose origin is one of its receive
//! timestamps, with receive != transmit, gets the transmit time of that earlier reply). Needs root
//! and the `xdp` feature; skips with a reason when not root, fails when CI is set.
#![cfg(feature = "xdp")]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{require_root, responder, Pair, BIN};

/// An interleaved responder on `addr` in namespace `ns` (a thread that joined it), until `stop`:
/// T2 = now with its LSB set, T3 = now with it clear, read before the send (no kernel stamp: the
/// generator measures what it gets). Returns (replies, interleaved replies).
fn interleaved_responder(ns: &str, addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    responder(ns, addr, None, move |socket| {
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
    })
}

#[test]
fn the_xdp_engine_measures_the_t3_error_of_interleaved_replies() {
    if !require_root("xdp engine in interleaved mode") {
        return;
    }
    let pair = Pair::new('l');
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
