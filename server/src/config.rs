//! The TOML configuration: its types, defaults, and errors that name the file, line and key.
//!
//! Parsing is strict (unknown keys are errors) so that a typo never silently changes behaviour.
//! Every problem becomes one [`ConfigError`] line: `FILE:LINE: KEY: what is wrong`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use stratum_proto::server::access::{Cidr, CidrError};
use stratum_proto::server::ratelimit::{self as limiter, MAX_INTERVAL, MIN_INTERVAL};
use stratum_proto::RefId;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

mod locate;
pub mod sync;
use locate::Spans;

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
    /// `[health]`: what `/healthz` and `stratumctl health` call healthy.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[ntpq]`: who gets mode 6 (ntpq) answers; loopback only unless listed.
    #[serde(default)]
    pub ntpq: NtpqConfig,
    /// `[stats]`: ntpd-format statistics files (absent: none).
    #[serde(default)]
    pub stats: Option<StatsConfig>,
    /// `[[upstream]]`: NTP servers to poll (`source = "sync"`).
    #[serde(default)]
    pub upstream: Vec<sync::UpstreamConfig>,
    /// `[[pool]]`: names whose addresses are polled (`source = "sync"`).
    #[serde(default)]
    pub pool: Vec<sync::PoolConfig>,
    /// `[[refclock]]`: reference clocks (`source = "sync"`): GPS over NMEA, PPS, gpsd's SHM,
    /// chrony's SOCK.
    #[serde(default)]
    pub refclock: Vec<sync::RefclockTable>,
    /// `[auth]`: symmetric keys (an ntp.keys file) for requests with a MAC.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// `[nts]`: NTS master keys (the cookies' keys) for NTS requests.
    #[serde(default)]
    pub nts: crate::auth::NtsConfig,
    /// What is valid but probably not meant, one `FILE:LINE: KEY: warning: ...` line each: printed
    /// by `--check-config` and logged at start.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[health]`: the bar a server must clear to be in service (container probes, anycast routing).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    /// Largest root distance (half the root delay plus the root dispersion) still healthy, seconds.
    #[serde(default = "default_max_root_distance", deserialize_with = "max_root_distance")]
    pub max_root_distance: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { max_root_distance: default_max_root_distance() }
    }
}

/// A second: well inside the 1.5 s past which clients stop using a server.
fn default_max_root_distance() -> f64 {
    1.0
}

fn max_root_distance<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let s = f64::deserialize(d)?;
    if !(s > 0.0 && s <= 16.0) {
        return Err(de::Error::custom(format!("{s} s: it must be more than 0 and at most 16")));
    }
    Ok(s)
}

/// Where `/metrics` listens when `[metrics]` gives no `listen`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9123";
/// The longest path a Unix socket address holds (sun_path, less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `[metrics]`: Prometheus text exposition over HTTP on a management address.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_listen", deserialize_with = "management_address")]
    pub listen: SocketAddr,
    /// Sources that may scrape; empty: anyone who reaches `listen` (a warning when that is more
    /// than this host).
    #[serde(default, deserialize_with = "cidrs")]
    pub allow: Vec<Cidr>,
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

/// `[ntpq]`: mode 6 (`ntpq -p`, `-c rv`, `-c mrulist`), read-only, answered by a management
/// thread for these sources only; everyone else's mode 6 is dropped and counted as before.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NtpqConfig {
    /// `false`: mode 6 is dropped for everyone.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "loopback_only", deserialize_with = "cidrs")]
    pub allow: Vec<Cidr>,
}

impl Default for NtpqConfig {
    fn default() -> Self {
        Self { enabled: true, allow: loopback_only() }
    }
}

fn loopback_only() -> Vec<Cidr> {
    vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")]
}

/// `[stats]`: ntpd's statistics files in `directory`, one per kind and UTC day.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StatsConfig {
    pub directory: PathBuf,
    #[serde(default = "yes")]
    pub loopstats: bool,
    #[serde(default = "yes")]
    pub peerstats: bool,
    #[serde(default)]
    pub rawstats: bool,
    #[serde(default)]
    pub clockstats: bool,
    #[serde(default)]
    pub sysstats: bool,
    /// Day files kept per kind; older ones are deleted.
    #[serde(default = "default_keep_days", deserialize_with = "keep_days")]
    pub keep_days: usize,
}

fn default_keep_days() -> usize {
    7
}

fn keep_days<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, 3650).map(|n| n as usize)
}

/// `[control]`: the Unix socket `stratumctl` talks to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlConfig {
    #[serde(default = "default_control_socket", deserialize_with = "socket_path")]
    pub socket: PathBuf,
    /// A group whose members (besides root and stratumd's own user) may ask, checked on each
    /// connection (SO_PEERCRED); absent: whoever the socket file's mode (0660) lets connect.
    #[serde(default, deserialize_with = "group_id")]
    pub group: Option<u32>,
}

/// A group by name (looked up in the group database) or by number.
fn group_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(Some(gid));
    }
    lookup_group(&text).map(Some).ok_or_else(|| de::Error::custom(format!("no group named `{text}` on this host")))
}

