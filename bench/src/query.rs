//! `stratum-bench query`: one NTP client exchange from a fresh socket, like `ntpdig` or `chronyd -Q`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;
use stratum_host::clock::now as now_ntp;
use stratum_proto::client::{self, ReplyClass, ReplyError, Timestamps};
use stratum_proto::{LeapIndicator, NtpTimestamp};

pub const DEFAULT_PORT: u16 = 123;

/// What went wrong with a query. Each has its `outcome` name in `--json` and its exit status.
#[derive(Debug)]
pub enum QueryError {
    /// The server answered with a kiss-o'-death (RATE, DENY, RSTR, ...).
    KissOfDeath { server: SocketAddr, code: String },
    /// No valid reply in time: nothing came (`ignored` 0), or only packets that failed the
    /// checks (`first` is the first one's fault).
    NoValidReply { server: SocketAddr, timeout: Duration, ignored: usize, first: Option<ReplyError> },
    /// An ICMP port unreachable: nothing listens there.
    Refused { server: SocketAddr },
    /// Anything else: a bad argument, a name that does not resolve, a socket error.
    Failed(anyhow::Error),
}

impl QueryError {
    /// The `outcome` key of its `--json` object.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::KissOfDeath { .. } => "kod",
            Self::NoValidReply { ignored: 0, .. } => "timeout",
            Self::NoValidReply { .. } => "invalid",
            Self::Refused { .. } => "refused",
            Self::Failed(_) => "error",
        }
    }
}

/// What a kiss-o'-death asks of a client, by its code (RFC 5905, 7.4).
pub fn kod_meaning(code: &str) -> String {
    match code {
        "RATE" => "it asks us to slow down (it rate-limits this client)".to_string(),
        "DENY" | "RSTR" => "the server refuses to serve us: stop querying it".to_string(),
        other => format!("kiss code {other}"),
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KissOfDeath { server, code } => {
                write!(f, "{server} answered with a kiss-o'-death {code}: {}", kod_meaning(code))
            }
            Self::NoValidReply { server, timeout, ignored, first } => {
                write!(f, "no valid reply from {server} within {timeout:?}")?;
                match first {
                    Some(first) => write!(f, " ({ignored} invalid ignored, first: {first})"),
                    None => Ok(()),
                }
            }
            Self::Refused { server } => write!(f, "{server} refused the request (nothing listens on that port)"),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for QueryError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// The `--json` object of a query that got no usable reply: which outcome, and why.
#[derive(Clone, Debug, Serialize)]
pub struct QueryFailure {
    /// The server as resolved, else as given.
    pub server: String,
    pub outcome: &'static str,
    /// The kiss code, for `outcome` "kod".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kod_code: Option<String>,
    /// Packets that failed the checks, for "timeout" and "invalid".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<usize>,
    /// The line stderr gets.
    pub message: String,
}

impl QueryFailure {
    pub fn new(server: &str, e: &QueryError) -> Self {
        let (server, kod_code, ignored) = match e {
            QueryError::KissOfDeath { server, code } => (server.to_string(), Some(code.clone()), None),
            QueryError::NoValidReply { server, ignored, .. } => (server.to_string(), None, Some(*ignored)),
            QueryError::Refused { server } => (server.to_string(), None, None),
            QueryError::Failed(_) => (server.to_string(), None, None),
        };
        Self { server, outcome: e.outcome(), kod_code, ignored, message: e.to_string() }
    }
}

/// The outcome of one exchange, in the units `--json` prints (seconds; log2 fields as given).
#[derive(Clone, Debug, Serialize)]
pub struct QueryReport {
    /// "answered", or "unsynchronised" for a reply with LI 3 or stratum 16 (exit status 3).
    pub outcome: &'static str,
    pub server: String,
    pub version: u8,
    /// Leap indicator: 0 none, 1 insert, 2 delete, 3 unsynchronised.
    pub leap: u8,
    pub leap_text: &'static str,
    pub stratum: u8,
    pub refid: String,
    /// Seconds the server's clock is ahead of ours.
    pub offset: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
    pub root_delay: f64,
    pub root_dispersion: f64,
    /// The server's clock precision, seconds (2^precision_log2).
    pub precision: f64,
    pub precision_log2: i8,
    /// The poll interval the server suggests, seconds (2^poll_log2).
    pub poll: f64,
    pub poll_log2: i8,
    /// LI is not 3 and the stratum is 1..=15.
    pub synchronized: bool,
}

impl QueryReport {
    /// The line stderr gets for an unsynchronised reply; None for a synchronised one.
    pub fn unsynchronised_text(&self) -> Option<String> {
        (!self.synchronized).then(|| {
            format!(
                "{} is not synchronised (leap {}, stratum {}): its time is not to be trusted",
                self.server, self.leap, self.stratum
            )
        })
    }
}

impl QueryReport {
    pub fn to_text(&self) -> String {
        format!(
            "server           {}\n\
             stratum          {}\n\
             refid            {}\n\
             leap             {} ({})\n\
             offset           {:+.9} s\n\
             delay            {:.9} s\n\
             root delay       {:.6} s\n\
             root dispersion  {:.6} s\n\
             precision        2^{} ({:.3e} s)\n\
             poll             2^{} ({} s)\n",
            self.server,
            self.stratum,
            self.refid,
            self.leap,
            self.leap_text,
            self.offset,
            self.delay,
            self.root_delay,
            self.root_dispersion,
            self.precision_log2,
            self.precision,
            self.poll_log2,
            self.poll,
        )
    }
}

/// `HOST[:PORT]`: an IPv4 address, an IPv6 address (bare or in brackets) or a host name, with the
/// NTP port when none is given. A name resolves to its first address.
pub fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if let Some(ip) = target.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let ip: Ipv6Addr = ip.parse().map_err(|_| anyhow::anyhow!("{target}: not an IPv6 address"))?;
        return Ok(SocketAddr::new(ip.into(), DEFAULT_PORT));
    }
    let (host, port) = match target.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| anyhow::anyhow!("{target}: bad port {port:?}"))?),
        None => (target, DEFAULT_PORT),
    };
    if host.is_empty() {
        anyhow::bail!("{target}: no host");
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} has no address"))
}

