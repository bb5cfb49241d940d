//! Rate limiting and access control over real sockets (BAD_INPUTS rows 23-25, 29, and the deny
//! list). Floods come from their own loopback addresses (127.0.0.x), so they never share a client
//! record with the harness's readiness probe or with each other. Every loop is bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use stratum_proto::{NtpPacket, NtpTimestamp, RefId};

fn limited_server(extra: &str) -> Server {
    let port = free_port();
    let text = format!("{}{extra}", config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2"));
    Server::start(&text, port)
}

fn target(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

fn socket_from(source: &str) -> UdpSocket {
    let s = UdpSocket::bind(source).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

/// Sends `n` requests about one millisecond apart (about 1 kpps), numbered in their transmit
/// timestamps, and returns every reply that came back. Replies are read as they arrive, so the
/// client's own socket buffer never overflows.
fn flood(from: &UdpSocket, to: SocketAddr, n: u64) -> Vec<NtpPacket> {
    let mut replies = Vec::new();
    from.set_nonblocking(true).unwrap();
    for i in 0..n {
        let request = NtpPacket::client_request(4, NtpTimestamp::from_bits(0x000F_100D_0000_0000 + i)).to_bytes();
        from.send_to(&request, to).unwrap();
        std::thread::sleep(Duration::from_micros(900));
        drain_into(from, &mut replies);
    }
    from.set_nonblocking(false).unwrap();
    drain_into(from, &mut replies);
    replies
}

/// Reads replies until none is waiting (non-blocking) or the read timeout passes (blocking).
fn drain_into(from: &UdpSocket, replies: &mut Vec<NtpPacket>) {
    let mut buf = [0u8; 128];
    while let Ok((len, _)) = from.recv_from(&mut buf) {
        replies.push(NtpPacket::parse(&buf[..len]).expect("reply parses"));
    }
}

fn summary(server: &mut Server) -> String {
    let log = server.stop_output();
    log.lines().find(|l| l.contains("stopped: ")).unwrap_or_else(|| panic!("no summary: {log}")).to_string()
}

fn counter(summary: &str, name: &str) -> u64 {
    summary.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).map_or(0, |v| v.parse().unwrap())
}

#[test]
fn row23_single_source_flood_is_answered_at_the_leak_rate() {
    let mut server = limited_server("[ratelimit]\ninterval = 3\nburst = 8\nleak = 2\nkod = 0\n");
    let from = socket_from("127.0.0.2:0");
    let n = 1000;
    let replies = flood(&from, target(&server), n);
    let fraction = replies.len() as f64 / n as f64;
    // 8 within the burst, then 1 in 4 of the other 992: 256 expected (binomial sd about 14).
    eprintln!("1 kpps single-source flood, leak 2: answered {} of {n} ({fraction:.3}; expected 0.256)", replies.len());
    assert!((190..=330).contains(&replies.len()), "{} answered", replies.len());
    assert!(replies.iter().all(|r| r.stratum == 2), "kod = 0 sends no KoD");
    let s = summary(&mut server);
    assert_eq!(counter(&s, "kod_rate"), 0, "{s}");
    assert_eq!(counter(&s, "dropped_rate_limited"), n - replies.len() as u64, "{s}");
    assert_eq!(counter(&s, "answered"), replies.len() as u64 + 1, "+1: the readiness probe; {s}");
}

#[test]
fn row24_rotating_source_ports_are_one_client() {
    let mut server = limited_server("[ratelimit]\nburst = 8\nleak = 4\n");
    let mut answered = 0;
    for i in 0..200u64 {
        let s = socket_from("127.0.0.3:0");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.send_to(&NtpPacket::client_request(4, NtpTimestamp::from_bits(i + 1)).to_bytes(), target(&server)).unwrap();
        let mut buf = [0u8; 64];
        answered += s.recv_from(&mut buf).is_ok() as u32;
    }
    // 8 within the burst, then 1 in 16 of 192: 20 expected; unlimited would be 200.
    assert!((8..=45).contains(&answered), "{answered} answered");
    let s = summary(&mut server);
    assert_eq!(counter(&s, "ratelimit_clients_inserted"), 2, "127.0.0.1 (probe) and 127.0.0.3 only: {s}");
}

#[test]
fn kod_rate_is_sent_at_its_rate_and_well_formed() {
    let mut server = limited_server("[ratelimit]\ninterval = 4\nburst = 1\nleak = 2\nkod = 1\n");
    let from = socket_from("127.0.0.4:0");
    let n = 400;
    let replies = flood(&from, target(&server), n);
    let kods: Vec<&NtpPacket> = replies.iter().filter(|r| r.stratum == 0).collect();
    // Not leaked (3/4), then half of those: 0.375 of requests.
    let share = kods.len() as f64 / n as f64;
    assert!((0.28..0.47).contains(&share), "KoD share {share}");
    for k in &kods {
        assert_eq!(k.ref_id, RefId(*b"RATE"));
        assert_eq!(k.leap.to_bits(), 3);
        assert!(k.poll >= 4, "poll is at least the limiter's interval: {}", k.poll);
        assert_eq!(k.origin_timestamp.to_bits() >> 32, 0xF100D, "origin echoes the request");
        assert_eq!((k.receive_timestamp, k.transmit_timestamp), (NtpTimestamp::ZERO, NtpTimestamp::ZERO));
    }
    let s = summary(&mut server);
    assert_eq!(counter(&s, "kod_rate"), kods.len() as u64, "{s}");
}

#[test]
fn deny_list_drops_silently_or_kisses_when_asked() {
    let mut drop_server = limited_server("[access]\ndeny = [\"127.0.0.8/32\"]\n");
    let denied = socket_from("127.0.0.8:0");
    assert!(flood(&denied, target(&drop_server), 5).is_empty());
    let s = summary(&mut drop_server);
    assert_eq!(counter(&s, "dropped_denied"), 5, "{s}");

    let mut kod_server = limited_server("[access]\ndeny = [\"127.0.0.9/32\"]\ndeny-action = \"kod\"\n");
    let denied = socket_from("127.0.0.9:0");
    let replies = flood(&denied, target(&kod_server), 3);
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|r| r.stratum == 0 && r.ref_id == RefId(*b"DENY")));
    let s = summary(&mut kod_server);
    assert_eq!(counter(&s, "kod_deny"), 3, "{s}");
}

