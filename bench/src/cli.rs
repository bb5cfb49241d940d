//! The command line. Exit status: 0 done, 1 an error (bad arguments, no reply, invalid reply,
//! refused target), 2 a kiss-o'-death answer to `query`, or a `load` the server rate-limited or
//! refused, 3 an unsynchronised server (its reply to `query`, its replies to `load`). A `load`
//! or a `query --json` prints its report whatever the status.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, LoadConfig};
use crate::load;
use crate::query::{self, QueryError, QueryFailure};
use crate::ramp::{self, RampConfig, RampSpec};
use crate::report::LoadReport;
use crate::verdict::{self, Accept, Objection};
use crate::xdp::frame::{ClientNet, MacAddr};
use crate::xdp::TxPath;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
/// `query`: a kiss-o'-death; `load`: the server rate-limited or refused the load.
pub const EXIT_KISS_OF_DEATH: u8 = 2;
/// `query` or `load`: the server's replies say its clock is not synchronised.
pub const EXIT_UNSYNCHRONISED: u8 = 3;
const MAX_TIMEOUT_S: f64 = 60.0;

/// NTP query tool and load generator for stratumd (and any NTP server you own).
#[derive(Debug, Parser)]
#[command(
    name = "stratum-bench",
    version,
    about,
    after_help = "Exit status: 0 done; 1 an error (bad arguments, no valid reply, a refused target); 2 a \
                  kiss-o'-death to `query`, or a `load` the server rate-limited or refused; 3 an \
                  unsynchronised server (LI 3 or stratum 16). `load` and `query --json` print their \
                  report whatever the status."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One NTP exchange: offset, delay, stratum, refid, leap, root delay/dispersion, precision, poll.
    /// Exit 0 on a synchronised reply; 3 on an unsynchronised one (LI 3 or stratum 16, printed all
    /// the same); 2 on a kiss-o'-death; 1 on no valid reply (timeout, only invalid packets, port
    /// closed). With --json, one object on every outcome, its "outcome" key naming which.
    Query(QueryArgs),
    /// An open-loop, fixed-rate load step with every reply checked, or with --ramp a rising rate
    /// until the server loses requests; loopback targets only unless --i-own-this-target. The
    /// report is printed, then the exit status says whether it measured the server: 2 if the
    /// server rate-limited or refused the load (see --accept-ratelimit, --accept-kod), 3 if its
    /// replies were unsynchronised (see --accept-unsynced).
    Load(Box<LoadArgs>),
    /// A do-nothing AF_XDP responder (feature xdp, root): turns NTP requests to --port around in
    /// place, to measure `load --engine xdp`'s own ceiling. Runs until SIGINT/SIGTERM or --duration.
    Reflect(ReflectArgs),
}

/// How `load` sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// UDP sockets, sendmmsg/recvmmsg batches of 64.
    Socket,
    /// Raw Ethernet frames over AF_XDP on --interface, from simulated clients (feature xdp, root).
    Xdp,
}

/// `--nts-aead`: the AEAD the NTS-KE asks for (alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum NtsAead {
    /// AEAD_AES_SIV_CMAC_256 (15), what chrony 4.3 and NTPsec ask for.
    #[default]
    SivCmac,
    /// AEAD_AES_128_GCM_SIV (30) with chrony's compliant-export record (socket engine only).
    GcmSiv,
}

