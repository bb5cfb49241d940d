//! Cost of one NTS request in respond(): the cookie opened with the master key, the authenticator
//! checked with C2S, and the reply sealed with S2C around fresh cookies (one, and one per
//! placeholder). Issue 16's budget is 500 ns of user-space work per NTS request; the plain
//! request is measured beside it. Each NTS case runs for a client whose keys are AES-SIV-CMAC-256
//! (`siv_cmac`) and then for one whose keys are AES-128-GCM-SIV (`gcm_siv`), back to back; the
//! cookies are AES-SIV-CMAC under the master key in both.

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use stratum_proto::nts::server::FreshCookies;
use stratum_proto::nts::siv::TagCheck;
use stratum_proto::nts::{Aead, AesGcmSiv128, AesSivCmac256, COOKIE_LEN};
use stratum_proto::{respond, NoAuth, NtpPacket, NtpTimestamp, RxMeta, ServeAll};

#[path = "common/fixture.rs"]
mod fixture;
use fixture::snapshot;
#[path = "common/nts.rs"]
mod nts;
use nts::{clients, master, nts_request, Nts};

fn bench_nts(c: &mut Criterion) {
    let snap = snapshot();
    let master = master();
    let keys = clients()[0].1.clone();
    let client: std::net::SocketAddr = "198.51.100.7:123".parse().unwrap();
    let mut group = c.benchmark_group("nts");
    group.throughput(Throughput::Elements(1));
    let plain = NtpPacket::client_request(4, NtpTimestamp::from_parts(0xEC00_0010, 0x1234_5678)).to_bytes();
    group.bench_function("basic_request", |b| {
        let mut buf = plain;
        b.iter(|| {
            buf = plain;
            let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise: 1 };
            black_box(respond(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut NoAuth, || {
                NtpTimestamp::from_parts(0xEC00_0011, 0x100)
            }))
        })
    });
    for (placeholders, (aead, keys)) in [0usize, 1, 7].into_iter().flat_map(|p| clients().map(|c| (p, c))) {
        let request = nts_request(&master, &keys, placeholders);
        let mut auth = Nts::new(master.clone());
        group.bench_function(format!("request_{}_cookies_{aead}", 1 + placeholders), |b| {
            let mut buf = request.clone();
            b.iter(|| {
                buf.copy_from_slice(&request);
                let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise: 1 };
                let v = respond(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut auth, || {
                    NtpTimestamp::from_parts(0xEC00_0011, 0x100)
                });
                assert_eq!(v.reply_len(), Some(request.len()));
                black_box(v)
            })
        });
    }
    group.finish();

    // The parts: a cookie opened with a prepared master key, one sealed, and the one-shot
    // AEAD with a client's key as the request's authenticator (192 bytes of AD, nothing to
    // decrypt) and the reply's (84 bytes of AD, one cookie field) use it.
    let mut parts = c.benchmark_group("nts_parts");
    let mut cookie = [0u8; COOKIE_LEN];
    assert!(master.seal(&keys, &[7; 16], &mut cookie));
    parts.bench_function("cookie_open", |b| b.iter(|| black_box(master.open(black_box(&cookie)))));
    parts.bench_function("cookie_seal", |b| {
        let mut out = [0u8; COOKIE_LEN];
        b.iter(|| black_box(master.seal(black_box(&keys), &[9; 16], &mut out)))
    });
    let ad = [0x42u8; 192];
    let mut tag = [0u8; 16];
    assert!(AesSivCmac256::seal(&keys.c2s, &[0x11; 16], &ad, &mut tag));
    parts.bench_function("c2s_open_192_ad", |b| {
        b.iter(|| {
            let mut t = tag;
            black_box(AesSivCmac256::open(black_box(&keys.c2s), &[0x11; 16], &ad, &mut t))
        })
    });
    // The C2S check with the reply's fresh cookies sealed in the same pass (what
    // check_request does for an AES-SIV-CMAC client), and the cookies alone.
    let mut fresh = FreshCookies::default();
    for n in [1, 8] {
        parts.bench_function(format!("c2s_open_192_ad_sealing_{n}_cookies"), |b| {
            b.iter(|| {
                let check = TagCheck { key: black_box(&keys.c2s), ad: &ad, nonce: &[0x11; 16], tag: &tag };
                black_box(master.seal_fresh(&keys, n, || [9; 16], &mut fresh, Some(check)))
            })
        });
        parts.bench_function(format!("cookie_seal_{n}_in_one_pass"), |b| {
            b.iter(|| black_box(master.seal_fresh(black_box(&keys), n, || [9; 16], &mut fresh, None)))
        });
    }
    parts.bench_function("s2c_seal_84_ad_112_text", |b| {
        let mut buf = [0u8; 16 + 112];
        b.iter(|| black_box(AesSivCmac256::seal(black_box(&keys.s2c), &[0x12; 16], &ad[..84], &mut buf)))
    });
    // The same two with GCM-SIV (a 16-byte key, a 12-byte nonce).
    let gcm = clients()[1].1.clone();
    let mut tag = [0u8; 16];
    assert!(AesGcmSiv128::seal(&gcm.c2s[..16], &[0x11; 12], &ad, &mut tag));
    parts.bench_function("c2s_open_192_ad_gcm_siv", |b| {
        b.iter(|| {
            let mut t = tag;
            black_box(AesGcmSiv128::open(black_box(&gcm.c2s[..16]), &[0x11; 12], &ad, &mut t))
        })
    });
    parts.bench_function("s2c_seal_84_ad_112_text_gcm_siv", |b| {
        let mut buf = [0u8; 16 + 112];
        b.iter(|| black_box(AesGcmSiv128::seal(black_box(&gcm.s2c[..16]), &[0x12; 12], &ad[..84], &mut buf)))
    });
    parts.finish();
}

/// `NTS_IR_COUNT=N` runs N one-cookie requests and nothing else, for an instruction count
/// (`valgrind --tool=callgrind`, N and 0: the difference over N), steadier than time on a
/// shared machine. `NTS_IR_AEAD=gcm_siv` makes the client's keys AES-128-GCM-SIV;
/// `NTS_IR_PLACEHOLDERS=P` asks for P more cookies (P + 1 in the reply).
fn instruction_driver(n: u64) {
    let snap = snapshot();
    let master = master();
    let gcm = std::env::var("NTS_IR_AEAD").is_ok_and(|a| a == "gcm_siv");
    let keys = clients()[usize::from(gcm)].1.clone();
    let client: std::net::SocketAddr = "198.51.100.7:123".parse().unwrap();
    let placeholders = std::env::var("NTS_IR_PLACEHOLDERS").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    let request = nts_request(&master, &keys, placeholders);
    let mut auth = Nts::new(master);
    let mut buf = request.clone();
    for _ in 0..n {
        buf.copy_from_slice(&request);
        let rx = RxMeta { client, rx_time: NtpTimestamp::from_parts(0xEC00_0011, 0), noise: 1 };
        let v = respond(black_box(&mut buf), rx, &snap, &mut ServeAll, &mut auth, || {
            NtpTimestamp::from_parts(0xEC00_0011, 0x100)
        });
        assert_eq!(v.reply_len(), Some(request.len()));
        black_box(v);
    }
}

criterion_group!(benches, bench_nts);

fn main() {
    if let Some(n) = std::env::var("NTS_IR_COUNT").ok().and_then(|n| n.parse().ok()) {
        instruction_driver(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
