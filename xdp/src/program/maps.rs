//! The maps the server talks to in a loaded steering program: `xsks` (the AF_XDP socket of each
//! receive queue), the deny tries `deny_v4`/`deny_v6`, this host's addresses `local_v4`/`local_v6`
//! with `local_config` (the interface's MAC and whether requests must be addressed to us), and the
//! per-CPU `counters`, with their key and value layouts (mirrors of steer.bpf.c).
//!
//! Owns those layouts and the checks on what goes in (queue range, prefix length, host bits).
//! Never loads or attaches a program and keeps no state of its own: the maps are the state.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags};

use super::load::Loaded;
use super::to_io;

/// XSKMAP entries: receive queues 0..XSK_QUEUES can have a socket.
pub const XSK_QUEUES: u32 = 256;

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
    /// Requests to our port not addressed to this host (another MAC or IP), or from one of its
    /// own or broadcast addresses: handed to the kernel untouched.
    pub not_ours: u64,
}

/// Counter slots, as in steer.bpf.c's `enum stratum_counter`.
const COUNTER_SLOTS: u32 = 6;

/// What a host address is to the program (steer.bpf.c's `enum local_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalAddress {
    /// One of the host's own addresses: requests to it are ours, requests from it are spoofed.
    Unicast(IpAddr),
    /// A broadcast address of one of the host's subnets: never a real client's source.
    Broadcast(IpAddr),
}

impl LocalAddress {
    fn entry(&self) -> (&'static str, Vec<u8>, u8) {
        let (addr, kind) = match *self {
            Self::Unicast(a) => (a, 1),
            Self::Broadcast(a) => (a, 2),
        };
        match addr {
            IpAddr::V4(a) => ("local_v4", a.octets().to_vec(), kind),
            IpAddr::V6(a) => ("local_v6", a.octets().to_vec(), kind),
        }
    }
}

impl Loaded {
    pub(super) fn counters(&self) -> io::Result<ProgramCounters> {
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
        let [redirected, passed, malformed, no_socket, denied, not_ours] = sums;
        Ok(ProgramCounters { redirected, passed, malformed, no_socket, denied, not_ours })
    }

    /// Makes `local_v4`/`local_v6` hold exactly `addresses` (stale entries removed, new ones
    /// added; an address both unicast and broadcast is kept as unicast).
    pub(super) fn set_local_addresses(&self, addresses: &[LocalAddress]) -> io::Result<()> {
        let mut wanted: Vec<(&'static str, Vec<u8>, u8)> = addresses.iter().map(LocalAddress::entry).collect();
        // Unicast (1) before broadcast (2), so that the first of each address is the one kept.
        wanted.sort_by_key(|(_, _, kind)| *kind);
        let mut seen = HashSet::new();
        wanted.retain(|(map, key, _)| seen.insert((*map, key.clone())));
        for map in ["local_v4", "local_v6"] {
            let stale: Vec<Vec<u8>> =
                self.map(map).keys().filter(|k| !wanted.iter().any(|(m, key, _)| *m == map && key == k)).collect();
            for key in stale {
                self.map(map).delete(&key).map_err(to_io)?;
            }
        }
        for (map, key, kind) in &wanted {
            self.map(map).update(key, &[*kind], MapFlags::ANY).map_err(to_io)?;
        }
        Ok(())
    }

    /// Sets the interface's MAC and switches the "addressed to us" check on or off.
    pub(super) fn set_local_config(&self, mac: [u8; 6], enforce: bool) -> io::Result<()> {
        let mut value = [0u8; 8];
        value[0] = u8::from(enforce);
        value[1..7].copy_from_slice(&mac);
        self.map("local_config").update(&0u32.to_ne_bytes(), &value, MapFlags::ANY).map_err(to_io)
    }

    pub(super) fn deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        let (map, key) = deny_entry(network, prefix_len)?;
        self.map(map).update(&key, &[1], MapFlags::ANY).map_err(to_io)
    }

