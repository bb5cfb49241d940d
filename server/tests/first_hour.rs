//! The first hour as README walks it, each on its shipped config, each in a network namespace of
//! its own (fixed ports, loopback only): the quickstart (the embedded default, stratumctl and
//! /metrics with no flags and no config written), and deploy/first-hour.toml on port 123 with
//! stratumctl, /metrics and ntpdig.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// stratumctl with no `--socket`, `env` set as given, until it answers (or 10 s): its stdout.
fn stratumctl_status(env: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut cmd = Command::new(CTL);
        cmd.arg("status").env_remove("XDG_RUNTIME_DIR").env_remove("RUNTIME_DIRECTORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run stratumctl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "stratumctl status: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_quickstart_reaches_stratumctl_and_metrics_without_a_config() {
    if !require(is_root() && have_tool("ip"), "needs root and ip for a network namespace (fixed ports)") {
        return;
    }
    let ns = Netns::new("qs");
    let runtime = tempfile::tempdir().unwrap();
    let runtime_dir = runtime.path().to_str().unwrap().to_string();
    // As `cargo run -p stratumd` runs it: no arguments. The control socket goes to its default
    // place, moved by systemd's RuntimeDirectory variable, as for a service (as root the place is
    // /run/stratumd, which the host shares with this namespace).
    let _server = Running(
        ns.command(BIN)
            .env("RUNTIME_DIRECTORY", &runtime_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratumd"),
    );
    let status = stratumctl_status(&[("RUNTIME_DIRECTORY", &runtime_dir)]);
    assert!(status.contains("socket") && status.contains("127.0.0.1:11123"), "{status}");
    let metrics = scrape_in(&ns, "127.0.0.1:9123".parse().unwrap()).expect("/metrics on 127.0.0.1:9123");
    assert!(metrics.contains("stratumd_build_info"), "{metrics}");
}

#[test]
fn deploy_first_hour_serves_ntpdig_stratumctl_and_metrics_on_port_123() {
    if !ntpdig_available() {
        return;
    }
    let ns = Netns::new("fh");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/first-hour.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("first-hour.toml");
    std::fs::write(&config, &shipped).unwrap();
    let runtime_dir = dir.path().to_str().unwrap().to_string();
    // As shipped; only the control socket's default place moves (as root it is /run/stratumd,
    // which the host shares with this namespace): systemd's RuntimeDirectory variable moves it.
    let _server = Running(
        ns.command(BIN)
            .arg("--config")
            .arg(&config)
            .env("RUNTIME_DIRECTORY", &runtime_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratumd"),
    );
    let status = stratumctl_status(&[("RUNTIME_DIRECTORY", &runtime_dir)]);
    assert!(status.contains("127.0.0.1:123"), "{status}");
    let out = ntpdig(&ns, "127.0.0.1");
    assert!(out.status.success(), "ntpdig: {}", String::from_utf8_lossy(&out.stderr));
    let metrics = scrape_in(&ns, "127.0.0.1:9123".parse().unwrap()).expect("/metrics on 127.0.0.1:9123");
    let answered = metrics
        .lines()
        .filter(|l| l.starts_with("stratumd_requests_total{") && l.contains("outcome=\"answered\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(answered >= 1.0, "ntpdig's request is counted: {metrics}");
    assert!(metrics.contains("stratumd_ratelimit_enabled 0"), "no rate limiting in the first hour");
}
