//! The steering program loaded but never attached, run over single frames with
//! BPF_PROG_TEST_RUN: the tests' {frame in, action, metadata, frame out} and the `stratumd`
//! self-check.
//!
//! Owns [`TestProgram`] and the decoding of what the kernel hands back ([`TestRunOutput`]). Never
//! attaches to an interface and never sees real traffic.

use std::fmt;
use std::io;

use libbpf_rs::ProgramInput;

use super::load::{load_error, Loaded, Variant};
use super::maps::map_methods;
use super::{to_io, AttachError, ProgramConfig};
use crate::meta::{RxMetadata, META_LEN};

/// What one BPF_PROG_TEST_RUN of the program gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action returned ([`XDP_PASS`](super::XDP_PASS), [`XDP_DROP`](super::XDP_DROP),
    /// [`XDP_REDIRECT`](super::XDP_REDIRECT), ...).
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
        let output = self.loaded.program_mut().test_run(input).map_err(to_io)?;
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

    map_methods!();
}
