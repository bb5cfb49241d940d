//! `stratum-bench load --interleaved` (issue 14): the socket engine's open-loop load, each
//! simulated client polling in interleaved mode as chronyd's `xleave` client does, and the error
//! of the server's transmit timestamps (T3) as our own receive stamps see them.
//!
//! A client is a chain: one request in every `64 * sockets` (the same socket and batch slot each
//! time). Its first request is basic. Once a reply to its latest request is in, its next request
//! is interleaved (chrony's `transmit_packet` in interleaved client mode): origin = that reply's
//! receive timestamp (T2, which the server keys its store by), receive = a marker naming this
//! request (chrony puts its own receive time there; the server only echoes it, and it must differ
//! from the transmit field), transmit = the numbered timestamp the book matches basic replies by.
//! An interleaved reply carries our receive field as origin, so a reply whose origin is the
//! marker is interleaved, one whose origin is our transmit field basic. A reply to a request that
//! is no longer its chain's latest still counts, but feeds no chain.
//!
//! The T3 error: an interleaved reply's transmit timestamp is the server's transmit time (driver
//! or kernel stamp) of the reply before; the error is our kernel receive stamp of that earlier
//! reply (SO_TIMESTAMPNS) minus it, minus the one-way delay of the empty link. That delay is
//! measured once ([`calibrate`]): the least such difference over a short interleaved run at a low
//! rate (so the error's minimum is about 0 at low rates, and the mean and p99 show what load and
//! the server's stamping add). Basic replies get the same figure with their own T3 (the server's
//! clock read before the send), for contrast.
//!
//! Nothing allocates per packet: buffers, chains and histograms are made before the run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use stratum_proto::client::numbered_transmit;
use stratum_proto::packet::HEADER_LEN;
use stratum_proto::NtpTimestamp;

use crate::config::LoadConfig;
use crate::counts::Invalid;
use crate::engine::book::{SendBook, BATCH};
use crate::engine::socket::{socket_drops, Batch, Clients, Traffic, RECV_LEN};
use crate::outcome::LoadOutcome;
use crate::pin::pin_to;
use crate::report::LoadReport;

/// XORed into the nonce of the receive field: an origin with it marks an interleaved reply.
const MARK: u32 = 0x8000_0000;
/// The calibration run: a low rate, one socket (64 chains), half a second.
const CALIBRATION_RATE: u64 = 2_000;
const CALIBRATION: Duration = Duration::from_millis(500);

const ORIGIN_AT: usize = 24;
const RECEIVE_AT: usize = 32;
const TRANSMIT_AT: usize = 40;

/// What a chain remembers of its latest reply.
#[derive(Clone, Copy, Debug)]
struct Last {
    /// The reply's receive timestamp as the server sent it: the next request's origin.
    server_rx: NtpTimestamp,
    /// Our kernel receive stamp of it.
    our_rx: NtpTimestamp,
}

#[derive(Clone, Copy, Debug)]
struct Chain {
    /// The chain's latest request.
    sent_seq: u64,
    /// The reply the latest request quotes (interleaved), whose true T3 its reply brings.
    quoted: Option<Last>,
    /// The latest reply, not yet quoted.
    last: Option<Last>,
}

/// min, mean and quantiles of a signed error in nanoseconds: magnitudes of the negative ones
/// and of the others in two histograms (3 significant digits each, so a few nanoseconds near 0).
#[derive(Clone, Debug)]
struct ErrorStats {
    negative: Histogram<u64>,
    positive: Histogram<u64>,
    sum: i128,
    min: i64,
}

impl ErrorStats {
    fn new() -> Self {
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds");
        Self { negative: h(), positive: h(), sum: 0, min: i64::MAX }
    }

    fn record(&mut self, ns: i64) {
        if ns < 0 {
            self.negative.saturating_record(ns.unsigned_abs());
        } else {
            // Shifted by one: the histogram starts at 1.
            self.positive.saturating_record(ns as u64 + 1);
        }
        self.sum += i128::from(ns);
        self.min = self.min.min(ns);
    }

    fn len(&self) -> u64 {
        self.negative.len() + self.positive.len()
    }

