//! The metric catalogue and the collector that fills it at scrape time.
//!
//! [`StratumCollector`] is a `prometheus` crate collector that builds every metric family at
//! scrape time from [`ServerStatus`]: it loads the workers' counters and histograms (single-writer
//! atomics), reads the time core's seqlock and scans the rate limiter, so the data plane never
//! does anything for metrics beyond its own plain stores, and never waits on a scrape. Serving it
//! over HTTP is [`super::http`]'s job.
//!
//! Every family is a [`Metric`] variant, so a misspelt metric is a compile error, not a series
//! that silently goes missing. Names follow DESIGN.md: `stratumd_<subsystem>_<what>`, `_total` for
//! counters, base units. No label ever names a client.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use stratum_proto::DropReason;

use crate::dataplane::histogram::HistogramSnapshot;
use crate::dataplane::stats::{Totals, AUTH_KINDS, KISS_CODES};
use crate::mgmt::status::{ServerStatus, XdpStatus};
use crate::sync::upstream::SyncView;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric stratumd exports, in exposition order; [`FAMILIES`] has each one's name, type,
/// labels and help at the variant's index. README's metrics table lists the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    BuildInfo,
    Uptime,
    BackendInfo,
    WorkerInfo,
    Requests,
    Received,
    SendFailures,
    ReceiveErrors,
    SocketReceiveDrops,
    Turnaround,
    ClockSynchronized,
    ClockStratum,
    ClockLeap,
    ClockPrecision,
    ClockRootDelay,
    ClockRootDispersion,
    RatelimitEnabled,
    RatelimitClients,
    RatelimitCapacity,
    RatelimitMemory,
    RatelimitInserts,
    RatelimitEvictions,
    RatelimitLeaked,
    RatelimitFastClients,
    TxTimestampsInfo,
    InterleavedReplies,
    TxTimestamps,
    InterleavedEvictions,
    XdpInfo,
    XdpProgramPackets,
    XdpRxDropped,
    XdpRxRingFull,
    XdpFillRingEmpty,
    XdpTxRingEmpty,
    XdpInvalidDescriptors,
    SourceState,
    SourceReach,
    SourceStratum,
    SourceOffset,
    SourceDelay,
    SourceJitter,
    SyncOffset,
    SyncFrequency,
    SyncJitter,
    SyncUpdateAge,
    SyncSourcesReachable,
    SyncSteps,
    RefclockFix,
    RefclockSatellites,
    RefclockStale,
    RefclockPpsLocked,
    RefclockPulses,
    RefclockSamples,
    RefclockSamplesDropped,
    NtpqRequests,
    StatsLines,
    NtskeConnections,
    AuthReplies,
}

/// One exported metric: name, help, type, and its labels' names.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn family(name: &'static str, kind: MetricType, labels: &'static [&'static str], help: &'static str) -> Family {
    Family { name, help, kind, labels }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Indexed by [`Metric`]: the array's length is checked against the last variant at compile time.
