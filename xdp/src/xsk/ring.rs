//! The four single-producer, single-consumer rings an AF_XDP socket shares with the kernel.
//!
//! Each ring is a power-of-two array of entries plus a producer and a consumer index (free-running
//! u32s, masked on use) and a flags word. We produce on the fill and TX rings and consume the RX
//! and completion rings; the kernel does the opposite. Indices are published with release stores
//! and read with acquire loads, as libbpf's xsk.h does, and each side caches the other's index so a
//! batch touches the shared cache lines once.

use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, Ordering};

use super::mmap::Mmap;

/// Where the ring's parts are inside its mapping (the kernel's `xdp_ring_offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingOffsets {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(o: libc::xdp_ring_offset) -> Self {
        Self { producer: o.producer, consumer: o.consumer, desc: o.desc, flags: o.flags }
    }
}

impl RingOffsets {
    /// Bytes to map for a ring of `size` entries of `T`; None when the kernel's offset is so
    /// large that the length does not fit in an address (it is checked, never wrapped).
    pub(crate) fn map_len<T>(&self, size: u32) -> Option<usize> {
        map_len(self.desc, size, size_of::<T>())
    }
}

/// `desc + size * entry`, in checked arithmetic: the offset comes from the kernel.
pub(crate) fn map_len(desc: u64, size: u32, entry: usize) -> Option<usize> {
    usize::try_from(desc).ok()?.checked_add((size as usize).checked_mul(entry)?)
}

/// Whether a 4-byte index at `at` lies inside `len` bytes, in checked arithmetic.
fn index_fits(at: u64, len: usize) -> bool {
    usize::try_from(at).ok().and_then(|a| a.checked_add(4)).is_some_and(|end| end <= len)
}

/// The memory a ring lives in: the kernel's mapping, or (in tests) our own buffer playing the kernel.
#[derive(Debug)]
pub(crate) enum Region {
    Mapped(#[allow(dead_code)] Mmap),
    #[cfg(test)]
    Owned(Box<[u64]>),
}

impl Region {
    fn base_and_len(&self) -> (*mut u8, usize) {
        match self {
            Region::Mapped(m) => (m.as_ptr(), m.len()),
            #[cfg(test)]
            Region::Owned(b) => (b.as_ptr() as *mut u8, b.len() * 8),
        }
    }
}

/// The raw view shared by both ring directions; every pointer is inside `region` (checked once in
/// [`RawRing::new`]) and stays valid while `region` lives.
#[derive(Debug)]
struct RawRing<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    _region: Region,
    _entries: PhantomData<T>,
}

// SAFETY: the ring is used by one thread at a time (it is moved, never shared, between threads);
// the kernel is the other party and synchronises through the atomic indices.
unsafe impl<T: Send> Send for RawRing<T> {}

impl<T: Copy> RawRing<T> {
    fn new(region: Region, offsets: RingOffsets, size: u32) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("AF_XDP ring layout: {what}"));
        if !size.is_power_of_two() {
            return Err(bad("size is not a power of two"));
        }
        let (base, len) = region.base_and_len();
        for (name, at) in [("producer", offsets.producer), ("consumer", offsets.consumer), ("flags", offsets.flags)] {
            if at % 4 != 0 || !index_fits(at, len) {
                return Err(bad(name));
            }
        }
        if offsets.desc % align_of::<T>() as u64 != 0 || offsets.map_len::<T>(size).is_none_or(|need| need > len) {
            return Err(bad("descriptors"));
        }
        let at = |offset: u64| {
            // SAFETY: each offset passed here was just checked to lie inside the region, aligned.
            unsafe { base.add(offset as usize) }
        };
        Ok(Self {
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            flags: at(offsets.flags).cast(),
            entries: at(offsets.desc).cast(),
            mask: size - 1,
            size,
            _region: region,
            _entries: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in bounds and aligned in new(); the region outlives &self.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as producer().
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as producer().
        unsafe { &*self.flags }.load(Ordering::Relaxed)
    }

    fn read(&self, index: u32) -> T {
        // SAFETY: index & mask < size, and new() checked size entries fit. The kernel does not write
        // an entry between publishing it and our consumer index passing it.
        unsafe { self.entries.add((index & self.mask) as usize).read_volatile() }
    }

    fn write(&mut self, index: u32, value: T) {
        // SAFETY: as read(); the kernel does not read an entry before our producer index covers it.
        unsafe { self.entries.add((index & self.mask) as usize).write_volatile(value) }
    }
}

