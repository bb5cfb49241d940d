//! `/metrics`: Prometheus text exposition over a tiny blocking HTTP server on its own thread.
//!
//! [`StratumCollector`] is a `prometheus` crate collector that builds every metric family at
//! scrape time from [`ServerStatus`]: it loads the workers' counters and histograms (single-writer
//! atomics), reads the time core's seqlock and scans the rate limiter, so the data plane never
//! does anything for metrics beyond its own plain stores, and never waits on a scrape.
//!
//! Names follow DESIGN.md: `stratumd_<subsystem>_<what>`, `_total` for counters, base units. No
//! label ever names a client.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use stratum_proto::DropReason;

use crate::dataplane::histogram::HistogramSnapshot;
use crate::dataplane::stats::{Totals, KISS_CODES};
use crate::mgmt::endpoint::{self, CLIENT_TIMEOUT};
use crate::mgmt::status::ServerStatus;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The longest request head we read; anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// One exported metric: name, help, type, and its labels' names.
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

/// Every metric stratumd exports. README's metrics table lists the same.
const FAMILIES: &[Family] = &[
    family("stratumd_build_info", GAUGE, &["version"], "Always 1; the version label names the build."),
    family("stratumd_uptime_seconds", GAUGE, &[], "Seconds since stratumd started."),
    family("stratumd_backend_info", GAUGE, &["backend"], "Always 1; the data plane in use."),
    family("stratumd_worker_info", GAUGE, &["worker", "core"], "Always 1 per worker; the core it is pinned to."),
    family(
        "stratumd_requests_total",
        COUNTER,
        &["worker", "outcome", "reason"],
        "Requests by outcome: answered (reason \"served\"), kod (reason = kiss code), dropped (reason = why).",
    ),
    family("stratumd_socket_received_total", COUNTER, &["worker"], "Datagrams received."),
    family("stratumd_socket_send_failures_total", COUNTER, &["worker"], "Replies decided but not sent."),
    family("stratumd_socket_receive_errors_total", COUNTER, &["worker"], "Failed receive calls."),
    family(
        "stratumd_socket_receive_drops_total",
        COUNTER,
        &["worker"],
        "Datagrams the kernel dropped on the worker's sockets for want of buffer space (never seen by stratumd).",
    ),
    family(
        "stratumd_turnaround_seconds",
        HISTOGRAM,
        &[],
        "Time from the kernel receive stamp (T2) to the transmit clock read (T3) of answered requests.",
    ),
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
    family(
        "stratumd_xdp_info",
        GAUGE,
        &["interface", "mode", "bind", "rx_timestamps"],
        "Always 1 with the xdp backend: attach mode (driver/generic), socket bind mode (zero-copy/copy), stamp source.",
    ),
    family(
        "stratumd_xdp_program_packets_total",
        COUNTER,
        &["action"],
        "Frames the XDP program handled: redirected to a worker, passed to the kernel, dropped as malformed or denied, or no socket on the queue.",
    ),
    family("stratumd_xdp_rx_dropped_total", COUNTER, &["queue"], "Frames the kernel dropped on the queue's AF_XDP socket."),
    family("stratumd_xdp_rx_ring_full_total", COUNTER, &["queue"], "Frames dropped because the RX ring was full."),
    family("stratumd_xdp_fill_ring_empty_total", COUNTER, &["queue"], "Times the kernel found the fill ring empty."),
    family("stratumd_xdp_tx_ring_empty_total", COUNTER, &["queue"], "Times the kernel found the TX ring empty when woken."),
    family("stratumd_xdp_invalid_descriptors_total", COUNTER, &["queue", "ring"], "Descriptors the kernel refused (rx or tx)."),
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

/// Collects metric families by name.
struct Families(Vec<MetricFamily>);

impl Families {
    fn add(&mut self, name: &str, labels: &[(&str, &str)], fill: impl FnOnce(&mut proto::Metric)) {
        let Some(index) = FAMILIES.iter().position(|f| f.name == name) else {
            debug_assert!(false, "{name} is not in FAMILIES");
            return;
        };
        let family = &FAMILIES[index];
        debug_assert_eq!(labels.iter().map(|l| l.0).collect::<Vec<_>>(), family.labels, "{name}");
        let mut metric = proto::Metric::default();
        metric.set_label(
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
        fill(&mut metric);
        self.0[index].mut_metric().push(metric);
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, labels, |m| {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.add(name, labels, |m| {
            let mut c = proto::Counter::default();
            c.set_value(value as f64);
            m.set_counter(c);
        });
    }
}

impl Collector for StratumCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.status;
        let mut out = Families(
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
        );

        out.gauge("stratumd_build_info", &[("version", s.version)], 1.0);
        out.gauge("stratumd_uptime_seconds", &[], s.uptime_seconds());
        out.gauge("stratumd_backend_info", &[("backend", s.backend)], 1.0);

        for w in &s.workers {
            let id = w.id.to_string();
            let core = w.core.map_or_else(|| "none".to_string(), |c| c.to_string());
            out.gauge("stratumd_worker_info", &[("worker", &id), ("core", &core)], 1.0);
            let t = Totals::sum([w.counters.as_ref()]);
            let requests = "stratumd_requests_total";
            let labels = |outcome, reason| [("worker", id.as_str()), ("outcome", outcome), ("reason", reason)];
            out.counter(requests, &labels("answered", "served"), t.answered);
            for (code, n) in KISS_CODES.iter().zip(t.kod) {
                out.counter(requests, &labels("kod", code.as_str()), n);
            }
            for (reason, n) in DropReason::ALL.iter().zip(t.dropped) {
                out.counter(requests, &labels("dropped", reason.as_str()), n);
            }
            out.counter("stratumd_socket_received_total", &[("worker", &id)], t.received);
            out.counter("stratumd_socket_send_failures_total", &[("worker", &id)], t.send_failed);
            out.counter("stratumd_socket_receive_errors_total", &[("worker", &id)], t.receive_errors);
            out.counter("stratumd_socket_receive_drops_total", &[("worker", &id)], t.socket_drops);
        }

        let histogram = HistogramSnapshot::merge(s.workers.iter().map(|w| &w.counters.turnaround));
        out.add("stratumd_turnaround_seconds", &[], |m| {
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

        let clock = s.clock();
        out.gauge("stratumd_clock_synchronized", &[], f64::from(u8::from(clock.synchronized)));
        out.gauge("stratumd_clock_stratum", &[], clock.stratum.into());
        out.gauge("stratumd_clock_leap_indicator", &[], clock.leap.into());
        out.gauge("stratumd_clock_precision_seconds", &[], clock.precision_seconds);
        out.gauge("stratumd_clock_root_delay_seconds", &[], clock.root_delay_seconds);
        out.gauge("stratumd_clock_root_dispersion_seconds", &[], clock.root_dispersion_seconds);

        let totals = s.totals();
        out.gauge("stratumd_ratelimit_enabled", &[], f64::from(u8::from(s.limiter.is_some())));
        let (capacity, memory) = s.limiter.as_ref().map_or((0, 0), |l| (l.capacity(), l.memory_bytes()));
        let tracked = s.tracked_clients();
        out.gauge("stratumd_ratelimit_clients", &[], tracked as f64);
        out.gauge("stratumd_ratelimit_capacity_clients", &[], capacity as f64);
        out.gauge("stratumd_ratelimit_memory_bytes", &[], memory as f64);
        out.counter("stratumd_ratelimit_inserts_total", &[], totals.ratelimit_inserted);
        out.counter("stratumd_ratelimit_evictions_total", &[], totals.ratelimit_evicted);
        out.counter("stratumd_ratelimit_leaked_total", &[], totals.ratelimit_leaked);
        out.counter("stratumd_ratelimit_fast_clients_total", &[], totals.ratelimit_fast_clients);

        if let Some(x) = s.xdp.as_ref().map(|x| x.read()) {
            let stamps = if x.hardware_timestamps { "hardware" } else { "tai" };
            let info = [
                ("interface", x.interface.as_str()),
                ("mode", x.attach_mode),
                ("bind", x.bind_mode),
                ("rx_timestamps", stamps),
            ];
            out.gauge("stratumd_xdp_info", &info, 1.0);
            let program = "stratumd_xdp_program_packets_total";
            for (action, n) in [
                ("redirected", x.redirected),
                ("passed", x.passed),
                ("malformed", x.malformed),
                ("no_socket", x.no_socket),
                ("denied", x.denied),
            ] {
                out.counter(program, &[("action", action)], n);
            }
            for q in &x.queues {
                let queue = q.queue.to_string();
                let label = [("queue", queue.as_str())];
                out.counter("stratumd_xdp_rx_dropped_total", &label, q.rx_dropped);
                out.counter("stratumd_xdp_rx_ring_full_total", &label, q.rx_ring_full);
                out.counter("stratumd_xdp_fill_ring_empty_total", &label, q.fill_ring_empty);
                out.counter("stratumd_xdp_tx_ring_empty_total", &label, q.tx_ring_empty);
                let invalid = "stratumd_xdp_invalid_descriptors_total";
                out.counter(invalid, &[("queue", queue.as_str()), ("ring", "rx")], q.rx_invalid_descs);
                out.counter(invalid, &[("queue", queue.as_str()), ("ring", "tx")], q.tx_invalid_descs);
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

/// An HTTP response, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// HEAD: headers only.
    pub head_only: bool,
}

impl Response {
    fn plain(status: u16, text: &str) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec(), head_only: false }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Answers one request head (everything up to the blank line). `metrics` renders the body and is
/// called only for `GET /metrics` or `HEAD /metrics`.
pub fn handle_request(head: &[u8], metrics: impl FnOnce() -> Vec<u8>) -> Response {
    let Some(line) = head.split(|b| *b == b'\n').next().and_then(|l| std::str::from_utf8(l).ok()) else {
        return Response::plain(400, "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::plain(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::plain(400, "bad request\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Response::plain(404, "not found; try /metrics\n");
    }
    match method {
        "GET" | "HEAD" => {
            Response { status: 200, content_type: CONTENT_TYPE, body: metrics(), head_only: method == "HEAD" }
        }
        _ => Response::plain(405, "only GET and HEAD\n"),
    }
}

/// Reads a request head: up to the blank line, at most [`MAX_REQUEST_BYTES`]. None when the
/// client closed early or took too long; Err(()) when it sent too much.
fn read_head(stream: &mut TcpStream) -> Option<Result<Vec<u8>, ()>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(Ok(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Some(Err(()));
        }
    }
}

/// Answers one connection. A slow or silent client costs its thread at most the client timeout.
fn serve_connection(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let response = match read_head(&mut stream) {
        None => return,
        Some(Err(())) => Response::plain(431, "request too large\n"),
        Some(Ok(head)) => handle_request(&head, || render(registry)),
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.flush();
}

/// The `/metrics` endpoint: bound at start (so a taken port is a start-up error) and served on
/// its own thread until shutdown.
#[derive(Debug)]
pub struct MetricsServer {
    pub address: SocketAddr,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    pub fn start(listen: SocketAddr, status: Arc<ServerStatus>, shutdown: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let registry = registry(status)?;
        let listener = TcpListener::bind(listen).with_context(|| format!("cannot listen for /metrics on {listen}"))?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let thread = std::thread::Builder::new()
            .name("stratumd-metrics".into())
            .spawn(move || {
                let accept = |l: &TcpListener| l.accept().and_then(|(s, _)| s.set_nonblocking(false).map(|()| s));
                endpoint::accept_loop(&listener, accept, "stratumd-scrape", &shutdown, move |stream| {
                    serve_connection(stream, &registry)
                });
            })
            .context("cannot start the metrics thread")?;
        Ok(Self { address, thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::stats::WorkerCounters;
    use crate::mgmt::status::WorkerHandle;
    use crate::time::core::SnapshotCell;
    use std::time::Instant;
    use stratum_proto::{KissCode, NtpDuration, ServerSnapshot, Verdict};

    fn body() -> Vec<u8> {
        b"metrics\n".to_vec()
    }

    #[test]
    fn get_metrics_is_answered_and_everything_else_is_not() {
        let r = handle_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", body);
        assert_eq!((r.status, r.content_type, r.body.as_slice()), (200, CONTENT_TYPE, &b"metrics\n"[..]));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 8\r\n") && text.ends_with("\r\n\r\nmetrics\n"), "{text}");
        assert_eq!(handle_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", body).status, 200);
        let head = handle_request(b"HEAD /metrics HTTP/1.1\r\n\r\n", body);
        assert!(String::from_utf8(head.to_bytes())
            .unwrap()
            .ends_with("Content-Length: 8\r\nConnection: close\r\n\r\n"));

        let never = || -> Vec<u8> { panic!("rendered for a request that is not GET /metrics") };
        assert_eq!(handle_request(b"GET / HTTP/1.1\r\n\r\n", never).status, 404);
        assert_eq!(handle_request(b"GET /metricsx HTTP/1.1\r\n\r\n", never).status, 404);
        assert_eq!(handle_request(b"POST /metrics HTTP/1.1\r\n\r\n", never).status, 405);
        assert_eq!(handle_request(b"GET /metrics\r\n\r\n", never).status, 400);
        assert_eq!(handle_request(b"GET /metrics SPDY/3\r\n\r\n", never).status, 400);
        assert_eq!(handle_request(b"\xff\xfe\r\n\r\n", never).status, 400);
        assert_eq!(handle_request(b"", never).status, 400);
    }

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

    #[test]
    fn exposition_has_every_family_with_sane_labels() {
        let counters: Vec<Arc<WorkerCounters>> = (0..2).map(|_| Arc::new(WorkerCounters::default())).collect();
        counters[0].count(&Verdict::Reply(48));
        counters[1].count(&Verdict::Kod(KissCode::Deny));
        counters[1].count(&Verdict::Drop(DropReason::Control));
        counters[0].turnaround.record(NtpDuration::from_nanos(3_000));
        counters[1].turnaround.record(NtpDuration::from_nanos(300_000));
        let status = Arc::new(ServerStatus {
            version: "9.9.9",
            started: Instant::now(),
            backend: "xdp",
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
        });
        let text = String::from_utf8(render(&registry(status).unwrap())).unwrap();
        for f in FAMILIES {
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
            "stratumd_xdp_rx_dropped_total{queue=\"3\"} 5",
            "stratumd_xdp_fill_ring_empty_total{queue=\"3\"} 6",
            "stratumd_xdp_invalid_descriptors_total{queue=\"3\",ring=\"tx\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        // 2 workers x (1 answered + 3 kiss codes + 12 drop reasons).
        let series = text.lines().filter(|l| l.starts_with("stratumd_requests_total{")).count();
        assert_eq!(series, 2 * (1 + 3 + DropReason::ALL.len()));
    }
}
