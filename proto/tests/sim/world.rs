//! The simulated world: true time, the host's oscillator, upstream servers and the network
//! between them, driving a real `SyncEngine` with real request and reply bytes.

use std::collections::BinaryHeap;

use stratum_proto::packet::{KissCode, LeapIndicator, NtpHeader, NtpMode, NtpPacket, RefId};
use stratum_proto::sync::{HostClock, SourceConfig, SourceId, SyncConfig, SyncEngine, Tracking};
use stratum_proto::{NtpDuration, NtpShort, NtpTimestamp, ServerSnapshot};

use super::rng::Rng;

/// The host oscillator: starts `phase` seconds off true time, `freq` s/s fast, and its frequency
/// takes a normal step of `wander` every second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Oscillator {
    pub(crate) phase: f64,
    pub(crate) freq: f64,
    pub(crate) wander: f64,
}

/// What an upstream answers a KoD with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kod {
    None,
    /// Every reply is a KoD with this code.
    Always(KissCode),
}

/// One upstream server and the path to it.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    /// Its clock's error, seconds (a falseticker's).
    pub(crate) offset: f64,
    /// At true time `.0` its clock steps by `.1` seconds.
    pub(crate) step: Option<(f64, f64)>,
    /// One-way delay: base + exponential with this mean, each way; `asymmetry` added outbound.
    pub(crate) delay_base: f64,
    pub(crate) delay_mean: f64,
    pub(crate) asymmetry: f64,
    /// Probability a request or its reply is lost.
    pub(crate) loss: f64,
    /// From this true time on, nothing comes back.
    pub(crate) down_from: Option<f64>,
    /// A leap second at this true time (its clock repeats a second or skips one); its LI
    /// announces it for the day before, if `announces`.
    pub(crate) leap: Option<(f64, LeapIndicator)>,
    pub(crate) announces: bool,
    /// Whether its clock actually takes the leap (false: a lying minority).
    pub(crate) clock_leaps: bool,
    pub(crate) kod: Kod,
    pub(crate) stratum: u8,
}

impl Upstream {
    pub(crate) fn lan() -> Self {
        Self {
            offset: 0.0,
            step: None,
            delay_base: 100e-6,
            delay_mean: 50e-6,
            asymmetry: 0.0,
            loss: 0.0,
            down_from: None,
            leap: None,
            announces: false,
            clock_leaps: true,
            kod: Kod::None,
            stratum: 1,
        }
    }

    pub(crate) fn internet() -> Self {
        Self { delay_base: 15e-3, delay_mean: 2.5e-3, ..Self::lan() }
    }

    /// Its clock's error from true time at `t` (steps and a leap second included).
    fn clock_error(&self, t: f64) -> f64 {
        let mut e = self.offset;
        if let Some((at, by)) = self.step {
            if t >= at {
                e += by;
            }
        }
        if let Some((at, li)) = self.leap.filter(|_| self.clock_leaps) {
            if t >= at {
                e += if li == LeapIndicator::InsertSecond { -1.0 } else { 1.0 };
            }
        }
        e
    }

    fn leap_indicator(&self, t: f64) -> LeapIndicator {
        match self.leap {
            Some((at, li)) if self.announces && t < at && t >= at - 86_400.0 => li,
            _ => LeapIndicator::NoWarning,
        }
    }
}

pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) duration: f64,
    /// Unix time of true time 0 (UTC).
    pub(crate) start_unix: i64,
    pub(crate) oscillator: Oscillator,
    pub(crate) upstreams: Vec<Upstream>,
    pub(crate) source: SourceConfig,
    pub(crate) config: SyncConfig,
    /// Statistics from this true time on.
    pub(crate) stats_from: f64,
    /// Observe every this many seconds.
    pub(crate) observe_every: f64,
    /// Spoofed kiss-o'-death DENY packets sent to every source every this many seconds.
    pub(crate) spoof_every: Option<f64>,
    /// Set by `config.host_clock = Disciplined`: the host clock runs through a simulated kernel
    /// that the engine's adjustments steer (`system` discipline), which inserts or deletes a leap
    /// second itself when the served leap indicator announces one and `kernel_leaps` is set.
    pub(crate) kernel_leaps: bool,
}

