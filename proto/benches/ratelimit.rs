//! Cost of one rate-limiter decision: one thread over a million distinct clients, every core on
//! its own distinct clients at once, and every core hammering one hot client.
//!
//! The multi-thread cases report the time per decision *per core* (wall time x threads / decisions),
//! so they compare directly with the single-thread figure: equal means no contention cost.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stratum_proto::server::ratelimit::{RateLimitConfig, RateLimiter};
use stratum_proto::NtpTimestamp;

const CLIENTS: u32 = 1 << 20;

/// The prefetch hint a worker issues for each request of a batch.
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn limiter() -> RateLimiter {
    RateLimiter::new(&RateLimitConfig::default(), [0x1234_5678_9ABC_DEF0, 0x0FED_CBA9_8765_4321])
}

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))))
}

/// Runs `per_thread` decisions on each of `threads` threads, client chosen by `pick(thread, i)`;
/// returns wall time x threads.
fn contended(l: &RateLimiter, threads: usize, per_thread: u64, pick: fn(usize, u64) -> IpAddr) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let now = NtpTimestamp::from_parts(3_900_000_000, 0);
                barrier.wait();
                for i in 0..per_thread {
                    random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    black_box(l.check(pick(t, i), now, random));
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
        * threads as u32
}

fn bench(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut group = c.benchmark_group("ratelimit");
    group.throughput(Throughput::Elements(1));

    let l = limiter();
    let mut i = 0u32;
    let mut random = 1u64;
    group.bench_function("distinct_1thread", |b| {
        b.iter(|| {
            i = (i + 1) % CLIENTS;
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check(address(i), NtpTimestamp::from_parts(3_900_000_000, i), random))
        })
    });

    // What a worker does: prefetch the sets of a whole batch of 64, then decide each.
    let l = limiter();
    let mut base = 0u32;
    group.throughput(Throughput::Elements(64));
    group.bench_function("distinct_1thread_batch64_prefetched", |b| {
        b.iter(|| {
            base = (base + 64) % CLIENTS;
            for k in 0..64 {
                prefetch(l.set_address(address(base + k)));
            }
            for k in 0..64 {
                random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                black_box(l.check(address(base + k), NtpTimestamp::from_parts(3_900_000_000, base), random));
            }
        })
    });
    group.throughput(Throughput::Elements(1));

    // A working set that fits in cache: 64 k active clients.
    let l = limiter();
    group.bench_function("distinct_64k_working_set_1thread", |b| {
        b.iter(|| {
            i = (i + 1) % (1 << 16);
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check(address(i), NtpTimestamp::from_parts(3_900_000_000, i), random))
        })
    });

    let l = limiter();
    group.bench_function(format!("distinct_{threads}threads_per_core"), |b| {
        b.iter_custom(|iters| {
            contended(&l, threads, iters.div_ceil(threads as u64), |t, i| {
                address((t as u32) << 24 | (i as u32 % CLIENTS))
            })
        })
    });

    let l = limiter();
    group.bench_function(format!("hot_key_{threads}threads_per_core"), |b| {
        b.iter_custom(|iters| contended(&l, threads, iters.div_ceil(threads as u64), |_, _| address(7)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
