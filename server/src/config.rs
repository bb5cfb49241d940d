//! The TOML configuration: its types, defaults, and errors that name the file, line and key.
//!
//! Parsing is strict (unknown keys are errors) so that a typo never silently changes behaviour.
//! Every problem becomes one [`ConfigError`] line: `FILE:LINE: KEY: what is wrong`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use stratum_proto::server::access::Cidr;
use stratum_proto::server::ratelimit::{self as limiter, MAX_INTERVAL, MIN_INTERVAL};
use stratum_proto::RefId;

/// The configuration compiled into the binary, used when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../deploy/stratumd.toml");
pub const EMBEDDED_NAME: &str = "<embedded default>";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub server: ServerConfig,
    pub clock: ClockConfig,
    /// Absent: no rate limiting.
    #[serde(default)]
    pub ratelimit: Option<RateLimitConfig>,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Absent: no `/metrics` endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Absent: no control socket (and no `stratumctl`).
    #[serde(default)]
    pub control: Option<ControlConfig>,
}

/// Where `/metrics` listens when `[metrics]` gives no `listen`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9123";
/// Where the control socket is made when `[control]` gives no `socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/stratumd/control.sock";
/// The longest path a Unix socket address holds (sun_path, less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `[metrics]`: Prometheus text exposition over HTTP on a management address.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_listen", deserialize_with = "management_address")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN.parse().expect("literal")
}

fn management_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!("`{text}` is not a socket address (like \"127.0.0.1:9123\" or \"[::1]:9123\")"))
    })
}

/// `[control]`: the Unix socket `stratumctl` talks to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlConfig {
    #[serde(default = "default_control_socket", deserialize_with = "socket_path")]
    pub socket: PathBuf,
}

fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}

fn socket_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() || text.ends_with('/') {
        return Err(de::Error::custom(format!("`{text}` is not a file path")));
    }
    if text.len() > MAX_SOCKET_PATH {
        return Err(de::Error::custom(format!(
            "{} bytes is too long for a Unix socket path (at most {MAX_SOCKET_PATH})",
            text.len()
        )));
    }
    Ok(PathBuf::from(text))
}

/// `[ratelimit]`: chrony's `ratelimit` semantics (see proto's ratelimit module).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RateLimitConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_interval", deserialize_with = "interval")]
    pub interval: i8,
    #[serde(default = "default_burst", deserialize_with = "burst")]
    pub burst: u8,
    #[serde(default = "default_leak", deserialize_with = "leak")]
    pub leak: u8,
    #[serde(default, deserialize_with = "kod")]
    pub kod: u8,
    #[serde(default = "default_v4_prefix", deserialize_with = "ipv4_prefix")]
    pub ipv4_prefix: u8,
    #[serde(default = "default_v6_prefix", deserialize_with = "ipv6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default = "default_clients", deserialize_with = "clients")]
    pub clients: usize,
}

impl RateLimitConfig {
    pub fn to_proto(&self) -> limiter::RateLimitConfig {
        limiter::RateLimitConfig {
            interval: self.interval,
            burst: self.burst,
            leak: self.leak,
            kod: self.kod,
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
            clients: self.clients,
        }
    }
}

fn yes() -> bool {
    true
}
// The defaults are the limiter's own (proto's `RateLimitConfig::default`), written once there.
fn default_interval() -> i8 {
    limiter::RateLimitConfig::default().interval
}
fn default_burst() -> u8 {
    limiter::RateLimitConfig::default().burst
}
fn default_leak() -> u8 {
    limiter::RateLimitConfig::default().leak
}
fn default_v4_prefix() -> u8 {
    limiter::RateLimitConfig::default().ipv4_prefix
}
fn default_v6_prefix() -> u8 {
    limiter::RateLimitConfig::default().ipv6_prefix
}
fn default_clients() -> usize {
    limiter::RateLimitConfig::default().clients
}

/// Reads an integer and checks it is within `min..=max`.
fn ranged<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<i64, D::Error> {
    let n = i64::deserialize(d)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(de::Error::custom(format!("{n} is outside {min}..={max}")))
    }
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<i8, D::Error> {
    ranged(d, MIN_INTERVAL.into(), MAX_INTERVAL.into()).map(|n| n as i8)
}
fn burst<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, 1, 255).map(|n| n as u8)
}
fn leak<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, 1, 16).map(|n| n as u8)
}
fn kod<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, 0, 16).map(|n| n as u8)
}
fn ipv4_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, 8, 32).map(|n| n as u8)
}
fn ipv6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, 16, 64).map(|n| n as u8)
}
fn clients<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1024, 1 << 28).map(|n| n as usize)
}

