//! `stratum-bench load`: one fixed-rate step, its argument checks and its report.

use std::net::{IpAddr, SocketAddr};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine;
use crate::reply::Invalid;

pub const MAX_DURATION_S: f64 = 60.0;
pub const MAX_RATE: u64 = 10_000_000;
pub const MAX_SOCKETS: usize = 1024;
/// Generator threads (one per `--cores` entry).
pub const MAX_THREADS: usize = 256;

/// A validated load step.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: SocketAddr,
    /// Requests per second; 0 sends as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    /// Client sockets over all generator threads.
    pub sockets: usize,
    /// One generator thread per core listed, pinned there; empty: one unpinned thread.
    pub cores: Vec<usize>,
}

/// The loopback rule: a load generator must never be pointed at someone else's server by
/// accident. Loopback targets (127.0.0.0/8, ::1, and ::ffff:127.x.y.z) are always accepted;
/// anything else only with `--i-own-this-target` (a server in a network namespace of this host,
/// or a lab machine of the operator's), since that cannot be told from the address.
pub fn check_target(target: SocketAddr, i_own_this_target: bool) -> anyhow::Result<SocketAddr> {
    let ip = target.ip().to_canonical();
    if !ip.is_loopback() && !i_own_this_target {
        anyhow::bail!(
            "refusing to load {}: not a loopback address; pass --i-own-this-target if the server is yours \
             (a network namespace or a lab machine)",
            target.ip()
        );
    }
    if ip.is_unspecified() || port_is_zero(target) || is_multicast_or_broadcast(ip) {
        anyhow::bail!("--target {target} is not a unicast server address");
    }
    Ok(SocketAddr::new(ip, target.port()))
}

fn port_is_zero(target: SocketAddr) -> bool {
    target.port() == 0
}

fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

impl LoadConfig {
    pub fn new(
        target: SocketAddr,
        i_own_this_target: bool,
        rate: u64,
        duration_s: f64,
        sockets: usize,
        cores: Vec<usize>,
    ) -> anyhow::Result<Self> {
        let target = check_target(target, i_own_this_target)?;
        if !(duration_s > 0.0 && duration_s <= MAX_DURATION_S) {
            anyhow::bail!("--duration must be more than 0 and at most {MAX_DURATION_S} seconds");
        }
        if rate > MAX_RATE {
            anyhow::bail!("--rate must be at most {MAX_RATE} (0 = as fast as possible)");
        }
        if !(1..=MAX_SOCKETS).contains(&sockets) {
            anyhow::bail!("--sockets must be from 1 to {MAX_SOCKETS}");
        }
        if cores.len() > MAX_THREADS {
            anyhow::bail!("--cores lists at most {MAX_THREADS} cores");
        }
        if let Some(c) = cores.iter().enumerate().find_map(|(i, c)| cores[..i].contains(c).then_some(c)) {
            anyhow::bail!("--cores lists core {c} twice");
        }
        if sockets < cores.len() {
            anyhow::bail!("--sockets ({sockets}) must be at least the number of --cores ({})", cores.len());
        }
        if rate != 0 && rate < cores.len() as u64 {
            anyhow::bail!("--rate ({rate}) must be 0 or at least the number of --cores ({})", cores.len());
        }
        Ok(Self { target, rate, duration: Duration::from_secs_f64(duration_s), sockets, cores })
    }

    /// Generator threads: one per listed core, or one.
    pub fn threads(&self) -> usize {
        self.cores.len().max(1)
    }

    /// The core of a single pinned generator thread.
    pub fn core(&self) -> Option<usize> {
        match self.cores[..] {
            [c] => Some(c),
            _ => None,
        }
    }

    /// One step config per generator thread: its core, its share of the rate and of the sockets
    /// (so the threads' source ports are disjoint). The shares add up to the whole.
    pub fn per_thread(&self) -> Vec<LoadConfig> {
        let n = self.threads();
        let rates = split(self.rate, n);
        let sockets = split(self.sockets as u64, n);
        (0..n)
            .map(|i| LoadConfig {
                rate: rates[i],
                sockets: sockets[i] as usize,
                cores: self.cores.get(i).map(|&c| vec![c]).unwrap_or_default(),
                ..self.clone()
            })
            .collect()
    }
}

