//! The XDP steering program (`src/bpf/steer.bpf.c`): load, attach through a BPF link, and the maps
//! the server talks to (the AF_XDP socket per queue, the deny tries, the counters).
//!
//! The program redirects NTP requests (UDP to the configured port, IPv4 or IPv6, up to two VLAN
//! tags) to the AF_XDP socket of the receive queue they arrived on, with the receive metadata
//! ([`crate::meta`]) written in front of the frame; everything else goes to the kernel untouched.
//!
//! Deny tries: two LPM tries on the source address, `deny_v4` keyed `{u32 prefixlen, [u8; 4]}`
//! and `deny_v6` keyed `{u32 prefixlen, [u8; 16]}` (prefix length in bits, host byte order;
//! address in network order, host bits cleared). An IPv4-mapped IPv6 network is kept in the v6
//! trie as written: a frame's source address is looked up in the trie of its own IP version.
//!
//! [`TestProgram`] loads the same program without attaching it and runs frames through it with
//! BPF_PROG_TEST_RUN (tests, and the `stratumd` self-check).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::BtfType;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{Btf, ErrorKind, MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

use crate::meta::{RxMetadata, META_LEN};

/// The compiled program (build.rs).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// Entry point that stamps with `bpf_ktime_get_tai_ns()` at XDP entry.
const PROG_TAI: &str = "stratum_steer";
/// Entry point that asks the NIC for its receive stamp first (device-bound).
const PROG_HW: &str = "stratum_steer_hw";
/// The rodata knob holding the NTP port.
const PORT_KNOB: &str = "stratum_port";
/// XSKMAP entries: receive queues 0..XSK_QUEUES can have a socket.
pub const XSK_QUEUES: u32 = 256;

/// XDP actions (the values a program returns).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

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

/// What the program is loaded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramConfig {
    /// UDP destination port of the requests to steer.
    pub port: u16,
    /// Try the NIC's receive timestamps (device-bound program, driver mode only).
    pub hardware_timestamps: bool,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self { port: 123, hardware_timestamps: false }
    }
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Requests redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Frames that are not ours, handed to the kernel untouched.
    pub passed: u64,
    /// Frames to our port whose UDP length is impossible (dropped).
    pub malformed: u64,
    /// Requests for a receive queue with no AF_XDP socket (handed to the kernel).
    pub no_socket: u64,
    /// Requests from a denied source (dropped).
    pub denied: u64,
}

/// Counter slots, as in steer.bpf.c's `enum stratum_counter`.
const COUNTER_SLOTS: u32 = 5;

/// Why the program could not be loaded or attached.
#[derive(Debug)]
pub enum AttachError {
    /// Loading or attaching BPF needs privileges this process lacks (the interface name; empty
    /// for [`TestProgram::load`]).
    NoPermission(String),
    /// The interface does not exist (its name).
    NoSuchInterface(String),
    /// The interface cannot run the program in the mode asked for.
    Unsupported { interface: String, mode: XdpMode, detail: String },
    /// Another XDP program is attached to the interface (its name).
    Busy(String),
    /// The program did not load (libbpf's error chain; the verifier log went to stderr).
    Load(String),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPermission(interface) if interface.is_empty() => {
                write!(f, "cannot load the XDP steering program: permission denied (needs root or CAP_BPF+CAP_PERFMON)")
            }
            Self::NoPermission(interface) => {
                write!(f, "cannot attach XDP to {interface}: permission denied (needs root or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN)")
            }
            Self::NoSuchInterface(interface) => {
                write!(f, "cannot attach XDP to {interface}: no such interface")
            }
            Self::Unsupported { interface, mode, detail } => {
                write!(f, "cannot attach XDP to {interface} in {mode} mode: {detail}")
            }
            Self::Busy(interface) => write!(
                f,
                "cannot attach XDP to {interface}: another XDP program is attached \
                 (see `ip link show {interface}`; `ip link set {interface} xdp off` removes it)"
            ),
            Self::Load(detail) => write!(f, "cannot load the XDP steering program: {detail}"),
        }
    }
}

impl std::error::Error for AttachError {}

/// Which entry point to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Tai,
    /// Device-bound to this ifindex.
    Hw(u32),
}

/// A loaded program object (one entry point loaded, the other not).
struct Loaded {
    object: Object,
    prog: &'static str,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("prog", &self.prog).finish_non_exhaustive()
    }
}

fn to_io(e: libbpf_rs::Error) -> io::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
        ErrorKind::InvalidData => io::ErrorKind::InvalidData,
        ErrorKind::Unsupported => io::ErrorKind::Unsupported,
        ErrorKind::OutOfMemory => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{e:#}"))
}

