//! The receive metadata the steering program writes in front of each redirected frame (mirror of
//! `src/bpf/meta.h`; change both together).

/// `magic` value that says the steering program wrote the area.
pub const META_MAGIC: u32 = 0x5354_524d;
/// `rx_time_ns` is the NIC's receive stamp (XDP metadata kfunc, device-bound program).
pub const META_HW: u32 = 0x1;
/// `rx_time_ns` is `bpf_ktime_get_tai_ns()` read at XDP entry.
pub const META_TAI: u32 = 0x2;
/// Bytes of metadata in front of the frame.
pub const META_LEN: usize = 16;

/// Where a frame's receive timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampSource {
    /// The NIC's clock (hardware stamp through the XDP metadata kfunc).
    Hardware,
    /// CLOCK_TAI read by the XDP program at entry.
    Tai,
}

/// One frame's receive metadata, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxMetadata {
    /// Nanoseconds since the epoch of the stamp's clock (TAI for both sources in practice).
    pub rx_time_ns: u64,
    pub source: StampSource,
}

impl RxMetadata {
    /// Decodes the `META_LEN` bytes in front of a frame; None when the program did not write them
    /// (wrong magic or flags), so the caller falls back to its own clock read.
    pub fn decode(area: &[u8; META_LEN]) -> Option<Self> {
        let rx_time_ns = u64::from_ne_bytes(area[0..8].try_into().ok()?);
        let flags = u32::from_ne_bytes(area[8..12].try_into().ok()?);
        let magic = u32::from_ne_bytes(area[12..16].try_into().ok()?);
        if magic != META_MAGIC {
            return None;
        }
        let source = match flags {
            META_HW => StampSource::Hardware,
            META_TAI => StampSource::Tai,
            _ => return None,
        };
        Some(Self { rx_time_ns, source })
    }

    /// The inverse of [`decode`](Self::decode) (tests and the load generator's reflector use it).
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut area = [0u8; META_LEN];
        area[0..8].copy_from_slice(&self.rx_time_ns.to_ne_bytes());
        let flags = match self.source {
            StampSource::Hardware => META_HW,
            StampSource::Tai => META_TAI,
        };
        area[8..12].copy_from_slice(&flags.to_ne_bytes());
        area[12..16].copy_from_slice(&META_MAGIC.to_ne_bytes());
        area
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for source in [StampSource::Hardware, StampSource::Tai] {
            let m = RxMetadata { rx_time_ns: 1_700_000_000_123_456_789, source };
            assert_eq!(RxMetadata::decode(&m.encode()), Some(m));
        }
    }

    #[test]
    fn unwritten_area_is_none() {
        assert_eq!(RxMetadata::decode(&[0; META_LEN]), None);
        let mut area = RxMetadata { rx_time_ns: 1, source: StampSource::Tai }.encode();
        area[8] = 3; // both flags
        assert_eq!(RxMetadata::decode(&area), None);
    }
}