/// Pins the calling thread to `core` (nothing to do for None): each generator thread to its
/// `--cores` entry.
pub fn pin_to(core: Option<usize>) -> anyhow::Result<()> {
    match core {
        Some(core) if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) => {
            anyhow::bail!("cannot pin to core {core}")
        }
        _ => Ok(()),
    }
}

/// `total` in `n` shares that differ by at most one, the larger ones first.
pub fn split(total: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64).map(|i| total / n64 + u64::from(i < total % n64)).collect()
}

/// Per-reply counters. received = valid + invalid + kod + unsynced; answered = the requests with
/// at least one reply that names them (valid, KoD, unsynchronised, or failing a timestamp check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub answered: u64,
    pub valid: u64,
    pub invalid: u64,
    pub kod: u64,
    pub unsynced: u64,
    pub invalid_length: u64,
    pub invalid_header: u64,
    pub invalid_origin: u64,
    pub duplicate: u64,
    pub invalid_late: u64,
    pub invalid_t2_window: u64,
    pub invalid_t3_window: u64,
    /// Replies to an earlier step of the same ramp (they arrived after that step's drain): not
    /// this step's replies, so in none of the counts above.
    pub stale: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        let Self {
            sent,
            send_errors,
            received,
            answered,
            valid,
            invalid,
            kod,
            unsynced,
            invalid_length,
            invalid_header,
            invalid_origin,
            duplicate,
            invalid_late,
            invalid_t2_window,
            invalid_t3_window,
            stale,
        } = o;
        self.sent += sent;
        self.send_errors += send_errors;
        self.received += received;
        self.answered += answered;
        self.valid += valid;
        self.invalid += invalid;
        self.kod += kod;
        self.unsynced += unsynced;
        self.invalid_length += invalid_length;
        self.invalid_header += invalid_header;
        self.invalid_origin += invalid_origin;
        self.duplicate += duplicate;
        self.invalid_late += invalid_late;
        self.invalid_t2_window += invalid_t2_window;
        self.invalid_t3_window += invalid_t3_window;
        self.stale += stale;
    }
}

impl Counts {
    pub fn count_invalid(&mut self, why: Invalid) {
        self.invalid += 1;
        *match why {
            Invalid::Length => &mut self.invalid_length,
            Invalid::Header => &mut self.invalid_header,
            Invalid::Origin => &mut self.invalid_origin,
            Invalid::Duplicate => &mut self.duplicate,
            Invalid::Late => &mut self.invalid_late,
            Invalid::T2Window => &mut self.invalid_t2_window,
            Invalid::T3Window => &mut self.invalid_t3_window,
        } += 1;
    }
}

/// What an engine hands back.
#[derive(Debug)]
pub struct LoadOutcome {
    pub counts: Counts,
    pub send_elapsed: Duration,
    /// Kernel drops at the server's socket during the run; None when the server is not on our
    /// loopback (its socket is not in our /proc/net/udp).
    pub server_socket_drops: Option<u64>,
    pub client_socket_drops: u64,
    pub rtt_ns: Histogram<u64>,
    pub turnaround_ns: Histogram<u64>,
}

impl LoadOutcome {
    /// Folds another generator thread's outcome into this one: counters and histograms add up,
    /// the send phase is the longest of the two.
    pub fn merge(&mut self, o: LoadOutcome) -> anyhow::Result<()> {
        self.counts += o.counts;
        self.send_elapsed = self.send_elapsed.max(o.send_elapsed);
        self.server_socket_drops = match (self.server_socket_drops, o.server_socket_drops) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.client_socket_drops += o.client_socket_drops;
        self.rtt_ns.add(&o.rtt_ns)?;
        self.turnaround_ns.add(&o.turnaround_ns)?;
        Ok(())
    }
}