/// `[access]`: who may be answered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccessConfig {
    #[serde(default = "allow_everyone", deserialize_with = "cidrs")]
    pub allow: Vec<Cidr>,
    #[serde(default, deserialize_with = "cidrs")]
    pub deny: Vec<Cidr>,
    #[serde(default)]
    pub deny_action: DenyAction,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self { allow: allow_everyone(), deny: Vec::new(), deny_action: DenyAction::Drop }
    }
}

fn allow_everyone() -> Vec<Cidr> {
    vec!["0.0.0.0/0".parse().expect("literal"), "::/0".parse().expect("literal")]
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    Vec::<String>::deserialize(d)?.iter().map(|t| t.parse().map_err(de::Error::custom)).collect()
}

/// What denied sources get: a silent counted drop, or (when asked) a KoD DENY / RSTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyAction {
    #[default]
    Drop,
    Kod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Socket,
    /// AF_XDP: an XDP program steers NTP frames on `interface` into one AF_XDP socket per queue.
    Xdp,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Socket => "socket",
            Backend::Xdp => "xdp",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// Socket backend: the addresses to serve (the xdp backend serves `port` on `interface`).
    #[serde(default, deserialize_with = "listen_addresses")]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub workers: Workers,
    /// CPU cores to pin workers to, one per worker; default: worker i on the i-th available core.
    #[serde(default)]
    pub cores: Option<toml::Spanned<Vec<usize>>>,
    #[serde(default)]
    pub timestamping: Timestamping,
    /// The NIC whose hardware receive stamps to enable (with `timestamping = "hardware"`).
    #[serde(default)]
    pub interface: Option<String>,
    /// Datagrams moved per recvmmsg/sendmmsg call (socket), frames per ring batch (xdp).
    #[serde(default = "default_batch", deserialize_with = "batch_size")]
    pub batch: usize,
    /// xdp backend: the RX queues to serve, one worker each.
    #[serde(default)]
    pub queues: Queues,
    /// xdp backend: the UDP port the XDP program steers to the workers.
    #[serde(default = "default_ntp_port")]
    pub port: u16,
    /// xdp backend: how the XDP program is attached.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// xdp backend: microseconds a worker keeps polling its empty RX ring before it sleeps.
    #[serde(default = "default_idle_spin_us", deserialize_with = "idle_spin_us")]
    pub idle_spin_us: u64,
}

fn default_idle_spin_us() -> u64 {
    DEFAULT_IDLE_SPIN_US
}

/// Default `idle-spin-us`: long enough to bridge the gaps inside a busy queue's bursts.
pub const DEFAULT_IDLE_SPIN_US: u64 = 50;

fn idle_spin_us<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| de::Error::custom(format!("{n} is outside 0..=1000000 microseconds")))
}

fn default_ntp_port() -> u16 {
    123
}

/// `queues = "all"` or a list of queue numbers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Queues {
    #[default]
    All,
    List(Vec<u32>),
}

impl<'de> Deserialize<'de> for Queues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<i64>),
        }
        let expected = "\"all\" or a list of queue numbers like [0, 1]";
        match Raw::deserialize(d).map_err(|_| de::Error::custom(format!("expected {expected}")))? {
            Raw::Word(w) if w == "all" => Ok(Queues::All),
            Raw::Word(w) => Err(de::Error::custom(format!("`{w}`: expected {expected}"))),
            Raw::List(list) => {
                let mut queues = Vec::with_capacity(list.len());
                for n in list {
                    let q = u32::try_from(n).ok().filter(|q| *q < 4096);
                    let q = q.ok_or_else(|| de::Error::custom(format!("queue {n} is outside 0..4096")))?;
                    if queues.contains(&q) {
                        return Err(de::Error::custom(format!("queue {q} is listed twice")));
                    }
                    queues.push(q);
                }
                if queues.is_empty() {
                    return Err(de::Error::custom("list at least one queue"));
                }
                Ok(Queues::List(queues))
            }
        }
    }
}

/// `xdp-mode`: driver (native) XDP, generic (SKB) XDP, or driver falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    #[default]
    Auto,
    Driver,
    Generic,
}

fn default_backend() -> Backend {
    Backend::Socket
}

fn default_batch() -> usize {
    64
}