/// Offset of the port knob in `.rodata`, from the object's BTF.
fn port_knob_offset() -> Result<usize, libbpf_rs::Error> {
    let missing = || libbpf_rs::Error::from(io::Error::new(io::ErrorKind::InvalidData, "no stratum_port in .rodata"));
    let btf = Btf::from_raw("stratum", OBJECT)?.ok_or_else(missing)?;
    let rodata: DataSec<'_> = btf.type_by_name(".rodata").ok_or_else(missing)?;
    let offset = rodata
        .iter()
        .find(|var| {
            var.size == 2
                && btf.type_by_id::<BtfType<'_>>(var.ty).and_then(|t| t.name()).is_some_and(|n| n == PORT_KNOB)
        })
        .map(|var| var.offset as usize);
    offset.ok_or_else(missing)
}

impl Loaded {
    fn load(port: u16, variant: Variant) -> Result<Self, libbpf_rs::Error> {
        let offset = port_knob_offset()?;
        let mut open = ObjectBuilder::default().name("stratum")?.open_memory(OBJECT)?;
        for mut map in open.maps_mut() {
            if map.name().to_string_lossy().ends_with(".rodata") {
                let value = map.initial_value_mut().ok_or_else(|| {
                    libbpf_rs::Error::from(io::Error::new(io::ErrorKind::InvalidData, ".rodata has no initial value"))
                })?;
                let knob = value.get_mut(offset..offset + 2).ok_or_else(|| {
                    libbpf_rs::Error::from(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ".rodata is shorter than its BTF",
                    ))
                })?;
                knob.copy_from_slice(&port.to_ne_bytes());
            }
        }
        let wanted = match variant {
            Variant::Tai => PROG_TAI,
            Variant::Hw(_) => PROG_HW,
        };
        for mut prog in open.progs_mut() {
            let this = prog.name() == wanted;
            prog.set_autoload(this);
            if let (true, Variant::Hw(ifindex)) = (this, variant) {
                prog.set_ifindex(ifindex);
                // SEC("xdp") sets no program flags of its own.
                prog.set_flags(libbpf_sys::BPF_F_XDP_DEV_BOUND_ONLY);
            }
        }
        let object = open.load()?;
        Ok(Self { object, prog: wanted })
    }

    fn program(&self) -> libbpf_rs::Program<'_> {
        self.object.progs().find(|p| p.name() == self.prog).expect("the loaded entry point is in the object")
    }

    fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.object.maps().find(|m| m.name() == name).expect("steer.bpf.c defines the map")
    }

    fn program_id(&self) -> io::Result<u32> {
        libbpf_rs::Program::id_from_fd(self.program().as_fd()).map_err(to_io)
    }

    fn counters(&self) -> io::Result<ProgramCounters> {
        let map = self.map("counters");
        let mut sums = [0u64; COUNTER_SLOTS as usize];
        for (slot, sum) in (0..COUNTER_SLOTS).zip(sums.iter_mut()) {
            let per_cpu = map.lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY).map_err(to_io)?.unwrap_or_default();
            for value in per_cpu {
                let bytes: [u8; 8] = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short per-CPU counter"))?;
                *sum = sum.wrapping_add(u64::from_ne_bytes(bytes));
            }
        }
        let [redirected, passed, malformed, no_socket, denied] = sums;
        Ok(ProgramCounters { redirected, passed, malformed, no_socket, denied })
    }

    fn deny_entry(network: IpAddr, prefix_len: u8) -> io::Result<(&'static str, Vec<u8>)> {
        let (map, max, octets): (_, u8, Vec<u8>) = match network {
            IpAddr::V4(a) => ("deny_v4", 32, a.octets().to_vec()),
            IpAddr::V6(a) => ("deny_v6", 128, a.octets().to_vec()),
        };
        if prefix_len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {prefix_len} is longer than {max} bits for {network}"),
            ));
        }
        let mut key = u32::from(prefix_len).to_ne_bytes().to_vec();
        // Host bits cleared: one entry per network, however the address was written.
        for (i, byte) in octets.into_iter().enumerate() {
            let bits = usize::from(prefix_len).saturating_sub(i * 8).min(8);
            let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            key.push(byte & mask);
        }
        Ok((map, key))
    }

    fn deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        let (map, key) = Self::deny_entry(network, prefix_len)?;
        self.map(map).update(&key, &[1], MapFlags::ANY).map_err(to_io)
    }

    fn remove_deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        let (map, key) = Self::deny_entry(network, prefix_len)?;
        self.map(map).delete(&key).map_err(to_io)
    }
}

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

/// The interface's index, or None where there is no such interface.
fn ifindex_of(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; if_nametoindex only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
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

/// What is attached to an interface, as the kernel reports it (`bpf_xdp_query`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpQuery {
    /// Program id in driver mode (0: none).
    pub driver_prog_id: u32,
    /// Program id in generic mode (0: none).
    pub generic_prog_id: u32,
    /// Program id offloaded to the NIC (0: none).
    pub hw_prog_id: u32,
}