    pub(super) fn remove_deny(&self, network: IpAddr, prefix_len: u8) -> io::Result<()> {
        let (map, key) = deny_entry(network, prefix_len)?;
        self.map(map).delete(&key).map_err(to_io)
    }

    pub(super) fn register_socket(&self, queue: u32, xsk_fd: BorrowedFd<'_>) -> io::Result<()> {
        check_queue(queue)?;
        let fd = u32::try_from(xsk_fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.map("xsks").update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY).map_err(to_io)
    }

    pub(super) fn unregister_socket(&self, queue: u32) -> io::Result<()> {
        check_queue(queue)?;
        self.map("xsks").delete(&queue.to_ne_bytes()).map_err(to_io)
    }
}

/// The map methods that [`SteeringProgram`](super::SteeringProgram) and
/// [`TestProgram`](super::TestProgram) both have, written once for the `impl` block of a type
/// with a `loaded: Loaded` field: the two cannot drift apart, and a deny-trie test run through a
/// `TestProgram` tests what the server calls.
macro_rules! map_methods {
    () => {
        /// Drops requests from `network`/`prefix_len` in the program (inserts into the deny trie).
        pub fn deny(&self, network: std::net::IpAddr, prefix_len: u8) -> std::io::Result<()> {
            self.loaded.deny(network, prefix_len)
        }

        /// Removes a [`deny`](Self::deny) entry (NotFound where there is none).
        pub fn remove_deny(&self, network: std::net::IpAddr, prefix_len: u8) -> std::io::Result<()> {
            self.loaded.remove_deny(network, prefix_len)
        }

        /// The program's counters, summed over CPUs.
        pub fn counters(&self) -> std::io::Result<$crate::program::ProgramCounters> {
            self.loaded.counters()
        }

        /// Makes the program's table of this host's addresses hold exactly `addresses`.
        pub fn set_local_addresses(&self, addresses: &[$crate::program::LocalAddress]) -> std::io::Result<()> {
            self.loaded.set_local_addresses(addresses)
        }

        /// Steers only requests addressed to this host (to `mac`, to an address of
        /// [`set_local_addresses`](Self::set_local_addresses), from none of them) when `enforce`;
        /// everything to the port when not (the load generator, which answers for many simulated
        /// clients). Fill the addresses first: with none, nothing is ours.
        pub fn set_addressed_to_us(&self, mac: [u8; 6], enforce: bool) -> std::io::Result<()> {
            self.loaded.set_local_config(mac, enforce)
        }
    };
}
pub(super) use map_methods;

/// The deny trie and the LPM key for `network`/`prefix_len`.
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

fn check_queue(queue: u32) -> io::Result<()> {
    if queue >= XSK_QUEUES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("receive queue {queue} is past the program's {XSK_QUEUES} socket slots"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_keys_clear_host_bits() {
        let (map, key) = deny_entry("192.0.2.77".parse().unwrap(), 25).unwrap();
        assert_eq!(map, "deny_v4");
        assert_eq!(key, [&25u32.to_ne_bytes()[..], &[192, 0, 2, 0]].concat());
        let (map, key) = deny_entry("2001:db8:ffff::1".parse().unwrap(), 36).unwrap();
        assert_eq!(map, "deny_v6");
        let mut want = 36u32.to_ne_bytes().to_vec();
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(key, want);
        let (_, key) = deny_entry("10.1.2.3".parse().unwrap(), 0).unwrap();
        assert_eq!(&key[4..], &[0, 0, 0, 0]);
        let (_, key) = deny_entry("10.1.2.3".parse().unwrap(), 32).unwrap();
        assert_eq!(&key[4..], &[10, 1, 2, 3]);
        assert!(deny_entry("10.1.2.3".parse().unwrap(), 33).is_err());
        assert!(deny_entry("::1".parse().unwrap(), 129).is_err());
    }
}