fn lookup_group(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: all-zero is a valid group struct to be filled; buf outlives the call and result
    // points at grp or is null.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is live for the call, buf's length is given.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// Where the control socket is made when `[control]` gives no `socket` (and where stratumctl
/// looks first): by who runs stratumd, see [`crate::mgmt::control_path`].
fn default_control_socket() -> PathBuf {
    crate::mgmt::control_path::default_control_socket()
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
    /// Replies a second, whole server, to clients the table has no record of (their first
    /// request): a flood of spoofed new sources is answered at most this fast. 0: no budget.
    #[serde(default = "default_first_contacts", deserialize_with = "per_second")]
    pub first_contacts_per_second: u64,
    /// Kiss-o'-death replies a second, whole server (RATE, and DENY/RSTR with deny-action =
    /// "kod"). 0: no budget.
    #[serde(default = "default_kods", deserialize_with = "per_second")]
    pub kods_per_second: u64,
    /// A second, coarser bucket per prefix (a /24, a /48 by default) in a table of its own,
    /// checked for the requests the client's own bucket allows: a flood spread over many spoofed
    /// addresses of one network is answered at most that network's budget (plus the leak).
    #[serde(default = "yes")]
    pub coarse: bool,
    #[serde(default = "default_coarse_interval", deserialize_with = "interval")]
    pub coarse_interval: i8,
    #[serde(default = "default_coarse_burst", deserialize_with = "burst")]
    pub coarse_burst: u8,
    #[serde(default = "default_coarse_v4_prefix", deserialize_with = "ipv4_prefix")]
    pub coarse_ipv4_prefix: u8,
    #[serde(default = "default_coarse_v6_prefix", deserialize_with = "ipv6_prefix")]
    pub coarse_ipv6_prefix: u8,
}

/// 16 answered requests a second per coarse prefix (the fastest rate the table's 1/16 s time unit
/// expresses): 128 clients polling at the per-client limit (one per 8 s), or 1000 chrony clients
/// at minpoll 6 (64 s); a few hundred at 64-1024 s polls use a third or less.
fn default_coarse_interval() -> i8 {
    MIN_INTERVAL
}
/// 255 back to back (about 16 s of the rate): a few hundred clients' iburst or the pool monitor
/// meeting the same second.
fn default_coarse_burst() -> u8 {
    255
}
fn default_coarse_v4_prefix() -> u8 {
    24
}
fn default_coarse_v6_prefix() -> u8 {
    48
}

fn default_first_contacts() -> u64 {
    100_000
}

fn default_kods() -> u64 {
    10_000
}

fn per_second<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, 0, 1 << 32).map(|n| n as u64)
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

    /// The coarse bucket's limiter, when on: the same leak (so a real client inside a flooded
    /// network is still answered 1 in 2^leak), no KoD (a flood's network gets none), and a table
    /// of one prefix for every 16 clients (at least 4096; the default 64 k prefixes is 2 MiB).
    pub fn to_coarse_proto(&self) -> Option<limiter::RateLimitConfig> {
        self.coarse.then(|| limiter::RateLimitConfig {
            interval: self.coarse_interval,
            burst: self.coarse_burst,
            leak: self.leak,
            kod: 0,
            ipv4_prefix: self.coarse_ipv4_prefix,
            ipv6_prefix: self.coarse_ipv6_prefix,
            clients: (self.clients / 16).max(4096),
        })
    }

    /// A coarse prefix must hold the client prefix: not longer than it.
    fn validate(&self, spans: &Spans) -> Result<(), Invalid> {
        if !self.coarse {
            return Ok(());
        }
        let checks = [
            (self.coarse_ipv4_prefix, self.ipv4_prefix, "ratelimit.coarse-ipv4-prefix", "ratelimit.ipv4-prefix"),
            (self.coarse_ipv6_prefix, self.ipv6_prefix, "ratelimit.coarse-ipv6-prefix", "ratelimit.ipv6-prefix"),
        ];
        for (coarse, client, coarse_key, client_key) in checks {
            if coarse > client {
                let message =
                    format!("/{coarse} is narrower than the client prefix /{client}; it must be /{client} or wider");
                let at = if spans.has(coarse_key) { coarse_key } else { client_key };
                return Err(Invalid::new(coarse_key, message).at(at));
            }
        }
        Ok(())
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
    #[serde(default = "allow_everyone", deserialize_with = "allowed_networks")]
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
    Ok(Vec::<CidrEntry>::deserialize(d)?.into_iter().map(|e| e.0).collect())
}

/// `allow = []` would answer no one (every request dropped as denied): never what was meant.
fn allowed_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let list = cidrs(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "an empty list allows no one (every request is dropped as denied); remove `allow` to allow everyone, \
             or list the networks to answer (like [\"192.0.2.0/24\", \"2001:db8::/32\"])",
        ));
    }
    Ok(list)
}

/// One network of `allow`/`deny`, parsed on its own so that a bad one is reported at its line.
struct CidrEntry(Cidr);

impl<'de> Deserialize<'de> for CidrEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |text| text.parse().map(CidrEntry).map_err(|e: CidrError| e.to_string()))
    }
}

/// Parses a string inside the deserializer's own call, so that toml gives an error the span of
/// this value. (An error made after `String::deserialize` has returned gets the span of what
/// encloses the value: for an array entry, the whole array, which may start lines earlier.)
fn parse_str<'de, D: Deserializer<'de>, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error> {
    struct V<T>(fn(&str) -> Result<T, String>);
    impl<T> de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }
    d.deserialize_str(V(parse))
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
    /// Socket backend: replies answered per sendmmsg (1..=batch); unset: [`DEFAULT_SEND_SLICE`]
    /// or the batch if smaller. See [`ServerConfig::send_slice`].
    #[serde(default, deserialize_with = "send_slice")]
    pub send_slice: Option<usize>,
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
    /// The user (name or number) to run as once every socket is bound and the XDP program is
    /// attached, with no capabilities left; needs stratumd started as root.
    #[serde(default, deserialize_with = "run_as_user")]
    pub user: Option<crate::privileges::User>,
    /// Interleaved mode (RFC 9769) for the clients that ask for it (chronyd's `xleave`).
    #[serde(default = "default_interleaved")]
    pub interleaved: bool,
    /// Replies remembered for interleaved mode, shared by every worker (24 bytes each, fixed).
    #[serde(default = "default_interleaved_entries")]
    pub interleaved_entries: usize,
    /// Where a reply's true transmit time comes from (interleaved mode sends it).
    #[serde(default)]
    pub tx_timestamps: TxTimestamps,
}

