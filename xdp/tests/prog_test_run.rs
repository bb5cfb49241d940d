//! The steering program against the real kernel verifier and BPF_PROG_TEST_RUN (table of
//! {frame, action, metadata, counter}), and the loader's attach/detach on a veth pair the test
//! creates (unique names, removed on drop). Needs root (CAP_BPF, CAP_NET_ADMIN): skips with a
//! reason elsewhere, fails when CI is set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stratum_proto::frame::checksum;
use stratum_xdp::meta::{StampSource, META_HW, META_LEN, META_MAGIC, META_TAI};
use stratum_xdp::program::{
    query_xdp, AttachError, AttachedMode, LocalAddress, ProgramConfig, ProgramCounters, SteeringProgram, TestProgram,
    XdpMode, XDP_DROP, XDP_PASS,
};

mod common;
use common::{clock_tai_ns, ifindex, ip, require_root, veth_for, veth_ready, Veth};

// ---------------------------------------------------------------------------------------------
// Prerequisites

// ---------------------------------------------------------------------------------------------
// Frames

const PORT: u16 = 123;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const SERVER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 7);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5e, 0, 0, 0, 0, 1);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;

/// A 48-byte NTPv4 client request.
fn ntp_request() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23; // LI 0, version 4, mode 3
    p[40..48].copy_from_slice(&0xe9f0_1234_5678_9abcu64.to_be_bytes()); // transmit timestamp
    p
}