    /// The error at `q` (0..=1) of the sorted samples.
    fn quantile(&self, q: f64) -> i64 {
        let (n, k) = (self.len(), self.negative.len());
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        if rank <= k {
            // The rank-th smallest error is the (k - rank + 1)-th smallest negative magnitude's negation.
            -(self.negative.value_at_quantile((k - rank + 1) as f64 / k as f64) as i64)
        } else {
            let p = self.positive.len();
            self.positive.value_at_quantile((rank - k) as f64 / p as f64) as i64 - 1
        }
    }

    fn summary(&self) -> ErrorSummary {
        let n = self.len();
        if n == 0 {
            return ErrorSummary::default();
        }
        ErrorSummary {
            samples: n,
            min_ns: self.min,
            mean_ns: (self.sum / i128::from(n)) as i64,
            p50_ns: self.quantile(0.5),
            p99_ns: self.quantile(0.99),
        }
    }
}

/// One T3 error's figures, in nanoseconds (all 0 without samples).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ErrorSummary {
    pub samples: u64,
    pub min_ns: i64,
    pub mean_ns: i64,
    pub p50_ns: i64,
    pub p99_ns: i64,
}

/// What `--interleaved` adds to a step's report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InterleavedReport {
    pub offered_rate: u64,
    /// The empty link's one-way delay subtracted (from [`calibrate`]).
    pub one_way_delay_ns: i64,
    pub requests_interleaved: u64,
    pub replies_valid: u64,
    pub replies_interleaved: u64,
    /// Interleaved replies as a share of the valid ones.
    pub interleaved_pct: f64,
    /// Our receive stamp of a reply minus its true T3 (brought by the interleaved reply after
    /// it), minus the one-way delay.
    pub interleaved_error: ErrorSummary,
    /// The same with a basic reply's own T3.
    pub basic_error: ErrorSummary,
}

impl InterleavedReport {
    pub fn to_text(&self) -> String {
        let e = |s: &ErrorSummary| {
            format!(
                "min {} ns, mean {} ns, p50 {} ns, p99 {} ns ({} samples)",
                s.min_ns, s.mean_ns, s.p50_ns, s.p99_ns, s.samples
            )
        };
        format!(
            "interleaved      {} of {} valid replies ({:.1} %), {} requests interleaved\n\
             one-way delay    {} ns (empty link, subtracted)\n\
             T3 error (xleave) {}\n\
             T3 error (basic)  {}\n",
            self.replies_interleaved,
            self.replies_valid,
            self.interleaved_pct,
            self.requests_interleaved,
            self.one_way_delay_ns,
            e(&self.interleaved_error),
            e(&self.basic_error),
        )
    }
}

/// The simulated clients' chains and what their replies measured; shared by the engines (the
/// request's origin, receive and transmit fields from [`request`](Self::request), each reply
/// through [`reply`](Self::reply)). Made before the run: nothing allocates per packet.
#[derive(Debug)]
pub struct Chains {
    chains: Vec<Chain>,
    one_way_ns: i64,
    requests_interleaved: u64,
    replies_interleaved: u64,
    interleaved_error: ErrorStats,
    basic_error: ErrorStats,
}

impl Chains {
    /// `n` chains (request `seq` is chain `seq % n`'s), `one_way_ns` subtracted from each error.
    pub fn new(n: usize, one_way_ns: i64) -> Self {
        Self {
            chains: vec![Chain { sent_seq: u64::MAX, quoted: None, last: None }; n.max(1)],
            one_way_ns,
            requests_interleaved: 0,
            replies_interleaved: 0,
            interleaved_error: ErrorStats::new(),
            basic_error: ErrorStats::new(),
        }
    }

