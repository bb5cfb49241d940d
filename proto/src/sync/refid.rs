//! The reference id a stratum 2+ server announces for its upstream (RFC 5905 section 7.3).

use core::net::IpAddr;

use md5::{Digest, Md5};

use crate::packet::RefId;

/// The refid naming `addr` as our system peer: an IPv4 address itself, an IPv6 address the first
/// four bytes of the MD5 digest of its 16 bytes (RFC 5905; what ntpd and chronyd send too).
///
/// The caller also uses it to describe *its own* addresses for the loop check
/// ([`SyncConfig::own_refids`](super::SyncConfig::own_refids)): an upstream synchronised to us
/// announces one of them.
pub fn refid_for_address(addr: IpAddr) -> RefId {
    match addr {
        IpAddr::V4(v4) => RefId::from_ipv4(v4),
        IpAddr::V6(v6) => {
            let digest = Md5::digest(v6.octets());
            RefId([digest[0], digest[1], digest[2], digest[3]])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_the_address_and_ipv6_the_md5_prefix() {
        assert_eq!(refid_for_address("192.0.2.10".parse().unwrap()), RefId([192, 0, 2, 10]));
        // MD5 of the 16 bytes of ::1 (00..01) is cf404dc806178c245b5b4fe2531e6d8c.
        assert_eq!(refid_for_address("::1".parse().unwrap()), RefId([0xcf, 0x40, 0x4d, 0xc8]));
    }
}
