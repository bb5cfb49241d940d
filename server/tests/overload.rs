//! When a worker falls behind, the kernel drops datagrams at the socket; those requests never reach
//! stratumd, so they must still be counted: SO_RXQ_OVFL makes received + kernel drops add up to
//! exactly what was sent (BAD_INPUTS row 31, socket backend).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use stratum_proto::{NtpPacket, NtpTimestamp};

#[test]
fn kernel_socket_drops_are_counted_when_a_worker_falls_behind() {
    let port = free_port();
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\""), port);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let sender = UdpSocket::bind("127.0.0.10:0").unwrap();
    let request = NtpPacket::client_request(4, NtpTimestamp::from_bits(1)).to_bytes();

    // Freeze the server so its socket buffer (8 MiB asked, usually capped far lower) overflows.
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(server.pid(), libc::SIGSTOP) };
    let sent = 40_000u64;
    for _ in 0..sent {
        sender.send_to(&request, to).unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(server.pid(), libc::SIGCONT) };

    // Let the worker drain its backlog; a datagram queued after that carries the final drop count.
    std::thread::sleep(Duration::from_millis(1500));
    let probe = query(to, 4, Duration::from_secs(5)).expect("the server answers again");
    assert_eq!(probe.0.stratum, 10);
    std::thread::sleep(Duration::from_millis(300));

    let log = server.stop_output();
    let summary = log.lines().find(|l| l.contains("stopped: ")).unwrap_or_else(|| panic!("{log}"));
    let value = |name: &str| -> u64 {
        summary.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).map_or(0, |v| v.parse().unwrap())
    };
    let (received, drops) = (value("received"), value("socket_drops"));
    assert!(drops > 0, "the overflow was not counted: {summary}");
    // Everything sent: the flood, the probe, and the harness's readiness probe.
    assert_eq!(received + drops, sent + 2, "every request counted once, kernel drops included: {summary}");
}
