//! `/healthz` and `stratumctl health` (#17): in service only while synchronised within
//! `[health] max-root-distance`, with the reason either way; what container probes and anycast
//! routing daemons act on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// A server with /metrics and a control socket, its `[clock]` as given.
fn server(clock: &str, extra: &str) -> (Server, SocketAddr, std::path::PathBuf) {
    let port = free_port();
    let metrics =
        SocketAddr::from(([127, 0, 0, 1], TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()));
    let dir = tempfile::tempdir().unwrap().keep();
    let control = dir.join("c.sock");
    let text = config(&[format!("127.0.0.1:{port}")], 1, clock)
        + &format!("\n[metrics]\nlisten = \"{metrics}\"\n\n[control]\nsocket = \"{}\"\n{extra}", control.display());
    let server = Server::start_with(Command::new(BIN), &text, port, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(metrics).is_err() || !control.exists() {
        assert!(Instant::now() < deadline, "stratumd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, metrics, control)
}

fn ctl_health(control: &std::path::Path) -> (bool, String) {
    let out = Command::new(CTL).arg("--socket").arg(control).arg("health").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_synchronised_server_is_healthy() {
    let (mut server, metrics, control) = server("source = \"local\"\nstratum = 3", "");
    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok: synchronised at stratum 3"), "{body}");
    let (ok, out) = ctl_health(&control);
    assert!(ok && out.starts_with("healthy: synchronised at stratum 3"), "{out}");
    server.stop();
}

#[test]
fn an_unsynchronised_server_is_not_and_says_why() {
    // An upstream that never answers: stratumd stays unsynchronised (LI=3, stratum 16).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = format!("\n[[upstream]]\naddress = \"{}\"\niburst = true\n", silent.local_addr().unwrap());
    let (mut server, metrics, control) = server("source = \"sync\"", &upstream);
    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy: unsynchronised"), "{body}");
    let (ok, out) = ctl_health(&control);
    assert!(!ok && out.starts_with("unhealthy: unsynchronised"), "{out}");
    let json = Command::new(CTL).arg("--socket").arg(&control).args(["health", "--json"]).output().unwrap();
    assert!(!json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((v["healthy"].as_bool(), v["stratum"].as_u64()), (Some(false), Some(16)), "{v}");
    server.stop();
}

#[test]
fn a_bad_max_root_distance_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    let text = config(&["127.0.0.1:11123".into()], 1, "source = \"local\"") + "\n[health]\nmax-root-distance = 0\n";
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).arg("--check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(":9: health.max-root-distance: "), "{err}");
}
