//! `stratum-bench reflect`: a do-nothing AF_XDP "server" that measures the load generator's own
//! ceiling (feature `xdp`).
//!
//! The steering program redirects UDP to `--port` to one AF_XDP socket per `--cores` entry (queue
//! i, a thread pinned to core i). Each request frame is turned around in place: the origin
//! timestamp takes the request's transmit timestamp, the header becomes a server reply (mode 4,
//! version kept, stratum 1, refid `XDPR`), the receive and transmit timestamps both take one
//! CLOCK_REALTIME read per batch of up to 64, and stratum-proto's `write_reply` swaps the MAC and
//! IP addresses and the ports and recomputes the checksums. No access list, no rate limit, no
//! per-request clock read: whatever limits a generator against it is the generator (and the link).
//! Its replies pass the generator's checks (T2 = T3 is read after the request arrived and before
//! the reply leaves), so the ceiling can be read from both the send and the receive rate.
//!
//! It runs for `--duration` or until SIGINT/SIGTERM, prints `ready ...` once its sockets are
//! registered, and a summary at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use stratum_host::clock::now as now_ntp;
use stratum_proto::frame::{parse_frame, write_reply, FrameVerdict};
use stratum_proto::packet::HEADER_LEN;
use stratum_xdp::xsk::{BindMode, ReplyScratch, XskConfig, XskSocket, XskStatistics, TX_WAIT_SLEEP_MS};

use crate::engine::book::BATCH;
use crate::pin::pin_to;
use crate::xdp::engine::attach;

/// Raised by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// Empty polls before a worker sleeps in poll(2) (for at most [`SLEEP_MS`]).
const SPINS_BEFORE_SLEEP: u32 = 1024;
const SLEEP_MS: i32 = 10;
const EMPTY_DESC: libc::xdp_desc = libc::xdp_desc { addr: 0, len: 0, options: 0 };

/// A validated `reflect`.
#[derive(Clone, Debug)]
pub struct ReflectConfig {
    pub interface: String,
    pub port: u16,
    /// Queue i's thread is pinned to `cores[i]`; empty: one unpinned thread on queue 0.
    pub cores: Vec<usize>,
    /// None: until SIGINT or SIGTERM.
    pub duration: Option<Duration>,
}

impl ReflectConfig {
    pub fn new(interface: String, port: u16, cores: Vec<usize>, duration_s: Option<f64>) -> anyhow::Result<Self> {
        if port == 0 {
            bail!("--port must not be 0");
        }
        if let Some(c) = cores.iter().enumerate().find_map(|(i, c)| cores[..i].contains(c).then_some(c)) {
            bail!("--cores lists core {c} twice");
        }
        let duration = match duration_s {
            Some(s) if !(s > 0.0 && s <= 3600.0) => bail!("--duration must be more than 0 and at most 3600 seconds"),
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        };
        Ok(Self { interface, port, cores, duration })
    }

    fn queues(&self) -> usize {
        self.cores.len().max(1)
    }
}

/// The summary `reflect` prints when it stops.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReflectReport {
    pub interface: String,
    pub port: u16,
    pub queues: usize,
    pub attach_mode: String,
    pub bind_mode: String,
    /// Frames one copy-mode TX wakeup sends (64 where the kernel lets us raise its 32).
    pub tx_budget: u32,
    pub seconds: f64,
    /// Frames the program steered to us.
    pub received: u64,
    /// Of those, turned around and put on the TX ring.
    pub reflected: u64,
    /// Not an NTP request of 48 bytes or more (dropped).
    pub dropped: u64,
    /// TX ring full: dropped.
    pub tx_full: u64,
    pub reflected_rate: u64,
    /// The kernel's AF_XDP counters (summed over the sockets): frames the kernel could not hand
    /// us (RX ring full, no fill frame), i.e. requests lost before the reflector saw them.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
}

