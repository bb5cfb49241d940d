//! Access control: allow and deny CIDR lists, and sources that can never be real clients.
//!
//! The most specific matching rule decides (a longer prefix beats a shorter one; on a tie, deny
//! wins); an address no rule matches is not allowed. IPv4 rules and clients are matched in the
//! IPv4-mapped IPv6 space, so one list serves both families.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// An address prefix such as `192.0.2.0/24` or `2001:db8::/32`; a bare address is a host route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// The prefix in IPv4-mapped IPv6 space: (masked bits, length out of 128).
    fn as_v6(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(v4) => (mapped(v4), self.len + 96),
            IpAddr::V6(v6) => (u128::from(v6), self.len),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (bits, len) = self.as_v6();
        mask(as_v6_bits(ip), len) == bits
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a CIDR string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError(format!("`{text}` is not an address or prefix like 192.0.2.0/24")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(CidrError(format!("`{text}`: prefix length must be 0..={max}"))),
            },
        };
        let cidr = Self { addr, len };
        let (bits, full_len) = cidr.as_v6();
        if mask(bits, full_len) != bits {
            let base = from_v6_bits(mask(bits, full_len), addr.is_ipv4());
            return Err(CidrError(format!("`{text}` has host bits set; did you mean {base}/{len}?")));
        }
        Ok(cidr)
    }
}

/// The access list's answer for one source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessVerdict {
    Allow,
    /// Matched a deny rule.
    Deny,
    /// Matched no allow rule.
    NotAllowed,
    /// A source no real client can have (BAD_INPUTS row 20).
    Martian,
}

/// Compiled allow/deny rules.
#[derive(Clone, Debug)]
pub struct AccessList {
    /// (prefix bits, length, allow), most specific first; deny before allow on equal length.
    rules: Vec<(u128, u8, bool)>,
    allow_everything: bool,
    loopback_is_martian: bool,
}

impl AccessList {
    /// `loopback_is_martian`: true where packets come straight off a NIC (AF_XDP), on which a
    /// loopback source can only be forged; false for sockets, where the kernel already dropped those
    /// and loopback clients are real local processes.
    pub fn new(allow: &[Cidr], deny: &[Cidr], loopback_is_martian: bool) -> Self {
        let mut rules: Vec<(u128, u8, bool)> = allow
            .iter()
            .map(|c| (c.as_v6(), true))
            .chain(deny.iter().map(|c| (c.as_v6(), false)))
            .map(|((bits, len), allow)| (bits, len, allow))
            .collect();
        rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let covers = |c: &str| allow.iter().any(|a| *a == c.parse::<Cidr>().expect("valid literal"));
        let allow_everything = deny.is_empty() && covers("0.0.0.0/0") && covers("::/0");
        Self { rules, allow_everything, loopback_is_martian }
    }

    /// Allows every address (the default).
    pub fn allow_all(loopback_is_martian: bool) -> Self {
        Self::new(&["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], &[], loopback_is_martian)
    }

    pub fn check(&self, ip: IpAddr) -> AccessVerdict {
        if is_martian(ip, self.loopback_is_martian) {
            return AccessVerdict::Martian;
        }
        if self.allow_everything {
            return AccessVerdict::Allow;
        }
        let bits = as_v6_bits(ip);
        match self.rules.iter().find(|(prefix, len, _)| mask(bits, *len) == *prefix) {
            Some((_, _, true)) => AccessVerdict::Allow,
            Some((_, _, false)) => AccessVerdict::Deny,
            None => AccessVerdict::NotAllowed,
        }
    }
}

/// The deny entries that a per-family prefix filter in front of the access list (the XDP program's
/// deny map, one table per address family) may enforce on its own: every one except those with a
/// more specific allow entry of the same family inside them, which the access list lets win and a
/// deny-only filter cannot tell apart. Those stay with the access list.
pub fn prefilter_denies<'a>(allow: &'a [Cidr], deny: &'a [Cidr]) -> impl Iterator<Item = &'a Cidr> + 'a {
    deny.iter().filter(move |d| {
        !allow.iter().any(|a| a.addr.is_ipv4() == d.addr.is_ipv4() && a.len > d.len && d.contains(a.addr))
    })
}

/// Sources that are never a real client: unspecified, "this network" (0/8), limited broadcast,
/// multicast, reserved 240/4, and loopback where it can only be forged.
pub fn is_martian(ip: IpAddr, loopback_is_martian: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_martian(v4, loopback_is_martian),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_martian(v4, loopback_is_martian),
            None => v6.is_unspecified() || v6.is_multicast() || (loopback_is_martian && v6.is_loopback()),
        },
    }
}