impl NtsAead {
    /// The IANA id.
    pub fn id(self) -> u16 {
        match self {
            Self::SivCmac => stratum_proto::nts::AEAD_AES_SIV_CMAC_256,
            Self::GcmSiv => stratum_proto::nts::AEAD_AES_128_GCM_SIV,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReflectArgs {
    /// The interface to answer on (an XDP program is attached to it while this runs).
    #[arg(long, value_name = "IF")]
    pub interface: String,
    /// The UDP port whose requests are turned around; every other frame goes to the kernel.
    #[arg(long, default_value_t = 123)]
    pub port: u16,
    /// One AF_XDP socket per core listed, on queues 0, 1, ..., its thread pinned to that core
    /// (default: queue 0, unpinned).
    #[arg(long, value_name = "C,C,...", value_delimiter = ',', num_args = 1..)]
    pub cores: Vec<usize>,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The server: HOST[:PORT] (port 123 when omitted); IPv6 as [ADDR]:PORT.
    #[arg(value_name = "HOST[:PORT]")]
    pub server: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for a valid reply (at most 60).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// NTS (RFC 8915): first an NTS-KE with this KE server (HOST:PORT; its certificate must
    /// name HOST), then the query to the server above with a cookie it gave; only an authentic
    /// reply counts.
    #[arg(long, value_name = "HOST:PORT", requires = "nts_ca")]
    pub nts_ke: Option<String>,
    /// The CA certificate(s), PEM, the NTS-KE server's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "nts_ke")]
    pub nts_ca: Option<std::path::PathBuf>,
    /// The AEAD the NTS-KE asks for.
    #[arg(long, value_enum, default_value_t, requires = "nts_ke")]
    pub nts_aead: NtsAead,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server to load: a loopback address and port, e.g. 127.0.0.1:11123.
    #[arg(long, value_name = "ADDR:PORT")]
    pub target: SocketAddr,
    /// Requests per second offered; 0 sends as fast as possible.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub rate: u64,
    /// Length of the send phase, in seconds (at most 60); replies are drained 200 ms more.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub duration: f64,
    /// A rate ramp instead of one step: START requests/s, then x FACTOR each step of STEP_SECS,
    /// until a step loses more than --max-loss, the generator fell behind two steps in a row, the
    /// next step would pass --max-rate, or --max-steps ran.
    #[arg(long, value_name = "START,FACTOR,STEP_SECS", conflicts_with_all = ["rate", "duration"])]
    pub ramp: Option<RampSpec>,
    /// Ramp: stop after the first step that loses more than this many percent.
    #[arg(long, value_name = "PCT", default_value_t = 5.0, requires = "ramp")]
    pub max_loss: f64,
    /// Ramp: never offer more than this many requests per second.
    #[arg(long, value_name = "N", default_value_t = config::MAX_RATE, requires = "ramp")]
    pub max_rate: u64,
    /// Ramp: at most this many steps (the whole ramp is bounded to 10 minutes).
    #[arg(long, value_name = "K", default_value_t = 40, requires = "ramp")]
    pub max_steps: u32,
    /// Ramp: pause between steps, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, requires = "ramp")]
    pub settle: u64,
    /// Ramp: run a step that is not sustainable again at the same rate, up to this many tries in
    /// all; its first sustainable try counts (interference on a shared machine only adds loss).
    #[arg(long, value_name = "N", default_value_t = ramp::DEFAULT_TRIES, requires = "ramp")]
    pub tries: u32,
    /// Ramp: afterwards, bisect between the highest sustainable step and the next step up until
    /// they are at most PCT % apart (each rate with its tries); 0 turns it off.
    #[arg(long, value_name = "PCT", default_value_t = ramp::DEFAULT_REFINE_PCT, requires = "ramp")]
    pub refine: f64,
    /// Kiss-o'-death replies of any code (RATE, DENY, RSTR, ...) do not fail the run (exit 2
    /// otherwise); in a ramp, a step with them may be sustainable (they count as answered).
    #[arg(long, alias = "kod-ok")]
    pub accept_kod: bool,
    /// Rate limiting does not fail the run (exit 2 otherwise): KoD RATE replies, or, from a
    /// loopback server, 40 % or more of the requests unanswered though no socket dropped them (a
    /// [ratelimit] with kod = 0; the shipped configs limit one source address so).
    #[arg(long)]
    pub accept_ratelimit: bool,
    /// Unsynchronised replies (LI 3, or stratum 16) do not fail the run (exit 3 otherwise); in a
    /// ramp, a step with them may be sustainable.
    #[arg(long)]
    pub accept_unsynced: bool,
    /// Ramp: also draw offered rate against answered rate, loss and RTT p99 into this file: an
    /// SVG if its name ends in .svg, else a PNG.
    #[arg(long, value_name = "FILE.svg|FILE.png", requires = "ramp")]
    pub plot: Option<std::path::PathBuf>,
    /// Client sockets (distinct source ports), used round-robin one batch of 64 at a time; with
    /// --cores, shared out among the generator threads.
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub sockets: usize,
    /// Pin the generator to this CPU core.
    #[arg(long, value_name = "C", conflicts_with = "cores")]
    pub core: Option<usize>,
    /// One generator thread per core listed (e.g. 0,2,3), each pinned to its core with its share
    /// of the rate and of the sockets (disjoint source ports); the step's counters add up.
    #[arg(long, value_name = "C,C,...", value_delimiter = ',', num_args = 1..)]
    pub cores: Vec<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// socket, or xdp: raw frames over AF_XDP (one socket per --cores entry, on queue i), replies
    /// steered back by an XDP program on --interface; --sockets does not apply.
    #[arg(long, value_enum, default_value_t = Engine::Socket)]
    pub engine: Engine,
    /// xdp: the interface the target is reached through.
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// xdp: how requests are sent: xsk (written in user space, pushed on the AF_XDP TX ring) or
    /// inject (made in the kernel by a BPF program, several times faster; the interface must take
    /// XDP frames: a veth needs an XDP program or GRO on its peer).
    #[arg(long, value_enum, default_value_t = TxPath::Xsk)]
    pub tx: TxPath,
    /// xdp: simulated client addresses, one request each in turn.
    #[arg(long, value_name = "N", default_value_t = crate::xdp::DEFAULT_CLIENTS)]
    pub clients: u32,
    /// xdp: the simulated clients' network [default: 10.200.0.0/16, fd00:5354:c1::/64 for IPv6].
    /// The server must route it back to this host (e.g. `ip route add 10.200.0.0/16 via US`).
    #[arg(long, value_name = "CIDR")]
    pub client_net: Option<ClientNet>,
    /// xdp: the clients' UDP source port (replies to it are steered to the generator).
    #[arg(long, value_name = "PORT", default_value_t = crate::xdp::DEFAULT_CLIENT_PORT)]
    pub client_port: u16,
    /// xdp: the target's (or its gateway's) MAC address [default: the kernel's neighbour entry,
    /// after one probe datagram].
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<MacAddr>,
    /// Interleaved mode (socket engine, one thread): every simulated client (one in 64 x
    /// --sockets requests) polls as chronyd's `xleave` client does; the report adds the share of
    /// interleaved replies and the T3 error against our kernel receive stamps, less the empty
    /// link's one-way delay (measured once, first).
    #[arg(long)]
    pub interleaved: bool,
    /// NTS load (socket engine, or xdp with --tx xsk): one NTS-KE with this KE server first
    /// (HOST:PORT; its certificate must name HOST), then every request an NTS request with one of
    /// the cookies it gave (no placeholders), to --target. The KE's cookies are re-used, over and
    /// over, as a real client must not (it uses each once): the server cannot tell and still
    /// opens the cookie, verifies and seals every request, but a server that refused re-used
    /// cookies would NAK them. Only replies whose authenticator opens with S2C count as answered
    /// (others: invalid, not authentic); an NTS NAK counts as kiss code NTSN.
    #[arg(long, value_name = "HOST:PORT", requires = "nts_ca")]
    pub nts_ke: Option<String>,
    /// The CA certificate(s), PEM, the NTS-KE server's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "nts_ke")]
    pub nts_ca: Option<std::path::PathBuf>,
    /// The AEAD the NTS-KE asks for (gcm-siv: socket engine only).
    #[arg(long, value_enum, default_value_t, requires = "nts_ke")]
    pub nts_aead: NtsAead,
    /// Allow a target that is not a loopback address (a server in a network namespace, or a lab
    /// machine you own). Never point a load generator at someone else's server.
    #[arg(long)]
    pub i_own_this_target: bool,
}

/// Parses `args` (the program name first), runs the command, writes its output to `out` and any
/// error, as one line, to `err`. Returns the exit status.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let text = e.render().to_string();
            let _ = if e.use_stderr() { err.write_all(text.as_bytes()) } else { out.write_all(text.as_bytes()) };
            return code;
        }
    };
    let result = match cli.command {
        Command::Query(a) => return run_query(&a, out, err),
        Command::Load(a) if a.ramp.is_some() => run_ramp(&a, out, err),
        Command::Load(a) => run_load(&a, out, err),
        Command::Reflect(a) => xdp::run_reflect(&a, out, err).map(|()| EXIT_OK),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(err, "stratum-bench: {e:#}");
        EXIT_ERROR
    })
}