const FAMILIES: [Family; Metric::AuthReplies as usize + 1] = [
    family("stratumd_build_info", GAUGE, &["version"], "Always 1; the version label names the build."),
    family("stratumd_uptime_seconds", GAUGE, &[], "Seconds since stratumd started."),
    family("stratumd_backend_info", GAUGE, &["backend"], "Always 1; the data plane in use."),
    family("stratumd_worker_info", GAUGE, &["worker", "core"], "Always 1 per worker; the core it is pinned to."),
    family("stratumd_requests_total", COUNTER, &["worker", "outcome", "reason"], "Requests by outcome: answered (reason \"served\"), kod (reason = kiss code), dropped (reason = why)."),
    family("stratumd_worker_received_total", COUNTER, &["worker"], "Requests a worker took in (datagrams on the socket backend, frames on the xdp backend)."),
    family("stratumd_worker_send_failures_total", COUNTER, &["worker"], "Replies decided but not sent."),
    family("stratumd_worker_receive_errors_total", COUNTER, &["worker"], "Failed receive calls."),
    family("stratumd_socket_receive_drops_total", COUNTER, &["worker"], "Datagrams the kernel dropped on the worker's sockets for want of buffer space (never seen by stratumd)."),
    family("stratumd_turnaround_seconds", HISTOGRAM, &[], "Time from the kernel receive stamp (T2) to the transmit clock read (T3) of answered requests."),
    family("stratumd_clock_synchronized", GAUGE, &[], "1 when serving synchronised time, 0 when serving LI=3."),
    family("stratumd_clock_stratum", GAUGE, &[], "The stratum served (16: unsynchronised)."),
    family("stratumd_clock_leap_indicator", GAUGE, &[], "The leap indicator served (3: unsynchronised)."),
    family("stratumd_clock_precision_seconds", GAUGE, &[], "The served clock's precision."),
    family("stratumd_clock_root_delay_seconds", GAUGE, &[], "The root delay served."),
    family("stratumd_clock_root_dispersion_seconds", GAUGE, &[], "The root dispersion a reply now would carry."),
    family("stratumd_ratelimit_enabled", GAUGE, &[], "1 when rate limiting is on."),
    family("stratumd_ratelimit_clients", GAUGE, &[], "Clients tracked in the rate limiter's table now."),
    family("stratumd_ratelimit_capacity_clients", GAUGE, &[], "Clients the rate limiter's table can track."),
    family("stratumd_ratelimit_memory_bytes", GAUGE, &[], "Memory of the rate limiter's table."),
    family("stratumd_ratelimit_inserts_total", COUNTER, &[], "Clients given a record in the table."),
    family("stratumd_ratelimit_evictions_total", COUNTER, &[], "Records evicted to make room for a new client."),
    family("stratumd_ratelimit_leaked_total", COUNTER, &[], "Requests over their limit answered anyway (the leak)."),
    family("stratumd_ratelimit_fast_clients_total", COUNTER, &[], "Clients flagged for retrying fast while limited."),
    family("stratumd_tx_timestamps_info", GAUGE, &["mode"], "Always 1; where interleaved replies' transmit times come from: off (the daemon's own T3), software (kernel, per reply; xdp copy mode: the TX metadata stamp), send-clock (xdp without TX metadata: the clock read before the send wakeup), hardware (NIC)."),
    family("stratumd_interleaved_replies_total", COUNTER, &["tx_stamp"], "Interleaved-mode replies, by the transmit time they carried: precise (kernel/NIC stamp) or missing (the daemon's T3; no stamp arrived)."),
    family("stratumd_tx_timestamps_total", COUNTER, &["outcome"], "Kernel/NIC transmit stamps of interleaved clients' replies: stored, or late (more than 1 s after the daemon's T3; refused)."),
    family("stratumd_interleaved_evictions_total", COUNTER, &[], "Interleaved entries overwritten before use for want of room ([server] interleaved-entries too small)."),
    family("stratumd_xdp_info", GAUGE, &["interface", "mode", "bind", "rx_timestamps"], "Always 1 with the xdp backend: attach mode (driver/generic), socket bind mode (zero-copy/copy), stamp source."),
    family("stratumd_xdp_program_packets_total", COUNTER, &["action"], "Frames the XDP program handled: redirected to a worker, passed to the kernel, dropped as malformed or denied, no socket on the queue, or to our port but not addressed to this host (passed to the kernel)."),
    family("stratumd_xdp_rx_dropped_total", COUNTER, &["queue"], "Frames the kernel dropped on the queue's AF_XDP socket."),
    family("stratumd_xdp_rx_ring_full_total", COUNTER, &["queue"], "Frames dropped because the RX ring was full."),
    family("stratumd_xdp_fill_ring_empty_total", COUNTER, &["queue"], "Times the kernel found the fill ring empty."),
    family("stratumd_xdp_tx_ring_empty_total", COUNTER, &["queue"], "Times the kernel found the TX ring empty when woken."),
    family("stratumd_xdp_invalid_descriptors_total", COUNTER, &["queue", "ring"], "Descriptors the kernel refused (rx or tx)."),
    family("stratumd_source_state", GAUGE, &["source", "name", "state"], "1 per upstream source (source = \"sync\"), labelled with its state: selected, candidate, outlier, falseticker, unselectable, unreachable, demobilised."),
    family("stratumd_source_reach", GAUGE, &["source"], "The source's reach register, 0..255 (255: the last 8 polls answered)."),
    family("stratumd_source_stratum", GAUGE, &["source"], "The stratum the source announced in its last reply."),
    family("stratumd_source_offset_seconds", GAUGE, &["source"], "Offset of the source's last good sample (upstream minus served clock)."),
    family("stratumd_source_delay_seconds", GAUGE, &["source"], "Round-trip delay of the source's last good sample."),
    family("stratumd_source_jitter_seconds", GAUGE, &["source"], "The source's clock-filter jitter."),
    family("stratumd_sync_offset_seconds", GAUGE, &[], "Estimated offset of true time from the served clock now."),
    family("stratumd_sync_frequency_ppm", GAUGE, &[], "Frequency correction applied to the host clock, ppm (slew limit 500)."),
    family("stratumd_sync_system_jitter_seconds", GAUGE, &[], "Selection jitter among the surviving sources."),
    family("stratumd_sync_update_age_seconds", GAUGE, &[], "Seconds since the last clock update (grows in holdover)."),
    family("stratumd_sync_sources_reachable", GAUGE, &[], "Sources that answered at least one of their last 8 polls."),
    family("stratumd_sync_steps_total", COUNTER, &[], "Steps of the served clock."),
    family("stratumd_refclock_fix", GAUGE, &["refclock", "source"], "nmea: 1 while the receiver reports a good fix, 0 without one (RMC status V, GGA/GSA no fix, too few satellites)."),
    family("stratumd_refclock_satellites", GAUGE, &["refclock", "source"], "nmea: satellites in use, as the receiver's last GGA said."),
    family("stratumd_refclock_stale", GAUGE, &["refclock", "source"], "1 while the refclock is out of the selection for a lost fix or lock, or no sample for 2.5 s, until its next estimate."),
    family("stratumd_refclock_pps_locked", GAUGE, &["refclock", "source"], "pps (and sock with lock): 1 while pulses are numbered by the locked time-of-day refclock, 0 when they are not."),
    family("stratumd_refclock_pulses_total", COUNTER, &["refclock", "source", "outcome"], "pps (and sock with lock): pulses by what the lock made of them: locked (numbered), unlocked (no or a disagreeing time-of-day sample), double, wrong_edge; missing: seconds between numbered pulses without any pulse."),
    family("stratumd_refclock_samples_total", COUNTER, &["refclock", "source"], "Samples (and numbered pulses) the refclock gave the sync engine."),
    family("stratumd_refclock_samples_dropped_total", COUNTER, &["refclock", "source"], "Readings the refclock's driver dropped because the channel to the sync thread was full."),
    family("stratumd_ntpq_requests_total", COUNTER, &["outcome"], "Mode 6 (ntpq) requests the workers dropped, by what became of them: queued for the ntpq thread (allowed source), denied (not on [ntpq] allow), queue_full, answered, dropped (not a request, bad nonce), and reply fragments sent."),
    family("stratumd_stats_lines_total", COUNTER, &["file", "outcome"], "Statistics file lines: written, dropped (the writer's queue was full), failed (the disk refused them)."),
    family("stratumd_ntske_connections_total", COUNTER, &["outcome"], "NTS-KE connections by outcome: served (cookies given), error (an error record sent, or nothing in common: empty records, no cookies), failed (handshake, deadline or IO), refused_full (64 at once), refused_rate (20 per address per 10 s); reloads: certificates re-read on SIGHUP."),
    family("stratumd_auth_replies_total", COUNTER, &["worker", "kind"], "Authenticated answers per worker (also counted as answered): mac (signed with a symmetric key), crypto_nak (unknown key or bad MAC), nts (NTS reply with fresh cookies), nts_nak (KoD NTSN: a cookie that does not open or an authenticator that does not verify)."),
];