fn default_interleaved() -> bool {
    true
}

fn default_interleaved_entries() -> usize {
    65_536
}

/// `[server] tx-timestamps`: the transmit stamps interleaved replies carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxTimestamps {
    /// The best the backend has: hardware where `timestamping = "hardware"` (socket) or the
    /// driver fills the AF_XDP TX metadata (xdp), else software.
    #[default]
    Auto,
    /// Kernel software stamps (socket: SO_TIMESTAMPING at the driver; xdp: the clock read
    /// right before the wakeup that hands the frame to the kernel).
    Software,
    /// NIC stamps (socket: SO_TIMESTAMPING hardware; xdp: AF_XDP TX metadata).
    Hardware,
    /// None: interleaved replies carry the daemon's own T3, as basic ones do.
    Off,
}

impl TxTimestamps {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Software => "software",
            Self::Hardware => "hardware",
            Self::Off => "off",
        }
    }
}

fn run_as_user<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::privileges::User>, D::Error> {
    let text = String::deserialize(d)?;
    crate::privileges::User::lookup(&text).map(Some).map_err(de::Error::custom)
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

const QUEUES_EXPECTED: &str = "\"all\" or a list of queue numbers like [0, 1]";

// A visitor rather than an untagged enum: each queue number is then read from its own TOML value,
// so a bad one is reported at its own line (an untagged enum buffers the value and loses spans).
impl<'de> Deserialize<'de> for Queues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Queues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(QUEUES_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, w: &str) -> Result<Queues, E> {
                match w {
                    "all" => Ok(Queues::All),
                    _ => Err(E::custom(format!("`{w}`: expected {QUEUES_EXPECTED}"))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Queues, A::Error> {
                let mut queues = Vec::new();
                while let Some(QueueEntry(q)) = seq.next_element()? {
                    queues.push(q);
                }
                if queues.is_empty() {
                    return Err(de::Error::custom("list at least one queue"));
                }
                Ok(Queues::List(queues))
            }
        }
        d.deserialize_any(V)
    }
}

/// One queue number of `queues`.
struct QueueEntry(u32);

// A visitor, so that the range error is made inside toml's call and carries this entry's span.
impl<'de> Deserialize<'de> for QueueEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = QueueEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a queue number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<QueueEntry, E> {
                let q = u32::try_from(n).ok().filter(|q| *q < 4096);
                q.map(QueueEntry).ok_or_else(|| E::custom(format!("queue {n} is outside 0..4096")))
            }
        }
        d.deserialize_i64(V)
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

/// `[server] send-slice` when unset (bench/results/socket-send-slice-2core-20261205.md).
pub const DEFAULT_SEND_SLICE: usize = 4;

impl ServerConfig {
    /// Replies the socket backend answers before it sends them with one sendmmsg: a smaller
    /// slice sends a basic reply closer to its transmit timestamp, at one more syscall per slice.
    pub fn send_slice(&self) -> usize {
        self.send_slice.unwrap_or(DEFAULT_SEND_SLICE).clamp(1, self.batch.max(1))
    }
}

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
    /// Disciplined by stratumd itself from `[[upstream]]` and `[[pool]]` servers (RFC 5905
    /// mitigation); stratum and refid follow the system peer.
    Sync,
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
    /// `source = "sync"`: how the disciplined time is served.
    #[serde(default)]
    pub discipline: sync::Discipline,
    /// `source = "sync"`: how a leap second is taken (default: `kernel` with the system
    /// discipline, `step` with the virtual one; see [`sync::LeapMode::or_default_for`]).
    #[serde(default)]
    pub leap_mode: Option<sync::LeapMode>,
    /// Offsets past this are stepped, while steps are allowed; seconds.
    #[serde(default = "sync::default_step_threshold", deserialize_with = "sync::step_threshold")]
    pub step_threshold: f64,
    /// Steps allowed, only before the first synchronisation.
    #[serde(default = "sync::default_max_steps", deserialize_with = "sync::max_steps")]
    pub max_steps: u32,
    /// How long to serve in holdover with no selectable source before LI=3; seconds.
    #[serde(default = "sync::default_max_holdover", deserialize_with = "sync::max_holdover")]
    pub max_holdover: f64,
    /// Fewest agreeing sources needed to steer the clock.
    #[serde(default = "sync::default_minsane", deserialize_with = "sync::minsane")]
    pub minsane: usize,
    /// A leap-seconds.list file (read at start, its hash checked).
    #[serde(default, deserialize_with = "sync::leap_seconds")]
    pub leap_seconds: Option<sync::LeapFile>,
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
            // Not served: the system peer's address is (the sync engine's).
            (ClockSource::Sync, _) => RefId(*b"INIT"),
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
    #[serde(default, deserialize_with = "log_filter")]
    pub level: Option<String>,
}

/// What a bad `[log] level` is told to use instead.
const LOG_LEVEL_HINT: &str =
    "use one of the levels trace, debug, info, warn, error, off, or directives like \"stratumd=debug,info\"";

fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_log_filter(&text).map_err(de::Error::custom)?;
    Ok(Some(text))
}

