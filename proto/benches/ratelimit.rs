//! Cost of one rate-limiter decision: one thread over a million distinct clients, every core on
//! its own distinct clients at once, and every core hammering one hot client.
//!
//! The multi-thread cases report the time per decision *per core* (wall time x threads / decisions),
//! so they compare directly with the single-thread figure: equal means no contention cost.
//!
//! The `_coarse` cases add stratumd's second, coarse bucket (a /24 table of its own, checked for
//! requests the client's bucket allows, its key computed and set prefetched in the same first
//! pass): each is measured next to its case without, in the same run. `_coarse` is the network
//! table stratumd uses ([`NetworkLimiter`], one 64-byte line a set); `_coarse_client_table` the
//! same bucket in a client-style table (256-byte sets with statistics), as it was before, so one
//! run compares the two.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stratum_proto::server::ratelimit::{
    ClientKey, NetworkKey, NetworkLimiter, RateDecision, RateLimitConfig, RateLimiter, SetBlock, TableMemory,
    NETWORK_PREFETCH_BYTES, PREFETCH_BYTES,
};
use stratum_proto::NtpTimestamp;

const CLIENTS: u32 = 1 << 20;

/// The prefetch hints a worker issues for each request of a batch: every line of the
/// `PREFETCH_BYTES` from the client's set address (as server/src/dataplane/prefetch.rs does).
fn prefetch(p: *const u8) {
    prefetch_bytes(p, PREFETCH_BYTES)
}

