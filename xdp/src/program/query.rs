//! What the kernel says is attached to an interface (`bpf_xdp_query`), whoever attached it.
//!
//! Owns [`XdpQuery`] and [`query_xdp`]. Read-only: never attaches, detaches or replaces a
//! program, and needs no loaded object of ours.

use std::io;

use libbpf_rs::libbpf_sys;

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