impl XdpQuery {
    /// Whether any XDP program is attached.
    pub fn any(&self) -> bool {
        self.driver_prog_id != 0 || self.generic_prog_id != 0 || self.hw_prog_id != 0
    }
}

/// Asks the kernel which XDP programs are attached to `ifindex`.
pub fn query_xdp(ifindex: u32) -> io::Result<XdpQuery> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    let target = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `opts` is an initialised options struct whose `sz` is its size, valid for writes
    // for the duration of the call.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(target, 0, &mut opts) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(XdpQuery { driver_prog_id: opts.drv_prog_id, generic_prog_id: opts.skb_prog_id, hw_prog_id: opts.hw_prog_id })
}

fn load_error(interface: &str, e: libbpf_rs::Error) -> AttachError {
    match e.kind() {
        ErrorKind::PermissionDenied => AttachError::NoPermission(interface.to_string()),
        _ => AttachError::Load(format!("{e:#}")),
    }
}

fn link_error(interface: &str, mode: XdpMode, attached: AttachedMode, e: &io::Error) -> AttachError {
    let interface = interface.to_string();
    let detail = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => return AttachError::NoPermission(interface),
        Some(libc::ENODEV) => return AttachError::NoSuchInterface(interface),
        Some(libc::EBUSY) | Some(libc::EEXIST) => return AttachError::Busy(interface),
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
        let ifindex = ifindex_of(interface).ok_or_else(|| AttachError::NoSuchInterface(interface.to_string()))?;
        let modes: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Driver, AttachedMode::Generic],
            XdpMode::Driver => &[AttachedMode::Driver],
            XdpMode::Generic => &[AttachedMode::Generic],
        };
        let mut last = None;
        let mut hardware_fallback = None;
        for &attached in modes {
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

    /// The kernel's id of the attached program (as `bpftool prog` and [`query_xdp`] show it).
    pub fn program_id(&self) -> io::Result<u32> {
        self.loaded.program_id()
    }

    /// Steers receive queue `queue`'s requests to the AF_XDP socket `xsk_fd` (bound to that
    /// queue of this interface).
    pub fn register_socket(&self, queue: u32, xsk_fd: BorrowedFd<'_>) -> io::Result<()> {
        check_queue(queue)?;
        let fd = u32::try_from(xsk_fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.loaded.map("xsks").update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY).map_err(to_io)
    }

    /// Stops steering queue `queue` (its requests fall through to the kernel). A queue with no
    /// socket is not an error.
    pub fn unregister_socket(&self, queue: u32) -> io::Result<()> {
        check_queue(queue)?;
        self.loaded.map("xsks").delete(&queue.to_ne_bytes()).map_err(to_io)
    }

    /// Drops requests from `network`/`prefix_len` in the program (inserts into the deny trie).
    pub fn deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        self.loaded.deny(network, prefix_len)
    }

    /// Removes a [`deny`](Self::deny) entry (NotFound where there is none).
    pub fn remove_deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        self.loaded.remove_deny(network, prefix_len)
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> io::Result<ProgramCounters> {
        self.loaded.counters()
    }

    /// The link's file descriptor (for `bpftool link` style queries).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

fn check_queue(queue: u32) -> io::Result<()> {
    if queue >= XSK_QUEUES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("receive queue {queue} is past the program's {XSK_QUEUES} socket slots"),
        ));
    }
    Ok(())
}

/// What one BPF_PROG_TEST_RUN of the program gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action returned ([`XDP_PASS`], [`XDP_DROP`], [`XDP_REDIRECT`], ...).
    pub action: u32,
    /// Bytes of metadata the program left in front of the frame (0 or [`META_LEN`]).
    pub meta_len: usize,
    /// The metadata area, when the program wrote one of [`META_LEN`] bytes.
    pub meta: Option<[u8; META_LEN]>,
    /// The frame after the program (without the metadata).
    pub frame_out: Vec<u8>,
}

impl TestRunOutput {
    /// The metadata, decoded (None when absent or not written by the program).
    pub fn rx_metadata(&self) -> Option<RxMetadata> {
        self.meta.as_ref().and_then(RxMetadata::decode)
    }
}

/// The steering program loaded but not attached: frames go through it with BPF_PROG_TEST_RUN
/// (needs CAP_BPF; runs the TAI variant, since device-bound programs need a device).
pub struct TestProgram {
    loaded: Loaded,
}

impl fmt::Debug for TestProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestProgram").field("loaded", &self.loaded).finish()
    }
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes and returns it: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex (six u32).
const XDP_MD_LEN: usize = 24;