impl Scenario {
    pub(crate) fn new(seed: u64, upstreams: Vec<Upstream>) -> Self {
        Self {
            seed,
            duration: 3.0 * 3600.0,
            start_unix: 1_796_428_800, // 2026-12-05
            oscillator: Oscillator { phase: 0.1, freq: 25e-6, wander: 1e-9 },
            upstreams,
            source: SourceConfig { iburst: true, ..Default::default() },
            config: SyncConfig::default(),
            stats_from: 1800.0,
            observe_every: 10.0,
            spoof_every: None,
            kernel_leaps: false,
        }
    }
}

/// One look at the world.
pub(crate) struct Observation<'a> {
    /// True time since start, seconds.
    pub(crate) t: f64,
    /// Served clock minus true UTC, seconds.
    pub(crate) error: f64,
    /// Estimated minus true frequency, ppm.
    pub(crate) freq_error_ppm: f64,
    pub(crate) snapshot: ServerSnapshot,
    pub(crate) tracking: Tracking,
    pub(crate) engine: &'a SyncEngine,
    pub(crate) ids: &'a [SourceId],
    /// True UTC as Unix seconds.
    pub(crate) utc_unix: f64,
    /// The host clock minus true UTC, seconds (with a disciplined host clock, the served clock
    /// itself once the snapshot's correction is the identity).
    pub(crate) host_error: f64,
    /// The simulated kernel's frequency correction, s/s (0 unless the host clock is disciplined).
    pub(crate) kernel_freq: f64,
    /// Host clock adjustments applied so far, and steps among them.
    pub(crate) adjustments: u32,
    pub(crate) host_steps: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    pub(crate) rms: f64,
    pub(crate) max: f64,
    pub(crate) freq_rms_ppm: f64,
    pub(crate) steps: u32,
    pub(crate) samples: usize,
}

#[derive(PartialEq)]
struct Arrival {
    at: f64,
    source: usize,
    bytes: [u8; 48],
}

impl Eq for Arrival {}
impl PartialOrd for Arrival {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Arrival {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.total_cmp(&self.at)
    }
}

struct Host {
    osc: Oscillator,
    /// Phase and frequency at whole second `second`.
    second: i64,
    phase: f64,
    freq: f64,
}

impl Host {
    /// Host clock minus true time at true time `t` (advancing the random walk; `t` must not go
    /// back more than a second).
    fn error_at(&mut self, t: f64, rng: &mut Rng) -> f64 {
        while (self.second + 1) as f64 <= t {
            self.phase += self.freq;
            self.freq += self.osc.wander * rng.normal();
            self.second += 1;
        }
        self.phase + self.freq * (t - self.second as f64)
    }
}

/// The kernel's side of a disciplined host clock: what the adjustments have added to the
/// oscillator (a phase, and a frequency from the moment it was set, in the kernel's 2^-16 ppm
/// units), and a leap second armed for the coming midnight (STA_INS/STA_DEL).
#[derive(Default)]
struct Kernel {
    phase: f64,
    freq: f64,
    /// The oscillator's reading (seconds since start) when `phase` was last brought up to date.
    raw_last: f64,
    /// Unix time (host clock) of the midnight at which to take the leap, and its step.
    leap: Option<(f64, f64)>,
    /// The midnight whose leap was taken (as Linux's TIME_WAIT: not again while the flag stays).
    leap_taken: Option<f64>,
    adjustments: u32,
    steps: u32,
}

impl Kernel {
    /// The host clock's reading, seconds since start, at oscillator reading `raw`.
    fn read(&mut self, raw: f64) -> f64 {
        self.phase += self.freq * (raw - self.raw_last);
        self.raw_last = raw;
        raw + self.phase
    }

    fn set_frequency(&mut self, freq: f64) {
        // ADJ_FREQUENCY takes ppm × 2^16 as an integer, at most 500 ppm.
        self.freq = ((freq * 1e6 * 65_536.0).round() / 65_536.0 / 1e6).clamp(-500e-6, 500e-6);
    }
}

/// The `system` discipline's driver: the engine's adjustment, if any, applied to the kernel at
/// once, then reported with the host clock read right after (returned).
fn apply_adjustment(
    engine: &mut SyncEngine,
    kernel: &mut Kernel,
    now: NtpTimestamp,
    raw: f64,
    start: NtpTimestamp,
) -> Option<NtpTimestamp> {
    let adjustment = engine.host_adjustment(now)?;
    kernel.phase += adjustment.step;
    kernel.set_frequency(adjustment.frequency);
    kernel.adjustments += 1;
    kernel.steps += u32::from(adjustment.step != 0.0);
    let after = ts(start, kernel.read(raw));
    engine.host_adjusted(&adjustment, after);
    Some(after)
}

