//! Attaching the steering program to an interface through a BPF link: the XDP modes (driver,
//! generic, auto), the device-bound variant tried first and its fallback, and [`AttachError`],
//! one line for each way an attach fails.
//!
//! Owns [`SteeringProgram`]'s life: the link is created here and dropping it detaches. Never
//! loads an object itself (load.rs does) and never reads or writes a map's contents (its map
//! methods call maps.rs); it never replaces or removes a program it did not attach.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::ErrorKind;

use super::load::{load_error, route_libbpf_messages, Loaded, Variant};
use super::maps::map_methods;
use super::query::LinkHolder;
use super::ProgramConfig;
use crate::xsk::{XskConfig, XskSocket};

/// The XDP mode asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver mode where the driver has it, else generic.
    Auto,
    /// Native (driver) XDP only.
    Driver,
    /// Generic (SKB) XDP only: works on every interface, slower, copy mode only.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Driver => "driver",
            Self::Generic => "generic",
        })
    }
}

impl XdpMode {
    /// The modes to try, in order.
    fn candidates(self) -> &'static [AttachedMode] {
        match self {
            Self::Auto => &[AttachedMode::Driver, AttachedMode::Generic],
            Self::Driver => &[AttachedMode::Driver],
            Self::Generic => &[AttachedMode::Generic],
        }
    }
}

/// The XDP mode in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Driver,
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Generic => "generic",
        })
    }
}

impl AttachedMode {
    fn link_flags(self) -> u32 {
        match self {
            Self::Driver => libbpf_sys::XDP_FLAGS_DRV_MODE,
            Self::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// Why the program could not be loaded or attached.
#[derive(Debug)]
pub enum AttachError {
    /// Loading or attaching BPF needs privileges this process lacks (the interface name; empty
    /// for [`TestProgram::load`](super::TestProgram::load)).
    NoPermission(String),
    /// The interface does not exist (its name).
    NoSuchInterface(String),
    /// The interface cannot run the program in the mode asked for.
    Unsupported { interface: String, mode: XdpMode, detail: String },
    /// Another XDP program is attached to the interface; `holder` is the process holding it
    /// through a BPF link, where one was found.
    Busy { interface: String, holder: Option<LinkHolder> },
    /// The program did not load (libbpf's error chain; the verifier log went to stderr).
    Load(String),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPermission(interface) if interface.is_empty() => {
                write!(f, "cannot load the XDP steering program: permission denied (needs root or CAP_BPF+CAP_PERFMON)")
            }
            // The AF_XDP sockets opened next need CAP_NET_RAW too: name all four, so that the
            // operator fixes the unit once.
            Self::NoPermission(interface) => write!(
                f,
                "cannot attach XDP to {interface}: permission denied (needs root or \
                 CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN, and CAP_NET_RAW for the AF_XDP sockets)"
            ),
            Self::NoSuchInterface(interface) => {
                write!(f, "cannot attach XDP to {interface}: no such interface")
            }
            Self::Unsupported { interface, mode, detail } => {
                write!(f, "cannot attach XDP to {interface} in {mode} mode: {detail}")
            }
            Self::Busy { interface, holder: Some(h) } => write!(
                f,
                "cannot attach XDP to {interface}: another XDP program is attached through BPF link {} held by \
                 {} (pid {}); it goes when that process stops (`bpftool link detach id {}` forces it)",
                h.link_id, h.command, h.pid, h.link_id
            ),
            Self::Busy { interface, holder: None } => write!(
                f,
                "cannot attach XDP to {interface}: another XDP program is attached (`ip link set {interface} xdp off` \
                 removes one attached by ip; one attached through a BPF link goes when its owner stops: \
                 `bpftool link show`)"
            ),
            Self::Load(detail) => write!(f, "cannot load the XDP steering program: {detail}"),
        }
    }
}

impl std::error::Error for AttachError {}

/// The steering program, attached to one interface through a BPF link. Dropping it detaches the
/// program; so does the process dying (the link is a file descriptor).
pub struct SteeringProgram {
    // Dropped first: detach before the maps and the program go.
    link: OwnedFd,
    loaded: Loaded,
    interface: String,
    ifindex: u32,
    mode: AttachedMode,
    hardware_timestamps: bool,
    /// Why the device-bound variant is not the one attached, when it was asked for.
    hardware_fallback: Option<String>,
}

impl fmt::Debug for SteeringProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteeringProgram")
            .field("interface", &self.interface)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("hardware_timestamps", &self.hardware_timestamps)
            .field("hardware_fallback", &self.hardware_fallback)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// A queue whose AF_XDP socket could not be opened or registered with the program.
#[derive(Debug)]
pub struct QueueSocketError {
    pub interface: String,
    pub queue: u32,
    /// False: opening (socket, UMEM, bind) failed; true: the program would not take the socket.
    pub registering: bool,
    pub source: io::Error,
}

impl fmt::Display for QueueSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (interface, queue) = (&self.interface, self.queue);
        if self.registering {
            write!(f, "cannot register the AF_XDP socket of {interface} queue {queue}")
        } else {
            write!(f, "cannot open the AF_XDP socket for {interface} queue {queue}")
        }
    }
}

