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

/// A process holding an XDP BPF link open (from its `/proc/PID/fdinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHolder {
    /// The link's id (as `bpftool link show` lists it).
    pub link_id: u32,
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
}

/// The first process found holding an XDP link on `ifindex`, if any: a link, unlike a program
/// attached with `ip link set IF xdp obj ...`, cannot be removed with `ip link set IF xdp off`;
/// it goes when its holder exits. Best effort: without privilege, other users' processes are
/// not visible, and a link pinned in bpffs has no holding process.
pub fn xdp_link_holder(ifindex: u32) -> Option<LinkHolder> {
    let processes = std::fs::read_dir("/proc").ok()?;
    for process in processes.filter_map(Result::ok) {
        let Some(pid) = process.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(process.path().join("fdinfo")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
            if let Some(link_id) = xdp_link_on(&info, ifindex) {
                let command = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                return Some(LinkHolder { link_id, pid, command: command.trim().to_string() });
            }
        }
    }
    None
}

/// The link id in an fdinfo text when it describes an XDP link on `ifindex`.
fn xdp_link_on(fdinfo: &str, ifindex: u32) -> Option<u32> {
    let field = |name: &str| {
        fdinfo.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')).map(str::trim))
    };
    if field("link_type")? != "xdp" || field("ifindex")?.parse::<u32>().ok()? != ifindex {
        return None;
    }
    field("link_id")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_xdp_link_from_fdinfo() {
        let link = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nlink_type:\txdp\nlink_id:\t12\n\
                    prog_tag:\tabcdef0123456789\nprog_id:\t40\nifindex:\t7\n";
        assert_eq!(xdp_link_on(link, 7), Some(12));
        assert_eq!(xdp_link_on(link, 8), None);
        assert_eq!(xdp_link_on(&link.replace("xdp", "tracing"), 7), None);
        assert_eq!(xdp_link_on("pos:\t0\nflags:\t02\n", 7), None);
    }
}