/// Sends one request from a fresh socket and waits up to `timeout` for a valid reply. Packets that
/// fail the checks (wrong origin, mode, version, length) are ignored, as a client must; if no
/// valid reply follows, the error names what was ignored.
pub fn query(server: SocketAddr, timeout: Duration) -> Result<QueryReport, QueryError> {
    query_with(server, timeout, None)
}

/// [`query`], over NTS when `nts` is given: the request carries the session's first cookie and
/// an authenticator, and only a reply whose authenticator opens with S2C counts (others are
/// ignored, as forged ones); an NTS NAK is the kiss code NTSN.
pub fn query_with(
    server: SocketAddr,
    timeout: Duration,
    nts: Option<&crate::nts::Session>,
) -> Result<QueryReport, QueryError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| anyhow::anyhow!("cannot open a socket: {e}"))?;
    socket.connect(server).map_err(|e| anyhow::anyhow!("cannot reach {server}: {e}"))?;

    // A random transmit timestamp (as chrony sends): it reveals nothing about our clock, and a
    // reply can only echo it if it saw the request. T1 stays here.
    let transmit = NtpTimestamp::from_bits(rand::random::<u64>() | 1);
    let uid: [u8; 32] = rand::random();
    let request = match nts {
        None => client::request(0, 0, transmit).to_vec(),
        Some(session) => {
            let cookie = session.cookies.first().ok_or_else(|| anyhow::anyhow!("the NTS-KE gave no cookie"))?;
            crate::nts::request_with(session.aead, &session.c2s, cookie, &uid, transmit, 0, &rand::random())
        }
    };
    let t1 = now_ntp();
    socket.send(&request).map_err(|e| anyhow::anyhow!("cannot send to {server}: {e}"))?;

    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    let mut ignored: Vec<ReplyError> = Vec::new();
    // Replies whose NTS fields did not check (not authentic: ignored, as forged ones).
    let mut nts_rejected = 0usize;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let first = ignored.first().copied();
            return Err(QueryError::NoValidReply { server, timeout, ignored: ignored.len() + nts_rejected, first });
        }
        socket.set_read_timeout(Some(left)).map_err(anyhow::Error::from)?;
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(QueryError::Refused { server }),
            Err(e) => return Err(anyhow::anyhow!("receive from {server}: {e}").into()),
        };
        let t4 = now_ntp();
        if let Some(session) = nts {
            match crate::nts::check_reply(&session.s2c, &buf[..len], &uid) {
                Ok(_) => {}
                // A NAK echoes our unique identifier and (checked here) our transmit time.
                Err(crate::nts::NtsReplyError::Nak)
                    if matches!(client::check_reply(&buf[..len], transmit), Err(ReplyError::KissOfDeath(_))) =>
                {
                    return Err(QueryError::KissOfDeath { server, code: "NTSN".to_string() });
                }
                Err(_) => {
                    nts_rejected += 1;
                    continue;
                }
            }
        }
        match client::check_reply(&buf[..len], transmit) {
            Ok(h) => {
                let exchange = Timestamps::of_reply(t1, &h, t4);
                let stratum = h.stratum();
                let synchronized = client::classify(&h) == ReplyClass::Served;
                return Ok(QueryReport {
                    outcome: if synchronized { "answered" } else { "unsynchronised" },
                    server: server.to_string(),
                    version: h.version(),
                    leap: h.leap().to_bits(),
                    leap_text: leap_text(h.leap()),
                    stratum,
                    refid: h.ref_id().to_text(stratum).to_string(),
                    offset: exchange.offset().to_seconds_f64(),
                    delay: exchange.delay().to_seconds_f64(),
                    root_delay: h.root_delay().to_seconds_f64(),
                    root_dispersion: h.root_dispersion().to_seconds_f64(),
                    precision: log2_seconds(h.precision()),
                    precision_log2: h.precision(),
                    poll: log2_seconds(h.poll()),
                    poll_log2: h.poll(),
                    synchronized,
                });
            }
            Err(ReplyError::KissOfDeath(code)) => {
                return Err(QueryError::KissOfDeath { server, code: code.to_text(0).to_string() });
            }
            // Bounded: at most this many remembered, the rest only counted by the loop's deadline.
            Err(other) if ignored.len() < 1024 => ignored.push(other),
            Err(_) => {}
        }
    }
}

pub fn leap_text(leap: LeapIndicator) -> &'static str {
    match leap {
        LeapIndicator::NoWarning => "none",
        LeapIndicator::InsertSecond => "insert second",
        LeapIndicator::DeleteSecond => "delete second",
        LeapIndicator::Unsynchronized => "unsynchronised",
    }
}

/// 2^`log2` seconds (precision and poll fields).
pub fn log2_seconds(log2: i8) -> f64 {
    2f64.powi(i32::from(log2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_port() {
        assert_eq!(resolve("127.0.0.1").unwrap(), "127.0.0.1:123".parse().unwrap());
        assert_eq!(resolve("127.0.0.1:11123").unwrap(), "127.0.0.1:11123".parse().unwrap());
        assert_eq!(resolve("::1").unwrap(), "[::1]:123".parse().unwrap());
        assert_eq!(resolve("[::1]").unwrap(), "[::1]:123".parse().unwrap());
        assert_eq!(resolve("[::1]:4123").unwrap(), "[::1]:4123".parse().unwrap());
        assert!(resolve("127.0.0.1:notaport").is_err());
        assert!(resolve(":123").is_err());
        assert!(resolve("[zz]").is_err());
    }
}