/// Ethernet header with `vlans` tags (outer first: (TPID, VID)) and then `ethertype`.
fn eth(vlans: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    for &(tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (with `options`, a multiple of 4 bytes) + `payload`; `frag` is the flags/offset word.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 20 + options.len();
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[2..4].copy_from_slice(&((ihl + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..].copy_from_slice(options);
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 fixed header with `next` + `payload`.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// UDP header + payload; `len` overrides the length field. Checksum 0 (none): the program does
/// not look at it.
fn udp(dport: u16, payload: &[u8], len: Option<u16>) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.unwrap_or(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `l3` in an untagged Ethernet frame of type `ethertype`.
fn framed(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    concat(&[&eth(&[], ethertype), l3])
}

fn ntp4_from(src: Ipv4Addr) -> Vec<u8> {
    framed(ETH_P_IP, &ipv4(src, SERVER4, IPPROTO_UDP, &[], 0, &udp(PORT, &ntp_request(), None)))
}

fn ntp6_from(src: Ipv6Addr) -> Vec<u8> {
    framed(ETH_P_IPV6, &ipv6(src, SERVER6, IPPROTO_UDP, &udp(PORT, &ntp_request(), None)))
}

fn ntp4() -> Vec<u8> {
    ntp4_from(CLIENT4)
}

fn ntp6() -> Vec<u8> {
    ntp6_from(CLIENT6)
}

fn arp() -> Vec<u8> {
    let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1];
    body.extend_from_slice(&CLIENT_MAC);
    body.extend_from_slice(&CLIENT4.octets());
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&SERVER4.octets());
    framed(ETH_P_ARP, &body)
}

// ---------------------------------------------------------------------------------------------
// The table

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    Passed,
    Malformed,
    NoSocket,
    Denied,
    NotOurs,
}

fn delta(before: &ProgramCounters, after: &ProgramCounters) -> ProgramCounters {
    ProgramCounters {
        redirected: after.redirected - before.redirected,
        passed: after.passed - before.passed,
        malformed: after.malformed - before.malformed,
        no_socket: after.no_socket - before.no_socket,
        denied: after.denied - before.denied,
        not_ours: after.not_ours - before.not_ours,
    }
}

impl Counter {
    /// The action the program returns for a frame it counts here, and whether it writes the
    /// metadata: only a request it steers (here: to no socket) is stamped; a frame that is not
    /// ours passes untouched; a malformed or denied request is dropped.
    fn expected(self) -> (u32, bool) {
        match self {
            Counter::NoSocket => (XDP_PASS, true),
            Counter::Passed | Counter::NotOurs => (XDP_PASS, false),
            Counter::Malformed | Counter::Denied => (XDP_DROP, false),
        }
    }
}

fn one(counter: Counter) -> ProgramCounters {
    let mut c = ProgramCounters::default();
    match counter {
        Counter::Passed => c.passed = 1,
        Counter::Malformed => c.malformed = 1,
        Counter::NoSocket => c.no_socket = 1,
        Counter::Denied => c.denied = 1,
        Counter::NotOurs => c.not_ours = 1,
    }
    c
}

/// A frame and the counter it must move (which says the action and the metadata: see
/// [`Counter::expected`]).
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    counter: Counter,
}

fn case(name: &'static str, frame: Vec<u8>, counter: Counter) -> Case {
    Case { name, frame, counter }
}

/// Runs `frame` and checks action, metadata, the untouched frame and that exactly `counter` moved.
fn check(prog: &TestProgram, c: &Case) {
    let (action, meta) = c.counter.expected();
    let before = prog.counters().unwrap();
    let out = prog.test_run(&c.frame).unwrap_or_else(|e| panic!("{}: test run failed: {e}", c.name));
    let after = prog.counters().unwrap();
    assert_eq!(out.action, action, "{}: action", c.name);
    assert_eq!(out.frame_out, c.frame, "{}: the frame itself is never changed", c.name);
    if meta {
        assert_eq!(out.meta_len, META_LEN, "{}: metadata length", c.name);
        let area = out.meta.unwrap();
        assert_eq!(u32::from_ne_bytes(area[8..12].try_into().unwrap()), META_TAI, "{}: flags", c.name);
        assert_eq!(u32::from_ne_bytes(area[12..16].try_into().unwrap()), META_MAGIC, "{}: magic", c.name);
        let meta = out.rx_metadata().unwrap();
        assert_eq!(meta.source, StampSource::Tai, "{}", c.name);
        assert!(meta.rx_time_ns > 0, "{}", c.name);
    } else {
        assert_eq!(out.meta_len, 0, "{}: no metadata", c.name);
        assert_eq!(out.meta, None, "{}", c.name);
    }
    assert_eq!(delta(&before, &after), one(c.counter), "{}: counters", c.name);
}

/// The program loaded for `port`, where `test`'s prerequisite (root) holds; None where it does
/// not (outside CI: the test has said why and returns).
fn loaded(test: &str, port: u16) -> Option<TestProgram> {
    let config = ProgramConfig { port, hardware_timestamps: false };
    require_root(test).then(|| TestProgram::load(&config).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn frame_table() {
    let Some(prog) = loaded("frame_table", PORT) else { return };
    let ntp = ntp_request();
    let v4 = |payload: &[u8]| ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &[], 0, payload);
    let options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]; // router alert, NOP NOP NOP EOL
    let icmp_echo = [8u8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02; // SYN

    // A hop-by-hop header (8 bytes: next UDP, length 0, PadN) in front of an NTP request.
    let hbh = concat(&[&[IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0], &udp(PORT, &ntp, None)]);
    // IPv4 total length that ends before the UDP datagram does.
    let mut short_ip = ntp4();
    short_ip[14 + 2..14 + 4].copy_from_slice(&((20 + 8 + 40) as u16).to_be_bytes());
    // IPv6 payload length shorter than the UDP datagram.
    let mut short_ip6 = ntp6();
    short_ip6[14 + 4..14 + 6].copy_from_slice(&40u16.to_be_bytes());
    // Ethernet padding after the request (a short frame padded to 60 bytes would look like this).
    let padded = concat(&[&ntp4(), &[0u8; 18]]);
    // An NTP request in an IPv4 packet with this flags/fragment offset word.
    let fragment = |frag| framed(ETH_P_IP, &ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &[], frag, &udp(PORT, &ntp, None)));

    let mode6 = [0x26u8, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let cases = vec![
        case("NTP over IPv4", ntp4(), Counter::NoSocket),
        case(
            "NTP over IPv4 with options",
            framed(ETH_P_IP, &ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &options, 0, &udp(PORT, &ntp, None))),
            Counter::NoSocket,
        ),
        case("NTP over IPv6", ntp6(), Counter::NoSocket),
        case(
            "NTP over one VLAN tag",
            concat(&[&eth(&[(ETH_P_8021Q, 10)], ETH_P_IP), &v4(&udp(PORT, &ntp, None))]),
            Counter::NoSocket,
        ),
        case(
            "NTP over QinQ (802.1ad + 802.1Q)",
            concat(&[
                &eth(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)], ETH_P_IPV6),
                &ipv6(CLIENT6, SERVER6, IPPROTO_UDP, &udp(PORT, &ntp, None)),
            ]),
            Counter::NoSocket,
        ),
        case(
            "three VLAN tags are not parsed",
            concat(&[
                &eth(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10), (ETH_P_8021Q, 11)], ETH_P_IP),
                &v4(&udp(PORT, &ntp, None)),
            ]),
            Counter::Passed,
        ),
        case(
            "NTP with a 68-byte extension (longer is fine)",
            framed(ETH_P_IP, &v4(&udp(PORT, &[&ntp[..], &[0u8; 68]].concat(), None))),
            Counter::NoSocket,
        ),
        case("Ethernet padding after the request", padded, Counter::NoSocket),
        case("wrong UDP port", framed(ETH_P_IP, &v4(&udp(PORT + 1, &ntp, None))), Counter::Passed),
        case("NTP source port to another port", framed(ETH_P_IP, &v4(&udp(40000, &ntp, None))), Counter::Passed),
        case("short NTP payload (47 bytes)", framed(ETH_P_IP, &v4(&udp(PORT, &ntp[..47], None))), Counter::Malformed),
        // Mode 6 (ntpq) requests are 12 bytes: to the workers, which hand an allowed source's on.
        case("mode 6 READVAR (12 bytes)", framed(ETH_P_IP, &v4(&udp(PORT, &mode6, None))), Counter::NoSocket),
        case(
            "mode 6 shorter than its header",
            framed(ETH_P_IP, &v4(&udp(PORT, &mode6[..11], None))),
            Counter::Malformed,
        ),
        case("mode 3 of 12 bytes", framed(ETH_P_IP, &v4(&udp(PORT, &ntp[..12], None))), Counter::Malformed),
        case("empty UDP payload", framed(ETH_P_IP, &v4(&udp(PORT, &[], None))), Counter::Malformed),
        case("UDP length below 8", framed(ETH_P_IP, &v4(&udp(PORT, &ntp, Some(7)))), Counter::Malformed),
        case(
            "UDP length past the frame",
            framed(ETH_P_IP, &v4(&udp(PORT, &ntp, Some(8 + 48 + 1)))),
            Counter::Malformed,
        ),
        case("UDP length past the IPv4 packet", short_ip, Counter::Malformed),
        case("UDP length past the IPv6 payload", short_ip6, Counter::Malformed),
        case(
            "UDP length says short, payload is 48",
            framed(ETH_P_IP, &v4(&udp(PORT, &ntp, Some(8 + 40)))),
            Counter::Malformed,
        ),
        case("IPv4 first fragment (MF)", fragment(0x2000), Counter::Passed),
        case("IPv4 later fragment (offset 7)", fragment(7), Counter::Passed),
        case("IPv4 last fragment (offset, no MF)", fragment(0x0100), Counter::Passed),
        case("IPv4 DF is not a fragment", fragment(0x4000), Counter::NoSocket),
        case(
            "IPv6 hop-by-hop header",
            framed(ETH_P_IPV6, &ipv6(CLIENT6, SERVER6, IPPROTO_HOPOPTS, &hbh)),
            Counter::Passed,
        ),
        case("ARP", arp(), Counter::Passed),
        case("ICMP echo", framed(ETH_P_IP, &v4_proto(IPPROTO_ICMP, &icmp_echo)), Counter::Passed),
        case("TCP to port 123", framed(ETH_P_IP, &v4_proto(IPPROTO_TCP, &tcp)), Counter::Passed),
        case(
            "IPv4 IHL below 5",
            {
                let mut f = ntp4();
                f[14] = 0x44;
                f
            },
            Counter::Passed,
        ),
        case(
            "IPv4 ethertype with an IPv6 header",
            framed(ETH_P_IP, &ipv6(CLIENT6, SERVER6, IPPROTO_UDP, &udp(PORT, &ntp, None))),
            Counter::Passed,
        ),
        case(
            "IPv6 ethertype with an IPv4 header",
            concat(&[&eth(&[], ETH_P_IPV6), &v4(&udp(PORT, &ntp, None)), &[0u8; 20]]),
            Counter::Passed,
        ),
        case("unknown ethertype", framed(0x88F7, &[0u8; 44]), Counter::Passed),
    ];
    for c in &cases {
        check(&prog, c);
    }
    eprintln!("{} cases", cases.len());
}