/// A ring we produce on (fill: frame addresses; TX: descriptors).
#[derive(Debug)]
pub struct ProducerRing<T> {
    raw: RawRing<T>,
    cached_producer: u32,
    /// The consumer index plus the ring size: `cached_consumer - cached_producer` is free space.
    cached_consumer: u32,
}

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn new(region: Region, offsets: RingOffsets, size: u32) -> io::Result<Self> {
        let raw = RawRing::new(region, offsets, size)?;
        let cached_producer = raw.producer().load(Ordering::Relaxed);
        let cached_consumer = raw.consumer().load(Ordering::Acquire).wrapping_add(size);
        Ok(Self { raw, cached_producer, cached_consumer })
    }

    /// Free entries, looking at the kernel's consumer index only when the cached view has fewer
    /// than `wanted`.
    pub fn free(&mut self, wanted: u32) -> u32 {
        let free = self.cached_consumer.wrapping_sub(self.cached_producer);
        if free >= wanted {
            return free;
        }
        self.cached_consumer = self.raw.consumer().load(Ordering::Acquire).wrapping_add(self.raw.size);
        self.cached_consumer.wrapping_sub(self.cached_producer)
    }

    /// Writes as many of `items` as fit and publishes them with one release store. Returns how
    /// many went in (the rest are the caller's to keep).
    pub fn push(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u32) as usize).min(items.len());
        for (i, item) in items[..n].iter().enumerate() {
            self.raw.write(self.cached_producer.wrapping_add(i as u32), *item);
        }
        if n > 0 {
            self.cached_producer = self.cached_producer.wrapping_add(n as u32);
            self.raw.producer().store(self.cached_producer, Ordering::Release);
        }
        n
    }

    /// Pushes what waits in `spare` first, then `items`; whatever does not fit joins `spare`.
    /// (The kernel publishes how far it has consumed a ring only now and then, so a fill ring can
    /// look full while frames it has taken come back on the RX ring: they wait in `spare` and go
    /// in with a later push, instead of leaving circulation.) Allocates nothing while `spare`
    /// has the capacity.
    pub fn push_or_keep(&mut self, items: &[T], spare: &mut Vec<T>) {
        if !spare.is_empty() {
            let n = self.push(spare);
            spare.drain(..n);
        }
        let n = self.push(items);
        spare.extend_from_slice(&items[n..]);
    }

    /// The kernel asked to be woken (a syscall) before it looks at this ring again.
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries published that the kernel has not taken yet (one atomic load).
    pub fn pending(&self) -> u32 {
        self.cached_producer.wrapping_sub(self.raw.consumer().load(Ordering::Acquire))
    }

    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

