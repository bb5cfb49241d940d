//! `stratum-bench load`: one fixed-rate step, its argument checks and its report.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine;
use crate::reply::Invalid;

pub const MAX_DURATION_S: f64 = 60.0;
pub const MAX_RATE: u64 = 10_000_000;
pub const MAX_SOCKETS: usize = 1024;

/// A validated load step.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: SocketAddr,
    /// Requests per second; 0 sends as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    pub sockets: usize,
    pub core: Option<usize>,
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
        core: Option<usize>,
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
        Ok(Self { target, rate, duration: Duration::from_secs_f64(duration_s), sockets, core })
    }
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
    pub core: Option<usize>,
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
            core: config.core,
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
        let core = self.core.map_or_else(|| "unpinned".to_string(), |c| c.to_string());
        let mut s =
            format!("target        {} ({} sockets, core {core}, {} engine)\n", self.target, self.sockets, self.engine);
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
        s += &format!("kod           {}\n", self.kod);
        s += &format!("unsynced      {}\n", self.unsynced);
        s += &format!("loss          {:.3} %\n", self.loss_pct);
        let server = self.server_socket_drops.map_or_else(|| "n/a".to_string(), |d| d.to_string());
        s += &format!("socket drops  server {server}, client {}\n", self.client_socket_drops);
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

/// Runs one step with the socket engine.
pub fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    let outcome = engine::socket::run(config)?;
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
        let ok = |rate, duration, sockets| LoadConfig::new(addr("127.0.0.1:123"), false, rate, duration, sockets, None);
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
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 1000, 1.0, 4, Some(0)).unwrap();
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
        let config = LoadConfig::new(addr("127.0.0.1:123"), false, 0, 1.0, 1, None).unwrap();
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