    /// The origin, receive and transmit fields (bytes 24..48, as on the wire) of request `seq`
    /// of a book with `nonce`, whose numbered transmit timestamp is `transmit`: interleaved when
    /// its chain's latest reply is in and not quoted yet, else basic (origin and receive zero).
    pub fn request(&mut self, nonce: u32, seq: u64, transmit: [u8; 8]) -> [u8; 24] {
        let n = self.chains.len() as u64;
        let chain = &mut self.chains[(seq % n) as usize];
        chain.sent_seq = seq;
        chain.quoted = chain.last.take();
        let (origin, receive) = match chain.quoted {
            Some(last) => {
                self.requests_interleaved += 1;
                (last.server_rx, numbered_transmit(nonce ^ MARK, seq as u32))
            }
            None => (NtpTimestamp::ZERO, NtpTimestamp::ZERO),
        };
        let mut fields = [0u8; 24];
        fields[..8].copy_from_slice(&origin.to_be_bytes());
        fields[8..16].copy_from_slice(&receive.to_be_bytes());
        fields[16..].copy_from_slice(&transmit);
        fields
    }

    /// Checks a 48-byte reply `p` (changed in place: an interleaved reply's origin is given our
    /// transmit field's nonce back, so the book matches it) received at `now_ns`, `now` (the
    /// book's clocks) and `stamp` (our receive stamp of it), and measures its T3 error.
    pub fn reply(
        &mut self,
        book: &mut SendBook,
        p: &mut [u8; HEADER_LEN],
        now_ns: u64,
        now: NtpTimestamp,
        stamp: NtpTimestamp,
    ) {
        let nonce = book.nonce();
        let origin = NtpTimestamp::from_be_bytes(p[ORIGIN_AT..RECEIVE_AT].try_into().expect("8 bytes"));
        let interleaved = origin.seconds() == nonce ^ MARK;
        let valid_before = book.counts.valid;
        if interleaved {
            p[ORIGIN_AT..ORIGIN_AT + 4].copy_from_slice(&nonce.to_be_bytes());
            book.reply_interleaved(&p[..], now_ns, now);
        } else {
            book.reply(Ok(&p[..]), now_ns, now);
        }
        if book.counts.valid == valid_before {
            return;
        }
        let seq = u64::from(origin.fraction());
        let server_rx = NtpTimestamp::from_be_bytes(p[RECEIVE_AT..TRANSMIT_AT].try_into().expect("8 bytes"));
        let t3 = NtpTimestamp::from_be_bytes(p[TRANSMIT_AT..HEADER_LEN].try_into().expect("8 bytes"));
        let n = self.chains.len() as u64;
        let chain = &mut self.chains[(seq % n) as usize];
        if interleaved {
            self.replies_interleaved += 1;
            if let Some(quoted) = chain.quoted.filter(|_| chain.sent_seq == seq) {
                self.interleaved_error.record(quoted.our_rx.since(t3).to_nanos() - self.one_way_ns);
            }
        } else {
            self.basic_error.record(stamp.since(t3).to_nanos() - self.one_way_ns);
        }
        if chain.sent_seq == seq {
            chain.quoted = None;
            chain.last = Some(Last { server_rx, our_rx: stamp });
        }
    }

    /// The step's figures, `valid` replies in all (the book's count).
    pub fn report(&self, valid: u64, offered_rate: u64) -> InterleavedReport {
        InterleavedReport {
            offered_rate,
            one_way_delay_ns: self.one_way_ns,
            requests_interleaved: self.requests_interleaved,
            replies_valid: valid,
            replies_interleaved: self.replies_interleaved,
            interleaved_pct: if valid == 0 { 0.0 } else { 100.0 * self.replies_interleaved as f64 / valid as f64 },
            interleaved_error: self.interleaved_error.summary(),
            basic_error: self.basic_error.summary(),
        }
    }
}

/// The interleaved load on the socket engine's [`Clients`]: a request's fields 24..48 from its
/// chain, each reply of 48 bytes checked and measured with our kernel receive stamp of it (the
/// batch's T4 if it came without one).
impl Traffic for Chains {
    /// Sequence numbers stay below 2^31.
    const SEQ_LIMIT: u64 = (u32::MAX >> 1) as u64;

    #[inline]
    fn fill(&mut self, book: &SendBook, _: usize, seq: u64, buf: &mut [u8; RECV_LEN]) {
        buf[ORIGIN_AT..HEADER_LEN].copy_from_slice(&self.request(book.nonce(), seq, book.transmit_bytes(seq)));
    }