/// `query`: the report (text, or one JSON object) on stdout; on every other outcome one line on
/// stderr and, with --json, one JSON object naming the outcome on stdout, so a script reading
/// stdout always gets an object.
fn run_query(a: &QueryArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let (code, stdout, stderr) = match exchange(a) {
        Ok(report) => {
            let code = if report.synchronized { EXIT_OK } else { EXIT_UNSYNCHRONISED };
            let stdout = if a.json { serde_json::to_string(&report).map(|j| j + "\n") } else { Ok(report.to_text()) };
            (code, stdout, report.unsynchronised_text())
        }
        Err(e) => {
            let code = if matches!(e, QueryError::KissOfDeath { .. }) { EXIT_KISS_OF_DEATH } else { EXIT_ERROR };
            let failure = QueryFailure::new(&a.server, &e);
            let stdout = if a.json { serde_json::to_string(&failure).map(|j| j + "\n") } else { Ok(String::new()) };
            (code, stdout, Some(failure.message))
        }
    };
    let written = stdout.map_err(anyhow::Error::from).and_then(|s| Ok(out.write_all(s.as_bytes())?));
    if let Some(line) = stderr {
        let _ = writeln!(err, "stratum-bench: {line}");
    }
    match written {
        Ok(()) => code,
        Err(e) => {
            let _ = writeln!(err, "stratum-bench: {e:#}");
            EXIT_ERROR
        }
    }
}

