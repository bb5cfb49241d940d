//! Real NTP clients accept stratumd's replies: chronyd (-Q) over IPv4 and IPv6, and NTPsec's
//! ntpdig inside a network namespace (it only speaks to port 123).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn chronyd_accepts_replies_over_ipv4_and_ipv6() {
    if !require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)") {
        return;
    }
    let port = free_port();
    let mut server = Server::start(
        &config(&[format!("127.0.0.1:{port}"), format!("[::1]:{port}")], 2, "source = \"local\"\nstratum = 3"),
        port,
    );
    for host in ["127.0.0.1", "::1"] {
        let offset = chronyd_query(host, port, 8).unwrap_or_else(|log| panic!("chronyd refused {host}: {log}"));
        assert!(offset.abs() < 0.05, "chronyd saw offset {offset} s against {host}");
        let addr = SocketAddr::new(host.parse().unwrap(), port);
        let (reply, offset, _) = query(addr, 4, Duration::from_secs(1)).expect("reply");
        assert_eq!(reply.stratum, 3);
        assert!(offset.abs() < 0.05);
    }
    let log = server.stop_output();
    assert!(log.contains("answered="), "{log}");
}

#[test]
fn ntpdig_accepts_replies_in_a_namespace() {
    if !ntpdig_available() {
        return;
    }
    let ns = Netns::new("ntpdig");
    let cmd = ns.command(BIN);
    let mut server = Server::start_with(
        cmd,
        &config(&["127.0.0.1:123".into(), "[::1]:123".into()], 1, "source = \"local\"\nstratum = 2"),
        123,
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for host in ["127.0.0.1", "::1"] {
        let out = loop {
            let out = ntpdig(&ns, host);
            if out.status.success() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ntpdig {host} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        let json = stdout.lines().next().unwrap_or_default();
        let field = |key: &str| -> String {
            let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {json}"));
            json[at + key.len() + 3..].split([',', '}']).next().unwrap().trim_matches('"').to_string()
        };
        assert_eq!(field("stratum"), "2", "{json}");
        assert_eq!(field("leap"), "no-leap", "{json}");
        let offset: f64 = field("offset").parse().unwrap();
        assert!(offset.abs() < 0.05, "ntpdig offset {offset}");
    }
    server.stop();
}

#[test]
fn reply_timestamps_are_sane_and_fresh() {
    let port = free_port();
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 4"), port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..20 {
        let (reply, offset, delay) = query(addr, 4, Duration::from_secs(1)).unwrap();
        assert!(offset.abs() < 0.05, "offset {offset}");
        assert!((0.0..0.05).contains(&delay), "delay {delay}");
        assert!(reply.transmit_timestamp.since(reply.receive_timestamp).to_seconds_f64() >= -1e-6);
        assert_eq!(reply.precision, reply.precision.clamp(-30, -10));
    }
    server.stop();
}

#[test]
fn wildcard_listeners_answer_from_the_address_asked() {
    let port = free_port();
    let mut server = Server::start(
        &config(&[format!("0.0.0.0:{port}"), format!("[::]:{port}")], 1, "source = \"local\"\nstratum = 3"),
        port,
    );
    // `exchange` asserts that the reply's source is exactly the address we sent to.
    for host in ["127.0.0.2", "127.0.0.3", "::1"] {
        let addr = SocketAddr::new(host.parse().unwrap(), port);
        let (reply, _, _) = query(addr, 4, Duration::from_secs(1)).unwrap_or_else(|| panic!("no reply via {host}"));
        assert_eq!(reply.stratum, 3);
    }
    server.stop();
}
