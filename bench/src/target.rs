//! The loopback rule: which targets `load` agrees to send to.

use std::net::{IpAddr, SocketAddr};

/// The loopback rule: a load generator must never be pointed at someone else's server by
/// accident. Loopback targets (127.0.0.0/8, ::1, and ::ffff:127.x.y.z) are always accepted;
/// anything else only with `--i-own-this-target` (a server in a network namespace of this host,
/// or a lab machine of the operator's), since that cannot be told from the address.
pub fn check_target(target: SocketAddr, i_own_this_target: bool) -> anyhow::Result<SocketAddr> {
    let ip = target.ip().to_canonical();
    if !ip.is_loopback() && !i_own_this_target {
        anyhow::bail!(
            "refusing to load {}: not a loopback address; pass --i-own-this-target if the server is yours \
             (a network namespace or a lab machine)",
            target.ip()
        );
    }
    if ip.is_unspecified() || port_is_zero(target) || is_multicast_or_broadcast(ip) {
        anyhow::bail!("--target {target} is not a unicast server address");
    }
    Ok(SocketAddr::new(ip, target.port()))
}

fn port_is_zero(target: SocketAddr) -> bool {
    target.port() == 0
}

fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An address in a test (the tests of config and report use it too).
    pub(crate) fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_targets_are_accepted() {
        for t in ["127.0.0.1:123", "127.0.0.53:11123", "[::1]:123"] {
            assert_eq!(check_target(addr(t), false).unwrap(), addr(t));
        }
        // An IPv4-mapped loopback address is loopback too (and used as plain IPv4).
        assert_eq!(check_target(addr("[::ffff:127.0.0.1]:123"), false).unwrap(), addr("127.0.0.1:123"));
    }

    #[test]
    fn other_targets_are_refused_without_the_flag() {
        for t in ["192.0.2.1:123", "10.0.0.1:123", "[2001:db8::1]:123", "[::ffff:192.0.2.1]:123"] {
            let e = check_target(addr(t), false).unwrap_err().to_string();
            assert!(e.contains("not a loopback address") && e.contains("--i-own-this-target"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(check_target(addr(t), true).is_ok());
        }
    }

    #[test]
    fn unusable_targets_are_refused_even_with_the_flag() {
        for t in ["0.0.0.0:123", "[::]:123", "224.0.1.1:123", "255.255.255.255:123", "[ff02::101]:123", "127.0.0.1:0"] {
            assert!(check_target(addr(t), true).is_err(), "{t}");
        }
    }
}