/// A ring we consume from (RX: descriptors; completion: frame addresses).
///
/// ProducerRing's mirror with the two indices' roles swapped (as libbpf's xsk_cons_* and xsk_prod_*):
/// two types, so a ring can only be used in its own direction.
#[derive(Debug)]
pub struct ConsumerRing<T> {
    raw: RawRing<T>,
    cached_producer: u32,
    cached_consumer: u32,
}

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn new(region: Region, offsets: RingOffsets, size: u32) -> io::Result<Self> {
        let raw = RawRing::new(region, offsets, size)?;
        let cached_consumer = raw.consumer().load(Ordering::Relaxed);
        let cached_producer = raw.producer().load(Ordering::Acquire);
        Ok(Self { raw, cached_producer, cached_consumer })
    }

    /// Entries ready, looking at the kernel's producer index only when the cached view has fewer
    /// than `wanted`.
    pub fn available(&mut self, wanted: u32) -> u32 {
        let ready = self.cached_producer.wrapping_sub(self.cached_consumer);
        if ready >= wanted {
            return ready;
        }
        self.cached_producer = self.raw.producer().load(Ordering::Acquire);
        self.cached_producer.wrapping_sub(self.cached_consumer)
    }

    /// Copies up to `out.len()` entries out and releases their slots to the kernel with one store.
    pub fn pop(&mut self, out: &mut [T]) -> usize {
        let n = (self.available(out.len() as u32) as usize).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            *slot = self.raw.read(self.cached_consumer.wrapping_add(i as u32));
        }
        if n > 0 {
            self.cached_consumer = self.cached_consumer.wrapping_add(n as u32);
            self.raw.consumer().store(self.cached_consumer, Ordering::Release);
        }
        n
    }

    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in our own memory, laid out like the kernel's (indices on separate cache lines), and
    /// a handle to play the kernel's side of it.
    const OFFSETS: RingOffsets = RingOffsets { producer: 0, consumer: 64, flags: 128, desc: 192 };

    fn region(size: u32) -> (Region, *mut u8) {
        let words = OFFSETS.map_len::<u64>(size).unwrap().div_ceil(8);
        let mut b = vec![0u64; words].into_boxed_slice();
        let base = b.as_mut_ptr() as *mut u8;
        (Region::Owned(b), base)
    }

    fn index(base: *mut u8, offset: u64) -> &'static AtomicU32 {
        // SAFETY: test-only; the region lives until the end of the test that made it.
        unsafe { &*(base.add(offset as usize) as *const AtomicU32) }
    }

    fn entry(base: *mut u8, size: u32, i: u32) -> *mut u64 {
        // SAFETY: test-only; i & (size - 1) is inside the descriptor array.
        unsafe { (base.add(OFFSETS.desc as usize) as *mut u64).add((i & (size - 1)) as usize) }
    }

    #[test]
    fn producer_fills_until_full_then_sees_consumed_slots() {
        let (r, base) = region(8);
        let mut ring = ProducerRing::<u64>::new(r, OFFSETS, 8).unwrap();
        assert_eq!(ring.push(&[1, 2, 3, 4, 5]), 5);
        assert_eq!(ring.push(&[6, 7, 8, 9, 10]), 3, "only 8 slots");
        assert_eq!(index(base, OFFSETS.producer).load(Ordering::Acquire), 8);
        assert_eq!(ring.push(&[11]), 0);
        // The kernel consumes three.
        for i in 0..3 {
            // SAFETY: test-only read of the slot.
            assert_eq!(unsafe { entry(base, 8, i).read() }, u64::from(i) + 1);
        }
        assert_eq!(ring.pending(), 8);
        index(base, OFFSETS.consumer).store(3, Ordering::Release);
        assert_eq!(ring.pending(), 5);
        assert_eq!(ring.push(&[11, 12, 13, 14]), 3);
        assert_eq!(ring.pending(), 8);
        index(base, OFFSETS.consumer).store(11, Ordering::Release);
        assert_eq!(ring.pending(), 0);
        // SAFETY: test-only read of the slot (index 8 wrapped onto slot 0).
        assert_eq!(unsafe { entry(base, 8, 8).read() }, 11);
    }

    #[test]
    fn what_does_not_fit_waits_in_spare_and_goes_in_first_next_time() {
        let (r, base) = region(4);
        let mut ring = ProducerRing::<u64>::new(r, OFFSETS, 4).unwrap();
        let mut spare = Vec::with_capacity(8);
        ring.push_or_keep(&[1, 2, 3], &mut spare);
        ring.push_or_keep(&[4, 5, 6], &mut spare);
        assert_eq!(spare, [5, 6]);
        // Nothing consumed: nothing goes in, and the new items wait behind the old ones.
        ring.push_or_keep(&[7], &mut spare);
        assert_eq!(spare, [5, 6, 7]);
        // Three consumed: the waiting ones go first, in order.
        index(base, OFFSETS.consumer).store(3, Ordering::Release);
        ring.push_or_keep(&[8], &mut spare);
        assert_eq!(spare, [8]);
        // SAFETY: test-only reads of slots 4, 5 and 6 (indices wrap onto 0, 1, 2).
        let slots: Vec<u64> = (4..7).map(|i| unsafe { entry(base, 4, i).read() }).collect();
        assert_eq!(slots, [5, 6, 7]);
    }

    #[test]
    fn consumer_sees_only_published_entries() {
        let (r, base) = region(4);
        let mut ring = ConsumerRing::<u64>::new(r, OFFSETS, 4).unwrap();
        let mut out = [0u64; 8];
        assert_eq!(ring.pop(&mut out), 0);
        for i in 0..3u32 {
            // SAFETY: test-only write of a slot the consumer does not own yet.
            unsafe { entry(base, 4, i).write(100 + u64::from(i)) };
        }
        index(base, OFFSETS.producer).store(2, Ordering::Release); // third not yet published
        assert_eq!(ring.pop(&mut out), 2);
        assert_eq!(&out[..2], &[100, 101]);
        assert_eq!(index(base, OFFSETS.consumer).load(Ordering::Acquire), 2);
        index(base, OFFSETS.producer).store(3, Ordering::Release);
        assert_eq!(ring.pop(&mut out[..1]), 1);
        assert_eq!(out[0], 102);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let (r, base) = region(4);
        index(base, OFFSETS.producer).store(u32::MAX - 1, Ordering::Relaxed);
        index(base, OFFSETS.consumer).store(u32::MAX - 1, Ordering::Relaxed);
        let mut prod = ProducerRing::<u64>::new(r, OFFSETS, 4).unwrap();
        assert_eq!(prod.push(&[1, 2, 3, 4, 5]), 4);
        assert_eq!(index(base, OFFSETS.producer).load(Ordering::Relaxed), 2);
        assert_eq!(prod.free(1), 0);
        assert_eq!(prod.pending(), 4);
        index(base, OFFSETS.consumer).store(2, Ordering::Relaxed);
        assert_eq!(prod.free(1), 4);
        assert_eq!(prod.pending(), 0);
    }

    #[test]
    fn need_wakeup_flag_is_read() {
        let (r, base) = region(4);
        let ring = ProducerRing::<u64>::new(r, OFFSETS, 4).unwrap();
        assert!(!ring.needs_wakeup());
        index(base, OFFSETS.flags).store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(ring.needs_wakeup());
    }

    #[test]
    fn bad_layouts_are_refused() {
        let (r, _) = region(4);
        assert!(ProducerRing::<u64>::new(r, OFFSETS, 3).is_err(), "not a power of two");
        let (r, _) = region(4);
        assert!(ProducerRing::<u64>::new(r, OFFSETS, 8).is_err(), "descriptors past the end");
        let (r, _) = region(4);
        let odd = RingOffsets { consumer: 66, ..OFFSETS };
        assert!(ConsumerRing::<u64>::new(r, odd, 4).is_err(), "misaligned index");
        // Offsets a broken or hostile kernel interface could give: refused, never wrapped around.
        for huge in [RingOffsets { producer: u64::MAX - 3, ..OFFSETS }, RingOffsets { desc: u64::MAX - 7, ..OFFSETS }] {
            let (r, _) = region(4);
            assert!(ConsumerRing::<u64>::new(r, huge, 4).is_err(), "{huge:?}");
        }
        assert_eq!(map_len(u64::MAX - 7, 4, 8), None);
        assert_eq!(map_len(64, 4, 16), Some(128));
    }
}