/// The collector: builds every family from [`ServerStatus`] at scrape time.
#[derive(Debug)]
pub struct StratumCollector {
    status: Arc<ServerStatus>,
    descs: Vec<Desc>,
}

impl StratumCollector {
    pub fn new(status: Arc<ServerStatus>) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.into(),
                    f.help.into(),
                    f.labels.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self { status, descs })
    }
}

/// The families being filled, one per [`Metric`].
struct Families(Vec<MetricFamily>);

impl Families {
    fn new() -> Self {
        Self(
            FAMILIES
                .iter()
                .map(|f| {
                    let mut mf = MetricFamily::default();
                    mf.set_name(f.name.into());
                    mf.set_help(f.help.into());
                    mf.set_field_type(f.kind);
                    mf
                })
                .collect(),
        )
    }

    fn add(&mut self, metric: Metric, labels: &[(&str, &str)], fill: impl FnOnce(&mut proto::Metric)) {
        let family = &FAMILIES[metric as usize];
        debug_assert_eq!(labels.iter().map(|l| l.0).collect::<Vec<_>>(), family.labels, "{}", family.name);
        let mut m = proto::Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(k.to_string());
                    pair.set_value(v.to_string());
                    pair
                })
                .collect(),
        );
        fill(&mut m);
        self.0[metric as usize].mut_metric().push(m);
    }

    fn gauge(&mut self, metric: Metric, labels: &[(&str, &str)], value: f64) {
        self.add(metric, labels, |m| {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn counter(&mut self, metric: Metric, labels: &[(&str, &str)], value: u64) {
        self.add(metric, labels, |m| {
            let mut c = proto::Counter::default();
            c.set_value(value as f64);
            m.set_counter(c);
        });
    }

    fn workers(&mut self, s: &ServerStatus) {
        for w in &s.workers {
            let id = w.id.to_string();
            let core = w.core.map_or_else(|| "none".to_string(), |c| c.to_string());
            self.gauge(Metric::WorkerInfo, &[("worker", &id), ("core", &core)], 1.0);
            let t = Totals::sum([w.counters.as_ref()]);
            let labels = |outcome, reason| [("worker", id.as_str()), ("outcome", outcome), ("reason", reason)];
            self.counter(Metric::Requests, &labels("answered", "served"), t.answered);
            for (code, n) in KISS_CODES.iter().zip(t.kod) {
                self.counter(Metric::Requests, &labels("kod", code.as_str()), n);
            }
            for (reason, n) in DropReason::ALL.iter().zip(t.dropped) {
                self.counter(Metric::Requests, &labels("dropped", reason.as_str()), n);
            }
            self.counter(Metric::Received, &[("worker", &id)], t.received);
            self.counter(Metric::SendFailures, &[("worker", &id)], t.send_failed);
            self.counter(Metric::ReceiveErrors, &[("worker", &id)], t.receive_errors);
            self.counter(Metric::SocketReceiveDrops, &[("worker", &id)], t.socket_drops);
            for (kind, c) in AUTH_KINDS.iter().zip(&w.counters.auth) {
                let n = c.load(std::sync::atomic::Ordering::Relaxed);
                self.counter(Metric::AuthReplies, &[("worker", &id), ("kind", kind)], n);
            }
        }
    }

    fn turnaround(&mut self, s: &ServerStatus) {
        let histogram = HistogramSnapshot::merge(s.workers.iter().map(|w| &w.counters.turnaround));
        self.add(Metric::Turnaround, &[], |m| {
            let mut h = proto::Histogram::default();
            h.set_sample_count(histogram.count());
            h.set_sample_sum(histogram.sum_seconds());
            h.set_bucket(
                histogram
                    .cumulative()
                    .map(|(le, n)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        });
    }

    fn clock(&mut self, s: &ServerStatus) {
        let clock = s.clock();
        self.gauge(Metric::ClockSynchronized, &[], f64::from(u8::from(clock.synchronized)));
        self.gauge(Metric::ClockStratum, &[], clock.stratum.into());
        self.gauge(Metric::ClockLeap, &[], clock.leap.into());
        self.gauge(Metric::ClockPrecision, &[], clock.precision_seconds);
        self.gauge(Metric::ClockRootDelay, &[], clock.root_delay_seconds);
        self.gauge(Metric::ClockRootDispersion, &[], clock.root_dispersion_seconds);
    }

    fn interleaved(&mut self, s: &ServerStatus) {
        let t = s.totals();
        self.gauge(Metric::TxTimestampsInfo, &[("mode", s.tx_timestamps)], 1.0);
        let precise = t.interleaved_replies.saturating_sub(t.tx_stamps_missing);
        self.counter(Metric::InterleavedReplies, &[("tx_stamp", "precise")], precise);
        self.counter(Metric::InterleavedReplies, &[("tx_stamp", "missing")], t.tx_stamps_missing);
        self.counter(Metric::TxTimestamps, &[("outcome", "stored")], t.tx_stamps);
        self.counter(Metric::TxTimestamps, &[("outcome", "late")], t.tx_stamps_late);
        self.counter(Metric::InterleavedEvictions, &[], t.interleaved_evictions);
    }

    fn ratelimit(&mut self, s: &ServerStatus) {
        let totals = s.totals();
        self.gauge(Metric::RatelimitEnabled, &[], f64::from(u8::from(s.limiter.is_some())));
        let (capacity, memory) = s.limiter.as_ref().map_or((0, 0), |l| (l.capacity(), l.memory_bytes()));
        self.gauge(Metric::RatelimitClients, &[], s.tracked_clients() as f64);
        self.gauge(Metric::RatelimitCapacity, &[], capacity as f64);
        self.gauge(Metric::RatelimitMemory, &[], memory as f64);
        self.counter(Metric::RatelimitInserts, &[], totals.ratelimit_inserted);
        self.counter(Metric::RatelimitEvictions, &[], totals.ratelimit_evicted);
        self.counter(Metric::RatelimitLeaked, &[], totals.ratelimit_leaked);
        self.counter(Metric::RatelimitFastClients, &[], totals.ratelimit_fast_clients);
    }

    fn sync(&mut self, view: &SyncView) {
        let sources = view.sources();
        for row in &sources {
            let st = &row.status;
            let source = row.address.to_string();
            let label = [("source", source.as_str())];
            self.gauge(
                Metric::SourceState,
                &[("source", &source), ("name", &row.name), ("state", st.state.name())],
                1.0,
            );
            self.gauge(Metric::SourceReach, &label, f64::from(st.reach));
            if let Some(stratum) = st.stratum {
                self.gauge(Metric::SourceStratum, &label, f64::from(stratum));
            }
            for (metric, value) in [
                (Metric::SourceOffset, st.last_offset),
                (Metric::SourceDelay, st.last_delay),
                (Metric::SourceJitter, st.jitter),
            ] {
                if let Some(v) = value {
                    self.gauge(metric, &label, v);
                }
            }
        }
        for row in &sources {
            let Some(rc) = &row.refclock else { continue };
            let source = row.address.to_string();
            let label = [("refclock", row.name.as_str()), ("source", source.as_str())];
            if let Some(fix) = rc.fix {
                self.gauge(Metric::RefclockFix, &label, f64::from(u8::from(fix)));
            }
            if let Some(n) = rc.satellites {
                self.gauge(Metric::RefclockSatellites, &label, f64::from(n));
            }
            self.gauge(Metric::RefclockStale, &label, f64::from(u8::from(row.status.refclock_stale)));
            if let Some(locked) = rc.pps_locked {
                self.gauge(Metric::RefclockPpsLocked, &label, f64::from(u8::from(locked)));
            }
            if let Some(p) = rc.pulses {
                for (outcome, n) in [
                    ("locked", p.locked),
                    ("unlocked", p.unlocked),
                    ("double", p.doubles),
                    ("wrong_edge", p.wrong_edges),
                    ("missing", p.missing),
                ] {
                    let labels = [label[0], label[1], ("outcome", outcome)];
                    self.counter(Metric::RefclockPulses, &labels, n);
                }
            }
            self.counter(Metric::RefclockSamples, &label, row.status.refclock_samples);
            self.counter(Metric::RefclockSamplesDropped, &label, rc.dropped);
        }
        let reachable = sources.iter().filter(|r| r.status.reach != 0).count();
        self.gauge(Metric::SyncSourcesReachable, &[], reachable as f64);
        if let Some(t) = view.tracking() {
            self.gauge(Metric::SyncOffset, &[], t.offset);
            self.gauge(Metric::SyncFrequency, &[], t.frequency_ppm);
            self.gauge(Metric::SyncJitter, &[], t.system_jitter);
            if let Some(age) = t.update_age {
                self.gauge(Metric::SyncUpdateAge, &[], age);
            }
            self.counter(Metric::SyncSteps, &[], u64::from(t.steps));
        }
    }

    fn xdp(&mut self, x: &XdpStatus) {
        // Requests the XDP program drops on its deny list never reach a worker: they join the
        // request counts as worker "program", so that sum(stratumd_requests_total{reason="denied"})
        // counts every denial, each once.
        let labels = [("worker", "program"), ("outcome", "dropped"), ("reason", DropReason::Denied.as_str())];
        self.counter(Metric::Requests, &labels, x.denied);
        let stamps = if x.hardware_timestamps { "hardware" } else { "tai" };
        let info = [
            ("interface", x.interface.as_str()),
            ("mode", x.attach_mode),
            ("bind", x.bind_mode),
            ("rx_timestamps", stamps),
        ];
        self.gauge(Metric::XdpInfo, &info, 1.0);
        for (action, n) in [
            ("redirected", x.redirected),
            ("passed", x.passed),
            ("malformed", x.malformed),
            ("no_socket", x.no_socket),
            ("not_ours", x.not_ours),
            ("denied", x.denied),
        ] {
            self.counter(Metric::XdpProgramPackets, &[("action", action)], n);
        }
        for q in &x.queues {
            let queue = q.queue.to_string();
            let label = [("queue", queue.as_str())];
            self.counter(Metric::XdpRxDropped, &label, q.rx_dropped);
            self.counter(Metric::XdpRxRingFull, &label, q.rx_ring_full);
            self.counter(Metric::XdpFillRingEmpty, &label, q.fill_ring_empty);
            self.counter(Metric::XdpTxRingEmpty, &label, q.tx_ring_empty);
            let invalid = Metric::XdpInvalidDescriptors;
            self.counter(invalid, &[("queue", queue.as_str()), ("ring", "rx")], q.rx_invalid_descs);
            self.counter(invalid, &[("queue", queue.as_str()), ("ring", "tx")], q.tx_invalid_descs);
        }
    }
}

impl Collector for StratumCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.status;
        let mut out = Families::new();
        out.gauge(Metric::BuildInfo, &[("version", s.version)], 1.0);
        out.gauge(Metric::Uptime, &[], s.uptime_seconds());
        out.gauge(Metric::BackendInfo, &[("backend", s.backend)], 1.0);
        out.workers(s);
        out.turnaround(s);
        out.clock(s);
        out.ratelimit(s);
        out.interleaved(s);
        if let Some(x) = &s.xdp {
            out.xdp(&x.read());
        }
        if let Some(view) = &s.sync {
            out.sync(view);
        }
        if let Some(n) = &s.ntpq {
            let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            for (outcome, c) in [
                ("queued", &n.queued),
                ("denied", &n.denied),
                ("queue_full", &n.queue_full),
                ("answered", &n.answered),
                ("dropped", &n.dropped),
                ("fragments", &n.fragments),
                ("send_failed", &n.send_failed),
            ] {
                out.counter(Metric::NtpqRequests, &[("outcome", outcome)], get(c));
            }
        }
        if let Some(st) = &s.stats {
            use crate::mgmt::stats_format::Kind;
            for kind in Kind::ALL {
                let i = kind.index();
                for (outcome, c) in
                    [("written", &st.written[i]), ("dropped", &st.dropped[i]), ("failed", &st.failed[i])]
                {
                    let labels = [("file", kind.name()), ("outcome", outcome)];
                    out.counter(Metric::StatsLines, &labels, c.load(std::sync::atomic::Ordering::Relaxed));
                }
            }
        }
        if let Some(k) = &s.ntske {
            for (outcome, c) in [
                ("served", &k.served),
                ("error", &k.errors),
                ("failed", &k.failed),
                ("refused_full", &k.refused_full),
                ("refused_rate", &k.refused_rate),
                ("reloads", &k.reloads),
            ] {
                out.counter(
                    Metric::NtskeConnections,
                    &[("outcome", outcome)],
                    c.load(std::sync::atomic::Ordering::Relaxed),
                );
            }
        }
        out.0
    }
}

/// The registry `/metrics` renders.
pub fn registry(status: Arc<ServerStatus>) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(StratumCollector::new(status)?))?;
    Ok(registry)
}

