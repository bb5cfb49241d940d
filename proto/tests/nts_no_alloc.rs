//! An NTS request through respond() must not allocate either: the cookie opened, the
//! authenticator checked, the reply sealed around fresh cookies, and the NAK, over a few thousand
//! requests, with a counting global allocator; with AES-SIV-CMAC-256 and AES-128-GCM-SIV clients.

use stratum_proto::{respond, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;
#[path = "../benches/common/nts.rs"]
mod nts;
use nts::{clients, master, nts_request, Nts};

#[test]
fn nts_requests_do_not_allocate() {
    let snap = ServerSnapshot::unsynchronized(-20);
    let master = master();
    let [(_, keys), (_, gcm)] = clients();
    let mut bad_cookie = nts_request(&master, &keys, 0);
    bad_cookie[100] ^= 1;
    let inputs = [
        nts_request(&master, &keys, 0),
        nts_request(&master, &keys, 3),
        bad_cookie,
        nts_request(&master, &gcm, 0),
        nts_request(&master, &gcm, 3),
    ];
    let mut auth = Nts::new(master);
    let client = "203.0.113.5:123".parse().unwrap();
    let mut scratch = vec![0u8; 2048];
    let before = allocations();
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
    assert_eq!(allocations() - before, 0, "an NTS request allocated");
}