    #[inline]
    fn check(&mut self, book: &mut SendBook, rx: &Batch, i: usize, now_ns: u64, now: NtpTimestamp) {
        let Some(mut p) = rx.payload(i).ok().and_then(|p| <[u8; HEADER_LEN]>::try_from(p).ok()) else {
            book.reply(Err(Invalid::Length), now_ns, now);
            return;
        };
        self.reply(book, &mut p, now_ns, now, rx.stamp(i).unwrap_or(now));
    }
}

/// Runs one interleaved load step (one generator thread; `config.cores` at most one core),
/// subtracting `one_way_ns` from every error.
pub fn run_step(config: &LoadConfig, one_way_ns: i64) -> anyhow::Result<(LoadReport, InterleavedReport)> {
    anyhow::ensure!(config.threads() == 1, "--interleaved runs one generator thread: give at most one core");
    let port = config.target.port();
    let server_drops_before = config.target.ip().is_loopback().then(|| socket_drops(&[port]));
    pin_to(config.core())?;
    let mut clients = Clients::open(config, true)?;
    let mut chains = Chains::new(BATCH * config.sockets, one_way_ns);
    let send_elapsed = clients.run(&mut chains, config)?;
    let il = chains.report(clients.book.counts.valid, config.rate);
    let mut outcome: LoadOutcome = clients.finish(send_elapsed);
    outcome.server_socket_drops = server_drops_before.map(|before| socket_drops(&[port]).saturating_sub(before));
    Ok((LoadReport::new(config, "socket", &outcome), il))
}