fn v4_martian(v4: Ipv4Addr, loopback_is_martian: bool) -> bool {
    v4.octets()[0] == 0
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.octets()[0] >= 240
        || (loopback_is_martian && v4.is_loopback())
}

fn mapped(v4: Ipv4Addr) -> u128 {
    0xFFFF_0000_0000 | u128::from(u32::from(v4))
}

fn as_v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => mapped(v4),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_v6_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

fn mask(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        128.. => bits,
        n => bits & !(u128::MAX >> n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn containment_respects_family_and_length() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.1.2.3")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(!c("10.0.0.0/8").contains(ip("::a00:1")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(c("0.0.0.0/0").contains(ip("192.0.2.1")));
    }

    #[test]
    fn prefilter_keeps_denies_an_allow_of_their_family_carves_into() {
        let allow = cidrs(&["10.1.0.0/16", "2001:db8:1::/48", "0.0.0.0/0"]);
        let deny = cidrs(&["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "::ffff:0:0/96", "10.1.0.0/16"]);
        let pushed: Vec<String> = prefilter_denies(&allow, &deny).map(|c| c.to_string()).collect();
        // 10/8 and 2001:db8::/32 each hold a longer allow; ::ffff:0:0/96 holds IPv4 allows only
        // in the mapped space, which the filter's IPv6 table never sees; an equal-length allow loses.
        assert_eq!(pushed, ["192.0.2.0/24", "::ffff:0.0.0.0/96", "10.1.0.0/16"]);
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("192.0.2.0/24".parse::<Cidr>().unwrap().len, 24);
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().len, 128);
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        let e = "192.0.2.1/24".parse::<Cidr>().unwrap_err();
        assert!(e.0.contains("did you mean 192.0.2.0/24"), "{e}");
    }

    #[test]
    fn issue_example_denies_the_listed_network() {
        let acl = AccessList::new(&cidrs(&["0.0.0.0/0", "::/0"]), &cidrs(&["192.0.2.0/24"]), false);
        assert_eq!(acl.check(ip("192.0.2.7")), AccessVerdict::Deny);
        assert_eq!(acl.check(ip("::ffff:192.0.2.7")), AccessVerdict::Deny);
        assert_eq!(acl.check(ip("198.51.100.7")), AccessVerdict::Allow);
        assert_eq!(acl.check(ip("2001:db8::1")), AccessVerdict::Allow);
    }

    #[test]
    fn most_specific_rule_wins_and_deny_wins_ties() {
        let acl =
            AccessList::new(&cidrs(&["10.0.0.0/8", "10.1.2.0/24"]), &cidrs(&["10.1.0.0/16", "10.9.0.0/16"]), false);
        assert_eq!(acl.check(ip("10.2.0.1")), AccessVerdict::Allow);
        assert_eq!(acl.check(ip("10.1.9.9")), AccessVerdict::Deny);
        assert_eq!(acl.check(ip("10.1.2.3")), AccessVerdict::Allow);
        assert_eq!(acl.check(ip("11.0.0.1")), AccessVerdict::NotAllowed);
        assert_eq!(acl.check(ip("2001:db8::1")), AccessVerdict::NotAllowed);
        let tie = AccessList::new(&cidrs(&["10.0.0.0/8"]), &cidrs(&["10.0.0.0/8"]), false);
        assert_eq!(tie.check(ip("10.0.0.1")), AccessVerdict::Deny);
    }

    #[test]
    fn row20_martians() {
        let acl = AccessList::allow_all(true);
        for m in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "127.0.0.1",
            "::",
            "::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(acl.check(ip(m)), AccessVerdict::Martian, "{m}");
        }
        let sockets = AccessList::allow_all(false);
        assert_eq!(sockets.check(ip("127.0.0.1")), AccessVerdict::Allow, "local clients over sockets are real");
        assert_eq!(sockets.check(ip("::1")), AccessVerdict::Allow);
        assert_eq!(sockets.check(ip("224.0.0.1")), AccessVerdict::Martian);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Cidr>();
        }

        #[test]
        fn display_round_trips(bits in any::<u32>(), len in 0u8..=32) {
            let base = Ipv4Addr::from(bits & !u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
            let c = Cidr { addr: IpAddr::V4(base), len };
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
            prop_assert!(c.contains(IpAddr::V4(Ipv4Addr::from(bits))));
        }
    }
}