/// One exchange with `a.server`, its arguments checked first.
fn exchange(a: &QueryArgs) -> Result<query::QueryReport, QueryError> {
    if !(a.timeout > 0.0 && a.timeout <= MAX_TIMEOUT_S) {
        return Err(anyhow::anyhow!("--timeout must be more than 0 and at most {MAX_TIMEOUT_S} seconds").into());
    }
    let server = query::resolve(&a.server)?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let session = match (&a.nts_ke, &a.nts_ca) {
        (Some(ke), Some(ca)) => {
            let (host, _) = ke.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--nts-ke {ke}: HOST:PORT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(crate::nts::key_exchange_with(query::resolve(ke)?, host, ca, timeout, a.nts_aead.id())?)
        }
        _ => None,
    };
    query::query_with(server, timeout, session.as_ref())
}

/// The exit status of a run its report is already printed for: 0, or the objection's status with
/// its line on stderr.
pub(crate) fn judged(objection: Option<Objection>, err: &mut dyn Write) -> u8 {
    let Some(objection) = objection else { return EXIT_OK };
    let _ = writeln!(err, "stratum-bench: {objection}");
    match objection {
        Objection::Unsynchronised { .. } => EXIT_UNSYNCHRONISED,
        Objection::RateLimitedKod { .. } | Objection::RateLimitedSilently { .. } | Objection::Kod { .. } => {
            EXIT_KISS_OF_DEATH
        }
    }
}

impl LoadArgs {
    /// The --accept-* flags.
    pub(crate) fn accept(&self) -> Accept {
        Accept { kod: self.accept_kod, ratelimit: self.accept_ratelimit, unsynced: self.accept_unsynced }
    }