pub const MAX_BATCH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Workers {
    /// One worker per CPU core this process may run on.
    #[default]
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a worker count from 1 to 1024, or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(n @ 1..=1024) => Ok(Workers::Count(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                match s {
                    "auto" => Ok(Workers::Auto),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timestamping {
    /// Kernel software receive stamps (SO_TIMESTAMPING).
    #[default]
    Software,
    /// NIC hardware receive stamps where the interface has them, else software.
    Hardware,
}

/// `[clock] source`: where the served time comes from, which decides who vouches for it. It
/// says nothing about the stratum and refid served: for these sources the operator states them
/// ([`ClockConfig::identity`]); a disciplined source will compute its own from its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// The host clock as it is, vouched for by the operator (chrony's `local stratum N`).
    Local,
    /// The host clock as another daemon disciplines it, vouched for by the kernel's sync state.
    External,
}

/// The stratum and reference id a source that cannot work them out serves while synchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedIdentity {
    pub stratum: u8,
    pub ref_id: RefId,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClockConfig {
    pub source: ClockSource,
    /// Served stratum while synchronised.
    #[serde(default = "default_stratum", deserialize_with = "stratum")]
    pub stratum: u8,
    /// Reference id: up to four ASCII characters, or an IPv4 address.
    #[serde(default, deserialize_with = "ref_id")]
    pub refid: Option<RefId>,
}

impl ClockConfig {
    /// The stratum and refid to serve. The refid is the configured one, else a default that
    /// follows the convention: ASCII at stratum 1, an IPv4 address above it (clients show it as
    /// one). The local clock is chrony's 127.127.1.1.
    pub fn identity(&self) -> ServedIdentity {
        let local_clock = RefId::from_ipv4(std::net::Ipv4Addr::new(127, 127, 1, 1));
        let ref_id = self.refid.unwrap_or(match (self.source, self.stratum) {
            (ClockSource::Local, 1) => RefId(*b"LOCL"),
            (ClockSource::Local, _) => local_clock,
            (ClockSource::External, _) => RefId(*b"XTRN"),
        });
        ServedIdentity { stratum: self.stratum, ref_id }
    }
}

fn default_stratum() -> u8 {
    10
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// A tracing filter such as "info" or "stratumd=debug"; RUST_LOG overrides it.
    #[serde(default)]
    pub level: Option<String>,
}

fn listen_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    let mut addrs = Vec::with_capacity(texts.len());
    for text in &texts {
        let addr: SocketAddr = text.parse().map_err(|_| {
            de::Error::custom(format!("`{text}` is not a socket address (like \"0.0.0.0:123\" or \"[::]:123\")"))
        })?;
        if addrs.contains(&addr) {
            return Err(de::Error::custom(format!("`{text}` is listed twice")));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn stratum<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(s @ 1..=15) => Ok(s),
        _ => Err(de::Error::custom(format!("stratum {n} is outside 1..=15"))),
    }
}

fn batch_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(b @ 1..=MAX_BATCH) => Ok(b),
        _ => Err(de::Error::custom(format!("batch {n} is outside 1..={MAX_BATCH}"))),
    }
}

fn ref_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RefId>, D::Error> {
    let text = String::deserialize(d)?;
    if let Ok(v4) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(Some(RefId::from_ipv4(v4)));
    }
    RefId::from_ascii(&text)
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("`{text}` is neither up to 4 ASCII characters nor an IPv4 address")))
}