/// Checks a log filter with the parser the logger uses (tracing's `EnvFilter`), and one rule
/// stricter: that parser takes a bare word it does not know as a target name, so "loud" would be
/// a valid filter that logs nothing (only target `loud`). Here a bare word must be a level.
pub fn check_log_filter(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("no level given; {LOG_LEVEL_HINT}"));
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', '{']);
        if bare && directive.parse::<LevelFilter>().is_err() {
            return Err(format!("`{directive}` is not a level; {LOG_LEVEL_HINT}"));
        }
    }
    match EnvFilter::builder().parse(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("`{text}` is not a valid filter ({}); {LOG_LEVEL_HINT}", one_line(&e.to_string()))),
    }
}

// Duplicates are found in `validate`, which can point at the second one's line.
fn listen_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Ok(Vec::<ListenEntry>::deserialize(d)?.into_iter().map(|e| e.0).collect())
}

/// One address of `listen`, parsed on its own so that a bad one is reported at its line.
struct ListenEntry(SocketAddr);

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |text| {
            text.parse()
                .map(ListenEntry)
                .map_err(|_| format!("`{text}` is not a socket address (like \"0.0.0.0:123\" or \"[::]:123\")"))
        })
    }
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

fn send_slice<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = i64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(b @ 1..=MAX_BATCH) => Ok(Some(b)),
        _ => Err(de::Error::custom(format!("send-slice {n} is outside 1..={MAX_BATCH} (and at most `batch`)"))),
    }
}

fn ref_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RefId>, D::Error> {
    let text = String::deserialize(d)?;
    if let Ok(v4) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(Some(RefId::from_ipv4(v4)));
    }
    // An empty refid would be served as 0.0.0.0, which clients show as "no reference".
    Some(&text)
        .filter(|t| !t.is_empty())
        .and_then(|t| RefId::from_ascii(t))
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("`{text}` is neither 1 to 4 ASCII characters nor an IPv4 address")))
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
        let mut config: Self = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = key_of(e.path());
            let inner = e.into_inner();
            ConfigError {
                file: file.to_string(),
                line: inner.span().map(|s| line_of(text, s.start)),
                key,
                message: one_line(inner.message()),
            }
        })?;
        let spans = Spans::of(text);
        let located = |p: Invalid| ConfigError {
            file: file.to_string(),
            line: spans.find(p.at.unwrap_or(p.key), p.entry).map(|s| line_of(text, s.start)),
            key: p.key.to_string(),
            message: p.message,
        };
        let warnings = config.validate(&spans).map_err(located)?;
        config.warnings = warnings
            .into_iter()
            .map(|w| {
                let e = located(w);
                ConfigError { message: format!("warning: {}", e.message), ..e }.to_string()
            })
            .collect();
        Ok(config)
    }

    /// Checks that span several keys or look at the host, after every key parsed on its own.
    /// Returns the warnings: what is valid but probably not meant.
    fn validate(&self, spans: &Spans) -> Result<Vec<Invalid>, Invalid> {
        let s = &self.server;
        let mut warnings = Vec::new();
        match s.backend {
            Backend::Socket => validate_socket(s, spans)?,
            Backend::Xdp => warnings.extend(validate_xdp(s)?),
        }
        if let (Some(cores), Workers::Count(n)) = (&s.cores, s.workers) {
            if cores.get_ref().len() != n {
                let message =
                    format!("{} cores listed for {} workers; list one core per worker", cores.get_ref().len(), n);
                return Err(Invalid::new("server.cores", message));
            }
        }
        if let Some(cores) = &s.cores {
            validate_cores(cores.get_ref(), &allowed_cpus())?;
        }
        if s.timestamping == Timestamping::Hardware && s.interface.is_none() {
            return Err(Invalid::new("server.interface", "timestamping = \"hardware\" needs the interface to enable")
                .at("server.timestamping"));
        }
        if s.tx_timestamps == TxTimestamps::Hardware && s.backend == Backend::Socket && s.interface.is_none() {
            return Err(Invalid::new("server.interface", "tx-timestamps = \"hardware\" needs the interface to enable")
                .at("server.tx-timestamps"));
        }
        if let Some(slice) = s.send_slice.filter(|&n| n > s.batch) {
            let message = format!("send-slice {slice} is larger than batch {}; it must be 1 to {}", s.batch, s.batch);
            return Err(Invalid::new("server.send-slice", message));
        }
        if !(1..=1 << 24).contains(&s.interleaved_entries) {
            return Err(Invalid::new("server.interleaved-entries", "must be 1 to 16777216"));
        }
        if let Some(interface) = &s.interface {
            if stratum_host::netif::index(interface).is_none() {
                return Err(Invalid::new("server.interface", format!("no such interface `{interface}` on this host")));
            }
        }
        if let Some(r) = &self.ratelimit {
            r.validate(spans)?;
        }
        warnings.extend(self.validate_sync(spans)?);
        warnings.extend(self.auth.warnings().into_iter().map(|w| Invalid::new("auth.keys", w)));
        self.nts.validate().map_err(|(key, message)| Invalid::new(key, message))?;
        Ok(warnings)
    }

    /// `source = "sync"` and its upstreams: one needs the other; the stratum and refid are the
    /// system peer's; a poll range must be a range.
    fn validate_sync(&self, spans: &Spans) -> Result<Vec<Invalid>, Invalid> {
        let c = &self.clock;
        let mut warnings = Vec::new();
        if c.source != ClockSource::Sync {
            if !self.upstream.is_empty() {
                return Err(Invalid::new("upstream", "upstream servers need [clock] source = \"sync\"").entry(0));
            }
            if !self.pool.is_empty() {
                return Err(Invalid::new("pool", "a pool needs [clock] source = \"sync\"").entry(0));
            }
            if !self.refclock.is_empty() {
                return Err(Invalid::new("refclock", "reference clocks need [clock] source = \"sync\"").entry(0));
            }
            if c.leap_mode.is_some() {
                return Err(Invalid::new(
                    "clock.leap-mode",
                    "leap-mode needs source = \"sync\" (with local or external the kernel takes the leap)",
                ));
            }
            return Ok(warnings);
        }
        if self.upstream.is_empty() && self.pool.is_empty() && self.refclock.is_empty() {
            return Err(Invalid::new(
                "clock.source",
                "source = \"sync\" needs servers to poll or reference clocks: add [[upstream]] address = \"...\", [[pool]] name = \"...\" or [[refclock]] driver = \"...\"",
            ));
        }
        if c.leap_mode == Some(sync::LeapMode::Kernel) && c.discipline != sync::Discipline::System {
            return Err(Invalid::new(
                "clock.leap-mode",
                "\"kernel\" needs discipline = \"system\" (with the virtual clock the kernel's clock is not the served one); use \"step\" or \"smear\"",
            ));
        }
        for key in ["clock.stratum", "clock.refid"] {
            if spans.has(key) {
                return Err(Invalid::new(
                    if key == "clock.stratum" { "clock.stratum" } else { "clock.refid" },
                    "with source = \"sync\" the served stratum and refid follow the selected upstream; remove it",
                ));
            }
        }
        for (i, u) in self.upstream.iter().enumerate() {
            if u.minpoll > u.maxpoll {
                let message = format!("minpoll {} is above maxpoll {}", u.minpoll, u.maxpoll);
                return Err(Invalid::new("upstream", message).entry(i));
            }
            if let Some(id) = u.key.filter(|id| self.auth.keys.as_ref().and_then(|k| k.table.get(*id)).is_none()) {
                let message = match &self.auth.keys {
                    Some(k) => format!("key {id} is not in {}", k.path.display()),
                    None => format!("key {id} needs [auth] keys = \"FILE\" holding it"),
                };
                return Err(Invalid::new("upstream.key", message).entry(i));
            }
            if let Some(j) = self.upstream[..i].iter().position(|v| v.address == u.address) {
                return Err(
                    Invalid::new("upstream", format!("{} is listed twice (entry {})", u.address, j + 1)).entry(i)
                );
            }
        }
        for (i, p) in self.pool.iter().enumerate() {
            if p.minpoll > p.maxpoll {
                let message = format!("minpoll {} is above maxpoll {}", p.minpoll, p.maxpoll);
                return Err(Invalid::new("pool", message).entry(i));
            }
        }
        if let Some(leap) = &c.leap_seconds {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let path = leap.path.display();
            match leap.list.expiry(now) {
                stratum_proto::sync::Expiry::Expired => {
                    let message = format!("{path} has expired: it is not used for the leap indicator; update it");
                    warnings.push(Invalid::new("clock.leap-seconds", message));
                }
                stratum_proto::sync::Expiry::Soon { days } => {
                    let message = format!("{path} expires in {days} days; update it before then");
                    warnings.push(Invalid::new("clock.leap-seconds", message));
                }
                stratum_proto::sync::Expiry::Valid => {}
            }
        }
        self.validate_refclocks()?;
        warnings.extend(self.require_with_noselect());
        let sources =
            self.upstream.len() + self.pool.iter().map(|p| p.max_sources).sum::<usize>() + self.refclock.len();
        if sources < c.minsane {
            let message =
                format!("minsane {} is more than the {sources} sources configured: never synchronised", c.minsane);
            return Err(Invalid::new("clock.minsane", message));
        }
        Ok(warnings)
    }
}