    /// --core C is --cores C.
    fn cores(&self) -> Vec<usize> {
        self.core.map_or_else(|| self.cores.clone(), |c| vec![c])
    }

    /// The engine's sockets: --sockets, or one AF_XDP socket per generator thread. The xdp-only
    /// flags are refused with the socket engine.
    fn sockets(&self) -> anyhow::Result<usize> {
        match self.engine {
            Engine::Socket
                if self.interface.is_some()
                    || self.client_net.is_some()
                    || self.dst_mac.is_some()
                    || self.tx != TxPath::Xsk =>
            {
                anyhow::bail!("--interface, --client-net, --dst-mac and --tx are for --engine xdp")
            }
            Engine::Socket => Ok(self.sockets),
            Engine::Xdp => Ok(self.cores().len().max(1)),
        }
    }
}

/// `--nts-ke`: the NTS-KE, once, before the load (the KE server must pass the target checks too).
fn load_nts(a: &LoadArgs) -> anyhow::Result<Option<std::sync::Arc<crate::nts::Session>>> {
    let (Some(ke), Some(ca)) = (&a.nts_ke, &a.nts_ca) else { return Ok(None) };
    if a.interleaved || (a.engine == Engine::Xdp && a.tx != TxPath::Xsk) {
        anyhow::bail!("--nts-ke is for the socket engine or --engine xdp --tx xsk, without --interleaved");
    }
    if a.engine == Engine::Xdp && a.nts_aead != NtsAead::SivCmac {
        // The AF_XDP request template stamps AES-SIV's 16-byte nonce layout.
        anyhow::bail!("--nts-aead gcm-siv is for the socket engine");
    }
    let (host, _) = ke.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--nts-ke {ke}: HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = crate::target::check_target(query::resolve(ke)?, a.i_own_this_target)?;
    let session = crate::nts::key_exchange_with(addr, host, ca, Duration::from_secs(5), a.nts_aead.id())?;
    Ok(Some(std::sync::Arc::new(session)))
}

fn run_load(a: &LoadArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
    let mut config = LoadConfig::new(a.target, a.i_own_this_target, a.rate, a.duration, a.sockets()?, a.cores())?;
    config.nts = load_nts(a)?;
    if a.interleaved {
        return crate::interleaved::cli::run_load(a, &config, out, err);
    }
    let report = match a.engine {
        Engine::Socket => load::run(&config)?,
        Engine::Xdp => xdp::run_load(a, config, err)?,
    };
    let text = if a.json { serde_json::to_string(&report)? + "\n" } else { report.to_text() };
    out.write_all(text.as_bytes())?;
    Ok(judged(verdict::judge_load(&report, a.accept()), err))
}

fn run_ramp(a: &LoadArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
    let spec = a.ramp.expect("run_ramp is called with --ramp");
    let mut config = RampConfig::new(
        a.target,
        a.i_own_this_target,
        spec,
        a.max_loss,
        a.max_rate,
        a.max_steps,
        a.settle,
        a.accept(),
        a.tries,
        a.refine,
        a.sockets()?,
        a.cores(),
    )?;
    config.step.nts = load_nts(a)?;
    let progress = |step: &ramp::StepResult| {
        // Progress, one line a step, where it cannot mix with the JSON.
        if !a.json {
            let _ = writeln!(
                err,
                "{}: offered {}/s, answered {}/s, loss {:.3} %, rtt p99 {:.1} us{}",
                step.phase.as_str(),
                step.offered,
                step.answered_rate,
                step.loss_pct,
                step.rtt_p99_ns as f64 / 1000.0,
                if step.attempt > 1 { format!(" (try {})", step.attempt) } else { String::new() }
            );
        }
    };
    if a.interleaved {
        let (text, report) = crate::interleaved::cli::run_ramp(a, &config, progress)?;
        out.write_all(text.as_bytes())?;
        return Ok(judged(verdict::judge_ramp(&report, a.accept()), err));
    }
    let report = match a.engine {
        Engine::Socket => ramp::run(&config, progress)?,
        Engine::Xdp => xdp::run_ramp(a, &config, progress)?,
    };
    if let Some(path) = &a.plot {
        crate::plot::write(&report, path)?;
    }
    let text = if a.json { serde_json::to_string(&report)? + "\n" } else { report.to_text() };
    out.write_all(text.as_bytes())?;
    Ok(judged(verdict::judge_ramp(&report, a.accept()), err))
}

