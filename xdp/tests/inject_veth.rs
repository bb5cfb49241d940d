//! The request injector (src/inject.rs, src/bpf/inject.bpf.c) against a real kernel: requests
//! injected out of one end of a veth pair arrive at the other end, where the steering program and
//! an AF_XDP socket take them, each one exactly as the injector was told to make it. Needs root;
//! skips with a reason elsewhere, fails when CI is set.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use stratum_xdp::inject::{self, InjectQueue, InjectSetup, RunControl, SendClocks, BATCH};
use stratum_xdp::program::{ProgramConfig, SteeringProgram, XdpMode};
use stratum_xdp::xsk::{XskConfig, XskSocket};

mod common;
use common::{clock_tai_ns, ifindex, require_root, Veth};

fn sum_words(b: &[u8]) -> u32 {
    b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

const NONCE: u32 = 0x5354_5231;
const CLIENT_BASE: u32 = 0x0AC8_0001; // 10.200.0.1
const CLIENTS: u32 = 5;
const DST: [u8; 4] = [10, 201, 0, 2];

/// An IPv4 request template from port 40123 to DST:123, source address and the varying fields
/// zero, and its partial sums.
fn template() -> (Vec<u8>, u16, u16) {
    let mut f = vec![0u8; 90];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&76u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[30..34].copy_from_slice(&DST);
    f[34..36].copy_from_slice(&40123u16.to_be_bytes());
    f[36..38].copy_from_slice(&123u16.to_be_bytes());
    f[38..40].copy_from_slice(&56u16.to_be_bytes());
    f[42] = 0x23;
    let ip_sum = fold(sum_words(&f[14..34]));
    let pseudo = [&DST[..], &[0, 17], &56u16.to_be_bytes()].concat();
    let udp_sum = fold(sum_words(&pseudo) + sum_words(&f[34..90]));
    (f, ip_sum, udp_sum)
}

/// Runs `q` on a thread of its own until it has made `count` requests (or 5 s pass), then stops it.
fn make(q: &mut InjectQueue, clocks: &SendClocks, frame: &[u8], count: u64) -> u64 {
    let control = RunControl::new();
    std::thread::scope(|s| {
        let runner = s.spawn(|| q.run_until_stopped(frame, &control));
        let deadline = Instant::now() + Duration::from_secs(5);
        while clocks.made() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        control.stop();
        runner.join().unwrap().expect("the injector runs")
    })
}

fn setup(rate: u64, limit: u64, first_seq: u32, clients: u32) -> (Vec<u8>, InjectSetup) {
    let (frame, ip_sum, udp_sum) = template();
    let setup = InjectSetup {
        rate,
        limit,
        nonce: NONCE,
        next_seq: first_seq,
        client_base: CLIENT_BASE,
        client_count: clients,
        ipv4: true,
        ip_sum,
        udp_sum,
    };
    (frame, setup)
}

#[test]
fn injected_requests_arrive_each_made_as_asked() {
    if !require_root("inject") {
        return;
    }
    let veth = Veth::new("ir");
    // The receiving end: the steering program for port 123 and an AF_XDP socket on queue 0.
    let program =
        SteeringProgram::attach(&veth.b, XdpMode::Auto, &ProgramConfig { port: 123, hardware_timestamps: false })
            .expect("attach the steering program");
    let config = XskConfig { initial_fill: 2048, ..XskConfig::default() };
    let mut xsk = XskSocket::open(ifindex(&veth.b), 0, &config).expect("open the AF_XDP socket");
    program.register_socket(0, xsk.as_fd()).unwrap();

    let mut queues = inject::open(ifindex(&veth.a), 1).expect("load the injector");
    let (q, clocks) = &mut queues[0];
    const COUNT: u64 = 300;
    let first_seq = 7 * BATCH;
    let (frame, setup) = setup(0, COUNT, first_seq, CLIENTS);
    q.set_up(&setup);
    assert_eq!(clocks.batch_sent(7), None, "no batch sent yet");
    let before = clock_tai_ns();
    assert_eq!(make(q, clocks, &frame, COUNT), COUNT, "exactly the limit");
    let after = clock_tai_ns();
    assert_eq!(clocks.next_seq(), first_seq + COUNT as u32);
    // One send time per 64 requests, in order, within the call.
    let sent: Vec<u64> = (7..7 + COUNT.div_ceil(64)).map(|b| clocks.batch_sent(b).expect("batch sent")).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert!(sent[0] >= before && *sent.last().unwrap() <= after, "{sent:?} outside [{before}, {after}]");
    assert_eq!(clocks.batch_sent(7 + 5), None, "a batch never sent");

    let mut got = Vec::new();
    let mut descs = [libc::xdp_desc { addr: 0, len: 0, options: 0 }; 64];
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < COUNT as usize && Instant::now() < deadline {
        let n = xsk.rx.pop(&mut descs);
        for d in &descs[..n] {
            got.push(xsk.umem.data(d.addr, d.len).unwrap().to_vec());
        }
    }
    assert_eq!(got.len(), COUNT as usize, "every injected request arrives");
    for (i, f) in got.iter().enumerate() {
        let seq = first_seq + i as u32;
        assert_eq!(f.len(), frame.len());
        let client = CLIENT_BASE + (i as u32 % CLIENTS);
        assert_eq!(f[26..30], client.to_be_bytes(), "request {i}: the clients in turn");
        assert_eq!(f[82..90], ((u64::from(NONCE) << 32) | u64::from(seq)).to_be_bytes(), "request {i}");
        assert_eq!(fold(sum_words(&f[14..34])), 0xFFFF, "request {i}: IPv4 header checksum");
        let pseudo = [&f[26..34], &[0, 17], &56u16.to_be_bytes()].concat();
        assert_eq!(fold(sum_words(&pseudo) + sum_words(&f[34..90])), 0xFFFF, "request {i}: UDP checksum");
        // Everything else is the template's.
        assert_eq!((&f[..24], &f[34..40], &f[42..82]), (&frame[..24], &frame[34..40], &frame[42..82]));
    }
}

#[test]
fn a_paced_run_never_sends_a_batch_early() {
    if !require_root("inject pacing") {
        return;
    }
    let veth = Veth::new("ip");
    // GRO on the receiving end lets it take XDP frames without a program of its own.
    let gro = Command::new("ethtool").args(["-K", &veth.b, "gro", "on"]).output();
    assert!(gro.is_ok_and(|o| o.status.success()), "ethtool -K gro on");
    let mut queues = inject::open(ifindex(&veth.a), 1).expect("load the injector");
    let (q, clocks) = &mut queues[0];
    // 100 k/s: a batch of 64 every 640 us, 40 batches.
    const RATE: u64 = 100_000;
    let (frame, setup) = setup(RATE, 40 * 64, 0, 4096);
    q.set_up(&setup);
    let t = Instant::now();
    assert_eq!(make(q, clocks, &frame, 40 * 64), 40 * 64);
    let took = t.elapsed();
    let sent: Vec<u64> = (0..40).map(|b| clocks.batch_sent(b).expect("batch sent")).collect();
    for (k, &at) in sent.iter().enumerate() {
        let due = k as u64 * 64 * 1_000_000_000 / RATE;
        assert!(at - sent[0] >= due, "batch {k} left {} ns after the first, due at {due}", at - sent[0]);
    }
    assert!(took >= Duration::from_micros(39 * 640), "{took:?}");
    // Not an assertion (benchmarks live in bench/): how late the last batch was.
    eprintln!("last batch {} us after its due time", (sent[39] - sent[0]).saturating_sub(39 * 640_000) / 1000);
}
