//! Observability over the real binary: `/metrics` (and a real Prometheus server scraping it),
//! the shipped Prometheus config, alert rules and Grafana dashboard, and `stratumctl` over the
//! control socket. Every wait is bounded; every process started is stopped.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const STRATUMCTL: &str = env!("CARGO_BIN_EXE_stratumctl");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server with `/metrics`, rate limiting (generous: nothing here is limited) and, when given,
/// a control socket.
fn observed_server(control: Option<&Path>) -> (Server, SocketAddr) {
    let port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut text = config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2");
    text += &format!("\n[ratelimit]\nburst = 255\ninterval = -4\n\n[metrics]\nlisten = \"{metrics}\"\n");
    if let Some(path) = control {
        text += &format!("\n[control]\nsocket = \"{}\"\n", path.display());
    }
    (Server::start(&text, port), metrics)
}

fn ntp_target(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// Plain HTTP/1.0 GET: (status, body). HTTP/1.0 keeps servers from chunking the answer.
fn http_get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap();
    (status, body.to_string())
}

fn scrape(metrics: SocketAddr) -> String {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_exports_requests_by_outcome() {
    let (mut server, metrics) = observed_server(None);
    let to = ntp_target(&server);
    for _ in 0..5 {
        query(to, 4, Duration::from_secs(1)).expect("answered");
    }
    assert!(exchange(to, &[0x23; 20], Duration::from_millis(200)).is_none(), "a short request is dropped");
    // A client that connects and says nothing holds one connection slot, nobody else.
    let silent = TcpStream::connect(metrics).unwrap();
    let text = scrape(metrics);
    drop(silent);

    let answered = "stratumd_requests_total{worker=\"0\",outcome=\"answered\",reason=\"served\"}";
    assert!(sample(&text, answered).unwrap() >= 6.0, "5 + the readiness probe:\n{text}");
    let short = "stratumd_requests_total{worker=\"0\",outcome=\"dropped\",reason=\"short\"}";
    assert_eq!(sample(&text, short), Some(1.0), "{text}");
    assert_eq!(sample(&text, "stratumd_requests_total{worker=\"0\",outcome=\"kod\",reason=\"rate\"}"), Some(0.0));
    assert!(sample(&text, "stratumd_turnaround_seconds_count").unwrap() >= 6.0, "{text}");
    assert!(sample(&text, "stratumd_turnaround_seconds_bucket{le=\"+Inf\"}").unwrap() >= 6.0, "{text}");
    assert_eq!(sample(&text, "stratumd_clock_synchronized"), Some(1.0));
    assert_eq!(sample(&text, "stratumd_clock_stratum"), Some(2.0));
    assert_eq!(sample(&text, "stratumd_ratelimit_enabled"), Some(1.0));
    assert_eq!(sample(&text, "stratumd_ratelimit_clients"), Some(1.0), "127.0.0.1 only");
    assert_eq!(sample(&text, "stratumd_backend_info{backend=\"socket\"}"), Some(1.0));
    let version = format!("stratumd_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
    assert!(!text.contains("127.0.0.1"), "no label names a client");

    assert_eq!(http_get(metrics, "/").0, 404);
    assert_eq!(http_get(metrics, "/metrics/x").0, 404);
    let log = server.stop_output();
    assert!(log.contains(&format!("metrics on http://{metrics}/metrics")), "{log}");
}

fn stratumctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(STRATUMCTL).arg("--socket").arg(socket).args(args).output().expect("run stratumctl")
}

/// Runs a `--json` command: stdout must be exactly one JSON object on one line.
fn stratumctl_json(socket: &Path, args: &[&str]) -> Value {
    let out = stratumctl(socket, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(value.is_object(), "{stdout}");
    value
}

#[test]
fn stratumctl_reports_status_workers_sources_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet; stratumd makes it.
    let socket = dir.path().join("run/stratumd/control.sock");
    // A stale socket file from a crashed run is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let (mut server, _) = observed_server(Some(&socket));
    // The limiter samples its per-client statistics (1 request in 16), so send enough that
    // 127.0.0.1 is all but certain to show in `clients` (burst 255: none of these is limited).
    for _ in 0..200 {
        query(ntp_target(&server), 4, Duration::from_secs(1)).expect("answered");
    }
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let status = stratumctl_json(&socket, &["status", "--json"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["backend"], "socket");
    assert_eq!(status["workers"], 1);
    assert_eq!(status["listen"][0], format!("127.0.0.1:{}", server.port));
    assert_eq!(status["synchronized"], true);
    assert_eq!(status["stratum"], 2);
    assert_eq!(status["leap"], 0);
    assert!(status["clock_source"].as_str().is_some_and(|s| !s.is_empty()), "{status}");
    assert!(status["root_dispersion_seconds"].is_number() && status["uptime_seconds"].is_number());
    assert!(status["requests"]["answered"].as_u64().unwrap() >= 201, "{status}");
    // --json may come before the command too.
    assert_eq!(stratumctl_json(&socket, &["--json", "status"])["backend"], "socket");

    let workers = stratumctl_json(&socket, &["workers", "--json"]);
    let list = workers["workers"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], 0);
    assert!(list[0]["received"].as_u64().unwrap() >= 201, "{workers}");

    let sources = stratumctl_json(&socket, &["sources", "--json"]);
    assert_eq!(sources["sources"], serde_json::json!([]));

    let clients = stratumctl_json(&socket, &["clients", "--top", "5", "--json"]);
    assert_eq!(clients["ratelimit"], true);
    assert_eq!(clients["tracked"], 1, "{clients}");
    let top = clients["clients"].as_array().unwrap();
    assert_eq!(top.len(), 1, "{clients}");
    assert_eq!(top[0]["prefix"], "127.0.0.1/32");

    for args in [&["status"][..], &["workers"], &["sources"], &["clients", "--top", "5"]] {
        let out = stratumctl(&socket, args);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success() && !text.is_empty(), "{args:?}");
        assert!(serde_json::from_str::<Value>(&text).is_err(), "a table, not JSON: {text}");
    }
    let table = String::from_utf8(stratumctl(&socket, &["status"]).stdout).unwrap();
    assert!(table.contains("synchronised") && table.contains("yes"), "{table}");
    let table = String::from_utf8(stratumctl(&socket, &["clients", "--top", "5"]).stdout).unwrap();
    assert!(table.contains("127.0.0.1/32"), "{table}");

    let log = server.stop_output();
    assert!(log.contains("stopped: "), "{log}");
    assert!(!socket.exists(), "the socket is removed on a clean stop");

    let out = stratumctl(&socket, &["status", "--json"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("stratumctl: cannot connect to "), "{err}");
}

#[test]
fn a_live_control_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let (mut first, _) = observed_server(Some(&socket));
    let port = free_port();
    let mut text = config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"");
    text += &format!("\n[control]\nsocket = \"{}\"\n", socket.display());
    let dir2 = tempfile::tempdir().unwrap();
    let path = dir2.path().join("second.toml");
    std::fs::write(&path, text).unwrap();
    let mut second =
        Command::new(BIN).arg("--config").arg(&path).stderr(Stdio::piped()).spawn().expect("start stratumd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second stratumd kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    second.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("in use: another stratumd is running"), "{log}");
    assert_eq!(log.lines().filter(|l| l.contains("ERROR")).count(), 1, "{log}");
    assert!(stratumctl(&socket, &["status", "--json"]).status.success(), "the first one still answers");
    first.stop_output();
}