fn v4_proto(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4(CLIENT4, SERVER4, proto, &[], 0, payload)
}

#[test]
fn the_port_is_a_knob() {
    let Some(prog) = loaded("the_port_is_a_knob", 4123) else { return };
    let ntp = ntp_request();
    let to = |port| framed(ETH_P_IP, &ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &[], 0, &udp(port, &ntp, None)));
    check(&prog, &case("port 4123 is ours", to(4123), Counter::NoSocket));
    check(&prog, &case("port 123 is not", to(123), Counter::Passed));
}

/// Every prefix of a frame: shorter than Ethernet the kernel refuses the run; otherwise the
/// program passes it while the UDP header is incomplete, drops it (malformed) while the datagram
/// is, and steers the whole frame.
#[test]
fn truncated_frames() {
    let Some(prog) = loaded("truncated_frames", PORT) else { return };
    let ntp = ntp_request();
    let frames: Vec<(&str, Vec<u8>, usize)> = vec![
        ("IPv4", ntp4(), 14 + 20 + 8),
        (
            "IPv4 with options",
            framed(ETH_P_IP, &ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &[1; 40], 0, &udp(PORT, &ntp, None))),
            14 + 60 + 8,
        ),
        ("IPv6", ntp6(), 14 + 40 + 8),
        (
            "QinQ IPv4",
            concat(&[
                &eth(&[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2)], ETH_P_IP),
                &ipv4(CLIENT4, SERVER4, IPPROTO_UDP, &[], 0, &udp(PORT, &ntp, None)),
            ]),
            22 + 20 + 8,
        ),
        ("ARP", arp(), usize::MAX),
    ];
    for (name, frame, udp_end) in frames {
        for len in 0..=frame.len() {
            let cut = &frame[..len];
            let before = prog.counters().unwrap();
            let out = match prog.test_run(cut) {
                Ok(out) => out,
                Err(e) => {
                    assert!(len < 14, "{name} cut to {len}: {e}");
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name} cut to {len}: {e}");
                    continue;
                }
            };
            assert!(len >= 14, "{name} cut to {len}: the kernel ran a frame shorter than Ethernet");
            let d = delta(&before, &prog.counters().unwrap());
            let (action, counter) = if len == frame.len() && udp_end != usize::MAX {
                (XDP_PASS, Counter::NoSocket)
            } else if len >= udp_end {
                (XDP_DROP, Counter::Malformed)
            } else {
                (XDP_PASS, Counter::Passed)
            };
            assert_eq!(out.action, action, "{name} cut to {len}");
            assert_eq!(d, one(counter), "{name} cut to {len}");
            assert_eq!(out.frame_out, cut, "{name} cut to {len}");
        }
    }
}

