//! `stratumctl`: the operator CLI. Talks to a running stratumd over its control socket
//! (`[control] socket` in stratumd's configuration): one JSON request, one JSON response.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use stratumd::mgmt::control::{request, ControlRequest, MAX_TOP};
use stratumd::mgmt::control_path::client_candidates;

/// stratumctl: query a running stratumd over its control socket (`[control]` in its configuration).
// Its own name: clap's default is the package's (stratumd), and `about` without a value would
// take the package's description (the daemon's) over this comment.
#[derive(Debug, Parser)]
#[command(name = "stratumctl", version)]
struct Args {
    /// stratumd's control socket (`[control] socket` in its configuration). Default: where
    /// stratumd puts it when its configuration names none ($RUNTIME_DIRECTORY/control.sock, else
    /// /run/stratumd/control.sock as root, else $XDG_RUNTIME_DIR/stratumd/control.sock, else
    /// /tmp/stratumd-UID/control.sock), then /run/stratumd/control.sock.
    #[arg(long, short = 's', value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Print the response as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Version, uptime, backend, addresses, clock state and request totals.
    Status,
    /// Per-worker core and counters.
    Workers,
    /// Upstream servers: state (* selected, + candidate, - outlier, x falseticker, ? unusable,
    /// ~ unreachable, ! refused us), stratum, poll, reach (octal), last sample.
    Sources,
    /// The served clock: system peer, stratum, refid, offset, frequency, root delay/dispersion,
    /// leap, age of the last update.
    Tracking,
    /// Exit 0 when the server is in service (synchronised, root distance within its
    /// `[health] max-root-distance`), else 1 with the reason: for container probes and routing
    /// daemons (an anycast announcement withdrawn while it fails).
    Health,
    /// The heaviest clients in the rate limiter's table (needs `[ratelimit]` in stratumd's configuration).
    ///
    /// Only clients with a sampled request are listed: the rate limiter keeps statistics for 1
    /// request in 16 (never a client's first, which makes its record), so a client shows after
    /// about 17 requests on average, and its counts are estimates in steps of 16.
    Clients {
        /// How many clients to list, heaviest first (at most 10000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TOP as u64))]
        top: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let req = match args.command {
        Command::Status => ControlRequest::Status,
        Command::Workers => ControlRequest::Workers,
        Command::Sources => ControlRequest::Sources,
        Command::Tracking => ControlRequest::Tracking,
        Command::Health => ControlRequest::Health,
        Command::Clients { top } => ControlRequest::Clients { top: top as usize },
    };
    // The first default place that exists, else the first (for the error message).
    let candidates = client_candidates();
    let socket =
        args.socket.clone().unwrap_or_else(|| candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[0]).clone());
    let response = match request(&socket, &req, Duration::from_secs(10)) {
        Ok(v) => v,
        Err(e) => {
            let hint = if socket.exists() { "" } else { " (is stratumd running with a [control] socket?)" };
            eprintln!("stratumctl: {}{hint}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    // A health check's answer is its exit status, table or JSON alike.
    let status = if req == ControlRequest::Health && response["healthy"] != true {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    if args.json {
        println!("{response}");
        return status;
    }
    let text = match req {
        ControlRequest::Status => status_table(&response),
        ControlRequest::Workers => workers_table(&response),
        ControlRequest::Sources => sources_table(&response),
        ControlRequest::Tracking => tracking_table(&response),
        ControlRequest::Clients { top } => clients_table(&response, top),
        ControlRequest::Health => {
            let word = if response["healthy"] == true { "healthy" } else { "unhealthy" };
            format!("{word}: {}\n", show(&response["reason"]))
        }
    };
    print!("{text}");
    status
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value as table text: strings bare, null as "-".
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn sum_object(v: &Value) -> u64 {
    v.as_object().map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
}

/// `key  value` lines, keys padded to one column.
fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

fn nonzero(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

fn status_table(v: &Value) -> String {
    let r = &v["requests"];
    let synchronized = if v["synchronized"].as_bool() == Some(true) { "yes" } else { "NO (serving LI=3)" };
    let mut rows = vec![
        ("version", show(&v["version"])),
        ("uptime", format!("{:.0} s", v["uptime_seconds"].as_f64().unwrap_or(0.0))),
        ("backend", show(&v["backend"])),
        ("workers", show(&v["workers"])),
    ];
    rows.extend(data_plane_rows(v));
    rows.extend([
        ("clock source", show(&v["clock_source"])),
        ("synchronised", synchronized.into()),
        ("stratum", show(&v["stratum"])),
        ("leap indicator", show(&v["leap"])),
        ("refid", show(&v["refid"])),
        ("root delay", format!("{:.6} s", v["root_delay_seconds"].as_f64().unwrap_or(0.0))),
        ("root dispersion", format!("{:.6} s", v["root_dispersion_seconds"].as_f64().unwrap_or(0.0))),
        ("rate limiting", if v["ratelimit"].as_bool() == Some(true) { "on" } else { "off" }.into()),
        ("received", show(&r["received"])),
        ("answered", show(&r["answered"])),
        ("kod", nonzero(&r["kod"])),
        ("dropped", nonzero(&r["dropped"])),
        ("send failed", show(&r["send_failed"])),
    ]);
    // Interleaved mode: where transmit stamps come from, and how many replies used one.
    if let Some(mode) = v["tx_timestamps"].as_str() {
        let i = &r["interleaved"];
        let used =
            format!("{} ({} replies, {} without a stamp)", mode, show(&i["replies"]), show(&i["tx_stamps_missing"]));
        rows.push(("tx timestamps", used));
    }
    pairs(&rows)
}

/// Where requests come in: the socket backend's addresses, or the xdp backend's interface, attach
/// and bind modes and queues (it listens on no address, so a `listen` row would be blank).
fn data_plane_rows(v: &Value) -> Vec<(&'static str, String)> {
    let x = &v["xdp"];
    if !x.is_object() {
        let listen: Vec<String> = v["listen"].as_array().into_iter().flatten().map(show).collect();
        return vec![("listen", listen.join(", "))];
    }
    let queues: Vec<String> = x["queues"].as_array().into_iter().flatten().map(|q| show(&q["queue"])).collect();
    let stamps = if x["hardware_timestamps"].as_bool() == Some(true) { "NIC" } else { "CLOCK_TAI at XDP entry" };
    vec![
        ("interface", show(&x["interface"])),
        ("xdp mode", format!("{}, {}", show(&x["attach_mode"]), show(&x["bind_mode"]))),
        ("queues", queues.join(", ")),
        ("rx timestamps", stamps.into()),
        // no_socket here means a queue without a worker: its requests went to the kernel.
        ("xdp program", nonzero(&x["program"])),
    ]
}

/// One table row per element of the JSON array `list` (none when it is not an array).
fn rows_of(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(row).collect()
}

fn workers_table(v: &Value) -> String {
    let rows = rows_of(&v["workers"], |w| {
        vec![
            show(&w["id"]),
            show(&w["core"]),
            show(&w["received"]),
            show(&w["answered"]),
            sum_object(&w["kod"]).to_string(),
            sum_object(&w["dropped"]).to_string(),
            show(&w["send_failed"]),
            show(&w["receive_errors"]),
        ]
    });
    table(&["worker", "core", "received", "answered", "kod", "dropped", "send_failed", "recv_errors"], &rows)
}

fn sources_table(v: &Value) -> String {
    let Some(sources) = v["sources"].as_array().filter(|s| !s.is_empty()) else {
        let why = if v["note"].is_null() { "none reached yet".to_string() } else { show(&v["note"]) };
        return format!("no sources: {why} (clock source: {})\n", show(&v["clock_source"]));
    };
    let rows = rows_of(&Value::Array(sources.clone()), |s| {
        vec![
            show(&s["symbol"]),
            show(&s["state"]),
            show(&s["name"]),
            show(&s["address"]),
            show(&s["refid"]),
            show(&s["stratum"]),
            show(&s["poll"]),
            show(&s["reach"]),
            seconds(&s["last_sample_age_seconds"], 1.0, "s"),
            seconds(&s["last_offset_seconds"], 1e6, "us"),
            seconds(&s["last_delay_seconds"], 1e6, "us"),
            seconds(&s["jitter_seconds"], 1e6, "us"),
            refclock_state(s),
        ]
    });
    let header = [
        "", "state", "name", "address", "refid", "stratum", "poll", "reach", "last rx", "offset", "delay", "jitter",
        "refclock",
    ];
    table(&header, &rows)
}

/// A refclock row's driver state in a few words ("fix 8 sats", "no fix stale", "locked 120/122
/// pulses", "dropped 3"); "-" for an upstream.
fn refclock_state(s: &Value) -> String {
    if s["refclock"] != true {
        return "-".into();
    }
    let mut words = Vec::new();
    match s["fix"].as_bool() {
        Some(true) => words.push("fix".to_string()),
        Some(false) => words.push("no fix".to_string()),
        None => {}
    }
    if let Some(n) = s["satellites"].as_u64() {
        words.push(format!("{n} sats"));
    }
    match s["pps_locked"].as_bool() {
        Some(true) => words.push("locked".into()),
        Some(false) => words.push("unlocked".into()),
        None => {}
    }
    if let (Some(locked), Some(total)) = (s["pulses"]["locked"].as_u64(), s["pulses"]["total"].as_u64()) {
        words.push(format!("{locked}/{total} pulses"));
    }
    if let Some(o) = s["last_pulse_offset_seconds"].as_f64() {
        words.push(format!("pulse {:+.0} ns", o * 1e9));
    }
    if s["stale"] == true {
        words.push("stale".into());
    }
    if let Some(n) = s["samples_dropped"].as_u64().filter(|&n| n > 0) {
        words.push(format!("dropped {n}"));
    }
    if words.is_empty() {
        "ok".into()
    } else {
        words.join(" ")
    }
}

/// A number of seconds in `unit` (scaled by `scale`), rounded, or "-".
fn seconds(v: &Value, scale: f64, unit: &str) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{:.0} {unit}", x * scale))
}

fn tracking_table(v: &Value) -> String {
    if v["synchronized"].is_null() {
        return format!("no tracking: {} (clock source: {})\n", show(&v["note"]), show(&v["clock_source"]));
    }
    let synchronized = if v["synchronized"].as_bool() == Some(true) { "yes" } else { "NO (serving LI=3)" };
    pairs(&[
        ("clock source", show(&v["clock_source"])),
        ("synchronised", synchronized.into()),
        ("system peer", show(&v["system_peer"])),
        ("stratum", show(&v["stratum"])),
        ("refid", show(&v["refid"])),
        ("offset", seconds(&v["offset_seconds"], 1e6, "us")),
        ("offset error", seconds(&v["offset_error_seconds"], 1e6, "us")),
        ("frequency", v["frequency_ppm"].as_f64().map_or("-".into(), |f| format!("{f:+.3} ppm"))),
        ("system jitter", seconds(&v["system_jitter_seconds"], 1e6, "us")),
        ("root delay", seconds(&v["root_delay_seconds"], 1e6, "us")),
        ("root dispersion", seconds(&v["root_dispersion_seconds"], 1e6, "us")),
        ("leap indicator", show(&v["leap"])),
        ("last update", seconds(&v["update_age_seconds"], 1.0, "s ago")),
        ("steps", show(&v["steps"])),
    ])
}

/// Why a client can be missing from `clients`: the rate limiter's statistics are sampled (proto's
/// `ratelimit::SAMPLE_WEIGHT`, 16; its first request only makes the record).
const SAMPLING_NOTE: &str = "only clients with a sampled request are listed: the rate limiter samples 1 request in 16 \
     (never a client's first), so a client shows after about 17 requests; counts are estimates in steps of 16";

fn clients_table(v: &Value, top: usize) -> String {
    if v["ratelimit"].as_bool() != Some(true) {
        return "rate limiting is off: no clients are tracked\n".into();
    }
    let rows = rows_of(&v["clients"], |c| {
        vec![
            show(&c["prefix"]),
            show(&c["requests"]),
            show(&c["limited"]),
            if c["fast_retries"].as_bool() == Some(true) { "yes" } else { "no" }.into(),
        ]
    });
    let mut out = format!("{} of {} clients tracked\n", show(&v["tracked"]), show(&v["capacity"]));
    out += &table(&["client", "requests", "limited", "fast_retries"], &rows);
    // Fewer rows than asked for: say why a client that was seen may not be among them.
    if rows.len() < top {
        out += SAMPLING_NOTE;
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(backend: &str, listen: Value, xdp: Value) -> Value {
        json!({
            "version": "0.1.0", "uptime_seconds": 12.0, "backend": backend, "workers": 2,
            "listen": listen, "clock_source": "local", "synchronized": true, "stratum": 3, "leap": 0,
            "refid": "LOCL", "root_delay_seconds": 0.0, "root_dispersion_seconds": 0.0, "ratelimit": false,
            "requests": { "received": 5, "answered": 5, "kod": {}, "dropped": {}, "send_failed": 0 },
            "xdp": xdp,
        })
    }

    #[test]
    fn a_refclock_row_shows_its_driver_state() {
        let nmea = json!({"refclock": true, "fix": false, "satellites": 2, "pps_locked": null, "stale": true,
            "samples_dropped": 3});
        assert_eq!(refclock_state(&nmea), "no fix 2 sats stale dropped 3");
        let pps = json!({"refclock": true, "fix": null, "pps_locked": true, "stale": false,
            "pulses": {"total": 12, "locked": 10}, "last_pulse_offset_seconds": 1.2e-7, "samples_dropped": 0});
        assert_eq!(refclock_state(&pps), "locked 10/12 pulses pulse +120 ns");
        assert_eq!(refclock_state(&json!({"refclock": false})), "-");
        let table = sources_table(&json!({"sources": [nmea], "clock_source": "sync"}));
        assert!(table.lines().next().unwrap().ends_with("refclock"), "{table}");
    }

    fn row<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with("  ")).map(str::trim))
    }

    /// #19 (8): the xdp backend listens on no address; its status names interface, modes, queues.
    #[test]
    fn xdp_status_shows_interface_modes_and_queues() {
        let xdp = json!({
            "interface": "eth0", "attach_mode": "driver", "bind_mode": "zero-copy", "hardware_timestamps": false,
            "program": { "redirected": 40, "passed": 2, "malformed": 0, "no_socket": 7, "denied": 0 },
            "queues": [{ "queue": 0, "worker": 0 }, { "queue": 1, "worker": 1 }],
        });
        let text = status_table(&status("xdp", json!([]), xdp));
        assert_eq!(row(&text, "listen"), None, "{text}");
        assert_eq!(row(&text, "interface"), Some("eth0"), "{text}");
        assert_eq!(row(&text, "xdp mode"), Some("driver, zero-copy"), "{text}");
        assert_eq!(row(&text, "queues"), Some("0, 1"), "{text}");
        assert_eq!(row(&text, "xdp program"), Some("no_socket=7 passed=2 redirected=40"), "{text}");
        assert_eq!(row(&text, "rx timestamps"), Some("CLOCK_TAI at XDP entry"), "{text}");
    }

    #[test]
    fn socket_status_shows_listen_addresses() {
        let text = status_table(&status("socket", json!(["0.0.0.0:123", "[::]:123"]), Value::Null));
        assert_eq!(row(&text, "listen"), Some("0.0.0.0:123, [::]:123"), "{text}");
        assert_eq!(row(&text, "interface"), None, "{text}");
        assert_eq!(row(&text, "synchronised"), Some("yes"), "{text}");
    }

    /// #19 (7): a short list says what a client needs to be listed.
    #[test]
    fn a_short_clients_list_explains_the_sampling() {
        let empty = json!({ "ratelimit": true, "tracked": 1, "capacity": 1024, "clients": [] });
        let text = clients_table(&empty, 5);
        assert!(text.starts_with("1 of 1024 clients tracked\n"), "{text}");
        assert!(text.lines().last().unwrap().contains("samples 1 request in 16"), "{text}");
        let client = json!({ "prefix": "192.0.2.1/32", "requests": 32, "limited": 0, "fast_retries": false });
        let full = json!({ "ratelimit": true, "tracked": 1, "capacity": 1024, "clients": [client] });
        assert!(!clients_table(&full, 1).contains("sampled"), "a full list needs no note");
        assert!(clients_table(&full, 2).contains("sampled"));
        assert!(!clients_table(&json!({ "ratelimit": false, "clients": [] }), 5).contains("sampled"));
    }
}