/// The one-way delay of the empty link, in nanoseconds: the least difference between our receive
/// stamp of a reply and its true T3 over a short interleaved run at a low rate from one socket.
pub fn calibrate(config: &LoadConfig) -> anyhow::Result<i64> {
    let quiet = LoadConfig { rate: CALIBRATION_RATE, duration: CALIBRATION, sockets: 1, ..config.clone() };
    let (_, il) = run_step(&quiet, 0)?;
    anyhow::ensure!(
        il.interleaved_error.samples > 0,
        "calibration: no interleaved reply from {} in {} valid replies (does it serve interleaved mode?)",
        config.target,
        il.replies_valid
    );
    Ok(il.interleaved_error.min_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::book::REQUEST;

    /// A server's reply to `request` (fields 24..48 as sent): basic (origin = its transmit
    /// field) or interleaved (origin = its receive field), with T2 and T3.
    fn answer(request: &[u8; 24], interleaved: bool, t2: NtpTimestamp, t3: NtpTimestamp) -> [u8; HEADER_LEN] {
        let mut p = REQUEST;
        p[0] = 0x24; // LI 0, version 4, mode 4
        p[1] = 2;
        let origin = if interleaved { &request[8..16] } else { &request[16..24] };
        p[ORIGIN_AT..RECEIVE_AT].copy_from_slice(origin);
        p[RECEIVE_AT..TRANSMIT_AT].copy_from_slice(&t2.to_be_bytes());
        p[TRANSMIT_AT..].copy_from_slice(&t3.to_be_bytes());
        p
    }

    #[test]
    fn a_chain_goes_interleaved_and_measures_the_earlier_replys_t3() {
        use stratum_proto::NtpDuration;
        let mut book = SendBook::with_nonce(0x4321);
        let mut chains = Chains::new(1, 100);
        let t = |us: i64| NtpTimestamp::from_parts(4_000_000_000, 0).add(NtpDuration::from_nanos(us * 1000));
        book.start_batch(0, t(0));
        book.sent(BATCH);
        // Request 0: basic; its reply left (daemon T3) at 12 us, truly at 13 us, came at 14 us.
        let r0 = chains.request(book.nonce(), 0, book.transmit_bytes(0));
        assert_eq!(&r0[..16], &[0; 16]);
        chains.reply(&mut book, &mut answer(&r0, false, t(10), t(12)), 1, t(15), t(14));
        // Request 1 quotes reply 0's T2; the interleaved reply brings reply 0's true T3.
        let r1 = chains.request(book.nonce(), 1, book.transmit_bytes(1));
        assert_eq!(&r1[..8], &t(10).to_be_bytes());
        assert_ne!(r1[8..16], r1[16..24], "receive differs from transmit, as chrony checks");
        chains.reply(&mut book, &mut answer(&r1, true, t(20), t(13)), 2, t(25), t(24));
        // A reply to a request that is not the chain's latest measures nothing interleaved.
        let r2 = chains.request(book.nonce(), 2, book.transmit_bytes(2));
        let _r3 = chains.request(book.nonce(), 3, book.transmit_bytes(3));
        chains.reply(&mut book, &mut answer(&r2, true, t(30), t(23)), 3, t(35), t(34));
        let report = chains.report(book.counts.valid, 1000);
        assert_eq!((report.replies_valid, report.replies_interleaved, report.requests_interleaved), (3, 2, 2));
        let (x, b) = (report.interleaved_error, report.basic_error);
        // 14 us - 13 us - 100 ns; the basic reply: 14 us - 12 us - 100 ns.
        assert_eq!((x.samples, x.min_ns, b.samples, b.min_ns), (1, 900, 1, 1900));
    }

    #[test]
    fn errors_keep_their_sign() {
        let mut e = ErrorStats::new();
        assert_eq!(e.summary(), ErrorSummary::default());
        for ns in [-300, 100, 200, 1_000] {
            e.record(ns);
        }
        let s = e.summary();
        assert_eq!((s.samples, s.min_ns, s.mean_ns), (4, -300, 250));
        assert!(s.p99_ns.abs_diff(1_000) <= 1 && s.p50_ns.abs_diff(100) <= 1, "{s:?}");
        // Mostly negative: the median is among them, the quantiles ordered.
        let mut m = ErrorStats::new();
        for ns in (-100..0).chain([0, 5, 50]) {
            m.record(ns);
        }
        let s = m.summary();
        assert_eq!((s.samples, s.min_ns), (103, -100));
        assert!(s.p50_ns.abs_diff(-49) <= 1 && s.p99_ns.abs_diff(5) <= 1, "{s:?}");
        assert!(m.quantile(0.0).abs_diff(-100) <= 1 && m.quantile(1.0).abs_diff(50) <= 1);
    }
}

/// `load --interleaved` and `load --ramp ... --interleaved`.
pub mod cli {
    use std::io::Write;

    use serde::Serialize;

    use super::{calibrate, run_step, InterleavedReport};
    use crate::cli::{judged, Engine, LoadArgs};
    use crate::config::LoadConfig;
    use crate::ramp::{self, RampConfig, RampReport, StepResult};
    use crate::report::LoadReport;
    use crate::verdict;

    #[derive(Serialize)]
    struct LoadJson<'a> {
        #[serde(flatten)]
        load: &'a LoadReport,
        interleaved: &'a InterleavedReport,
    }

    #[derive(Serialize)]
    struct RampJson<'a> {
        #[serde(flatten)]
        ramp: &'a RampReport,
        /// One per try, in the order run.
        interleaved: &'a [InterleavedReport],
    }

    /// The AF_XDP engine's interleaved steps (feature `xdp`): the sockets opened once, the
    /// one-way delay measured once on them.
    #[cfg(feature = "xdp")]
    mod xdp {
        use super::*;
        use crate::engine::book::BATCH;
        use crate::xdp::engine::XdpLoad;

        pub(super) struct Load {
            load: XdpLoad,
            pub(super) one_way_ns: i64,
        }

        /// Chains for a step at `rate`: a client polls every 32-64 ms at most rates, like
        /// `--sockets` = rate / 2000 does on the socket engine.
        fn chains(rate: u64) -> usize {
            BATCH * (rate / 2000).clamp(1, 16) as usize
        }

        impl Load {
            pub(super) fn open(a: &LoadArgs, step: &LoadConfig) -> anyhow::Result<Self> {
                let mut load = XdpLoad::open(&crate::cli::xdp::config(a, step.clone())?)?;
                let quiet = LoadConfig {
                    rate: super::super::CALIBRATION_RATE,
                    duration: super::super::CALIBRATION,
                    ..step.clone()
                };
                let (_, _, il) = load.step_interleaved(&quiet, BATCH, 0)?;
                anyhow::ensure!(
                    il.interleaved_error.samples > 0,
                    "calibration: no interleaved reply from {} in {} valid replies (does it serve interleaved mode?)",
                    step.target,
                    il.replies_valid
                );
                Ok(Self { load, one_way_ns: il.interleaved_error.min_ns })
            }

            pub(super) fn step(&mut self, step: &LoadConfig) -> anyhow::Result<(LoadReport, InterleavedReport)> {
                let (report, _, il) = self.load.step_interleaved(step, chains(step.rate), self.one_way_ns)?;
                Ok((report, il))
            }
        }
    }

    /// A source of interleaved steps: the socket engine (a fresh generator a step) or AF_XDP.
    enum Steps {
        Socket {
            one_way_ns: i64,
        },
        #[cfg(feature = "xdp")]
        Xdp(Box<xdp::Load>),
    }

    impl Steps {
        fn open(a: &LoadArgs, step: &LoadConfig) -> anyhow::Result<Self> {
            match a.engine {
                Engine::Socket => Ok(Self::Socket { one_way_ns: calibrate(step)? }),
                #[cfg(feature = "xdp")]
                Engine::Xdp => Ok(Self::Xdp(Box::new(xdp::Load::open(a, step)?))),
                #[cfg(not(feature = "xdp"))]
                Engine::Xdp => anyhow::bail!("--engine xdp needs stratum-bench built with the xdp feature"),
            }
        }

        fn one_way_ns(&self) -> i64 {
            match self {
                Self::Socket { one_way_ns } => *one_way_ns,
                #[cfg(feature = "xdp")]
                Self::Xdp(load) => load.one_way_ns,
            }
        }

        fn step(&mut self, step: &LoadConfig) -> anyhow::Result<(LoadReport, InterleavedReport)> {
            match self {
                Self::Socket { one_way_ns } => run_step(step, *one_way_ns),
                #[cfg(feature = "xdp")]
                Self::Xdp(load) => load.step(step),
            }
        }
    }

    pub fn run_load(a: &LoadArgs, config: &LoadConfig, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
        let (report, il) = Steps::open(a, config)?.step(config)?;
        let text = if a.json {
            serde_json::to_string(&LoadJson { load: &report, interleaved: &il })? + "\n"
        } else {
            report.to_text() + &il.to_text()
        };
        out.write_all(text.as_bytes())?;
        Ok(judged(verdict::judge_load(&report, a.accept()), err))
    }

    pub fn run_ramp(
        a: &LoadArgs,
        config: &RampConfig,
        progress: impl FnMut(&StepResult),
    ) -> anyhow::Result<(String, RampReport)> {
        let mut steps = Steps::open(a, &config.step)?;
        let one_way = steps.one_way_ns();
        let engine = if a.engine == Engine::Socket { "socket" } else { "xdp" };
        let mut tries: Vec<InterleavedReport> = Vec::new();
        let report = ramp::run_with(
            config,
            engine,
            |step| {
                let (report, il) = steps.step(step)?;
                tries.push(il);
                Ok(report)
            },
            progress,
        )?;
        if let Some(path) = &a.plot {
            crate::plot::write(&report, path)?;
        }
        let text = if a.json {
            serde_json::to_string(&RampJson { ramp: &report, interleaved: &tries })? + "\n"
        } else {
            let mut t = report.to_text();
            t += &format!("interleaved, per try (one-way delay {one_way} ns subtracted):\n");
            t += "  offered/s  interleaved %  xleave T3 error min/mean/p99 ns  basic T3 error min/mean/p99 ns\n";
            for il in &tries {
                let (x, b) = (&il.interleaved_error, &il.basic_error);
                t += &format!(
                    "  {:>9}  {:>13.1}  {:>9}/{:>7}/{:>9}  {:>9}/{:>7}/{:>9}\n",
                    il.offered_rate, il.interleaved_pct, x.min_ns, x.mean_ns, x.p99_ns, b.min_ns, b.mean_ns, b.p99_ns
                );
            }
            t
        };
        Ok((text, report))
    }
}
