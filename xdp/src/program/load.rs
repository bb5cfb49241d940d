//! Loading the steering program: the object build.rs compiled, the `stratum_port` rodata knob set
//! before load, the one entry point chosen (TAI, or device-bound for NIC stamps), and libbpf's own
//! messages routed to the log.
//!
//! Owns [`Loaded`], the loaded object that [`super::SteeringProgram`] and [`super::TestProgram`]
//! hold. Never attaches to an interface (attach.rs) and never reads or writes a map's contents
//! (maps.rs): it only finds the program and the maps in the object.

use std::fmt;
use std::io;
use std::os::fd::AsFd;

use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::BtfType;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{Btf, ErrorKind, MapCore, Object, ObjectBuilder};

use super::{to_io, AttachError};

/// The compiled program (build.rs).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// Entry point that stamps with `bpf_ktime_get_tai_ns()` at XDP entry.
const PROG_TAI: &str = "stratum_steer";
/// Entry point that asks the NIC for its receive stamp first (device-bound).
const PROG_HW: &str = "stratum_steer_hw";
/// The rodata knob holding the NTP port.
const PORT_KNOB: &str = "stratum_port";

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

/// Which entry point to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Tai,
    /// Device-bound to this ifindex.
    Hw(u32),
}

/// A loaded program object (one entry point loaded, the other not).
pub(super) struct Loaded {
    object: Object,
    prog: &'static str,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("prog", &self.prog).finish_non_exhaustive()
    }
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
    pub(super) fn load(port: u16, variant: Variant) -> Result<Self, libbpf_rs::Error> {
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

    /// The loaded entry point.
    pub(super) fn program(&self) -> libbpf_rs::Program<'_> {
        self.object.progs().find(|p| p.name() == self.prog).expect("the loaded entry point is in the object")
    }

    /// The loaded entry point, for BPF_PROG_TEST_RUN.
    pub(super) fn program_mut(&self) -> libbpf_rs::ProgramMut<'_> {
        self.object.progs_mut().find(|p| p.name() == self.prog).expect("the loaded entry point is in the object")
    }

    /// The map `name` of steer.bpf.c.
    pub(super) fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.object.maps().find(|m| m.name() == name).expect("steer.bpf.c defines the map")
    }

    pub(super) fn program_id(&self) -> io::Result<u32> {
        libbpf_rs::Program::id_from_fd(self.program().as_fd()).map_err(to_io)
    }
}

/// A load that failed, for the caller: no permission, or libbpf's error chain.
pub(super) fn load_error(interface: &str, e: libbpf_rs::Error) -> AttachError {
    match e.kind() {
        ErrorKind::PermissionDenied => AttachError::NoPermission(interface.to_string()),
        _ => AttachError::Load(format!("{e:#}")),
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
    fn the_object_has_the_port_knob() {
        // Pure parsing of the embedded object (no privileges).
        assert!(port_knob_offset().is_ok());
    }
}
