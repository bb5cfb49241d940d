//! `stratumctl`: the operator CLI. Talks to a running stratumd over its control socket
//! (`[control] socket` in stratumd's configuration): one JSON request, one JSON response.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use stratumd::config::DEFAULT_CONTROL_SOCKET;
use stratumd::mgmt::control::{request, ControlRequest, MAX_TOP};

/// Ask a running stratumd what it is doing.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// stratumd's control socket (`[control] socket` in its configuration).
    #[arg(long, short = 's', value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET, global = true)]
    socket: PathBuf,
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
    /// Upstream servers and reference clocks (none until upstream sync exists).
    Sources,
    /// The heaviest clients in the rate limiter's table.
    Clients {
        /// How many to list.
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
        Command::Clients { top } => ControlRequest::Clients { top: top as usize },
    };
    let response = match request(&args.socket, &req, Duration::from_secs(10)) {
        Ok(v) => v,
        Err(e) => {
            let hint = if args.socket.exists() { "" } else { " (is stratumd running with a [control] socket?)" };
            eprintln!("stratumctl: {}{hint}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{response}");
        return ExitCode::SUCCESS;
    }
    let text = match req {
        ControlRequest::Status => status_table(&response),
        ControlRequest::Workers => workers_table(&response),
        ControlRequest::Sources => sources_table(&response),
        ControlRequest::Clients { .. } => clients_table(&response),
    };
    print!("{text}");
    ExitCode::SUCCESS
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
    let listen: Vec<String> = v["listen"].as_array().into_iter().flatten().map(show).collect();
    let synchronized = if v["synchronized"].as_bool() == Some(true) { "yes" } else { "NO (serving LI=3)" };
    pairs(&[
        ("version", show(&v["version"])),
        ("uptime", format!("{:.0} s", v["uptime_seconds"].as_f64().unwrap_or(0.0))),
        ("backend", show(&v["backend"])),
        ("workers", show(&v["workers"])),
        ("listen", listen.join(", ")),
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
    ])
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
    let sources = v["sources"].as_array().map_or(0, Vec::len);
    if sources == 0 {
        return format!("no sources; {} (clock source: {})\n", show(&v["note"]), show(&v["clock_source"]));
    }
    format!("{sources} sources\n")
}

fn clients_table(v: &Value) -> String {
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
    out
}
