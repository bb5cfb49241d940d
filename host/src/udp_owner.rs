//! Which processes hold a local UDP port: `/proc/net/udp` and `udp6` give the sockets bound to it
//! (by inode), `/proc/PID/fd` the processes that hold those inodes. Best effort: without
//! privilege, other users' processes cannot be looked into, and the answer is then empty.

use std::collections::BTreeSet;
use std::fs;

/// A process holding a socket: its pid and its command name (`/proc/PID/comm`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

/// The processes holding a UDP socket bound to local port `port` (any address, IPv4 or IPv6),
/// in pid order, each once.
pub fn udp_port_holders(port: u16) -> Vec<Holder> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(inodes_on_port(&text, port));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut holders = BTreeSet::new();
    let Ok(processes) = fs::read_dir("/proc") else { return Vec::new() };
    for process in processes.filter_map(Result::ok) {
        let Some(pid) = process.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else { continue };
        let holds = fds
            .filter_map(Result::ok)
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter_map(|target| socket_inode(&target.to_string_lossy()))
            .any(|inode| inodes.contains(&inode));
        if holds {
            let command = fs::read_to_string(process.path().join("comm")).unwrap_or_default().trim().to_string();
            holders.insert(Holder { pid, command });
        }
    }
    holders.into_iter().collect()
}

/// The inodes of the sockets in a `/proc/net/udp{,6}` table bound to local port `port`.
fn inodes_on_port(table: &str, port: u16) -> impl Iterator<Item = u64> + '_ {
    table.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address (HEXADDR:HEXPORT), rem_address, st, tx:rx, tr:when, retrnsmt, uid,
        // timeout, inode, ...
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (u16::from_str_radix(local_port, 16).ok()? == port && inode != 0).then_some(inode)
    })
}

/// The inode in a `/proc/PID/fd` link target of the form `socket:[INODE]`.
fn socket_inode(target: &str) -> Option<u64> {
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn parses_the_kernel_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  \x20 12: 0100007F:2B73 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
                  \x20 13: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0\n";
        assert_eq!(inodes_on_port(v4, 0x2b73).collect::<Vec<_>>(), [4242]);
        assert_eq!(inodes_on_port(v4, 68).collect::<Vec<_>>(), [77]);
        assert_eq!(inodes_on_port(v4, 123).count(), 0);
        assert_eq!(inodes_on_port("garbage\nnot a table at all\n", 1).count(), 0);
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn finds_this_process_holding_its_own_socket() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let holders = udp_port_holders(port);
        assert!(holders.iter().any(|h| h.pid == std::process::id()), "{holders:?}");
        drop(socket);
        assert!(udp_port_holders(port).iter().all(|h| h.pid != std::process::id()));
    }
}
