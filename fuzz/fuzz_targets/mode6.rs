//! Any datagram to the ntpq listener: the mode 6 parser and responder never panic, never read
//! past the datagram, answer only requests, and keep every reply within the protocol's limits
//! (at most 32 fragments of 12 + 468 bytes, each a padded response to the request's opcode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::mode6::{self, MruEntry, Mode6State, NonceKey, Outcome, PeerVars, Selection, SystemVars, TimeSource};
use stratum_proto::NtpTimestamp;

fuzz_target!(|input: (u64, Vec<u8>)| {
    let (now_bits, bytes) = input;
    let now = NtpTimestamp::from_bits(now_bits);
    let system = SystemVars {
        version: "stratumd",
        processor: "x86_64",
        system: "Linux",
        leap: 0,
        stratum: 2,
        precision: -24,
        root_delay_ms: 1.0,
        root_dispersion_ms: 1.0,
        refid: "192.0.2.1",
        reftime: Some(now),
        clock: now,
        peer: 1,
        source: TimeSource::Ntp,
        tc: 6,
        mintc: 3,
        offset_ms: 0.1,
        frequency_ppm: -3.0,
        sys_jitter_ms: 0.01,
        clk_jitter_ms: Some(0.01),
        clk_wander_ppm: None,
        tai: Some(37),
        leapsec: None,
        expire: None,
    };
    let peer = PeerVars {
        association: 1,
        selection: Selection::SystemPeer,
        reach: 0xff,
        srcadr: "192.0.2.1".parse().unwrap(),
        srcport: 123,
        srchost: Some("a".repeat(600)),
        dstadr: None,
        leap: Some(0),
        stratum: Some(1),
        precision: Some(-20),
        root_delay_ms: None,
        root_dispersion_ms: None,
        refid: Some("GPS".into()),
        rec: Some(now),
        unreach: None,
        hmode: 3,
        pmode: 4,
        hpoll: 6,
        ppoll: 6,
        headway: 0,
        flash: 0,
        offset_ms: Some(0.1),
        delay_ms: Some(0.2),
        dispersion_ms: None,
        jitter_ms: Some(0.01),
        xleave_ms: 0.0,
        filtdelay_ms: vec![0.2; 8],
        filtoffset_ms: vec![0.1; 8],
        filtdisp_ms: vec![],
    };
    let mru: Vec<MruEntry> = (0..300u32)
        .map(|i| MruEntry {
            address: std::net::Ipv4Addr::from(0xc633_6400 + i).into(),
            port: 123,
            count: u64::from(1000 - i),
            dropped: 0,
            first: now,
            last: now,
            mode_version: 0x23,
            limited: false,
        })
        .collect();
    let state = Mode6State { system, peers: &[peer], mru: &mru, now };
    let client = "198.51.100.7".parse().unwrap();
    let key = NonceKey([3; 16]);
    // A READ_MRU request gets a valid nonce as its data, so that the MRU reply is reached too.
    let mut datagram = bytes.clone();
    if datagram.len() >= 12 && datagram[1] & 0x1f == mode6::op::READ_MRU {
        let text = format!("nonce={}, frags={}", key.issue(client, now), datagram[2] % 40);
        datagram.truncate(12);
        datagram.extend_from_slice(text.as_bytes());
        let count = (text.len() as u16).to_be_bytes();
        datagram[10..12].copy_from_slice(&count);
    }
    match mode6::answer(&datagram, &state, client, &key) {
        Outcome::Reply(fragments) => {
            assert!(!fragments.is_empty() && fragments.len() <= mode6::header::MAX_FRAGMENTS);
            for f in &fragments {
                assert!(f.len() >= 12 && f.len() <= 12 + mode6::header::MAX_DATA && f.len() % 4 == 0);
                assert_eq!(f[0] & 7, 6);
                assert_eq!(f[1] & 0x80, 0x80, "a response");
                assert_eq!(f[1] & 0x1f, datagram[1] & 0x1f, "the request's opcode");
            }
        }
        Outcome::Drop(_) => {}
    }
});