impl TestProgram {
    /// Loads the program (port and everything else as `config`; `hardware_timestamps` is
    /// ignored) without attaching it.
    pub fn load(config: &ProgramConfig) -> Result<TestProgram, AttachError> {
        match Loaded::load(config.port, Variant::Tai) {
            Ok(loaded) => Ok(Self { loaded }),
            Err(e) => Err(load_error("", e)),
        }
    }

    /// Runs one frame through the program (as received on queue 0 of the loopback device).
    ///
    /// The kernel returns the metadata in front of the frame in the output data, and its length
    /// in the output context's `data` field (`data - data_meta`); both are split apart here.
    /// Frames shorter than an Ethernet header are refused by the kernel (InvalidInput).
    pub fn test_run(&self, frame: &[u8]) -> io::Result<TestRunOutput> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut ctx_in = [0u8; XDP_MD_LEN];
        ctx_in[4..8].copy_from_slice(&len.to_ne_bytes()); // data_end; data = data_meta = 0
        let mut ctx_out = [0u8; XDP_MD_LEN];
        // Room for the frame, a metadata area, and a head or tail the program might add.
        let mut data_out = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            context_in: Some(&mut ctx_in),
            context_out: Some(&mut ctx_out),
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ..Default::default()
        };
        let program = self.loaded.object.progs_mut().find(|p| p.name() == self.loaded.prog);
        let program = program.expect("the loaded entry point is in the object");
        let output = program.test_run(input).map_err(to_io)?;
        let action = output.return_value;
        let out_len = output.data.as_ref().map_or(0, |d| d.len());
        let ctx = output.context.as_deref().unwrap_or(&[]);
        let field =
            |i: usize| ctx.get(i * 4..i * 4 + 4).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()));
        let meta_len = field(0) as usize;
        let out = data_out.get(..out_len).unwrap_or(&[]);
        if meta_len > out.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "metadata longer than the output"));
        }
        let (meta_area, frame_out) = out.split_at(meta_len);
        let meta = <[u8; META_LEN]>::try_from(meta_area).ok();
        Ok(TestRunOutput { action, meta_len, meta, frame_out: frame_out.to_vec() })
    }

    /// As [`SteeringProgram::deny`].
    pub fn deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        self.loaded.deny(network, prefix_len)
    }

    /// As [`SteeringProgram::remove_deny`].
    pub fn remove_deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        self.loaded.remove_deny(network, prefix_len)
    }

    /// As [`SteeringProgram::counters`].
    pub fn counters(&self) -> io::Result<ProgramCounters> {
        self.loaded.counters()
    }
}

/// libbpf prints to stderr by default, including for failures we expect and handle (the
/// device-bound variant not loading, say). Its messages go to the `tracing` log instead, at debug
/// level: every failure that matters reaches the caller as an [`AttachError`] with one clear line.
pub(crate) fn route_libbpf_messages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        fn forward(level: libbpf_rs::PrintLevel, message: String) {
            let message = message.trim_end();
            match level {
                libbpf_rs::PrintLevel::Warn => tracing::debug!(target: "libbpf", "{message}"),
                _ => tracing::trace!(target: "libbpf", "{message}"),
            }
        }
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, forward)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_keys_clear_host_bits() {
        let (map, key) = Loaded::deny_entry("192.0.2.77".parse().unwrap(), 25).unwrap();
        assert_eq!(map, "deny_v4");
        assert_eq!(key, [&25u32.to_ne_bytes()[..], &[192, 0, 2, 0]].concat());
        let (map, key) = Loaded::deny_entry("2001:db8:ffff::1".parse().unwrap(), 36).unwrap();
        assert_eq!(map, "deny_v6");
        let mut want = 36u32.to_ne_bytes().to_vec();
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(key, want);
        let (_, key) = Loaded::deny_entry("10.1.2.3".parse().unwrap(), 0).unwrap();
        assert_eq!(&key[4..], &[0, 0, 0, 0]);
        let (_, key) = Loaded::deny_entry("10.1.2.3".parse().unwrap(), 32).unwrap();
        assert_eq!(&key[4..], &[10, 1, 2, 3]);
        assert!(Loaded::deny_entry("10.1.2.3".parse().unwrap(), 33).is_err());
        assert!(Loaded::deny_entry("::1".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn the_object_has_the_port_knob() {
        // Pure parsing of the embedded object (no privileges).
        assert!(port_knob_offset().is_ok());
    }

    #[test]
    fn errors_are_one_line() {
        let errors = [
            AttachError::NoPermission("eth0".into()),
            AttachError::NoSuchInterface("eth9".into()),
            AttachError::Unsupported { interface: "eth0".into(), mode: XdpMode::Driver, detail: "x".into() },
            AttachError::Busy("eth0".into()),
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