/// The `--json` object. Keys up to `rtt_max_us` are those the earlier `udp_load` example printed,
/// so older results stay comparable.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadReport {
    pub target: String,
    pub engine: &'static str,
    pub offered_rate: u64,
    pub send_rate: u64,
    pub duration_s: f64,
    pub sockets: usize,
    /// The generator's core when it ran as one pinned thread.
    pub core: Option<usize>,
    /// Generator threads and the cores they were pinned to (empty: one unpinned thread).
    pub threads: usize,
    pub cores: Vec<usize>,
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub valid: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub kod: u64,
    pub unsynced: u64,
    pub loss_pct: f64,
    pub achieved_reply_rate: u64,
    pub server_socket_drops: Option<u64>,
    pub client_socket_drops: u64,
    /// AF_XDP engine: frames the generator's interface refused at transmit over the step (its
    /// tx_dropped counter; on veth, the peer's receive ring was full; on a NIC, the transmit
    /// queue). They are among the requests sent, so they count as lost. None for sockets.
    pub tx_refused: Option<u64>,
    pub rtt_p50_us: u64,
    pub rtt_p99_us: u64,
    pub rtt_max_us: u64,
    pub answered: u64,
    pub invalid_length: u64,
    pub invalid_header: u64,
    pub invalid_origin: u64,
    pub invalid_late: u64,
    pub invalid_t2_window: u64,
    pub invalid_t3_window: u64,
    /// Replies to an earlier step of the ramp, not counted in this one.
    pub stale: u64,
    pub rtt_p50_ns: u64,
    pub rtt_p90_ns: u64,
    pub rtt_p99_ns: u64,
    pub rtt_p999_ns: u64,
    pub rtt_max_ns: u64,
    /// Server turnaround T3 - T2 of valid replies, from the reply's own timestamps.
    pub turnaround_p50_ns: u64,
    pub turnaround_p99_ns: u64,
    pub turnaround_max_ns: u64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Lost requests as a percentage of those sent.
pub fn loss_pct(sent: u64, answered: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        100.0 * sent.saturating_sub(answered) as f64 / sent as f64
    }
}

impl LoadReport {
    pub fn new(config: &LoadConfig, engine: &'static str, o: &LoadOutcome) -> Self {
        let c = &o.counts;
        let secs = o.send_elapsed.as_secs_f64().max(1e-9);
        let q = |h: &Histogram<u64>, quantile: f64| if h.is_empty() { 0 } else { h.value_at_quantile(quantile) };
        let (rtt, turnaround) = (&o.rtt_ns, &o.turnaround_ns);
        Self {
            target: config.target.to_string(),
            engine,
            offered_rate: if config.rate == 0 { (c.sent as f64 / secs).round() as u64 } else { config.rate },
            send_rate: (c.sent as f64 / secs).round() as u64,
            duration_s: round3(secs),
            sockets: config.sockets,
            core: config.core(),
            threads: config.threads(),
            cores: config.cores.clone(),
            sent: c.sent,
            send_errors: c.send_errors,
            received: c.received,
            valid: c.valid,
            invalid: c.invalid,
            duplicate: c.duplicate,
            kod: c.kod,
            unsynced: c.unsynced,
            loss_pct: round3(loss_pct(c.sent, c.answered)),
            achieved_reply_rate: (c.valid as f64 / secs).round() as u64,
            server_socket_drops: o.server_socket_drops,
            client_socket_drops: o.client_socket_drops,
            tx_refused: None,
            rtt_p50_us: q(rtt, 0.50) / 1000,
            rtt_p99_us: q(rtt, 0.99) / 1000,
            rtt_max_us: rtt.max() / 1000,
            answered: c.answered,
            invalid_length: c.invalid_length,
            invalid_header: c.invalid_header,
            invalid_origin: c.invalid_origin,
            invalid_late: c.invalid_late,
            invalid_t2_window: c.invalid_t2_window,
            invalid_t3_window: c.invalid_t3_window,
            stale: c.stale,
            rtt_p50_ns: q(rtt, 0.50),
            rtt_p90_ns: q(rtt, 0.90),
            rtt_p99_ns: q(rtt, 0.99),
            rtt_p999_ns: q(rtt, 0.999),
            rtt_max_ns: rtt.max(),
            turnaround_p50_ns: q(turnaround, 0.50),
            turnaround_p99_ns: q(turnaround, 0.99),
            turnaround_max_ns: turnaround.max(),
        }
    }