impl std::error::Error for QueueSocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Attaches `prog` to `ifindex` in `mode` through a new BPF link.
fn create_link(prog: BorrowedFd<'_>, ifindex: u32, mode: AttachedMode) -> io::Result<OwnedFd> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags: mode.link_flags(),
        ..Default::default()
    };
    let target = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `prog` is an open program fd for the duration of the call and `opts` is a fully
    // initialised options struct whose `sz` is its size; libbpf only reads both.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), target, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_link_create returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn link_error(interface: &str, mode: XdpMode, attached: AttachedMode, e: &io::Error) -> AttachError {
    let interface = interface.to_string();
    let detail = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => return AttachError::NoPermission(interface),
        Some(libc::ENODEV) => return AttachError::NoSuchInterface(interface),
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            let holder = stratum_host::netif::index(&interface).and_then(super::query::xdp_link_holder);
            return AttachError::Busy { interface, holder };
        }
        Some(libc::EOPNOTSUPP) if attached == AttachedMode::Driver => {
            "the driver has no native XDP (try xdp-mode = \"generic\" or \"auto\")".to_string()
        }
        Some(libc::EINVAL) => format!(
            "the kernel refused the {attached} mode attach ({e}: MTU too large for XDP, or a device \
             feature that excludes XDP)"
        ),
        _ => format!("{attached} mode attach failed: {e}"),
    };
    AttachError::Unsupported { interface, mode, detail }
}

