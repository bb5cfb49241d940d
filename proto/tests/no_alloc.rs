//! respond() must not allocate: a counting global allocator watches a few thousand requests of
//! every kind (answered, KoD, each drop reason).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use stratum_proto::server::respond::ClientRequest;
use stratum_proto::{
    respond, AdmissionPolicy, AdmitAction, KissCode, NtpPacket, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct KodEveryOther(bool);
impl AdmissionPolicy for KodEveryOther {
    fn admit(&mut self, _: &RxMeta, _: &ClientRequest) -> AdmitAction {
        self.0 = !self.0;
        if self.0 {
            AdmitAction::Kod { code: KissCode::Rate, poll: 6 }
        } else {
            AdmitAction::Serve
        }
    }
}

#[test]
fn respond_does_not_allocate() {
    let snap = ServerSnapshot::unsynchronized(-20);
    let good = NtpPacket::client_request(4, NtpTimestamp::from_bits(42)).to_bytes();
    let mut inputs: Vec<Vec<u8>> = vec![good.to_vec(), good[..20].to_vec(), vec![0u8; 1500]];
    for first_byte in [0x00, 0x0b, 0x23, 0x26, 0x27, 0x3b] {
        let mut p = good.to_vec();
        p[0] = first_byte;
        inputs.push(p);
    }
    let mut with_ext = good.to_vec();
    with_ext.extend([0x01, 0x04, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    inputs.push(with_ext);
    let client = "203.0.113.5:123".parse().unwrap();
    let mut scratch = vec![0u8; 2048];
    let mut kod = KodEveryOther(false);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..4000u64 {
        let input = &inputs[i as usize % inputs.len()];
        let buf = &mut scratch[..input.len()];
        buf.copy_from_slice(input);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_bits(i), noise: i };
        if i % 2 == 0 {
            std::hint::black_box(respond(buf, rx, &snap, &mut ServeAll, || NtpTimestamp::from_bits(i)));
        } else {
            std::hint::black_box(respond(buf, rx, &snap, &mut kod, || NtpTimestamp::from_bits(i)));
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "respond() allocated");
}