#[test]
fn deny_tries() {
    let Some(prog) = loaded("deny_tries", PORT) else { return };
    let inside4 = Ipv4Addr::new(203, 0, 113, 77);
    let outside4 = Ipv4Addr::new(203, 0, 114, 77);
    let inside6: Ipv6Addr = "2001:db8:bad:1::99".parse().unwrap();
    let outside6: Ipv6Addr = "2001:db8:bae::99".parse().unwrap();

    prog.deny(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)), 24).unwrap(); // host bits are cleared
    prog.deny("2001:db8:bad::".parse().unwrap(), 48).unwrap();
    check(&prog, &case("v4 source in 203.0.113.0/24", ntp4_from(inside4), Counter::Denied));
    check(&prog, &case("v4 source outside", ntp4_from(outside4), Counter::NoSocket));
    check(&prog, &case("v6 source in 2001:db8:bad::/48", ntp6_from(inside6), Counter::Denied));
    check(&prog, &case("v6 source outside", ntp6_from(outside6), Counter::NoSocket));
    // The deny list is for our port only: the rest of a denied host's traffic is the kernel's.
    let other = framed(ETH_P_IP, &ipv4(inside4, SERVER4, IPPROTO_UDP, &[], 0, &udp(53, &ntp_request(), None)));
    check(&prog, &case("denied host, other port", other, Counter::Passed));
    // Malformed is judged before the deny list.
    let short = framed(ETH_P_IP, &ipv4(inside4, SERVER4, IPPROTO_UDP, &[], 0, &udp(PORT, &[0; 10], None)));
    check(&prog, &case("denied host, malformed", short, Counter::Malformed));
    // A longer prefix inside; a /32 and a /128 (single hosts); /0 denies everything.
    prog.deny(IpAddr::V4(outside4), 32).unwrap();
    check(&prog, &case("v4 /32", ntp4_from(outside4), Counter::Denied));
    prog.remove_deny(IpAddr::V4(outside4), 32).unwrap();
    check(&prog, &case("v4 /32 removed", ntp4_from(outside4), Counter::NoSocket));

    prog.remove_deny(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24).unwrap();
    check(&prog, &case("v4 removed", ntp4_from(inside4), Counter::NoSocket));
    check(&prog, &case("v6 still denied", ntp6_from(inside6), Counter::Denied));
    prog.remove_deny("2001:db8:bad:ffff::".parse().unwrap(), 48).unwrap();
    check(&prog, &case("v6 removed", ntp6_from(inside6), Counter::NoSocket));

    prog.deny(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap();
    check(&prog, &case("v6 ::/0", ntp6_from(outside6), Counter::Denied));
    check(&prog, &case("v6 ::/0 leaves v4 alone", ntp4_from(outside4), Counter::NoSocket));

    let missing = prog.remove_deny(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8).unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "{missing}");
    let too_long = prog.deny(IpAddr::V4(inside4), 33).unwrap_err();
    assert_eq!(too_long.kind(), std::io::ErrorKind::InvalidInput, "{too_long}");
}