impl Config {
    /// `[[refclock]]`: the device as its driver takes it, keys only one driver has, `lock`
    /// naming another refclock's refid, no refid or device twice. No device is opened here.
    /// `require` with `noselect` on one entry: chrony accepts it (a `require` source counts
    /// whether or not it may be selected), and so does stratumd, but such a source can never
    /// meet its own requirement: unless another `require` source survives the selection, the
    /// clock is never steered. A warning per entry.
    fn require_with_noselect(&self) -> Vec<Invalid> {
        const WHY: &str = "require with noselect: this source is never selected, so unless another require source survives the selection the clock is never steered";
        let upstream = self.upstream.iter().map(|u| ("upstream.require", u.require && u.noselect));
        let pool = self.pool.iter().map(|p| ("pool.require", p.require && p.noselect));
        let refclock = self.refclock.iter().map(|r| ("refclock.require", r.require && r.noselect));
        let mut warnings = Vec::new();
        for entries in [upstream.collect::<Vec<_>>(), pool.collect(), refclock.collect()] {
            for (i, (key, both)) in entries.into_iter().enumerate() {
                if both {
                    warnings.push(Invalid::new(key, WHY).entry(i));
                }
            }
        }
        warnings
    }

    fn validate_refclocks(&self) -> Result<(), Invalid> {
        use sync::RefclockDriver as D;
        let bad = |i: usize, message: String| Err(Invalid::new("refclock", message).entry(i));
        for (i, r) in self.refclock.iter().enumerate() {
            match r.driver {
                D::Shm if r.shm_unit().is_none() => {
                    return bad(
                        i,
                        format!("shm: device `{}` is not a unit number (0..={})", r.device, sync::MAX_SHM_UNIT),
                    )
                }
                D::Sock | D::Nmea | D::Pps if !r.device.starts_with('/') => {
                    return bad(i, format!("{}: device `{}` is not an absolute path", r.driver.as_str(), r.device))
                }
                _ => {}
            }
            if r.baud.is_some() && r.driver != D::Nmea {
                return bad(i, format!("baud is for the nmea driver, not {}", r.driver.as_str()));
            }
            if r.edge.is_some() && r.driver != D::Pps {
                return bad(i, format!("edge is for the pps driver, not {}", r.driver.as_str()));
            }
            if (r.max_lock_age.is_some() || r.width.is_some()) && r.lock.is_none() {
                return bad(i, "max-lock-age and width are for a refclock with lock (pps, or sock pulses)".into());
            }
            // A sock refclock's pulse samples are numbered as a pps one's.
            if r.lock.is_some() && !matches!(r.driver, D::Pps | D::Sock) {
                return bad(i, format!("lock is for the pps and sock drivers, not {}", r.driver.as_str()));
            }
            if r.driver == D::Pps && r.lock.is_none() {
                return bad(
                    i,
                    "pps: needs lock = \"REFID\", the time-of-day refclock (nmea, shm or sock) that numbers its pulses"
                        .into(),
                );
            }
            if let Some(lock) = &r.lock {
                match self.refclock.iter().find(|o| o.refid() == lock) {
                    None => return bad(i, format!("lock = \"{lock}\" names no configured refclock's refid")),
                    Some(o) if o.driver == D::Pps || o.lock.is_some() => {
                        let what = if o.driver == D::Pps { "a pps refclock" } else { "a refclock with its own lock" };
                        return bad(i, format!("lock = \"{lock}\" names {what}; lock to a time-of-day one"));
                    }
                    Some(_) => {}
                }
            }
            if let Some(j) = self.refclock[..i].iter().position(|o| o.refid() == r.refid()) {
                let message =
                    format!("refid {} is used twice (entry {}); give each refclock its own refid", r.refid(), j + 1);
                return bad(i, message);
            }
            if let Some(j) = self.refclock[..i].iter().position(|o| o.driver == r.driver && o.device == r.device) {
                return bad(i, format!("{} is listed twice (entry {})", r.name(), j + 1));
            }
        }
        Ok(())
    }
}

