//! Any datagram, from any port, at any time: respond() never panics, never grows the packet,
//! leaves a dropped request untouched, and a reply echoes the client's transmit timestamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::{respond, NoAuth, NtpPacket, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot};

fuzz_target!(|input: (u16, u64, u64, Vec<u8>)| {
    let (port, rx_bits, noise, bytes) = input;
    let mut buf = bytes.clone();
    let rx = RxMeta { client: ([198, 51, 100, 7], port).into(), rx_time: NtpTimestamp::from_bits(rx_bits), noise };
    let snapshot = ServerSnapshot::unsynchronized(-20);
    let verdict = respond(&mut buf, rx, &snapshot, &mut ServeAll, &mut NoAuth, || {
        NtpTimestamp::from_bits(rx_bits.wrapping_add(1))
    });
    match verdict.reply_len() {
        Some(len) => {
            assert!(len <= bytes.len());
            let reply = NtpPacket::parse(&buf[..len]).expect("a reply parses");
            assert_eq!(reply.origin_timestamp.to_be_bytes()[..], bytes[40..48]);
        }
        None => assert_eq!(buf, bytes),
    }
});