fn ts(start: NtpTimestamp, seconds: f64) -> NtpTimestamp {
    start.add(NtpDuration::from_seconds_f64(seconds))
}

/// Runs the scenario; `observe` sees the world every `observe_every` seconds. Returns the
/// statistics from `stats_from` on.
pub(crate) fn run(s: &Scenario, observe: &mut dyn FnMut(&Observation<'_>)) -> Report {
    let mut rng = Rng::new(s.seed);
    let mut net = Rng::new(s.seed.wrapping_mul(31).wrapping_add(7));
    let start = NtpTimestamp::from_unix(s.start_unix, 0);
    let mut host = Host { osc: s.oscillator, second: 0, phase: s.oscillator.phase, freq: s.oscillator.freq };
    let mut kernel = Kernel::default();
    let disciplined = s.config.host_clock == HostClock::Disciplined;
    let mut engine = SyncEngine::new(s.config.clone());
    let h0 = ts(start, kernel.read(host.error_at(0.0, &mut rng)));
    let ids: Vec<SourceId> = (0..s.upstreams.len())
        .map(|i| {
            let addr = std::net::Ipv4Addr::new(192, 0, 2, 10 + i as u8).into();
            engine.add_source(addr, s.source, h0).unwrap()
        })
        .collect();
    let mut arrivals = BinaryHeap::new();
    let mut t = 0.0f64;
    let mut next_observe = 0.0;
    let mut next_spoof = s.spoof_every.unwrap_or(f64::INFINITY);
    let (mut sum_sq, mut max, mut freq_sq, mut n) = (0.0, 0.0f64, 0.0, 0usize);
    let mut steps_at_stats = None;
    let utc_shift = |t: f64| -> f64 {
        // True UTC runs with the upstreams' leap: an insert repeats a second.
        s.upstreams.iter().find_map(|u| u.leap.filter(|l| u.clock_leaps && u.offset == 0.0 && t >= l.0)).map_or(
            0.0,
            |(_, li)| {
                if li == LeapIndicator::InsertSecond {
                    -1.0
                } else {
                    1.0
                }
            },
        )
    };
    while t < s.duration {
        let raw = t + host.error_at(t, &mut rng);
        let mut host_now = kernel.read(raw);
        if let Some((midnight, by)) = kernel.leap.filter(|l| s.start_unix as f64 + host_now >= l.0) {
            // The kernel takes the leap when its clock reaches midnight: 23:59:60 repeats 23:59:59.
            kernel.leap_taken = Some(midnight);
            kernel.phase += by;
            kernel.leap = None;
            host_now = kernel.read(raw);
        }
        let mut now = ts(start, host_now);
        // As stratumd's driver does before it publishes: what became due by the passing of time
        // alone (a smear's start) is applied before anyone reads the snapshot.
        if let Some(adjusted) = apply_adjustment(&mut engine, &mut kernel, now, raw, start) {
            now = adjusted;
            host_now = kernel.read(raw);
        }
        let host_err = host_now - t;
        if t >= next_observe {
            let snapshot = engine.snapshot(now);
            let tracking = engine.tracking(now);
            let served = snapshot.correction.apply(now);
            let utc = t + utc_shift(t);
            let error = served.since(start).to_seconds_f64() - utc;
            let freq_error_ppm = tracking.frequency_ppm + host.freq / (1.0 + host.freq) * 1e6;
            let o = Observation {
                t,
                error,
                freq_error_ppm,
                snapshot,
                tracking,
                engine: &engine,
                ids: &ids,
                utc_unix: s.start_unix as f64 + utc,
                host_error: host_err - utc_shift(t),
                kernel_freq: kernel.freq,
                adjustments: kernel.adjustments,
                host_steps: kernel.steps,
            };
            observe(&o);
            if t >= s.stats_from {
                steps_at_stats.get_or_insert(tracking.steps);
                sum_sq += error * error;
                max = max.max(error.abs());
                freq_sq += freq_error_ppm * freq_error_ppm;
                n += 1;
            }
            next_observe += s.observe_every;
        }
        // Replies due now.
        while arrivals.peek().is_some_and(|a: &Arrival| a.at <= t) {
            let a = arrivals.pop().unwrap();
            engine.handle_reply(ids[a.source], &a.bytes, now);
        }
        if t >= next_spoof {
            for &id in &ids {
                let p = NtpPacket {
                    stratum: 0,
                    ref_id: KissCode::Deny.ref_id(),
                    origin_timestamp: NtpTimestamp::from_bits(net.next_u64()),
                    ..reply_template(now)
                };
                engine.handle_reply(id, &p.to_bytes(), now);
            }
            next_spoof += s.spoof_every.unwrap();
        }
        engine.handle_timeout(now);
        while let Some(tx) = engine.poll_transmit(now, rng.next_u64()) {
            let i = ids.iter().position(|id| *id == tx.source).unwrap();
            let u = &s.upstreams[i];
            if net.uniform() < u.loss || u.down_from.is_some_and(|d| t >= d) {
                continue;
            }
            let out = u.delay_base + u.asymmetry + net.exponential(u.delay_mean);
            let back = u.delay_base + net.exponential(u.delay_mean);
            if net.uniform() < u.loss {
                continue;
            }
            let request = NtpHeader::new(&tx.packet).unwrap();
            let t2 = ts(start, t + out + u.clock_error(t + out));
            let t3 = t2.add(NtpDuration::from_nanos(10_000));
            let mut p = NtpPacket {
                leap: u.leap_indicator(t + out),
                stratum: u.stratum,
                poll: request.poll(),
                origin_timestamp: request.transmit_timestamp(),
                receive_timestamp: t2,
                transmit_timestamp: t3,
                ..reply_template(t2)
            };
            if let Kod::Always(code) = u.kod {
                p.stratum = 0;
                p.ref_id = code.ref_id();
                p.leap = LeapIndicator::Unsynchronized;
            }
            arrivals.push(Arrival { at: t + out + 10e-6 + back, source: i, bytes: p.to_bytes() });
        }
        // The `system` discipline's driver: the engine's adjustment applied to the kernel at
        // once, then reported with the host clock read right after.
        if let Some(adjusted) = apply_adjustment(&mut engine, &mut kernel, now, raw, start) {
            now = adjusted;
        }
        if disciplined && s.kernel_leaps {
            // STA_INS/STA_DEL follow the served leap indicator (LeapMode::Kernel).
            let host_unix = s.start_unix as f64 + kernel.read(raw);
            let midnight = (host_unix / 86_400.0).floor() * 86_400.0 + 86_400.0;
            kernel.leap = match engine.snapshot(now).leap {
                LeapIndicator::InsertSecond => Some((midnight, -1.0)),
                LeapIndicator::DeleteSecond => Some((midnight - 1.0, 1.0)),
                _ => None,
            }
            .filter(|l| kernel.leap_taken.is_none_or(|m| (m - l.0).abs() > 2.0));
        }
        // Next event: a reply, an engine deadline, an observation.
        let mut next = next_observe.min(s.duration).min(next_spoof);
        if let Some(a) = arrivals.peek() {
            next = next.min(a.at);
        }
        if let Some(d) = engine.next_deadline(now) {
            let ahead = d.since(now).to_seconds_f64() / (1.0 + host.freq + kernel.freq);
            next = next.min(t + ahead.max(1e-6));
        }
        t = next.max(t + 1e-9);
    }
    let n_f = n.max(1) as f64;
    let steps = engine.tracking(ts(start, t)).steps;
    let _ = steps_at_stats;
    Report { rms: (sum_sq / n_f).sqrt(), max, freq_rms_ppm: (freq_sq / n_f).sqrt(), steps, samples: n }
}

fn reply_template(t: NtpTimestamp) -> NtpPacket {
    NtpPacket {
        leap: LeapIndicator::NoWarning,
        version: 4,
        mode: NtpMode::Server,
        stratum: 1,
        poll: 6,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_micros(10),
        ref_id: RefId(*b"GPS\0"),
        reference_timestamp: t,
        origin_timestamp: NtpTimestamp::ZERO,
        receive_timestamp: t,
        transmit_timestamp: t,
    }
}