fn prefetch_bytes(p: *const u8, bytes: usize) {
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

/// One batch of 64 distinct clients from `base`, as a worker decides it: keys (and prefetch
/// hints) first, then the decisions.
fn batch(l: &RateLimiter, base: u32, random: &mut u64, hint: bool) {
    let keys: [ClientKey; 64] = core::array::from_fn(|k| l.key(address(base + k as u32)));
    if hint {
        for key in &keys {
            prefetch(l.key_address(key));
        }
    }
    for key in keys {
        *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        black_box(l.check_key(key, NtpTimestamp::from_parts(3_900_000_000, base), *random));
    }
}

/// As [`batch`], with the coarse bucket as stratumd's admission does it: both keys and both
/// prefetches in the first pass, the coarse decision only where the client's bucket allows.
fn batch_coarse(l: &RateLimiter, coarse: &NetworkLimiter, base: u32, random: &mut u64) {
    let keys: [_; 64] = core::array::from_fn(|k| {
        let a = address(base + k as u32);
        (l.key(a), coarse.key(a))
    });
    for (key, coarse_key) in &keys {
        prefetch(l.key_address(key));
        prefetch_bytes(coarse.key_address(coarse_key), NETWORK_PREFETCH_BYTES);
    }
    for (key, coarse_key) in keys {
        *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        black_box(decide(l, coarse, key, coarse_key, NtpTimestamp::from_parts(3_900_000_000, base), *random));
    }
}

/// [`batch_coarse`] with the coarse bucket in a client-style table (the layout before
/// [`NetworkLimiter`]).
fn batch_coarse_client_table(l: &RateLimiter, coarse: &RateLimiter, base: u32, random: &mut u64) {
    let keys: [(ClientKey, ClientKey); 64] = core::array::from_fn(|k| {
        let a = address(base + k as u32);
        (l.key(a), coarse.key(a))
    });
    for (key, coarse_key) in &keys {
        prefetch(l.key_address(key));
        prefetch(coarse.key_address(coarse_key));
    }
    for (key, coarse_key) in keys {
        *random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let now = NtpTimestamp::from_parts(3_900_000_000, base);
        black_box(decide_client_table(l, coarse, key, coarse_key, now, *random));
    }
}

/// One decision through both buckets, as `WorkerPolicy::limit` makes it.
#[inline]
fn decide(
    l: &RateLimiter,
    coarse: &NetworkLimiter,
    key: ClientKey,
    coarse_key: NetworkKey,
    now: NtpTimestamp,
    random: u64,
) -> RateDecision {
    let decision = l.check_key(key, now, random).decision;
    if decision != RateDecision::Allow {
        return decision;
    }
    coarse.check_key(coarse_key, now, random.rotate_left(32))
}

/// [`decide`] with the coarse bucket in a client-style table.
#[inline]
fn decide_client_table(
    l: &RateLimiter,
    coarse: &RateLimiter,
    key: ClientKey,
    coarse_key: ClientKey,
    now: NtpTimestamp,
    random: u64,
) -> RateDecision {
    let decision = l.check_key(key, now, random).decision;
    if decision != RateDecision::Allow {
        return decision;
    }
    coarse.check_key(coarse_key, now, random.rotate_left(32)).decision
}

/// stratumd's default coarse bucket: /24 and /48, 16 a second, burst 255, a table of 64 k prefixes.
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

fn coarse_limiter() -> NetworkLimiter {
    NetworkLimiter::new(&coarse_config(), [0x5555, 0xAAAA])
}

/// The same bucket in a client-style table, as before.
fn coarse_client_table() -> RateLimiter {
    RateLimiter::new(&coarse_config(), [0x5555, 0xAAAA])
}

const SEED: [u64; 2] = [0x1234_5678_9ABC_DEF0, 0x0FED_CBA9_8765_4321];

fn limiter() -> RateLimiter {
    RateLimiter::new(&RateLimitConfig::default(), SEED)
}

/// The table on transparent huge pages, as stratumd maps it (`stratum_host::hugemem`, which proto
/// cannot depend on): anonymous memory 2 MiB aligned, `madvise(MADV_HUGEPAGE)` before the first
/// touch. Linux x86-64 constants; the mapping is never unmapped (a benchmark process).
#[derive(Debug)]
struct HugeTable(&'static [SetBlock]);

impl TableMemory for HugeTable {
    fn blocks(&self) -> &[SetBlock] {
        self.0
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn huge_limiter() -> RateLimiter {
    extern "C" {
        fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
        fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
    }
    const HUGE: usize = 2 << 20;
    let config = RateLimitConfig::default();
    let sets = RateLimiter::sets_for(&config);
    let len = sets * core::mem::size_of::<SetBlock>();
    // SAFETY: a new private anonymous mapping (PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS),
    // zero-filled; the advice (MADV_HUGEPAGE = 14) changes no contents. SetBlock is all AtomicU64s,
    // valid as zeroes; the memory is never unmapped, so the 'static view stays valid.
    let blocks = unsafe {
        let p = mmap(core::ptr::null_mut(), len + HUGE, 3, 0x22, -1, 0);
        assert!(p as isize != -1, "mmap failed");
        let aligned = p.add(p.align_offset(HUGE));
        madvise(aligned, len, 14);
        core::slice::from_raw_parts(aligned.cast::<SetBlock>(), sets)
    };
    RateLimiter::with_memory(&config, SEED, Box::new(HugeTable(blocks))).unwrap()
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

    // What a worker does: a first pass over a batch of 64 computes each client's key and
    // prefetches its set, a second decides each.
    let l = limiter();
    let mut base = 0u32;
    group.throughput(Throughput::Elements(64));
    group.bench_function("distinct_1thread_batch64_prefetched", |b| {
        b.iter(|| {
            base = (base + 64) % CLIENTS;
            batch(&l, base, &mut random, true)
        })
    });
    let (l, coarse) = (limiter(), coarse_limiter());
    group.bench_function("distinct_1thread_batch64_prefetched_coarse", |b| {
        b.iter(|| {
            base = (base + 64) % CLIENTS;
            batch_coarse(&l, &coarse, base, &mut random)
        })
    });
    let (l, coarse) = (limiter(), coarse_client_table());
    group.bench_function("distinct_1thread_batch64_prefetched_coarse_client_table", |b| {
        b.iter(|| {
            base = (base + 64) % CLIENTS;
            batch_coarse_client_table(&l, &coarse, base, &mut random)
        })
    });

    // The same on transparent huge pages (as stratumd maps the table): no TLB miss per client.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let l = huge_limiter();
        group.bench_function("distinct_1thread_batch64_prefetched_huge_pages", |b| {
            b.iter(|| {
                base = (base + 64) % CLIENTS;
                batch(&l, base, &mut random, true)
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("distinct_1thread_huge_pages", |b| {
            b.iter(|| {
                i = (i + 1) % CLIENTS;
                random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                black_box(l.check(address(i), NtpTimestamp::from_parts(3_900_000_000, i), random))
            })
        });
        group.throughput(Throughput::Elements(64));
    }

    // The floor: the same batches against a table small enough to stay in cache (4 k clients).
    let small = RateLimiter::new(&RateLimitConfig { clients: 4096, ..Default::default() }, [1, 2]);
    group.bench_function("distinct_1thread_batch64_cached_table", |b| {
        b.iter(|| {
            base = (base + 64) % CLIENTS;
            batch(&small, base, &mut random, false)
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

    // One client over its limit, one core: the decision's own cost, without another core's writes.
    let l = limiter();
    group.bench_function("hot_key_1thread", |b| {
        b.iter(|| {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check(address(7), NtpTimestamp::from_parts(3_900_000_000, 0), random))
        })
    });

    let (l, coarse) = (limiter(), coarse_limiter());
    group.bench_function("hot_key_1thread_coarse", |b| {
        let (key, coarse_key) = (l.key(address(7)), coarse.key(address(7)));
        b.iter(|| {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(decide(&l, &coarse, key, coarse_key, NtpTimestamp::from_parts(3_900_000_000, 0), random))
        })
    });
    let (l, coarse) = (limiter(), coarse_client_table());
    group.bench_function("hot_key_1thread_coarse_client_table", |b| {
        let (key, coarse_key) = (l.key(address(7)), coarse.key(address(7)));
        b.iter(|| {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let now = NtpTimestamp::from_parts(3_900_000_000, 0);
            black_box(decide_client_table(&l, &coarse, key, coarse_key, now, random))
        })
    });

    // One client within its limit (a request every 8 s of table time), so every request is
    // allowed and, with the coarse bucket, pays the second lookup (its /24, also in cache).
    let (l, coarse) = (limiter(), coarse_limiter());
    let mut second = 0u32;
    let (key, coarse_key) = (l.key(address(9)), coarse.key(address(9)));
    group.bench_function("allowed_key_1thread", |b| {
        b.iter(|| {
            second = second.wrapping_add(8);
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check_key(key, NtpTimestamp::from_parts(3_900_000_000u32.wrapping_add(second), 0), random))
        })
    });
    group.bench_function("allowed_key_1thread_coarse", |b| {
        b.iter(|| {
            second = second.wrapping_add(8);
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let now = NtpTimestamp::from_parts(3_900_000_000u32.wrapping_add(second), 0);
            black_box(decide(&l, &coarse, key, coarse_key, now, random))
        })
    });
    let coarse = coarse_client_table();
    let coarse_key = coarse.key(address(9));
    group.bench_function("allowed_key_1thread_coarse_client_table", |b| {
        b.iter(|| {
            second = second.wrapping_add(8);
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let now = NtpTimestamp::from_parts(3_900_000_000u32.wrapping_add(second), 0);
            black_box(decide_client_table(&l, &coarse, key, coarse_key, now, random))
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