    pub fn to_text(&self) -> String {
        let core = cores_text(&self.cores);
        let mut s =
            format!("target        {} ({} sockets, {core}, {} engine)\n", self.target, self.sockets, self.engine);
        s += &format!(
            "offered rate  {}/s (sent at {}/s over {:.3} s)\n",
            self.offered_rate, self.send_rate, self.duration_s
        );
        if (self.send_rate as f64) < 0.98 * self.offered_rate as f64 {
            s += "              WARNING: the generator fell behind the offered rate\n";
        }
        s += &format!("sent          {} ({} send errors)\n", self.sent, self.send_errors);
        s += &format!("received      {} (answered {})\n", self.received, self.answered);
        s += &format!("valid         {} ({}/s)\n", self.valid, self.achieved_reply_rate);
        s += &format!(
            "invalid       {} (length {}, header {}, origin {}, duplicate {}, late {}, T2 window {}, T3 window {})\n",
            self.invalid,
            self.invalid_length,
            self.invalid_header,
            self.invalid_origin,
            self.duplicate,
            self.invalid_late,
            self.invalid_t2_window,
            self.invalid_t3_window
        );
        if self.stale > 0 {
            s += &format!("stale         {} (replies to an earlier step of the ramp, not counted here)\n", self.stale);
        }
        s += &format!("kod           {}\n", self.kod);
        s += &format!("unsynced      {}\n", self.unsynced);
        s += &format!("loss          {:.3} %\n", self.loss_pct);
        let server = self.server_socket_drops.map_or_else(|| "n/a".to_string(), |d| d.to_string());
        s += &format!("socket drops  server {server}, client {}\n", self.client_socket_drops);
        if let Some(n) = self.tx_refused {
            s += &format!("tx refused    {n} (the interface's tx_dropped: counted as sent and lost)\n");
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        s += &format!(
            "rtt           p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us\n",
            us(self.rtt_p50_ns),
            us(self.rtt_p90_ns),
            us(self.rtt_p99_ns),
            us(self.rtt_p999_ns),
            us(self.rtt_max_ns)
        );
        s += &format!(
            "turnaround    p50 {:.1} us, p99 {:.1} us, max {:.1} us (server T3 - T2)\n",
            us(self.turnaround_p50_ns),
            us(self.turnaround_p99_ns),
            us(self.turnaround_max_ns)
        );
        s
    }
}

/// "core 3", "cores 0,1 (2 threads)" or "core unpinned", as the text reports print it.
pub fn cores_text(cores: &[usize]) -> String {
    match cores {
        [] => "core unpinned".to_string(),
        [c] => format!("core {c}"),
        _ => {
            let list: Vec<String> = cores.iter().map(usize::to_string).collect();
            format!("cores {} ({} threads)", list.join(","), cores.len())
        }
    }
}

/// Runs one step with the socket engine: one generator thread per core of `--cores` (their send
/// phases start together), one thread otherwise.
pub fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    // Only a loopback server's socket is in our view of /proc/net/udp.
    let port = config.target.port();
    let server_drops_before = config.target.ip().is_loopback().then(|| engine::socket::socket_drops(&[port]));
    let mut outcome = if config.threads() == 1 {
        engine::socket::run(config, None)?
    } else {
        let parts = config.per_thread();
        let start = Barrier::new(parts.len());
        let outcomes: Vec<anyhow::Result<LoadOutcome>> = thread::scope(|scope| {
            let handles: Vec<_> =
                parts.iter().map(|part| scope.spawn(|| engine::socket::run(part, Some(&start)))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked"))))
                .collect()
        });
        let mut outcomes = outcomes.into_iter();
        let mut total = outcomes.next().expect("at least one thread")?;
        for o in outcomes {
            total.merge(o?)?;
        }
        total
    };
    outcome.server_socket_drops =
        server_drops_before.map(|before| engine::socket::socket_drops(&[port]).saturating_sub(before));
    Ok(LoadReport::new(config, "socket", &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_targets_are_accepted() {
        for t in ["127.0.0.1:123", "127.0.0.53:11123", "[::1]:123"] {
            assert_eq!(check_target(addr(t), false).unwrap(), addr(t));
        }
        // An IPv4-mapped loopback address is loopback too (and used as plain IPv4).
        assert_eq!(check_target(addr("[::ffff:127.0.0.1]:123"), false).unwrap(), addr("127.0.0.1:123"));
    }

    #[test]
    fn other_targets_are_refused_without_the_flag() {
        for t in ["192.0.2.1:123", "10.0.0.1:123", "[2001:db8::1]:123", "[::ffff:192.0.2.1]:123"] {
            let e = check_target(addr(t), false).unwrap_err().to_string();
            assert!(e.contains("not a loopback address") && e.contains("--i-own-this-target"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(check_target(addr(t), true).is_ok());
        }
    }

    #[test]
    fn unusable_targets_are_refused_even_with_the_flag() {
        for t in ["0.0.0.0:123", "[::]:123", "224.0.1.1:123", "255.255.255.255:123", "[ff02::101]:123", "127.0.0.1:0"] {
            assert!(check_target(addr(t), true).is_err(), "{t}");
        }
    }

    #[test]
    fn step_arguments_are_bounded() {
        let ok =
            |rate, duration, sockets| LoadConfig::new(addr("127.0.0.1:123"), false, rate, duration, sockets, vec![]);
        assert!(ok(1000, 1.0, 16).is_ok());
        assert!(ok(0, 60.0, 1).is_ok());
        assert!(ok(1000, 0.0, 16).is_err());
        assert!(ok(1000, 60.5, 16).is_err());
        assert!(ok(1000, f64::NAN, 16).is_err());
        assert!(ok(MAX_RATE + 1, 1.0, 16).is_err());
        assert!(ok(1000, 1.0, 0).is_err());
        assert!(ok(1000, 1.0, MAX_SOCKETS + 1).is_err());
    }

    #[test]
    fn cores_are_distinct_with_a_socket_and_a_request_each() {
        let cfg = |rate, sockets, cores: &[usize]| {
            LoadConfig::new(addr("127.0.0.1:123"), false, rate, 1.0, sockets, cores.to_vec())
        };
        assert!(cfg(1000, 16, &[0, 1, 2]).is_ok());
        assert!(cfg(0, 2, &[0, 1]).is_ok());
        assert!(cfg(2, 2, &[0, 1]).is_ok());
        let e = cfg(1000, 16, &[0, 1, 0]).unwrap_err().to_string();
        assert!(e.contains("core 0 twice"), "{e}");
        assert!(cfg(1000, 1, &[0, 1]).unwrap_err().to_string().contains("--sockets (1)"));
        assert!(cfg(1, 16, &[0, 1]).unwrap_err().to_string().contains("--rate (1)"));
        assert!(cfg(1000, MAX_SOCKETS, &(0..=MAX_THREADS).collect::<Vec<_>>()).is_err());
        let one = cfg(1000, 16, &[3]).unwrap();
        assert_eq!((one.threads(), one.core()), (1, Some(3)));
        let none = cfg(1000, 16, &[]).unwrap();
        assert_eq!((none.threads(), none.core()), (1, None));
        assert_eq!(cfg(1000, 16, &[0, 1]).unwrap().core(), None);
    }

    #[test]
    fn threads_share_the_rate_and_the_sockets_exactly() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(9, 3), [3, 3, 3]);
        assert_eq!(split(0, 2), [0, 0]);
        assert_eq!(split(7, 1), [7]);
        let c = LoadConfig::new(addr("127.0.0.1:123"), false, 100_001, 2.0, 16, vec![4, 2, 7]).unwrap();
        let parts = c.per_thread();
        assert_eq!(parts.iter().map(|p| p.rate).collect::<Vec<_>>(), [33_334, 33_334, 33_333]);
        assert_eq!(parts.iter().map(|p| p.sockets).collect::<Vec<_>>(), [6, 5, 5]);
        assert_eq!(parts.iter().map(|p| p.cores.clone()).collect::<Vec<_>>(), [vec![4], vec![2], vec![7]]);
        assert!(parts.iter().all(|p| p.target == c.target && p.duration == c.duration));
        // As fast as possible stays so in every thread; unpinned is one unpinned thread.
        let fast = LoadConfig::new(addr("127.0.0.1:123"), false, 0, 1.0, 2, vec![0, 1]).unwrap();
        assert!(fast.per_thread().iter().all(|p| p.rate == 0));
        let single = LoadConfig::new(addr("127.0.0.1:123"), false, 500, 1.0, 3, vec![]).unwrap().per_thread();
        assert_eq!((single.len(), single[0].rate, single[0].sockets, single[0].cores.len()), (1, 500, 3, 0));
        assert_eq!(cores_text(&[]), "core unpinned");
        assert_eq!(cores_text(&[5]), "core 5");
        assert_eq!(cores_text(&[0, 2]), "cores 0,2 (2 threads)");
    }

    #[test]
    fn thread_outcomes_merge_into_one() {
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let outcome = |sent: u64, answered: u64, rtt_us: u64, ms: u64| {
            let mut rtt = h();
            rtt.record(rtt_us * 1000).unwrap();
            let mut counts = Counts { sent, received: answered, answered, valid: answered, ..Counts::default() };
            counts.count_invalid(Invalid::T3Window);
            LoadOutcome {
                counts,
                send_elapsed: Duration::from_millis(ms),
                server_socket_drops: None,
                client_socket_drops: 1,
                rtt_ns: rtt,
                turnaround_ns: h(),
            }
        };
        let mut a = outcome(100, 90, 10, 1000);
        a.merge(outcome(50, 50, 30, 1010)).unwrap();
        assert_eq!(
            a.counts,
            Counts {
                sent: 150,
                received: 140,
                answered: 140,
                valid: 140,
                invalid: 2,
                invalid_t3_window: 2,
                ..Counts::default()
            }
        );
        assert_eq!(
            (a.send_elapsed, a.client_socket_drops, a.server_socket_drops),
            (Duration::from_millis(1010), 2, None)
        );
        assert_eq!(a.rtt_ns.len(), 2);
        assert!(a.rtt_ns.max() >= 30_000 && a.rtt_ns.min() <= 10_010);
    }

    #[test]
    fn counts_and_report_math() {
        let mut c =
            Counts { sent: 1000, received: 996, answered: 990, valid: 985, kod: 3, unsynced: 2, ..Counts::default() };
        for why in
            [Invalid::Duplicate, Invalid::Duplicate, Invalid::T2Window, Invalid::Origin, Invalid::Late, Invalid::Length]
        {
            c.count_invalid(why);
        }
        assert_eq!(c.invalid, 6);
        assert_eq!(
            (c.duplicate, c.invalid_t2_window, c.invalid_origin, c.invalid_late, c.invalid_length),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(c.received, c.valid + c.invalid + c.kod + c.unsynced);

        let mut rtt = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let mut turnaround = rtt.clone();
        // 1..=100 µs, one each: p50 = 50 µs, p99 = 99 µs (within the histogram's 0.1 %).
        for us in 1..=100u64 {
            rtt.record(us * 1000).unwrap();
            turnaround.record(us * 10).unwrap();
        }
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 1000, 1.0, 4, vec![0]).unwrap();
        let o = LoadOutcome {
            counts: c,
            send_elapsed: Duration::from_millis(1000),
            server_socket_drops: Some(0),
            client_socket_drops: 0,
            rtt_ns: rtt,
            turnaround_ns: turnaround,
        };
        let r = LoadReport::new(&config, "socket", &o);
        assert_eq!((r.offered_rate, r.send_rate, r.achieved_reply_rate), (1000, 1000, 985));
        assert_eq!(r.loss_pct, 1.0);
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(r.rtt_p50_ns, 50_000) && near(r.rtt_p99_ns, 99_000) && near(r.rtt_max_ns, 100_000), "{r:?}");
        assert_eq!((r.rtt_p50_us, r.rtt_p99_us), (r.rtt_p50_ns / 1000, r.rtt_p99_ns / 1000));
        assert!(near(r.turnaround_p50_ns, 500) && near(r.turnaround_p99_ns, 990), "{r:?}");
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(10, 12), 0.0);
    }

    #[test]
    fn empty_histograms_report_zero() {
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 0, 1.0, 1, vec![]).unwrap();
        let h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let o = LoadOutcome {
            counts: Counts::default(),
            send_elapsed: Duration::from_millis(500),
            server_socket_drops: None,
            client_socket_drops: 0,
            rtt_ns: h.clone(),
            turnaround_ns: h,
        };
        let r = LoadReport::new(&config, "socket", &o);
        assert_eq!((r.rtt_p50_ns, r.rtt_p99_ns, r.rtt_max_ns, r.turnaround_p99_ns, r.loss_pct), (0, 0, 0, 0, 0.0));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["server_socket_drops"].is_null() && json["core"].is_null());
    }
}