/// A Prometheus server, stopped (and its data removed) on drop.
struct Prometheus {
    child: Child,
    web: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: stratumd\n    \
                 scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let web = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self { child, web, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query?query=EXPR`: the whole JSON answer.
    fn query(&self, expr: &str) -> Value {
        let (_, body) = http_get(self.web, &format!("/api/v1/query?query={}", percent_encode(expr)));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `stratumd_*` metric name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("stratumd_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` in a Grafana dashboard (panels, rows, targets, at any depth).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Grafana's variables, as a query at a fixed time would see them.
fn expand_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
}

#[test]
fn real_prometheus_scrapes_stratumd_and_the_dashboard_queries_work() {
    if !require(have_tool("prometheus"), "prometheus is not installed (apt-get install prometheus)") {
        return;
    }
    let (mut server, metrics) = observed_server(None);
    let prometheus = Prometheus::start(metrics);
    let to = ntp_target(&server);

    // Traffic and scrapes until Prometheus has a non-zero request count: at most 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let total = loop {
        for _ in 0..10 {
            client.send_to(&stratum_proto::NtpPacket::client_request(4, now_ntp()).to_bytes(), to).unwrap();
        }
        let answer = if http_get_ok(prometheus.web, "/-/ready") {
            prometheus.query("sum(stratumd_requests_total)")
        } else {
            Value::Null
        };
        let value = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| *v > 0.0) {
            break v;
        }
        assert!(Instant::now() < deadline, "no non-zero count in 20 s: {answer}\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("Prometheus sees sum(stratumd_requests_total) = {total}");
    let up = prometheus.query("up{job=\"stratumd\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let by_outcome = prometheus.query("sum by (outcome) (stratumd_requests_total{outcome=\"answered\"})");
    assert_eq!(by_outcome["data"]["result"][0]["metric"]["outcome"], "answered", "{by_outcome}");

    // Every dashboard expression parses (a parse error answers status=error), and every metric the
    // dashboard and the alert rules name is one stratumd exports.
    let dashboard_text = std::fs::read_to_string(format!("{DEPLOY}/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{} expressions", exprs.len());
    for expr in &exprs {
        let answer = prometheus.query(&expand_grafana_variables(expr));
        assert_eq!(answer["status"], "success", "`{expr}`: {answer}");
    }
    let exported = scrape(metrics);
    let alerts = std::fs::read_to_string(format!("{DEPLOY}/alerts.yml")).unwrap();
    let referenced: BTreeSet<String> = metric_names(&dashboard_text).into_iter().chain(metric_names(&alerts)).collect();
    assert!(referenced.len() >= 15, "{referenced:?}");
    // The xdp backend's names are checked against a server running it (tests/xdp.rs), the
    // upstream sync's against a server polling real upstreams (tests/sync.rs), the refclocks' against a
    // server with an NMEA refclock (tests/refclock.rs), the statistics files' against a server
    // with [stats] (tests/stats.rs).
    let elsewhere = ["stratumd_xdp_", "stratumd_source_", "stratumd_sync_", "stratumd_refclock_", "stratumd_stats_"];
    for name in referenced.iter().filter(|n| !elsewhere.iter().any(|p| n.starts_with(p))) {
        let exists = exported.lines().any(|l| l.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with([' ', '{'])));
        assert!(exists, "{name} is referenced but not exported:\n{exported}");
    }
    drop(prometheus);
    server.stop_output();
}

/// Slow clients (a slow-loris: a byte every 300 ms, reconnecting when closed) cannot lock a real
/// Prometheus out: with 16 of them at it, eight 1 s scrapes in a row succeed (issue #13).
#[test]
fn slow_clients_do_not_fail_a_single_prometheus_scrape() {
    if !require(have_tool("prometheus"), "prometheus is not installed (apt-get install prometheus)") {
        return;
    }
    let (mut server, metrics) = observed_server(None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(metrics) else { continue };
                    for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let prometheus = Prometheus::start(metrics);
    // Ready, then eight scrapes' worth of time.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get_ok(prometheus.web, "/-/ready") {
        assert!(Instant::now() < deadline, "prometheus not ready: {}", prometheus.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Until Prometheus has scraped eight times (its first scrape comes at an offset of its own
    // choosing), then: every scrape was up.
    let value = |v: &Value| v["data"]["result"][0]["value"][1].as_str().and_then(|x| x.parse::<f64>().ok());
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let scrapes = prometheus.query("count_over_time(up{job=\"stratumd\"}[1m])");
        if value(&scrapes).is_some_and(|n| n >= 8.0) {
            break;
        }
        assert!(Instant::now() < deadline, "too few scrapes: {scrapes}\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let up = prometheus.query("min_over_time(up{job=\"stratumd\"}[1m])");
    assert_eq!(value(&up), Some(1.0), "a scrape failed among the slow clients: {up}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        t.join().unwrap();
    }
    drop(prometheus);
    server.stop_output();
}

/// `[metrics] allow`: a source outside the list is closed unanswered; one inside is served.
#[test]
fn the_metrics_allow_list_is_applied() {
    let port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    for (allow, served) in [("10.0.0.0/8", false), ("127.0.0.0/8", true)] {
        let text = config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"")
            + &format!("\n[metrics]\nlisten = \"{metrics}\"\nallow = [\"{allow}\"]\n");
        let mut server = Server::start(&text, port);
        let mut s = TcpStream::connect(metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert_eq!(raw.starts_with(b"HTTP/1.1 200"), served, "allow {allow}: {}", String::from_utf8_lossy(&raw));
        server.stop();
    }
}

fn http_get_ok(addr: SocketAddr, target: &str) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() && http_get(addr, target).0 == 200
}

#[test]
fn promtool_accepts_the_shipped_config_and_rules() {
    if !require(have_tool("promtool"), "promtool is not installed (apt-get install prometheus)") {
        return;
    }
    let deploy = PathBuf::from(DEPLOY);
    for args in [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]] {
        let out = Command::new("promtool").args(args).current_dir(&deploy).output().expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
