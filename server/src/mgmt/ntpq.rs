//! Mode 6 (`ntpq`) for management sources: one thread that answers what the workers hand it.
//!
//! Why this shape: mode 6 is an amplification vector (one request, up to 32 reply fragments),
//! so it never runs on a worker. A worker's `respond()` drops every mode 6 datagram as before
//! (`control`, counted: BAD_INPUTS 7); only on that drop path does a worker call
//! [`NtpqHandoff::offer`], which checks the source against `[ntpq] allow` and copies the
//! datagram into a bounded queue (`sync_channel`: slots allocated once, `try_send` never
//! blocks; full is a counted drop). Normal requests pay nothing: the check sits behind the
//! verdict. The thread here answers from the same state `stratumctl tracking`/`sources` read
//! ([`ServerStatus`]) with proto's pure [`stratum_proto::mode6`], and sends the fragments from
//! a clone of the listen socket the request came in on, with the address it came to as the
//! source (IP_PKTINFO), as ntpq expects.
//!
//! The XDP backend does the same from its workers (the frame's UDP payload, its source, and the
//! address it came to); the thread answers from kernel sockets on our port (IPv4 and IPv6) that
//! never receive, since the XDP program steers every datagram to our port to the workers. The
//! program's one change: it lets a mode 6 request through at its 12-byte control header (other
//! requests still need 48 bytes), so no mode 6 ever reaches the kernel's stack and the allow
//! list lives in one place, here. (Passing allowed mode 6 to the kernel instead would need the
//! allow list in a BPF map as well, and a kernel socket that receives everyone's.)

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngCore;
use socket2::{MsgHdr, SockAddr, Socket};
use stratum_proto::mode6::{
    self, Mode6State, MruEntry, NonceKey, Outcome, PeerVars, Selection, SystemVars, TimeSource,
};
use stratum_proto::server::access::Cidr;
use stratum_proto::server::ratelimit::ClientUsage;
use stratum_proto::sync::{LeapSecondsList, SourceState};
use stratum_proto::{NtpDuration, NtpTimestamp, RefId};

use crate::dataplane::socket::cmsg::{self, PacketInfo};
use crate::mgmt::status::ServerStatus;
use stratum_host::clock;

/// Requests waiting for the thread; more are dropped and counted (a burst from a management
/// host never grows memory).
pub const QUEUE_DEPTH: usize = 64;
/// The longest request kept: the header, 468 bytes of data and a MAC (12 + 468 + 24).
pub const MAX_REQUEST: usize = 504;
/// The most MRU entries one reply is built from (the rate limiter's heaviest clients).
pub const MRU_ENTRIES: usize = 256;
/// How long one scan of the rate limiter's table answers mrulist.
pub const MRU_REFRESH: Duration = Duration::from_secs(1);

/// What happened to mode 6 from sources the workers saw, for `/metrics`.
#[derive(Debug, Default)]
pub struct NtpqCounters {
    /// Handed to the thread (an allowed source).
    pub queued: AtomicU64,
    /// Answered with at least one datagram.
    pub answered: AtomicU64,
    /// Datagrams sent back (fragments).
    pub fragments: AtomicU64,
    /// From a source not on `[ntpq] allow`: dropped (the worker's `control` drop counts it too).
    pub denied: AtomicU64,
    /// The queue to the thread was full, or the request longer than [`MAX_REQUEST`].
    pub queue_full: AtomicU64,
    /// Not answered: not a request, or an MRU request without a good nonce.
    pub dropped: AtomicU64,
    pub send_failed: AtomicU64,
}

/// One mode 6 datagram on its way to the thread.
#[derive(Debug)]
pub struct Queued {
    len: usize,
    buf: [u8; MAX_REQUEST],
    client: SocketAddr,
    to: Option<PacketInfo>,
    /// Which listen address (index into the backend's addresses) it came in on.
    socket: usize,
}