impl ReflectReport {
    pub fn to_text(&self) -> String {
        format!(
            "reflect {} port {} ({} queue(s), {} mode, {} bind): {:.3} s, received {}, reflected {} ({}/s), \
             dropped {}, tx ring full {}; kernel: rx dropped {}, rx ring full {}, fill ring empty {}\n",
            self.interface,
            self.port,
            self.queues,
            self.attach_mode,
            self.bind_mode,
            self.seconds,
            self.received,
            self.reflected,
            self.reflected_rate,
            self.dropped,
            self.tx_full,
            self.rx_dropped,
            self.rx_ring_full,
            self.fill_ring_empty
        )
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: on_signal only stores to an atomic (async-signal-safe); sighandler_t is the
        // address of an extern "C" fn(c_int).
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// Attaches, opens one socket per queue, calls `ready` with a one-line description, reflects
/// until the duration is over or a signal arrives, and returns the summary.
pub fn run(config: &ReflectConfig, ready: impl FnOnce(&str)) -> anyhow::Result<ReflectReport> {
    let interface = &config.interface;
    let queues = config.queues();
    let (program, sockets, tx_budget) = attach(interface, config.port, queues, &XskConfig::default())?;
    let mut report = ReflectReport {
        interface: interface.clone(),
        port: config.port,
        queues,
        attach_mode: program.mode().to_string(),
        bind_mode: sockets.first().map_or(BindMode::Copy, |s| s.mode()).to_string(),
        tx_budget,
        ..ReflectReport::default()
    };
    install_signal_handlers();
    ready(&format!(
        "ready: reflecting UDP port {} on {interface}, {queues} queue(s), {} mode, {} bind, tx budget {tx_budget}",
        config.port, report.attach_mode, report.bind_mode
    ));
    let start = Instant::now();
    let deadline = config.duration.map(|d| start + d);
    let counts: Vec<anyhow::Result<Counts>> = thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, xsk)| {
                let core = config.cores.get(i).copied();
                let port = config.port;
                scope.spawn(move || {
                    if let Err(e) = pin_to(core) {
                        STOP.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    Ok(Reflector { xsk, port, counts: Counts::default() }.run(deadline))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a reflector panicked")))).collect()
    });
    drop(program);
    let seconds = start.elapsed().as_secs_f64();
    for c in counts {
        let c = c?;
        report.received += c.received;
        report.reflected += c.reflected;
        report.dropped += c.dropped;
        report.tx_full += c.tx_full;
        report.rx_dropped += c.stats.rx_dropped;
        report.rx_ring_full += c.stats.rx_ring_full;
        report.fill_ring_empty += c.stats.rx_fill_ring_empty;
    }
    report.seconds = (seconds * 1000.0).round() / 1000.0;
    report.reflected_rate = (report.reflected as f64 / seconds.max(1e-9)).round() as u64;
    Ok(report)
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    received: u64,
    reflected: u64,
    dropped: u64,
    tx_full: u64,
    stats: XskStatistics,
}

struct Reflector {
    xsk: XskSocket,
    port: u16,
    counts: Counts,
}

impl Reflector {
    fn run(mut self, deadline: Option<Instant>) -> Counts {
        let mut rx = [EMPTY_DESC; BATCH];
        let mut scratch = ReplyScratch::default();
        let mut idle = 0u32;
        let mut polls = 0u32;
        loop {
            polls = polls.wrapping_add(1);
            let check = polls % 1024 == 0 || idle > 0;
            if check && (STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)) {
                self.counts.stats = self.xsk.statistics().unwrap_or_default();
                return self.counts;
            }
            self.xsk.recycle_completions(&mut scratch);
            let n = self.xsk.rx.pop(&mut rx);
            if n == 0 {
                // Replies a busy device left on the TX ring go out now, not with the next request.
                let tx_waiting = self.xsk.drive_tx();
                idle += 1;
                if idle >= SPINS_BEFORE_SLEEP {
                    idle = 0;
                    let _ = self.xsk.wait_readable(if tx_waiting { TX_WAIT_SLEEP_MS } else { SLEEP_MS });
                }
                continue;
            }
            idle = 0;
            self.counts.received += n as u64;
            // T2 = T3 for the whole batch: read after the requests arrived, before replies leave.
            let now = now_ntp().to_bits().to_be_bytes();
            let port = self.port;
            let outcome = self.xsk.answer_in_place(&rx[..n], &mut scratch, |umem, desc| {
                umem.data_mut(desc.addr, desc.len).and_then(|f| turn_around(f, port, now))
            });
            self.counts.dropped += outcome.not_answered as u64;
            self.counts.reflected += outcome.sent as u64;
            self.counts.tx_full += outcome.tx_ring_full as u64;
        }
    }
}

/// Turns an NTP request frame into the reflector's reply in place; its length, or None for a frame
/// that is not a request of at least 48 bytes to `port`.
pub fn turn_around(frame: &mut [u8], port: u16, now: [u8; 8]) -> Option<usize> {
    let FrameVerdict::Ntp(parsed) = parse_frame(frame, port) else { return None };
    if parsed.payload_len < HEADER_LEN {
        return None;
    }
    let p = &mut frame[parsed.payload()..parsed.payload() + HEADER_LEN];
    p[0] = (p[0] & 0x38) | 4; // LI 0, the request's version, mode 4 (server)
    p[1] = 1; // stratum 1
    p[12..16].copy_from_slice(b"XDPR");
    p.copy_within(40..48, 24); // origin = the request's transmit timestamp
    p[16..24].copy_from_slice(&now); // reference
    p[32..40].copy_from_slice(&now); // receive
    p[40..48].copy_from_slice(&now); // transmit
    write_reply(frame, &parsed, HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::engine::book::SendBook;
    use crate::xdp::frame::{reply_payload, ClientNet, MacAddr, RequestTemplate};

    #[test]
    fn a_turned_around_request_is_a_valid_reply_to_the_generator() {
        for target in ["10.9.0.2:123", "[fd00::2]:123"] {
            let target: SocketAddr = target.parse().unwrap();
            let (ours, theirs) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
            let t = RequestTemplate::new(ours, theirs, target, 40123);
            let mut book = SendBook::with_nonce(99);
            let t1 = now_ntp();
            let base = book.start_batch(1, t1);
            book.sent(1);
            let mut frame = t.bytes().to_vec();
            t.stamp(&mut frame, ClientNet::default_for(target.ip()).client(5), book.transmit_bytes(base));
            let now = now_ntp();
            let len = turn_around(&mut frame, 123, now.to_bits().to_be_bytes()).expect("a request");
            assert_eq!(&frame[..6], &ours.0, "back to the generator's MAC");
            let payload = reply_payload(&frame[..len], 40123, target).expect("a reply from the target");
            book.reply(Ok(payload), 2, now_ntp());
            let c = book.counts;
            assert_eq!((c.received, c.answered, c.valid, c.invalid), (1, 1, 1, 0), "{c:?}");
            // Not for the port, or too short: dropped.
            assert_eq!(turn_around(&mut t.bytes().to_vec(), 124, [0; 8]), None);
            assert_eq!(turn_around(&mut t.bytes()[..t.len() - 1].to_vec(), 123, [0; 8]), None);
        }
    }

    #[test]
    fn reflect_arguments_are_checked() {
        assert!(ReflectConfig::new("veth0".into(), 123, vec![1], Some(2.0)).is_ok());
        assert!(ReflectConfig::new("veth0".into(), 0, vec![], None).is_err());
        assert!(ReflectConfig::new("veth0".into(), 123, vec![1, 1], None).is_err());
        assert!(ReflectConfig::new("veth0".into(), 123, vec![], Some(0.0)).is_err());
        assert_eq!(ReflectConfig::new("veth0".into(), 123, vec![], None).unwrap().queues(), 1);
    }
}
