//! The interface and the next hop's Ethernet address for the AF_XDP engine.
//!
//! Without `--dst-mac`, the target's MAC address comes from the kernel: `ip route get TARGET`
//! names the next hop (the target itself on a directly connected network, else the gateway) and
//! the interface it is reached through (which must be `--interface`); one ordinary UDP datagram
//! (an NTP request) to the target makes the kernel resolve that next hop (ARP or neighbour
//! discovery), and `ip neigh show NEXTHOP dev IF` is read until it has an `lladdr` (1 s at most).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::frame::MacAddr;
use crate::engine::book::REQUEST;

/// The interface's own MAC address (sysfs).
pub fn interface_mac(interface: &str) -> anyhow::Result<MacAddr> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("no interface {interface} ({path})"))?;
    text.trim().parse().map_err(|e: String| anyhow::anyhow!("interface {interface}: {e}"))
}

/// The next hop and the interface out of `ip route get` output.
pub fn parse_route(text: &str) -> Option<(Option<IpAddr>, String)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| words.windows(2).find(|w| w[0] == key).map(|w| w[1]);
    let dev = after("dev")?.to_string();
    let via = after("via").and_then(|v| v.parse().ok());
    Some((via, dev))
}

/// The `lladdr` of a usable entry in `ip neigh show` output (none for INCOMPLETE or FAILED).
pub fn parse_neighbour(text: &str) -> Option<MacAddr> {
    text.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.iter().any(|w| *w == "INCOMPLETE" || *w == "FAILED") {
            return None;
        }
        let at = words.iter().position(|w| *w == "lladdr")?;
        words.get(at + 1)?.parse().ok()
    })
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The MAC address frames to `target` go to from `interface` (see the module comment).
pub fn resolve_next_hop(interface: &str, target: SocketAddr) -> anyhow::Result<MacAddr> {
    let route = ip(&["route", "get", &target.ip().to_string()])?;
    let (via, dev) =
        parse_route(&route).with_context(|| format!("cannot read `ip route get {}`: {route:?}", target.ip()))?;
    if dev != interface {
        bail!("{} is reached through {dev}, not {interface}: give --dst-mac, or the right --interface", target.ip());
    }
    let hop = via.unwrap_or(target.ip());
    let hop_text = hop.to_string();
    let neighbour = || ip(&["neigh", "show", &hop_text, "dev", interface]).ok().and_then(|t| parse_neighbour(&t));
    if let Some(mac) = neighbour() {
        return Ok(mac);
    }
    // One request makes the kernel resolve the next hop; its answer, if any, goes to this socket.
    let local: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid address");
    let probe = UdpSocket::bind(local).context("cannot open the neighbour probe socket")?;
    let _ = probe.send_to(&REQUEST, target);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(mac) = neighbour() {
            return Ok(mac);
        }
    }
    bail!("no neighbour entry for {hop} on {interface} after a probe: give --dst-mac")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_the_next_hop_and_the_interface() {
        let direct = "10.9.0.2 dev sxg0 src 10.9.0.1 uid 0 \n    cache \n";
        assert_eq!(parse_route(direct), Some((None, "sxg0".to_string())));
        let gw = "192.0.2.9 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0 \n    cache \n";
        assert_eq!(parse_route(gw), Some((Some("10.0.0.1".parse().unwrap()), "eth0".to_string())));
        let v6 = "fd00::2 from :: dev veth1 proto kernel src fd00::1 metric 256 pref medium\n";
        assert_eq!(parse_route(v6), Some((None, "veth1".to_string())));
        assert_eq!(parse_route("RTNETLINK answers: Network is unreachable"), None);
    }

    #[test]
    fn neighbour_entries_give_their_lladdr_when_usable() {
        assert_eq!(
            parse_neighbour("10.9.0.2 lladdr 02:11:22:33:44:55 REACHABLE\n"),
            Some(MacAddr([2, 0x11, 0x22, 0x33, 0x44, 0x55]))
        );
        assert_eq!(parse_neighbour("fd00::2 lladdr 0a:00:00:00:00:02 router STALE\n").map(|m| m.0[0]), Some(0x0a));
        assert_eq!(parse_neighbour("10.9.0.2  INCOMPLETE\n"), None);
        assert_eq!(parse_neighbour("10.9.0.2 lladdr 02:11:22:33:44:55 FAILED\n"), None);
        assert_eq!(parse_neighbour(""), None);
    }

    #[test]
    fn loopback_has_no_unicast_mac() {
        assert!(interface_mac("lo").unwrap_err().to_string().contains("unicast"));
        assert!(interface_mac("no-such-if0").unwrap_err().to_string().contains("no interface"));
    }
}
