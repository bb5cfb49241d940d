//! Flash bits: why a reply was not used, one bit per check (as ntpd's `flash` shows them).

use core::fmt;

/// A set of failed on-wire and peer checks. Empty means the reply passed all of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flash(u16);

impl Flash {
    /// Nothing failed.
    pub const NONE: Self = Self(0);
    /// A second copy of a reply already used (its origin is a request already answered).
    pub const DUPLICATE: Self = Self(1 << 0);
    /// Its origin timestamp is not our outstanding request's transmit timestamp: stale, spoofed
    /// or foreign (a kiss-o'-death among them, which is then ignored).
    pub const BOGUS: Self = Self(1 << 1);
    /// A receive or transmit timestamp is zero.
    pub const ZERO_TIMESTAMP: Self = Self(1 << 2);
    /// Shorter than a header, not mode 4, or not version 4.
    pub const MALFORMED: Self = Self(1 << 3);
    /// The upstream says it is not synchronised: LI = 3 or stratum 16 and above.
    pub const UNSYNCHRONISED: Self = Self(1 << 4);
    /// Stratum 15: we would serve 16.
    pub const STRATUM: Self = Self(1 << 5);
    /// The upstream's root distance plus half our delay is over the limit (1.5 s).
    pub const DISTANCE: Self = Self(1 << 6);
    /// A loop: the upstream's refid is one of our own addresses (it is synchronised to us).
    pub const LOOP: Self = Self(1 << 7);

    const NAMES: [(Self, &'static str); 8] = [
        (Self::DUPLICATE, "duplicate"),
        (Self::BOGUS, "bogus"),
        (Self::ZERO_TIMESTAMP, "zero-timestamp"),
        (Self::MALFORMED, "malformed"),
        (Self::UNSYNCHRONISED, "unsynchronised"),
        (Self::STRATUM, "stratum"),
        (Self::DISTANCE, "distance"),
        (Self::LOOP, "loop"),
    ];

    /// The raw bits (for a metric or JSON).
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True when no check failed.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the set bits, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().filter(move |(bit, _)| self.contains(*bit)).map(|(_, name)| name)
    }
}

impl core::ops::BitOr for Flash {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for Flash {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Writes the names joined by `,`, or `ok` when empty.
impl fmt::Display for Flash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("ok");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Flash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_each_bit() {
        assert_eq!(Flash::NONE.to_string(), "ok");
        assert_eq!((Flash::LOOP | Flash::DISTANCE).to_string(), "distance,loop");
        let mut f = Flash::NONE;
        f |= Flash::BOGUS;
        assert!(f.contains(Flash::BOGUS) && !f.contains(Flash::LOOP));
        assert_eq!(f.bits(), 2);
    }
}