/// The AF_XDP commands, with the `xdp` feature.
#[cfg(feature = "xdp")]
pub(crate) mod xdp {
    use super::*;
    use crate::reflect::{self, ReflectConfig};
    use crate::xdp::engine::{self, XdpLoad, XdpLoadConfig};

    pub(crate) fn config(a: &LoadArgs, step: LoadConfig) -> anyhow::Result<XdpLoadConfig> {
        let interface = a.interface.clone().ok_or_else(|| anyhow::anyhow!("--engine xdp needs --interface"))?;
        let config = XdpLoadConfig::new(step, interface, a.client_net, a.clients, a.client_port, a.dst_mac)?;
        Ok(XdpLoadConfig { tx: a.tx, ..config })
    }

    pub(super) fn run_load(a: &LoadArgs, step: LoadConfig, err: &mut dyn Write) -> anyhow::Result<LoadReport> {
        let (report, notes) = engine::run(&config(a, step)?)?;
        let _ = err.write_all(notes.to_text().as_bytes());
        Ok(report)
    }

    pub(super) fn run_ramp(
        a: &LoadArgs,
        ramp_config: &RampConfig,
        progress: impl FnMut(&ramp::StepResult),
    ) -> anyhow::Result<ramp::RampReport> {
        let mut load = XdpLoad::open(&config(a, ramp_config.step.clone())?)?;
        ramp::run_with(ramp_config, "xdp", |step| load.step(step).map(|(report, _)| report), progress)
    }