#[test]
fn row29_pool_monitor_and_iburst_are_answered_during_a_flood() {
    let mut server = limited_server("[ratelimit]\n");
    let to = target(&server);
    let stop_at = Instant::now() + Duration::from_secs(16);
    // Somebody else floods the whole time (bounded: until stop_at, about 1 kpps).
    let flooder = std::thread::spawn(move || {
        let s = socket_from("127.0.0.5:0");
        let request = NtpPacket::client_request(4, NtpTimestamp::from_bits(1)).to_bytes();
        while Instant::now() < stop_at {
            let _ = s.send_to(&request, to);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let paced = |source: &'static str, count: u64| {
        std::thread::spawn(move || {
            let s = socket_from(source);
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut stratums = Vec::new();
            for i in 0..count {
                let xmt = NtpTimestamp::from_bits(0xABC0_0000 + i);
                s.send_to(&NtpPacket::client_request(4, xmt).to_bytes(), to).unwrap();
                let mut buf = [0u8; 64];
                let (len, _) = s.recv_from(&mut buf).expect("answered");
                let reply = NtpPacket::parse(&buf[..len]).unwrap();
                assert_eq!(reply.origin_timestamp, xmt);
                stratums.push(reply.stratum);
                std::thread::sleep(Duration::from_secs(2));
            }
            stratums
        })
    };
    let monitor = paced("127.0.0.6:0", 3);
    let iburst = paced("127.0.0.7:0", 8);
    assert_eq!(monitor.join().unwrap(), vec![2; 3], "pool monitor: never RATE, DENY or RSTR");
    assert_eq!(iburst.join().unwrap(), vec![2; 8], "iburst: never RATE, DENY or RSTR");
    flooder.join().unwrap();
    let s = summary(&mut server);
    assert!(counter(&s, "dropped_rate_limited") > 1000, "the flood was limited: {s}");
}