/// A problem found after parsing: the key it is about, where it is, what is wrong.
#[derive(Debug)]
struct Invalid {
    key: &'static str,
    /// The key whose line to give, where that is not `key`: the one that asks for a missing `key`.
    at: Option<&'static str>,
    /// The entry of the array `key` that is wrong.
    entry: Option<usize>,
    message: String,
}

impl Invalid {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self { key, at: None, entry: None, message: message.into() }
    }

    fn at(self, key: &'static str) -> Self {
        Self { at: Some(key), ..self }
    }

    fn entry(self, index: usize) -> Self {
        Self { entry: Some(index), ..self }
    }
}

fn validate_socket(s: &ServerConfig, spans: &Spans) -> Result<(), Invalid> {
    if s.listen.is_empty() {
        return Err(Invalid::new("server.listen", "list at least one address to serve (like [\"0.0.0.0:123\"])"));
    }
    if let Some(i) = first_repeat(&s.listen) {
        return Err(Invalid::new("server.listen", format!("`{}` is listed twice", s.listen[i])).entry(i));
    }
    // `port` has a default, so only the text tells whether it was written (and then ignored).
    if spans.has("server.port") {
        return Err(Invalid::new(
            "server.port",
            "`port` applies to the xdp backend; the socket backend takes the port from `listen` \
             (like [\"0.0.0.0:124\"]): remove `port`",
        ));
    }
    Ok(())
}

/// Returns the warnings.
fn validate_xdp(s: &ServerConfig) -> Result<Vec<Invalid>, Invalid> {
    if !cfg!(feature = "xdp") {
        return Err(Invalid::new(
            "server.backend",
            "this stratumd was built without the xdp backend (build with `cargo build --release -p stratumd --features xdp`, which needs clang and libelf-dev)",
        ));
    }
    if !s.listen.is_empty() {
        return Err(Invalid::new("server.listen", "the xdp backend serves `port` on `interface`; remove `listen`"));
    }
    if s.workers != Workers::Auto {
        return Err(Invalid::new(
            "server.workers",
            "the xdp backend runs one worker per queue; choose them with `queues`",
        ));
    }
    if s.port == 0 {
        return Err(Invalid::new("server.port", "the xdp backend needs a port from 1 to 65535"));
    }
    let Some(interface) = &s.interface else {
        return Err(
            Invalid::new("server.interface", "the xdp backend needs the interface to attach to").at("server.backend")
        );
    };
    let Queues::List(queues) = &s.queues else { return Ok(Vec::new()) };
    if let Some(i) = first_repeat(queues) {
        return Err(Invalid::new("server.queues", format!("queue {} is listed twice", queues[i])).entry(i));
    }
    if let Some(cores) = &s.cores {
        if cores.get_ref().len() != queues.len() {
            let message =
                format!("{} cores listed for {} queues; list one core per queue", cores.get_ref().len(), queues.len());
            return Err(Invalid::new("server.cores", message));
        }
    }
    Ok(unserved_queues(interface, queues).into_iter().collect())
}

/// A warning when the link has RX queues no worker serves: the program finds no socket for what
/// arrives there and passes it to the kernel, where nothing answers on the xdp backend's port
/// (counted as `no_socket`). Valid (a queue can be kept for other traffic), rarely meant.
fn unserved_queues(interface: &str, queues: &[u32]) -> Option<Invalid> {
    // No such interface: `validate` reports that as an error.
    stratum_host::netif::index(interface)?;
    let on_link = stratum_host::netif::rx_queues(interface) as u32;
    let unserved: Vec<String> = unserved(on_link, queues).iter().map(u32::to_string).collect();
    if unserved.is_empty() {
        return None;
    }
    Some(Invalid::new(
        "server.queues",
        format!(
            "{interface} has {on_link} RX queues and queue {} has no socket: NTP requests the NIC puts there \
             fall through to the kernel unanswered (counted as no_socket); list every queue or use queues = \"all\"",
            unserved.join(", ")
        ),
    ))
}

