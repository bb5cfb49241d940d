//! A fixed amount of the rate limiter's work for `valgrind --tool=callgrind` (instruction counts,
//! and with `--cache-sim=yes` simulated cache misses, where perf counters are unavailable):
//! `callgrind_limiter CASE BATCHES` decides BATCHES batches of 64 as a worker does (keys and
//! prefetch hints first, then the decisions), after one warm-up sweep over the case's clients.
//! Run twice, with N and 2N batches, the difference over 64 N is the cost per decision without
//! the start-up and the warm-up. Without arguments (as `cargo bench` runs it) it does nothing.
//!
//! Cases: `1k` (1024 distinct clients, the table in cache), `1m` (1 M distinct clients, a miss
//! each), `1m-coarse` (and the coarse network bucket, as stratumd's default),
//! `1m-coarse-client-table` (the coarse bucket in a client-style table, the layout before), and
//! `hot` (one client over its limit, unbatched).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use stratum_proto::server::ratelimit::{
    NetworkLimiter, RateDecision, RateLimitConfig, RateLimiter, NETWORK_PREFETCH_BYTES, PREFETCH_BYTES,
};
use stratum_proto::NtpTimestamp;

fn prefetch(p: *const u8, bytes: usize) {
    for offset in (0..bytes).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(offset).cast())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p.wrapping_add(offset);
    }
}

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))))
}

/// stratumd's default coarse bucket: /24 and /48, 16 a second, burst 255, 64 k networks.
fn coarse_config() -> RateLimitConfig {
    RateLimitConfig {
        interval: -4,
        burst: 255,
        kod: 0,
        ipv4_prefix: 24,
        ipv6_prefix: 48,
        clients: 1 << 16,
        ..Default::default()
    }
}

enum Coarse {
    None,
    Network(NetworkLimiter),
    ClientTable(RateLimiter),
}

/// One batch of 64 clients from `base` (of `clients`), as `WorkerPolicy` decides it.
#[inline(never)]
fn batch(l: &RateLimiter, coarse: &Coarse, clients: u32, base: u32, random: &mut u64) -> usize {
    let now = NtpTimestamp::from_parts(3_900_000_000, base);
    let addresses: [IpAddr; 64] = core::array::from_fn(|k| address((base + k as u32) % clients));
    let keys: [_; 64] = core::array::from_fn(|k| l.key(addresses[k]));
    for key in &keys {
        prefetch(l.key_address(key), PREFETCH_BYTES);
    }
    let mut allowed = 0;
    match coarse {
        Coarse::None => {
            for key in keys {
                *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                allowed += usize::from(l.check_key(key, now, *random).decision == RateDecision::Allow);
            }
        }
        Coarse::Network(n) => {
            let coarse_keys: [_; 64] = core::array::from_fn(|k| n.key(addresses[k]));
            for key in &coarse_keys {
                prefetch(n.key_address(key), NETWORK_PREFETCH_BYTES);
            }
            for (key, coarse_key) in keys.into_iter().zip(coarse_keys) {
                *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let mut d = l.check_key(key, now, *random).decision;
                if d == RateDecision::Allow {
                    d = n.check_key(coarse_key, now, random.rotate_left(32));
                }
                allowed += usize::from(d == RateDecision::Allow);
            }
        }
        Coarse::ClientTable(c) => {
            let coarse_keys: [_; 64] = core::array::from_fn(|k| c.key(addresses[k]));
            for key in &coarse_keys {
                prefetch(c.key_address(key), PREFETCH_BYTES);
            }
            for (key, coarse_key) in keys.into_iter().zip(coarse_keys) {
                *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let mut d = l.check_key(key, now, *random).decision;
                if d == RateDecision::Allow {
                    d = c.check_key(coarse_key, now, random.rotate_left(32)).decision;
                }
                allowed += usize::from(d == RateDecision::Allow);
            }
        }
    }
    allowed
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(batches) = args.get(1).and_then(|n| n.parse::<u32>().ok()) else {
        return eprintln!("usage: callgrind_limiter 1k|1m|1m-coarse|1m-coarse-client-table|hot BATCHES");
    };
    let l = RateLimiter::new(&RateLimitConfig::default(), [0x1234_5678_9ABC_DEF0, 0x0FED_CBA9_8765_4321]);
    let mut random = 1u64;
    if args[0] == "hot" {
        let now = NtpTimestamp::from_parts(3_900_000_000, 0);
        for _ in 0..batches * 64 {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check(address(7), now, random));
        }
        return;
    }
    let (clients, coarse) = match args[0].as_str() {
        "1k" => (1 << 10, Coarse::None),
        "1m" => (1 << 20, Coarse::None),
        "1m-coarse" => (1 << 20, Coarse::Network(NetworkLimiter::new(&coarse_config(), [0x5555, 0xAAAA]))),
        "1m-coarse-client-table" => {
            (1 << 20, Coarse::ClientTable(RateLimiter::new(&coarse_config(), [0x5555, 0xAAAA])))
        }
        other => return eprintln!("unknown case {other}"),
    };
    // Warm-up: one sweep over every client (the table full, as in a steady state).
    let mut base = 0u32;
    for _ in 0..clients / 64 {
        black_box(batch(&l, &coarse, clients, base, &mut random));
        base = base.wrapping_add(64);
    }
    let mut allowed = 0;
    for _ in 0..batches {
        allowed += batch(&l, &coarse, clients, base, &mut random);
        base = base.wrapping_add(64);
    }
    black_box(allowed);
}
