//! The UMEM: one memory area cut into equal frames that the kernel and we hand back and forth by
//! address through the rings. Frame addresses are offsets into the area; a descriptor's address
//! points at packet data inside a frame (after the kernel's headroom), so the frame it belongs to
//! is the address rounded down to the frame size.

use std::io;
use std::os::fd::BorrowedFd;

use super::mmap::Mmap;
use super::sockopt;
use crate::meta::META_LEN;

/// Size of `struct xsk_tx_metadata`: the area in front of a TX frame where we ask for (and the
/// kernel returns) a transmit timestamp.
pub const TX_METADATA_LEN: u32 = 16;

/// Shape of a UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Bytes per frame: a power of two from 2048 to the page size (the kernel's aligned mode).
    pub frame_size: u32,
    pub frame_count: u32,
    /// Register a TX metadata area (for transmit timestamps) when the kernel supports it.
    pub tx_metadata: bool,
    /// Try huge pages for the area first.
    pub huge_pages: bool,
}

impl Default for UmemConfig {
    fn default() -> Self {
        Self { frame_size: 2048, frame_count: 4096, tx_metadata: true, huge_pages: false }
    }
}

/// An allocated UMEM area (registered with a socket by [`super::XskSocket::open`]).
#[derive(Debug)]
pub struct Umem {
    area: Mmap,
    frame_size: u32,
    frame_count: u32,
    /// TX metadata bytes the kernel accepted at registration (0: none).
    tx_metadata_len: u32,
}