/// With the check on, only requests to this host are ours: to the interface's MAC, to one of the
/// host's addresses, from none of its own or broadcast addresses. Everything else goes to the
/// kernel untouched (which forwards it, or drops it as a martian), as with the socket backend.
#[test]
fn only_requests_addressed_to_us_are_steered() {
    let Some(prog) = loaded("only_requests_addressed_to_us_are_steered", PORT) else { return };
    let anycast4 = Ipv4Addr::new(192, 0, 2, 53);
    let broadcast4 = Ipv4Addr::new(192, 0, 2, 255);
    let local = [
        LocalAddress::Unicast(IpAddr::V4(SERVER4)),
        LocalAddress::Unicast(IpAddr::V4(anycast4)),
        LocalAddress::Broadcast(IpAddr::V4(broadcast4)),
        LocalAddress::Unicast(IpAddr::V6(SERVER6)),
    ];
    // Off (the default, and the load generator's setting): everything to the port is steered.
    check(&prog, &case("check off", ntp4(), Counter::NoSocket));
    let to_other_ip = framed(
        ETH_P_IP,
        &ipv4(CLIENT4, Ipv4Addr::new(192, 0, 2, 9), IPPROTO_UDP, &[], 0, &udp(PORT, &ntp_request(), None)),
    );
    check(&prog, &case("check off: another IP is steered", to_other_ip.clone(), Counter::NoSocket));

    prog.set_local_addresses(&local).unwrap();
    prog.set_addressed_to_us(SERVER_MAC, true).unwrap();
    check(&prog, &case("ours, v4", ntp4(), Counter::NoSocket));
    check(&prog, &case("ours, v6", ntp6(), Counter::NoSocket));
    let to_anycast = framed(ETH_P_IP, &ipv4(CLIENT4, anycast4, IPPROTO_UDP, &[], 0, &udp(PORT, &ntp_request(), None)));
    check(&prog, &case("to an address on lo (anycast)", to_anycast, Counter::NoSocket));
    check(&prog, &case("to another IP on the link", to_other_ip, Counter::NotOurs));
    let mut other_mac = ntp4();
    other_mac[5] ^= 0x10;
    check(&prog, &case("to another MAC", other_mac, Counter::NotOurs));
    let to_other6 = framed(
        ETH_P_IPV6,
        &ipv6(CLIENT6, "2001:db8:5e::9".parse().unwrap(), IPPROTO_UDP, &udp(PORT, &ntp_request(), None)),
    );
    check(&prog, &case("to another IPv6 address", to_other6, Counter::NotOurs));
    check(&prog, &case("from our own address", ntp4_from(SERVER4), Counter::NotOurs));
    check(&prog, &case("from our broadcast address", ntp4_from(broadcast4), Counter::NotOurs));
    check(&prog, &case("from our own IPv6 address", ntp6_from(SERVER6), Counter::NotOurs));
    let to_broadcast =
        framed(ETH_P_IP, &ipv4(CLIENT4, broadcast4, IPPROTO_UDP, &[], 0, &udp(PORT, &ntp_request(), None)));
    check(&prog, &case("to our broadcast address", to_broadcast, Counter::NotOurs));
    // Other traffic to another host is the kernel's as before (passed, not "not ours").
    check(&prog, &case("ARP", arp(), Counter::Passed));

    // The table follows the host: an address removed is no longer ours.
    prog.set_local_addresses(&local[1..]).unwrap();
    check(&prog, &case("address removed", ntp4(), Counter::NotOurs));
    prog.set_local_addresses(&local).unwrap();
    check(&prog, &case("address back", ntp4(), Counter::NoSocket));
    prog.set_addressed_to_us(SERVER_MAC, false).unwrap();
    check(&prog, &case("check off again", ntp4_from(SERVER4), Counter::NoSocket));
}

#[test]
fn tai_stamp_is_clock_tai() {
    let Some(prog) = loaded("tai_stamp_is_clock_tai", PORT) else { return };
    let frame = ntp4();
    for _ in 0..20 {
        let before = clock_tai_ns();
        let out = prog.test_run(&frame).unwrap();
        let after = clock_tai_ns();
        let meta = out.rx_metadata().expect("metadata written");
        assert_eq!(meta.source, StampSource::Tai);
        // Read inside the run: between the two reads around it (a few ms of slack for a clock
        // step between them).
        let slack = 5_000_000;
        assert!(
            meta.rx_time_ns + slack >= before && meta.rx_time_ns <= after + slack,
            "stamp {} not within [{before}, {after}]",
            meta.rx_time_ns
        );
    }
}

/// The raw layout the kernel hands back: BPF_PROG_TEST_RUN's data_out starts at data_meta, and
/// the output context's `data` field is the metadata length.
#[test]
fn metadata_layout_in_test_run_output() {
    let Some(prog) = loaded("metadata_layout_in_test_run_output", PORT) else { return };
    let frame = ntp6();
    let out = prog.test_run(&frame).unwrap();
    assert_eq!(out.meta_len, 16);
    let area = out.meta.unwrap();
    assert_eq!(u32::from_ne_bytes(area[8..12].try_into().unwrap()), META_TAI);
    assert_ne!(u32::from_ne_bytes(area[8..12].try_into().unwrap()), META_HW);
    assert_eq!(&area[12..16], &META_MAGIC.to_ne_bytes());
    assert_eq!(out.frame_out, frame);
}

// ---------------------------------------------------------------------------------------------
// Attach on veth