/// The link's queues (`0..on_link`) that are not listed.
fn unserved(on_link: u32, queues: &[u32]) -> Vec<u32> {
    (0..on_link).filter(|q| !queues.contains(q)).collect()
}

/// The CPUs this process may run on (its affinity mask), sorted; empty where that is unknown.
fn allowed_cpus() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

/// Every core listed must be one the workers may be pinned to: a pin to any other fails at run
/// time, and the worker then runs unpinned with only a warning in the log.
fn validate_cores(cores: &[usize], allowed: &[usize]) -> Result<(), Invalid> {
    if cores.is_empty() {
        return Err(Invalid::new("server.cores", "list at least one core"));
    }
    if allowed.is_empty() {
        return Ok(()); // the host does not say: the pin will tell
    }
    match cores.iter().position(|c| !allowed.contains(c)) {
        None => Ok(()),
        Some(i) => Err(Invalid::new(
            "server.cores",
            format!(
                "core {} is not a CPU this process may run on; it may use {} CPUs: {}",
                cores[i],
                allowed.len(),
                cpu_ranges(allowed)
            ),
        )
        .entry(i)),
    }
}

/// Sorted CPU ids as ranges, like "0-3,8".
fn cpu_ranges(ids: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { ids[i].to_string() } else { format!("{}-{}", ids[i], ids[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// The index of the first entry that repeats an earlier one.
fn first_repeat<T: PartialEq>(list: &[T]) -> Option<usize> {
    (1..list.len()).find(|&i| list[..i].contains(&list[i]))
}

/// The dotted key of an error's path, without array indices (the line points at the entry).
fn key_of(path: &serde_path_to_error::Path) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    keys.join(".")
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
        assert!(e.starts_with("test.toml:6: server.interface: timestamping = \"hardware\" needs"), "{e}");
    }

    /// #19 (1): a log level the logger would take as a target name (and so log nothing) or not
    /// parse at all is an error at its line that names the levels.
    #[test]
    fn bad_log_levels_are_errors_naming_the_levels() {
        for bad in ["loud", "stratumd=verbose", "[[[", "", "info,loud"] {
            let e = error_for(&format!("{GOOD}\n[log]\nlevel = \"{bad}\"\n"));
            assert!(e.starts_with("test.toml:12: log.level: "), "{bad}: {e}");
            assert!(e.contains("trace, debug, info, warn, error, off"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        for good in ["info", "WARN", "off", "stratumd=debug,info", "stratumd::dataplane=trace", "warn,stratumd=debug"] {
            let c = Config::parse(&format!("{GOOD}\n[log]\nlevel = \"{good}\"\n"), "t");
            assert_eq!(c.unwrap().log.level.as_deref(), Some(good));
        }
    }

    /// #19 (3): errors found after parsing carry the line of their key, or of the entry.
    #[test]
    fn every_semantic_error_has_a_line() {
        let e = error_for(&GOOD.replace("listen = [\"127.0.0.1:11123\", \"[::1]:11123\"]", "listen = []"));
        assert!(e.starts_with("test.toml:4: server.listen: list at least one address"), "{e}");
        let e = error_for(&GOOD.replace("listen = [\"127.0.0.1:11123\", \"[::1]:11123\"]\n", ""));
        assert!(e.starts_with("test.toml:2: server.listen: "), "missing: the [server] line: {e}");
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\ninterface = \"nosuch0\""));
        assert!(e.starts_with("test.toml:6: server.interface: no such interface `nosuch0`"), "{e}");
        let multi =
            GOOD.replace("[\"127.0.0.1:11123\", \"[::1]:11123\"]", "[\n  \"127.0.0.1:11123\",\n  \"[::1]\",\n]");
        let e = error_for(&multi);
        assert!(e.starts_with("test.toml:6: server.listen: `[::1]` is not a socket address"), "{e}");
        let multi = GOOD
            .replace("[\"127.0.0.1:11123\", \"[::1]:11123\"]", "[\n  \"127.0.0.1:11123\",\n  \"127.0.0.1:11123\",\n]");
        let e = error_for(&multi);
        assert!(e.starts_with("test.toml:6: server.listen: `127.0.0.1:11123` is listed twice"), "{e}");
        let e = error_for(&format!("{GOOD}\n[access]\ndeny = [\n  \"192.0.2.0/24\",\n  \"nonsense\",\n]\n"));
        assert!(e.starts_with("test.toml:14: access.deny: "), "{e}");
    }

    /// #19 (4): values that parsed but did something else than asked.
    #[test]
    fn accepted_but_wrong_values_are_errors() {
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\ncores = [0,\n  99]"));
        assert!(e.starts_with("test.toml:7: server.cores: core 99 is not a CPU this process may run on"), "{e}");
        let cpus = allowed_cpus().len();
        assert!(e.contains(&format!("it may use {cpus} CPUs: ")), "{e}");
        let e = error_for(&GOOD.replace("workers = 2", "workers = 2\nport = 124"));
        assert!(e.starts_with("test.toml:6: server.port: `port` applies to the xdp backend"), "{e}");
        assert!(e.contains("takes the port from `listen`"), "{e}");
        let e = error_for(&format!("{GOOD}\n[access]\nallow = []\n"));
        assert!(e.starts_with("test.toml:12: access.allow: an empty list allows no one"), "{e}");
        assert!(e.contains("remove `allow` to allow everyone"), "{e}");
        let e = error_for(&GOOD.replace("stratum = 3", "stratum = 3\nrefid = \"\""));
        assert!(e.starts_with("test.toml:10: clock.refid: `` is neither 1 to 4 ASCII characters"), "{e}");
        assert!(Config::parse(&format!("{GOOD}\n[access]\ndeny = []\n"), "t").is_ok(), "an empty deny list is fine");
    }

    #[test]
    fn cores_are_checked_against_the_cpus_given() {
        assert!(validate_cores(&[0, 3], &[0, 1, 2, 3]).is_ok());
        assert!(validate_cores(&[7], &[]).is_ok(), "nothing known: no check");
        let e = validate_cores(&[0, 4], &[0, 1, 2, 3, 8]).unwrap_err();
        assert_eq!((e.key, e.entry), ("server.cores", Some(1)));
        assert!(e.message.ends_with("it may use 5 CPUs: 0-3,8"), "{}", e.message);
        assert_eq!(cpu_ranges(&[0, 2, 3, 4, 7]), "0,2-4,7");
        assert_eq!(unserved(4, &[0, 2]), vec![1, 3]);
        assert_eq!(unserved(1, &[0, 5]), Vec::<u32>::new());
        assert_eq!(first_repeat(&[1, 2, 1]), Some(2));
        assert_eq!(first_repeat::<u8>(&[]), None);
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
        let coarse = defaults.to_coarse_proto().unwrap();
        assert_eq!(
            (
                coarse.interval,
                coarse.burst,
                coarse.leak,
                coarse.kod,
                coarse.ipv4_prefix,
                coarse.ipv6_prefix,
                coarse.clients
            ),
            (-4, 255, 2, 0, 24, 48, 1 << 16)
        );
        let text = format!(
            "{GOOD}\n[ratelimit]\ncoarse-interval = -2\ncoarse-burst = 64\ncoarse-ipv4-prefix = 20\n\
             coarse-ipv6-prefix = 40\nclients = 1024\n"
        );
        let r = Config::parse(&text, "t").unwrap().ratelimit.unwrap().to_coarse_proto().unwrap();
        assert_eq!((r.interval, r.burst, r.ipv4_prefix, r.ipv6_prefix, r.clients), (-2, 64, 20, 40, 4096));
        let off = Config::parse(&format!("{GOOD}\n[ratelimit]\ncoarse = false\nipv4-prefix = 16\n"), "t").unwrap();
        assert!(off.ratelimit.unwrap().to_coarse_proto().is_none(), "off, and its prefixes not checked");
        assert!(Config::parse(GOOD, "t").unwrap().ratelimit.is_none());
    }

    #[test]
    fn send_slice_is_accepted_within_the_batch_and_refused_outside() {
        let with = |extra: &str| GOOD.replacen("workers = 2\n", &format!("workers = 2\n{extra}"), 1);
        assert_eq!(Config::parse(GOOD, "t").unwrap().server.send_slice(), DEFAULT_SEND_SLICE);
        assert_eq!(Config::parse(&with("send-slice = 8\n"), "t").unwrap().server.send_slice(), 8);
        // Unset, with a batch smaller than the default: the batch.
        assert_eq!(Config::parse(&with("batch = 2\n"), "t").unwrap().server.send_slice(), 2);
        assert_eq!(Config::parse(&with("batch = 32\nsend-slice = 32\n"), "t").unwrap().server.send_slice(), 32);
        let e = error_for(&with("send-slice = 0\n"));
        assert!(e.starts_with("test.toml:6: server.send-slice: send-slice 0 is outside 1..=256"), "{e}");
        let e = error_for(&with("send-slice = 65\n"));
        assert!(e.starts_with("test.toml:6: server.send-slice: send-slice 65 is larger than batch 64"), "{e}");
        let e = error_for(&with("batch = 8\nsend-slice = 9\n"));
        assert!(e.starts_with("test.toml:7: server.send-slice: send-slice 9 is larger than batch 8"), "{e}");
    }

    #[test]
    fn bad_ratelimit_and_access_values_name_the_key() {
        let e = error_for(&format!("{GOOD}\n[ratelimit]\nleak = 0\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.leak: 0 is outside 1..=16"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ninterval = 20\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.interval: "), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ncoarse-interval = -5\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.coarse-interval: -5 is outside -4..=12"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ncoarse-burst = 0\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.coarse-burst: 0 is outside 1..=255"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ncoarse-ipv4-prefix = 7\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.coarse-ipv4-prefix: 7 is outside 8..=32"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ncoarse-ipv6-prefix = 65\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.coarse-ipv6-prefix: 65 is outside 16..=64"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\nipv4-prefix = 24\ncoarse-ipv4-prefix = 28\n"));
        assert!(e.starts_with("test.toml:13: ratelimit.coarse-ipv4-prefix: /28 is narrower than"), "{e}");
        // Written only as the client prefix: the error points at that line.
        let e = error_for(&format!("{GOOD}\n[ratelimit]\nenabled = true\nipv6-prefix = 32\n"));
        assert!(e.starts_with("test.toml:13: ratelimit.coarse-ipv6-prefix: /48 is narrower"), "{e}");
        let e = error_for(&format!("{GOOD}\n[ratelimit]\ncoarse = \"yes\"\n"));
        assert!(e.starts_with("test.toml:12: ratelimit.coarse: "), "{e}");
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