impl Umem {
    pub fn new(config: &UmemConfig) -> io::Result<Self> {
        let size = config.frame_size;
        if !size.is_power_of_two() || !(2048..=4096).contains(&size) || config.frame_count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "UMEM frames must be 2048 or 4096 bytes and at least one (got {size} x {})",
                    config.frame_count
                ),
            ));
        }
        let len = size as usize * config.frame_count as usize;
        let area = Mmap::anonymous(len, config.huge_pages)?;
        Ok(Self { area, frame_size: size, frame_count: config.frame_count, tx_metadata_len: 0 })
    }

    /// Registers the area with an AF_XDP socket, with a TX metadata area when asked and the kernel
    /// has it (6.8+), else without.
    pub(crate) fn register(&mut self, fd: BorrowedFd<'_>, tx_metadata: bool) -> io::Result<()> {
        let mut reg = libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.area.len() as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        if tx_metadata {
            reg.flags = libc::XDP_UMEM_TX_METADATA_LEN;
            reg.tx_metadata_len = TX_METADATA_LEN;
            if sockopt::set(fd, libc::XDP_UMEM_REG, &reg).is_ok() {
                self.tx_metadata_len = TX_METADATA_LEN;
                return Ok(());
            }
            reg.flags = 0;
            reg.tx_metadata_len = 0;
        }
        sockopt::set(fd, libc::XDP_UMEM_REG, &reg)
    }

    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Bytes in front of TX data reserved for `struct xsk_tx_metadata` (0 when not registered).
    pub fn tx_metadata_len(&self) -> u32 {
        self.tx_metadata_len
    }

    /// The address of every frame, for the first fill of the rings.
    pub fn frames(&self) -> impl Iterator<Item = u64> {
        let size = u64::from(self.frame_size);
        (0..u64::from(self.frame_count)).map(move |i| i * size)
    }

    /// The frame an address (of data inside it) belongs to: what goes back on the fill ring.
    pub fn frame_of(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// `len` bytes at `addr`, if they lie inside one frame of the area.
    pub fn data(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let range = self.range(addr, len)?;
        // SAFETY: range is inside the live mapping; the frame is ours while we hold its descriptor
        // (the kernel writes a frame only between our fill and its RX descriptor).
        Some(unsafe { std::slice::from_raw_parts(self.area.as_ptr().add(range.0), range.1) })
    }

    /// As [`data`](Self::data), writable.
    pub fn data_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let range = self.range(addr, len)?;
        // SAFETY: as data(); &mut self makes this the only view of the area we hand out.
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(range.0), range.1) })
    }

    /// The XDP metadata area in front of received data at `addr` (written by the steering program,
    /// copied with the frame in copy mode). None when `addr` is too close to its frame's start.
    pub fn rx_metadata(&self, addr: u64) -> Option<[u8; META_LEN]> {
        let start = addr.checked_sub(META_LEN as u64)?;
        if self.frame_of(start) != self.frame_of(addr) {
            return None;
        }
        self.data(start, META_LEN as u32)?.try_into().ok()
    }

    /// Asks the kernel for a transmit timestamp of the frame at `addr` (set `XDP_TX_METADATA` in
    /// its descriptor's options). False when no TX metadata area is registered or fits.
    pub fn request_tx_timestamp(&mut self, addr: u64) -> bool {
        let Some(area) = self.tx_metadata_area(addr) else { return false };
        area.fill(0);
        area[..8].copy_from_slice(&u64::from(libc::XDP_TXMD_FLAGS_TIMESTAMP).to_ne_bytes());
        true
    }

    /// The transmit timestamp (ns of the kernel's or NIC's TAI clock) the kernel wrote for a
    /// completed frame whose descriptor asked for one.
    pub fn tx_timestamp(&self, addr: u64) -> Option<u64> {
        let area = self.data(self.tx_metadata_start(addr)?, self.tx_metadata_len)?;
        let stamp = u64::from_ne_bytes(area[8..16].try_into().ok()?);
        (stamp != 0).then_some(stamp)
    }

    fn tx_metadata_area(&mut self, addr: u64) -> Option<&mut [u8]> {
        let start = self.tx_metadata_start(addr)?;
        self.data_mut(start, self.tx_metadata_len)
    }

    /// Where the TX metadata of data at `addr` starts: in front of it, inside the same frame.
    fn tx_metadata_start(&self, addr: u64) -> Option<u64> {
        let len = self.tx_metadata_len;
        let start = addr.checked_sub(u64::from(len))?;
        (len > 0 && self.frame_of(start) == self.frame_of(addr)).then_some(start)
    }

    /// (offset, len) of `len` bytes at `addr` when they stay inside one frame of the area.
    fn range(&self, addr: u64, len: u32) -> Option<(usize, usize)> {
        let end = addr.checked_add(u64::from(len))?;
        let frame_end = self.frame_of(addr) + u64::from(self.frame_size);
        if end > frame_end || end > self.area.len() as u64 {
            return None;
        }
        Some((addr as usize, len as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem() -> Umem {
        Umem::new(&UmemConfig { frame_count: 4, ..UmemConfig::default() }).unwrap()
    }

    #[test]
    fn frames_are_laid_out_back_to_back() {
        let u = umem();
        assert_eq!(u.frames().collect::<Vec<_>>(), vec![0, 2048, 4096, 6144]);
        assert_eq!(u.frame_of(4096 + 256), 4096);
        assert_eq!(u.frame_of(2047), 0);
    }

    #[test]
    fn data_never_crosses_a_frame_or_the_area() {
        let mut u = umem();
        assert_eq!(u.data(256, 1792).map(<[u8]>::len), Some(1792));
        assert!(u.data(256, 1793).is_none(), "runs into the next frame");
        assert!(u.data(6144 + 2000, 100).is_none(), "runs off the area");
        assert!(u.data(u64::MAX - 10, 100).is_none(), "address overflow");
        u.data_mut(2048 + 300, 4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(u.data(2048 + 300, 4).unwrap(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rx_metadata_is_the_16_bytes_in_front_and_stays_in_the_frame() {
        let mut u = umem();
        let m = crate::meta::RxMetadata { rx_time_ns: 42, source: crate::meta::StampSource::Tai };
        u.data_mut(2048 + 256 - 16, 16).unwrap().copy_from_slice(&m.encode());
        assert_eq!(crate::meta::RxMetadata::decode(&u.rx_metadata(2048 + 256).unwrap()), Some(m));
        assert!(u.rx_metadata(2048 + 8).is_none(), "would reach into the previous frame");
        assert!(u.rx_metadata(8).is_none());
    }

    #[test]
    fn tx_timestamps_need_a_registered_area() {
        let mut u = umem();
        assert!(!u.request_tx_timestamp(256));
        assert_eq!(u.tx_timestamp(256), None);
        u.tx_metadata_len = TX_METADATA_LEN; // as if the kernel accepted it
        assert!(u.request_tx_timestamp(2048 + 256));
        assert_eq!(u.data(2048 + 240, 8).unwrap(), &u64::from(libc::XDP_TXMD_FLAGS_TIMESTAMP).to_ne_bytes());
        assert_eq!(u.tx_timestamp(2048 + 256), None, "not completed yet");
        u.data_mut(2048 + 248, 8).unwrap().copy_from_slice(&99u64.to_ne_bytes());
        assert_eq!(u.tx_timestamp(2048 + 256), Some(99));
    }

    #[test]
    fn bad_shapes_are_refused() {
        for (frame_size, frame_count) in [(1000, 4), (1024, 4), (8192, 4), (2048, 0)] {
            let c = UmemConfig { frame_size, frame_count, ..UmemConfig::default() };
            assert!(Umem::new(&c).is_err(), "{frame_size} x {frame_count}");
        }
    }
}