/// Renders the text exposition.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 << 10);
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::stats::WorkerCounters;
    use crate::mgmt::status::WorkerHandle;
    use crate::time::core::SnapshotCell;
    use std::time::Instant;
    use stratum_proto::{KissCode, NtpDuration, ServerSnapshot, Verdict};

    /// The xdp backend's counters, fixed (the real source reads the XDP program's maps and the
    /// sockets' XDP_STATISTICS; tests/xdp.rs scrapes that one).
    #[derive(Debug)]
    struct FixedXdp;

    impl crate::mgmt::status::XdpStatusSource for FixedXdp {
        fn read(&self) -> crate::mgmt::status::XdpStatus {
            crate::mgmt::status::XdpStatus {
                interface: "eth1".into(),
                attach_mode: "driver",
                bind_mode: "zero-copy",
                hardware_timestamps: false,
                redirected: 10,
                passed: 1,
                malformed: 2,
                no_socket: 3,
                denied: 4,
                not_ours: 8,
                queues: vec![crate::mgmt::status::XdpQueueStatus {
                    queue: 3,
                    worker: 0,
                    rx_dropped: 5,
                    fill_ring_empty: 6,
                    tx_invalid_descs: 7,
                    ..Default::default()
                }],
            }
        }
    }

    /// A sync view holding one source (just added, not yet polled) and the engine's tracking.
    fn sync_view() -> Arc<SyncView> {
        use stratum_proto::sync::{SourceConfig, SyncConfig, SyncEngine};
        let now = stratum_proto::NtpTimestamp::from_parts(3_980_000_000, 0);
        let mut engine = SyncEngine::new(SyncConfig::default());
        engine.add_source("192.0.2.10".parse().unwrap(), SourceConfig::default(), now).unwrap();
        let refid = stratum_proto::RefId(*b"PPS\0");
        engine.add_refclock(refid, stratum_proto::sync::RefclockConfig::default(), now).unwrap();
        let rows = engine
            .sources()
            .map(|status| match status.refclock {
                None => crate::sync::upstream::SourceRow {
                    name: "time.example".into(),
                    address: "192.0.2.10:123".parse().unwrap(),
                    local: None,
                    status,
                    refclock: None,
                },
                Some(_) => crate::sync::upstream::SourceRow {
                    name: "pps:/dev/pps0".into(),
                    address: "127.127.22.1:0".parse().unwrap(),
                    local: None,
                    status,
                    refclock: Some(crate::sync::upstream::RefclockRow {
                        driver: "pps",
                        fix: Some(false),
                        satellites: Some(3),
                        pps_locked: Some(false),
                        pulses: Some(stratum_refclock::pps::PulseCounters {
                            pulses: 9,
                            locked: 7,
                            unlocked: 2,
                            ..Default::default()
                        }),
                        last_pulse_offset: None,
                        dropped: 4,
                    }),
                },
            })
            .collect();
        let view = Arc::new(SyncView::default());
        view.set(rows, engine.tracking(now));
        view
    }

    #[test]
    fn the_catalogue_is_in_variant_order() {
        assert_eq!(FAMILIES[Metric::BuildInfo as usize].name, "stratumd_build_info");
        assert_eq!(FAMILIES[Metric::Received as usize].name, "stratumd_worker_received_total");
        assert_eq!(FAMILIES[Metric::ClockStratum as usize].name, "stratumd_clock_stratum");
        assert_eq!(FAMILIES[Metric::XdpInvalidDescriptors as usize].name, "stratumd_xdp_invalid_descriptors_total");
    }

    #[test]
    fn exposition_has_every_family_with_sane_labels() {
        let counters: Vec<Arc<WorkerCounters>> = (0..2).map(|_| Arc::new(WorkerCounters::default())).collect();
        counters[0].count(&Verdict::Reply(48));
        counters[1].count(&Verdict::Kod(KissCode::Deny));
        counters[1].count(&Verdict::Drop(DropReason::Control));
        crate::dataplane::stats::incr(&counters[0].auth[2]);
        crate::dataplane::stats::incr(&counters[1].auth[1]);
        counters[0].turnaround.record(NtpDuration::from_nanos(3_000));
        counters[1].turnaround.record(NtpDuration::from_nanos(300_000));
        let status = Arc::new(ServerStatus {
            version: "9.9.9",
            started: Instant::now(),
            backend: "xdp",
            tx_timestamps: "hardware",
            xdp: Some(Arc::new(FixedXdp)),
            addresses: vec![],
            workers: counters
                .iter()
                .enumerate()
                .map(|(id, c)| WorkerHandle { id, core: Some(id + 4), counters: c.clone() })
                .collect(),
            clock_source: "local".into(),
            cell: SnapshotCell::new(ServerSnapshot::unsynchronized(-20)),
            limiter: None,
            sync: Some(sync_view()),
            ntpq: Some(Arc::default()),
            stats: Some(Arc::default()),
            ntske: Some(Arc::default()),
        });
        let text = String::from_utf8(render(&registry(status).unwrap())).unwrap();
        // A source's stratum, offset, delay and jitter, and the update age, exist once there is a
        // sample (a clock update): tests/sync.rs
        // scrapes them from a server polling real upstreams.
        let after_a_sample = [
            Metric::SourceStratum,
            Metric::SourceOffset,
            Metric::SourceDelay,
            Metric::SourceJitter,
            Metric::SyncUpdateAge,
        ];
        for f in FAMILIES.iter().filter(|f| !after_a_sample.iter().any(|m| FAMILIES[*m as usize].name == f.name)) {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{} missing:\n{text}", f.name);
        }
        for line in [
            "stratumd_build_info{version=\"9.9.9\"} 1",
            "stratumd_requests_total{worker=\"0\",outcome=\"answered\",reason=\"served\"} 1",
            "stratumd_requests_total{worker=\"1\",outcome=\"kod\",reason=\"deny\"} 1",
            "stratumd_requests_total{worker=\"1\",outcome=\"dropped\",reason=\"control\"} 1",
            "stratumd_requests_total{worker=\"0\",outcome=\"dropped\",reason=\"rate_limited\"} 0",
            "stratumd_worker_info{worker=\"1\",core=\"5\"} 1",
            "stratumd_turnaround_seconds_bucket{le=\"0.000001024\"} 0",
            "stratumd_turnaround_seconds_bucket{le=\"0.000003072\"} 1",
            "stratumd_turnaround_seconds_bucket{le=\"+Inf\"} 2",
            "stratumd_turnaround_seconds_count 2",
            "stratumd_clock_synchronized 0",
            "stratumd_clock_stratum 16",
            "stratumd_clock_leap_indicator 3",
            "stratumd_ratelimit_enabled 0",
            "stratumd_backend_info{backend=\"xdp\"} 1",
            "stratumd_xdp_info{interface=\"eth1\",mode=\"driver\",bind=\"zero-copy\",rx_timestamps=\"tai\"} 1",
            "stratumd_xdp_program_packets_total{action=\"redirected\"} 10",
            "stratumd_xdp_program_packets_total{action=\"denied\"} 4",
            "stratumd_xdp_program_packets_total{action=\"not_ours\"} 8",
            "stratumd_requests_total{worker=\"program\",outcome=\"dropped\",reason=\"denied\"} 4",
            "stratumd_source_state{source=\"192.0.2.10:123\",name=\"time.example\",state=\"unselectable\"} 1",
            "stratumd_source_reach{source=\"192.0.2.10:123\"} 0",
            "stratumd_sync_sources_reachable 0",
            "stratumd_refclock_fix{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\"} 0",
            "stratumd_refclock_satellites{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\"} 3",
            "stratumd_refclock_pps_locked{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\"} 0",
            "stratumd_refclock_pulses_total{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\",outcome=\"unlocked\"} 2",
            "stratumd_refclock_samples_dropped_total{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\"} 4",
            "stratumd_refclock_stale{refclock=\"pps:/dev/pps0\",source=\"127.127.22.1:0\"} 0",
            "stratumd_xdp_rx_dropped_total{queue=\"3\"} 5",
            "stratumd_xdp_fill_ring_empty_total{queue=\"3\"} 6",
            "stratumd_xdp_invalid_descriptors_total{queue=\"3\",ring=\"tx\"} 7",
            "stratumd_auth_replies_total{worker=\"0\",kind=\"nts\"} 1",
            "stratumd_auth_replies_total{worker=\"1\",kind=\"crypto_nak\"} 1",
            "stratumd_auth_replies_total{worker=\"1\",kind=\"nts_nak\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        // 2 workers x (1 answered + 3 kiss codes + 13 drop reasons), and the XDP program's denials.
        let series = text.lines().filter(|l| l.starts_with("stratumd_requests_total{")).count();
        assert_eq!(series, 2 * (1 + 3 + DropReason::ALL.len()) + 1);
    }
}
