//! respond() must not allocate: a counting global allocator watches a few thousand requests of
//! every kind (answered, KoD, each drop reason).

use stratum_proto::server::respond::ClientRequest;
use stratum_proto::{
    respond, AdmissionPolicy, AdmitAction, KissCode, NoAuth, NtpPacket, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot,
};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;
#[path = "../benches/common/interleave.rs"]
mod interleave;
use interleave::Shared;

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

    let before = allocations();
    for i in 0..4000u64 {
        let input = &inputs[i as usize % inputs.len()];
        let buf = &mut scratch[..input.len()];
        buf.copy_from_slice(input);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_bits(i), noise: i };
        if i % 2 == 0 {
            std::hint::black_box(respond(buf, rx, &snap, &mut ServeAll, &mut NoAuth, || NtpTimestamp::from_bits(i)));
        } else {
            std::hint::black_box(respond(buf, rx, &snap, &mut kod, &mut NoAuth, || NtpTimestamp::from_bits(i)));
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "respond() allocated");
}

/// Signed requests (a good MAC, a bad one, an unknown key) are checked and answered, signed or
/// with a crypto-NAK, without allocating: the keys are prepared once, before.
#[test]
fn authenticated_requests_do_not_allocate() {
    use stratum_proto::auth::{KeyTable, KeyType, SymmetricKey};
    let snap = ServerSnapshot::unsynchronized(-20);
    let key = SymmetricKey::new(7, KeyType::Aes128Cmac, &[1; 16]).unwrap();
    let sha = SymmetricKey::new(8, KeyType::Sha1, b"secret").unwrap();
    let mut keys = KeyTable::new(vec![key.clone(), sha.clone()]).unwrap();
    let mut inputs = Vec::new();
    for (k, corrupt) in [(&key, false), (&sha, false), (&key, true)] {
        let mut p = NtpPacket::client_request(4, NtpTimestamp::from_bits(42)).to_bytes().to_vec();
        p.resize(48 + 4 + k.kind().digest_len(), 0);
        k.sign(&mut p, 48).unwrap();
        if corrupt {
            p[55] ^= 1;
        }
        inputs.push(p);
    }
    let client = "203.0.113.5:123".parse().unwrap();
    let mut scratch = vec![0u8; 2048];
    let before = allocations();
    for i in 0..3000u64 {
        let input = &inputs[i as usize % inputs.len()];
        let buf = &mut scratch[..input.len()];
        buf.copy_from_slice(input);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_bits(i), noise: i };
        let v = std::hint::black_box(respond(buf, rx, &snap, &mut ServeAll, &mut keys, || NtpTimestamp::from_bits(i)));
        assert!(v.reply_len().is_some());
    }
    assert_eq!(allocations() - before, 0, "respond() allocated for a signed request");
}

/// The client side a load generator (and, next, the upstream poller) runs per request and reply:
/// building a request, the on-wire checks, the numbered-reply checks and offset/delay, over
/// good replies and bad ones alike, must not allocate either.
#[test]
fn the_client_side_does_not_allocate() {
    use stratum_proto::client::{
        check_numbered_reply, check_reply, classify, numbered_transmit, origin_nonce, request, Timestamps,
    };
    let snap = ServerSnapshot::unsynchronized(-20);
    let client = "203.0.113.5:123".parse().unwrap();
    let before = allocations();
    for i in 0..4000u32 {
        let t1 = numbered_transmit(0x5eed, i);
        let mut buf = request(6, -20, t1);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_bits(u64::from(i) << 20), noise: 0 };
        let t3 = NtpTimestamp::from_bits((u64::from(i) << 20) + 7);
        let verdict = std::hint::black_box(respond(&mut buf, rx, &snap, &mut ServeAll, &mut NoAuth, || t3));
        let len = verdict.reply_len().expect("a well-formed request is answered");
        // Every fourth reply damaged: a wrong origin, then a short one, then a wrong mode.
        match i % 4 {
            1 => buf[24] ^= 1,
            2 => buf[0] = 0x23,
            _ => {}
        }
        let reply = &buf[..if i % 4 == 3 { 20 } else { len }];
        if let Ok(h) = std::hint::black_box(check_reply(reply, t1)) {
            let class = classify(&h);
            let ts = Timestamps::of_reply(t1, &h, NtpTimestamp::from_bits((u64::from(i) << 20) + 9));
            let _ = std::hint::black_box((class, ts.offset(), ts.delay(), ts.check_order(-20)));
        }
        let _ = std::hint::black_box((origin_nonce(reply), check_numbered_reply(reply, 0x5eed)));
    }
    let after = allocations();
    assert_eq!(after - before, 0, "the client side allocated");
}

#[test]
fn the_rate_limiter_does_not_allocate_after_new() {
    use std::hint::black_box;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use stratum_proto::server::ratelimit::{RateLimitConfig, RateLimiter};

    // Small enough to churn: inserts, evictions, limited and sampled requests all happen.
    let l = RateLimiter::new(&RateLimitConfig { clients: 1024, burst: 2, kod: 1, ..Default::default() }, [1, 2]);
    let before = allocations();
    for i in 0..20_000u32 {
        let v4 = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i % 3000));
        let v6 = IpAddr::V6(Ipv6Addr::from(u128::from(i % 500) << 64 | 0x2001_0db8 << 96));
        let now = NtpTimestamp::from_parts(3_900_000_000 + i / 1000, 0);
        let random = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let key = l.key(v4);
        black_box(l.key_address(&key));
        black_box(l.check_key(key, now, random));
        black_box(l.check(v6, now, random.rotate_left(17)));
    }
    assert_eq!(allocations(), before, "the limiter allocated after new()");
}

/// Interleaved mode: an xleave client's requests, each quoting the last reply's receive
/// timestamp, take and save entries of the shared store (and stamps replace T3s) without
/// allocating: the store's table is allocated once, when made.
#[test]
fn interleaved_requests_do_not_allocate() {
    use stratum_proto::server::interleaved::InterleavedStore;
    use stratum_proto::server::respond::respond_with;
    let snap = ServerSnapshot::unsynchronized(-20);
    let store = InterleavedStore::new(1024);
    let client = "203.0.113.5:123".parse().unwrap();
    let mut origin = NtpTimestamp::ZERO;
    let mut interleaved = 0;
    let before = allocations();
    for i in 1..3000u64 {
        let t = NtpTimestamp::from_parts(0xE000_0000 + i as u32, 0);
        let mut buf = NtpPacket::client_request(4, t).to_bytes();
        buf[24..32].copy_from_slice(&origin.to_be_bytes());
        buf[32..40].copy_from_slice(&NtpTimestamp::from_parts(0xE000_0000 + i as u32, 7).to_be_bytes());
        let rx = RxMeta { client, rx_time: t, noise: i };
        let v = respond_with(&mut buf, rx, &snap, &mut ServeAll, &mut NoAuth, &mut Shared(&store), || t);
        std::hint::black_box(v);
        let reply = NtpPacket::parse(&buf).unwrap();
        interleaved += usize::from(reply.origin_timestamp != t);
        origin = reply.receive_timestamp;
        store.update_tx(origin, t);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "interleaved respond_with() allocated");
    assert!(interleaved > 2900, "{interleaved} interleaved replies");
}
