//! An NTS request through respond() must not allocate either: the cookie opened, the
//! authenticator checked, the reply sealed around fresh cookies, and the NAK, over a few thousand
//! requests, with a counting global allocator; with AES-SIV-CMAC-256 and AES-128-GCM-SIV clients.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use stratum_proto::auth::{Authenticate, KeyRef, MacCheck};
use stratum_proto::nts::ef::{NTS_AUTHENTICATOR, NTS_COOKIE, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
use stratum_proto::nts::server::{check_request, write_reply, FreshCookies, NtsCheck, Verified};
use stratum_proto::nts::{
    Aead, AesGcmSiv128, AesSivCmac256, ClientKeys, KeySet, MasterKey, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256,
    COOKIE_LEN,
};
use stratum_proto::{respond, NtpPacket, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
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

/// A worker's NTS authenticator with counter nonces.
struct Nts {
    master: KeySet,
    n: u8,
    fresh: FreshCookies,
}

impl Authenticate for Nts {
    fn check(&mut self, _: &[u8], _: u32, _: &[u8]) -> MacCheck {
        MacCheck::Unsupported
    }
    fn sign(&mut self, _: KeyRef, _: &mut [u8], _: usize) -> Option<usize> {
        None
    }
    fn check_nts(&mut self, packet: &mut [u8]) -> NtsCheck {
        let n = &mut self.n;
        check_request(packet, &self.master, &mut self.fresh, || {
            *n = n.wrapping_add(1);
            [*n; 16]
        })
    }
    fn sign_nts(&mut self, buf: &mut [u8], len: usize, v: &Verified) -> Option<usize> {
        write_reply(buf, len, v, &self.fresh, &[9; 16])
    }
}

fn field(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = kind.to_be_bytes().to_vec();
    f.extend(((body.len() + 4) as u16).to_be_bytes());
    f.extend(body);
    f
}

fn request(master: &KeySet, keys: &ClientKeys, placeholders: usize) -> Vec<u8> {
    let mut cookie = [0u8; COOKIE_LEN];
    assert!(master.seal(keys, &[3; 16], &mut cookie));
    let mut p = NtpPacket::client_request(4, NtpTimestamp::from_bits(42)).to_bytes().to_vec();
    p.extend(field(UNIQUE_IDENTIFIER, &[0xAB; 32]));
    p.extend(field(NTS_COOKIE, &cookie));
    for _ in 0..placeholders {
        p.extend(field(NTS_COOKIE_PLACEHOLDER, &[0; COOKIE_LEN]));
    }
    let mut tag = [0u8; 16];
    let nonce: &[u8] = if keys.algorithm == AEAD_AES_128_GCM_SIV {
        assert!(AesGcmSiv128::seal(&keys.c2s[..16], &[1; 12], &p, &mut tag));
        &[1; 12]
    } else {
        assert!(AesSivCmac256::seal(&keys.c2s, &[1; 16], &p, &mut tag));
        &[1; 16]
    };
    let mut body = (nonce.len() as u16).to_be_bytes().to_vec();
    body.extend(16u16.to_be_bytes());
    body.extend(nonce);
    body.extend(tag);
    p.extend(field(NTS_AUTHENTICATOR, &body));
    p
}

#[test]
fn nts_requests_do_not_allocate() {
    let snap = ServerSnapshot::unsynchronized(-20);
    let master = KeySet::new(MasterKey { id: 1, key: [0x4D; 32] }, 3);
    let keys = ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC2; 32], s2c: [0x5C; 32] };
    let mut gcm = ClientKeys { algorithm: AEAD_AES_128_GCM_SIV, c2s: [0; 32], s2c: [0; 32] };
    gcm.c2s[..16].fill(0x2C);
    gcm.s2c[..16].fill(0xC5);
    let mut bad_cookie = request(&master, &keys, 0);
    bad_cookie[100] ^= 1;
    let inputs = [
        request(&master, &keys, 0),
        request(&master, &keys, 3),
        bad_cookie,
        request(&master, &gcm, 0),
        request(&master, &gcm, 3),
    ];
    let mut auth = Nts { master, n: 0, fresh: FreshCookies::default() };
    let client = "203.0.113.5:123".parse().unwrap();
    let mut scratch = vec![0u8; 2048];
    let before = ALLOCATIONS.with(Cell::get);
    for i in 0..3000u64 {
        let input = &inputs[i as usize % inputs.len()];
        let buf = &mut scratch[..input.len()];
        buf.copy_from_slice(input);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_bits(i), noise: i };
        let v = std::hint::black_box(respond(buf, rx, &snap, &mut ServeAll, &mut auth, || NtpTimestamp::from_bits(i)));
        let len = v.reply_len();
        assert!(len.is_some());
        if i % 5 != 2 {
            assert_eq!(len, Some(input.len()), "an authenticated reply, as long as its request");
        }
    }
    assert_eq!(ALLOCATIONS.with(Cell::get) - before, 0, "an NTS request allocated");
}
