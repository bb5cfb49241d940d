//! BAD_INPUTS.md rows 1-16 over a real UDP socket. One worker and one client socket keep the
//! order: once the reply to a final valid probe arrives, every earlier datagram was processed, so
//! "no reply" is proven without waiting, and the counters logged at stop must match exactly.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use stratum_proto::{NtpMode, NtpPacket, NtpTimestamp};

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    /// Replies we expect, in order, as (request transmit timestamp, request version).
    expected: Vec<(u64, u8)>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    fn send_answered(&mut self, bytes: &[u8]) {
        let xmt = u64::from_be_bytes(bytes[40..48].try_into().unwrap());
        self.expected.push((xmt, (bytes[0] >> 3) & 7));
        self.send(bytes);
    }

    /// Receives exactly the expected replies, then checks nothing else arrives after a probe.
    fn check_replies(&mut self) -> Vec<(Vec<u8>, NtpPacket)> {
        let probe = NtpPacket::client_request(4, NtpTimestamp::from_bits(0x5052_4F42_4521_0000)).to_bytes();
        self.send_answered(&probe);
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        for (xmt, version) in std::mem::take(&mut self.expected) {
            let (len, _) = self.socket.recv_from(&mut buf).expect("an expected reply did not come");
            let reply = NtpPacket::parse(&buf[..len]).expect("reply parses");
            assert_eq!(len, 48, "reply length");
            assert_eq!(reply.origin_timestamp.to_bits(), xmt, "replies out of order or origin not echoed");
            assert_eq!((reply.version, reply.mode), (version, NtpMode::Server));
            out.push((buf[..len].to_vec(), reply));
        }
        out
    }
}

fn request(version: u8, mode: u8, xmt: u64) -> Vec<u8> {
    let mut p = NtpPacket::client_request(version, NtpTimestamp::from_bits(xmt)).to_bytes().to_vec();
    p[0] = (p[0] & !7) | mode;
    p
}

#[test]
fn bad_inputs_rows_1_to_16_over_a_socket() {
    let port = free_port();
    // Loopback is on [ntpq] allow by default (management); here it is a data-plane client, so
    // the allow list names another host and row 7's mode 6 gets nothing (BAD_INPUTS 7 and 58).
    let text = config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2");
    let mut server = Server::start(&format!("{text}\n[ntpq]\nallow = [\"192.0.2.1/32\"]\n"), port);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut c = Client { socket, server: SocketAddr::from(([127, 0, 0, 1], port)), expected: vec![] };
    let good = request(4, 3, 0x1111);

    // Row 1: 0-47 bytes.
    for len in [0, 1, 47] {
        c.send(&good[..len]);
    }
    // Row 2: not a multiple of 4.
    for extra in [1, 2, 3] {
        let mut p = good.clone();
        p.extend(vec![0; extra]);
        c.send(&p);
    }
    // Row 3: versions 0, 5, 6, 7.
    for v in [0, 5, 6, 7] {
        c.send(&request(v, 3, 1));
    }
    // Row 4: versions 1-4 answered in kind.
    for v in 1..=4 {
        c.send_answered(&request(v, 3, 0x400 + v as u64));
    }
    // Row 5: NTPv1 mode 0.
    c.send_answered(&request(1, 0, 0x500));
    // Row 6: modes 1, 2, 4, 5.
    for mode in [1, 2, 4, 5] {
        c.send(&request(4, mode, 1));
    }
    // Row 7: mode 6 (readvar) and 7 (monlist).
    let mut readvar = request(2, 6, 0);
    readvar[1] = 2; // opcode READVAR
    c.send(&readvar[..12]);
    c.send(&readvar);
    c.send(&request(2, 7, 0));
    // Row 8: extension field claiming 12 bytes.
    let mut bad_ext = good.clone();
    bad_ext.extend([0x01, 0x04, 0x00, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    c.send(&bad_ext);
    // Row 9: many small extension fields: answered, not echoed (reply is 48 bytes).
    let mut many = request(4, 3, 0x900);
    for _ in 0..60 {
        many.extend([0x20, 0x05, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
    c.send_answered(&many);
    // Row 10: crypto-NAK and MACs.
    for mac in [4, 20, 24] {
        let mut p = good.clone();
        p.extend(vec![0; mac]);
        c.send(&p);
    }
    // Row 11: oversized.
    for len in [1028, 1500, 9000] {
        let mut p = good.clone();
        p.resize(len, 0);
        c.send(&p);
    }
    // Row 12: garbage in the client's header fields.
    let mut garbage = request(4, 3, 0xC00);
    garbage[0] |= 0xC0;
    garbage[1..40].fill(0xA5);
    c.send_answered(&garbage);
    // Row 13: extreme polls.
    for (i, poll) in [-128i8, 127].into_iter().enumerate() {
        let mut p = request(4, 3, 0xD00 + i as u64);
        p[2] = poll as u8;
        c.send_answered(&p);
    }
    // Row 14: odd transmit timestamps.
    for xmt in [0, u64::MAX, 0xFFFF_FFFF_FFFF_FFF0, 0x0000_0000_0000_0001] {
        c.send_answered(&request(4, 3, xmt));
    }

    let replies = c.check_replies();
    let versions: Vec<u8> = replies.iter().map(|(_, r)| r.version).collect();
    assert_eq!(&versions[..5], &[1, 2, 3, 4, 1], "rows 4 and 5 answer in the request's version");
    for (bytes, r) in &replies {
        assert_eq!(bytes.len(), 48, "row 15: reply never longer than request");
        assert_eq!((r.stratum, r.leap.to_bits()), (2, 0), "row 12: client garbage does not leak in");
        assert!((4..=17).contains(&r.poll), "row 13: poll {} clamped", r.poll);
        // Row 16: the transmit timestamp comes after the receive timestamp.
        assert!(r.transmit_timestamp.since(r.receive_timestamp).to_bits() >= -(1 << 8));
    }

    let log = server.stop_output();
    let summary = log.lines().find(|l| l.contains("stopped: ")).unwrap_or_else(|| panic!("no summary in {log}"));
    // 38 datagrams sent here plus the readiness probe of Server::start; the 12-byte mode 6
    // datagram counts as control too (mode 6 is named before the header's length is checked).
    let expected = "received=39 answered=15 dropped_short=3 dropped_malformed=4 dropped_too_long=3 \
                    dropped_version=4 dropped_mode=4 dropped_control=3 dropped_authenticated=3";
    // The stop line goes on with other counters (transmit stamps, since interleaved mode).
    assert!(summary.contains(expected), "every request counted once, by reason:\n{summary}\nwanted: {expected}");
}

#[test]
fn row16_low_bits_vary_between_replies() {
    let port = free_port();
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2"), port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (first, _, _) = query(addr, 4, Duration::from_secs(1)).unwrap();
    let bits = 32 + first.precision as i32; // random bits below the precision
    assert!(bits > 0, "precision {}", first.precision);
    let mask = (1u64 << bits) - 1;
    let lows: std::collections::HashSet<u64> =
        (0..16).map(|_| query(addr, 4, Duration::from_secs(1)).unwrap().0.receive_timestamp.to_bits() & mask).collect();
    assert!(lows.len() > 8, "low bits look predictable: {lows:?}");
    server.stop();
}