/// One line: where the problem is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    pub fn embedded_default() -> Self {
        Self::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).expect("the embedded default configuration is valid")
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError {
                file: file.to_string(),
                line: inner.span().map(|s| line_of(text, s.start)),
                key: if key == "." { String::new() } else { key },
                message: one_line(inner.message()),
            }
        })?;
        config.validate().map_err(|(key, span, message)| ConfigError {
            file: file.to_string(),
            line: span.map(|s| line_of(text, s.start)),
            key: key.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Checks that span several keys, after every key parsed on its own.
    fn validate(&self) -> Result<(), Invalid> {
        let s = &self.server;
        match s.backend {
            Backend::Socket if s.listen.is_empty() => {
                return Err((
                    "server.listen",
                    None,
                    "list at least one address to serve (like [\"0.0.0.0:123\"])".into(),
                ));
            }
            Backend::Socket => {}
            Backend::Xdp => validate_xdp(s)?,
        }
        if let (Some(cores), Workers::Count(n)) = (&s.cores, s.workers) {
            if cores.get_ref().len() != n {
                return Err((
                    "server.cores",
                    Some(cores.span()),
                    format!("{} cores listed for {} workers; list one core per worker", cores.get_ref().len(), n),
                ));
            }
        }
        if let Some(cores) = &s.cores {
            if cores.get_ref().is_empty() {
                return Err(("server.cores", Some(cores.span()), "list at least one core".into()));
            }
        }
        if s.timestamping == Timestamping::Hardware && s.interface.is_none() {
            return Err(("server.interface", None, "timestamping = \"hardware\" needs the interface to enable".into()));
        }
        Ok(())
    }
}

type Invalid = (&'static str, Option<std::ops::Range<usize>>, String);

fn validate_xdp(s: &ServerConfig) -> Result<(), Invalid> {
    if !cfg!(feature = "xdp") {
        return Err((
            "server.backend",
            None,
            "this stratumd was built without the xdp backend (build with `cargo build --release -p stratumd --features xdp`, which needs clang and libelf-dev)".into(),
        ));
    }
    if !s.listen.is_empty() {
        return Err(("server.listen", None, "the xdp backend serves `port` on `interface`; remove `listen`".into()));
    }
    if s.workers != Workers::Auto {
        return Err((
            "server.workers",
            None,
            "the xdp backend runs one worker per queue; choose them with `queues`".into(),
        ));
    }
    if s.port == 0 {
        return Err(("server.port", None, "the xdp backend needs a port from 1 to 65535".into()));
    }
    let Some(interface) = &s.interface else {
        return Err(("server.interface", None, "the xdp backend needs the interface to attach to".into()));
    };
    if stratum_host::netif::index(interface).is_none() {
        return Err(("server.interface", None, format!("no such interface `{interface}` on this host")));
    }
    if let (Some(cores), Queues::List(queues)) = (&s.cores, &s.queues) {
        if cores.get_ref().len() != queues.len() {
            return Err((
                "server.cores",
                Some(cores.span()),
                format!("{} cores listed for {} queues; list one core per queue", cores.get_ref().len(), queues.len()),
            ));
        }
    }
    Ok(())
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
backend = "socket"
listen = ["127.0.0.1:11123", "[::1]:11123"]
workers = 2

[clock]
source = "local"
stratum = 3
"#;

    fn error_for(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded_default();
        assert_eq!(c.server.workers, Workers::Auto);
        assert_eq!(c.clock.source, ClockSource::Local);
    }

    #[test]
    fn issue_example_parses() {
        let c = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.server.workers, Workers::Count(2));
        assert_eq!(c.clock.stratum, 3);
        assert_eq!(c.server.batch, 64);
        assert_eq!(c.clock.identity().ref_id, RefId([127, 127, 1, 1]), "local above stratum 1: chrony's local refid");
        let s1 = Config::parse(&GOOD.replace("stratum = 3", "stratum = 1"), "t").unwrap();
        assert_eq!(s1.clock.identity().ref_id, RefId(*b"LOCL"));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\nwrokers = 3"));
        assert!(e.starts_with("test.toml:6: server"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = error_for(&GOOD.replace("stratum = 3", "stratum = \"three\""));
        assert!(e.starts_with("test.toml:9: clock.stratum: "), "{e}");
        let e = error_for(&GOOD.replace("workers = 2", "workers = 0"));
        assert!(e.starts_with("test.toml:5: server.workers: "), "{e}");
        let e = error_for(&GOOD.replace("workers = 2", "workers = \"many\""));
        assert!(e.starts_with("test.toml:5: server.workers: "), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = error_for(&GOOD.replace("stratum = 3", "stratum = 16"));
        assert!(e.starts_with("test.toml:9: clock.stratum: stratum 16 is outside"), "{e}");
        let e = error_for(&GOOD.replace("127.0.0.1:11123", "127.0.0.1"));
        assert!(e.starts_with("test.toml:4: server.listen: `127.0.0.1` is not a socket address"), "{e}");
        let e = error_for(&GOOD.replace("source = \"local\"", "source = \"gps\""));
        assert!(e.starts_with("test.toml:8: clock.source: "), "{e}");
        let e = error_for(&GOOD.replace("stratum = 3", "stratum = 3\nrefid = \"TOOLONG\""));
        assert!(e.starts_with("test.toml:10: clock.refid: "), "{e}");
    }

    #[test]
    fn cross_field_errors_name_the_key() {
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\ncores = [0]"));
        assert!(e.starts_with("test.toml:6: server.cores: 1 cores listed for 2 workers"), "{e}");
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\ntimestamping = \"hardware\""));
        assert!(e.starts_with("test.toml: server.interface: "), "{e}");
    }

    #[test]
    fn missing_section_and_syntax_errors() {
        let e = error_for("[server]\nlisten = [\"127.0.0.1:1\"]\n");
        assert!(e.contains("clock"), "{e}");
        let e = error_for("[server\n");
        assert!(e.starts_with("test.toml:1: "), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn ratelimit_and_access_sections() {
        let text = format!(
            "{GOOD}\n[ratelimit]\nenabled = true\ninterval = 3\nburst = 8\nleak = 2\nkod = 0\nipv4-prefix = 32\n\
             ipv6-prefix = 64\nclients = 1048576\n[access]\nallow = [\"0.0.0.0/0\", \"::/0\"]\n\
             deny = [\"192.0.2.0/24\"]\ndeny-action = \"drop\"\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        let r = c.ratelimit.unwrap();
        assert_eq!((r.interval, r.burst, r.leak, r.kod, r.clients), (3, 8, 2, 0, 1 << 20));
        assert_eq!(c.access.deny.len(), 1);
        assert_eq!(c.access.deny_action, DenyAction::Drop);
        let defaults = Config::parse(&format!("{GOOD}\n[ratelimit]\n"), "t").unwrap().ratelimit.unwrap();
        assert!(defaults.enabled);
        assert_eq!(defaults.to_proto(), limiter::RateLimitConfig::default());
        assert!(Config::parse(GOOD, "t").unwrap().ratelimit.is_none());
    }

    #[test]
    fn bad_ratelimit_and_access_values_name_the_key() {
        let e = error_for(&format!("{GOOD}\n[ratelimit]\nleak = 0\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.leak: 0 is outside 1..=16"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ninterval = 20\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.interval: "), "{e}");
        let e = error_for(&format!("{GOOD}\n[access]\ndeny = [\"192.0.2.1/24\"]\n"));
        assert!(e.starts_with("test.toml:12: access.deny: "), "{e}");
        assert!(e.contains("did you mean 192.0.2.0/24"), "{e}");
        let e = error_for(&format!("{GOOD}\n[access]\ndeny = [\"not-a-net\"]\n"));
        assert!(e.starts_with("test.toml:12: access.deny: "), "{e}");
        let e = error_for(&format!("{GOOD}\n[access]\ndeny-action = \"rstr\"\n"));
        assert!(e.starts_with("test.toml:12: access.deny-action: "), "{e}");
    }

    #[test]
    fn metrics_and_control_sections() {
        let c = Config::parse(GOOD, "t").unwrap();
        assert!(c.metrics.is_none() && c.control.is_none(), "both off unless configured");
        let c = Config::parse(&format!("{GOOD}\n[metrics]\n[control]\n"), "t").unwrap();
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9123".parse().unwrap());
        assert_eq!(c.control.unwrap().socket, PathBuf::from("/run/stratumd/control.sock"));
        let text = format!("{GOOD}\n[metrics]\nlisten = \"[::1]:9200\"\n[control]\nsocket = \"/tmp/s.sock\"\n");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.metrics.unwrap().listen, "[::1]:9200".parse().unwrap());
        assert_eq!(c.control.unwrap().socket, PathBuf::from("/tmp/s.sock"));
    }

    #[test]
    fn bad_metrics_and_control_values_name_the_key() {
        let e = error_for(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
        assert!(e.starts_with("test.toml:12: metrics.listen: `localhost` is not a socket address"), "{e}");
        let e = error_for(&format!("{GOOD}\n[metrics]\nport = 9123\n"));
        assert!(e.starts_with("test.toml:12: metrics.port: unknown field"), "{e}");
        assert!(e.contains("port"), "{e}");
        let e = error_for(&format!("{GOOD}\n[control]\nsocket = \"/{}\"\n", "x".repeat(120)));
        assert!(e.starts_with("test.toml:12: control.socket: 121 bytes is too long"), "{e}");
        let e = error_for(&format!("{GOOD}\n[control]\nsocket = \"\"\n"));
        assert!(e.starts_with("test.toml:12: control.socket: "), "{e}");
        let e = error_for(&format!("{GOOD}\n[control]\nsocket = 5\n"));
        assert!(e.starts_with("test.toml:12: control.socket: "), "{e}");
    }

    #[test]
    fn refid_as_ipv4() {
        let c = Config::parse(&GOOD.replace("stratum = 3", "stratum = 3\nrefid = \"192.0.2.1\""), "t").unwrap();
        assert_eq!(c.clock.identity().ref_id, RefId([192, 0, 2, 1]));
    }
}
