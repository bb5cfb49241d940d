//! Any frame: classifying it never reads past it, and rewriting an NTP request into its reply keeps
//! inside the buffer, never grows it, and produces a frame that parses back as the mirror image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::frame::{parse_frame, write_reply, FrameVerdict};

fuzz_target!(|input: (u16, u8, Vec<u8>)| {
    let (port, reply_len, bytes) = input;
    let mut frame = bytes.clone();
    let FrameVerdict::Ntp(request) = parse_frame(&frame, port) else { return };
    assert!(request.payload() + request.payload_len <= frame.len());
    let request_destination = request.destination(&frame).expect("a parsed frame holds its destination");
    let Some(len) = write_reply(&mut frame, &request, usize::from(reply_len)) else { return };
    assert!(len <= bytes.len());
    if let FrameVerdict::Ntp(reply) = parse_frame(&frame[..len], request.source.port()) {
        assert_eq!((reply.source, reply.destination(&frame[..len])), (request_destination, Some(request.source)));
    }
});