/// Whether `ip -d link show` mentions an XDP program.
fn ip_link_has_xdp(name: &str) -> bool {
    let out = Command::new("ip").args(["-d", "link", "show", "dev", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

fn config() -> ProgramConfig {
    ProgramConfig { port: PORT, hardware_timestamps: false }
}

#[test]
fn attach_modes_and_detach_on_drop() {
    let Some(veth) = veth_for("attach_modes_and_detach_on_drop", "txm") else { return };
    let index = ifindex(&veth.a);
    for (mode, want) in [
        (XdpMode::Auto, AttachedMode::Driver),
        (XdpMode::Driver, AttachedMode::Driver),
        (XdpMode::Generic, AttachedMode::Generic),
    ] {
        let prog = SteeringProgram::attach(&veth.a, mode, &config()).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(prog.mode(), want, "{mode}");
        assert_eq!(prog.interface(), veth.a);
        assert_eq!(prog.ifindex(), index);
        assert!(!prog.hardware_timestamps());
        let q = query_xdp(index).unwrap();
        let id = prog.program_id().unwrap();
        match want {
            AttachedMode::Driver => assert_eq!((q.driver_prog_id, q.generic_prog_id), (id, 0), "{mode}"),
            AttachedMode::Generic => assert_eq!((q.driver_prog_id, q.generic_prog_id), (0, id), "{mode}"),
        }
        assert!(ip_link_has_xdp(&veth.a), "{mode}: ip link shows the program");
        // Nothing of ours came by (`passed` may count the peer's IPv6 neighbour discovery).
        let c = prog.counters().unwrap();
        assert_eq!((c.redirected, c.malformed, c.no_socket, c.denied), (0, 0, 0, 0), "{mode}: {c:?}");
        drop(prog);
        assert!(wait_detached(index), "{mode}: detached on drop");
        assert!(!ip_link_has_xdp(&veth.a), "{mode}: ip link shows no program after drop");
    }
}

#[test]
fn hardware_timestamps_variant() {
    let Some(veth) = veth_for("hardware_timestamps_variant", "txh") else { return };
    let hw = ProgramConfig { port: PORT, hardware_timestamps: true };
    // Driver mode: the device-bound variant loads and attaches on veth (the kfunc returns no
    // stamp there at run time, so frames still carry the TAI stamp).
    let prog = SteeringProgram::attach(&veth.a, XdpMode::Auto, &hw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prog.mode(), AttachedMode::Driver);
    assert!(prog.hardware_timestamps(), "the device-bound variant is attached in driver mode");
    assert_eq!(prog.hardware_timestamps_fallback(), None);
    let index = prog.ifindex();
    drop(prog);
    assert!(wait_detached(index));
    // Generic mode never takes a device-bound program: the TAI variant.
    let prog = SteeringProgram::attach(&veth.a, XdpMode::Generic, &hw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prog.mode(), AttachedMode::Generic);
    assert!(!prog.hardware_timestamps());
    assert_eq!(prog.hardware_timestamps_fallback(), Some("generic mode has no NIC receive timestamps"));
}

/// A bridge interface (no native XDP; this kernel has no dummy driver), removed when dropped.
struct Bridge(String);

impl Bridge {
    fn new(tag: &str) -> Self {
        let name = format!("stxbr{tag}{}", std::process::id() % 10000);
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        ip(&["link", "add", &name, "type", "bridge"]);
        let bridge = Self(name);
        ip(&["link", "set", &bridge.0, "up"]);
        bridge
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn auto_falls_back_to_generic() {
    if !veth_ready("auto_falls_back_to_generic") {
        return;
    }
    let bridge = Bridge::new("a");
    for hw in [false, true] {
        let config = ProgramConfig { port: PORT, hardware_timestamps: hw };
        let prog = SteeringProgram::attach(&bridge.0, XdpMode::Auto, &config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prog.mode(), AttachedMode::Generic, "hw {hw}");
        assert!(!prog.hardware_timestamps(), "generic mode runs the TAI variant");
        assert_eq!(prog.hardware_timestamps_fallback().is_some(), hw, "{:?}", prog.hardware_timestamps_fallback());
        if hw {
            eprintln!("hardware timestamps on a bridge: {}", prog.hardware_timestamps_fallback().unwrap());
        }
        assert_eq!(query_xdp(prog.ifindex()).unwrap().generic_prog_id, prog.program_id().unwrap());
        let index = prog.ifindex();
        drop(prog);
        assert!(wait_detached(index));
    }
}

#[test]
fn attach_errors() {
    if !veth_ready("attach_errors") {
        return;
    }
    let e = SteeringProgram::attach("stxnosuch0", XdpMode::Auto, &config()).unwrap_err();
    assert!(matches!(e, AttachError::NoSuchInterface(ref i) if i == "stxnosuch0"), "{e:?}");
    assert_eq!(e.to_string(), "cannot attach XDP to stxnosuch0: no such interface");

    let e = SteeringProgram::attach("a/b\0", XdpMode::Auto, &config()).unwrap_err();
    assert!(matches!(e, AttachError::NoSuchInterface(_)), "{e:?}");

    // A second program on the same interface: refused, the first stays.
    let veth = Veth::new("txe");
    let first = SteeringProgram::attach(&veth.a, XdpMode::Auto, &config()).unwrap();
    let e = SteeringProgram::attach(&veth.a, XdpMode::Auto, &config()).unwrap_err();
    // Our own link holds it, and the error says so (not `ip link set ... xdp off`, which cannot
    // remove a link).
    match &e {
        AttachError::Busy { interface, holder: Some(h) } => {
            assert_eq!((interface, h.pid), (&veth.a, std::process::id()), "{e}")
        }
        other => panic!("busy: {other:?}"),
    }
    assert!(!e.to_string().contains('\n'));
    assert!(e.to_string().contains(&format!("(pid {})", std::process::id())), "{e}");
    assert!(!e.to_string().contains("xdp off"), "{e}");
    assert_eq!(query_xdp(first.ifindex()).unwrap().driver_prog_id, first.program_id().unwrap());

    // A bridge has no native XDP.
    let bridge = Bridge::new("e");
    let e = SteeringProgram::attach(&bridge.0, XdpMode::Driver, &config()).unwrap_err();
    match &e {
        AttachError::Unsupported { interface, mode, .. } => {
            assert_eq!((interface, *mode), (&bridge.0, XdpMode::Driver))
        }
        other => panic!("bridge in driver mode: {other:?}"),
    }
    assert!(e.to_string().contains("no native XDP"), "{e}");
    eprintln!("{e}");
}

#[test]
fn socket_slots() {
    let Some(veth) = veth_for("socket_slots", "txs") else { return };
    let prog = SteeringProgram::attach(&veth.a, XdpMode::Generic, &config()).unwrap();
    // An XSKMAP only takes AF_XDP sockets.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    use std::os::fd::AsFd;
    assert!(prog.register_socket(0, udp.as_fd()).is_err());
    assert_eq!(prog.register_socket(256, udp.as_fd()).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    // Emptying an empty slot is fine (the kernel's XSKMAP delete is idempotent).
    prog.unregister_socket(0).unwrap();
    assert_eq!(prog.unregister_socket(256).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------------------------------------
// Real traffic through an attached program, and kill -9

const CHILD_ENV: &str = "STRATUM_XDP_TEST_CHILD";

/// Not a test of its own: the body of the child processes the tests below start (re-running this
/// test binary with CHILD_ENV set). "attach:IFACE" attaches and waits to be killed;
/// "send:ADDR:PORT:N" sends N NTP requests.
#[test]
fn child_process() {
    let Ok(what) = std::env::var(CHILD_ENV) else { return };
    if let Some(interface) = what.strip_prefix("attach:") {
        let prog = SteeringProgram::attach(interface, XdpMode::Auto, &config()).unwrap();
        println!("attached {}", prog.program_id().unwrap());
        std::thread::sleep(Duration::from_secs(60));
        drop(prog);
    } else if let Some(rest) = what.strip_prefix("send:") {
        let mut parts = rest.split(',');
        let to: std::net::SocketAddr = parts.next().unwrap().parse().unwrap();
        let n: usize = parts.next().unwrap().parse().unwrap();
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..n {
            socket.send_to(&ntp_request(), to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The arguments that make this test binary run only [`child_process`].
const CHILD_ARGS: [&str; 4] = ["--exact", "child_process", "--nocapture", "--test-threads=1"];

fn child(value: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(CHILD_ARGS).env(CHILD_ENV, value);
    cmd
}

#[test]
fn kill_9_detaches() {
    let Some(veth) = veth_for("kill_9_detaches", "txk") else { return };
    let index = ifindex(&veth.a);
    let mut proc = child(&format!("attach:{}", veth.a)).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = proc.stdout.take().unwrap();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Read until the child says it attached.
    let mut buf = [0u8; 256];
    while !line.contains("attached") {
        use std::io::Read;
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0 && Instant::now() < deadline, "the child exited before attaching: {line:?}");
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let q = query_xdp(index).unwrap();
    assert!(q.driver_prog_id != 0, "the child's program is attached: {q:?}");
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    assert!(wait_detached(index), "still attached after the child died");
    assert!(!ip_link_has_xdp(&veth.a));
}

/// Whether the interface has no XDP program, within a second. Closing the link's last file
/// detaches at once, but another test thread spawning a process holds a copy of every fd (close-
/// on-exec ones included) between its fork and exec, so the last close can come a moment later.
fn wait_detached(ifindex: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while query_xdp(ifindex).unwrap().any() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A network namespace, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A client in a network namespace of its own behind a veth pair: end b (10.78.`net`.2) in the
/// namespace, end a (10.78.`net`.1, the server) in the root namespace, where the program under
/// test is attached. All removed when dropped.
struct ClientNamespace {
    // Dropped first: the namespace, then the pair.
    ns: Netns,
    veth: Veth,
    server: Ipv4Addr,
    client: Ipv4Addr,
}

impl ClientNamespace {
    /// The pair is named `tx<tag>...`, the namespace `stxns<tag>...`; `net` is the /24.
    fn new(tag: &str, net: u8) -> Self {
        let veth = Veth::new(&format!("tx{tag}"));
        let ns = Netns(format!("stxns{tag}{}", std::process::id() % 10000));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        ip(&["netns", "add", &ns.0]);
        ip(&["link", "set", &veth.b, "netns", &ns.0]);
        let server = Ipv4Addr::new(10, 78, net, 1);
        let client = Ipv4Addr::new(10, 78, net, 2);
        ip(&["addr", "add", &format!("{server}/24"), "dev", &veth.a]);
        ip(&["netns", "exec", &ns.0, "ip", "addr", "add", &format!("{client}/24"), "dev", &veth.b]);
        ip(&["netns", "exec", &ns.0, "ip", "link", "set", &veth.b, "up"]);
        ip(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]);
        Self { ns, veth, server, client }
    }

    /// Sends `n` NTP requests from the client to the server's NTP port (a child process of this
    /// test binary, run in the namespace).
    fn send(&self, n: usize) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.ns.0])
            .arg(std::env::current_exe().unwrap())
            .args(CHILD_ARGS)
            .env(CHILD_ENV, format!("send:{}:{PORT},{n}", self.server))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Requests from a namespace over veth reach the attached program: with no AF_XDP socket they
/// count `no_socket` and go on to the kernel; ARP passes; a denied source is dropped.
#[test]
fn real_traffic_over_veth() {
    if !veth_ready("real_traffic_over_veth") {
        return;
    }
    for (tag, mode) in [("d", XdpMode::Driver), ("g", XdpMode::Generic)] {
        let net = 100 + (std::process::id() % 50) as u8 * 2 + u8::from(tag == "g");
        let ns = ClientNamespace::new(&format!("t{tag}"), net);
        let prog = SteeringProgram::attach(&ns.veth.a, mode, &config()).unwrap_or_else(|e| panic!("{mode}: {e}"));
        ns.send(10);
        let c = wait_counters(&prog, |c| c.no_socket >= 10);
        assert_eq!(c.no_socket, 10, "{mode}: {c:?}");
        assert!(c.passed >= 1, "{mode}: ARP went through the program to the kernel: {c:?}");
        assert_eq!((c.redirected, c.malformed, c.denied), (0, 0, 0), "{mode}: {c:?}");

        prog.deny(IpAddr::V4(ns.client), 32).unwrap();
        ns.send(5);
        let c = wait_counters(&prog, |c| c.denied >= 5);
        assert_eq!((c.no_socket, c.denied), (10, 5), "{mode}: {c:?}");
    }
}

fn wait_counters(prog: &SteeringProgram, done: impl Fn(&ProgramCounters) -> bool) -> ProgramCounters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = prog.counters().unwrap();
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole path: requests from a namespace over veth are redirected to an AF_XDP socket bound
/// to queue 0, with the TAI metadata in front of each frame (veth has no NIC stamp, so the
/// device-bound variant writes the TAI one too); unregistering the socket hands them back to the
/// kernel.
#[test]
fn redirect_to_an_af_xdp_socket() {
    use std::os::fd::AsFd;
    use stratum_xdp::xsk::{XskConfig, XskSocket};

    if !veth_ready("redirect_to_an_af_xdp_socket") {
        return;
    }
    for (tag, mode, hw) in [("d", XdpMode::Driver, true), ("g", XdpMode::Generic, false)] {
        let net = 150 + (std::process::id() % 50) as u8 * 2 + u8::from(tag == "g");
        let ns = ClientNamespace::new(&format!("r{tag}"), net);

        let config = ProgramConfig { port: PORT, hardware_timestamps: hw };
        let prog = SteeringProgram::attach(&ns.veth.a, mode, &config).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(prog.hardware_timestamps(), hw);
        let xsk_config = XskConfig { initial_fill: 1024, ..XskConfig::default() };
        let mut xsk = XskSocket::open(prog.ifindex(), 0, &xsk_config).expect("AF_XDP socket on veth");
        prog.register_socket(0, xsk.as_fd()).unwrap();

        let before = clock_tai_ns();
        ns.send(8);
        let after = clock_tai_ns();
        let mut descs = [libc::xdp_desc { addr: 0, len: 0, options: 0 }; 16];
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 8 && Instant::now() < deadline {
            let _ = xsk.wait_readable(100);
            let n = xsk.rx.pop(&mut descs);
            got.extend_from_slice(&descs[..n]);
        }
        assert_eq!(got.len(), 8, "{mode}: frames on the RX ring");
        for d in &got {
            let frame = xsk.umem.data(d.addr, d.len).unwrap();
            assert_eq!(d.len as usize, 14 + 20 + 8 + 48, "{mode}");
            assert_eq!(&frame[14 + 12..14 + 16], &ns.client.octets(), "{mode}: from the client");
            assert_eq!(&frame[14 + 20 + 2..14 + 20 + 4], &PORT.to_be_bytes(), "{mode}: to the NTP port");
            let meta = xsk.umem.rx_metadata(d.addr).and_then(|m| stratum_xdp::meta::RxMetadata::decode(&m));
            let meta = meta.unwrap_or_else(|| panic!("{mode}: metadata in front of the frame"));
            assert_eq!(meta.source, StampSource::Tai, "{mode}: veth has no NIC stamp");
            assert!(meta.rx_time_ns >= before && meta.rx_time_ns <= after, "{mode}: stamp inside the send");
        }
        let c = prog.counters().unwrap();
        assert_eq!((c.redirected, c.no_socket, c.malformed, c.denied), (8, 0, 0, 0), "{mode}: {c:?}");

        prog.unregister_socket(0).unwrap();
        ns.send(3);
        let c = wait_counters(&prog, |c| c.no_socket >= 3);
        assert_eq!((c.redirected, c.no_socket), (8, 3), "{mode}: {c:?}");
    }
}