impl SteeringProgram {
    /// Loads and attaches through a BPF link (gone when the process dies, kill -9 included). Auto =
    /// driver, falling back to generic (SKB) mode. `hardware_timestamps` tries the device-bound
    /// variant first (driver mode only: the kernel refuses device-bound programs in generic mode)
    /// and falls back to the TAI one if loading or attaching it fails.
    pub fn attach(interface: &str, mode: XdpMode, config: &ProgramConfig) -> Result<SteeringProgram, AttachError> {
        route_libbpf_messages();
        let ifindex =
            stratum_host::netif::index(interface).ok_or_else(|| AttachError::NoSuchInterface(interface.to_string()))?;
        let mut last = None;
        let mut hardware_fallback = None;
        for &attached in mode.candidates() {
            let variants: &[Variant] = if config.hardware_timestamps && attached == AttachedMode::Driver {
                &[Variant::Hw(ifindex), Variant::Tai]
            } else {
                &[Variant::Tai]
            };
            for &variant in variants {
                let loaded = match Loaded::load(config.port, variant) {
                    Ok(loaded) => loaded,
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                        return Err(AttachError::NoPermission(interface.to_string()))
                    }
                    // The device-bound variant may not load (old kernel, driver): the TAI one will.
                    Err(e) if variant != Variant::Tai => {
                        hardware_fallback = Some(format!("the device-bound program did not load: {e:#}"));
                        continue;
                    }
                    Err(e) => return Err(load_error(interface, e)),
                };
                match create_link(loaded.program().as_fd(), ifindex, attached) {
                    Ok(link) => {
                        let hardware_timestamps = variant != Variant::Tai;
                        if !config.hardware_timestamps || hardware_timestamps {
                            hardware_fallback = None;
                        } else if attached == AttachedMode::Generic {
                            hardware_fallback = Some("generic mode has no NIC receive timestamps".to_string());
                        }
                        return Ok(SteeringProgram {
                            link,
                            loaded,
                            interface: interface.to_string(),
                            ifindex,
                            mode: attached,
                            hardware_timestamps,
                            hardware_fallback,
                        });
                    }
                    Err(e) => {
                        let error = link_error(interface, mode, attached, &e);
                        if !matches!(error, AttachError::Unsupported { .. }) {
                            return Err(error);
                        }
                        if variant != Variant::Tai {
                            hardware_fallback = Some(format!("the device-bound program did not attach: {e}"));
                        }
                        last = Some(error);
                    }
                }
            }
        }
        Err(last.expect("at least one attach was tried"))
    }

    /// The interface's name, as given to [`attach`](Self::attach).
    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The XDP mode in use.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// True when the device-bound variant is the one attached (it asks the NIC for receive
    /// stamps; where the driver has none, frames still carry the TAI stamp, flagged as such).
    pub fn hardware_timestamps(&self) -> bool {
        self.hardware_timestamps
    }

    /// When [`ProgramConfig::hardware_timestamps`] was asked for but the TAI variant is attached:
    /// why, in one line (for the log).
    pub fn hardware_timestamps_fallback(&self) -> Option<&str> {
        self.hardware_fallback.as_deref()
    }

    /// The kernel's id of the attached program (as `bpftool prog` and
    /// [`query_xdp`](super::query_xdp) show it).
    pub fn program_id(&self) -> io::Result<u32> {
        self.loaded.program_id()
    }

    /// Steers receive queue `queue`'s requests to the AF_XDP socket `xsk_fd` (bound to that
    /// queue of this interface).
    pub fn register_socket(&self, queue: u32, xsk_fd: BorrowedFd<'_>) -> io::Result<()> {
        self.loaded.register_socket(queue, xsk_fd)
    }

    /// Opens one AF_XDP socket per queue in `queues` and registers each before the next is opened,
    /// so that no queue is steered to a socket that does not exist yet; each socket's copy-mode TX
    /// budget is raised to `tx_budget` frames where the kernel allows it. The daemon and the load
    /// generator put their queues in service this way.
    pub fn open_queue_sockets(
        &self,
        queues: &[u32],
        config: &XskConfig,
        tx_budget: u32,
    ) -> Result<Vec<XskSocket>, QueueSocketError> {
        let failed = |queue, registering, source| QueueSocketError {
            interface: self.interface.clone(),
            queue,
            registering,
            source,
        };
        let mut sockets = Vec::with_capacity(queues.len());
        for &queue in queues {
            let mut socket = XskSocket::open(self.ifindex, queue, config).map_err(|e| failed(queue, false, e))?;
            self.register_socket(queue, socket.as_fd()).map_err(|e| failed(queue, true, e))?;
            socket.set_tx_budget(tx_budget);
            sockets.push(socket);
        }
        Ok(sockets)
    }

    /// Stops steering queue `queue` (its requests fall through to the kernel). A queue with no
    /// socket is not an error.
    pub fn unregister_socket(&self, queue: u32) -> io::Result<()> {
        self.loaded.unregister_socket(queue)
    }

    map_methods!();

    /// The link's file descriptor (for `bpftool link` style queries).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        let errors = [
            AttachError::NoPermission("eth0".into()),
            AttachError::NoSuchInterface("eth9".into()),
            AttachError::Unsupported { interface: "eth0".into(), mode: XdpMode::Driver, detail: "x".into() },
            AttachError::Busy { interface: "eth0".into(), holder: None },
            AttachError::Busy {
                interface: "eth0".into(),
                holder: Some(LinkHolder { link_id: 3, pid: 9, command: "stratumd".into() }),
            },
            AttachError::Load("y".into()),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
        }
        assert_eq!(
            AttachError::NoSuchInterface("eth9".into()).to_string(),
            "cannot attach XDP to eth9: no such interface"
        );
    }
}
