//! The request frames the frame-path benchmarks answer (included by the bench targets with
//! `#[path]`): a batch of 64 in one UMEM-like buffer of 2 KiB frames.

use std::hint::black_box;

use stratum_proto::frame::{checksum, parse_frame, write_reply, FrameVerdict};
use stratum_proto::{respond, NoAuth, NtpPacket, NtpTimestamp, RxMeta, ServeAll, ServerSnapshot};

pub(crate) const FRAME_SIZE: usize = 2048;
pub(crate) const BATCH: usize = 64;

/// An Ethernet/IPv4/UDP NTP request from 10.0.x.y:40000+i to 192.0.2.1:123, or with `v6` an
/// Ethernet/IPv6/UDP one from 2001:db8::x:y to 2001:db8::1.
pub(crate) fn request_frame(i: usize, v6: bool) -> Vec<u8> {
    let ntp = NtpPacket::client_request(4, NtpTimestamp::from_parts(0xEC00_0010, i as u32)).to_bytes();
    let udp_len = (8 + ntp.len()) as u16;
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if v6 {
        f.extend_from_slice(&[0x86, 0xDD, 0x60, 0, 0, 0]);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (i >> 8) as u8, i as u8]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + udp_len;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
        ip[16..20].copy_from_slice(&[192, 0, 2, 1]);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&(40000 + i as u16).to_be_bytes());
    f.extend_from_slice(&123u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]); // partial/absent checksum, as from a local socket over veth
    f.extend_from_slice(&ntp);
    f
}

/// One batch as the AF_XDP worker's user space answers it: refill the batch (the kernel's copy
/// into the UMEM, not ours, but cheap next to it), then per frame classify it, decide and write
/// the NTP reply, and turn the frame into the reply in place. Returns the reply bytes.
#[inline(never)]
pub(crate) fn answer_batch(umem: &mut [u8], frames: &[Vec<u8>], snap: &ServerSnapshot, noise: &mut u64) -> usize {
    for (i, f) in frames.iter().enumerate() {
        umem[i * FRAME_SIZE..i * FRAME_SIZE + f.len()].copy_from_slice(f);
    }
    let mut sent = 0usize;
    for (i, f) in frames.iter().enumerate() {
        let frame = &mut umem[i * FRAME_SIZE..i * FRAME_SIZE + f.len()];
        let FrameVerdict::Ntp(parsed) = parse_frame(black_box(frame), 123) else { continue };
        *noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1);
        let rx = RxMeta { client: parsed.source, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise: *noise };
        let payload = &mut frame[parsed.payload()..parsed.payload() + parsed.payload_len];
        let verdict =
            respond(payload, rx, snap, &mut ServeAll, &mut NoAuth, || NtpTimestamp::from_parts(0xEC00_0011, 0x100));
        if let Some(len) = verdict.reply_len() {
            sent += write_reply(frame, &parsed, len).unwrap_or(0);
        }
    }
    sent
}