/// The workers' end: clone one per worker.
#[derive(Clone, Debug)]
pub struct NtpqHandoff {
    tx: SyncSender<Queued>,
    allow: Arc<[Cidr]>,
    pub counters: Arc<NtpqCounters>,
}

impl NtpqHandoff {
    /// A queue for `allow`'s sources, and the thread's end of it.
    pub fn new(allow: &[Cidr]) -> (Self, Receiver<Queued>) {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        (Self { tx, allow: allow.into(), counters: Arc::default() }, rx)
    }

    /// Called by a worker for a datagram `respond()` dropped as mode 6/7: queues it for the
    /// thread when its source is allowed. No allocation, no lock, never blocks.
    pub fn offer(&self, payload: &[u8], client: SocketAddr, to: Option<PacketInfo>, socket: usize) {
        if !self.allow.iter().any(|c| c.contains(client.ip())) {
            self.counters.denied.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if payload.len() > MAX_REQUEST || payload.first().is_none_or(|b| b & 7 != 6) {
            // Too long to be a request ntpq sends, or mode 7 (never answered).
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut q = Queued { len: payload.len(), buf: [0; MAX_REQUEST], client, to, socket };
        q.buf[..payload.len()].copy_from_slice(payload);
        match self.tx.try_send(q) {
            Ok(()) => self.counters.queued.fetch_add(1, Ordering::Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The running thread.
#[derive(Debug)]
pub struct NtpqServer {
    thread: JoinHandle<()>,
}

impl NtpqServer {
    /// Starts the thread; `sockets[i]` answers what came in on listen address `i`.
    pub fn start(
        rx: Receiver<Queued>,
        sockets: Vec<Socket>,
        status: Arc<ServerStatus>,
        counters: Arc<NtpqCounters>,
        leap: Option<LeapSecondsList>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let mut secret = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        let mut responder = Responder {
            key: NonceKey(secret),
            status,
            system: host_system(),
            leap,
            mru_cache: Vec::new(),
            mru_at: None,
        };
        let thread = std::thread::Builder::new().name("stratumd-ntpq".into()).spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let q = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(q) => q,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                match responder.answer(&q.buf[..q.len], q.client.ip()) {
                    Outcome::Reply(fragments) => {
                        counters.answered.fetch_add(1, Ordering::Relaxed);
                        let Some(socket) = sockets.get(q.socket) else {
                            counters.send_failed.fetch_add(fragments.len() as u64, Ordering::Relaxed);
                            continue;
                        };
                        for f in &fragments {
                            match send(socket, &f[..], q.client, q.to.as_ref()) {
                                Ok(_) => counters.fragments.fetch_add(1, Ordering::Relaxed),
                                Err(_) => counters.send_failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }
                    Outcome::Drop(_) => {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })?;
        Ok(Self { thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Sends one fragment from the address the request came to.
fn send(socket: &Socket, data: &[u8], to: SocketAddr, from: Option<&PacketInfo>) -> std::io::Result<usize> {
    let mut control = [0u8; 64];
    let control_len = from.map_or(0, |f| cmsg::write_source(&mut control, f));
    let address = SockAddr::from(to);
    let buffers = [IoSlice::new(data)];
    let mut msg = MsgHdr::new().with_addr(&address).with_buffers(&buffers);
    if control_len > 0 {
        msg = msg.with_control(&control[..control_len]);
    }
    socket.sendmsg(&msg, 0)
}

/// "Linux/6.x" as ntpd's `system` variable shows it, read once.
fn host_system() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux/{}", release.trim())
}

struct Responder {
    key: NonceKey,
    status: Arc<ServerStatus>,
    system: String,
    /// `[clock] leap-seconds`' list: `tai`, `leapsec` and `expire`.
    leap: Option<LeapSecondsList>,
    /// The last table scan for mrulist, and when it was made.
    mru_cache: Vec<MruEntry>,
    mru_at: Option<Instant>,
}

impl Responder {
    /// The rate limiter's heaviest clients. A scan reads the whole table (5.6 ms for the default
    /// million records), so it is made at most once per [`MRU_REFRESH`] however fast mrulist is
    /// asked.
    fn refresh_mru(&mut self, now: NtpTimestamp) {
        let Some(limiter) = &self.status.limiter else { return };
        if self.mru_at.is_none_or(|at| at.elapsed() >= MRU_REFRESH) {
            self.mru_at = Some(Instant::now());
            // The limiter runs on the monotonic clock the workers give it: ages from it, times
            // on the served clock.
            let mono = clock::monotonic();
            let seen = |c: &ClientUsage| now.add(NtpDuration::from_seconds_f64(-c.seconds_since_seen(mono)));
            self.mru_cache = limiter
                .top(MRU_ENTRIES)
                .iter()
                .map(|c| MruEntry {
                    address: c.address,
                    port: 0,
                    count: c.requests,
                    dropped: c.limited,
                    // The table keeps when a request was last sampled (1 in 16), not when the
                    // client was first seen: first = last, so ntpq's lstint is right and its
                    // avgint 0. Keeping a first-seen time would cost the limiter a store.
                    first: seen(c),
                    last: seen(c),
                    mode_version: 4 << 3 | 3,
                    limited: c.fast_retries,
                })
                .collect();
        }
    }

    fn answer(&mut self, datagram: &[u8], client: IpAddr) -> Outcome {
        let snapshot = self.status.cell.load().1;
        let now = snapshot.correction.apply(clock::now());
        let now_unix = now.to_unix(946_684_800).0;
        let wants_mru = datagram.get(1).map(|b| b & 0x1f) == Some(mode6::op::READ_MRU);
        if wants_mru {
            self.refresh_mru(now);
        }
        let clock_state = self.status.clock();
        let view = self.status.sync.as_ref();
        let tracking = view.and_then(|v| v.tracking());
        let rows = view.map(|v| v.sources()).unwrap_or_default();
        let peers: Vec<PeerVars> = rows.iter().enumerate().map(|(i, r)| peer_vars(i, r)).collect();
        let system_peer = tracking.and_then(|t| t.system_peer);
        let peer_row = system_peer.and_then(|id| rows.iter().position(|r| r.status.id == id));
        let source = match (clock_state.synchronized, peer_row.map(|i| &rows[i])) {
            (false, _) => TimeSource::Unspecified,
            (true, Some(r)) if r.refclock.as_ref().is_some_and(|rc| rc.driver == "pps") => TimeSource::Atom,
            (true, Some(r)) if r.status.refclock.is_some() => TimeSource::Uhf,
            (true, Some(_)) => TimeSource::Ntp,
            (true, None) => TimeSource::Local,
        };
        let refid = refid_text(clock_state.ref_id, clock_state.stratum);
        let tc = tracking.map_or(0, |t| t.system_poll);
        let system = SystemVars {
            version: concat!("stratumd ", env!("CARGO_PKG_VERSION")),
            processor: std::env::consts::ARCH,
            system: &self.system,
            leap: clock_state.leap,
            stratum: clock_state.stratum,
            precision: snapshot.precision,
            root_delay_ms: clock_state.root_delay_seconds * 1e3,
            root_dispersion_ms: clock_state.root_dispersion_seconds * 1e3,
            refid: &refid,
            reftime: tracking.and_then(|t| t.last_update),
            clock: now,
            peer: peer_row.map_or(0, association),
            source,
            tc,
            mintc: rows.iter().map(|r| r.status.config.minpoll).min().unwrap_or(tc).min(tc),
            offset_ms: tracking.map_or(0.0, |t| t.offset * 1e3),
            frequency_ppm: tracking.map_or(0.0, |t| t.frequency_ppm),
            sys_jitter_ms: tracking.map_or(0.0, |t| t.system_jitter * 1e3),
            clk_jitter_ms: tracking.map(|t| t.offset_error * 1e3),
            clk_wander_ppm: tracking.map(|t| t.wander_ppm),
            tai: self.leap.as_ref().and_then(|l| l.tai_offset_at(now_unix)),
            leapsec: self.leap.as_ref().and_then(|l| leap_date(l, now_unix)).map(ntp_from_unix),
            expire: self.leap.as_ref().map(|l| ntp_from_unix(l.expires_unix())),
        };
        // The rate limiter's table is scanned only for an MRU request (opcode 10).
        let mru = if wants_mru { &self.mru_cache[..] } else { &[] };
        let state = Mode6State { system, peers: &peers, mru, now };
        mode6::answer(datagram, &state, client, &self.key)
    }
}

/// A refid as ntpd's mode 6 writes it: an address from stratum 2 on, else up to four
/// characters with anything unprintable as `.` (stratumctl's `\xNN` escapes would be cut by
/// ntpq's column).
fn refid_text(refid: RefId, stratum: u8) -> String {
    if stratum >= 2 {
        return refid.to_text(stratum).to_string();
    }
    refid
        .to_bits()
        .to_be_bytes()
        .iter()
        .take_while(|b| **b != 0)
        .map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '.' })
        .collect()
}

/// The list's next leap, or with none scheduled its last (as ntpd's `leapsec`), Unix seconds.
fn leap_date(list: &LeapSecondsList, now_unix: i64) -> Option<i64> {
    if let Some(next) = list.next_leap_after(now_unix) {
        return Some(next.at_unix);
    }
    let (mut last, mut after) = (None, 0);
    // Bounded by the list's length (one entry per leap since 1972).
    while let Some(e) = list.next_leap_after(after) {
        last = Some(e.at_unix);
        after = e.at_unix;
    }
    last
}

fn ntp_from_unix(seconds: i64) -> NtpTimestamp {
    NtpTimestamp::from_unix(seconds, 0)
}

/// Association ids: 1, 2, ... in the order the sync thread lists its sources.
fn association(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

fn peer_vars(index: usize, row: &crate::sync::upstream::SourceRow) -> PeerVars {
    let s = &row.status;
    let ms = |x: Option<f64>| x.map(|v| v * 1e3);
    PeerVars {
        association: association(index),
        selection: match s.state {
            SourceState::SystemPeer => Selection::SystemPeer,
            SourceState::Candidate => Selection::Candidate,
            SourceState::Outlier => Selection::Outlier,
            SourceState::Falseticker => Selection::Falseticker,
            SourceState::Unselectable | SourceState::Unreachable | SourceState::Demobilised(_) => Selection::Reject,
        },
        reach: s.reach,
        srcadr: row.address.ip(),
        srcport: row.address.port(),
        srchost: Some(row.name.clone()),
        // A refclock's is loopback, as ntpd gives its refclocks.
        dstadr: row.local.or(row.refclock.as_ref().map(|_| IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))),
        leap: s.leap.map(|l| l.to_bits()),
        stratum: s.stratum.or(s.refclock.map(|_| 0)),
        precision: s.upstream_precision,
        root_delay_ms: ms(s.upstream_root_delay),
        root_dispersion_ms: ms(s.upstream_root_dispersion),
        refid: match s.refclock {
            Some(refid) => Some(refid_text(refid, 0)),
            None => s.upstream_ref_id.zip(s.stratum).map(|(r, st)| refid_text(r, st)),
        },
        rec: s.last_sample_time,
        unreach: Some(s.unreach),
        hmode: 3,
        pmode: 4,
        hpoll: s.poll,
        ppoll: s.poll,
        headway: 0,
        flash: s.last_flash.bits(),
        offset_ms: ms(s.last_offset),
        delay_ms: ms(s.last_delay),
        dispersion_ms: ms(s.dispersion),
        jitter_ms: ms(s.jitter),
        xleave_ms: 0.0,
        filtdelay_ms: s.filter.iter().flatten().map(|x| x.delay * 1e3).collect(),
        filtoffset_ms: s.filter.iter().flatten().map(|x| x.offset * 1e3).collect(),
        filtdisp_ms: s.filter.iter().flatten().map(|x| x.dispersion * 1e3).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readvar() -> [u8; 12] {
        [0x26, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn only_allowed_mode_6_is_queued_and_a_full_queue_is_counted() {
        let (handoff, rx) = NtpqHandoff::new(&["127.0.0.0/8".parse().unwrap()]);
        let me: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        handoff.offer(&readvar(), stranger, None, 0);
        assert_eq!(handoff.counters.denied.load(Ordering::Relaxed), 1);
        let mut monlist = readvar();
        monlist[0] = 0x17; // mode 7: never answered
        handoff.offer(&monlist, me, None, 0);
        handoff.offer(&[0x26; MAX_REQUEST + 1], me, None, 0);
        assert_eq!(handoff.counters.dropped.load(Ordering::Relaxed), 2);
        for _ in 0..QUEUE_DEPTH + 3 {
            handoff.offer(&readvar(), me, None, 1);
        }
        assert_eq!(handoff.counters.queued.load(Ordering::Relaxed), QUEUE_DEPTH as u64);
        assert_eq!(handoff.counters.queue_full.load(Ordering::Relaxed), 3);
        let q = rx.try_recv().unwrap();
        assert_eq!((&q.buf[..q.len], q.client, q.socket), (&readvar()[..], me, 1));
    }

    #[test]
    fn peer_variables_carry_unreach_and_dstadr() {
        use stratum_proto::sync::{RefclockConfig, SourceConfig, SyncConfig, SyncEngine};
        let now = NtpTimestamp::from_parts(3_980_000_000, 0);
        let mut engine = SyncEngine::new(SyncConfig::default());
        engine.add_source("192.0.2.10".parse().unwrap(), SourceConfig::default(), now).unwrap();
        engine.add_refclock(RefId::from_ascii("GPS").unwrap(), RefclockConfig::default(), now).unwrap();
        let rows: Vec<crate::sync::upstream::SourceRow> = engine
            .sources()
            .map(|status| crate::sync::upstream::SourceRow {
                name: "x".into(),
                address: "192.0.2.10:123".parse().unwrap(),
                local: status.refclock.is_none().then(|| "192.0.2.1".parse().unwrap()),
                status,
                refclock: status.refclock.map(|_| crate::sync::upstream::RefclockRow::default()),
            })
            .collect();
        let upstream = peer_vars(0, &rows[0]);
        assert_eq!((upstream.dstadr, upstream.unreach), (Some("192.0.2.1".parse().unwrap()), Some(0)));
        let refclock = peer_vars(1, &rows[1]);
        assert_eq!(refclock.dstadr, Some("127.0.0.1".parse().unwrap()), "loopback, as ntpd's refclocks");
    }

    #[test]
    fn refids_as_ntpd_writes_them() {
        assert_eq!(refid_text(RefId::from_ascii("GPS").unwrap(), 1), "GPS");
        assert_eq!(refid_text(RefId::from_bits(0x7f7f_0101), 1), "....");
        assert_eq!(refid_text(RefId::from_bits(0xc000_0201), 2), "192.0.2.1");
    }

    #[test]
    fn leapsec_is_the_next_leap_or_the_last() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/data/leap-seconds.list"))
                .unwrap();
        let list = LeapSecondsList::parse(&text).unwrap();
        // 2017-01-01: the last leap, for any time after it.
        assert_eq!(leap_date(&list, 1_800_000_000), Some(1_483_228_800));
        // Before it, the next one.
        assert_eq!(leap_date(&list, 1_483_228_000), Some(1_483_228_800));
        assert_eq!(leap_date(&list, 1_400_000_000), Some(1_435_708_800), "2015-07-01");
    }
}