    pub(super) fn run_reflect(a: &ReflectArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
        let config = ReflectConfig::new(a.interface.clone(), a.port, a.cores.clone(), a.duration)?;
        let report = reflect::run(&config, |line| {
            let _ = writeln!(err, "{line}");
            let _ = err.flush();
        })?;
        let text = if a.json { serde_json::to_string(&report)? + "\n" } else { report.to_text() };
        out.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Without the `xdp` feature, the AF_XDP commands say how to get them.
#[cfg(not(feature = "xdp"))]
mod xdp {
    use super::*;

    const NO_XDP: &str =
        "this stratum-bench was built without AF_XDP: cargo build --release -p stratum-bench --features xdp";

    pub(super) fn run_load(_: &LoadArgs, _: LoadConfig, _: &mut dyn Write) -> anyhow::Result<LoadReport> {
        anyhow::bail!(NO_XDP)
    }

    pub(super) fn run_ramp(
        _: &LoadArgs,
        _: &RampConfig,
        _: impl FnMut(&ramp::StepResult),
    ) -> anyhow::Result<ramp::RampReport> {
        anyhow::bail!(NO_XDP)
    }

    pub(super) fn run_reflect(_: &ReflectArgs, _: &mut dyn Write, _: &mut dyn Write) -> anyhow::Result<()> {
        anyhow::bail!(NO_XDP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(std::iter::once("stratum-bench").chain(args.iter().copied()), &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn non_loopback_load_is_refused_before_any_socket_is_opened() {
        let (code, out, err) = run_args(&["load", "--target", "192.0.2.1:123", "--rate", "10", "--duration", "1"]);
        assert_eq!(code, EXIT_ERROR);
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not a loopback address") && err.contains("--i-own-this-target"), "{err}");
    }

    #[test]
    fn the_xdp_engine_refuses_a_loopback_target_in_one_line() {
        let (code, out, err) =
            run_args(&["load", "--engine", "xdp", "--interface", "lo", "--target", "127.0.0.1:123", "--duration", "1"]);
        assert_eq!(code, EXIT_ERROR);
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        let why = if cfg!(feature = "xdp") { "loopback" } else { "--features xdp" };
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn bad_arguments_exit_1_and_help_exits_0() {
        assert_eq!(run_args(&["load", "--target", "localhost:123"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["load"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["load", "--target", "127.0.0.1:9", "--duration", "61"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["query"]).0, EXIT_ERROR);
        // Ramp flags: --ramp excludes --rate/--duration, and the ramp-only flags need --ramp.
        let t = ["load", "--target", "127.0.0.1:9"];
        let with = |extra: &[&'static str]| run_args(&[&t[..], extra].concat());
        assert_eq!(with(&["--ramp", "1000,2,1", "--rate", "5"]).0, EXIT_ERROR);
        assert_eq!(with(&["--ramp", "1000,2,1", "--duration", "5"]).0, EXIT_ERROR);
        assert_eq!(with(&["--ramp", "1000,1,1"]).0, EXIT_ERROR);
        assert_eq!(with(&["--ramp", "1000,2,15", "--max-steps", "40"]).0, EXIT_ERROR);
        assert_eq!(with(&["--max-loss", "3"]).0, EXIT_ERROR);
        assert_eq!(with(&["--tries", "2"]).0, EXIT_ERROR);
        assert_eq!(with(&["--refine", "5"]).0, EXIT_ERROR);
        assert_eq!(with(&["--ramp", "1000,2,1", "--tries", "0"]).0, EXIT_ERROR);
        assert_eq!(with(&["--ramp", "1000,2,1", "--refine", "0.01"]).0, EXIT_ERROR);
        assert_eq!(with(&["--plot", "x.png"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["query", "127.0.0.1:9", "--timeout", "0"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["frobnicate"]).0, EXIT_ERROR);
        // --core and --cores exclude each other; --cores needs distinct cores and a socket each.
        assert_eq!(with(&["--core", "0", "--cores", "0,1"]).0, EXIT_ERROR);
        assert_eq!(with(&["--cores", "0,0", "--duration", "0.1"]).0, EXIT_ERROR);
        assert_eq!(with(&["--cores", "0,1", "--sockets", "1", "--duration", "0.1"]).0, EXIT_ERROR);
        assert_eq!(with(&["--cores", "0,1", "--rate", "1", "--duration", "0.1"]).0, EXIT_ERROR);
        // The AF_XDP flags: only with --engine xdp, and well-formed.
        assert_eq!(with(&["--interface", "lo"]).0, EXIT_ERROR);
        assert_eq!(with(&["--dst-mac", "02:00:00:00:00:01"]).0, EXIT_ERROR);
        assert_eq!(with(&["--engine", "xdp", "--client-net", "10.0.0.0"]).0, EXIT_ERROR);
        assert_eq!(with(&["--engine", "xdp", "--dst-mac", "02:00"]).0, EXIT_ERROR);
        assert_eq!(with(&["--engine", "frames"]).0, EXIT_ERROR);
        // --nts-ke: not with the in-kernel injector nor --interleaved (refused before any KE).
        let nts = ["--nts-ke", "127.0.0.1:9", "--nts-ca", "/nonexistent.pem"];
        for other in [&["--engine", "xdp", "--interface", "lo", "--tx", "inject"][..], &["--interleaved"]] {
            let (code, _, err) = with(&[&nts[..], other].concat());
            assert_eq!(code, EXIT_ERROR);
            assert!(err.contains("--nts-ke is for") || err.contains("--features xdp"), "{err}");
        }
        assert_eq!(run_args(&["reflect"]).0, EXIT_ERROR);
        assert_eq!(run_args(&["reflect", "--interface", "lo", "--port", "0"]).0, EXIT_ERROR);
        let (code, out, _) = run_args(&["--help"]);
        assert_eq!(code, EXIT_OK);
        assert!(out.contains("query") && out.contains("load"), "{out}");
    }
}
