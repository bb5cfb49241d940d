//! `load --nts-ke` per request must not allocate (issue 16): the AF_XDP engine's stamp of an NTS
//! request frame (renumbered, sealed again, checksums) and the reply check both engines use
//! (`nts::check_load_reply`, the authenticator opened in a stack buffer), a few thousand times
//! with a counting global allocator, each reply made by stratumd's own NTS server half in a stack
//! buffer and checked authentic.

use stratum_bench::nts::{check_load_reply, load_uid, request, NtsReplyError};
use stratum_bench::xdp::frame::{MacAddr, RequestTemplate};
use stratum_proto::frame::{parse_frame, FrameVerdict};
use stratum_proto::nts::server::{check_request, write_reply, FreshCookies, NtsCheck};
use stratum_proto::nts::{ClientKeys, KeySet, MasterKey, AEAD_AES_SIV_CMAC_256, COOKIE_LEN};
use stratum_proto::NtpTimestamp;

#[path = "../../proto/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[test]
fn an_nts_load_request_and_its_reply_check_do_not_allocate() {
    let master = KeySet::new(MasterKey { id: 2, key: [0x22; 32] }, 3);
    let keys = ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC1; 32], s2c: [0x51; 32] };
    let mut cookie = [0u8; COOKIE_LEN];
    assert!(master.seal(&keys, &[3; 16], &mut cookie));
    let prefix = [0x5A; 24];
    let first = request(&keys.c2s, &cookie, &load_uid(&prefix, &[0; 8]), NtpTimestamp::ZERO, 0, &[4; 16]);
    let target = "10.9.0.2:123".parse().unwrap();
    let (ours, theirs) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let template = RequestTemplate::nts(ours, theirs, target, 40123, &first).unwrap();
    let mut frame = template.bytes().to_vec();

    let mut authentic = 0;
    let mut fresh = FreshCookies::default();
    let mut run = |seq: u64| {
        let transmit = ((0x1234u64 << 32) | seq).to_be_bytes();
        template.stamp_nts(&mut frame, 0x0AC8_0001 + u128::from(seq % 1000), transmit, &keys.c2s);
        // The server's half, in a stack buffer: the request verified, the reply sealed in place.
        let FrameVerdict::Ntp(p) = parse_frame(&frame, 123) else { panic!("not an NTP request") };
        let mut buf = [0u8; 512];
        let len = frame.len() - p.payload();
        buf[..len].copy_from_slice(&frame[p.payload()..]);
        let NtsCheck::Verified(v) = check_request(&mut buf[..len], &master, &mut fresh, || [8; 16]) else {
            panic!("verified")
        };
        let n = write_reply(&mut buf, len, &v, &fresh, &[7; 16]).expect("a reply");
        let uid = load_uid(&prefix, &transmit);
        assert_eq!(check_load_reply(&keys.s2c, &buf[..n], &uid), Ok(()));
        assert_eq!(check_load_reply(&keys.c2s, &buf[..n], &uid), Err(NtsReplyError::Authenticator));
        authentic += 1;
    };
    run(0); // anything lazily set up on first use
    let before = allocations();
    for seq in 1..3000 {
        run(seq);
    }
    assert_eq!(allocations() - before, 0, "allocations over 2999 NTS requests and reply checks");
    assert_eq!(authentic, 3000);
}
