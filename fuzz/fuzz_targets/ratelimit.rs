//! Any sequence of clients and times: the limiter never panics, never tracks more clients than
//! its capacity, and never allows one client more than its burst at a single instant.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use stratum_proto::server::ratelimit::{RateDecision, RateLimitConfig, RateLimiter};
use stratum_proto::NtpTimestamp;

fuzz_target!(|input: (u8, u8, Vec<(u128, u64, u64)>)| {
    let (interval, burst, requests) = input;
    let config = RateLimitConfig {
        interval: (interval % 17) as i8 - 4,
        burst: burst.max(1),
        leak: 16,
        clients: 1024,
        ..Default::default()
    };
    let limiter = RateLimiter::new(&config, [1, 2]);
    let mut same_instant_allowed = 0u32;
    let mut last: Option<(u128, u64)> = None;
    for (addr, time, random) in requests.into_iter().take(4096) {
        // The top bit keeps every address out of the IPv4-mapped range, so `addr >> 64` is the client.
        let ip = IpAddr::V6(Ipv6Addr::from(addr | 1 << 127));
        let addr = addr | 1 << 127;
        let outcome = limiter.check(ip, NtpTimestamp::from_bits(time), random | 1);
        let key = (addr >> 64, time >> 28);
        if last != Some(key) {
            same_instant_allowed = 0;
            last = Some(key);
        }
        if outcome.decision == RateDecision::Allow && !outcome.inserted {
            same_instant_allowed += 1;
            assert!(same_instant_allowed <= u32::from(config.burst), "more than the burst at one instant");
        }
    }
    assert!(limiter.occupancy() <= limiter.capacity());
});
