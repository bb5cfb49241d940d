//! parse -> emit -> parse is the identity on any 48 bytes (soundness of the header codec).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::NtpPacket;

fuzz_target!(|bytes: [u8; 48]| {
    let packet = NtpPacket::parse(&bytes).expect("48 bytes always parse");
    assert_eq!(packet.to_bytes(), bytes);
    assert_eq!(NtpPacket::parse(&packet.to_bytes()), Some(packet));
});
