//! NTS fixtures (included with `#[path]` by benches/nts.rs and tests/nts_no_alloc.rs): a master
//! key, a client's keys under each AEAD, a request as chrony sends it, and a worker's
//! authenticator with counter nonces.

use stratum_proto::auth::{Authenticate, KeyRef, MacCheck};
use stratum_proto::nts::ef::{NTS_AUTHENTICATOR, NTS_COOKIE, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
use stratum_proto::nts::server::{check_request, write_reply, FreshCookies, NtsCheck, Verified};
use stratum_proto::nts::{
    Aead, AesGcmSiv128, AesSivCmac256, ClientKeys, KeySet, MasterKey, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256,
    COOKIE_LEN,
};
use stratum_proto::{NtpPacket, NtpTimestamp};

/// The server's master key set the cookies are sealed under.
pub(crate) fn master() -> KeySet {
    KeySet::new(MasterKey { id: 1, key: [0x4D; 32] }, 3)
}

/// A client's keys under each AEAD: (label, keys), AES-SIV-CMAC-256 first, then AES-128-GCM-SIV.
pub(crate) fn clients() -> [(&'static str, ClientKeys); 2] {
    let mut gcm = ClientKeys { algorithm: AEAD_AES_128_GCM_SIV, c2s: [0; 32], s2c: [0; 32] };
    gcm.c2s[..16].fill(0xC2);
    gcm.s2c[..16].fill(0x5C);
    [("siv_cmac", ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC2; 32], s2c: [0x5C; 32] }), ("gcm_siv", gcm)]
}

/// A worker's NTS authenticator, nonces from a counter (the server's come from a CSPRNG).
pub(crate) struct Nts {
    master: KeySet,
    n: u64,
    fresh: FreshCookies,
}

impl Nts {
    pub(crate) fn new(master: KeySet) -> Self {
        Self { master, n: 0, fresh: FreshCookies::default() }
    }

    fn next(n: &mut u64) -> [u8; 16] {
        *n = n.wrapping_add(1);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b
    }
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
        check_request(packet, &self.master, &mut self.fresh, || Self::next(n))
    }
    fn sign_nts(&mut self, buf: &mut [u8], len: usize, v: &Verified) -> Option<usize> {
        let nonce = Self::next(&mut self.n);
        write_reply(buf, len, v, &self.fresh, &nonce)
    }
}

fn field(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = kind.to_be_bytes().to_vec();
    f.extend(((body.len() + 4) as u16).to_be_bytes());
    f.extend(body);
    f
}

/// A client request with a unique identifier, one cookie sealed under `master` for `keys`,
/// `placeholders` cookie placeholders and the authenticator under the client's C2S key.
pub(crate) fn nts_request(master: &KeySet, keys: &ClientKeys, placeholders: usize) -> Vec<u8> {
    let mut cookie = [0u8; COOKIE_LEN];
    assert!(master.seal(keys, &[7; 16], &mut cookie));
    let mut p = NtpPacket::client_request(4, NtpTimestamp::from_parts(0xEC00_0010, 0x1234_5678)).to_bytes().to_vec();
    p.extend(field(UNIQUE_IDENTIFIER, &[0xAB; 32]));
    p.extend(field(NTS_COOKIE, &cookie));
    for _ in 0..placeholders {
        p.extend(field(NTS_COOKIE_PLACEHOLDER, &[0; COOKIE_LEN]));
    }
    let mut tag = [0u8; 16];
    // The nonce chrony sends: 16 bytes with AES-SIV, 12 with GCM-SIV.
    let nonce: &[u8] = if keys.algorithm == AEAD_AES_128_GCM_SIV {
        assert!(AesGcmSiv128::seal(&keys.c2s[..16], &[0x11; 12], &p, &mut tag));
        &[0x11; 12]
    } else {
        assert!(AesSivCmac256::seal(&keys.c2s, &[0x11; 16], &p, &mut tag));
        &[0x11; 16]
    };
    let mut body = (nonce.len() as u16).to_be_bytes().to_vec();
    body.extend(16u16.to_be_bytes());
    body.extend(nonce);
    body.extend(tag);
    p.extend(field(NTS_AUTHENTICATOR, &body));
    p
}
