//! Stress: every core hammers an overlapping set of clients for a couple of seconds of simulated
//! traffic (real threads, bounded work) while time advances. Whatever the interleaving, no client
//! is ever allowed more than the token bucket permits: its burst, plus one per interval of elapsed
//! time, plus at most one per racing thread from the first-contact race. Memory never changes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stratum_proto::server::ratelimit::{RateDecision, RateLimitConfig, RateLimiter};
use stratum_proto::NtpTimestamp;

const THREADS: usize = 4;
const CLIENTS: usize = 512;
const CHECKS_PER_THREAD: u64 = 1_500_000;
/// Simulated time covered by the run: each thread advances its clock 1/16 s every 4000 checks.
const SIM_SECONDS: f64 = CHECKS_PER_THREAD as f64 / 4000.0 / 16.0;

#[test]
fn overlapping_keys_under_contention_never_beat_the_bucket() {
    let config = RateLimitConfig { interval: -2, burst: 4, leak: 16, clients: 4096, ..Default::default() };
    let limiter = Arc::new(RateLimiter::new(&config, [0xDEAD_BEEF, 0xC0FF_EE00]));
    let memory = limiter.memory_bytes();
    let allowed: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let start = 3_900_000_000u64 << 32;

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (limiter, allowed) = (limiter.clone(), allowed.clone());
            std::thread::spawn(move || {
                let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64) << 40;
                for i in 0..CHECKS_PER_THREAD {
                    random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let client = (random >> 33) as usize % CLIENTS;
                    let ip = IpAddr::V4(Ipv4Addr::from(0xC633_6400 + client as u32));
                    let now = NtpTimestamp::from_bits(start + (i / 4000) * (1 << 28));
                    // Bits 0..16 non-zero: never leaked; so only Allow answers.
                    if limiter.check(ip, now, random | 1).decision == RateDecision::Allow {
                        allowed[client].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    // interval -2: one token per 0.25 s; threads' clocks differ only by scheduling.
    let refill = (SIM_SECONDS / 0.25).ceil() as u64 + 1;
    let bound = u64::from(config.burst) + refill + THREADS as u64;
    let mut total = 0;
    for (client, n) in allowed.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        assert!(n <= bound, "client {client} allowed {n} times, bound {bound}");
        total += n;
    }
    assert!(total >= CLIENTS as u64 * u64::from(config.burst), "every client got at least its burst: {total}");
    assert_eq!(limiter.memory_bytes(), memory);
    assert!(limiter.occupancy() <= limiter.capacity());
}
