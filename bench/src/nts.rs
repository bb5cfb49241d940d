//! The client side of NTS (RFC 8915) for stratum-bench: one NTS-KE over TLS 1.3 (rustls, ring,
//! trusting the CA file given, ALPN `ntske/1`) gives the C2S/S2C keys (TLS exporter) and 8
//! cookies; [`request`] builds an NTS request around a cookie and [`check_reply`] checks a reply
//! as a client must (unique identifier, authenticator opened with S2C) and returns the fresh
//! cookies it carried. `load --nts-ke` builds on them ([`restamp`]): a load test may re-use its
//! cookies (the server cannot tell, and answers each with fresh ones), which a real client must
//! not.
//!
//! The AEAD is AES-SIV-CMAC-256 (15) unless [`key_exchange_with`] asks for AES-128-GCM-SIV (30,
//! `--nts-aead gcm-siv`): then the KE offers 30 alone with chrony's compliant-export record, the
//! keys are 16 bytes (the rest of `c2s`/`s2c` zero) and the nonce 12. [`restamp`] and the reply
//! checks tell the two apart by the authenticator's nonce length (12 is GCM-SIV's only; AES-SIV's
//! is 16 here), so the engines pass keys as before.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use stratum_proto::nts::ef::{NTS_AUTHENTICATOR, NTS_COOKIE, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
use stratum_proto::nts::ke::{self, AEAD_ALGORITHM, COMPLIANT_128GCM_EXPORT, CRITICAL, END_OF_MESSAGE, ERROR};
use stratum_proto::nts::ke::{NEW_COOKIE, NEXT_PROTOCOL, NTPV4_PORT, NTPV4_SERVER, PROTOCOL_NTPV4, WARNING};
use stratum_proto::nts::{Aead, AesGcmSiv128, AesSivCmac256, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256, TAG_LEN};
use stratum_proto::{NtpPacket, NtpTimestamp};

/// What one NTS-KE gave.
#[derive(Clone)]
pub struct Session {
    /// The AEAD agreed (15 or 30).
    pub aead: u16,
    pub c2s: [u8; 32],
    pub s2c: [u8; 32],
    pub cookies: Vec<Vec<u8>>,
    /// The NTPv4 server and port records, when the KE server sent them.
    pub server: Option<String>,
    pub port: Option<u16>,
}

impl std::fmt::Debug for Session {
    // Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("aead", &self.aead)
            .field("cookies", &self.cookies.len())
            .field("server", &self.server)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn record(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut r = kind.to_be_bytes().to_vec();
    r.extend((body.len() as u16).to_be_bytes());
    r.extend(body);
    r
}

/// The KE request: NTPv4, the AEAD, end (all critical, as chrony sends them); with
/// AES-128-GCM-SIV chrony's compliant-export record (non-critical) too.
fn ke_request(aead: u16) -> Vec<u8> {
    let mut r = record(CRITICAL | NEXT_PROTOCOL, &PROTOCOL_NTPV4.to_be_bytes());
    r.extend(record(CRITICAL | AEAD_ALGORITHM, &aead.to_be_bytes()));
    if aead == AEAD_AES_128_GCM_SIV {
        r.extend(record(COMPLIANT_128GCM_EXPORT, &[]));
    }
    r.extend(record(CRITICAL | END_OF_MESSAGE, &[]));
    r
}

/// Reads the KE server's records (until End of Message) into `session` (whose `aead` is the
/// one asked for); true if the server granted the compliant GCM-SIV export.
fn parse_ke_response(mut bytes: &[u8], session: &mut Session) -> anyhow::Result<bool> {
    let (mut protocol, mut aead, mut compliant) = (false, false, false);
    loop {
        let Some((head, rest)) = bytes.split_first_chunk::<4>() else {
            bail!("the KE response ends before End of Message")
        };
        let kind = u16::from_be_bytes([head[0], head[1]]) & !CRITICAL;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some((body, rest)) = rest.split_at_checked(len) else { bail!("a KE record runs past the response") };
        match kind {
            END_OF_MESSAGE => break,
            NEXT_PROTOCOL => protocol = body == PROTOCOL_NTPV4.to_be_bytes(),
            AEAD_ALGORITHM => aead = body == session.aead.to_be_bytes(),
            COMPLIANT_128GCM_EXPORT => compliant = true,
            ERROR => bail!("the KE server sent error record {body:?}"),
            WARNING => bail!("the KE server sent warning record {body:?}"),
            NEW_COOKIE => session.cookies.push(body.to_vec()),
            NTPV4_SERVER => session.server = Some(String::from_utf8_lossy(body).into_owned()),
            NTPV4_PORT if len == 2 => session.port = Some(u16::from_be_bytes([body[0], body[1]])),
            _ => {}
        }
        bytes = rest;
    }
    anyhow::ensure!(protocol, "the KE server did not agree to NTPv4");
    anyhow::ensure!(aead, "the KE server did not agree to AEAD {}", session.aead);
    anyhow::ensure!(!session.cookies.is_empty(), "the KE server sent no cookie");
    Ok(compliant)
}

/// One NTS-KE with `addr`, whose certificate must name `name` and chain to a certificate in the
/// PEM file `ca`. `timeout` bounds the connection and each read and write.
pub fn key_exchange(addr: SocketAddr, name: &str, ca: &Path, timeout: Duration) -> anyhow::Result<Session> {
    key_exchange_with(addr, name, ca, timeout, AEAD_AES_SIV_CMAC_256)
}

/// [`key_exchange`] asking for `aead` (15 or 30) alone.
pub fn key_exchange_with(
    addr: SocketAddr,
    name: &str,
    ca: &Path,
    timeout: Duration,
    aead: u16,
) -> anyhow::Result<Session> {
    let key_len = stratum_proto::nts::aead::key_len(aead).with_context(|| format!("AEAD {aead} is not one we have"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("cannot read {}", ca.display()))? {
        roots.add(cert.with_context(|| format!("a bad certificate in {}", ca.display()))?)?;
    }
    // ring, as stratumd's KE server (rustls marks it deprecated only for post-quantum).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"ntske/1".to_vec()];
    let server_name = ServerName::try_from(name.to_string()).with_context(|| format!("bad server name {name}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name)?;
    let socket = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.write_all(&ke_request(aead)).with_context(|| format!("NTS-KE with {addr}"))?;
    tls.flush()?;
    // The server closes (close_notify) after End of Message; 64 KiB bounds a misbehaving one.
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if response.len() + n <= 65536 => response.extend_from_slice(&chunk[..n]),
            Ok(_) => bail!("the KE response from {addr} is over 64 KiB"),
            // Some servers close without close_notify once they have sent everything.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => break,
            Err(e) => return Err(e).with_context(|| format!("NTS-KE with {addr}")),
        }
    }
    let mut session = Session { aead, c2s: [0; 32], s2c: [0; 32], cookies: Vec::new(), server: None, port: None };
    let compliant = parse_ke_response(&response, &mut session).with_context(|| format!("NTS-KE with {addr}"))?;
    // The exporter context as chrony's client sets it (proto::nts::ke::Negotiated).
    let context = ke::Negotiated { aead, compliant_128gcm: compliant }.exporter_aead();
    let (c2s, s2c) = (&mut session.c2s[..key_len], &mut session.s2c[..key_len]);
    tls.conn.export_keying_material(c2s, ke::EXPORTER_LABEL, Some(&ke::exporter_context(context, false)))?;
    tls.conn.export_keying_material(s2c, ke::EXPORTER_LABEL, Some(&ke::exporter_context(context, true)))?;
    Ok(session)
}

fn field(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = kind.to_be_bytes().to_vec();
    f.extend(((body.len() + 4) as u16).to_be_bytes());
    f.extend(body);
    f
}

/// An NTS request (RFC 8915 section 5.7): the header with `transmit`, the unique identifier,
/// the cookie, `placeholders` cookie placeholders (each asks for one more fresh cookie), and the
/// authenticator sealed with C2S and `nonce` over everything before it (AES-SIV-CMAC-256).
pub fn request(
    c2s: &[u8; 32],
    cookie: &[u8],
    uid: &[u8; 32],
    transmit: NtpTimestamp,
    placeholders: usize,
    nonce: &[u8; 16],
) -> Vec<u8> {
    request_with(AEAD_AES_SIV_CMAC_256, c2s, cookie, uid, transmit, placeholders, nonce)
}

/// [`request`] under `aead`: with AES-128-GCM-SIV the key is `c2s[..16]` and the nonce
/// `nonce[..12]`.
pub fn request_with(
    aead: u16,
    c2s: &[u8; 32],
    cookie: &[u8],
    uid: &[u8; 32],
    transmit: NtpTimestamp,
    placeholders: usize,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let nonce = if aead == AEAD_AES_128_GCM_SIV { &nonce[..GCM_SIV_NONCE_LEN] } else { &nonce[..] };
    let mut p = NtpPacket::client_request(4, transmit).to_bytes().to_vec();
    p.extend(field(UNIQUE_IDENTIFIER, uid));
    p.extend(field(NTS_COOKIE, cookie));
    for _ in 0..placeholders {
        p.extend(field(NTS_COOKIE_PLACEHOLDER, &vec![0; cookie.len()]));
    }
    let mut tag = [0u8; TAG_LEN];
    // The key and nonce lengths are the AEAD's and the buffer the tag's: seal cannot refuse them.
    let _ = seal(c2s, nonce, &p, &mut tag);
    let mut body = (nonce.len() as u16).to_be_bytes().to_vec();
    body.extend((TAG_LEN as u16).to_be_bytes());
    body.extend(nonce);
    body.extend(tag);
    p.extend(field(NTS_AUTHENTICATOR, &body));
    p
}

/// Where [`request`] puts the unique identifier's 32 bytes: right after the header and the
/// field's type and length.
pub const UID_AT: usize = 48 + 4;
/// AES-128-GCM-SIV's nonce (the only length it takes; AES-SIV's is 16 here).
const GCM_SIV_NONCE_LEN: usize = 12;

/// Seals (an empty text: `sealed` is the tag) with the AEAD the nonce's length names.
fn seal(key: &[u8; 32], nonce: &[u8], ad: &[u8], sealed: &mut [u8]) -> bool {
    if nonce.len() == GCM_SIV_NONCE_LEN {
        AesGcmSiv128::seal(&key[..16], nonce, ad, sealed)
    } else {
        AesSivCmac256::seal(key, nonce, ad, sealed)
    }
}

/// Opens `sealed` with the AEAD the nonce's length names: where its text is.
fn open(key: &[u8; 32], nonce: &[u8], ad: &[u8], sealed: &mut [u8]) -> Option<core::ops::Range<usize>> {
    if nonce.len() == GCM_SIV_NONCE_LEN {
        AesGcmSiv128::open(&key[..16], nonce, ad, sealed).then_some(0..sealed.len() - TAG_LEN)
    } else {
        AesSivCmac256::open(key, nonce, ad, sealed).then_some(TAG_LEN..sealed.len())
    }
}

/// The unique identifier of a load request ([`restamp`]): `prefix`, then the request's transmit
/// timestamp (its 8 wire bytes), so that it is unique per request and a reply's own origin
/// timestamp names the identifier it must carry.
pub fn load_uid(prefix: &[u8; 24], transmit: &[u8; 8]) -> [u8; 32] {
    let mut uid = [0u8; 32];
    uid[..24].copy_from_slice(prefix);
    uid[24..].copy_from_slice(transmit);
    uid
}

/// Turns a request made by [`request_with`] into the next one of a load test, in place and
/// without allocating: the transmit timestamp `transmit`, the unique identifier's last 8 bytes
/// the same (see [`load_uid`]), and the authenticator sealed again with `c2s` over the changed
/// packet (same cookie and nonce: a load test may re-use them; the server still opens the
/// cookie, verifies and seals each request). The authenticator is the request's last field, its
/// tag the last 16 bytes, its nonce (16 bytes: AES-SIV, 12: GCM-SIV) before the tag.
pub fn restamp(c2s: &[u8; 32], p: &mut [u8], transmit: &[u8; 8]) {
    p[40..48].copy_from_slice(transmit);
    p[UID_AT + 24..UID_AT + 32].copy_from_slice(transmit);
    let tag_at = p.len() - TAG_LEN;
    let nonce_len = if is_field(p, tag_at - GCM_SIV_NONCE_LEN - 8, 8 + GCM_SIV_NONCE_LEN + TAG_LEN) {
        GCM_SIV_NONCE_LEN
    } else {
        16
    };
    let auth = tag_at - nonce_len - 8;
    let mut nonce = [0u8; 16];
    nonce[..nonce_len].copy_from_slice(&p[auth + 8..tag_at]);
    let mut tag = [0u8; TAG_LEN];
    // The key and nonce lengths are the AEAD's and the buffer the tag's: seal cannot refuse them.
    let _ = seal(c2s, &nonce[..nonce_len], &p[..auth], &mut tag);
    p[tag_at..].copy_from_slice(&tag);
}

/// Whether an authenticator field of `len` bytes with a `len - 8 - TAG_LEN`-byte nonce and a
/// bare tag starts at `at` (request_with's layout). Where AES-SIV's field (16-byte nonce) ends a
/// request, the bytes GCM-SIV's header would be in are its lengths (16, 16), never 0x0404.
fn is_field(p: &[u8], at: usize, len: usize) -> bool {
    let be16 = |i: usize| p.get(at + i..at + i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    be16(0) == Some(usize::from(NTS_AUTHENTICATOR))
        && be16(2) == Some(len)
        && be16(4) == Some(len - 8 - TAG_LEN)
        && be16(6) == Some(TAG_LEN)
}

/// Why an NTS reply was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NtsReplyError {
    /// KoD NTSN: the server could not open the cookie or verify the request.
    Nak,
    /// Not the request's unique identifier, or none.
    Uid,
    /// No authenticator, a malformed one, or one that does not open with S2C.
    Authenticator,
    /// Extension fields that do not parse.
    Malformed,
}

/// Checks an NTS reply to the request with `uid` (the header's own checks are the caller's):
/// the fresh cookies it carried, encrypted, if it is authentic; [`NtsReplyError::Nak`] for a
/// KoD NTSN that echoes `uid` (a NAK is not authenticated: RFC 8915 section 5.7).
pub fn check_reply(s2c: &[u8; 32], reply: &[u8], uid: &[u8; 32]) -> Result<Vec<Vec<u8>>, NtsReplyError> {
    let mut plaintext = vec![0u8; reply.len()];
    let n = open_reply(s2c, reply, uid, &mut plaintext)?;
    cookies_in(&plaintext[..n])
}

/// The longest reply [`check_load_reply`] opens (its authenticator is copied to the stack).
pub const LOAD_REPLY_MAX: usize = 2048;

/// [`check_reply`] for a load test, without allocating: Ok if the reply is authentic (its
/// cookies are not read), the same errors otherwise; a reply over [`LOAD_REPLY_MAX`] bytes is
/// [`NtsReplyError::Malformed`].
pub fn check_load_reply(s2c: &[u8; 32], reply: &[u8], uid: &[u8; 32]) -> Result<(), NtsReplyError> {
    let mut plaintext = [0u8; LOAD_REPLY_MAX];
    let buf = plaintext.get_mut(..reply.len()).ok_or(NtsReplyError::Malformed)?;
    open_reply(s2c, reply, uid, buf).map(|_| ())
}

/// Checks the reply's unique identifier and opens its authenticator with S2C into `buf` (at
/// least as long as the reply): the plaintext's length, from `buf[0]`.
fn open_reply(s2c: &[u8; 32], reply: &[u8], uid: &[u8; 32], buf: &mut [u8]) -> Result<usize, NtsReplyError> {
    let header = reply.get(..48).ok_or(NtsReplyError::Malformed)?;
    let (mut at, mut uid_ok) = (48, false);
    while at + 4 <= reply.len() {
        let kind = u16::from_be_bytes([reply[at], reply[at + 1]]);
        let len = usize::from(u16::from_be_bytes([reply[at + 2], reply[at + 3]]));
        let body = reply.get(at + 4..at + len).filter(|_| len >= 4).ok_or(NtsReplyError::Malformed)?;
        match kind {
            UNIQUE_IDENTIFIER => uid_ok = body == uid,
            NTS_AUTHENTICATOR => {
                if !uid_ok {
                    return Err(NtsReplyError::Uid);
                }
                let nonce_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let ct_len = usize::from(u16::from_be_bytes([*body.get(2).unwrap_or(&0), *body.get(3).unwrap_or(&0)]));
                let nonce = body.get(4..4 + nonce_len).ok_or(NtsReplyError::Authenticator)?;
                let start = 4 + nonce_len.next_multiple_of(4);
                let ciphertext = body.get(start..start + ct_len).ok_or(NtsReplyError::Authenticator)?;
                let sealed = &mut buf[..ct_len];
                sealed.copy_from_slice(ciphertext);
                let text = (ct_len >= TAG_LEN).then(|| open(s2c, nonce, &reply[..at], sealed)).flatten();
                let text = text.ok_or(NtsReplyError::Authenticator)?;
                let n = text.len();
                buf.copy_within(text, 0);
                return Ok(n);
            }
            _ => {}
        }
        at += len;
    }
    if uid_ok && header[1] == 0 && &header[12..16] == b"NTSN" {
        return Err(NtsReplyError::Nak);
    }
    Err(if uid_ok { NtsReplyError::Authenticator } else { NtsReplyError::Uid })
}

/// The cookie fields inside a reply's decrypted authenticator.
fn cookies_in(mut plaintext: &[u8]) -> Result<Vec<Vec<u8>>, NtsReplyError> {
    let mut cookies = Vec::new();
    while plaintext.len() >= 4 {
        let kind = u16::from_be_bytes([plaintext[0], plaintext[1]]);
        let len = usize::from(u16::from_be_bytes([plaintext[2], plaintext[3]]));
        let body = plaintext.get(4..len).filter(|_| len >= 4).ok_or(NtsReplyError::Malformed)?;
        if kind == NTS_COOKIE {
            cookies.push(body.to_vec());
        }
        plaintext = &plaintext[len..];
    }
    Ok(cookies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::nts::server::{check_request, write_nak, write_reply, FreshCookies, NtsCheck};
    use stratum_proto::nts::{ClientKeys, KeySet, MasterKey, AEAD_AES_128_GCM_SIV, COOKIE_LEN};

    /// The server's check with its fresh cookies (nonces from a counter).
    fn check(p: &mut [u8], master: &KeySet) -> (NtsCheck, FreshCookies) {
        let mut fresh = FreshCookies::default();
        let mut n = 0u8;
        let check = check_request(p, master, &mut fresh, || {
            n += 1;
            [n; 16]
        });
        (check, fresh)
    }

    fn server() -> (KeySet, ClientKeys, Vec<u8>) {
        let master = KeySet::new(MasterKey { id: 3, key: [0x33; 32] }, 3);
        let keys = ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0xC2; 32], s2c: [0x5C; 32] };
        let mut cookie = [0u8; COOKIE_LEN];
        assert!(master.seal(&keys, &[1; 16], &mut cookie));
        (master, keys, cookie.to_vec())
    }

    /// Our request as stratumd's pure server half sees it, and its reply as we check it: the
    /// fresh cookies come out; a changed reply, another UID and a NAK are refused.
    #[test]
    fn a_request_verifies_and_its_reply_checks_with_fresh_cookies() {
        let (master, keys, cookie) = server();
        let uid = [0xAB; 32];
        for placeholders in [0, 1, 7] {
            let mut p = request(&keys.c2s, &cookie, &uid, NtpTimestamp::from_bits(77), placeholders, &[9; 16]);
            let len = p.len();
            let (NtsCheck::Verified(v), fresh) = check(&mut p, &master) else { panic!("the server verifies it") };
            let reply_len = write_reply(&mut p, len, &v, &fresh, &[5; 16]).unwrap();
            let cookies = check_reply(&keys.s2c, &p[..reply_len], &uid).expect("authentic");
            assert_eq!(cookies.len(), 1 + placeholders);
            assert_eq!(check_load_reply(&keys.s2c, &p[..reply_len], &uid), Ok(()));
            assert_eq!(check_load_reply(&keys.s2c, &p[..reply_len], &[0xAC; 32]), Err(NtsReplyError::Uid));
            assert_eq!(check_load_reply(&keys.c2s, &p[..reply_len], &uid), Err(NtsReplyError::Authenticator));
            assert!(cookies.iter().all(|c| master.open(c).as_ref() == Some(&keys)));
            assert_eq!(check_reply(&keys.s2c, &p[..reply_len], &[0xAC; 32]), Err(NtsReplyError::Uid));
            let mut changed = p[..reply_len].to_vec();
            changed[40] ^= 1;
            assert_eq!(check_reply(&keys.s2c, &changed, &uid), Err(NtsReplyError::Authenticator));
        }
        let mut nak = request(&keys.c2s, &cookie, &uid, NtpTimestamp::from_bits(77), 0, &[9; 16]);
        nak[..48].fill(0);
        let len = write_nak(&mut nak, 52..84).unwrap();
        assert_eq!(check_reply(&keys.s2c, &nak[..len], &uid), Err(NtsReplyError::Nak));
        assert_eq!(check_load_reply(&keys.s2c, &nak[..len], &uid), Err(NtsReplyError::Nak));
        assert_eq!(check_load_reply(&keys.s2c, &[0; LOAD_REPLY_MAX + 1], &uid), Err(NtsReplyError::Malformed));
    }

    /// A restamped load request is the request built afresh with the new transmit time and
    /// UID, and the server verifies it.
    #[test]
    fn a_restamped_request_is_a_fresh_one() {
        let (master, keys, cookie) = server();
        let prefix = [0x11; 24];
        let mut p = request(&keys.c2s, &cookie, &load_uid(&prefix, &[0; 8]), NtpTimestamp::ZERO, 0, &[7; 16]);
        for transmit in [[1u8; 8], [0xFE; 8]] {
            restamp(&keys.c2s, &mut p, &transmit);
            let t = NtpTimestamp::from_be_bytes(transmit);
            let fresh = request(&keys.c2s, &cookie, &load_uid(&prefix, &transmit), t, 0, &[7; 16]);
            assert_eq!(p, fresh);
            let mut q = p.clone();
            assert!(matches!(check(&mut q, &master).0, NtsCheck::Verified(_)));
        }
    }

    #[test]
    fn ke_responses() {
        let mut s = Session { aead: 15, c2s: [0; 32], s2c: [0; 32], cookies: Vec::new(), server: None, port: None };
        let cookies: [&[u8]; 2] = [&[1; 104], &[2; 104]];
        let compliant = parse_ke_response(&ke::write_response(AEAD_AES_SIV_CMAC_256, &cookies, Some(11123)), &mut s);
        assert!(!compliant.unwrap());
        assert_eq!((s.cookies.len(), s.port), (2, Some(11123)));
        let mut s2 = s.clone();
        assert!(parse_ke_response(&ke::write_error(1), &mut s2).is_err());
        assert!(parse_ke_response(&ke_request(15)[..6], &mut s2).is_err(), "cut short");
        // GCM-SIV asked: the server's answer must name it; the compliant record is read.
        let mut g = Session { aead: 30, ..s.clone() };
        assert!(parse_ke_response(&ke::write_response(15, &cookies, None), &mut g).is_err(), "another AEAD");
        let granted = ke::Negotiated { aead: 30, compliant_128gcm: true };
        assert!(parse_ke_response(&ke::write_negotiated(granted, &cookies, None), &mut g).unwrap());
        // Our GCM-SIV request is what proto's KE server grants with the compliant export.
        assert_eq!(ke::parse_request(&ke_request(30)), ke::KeRequest::Ntpv4(granted));
        assert_eq!(
            ke::parse_request(&ke_request(15)),
            ke::KeRequest::Ntpv4(ke::Negotiated { aead: 15, compliant_128gcm: false })
        );
    }

    /// With GCM-SIV keys: the request (12-byte nonce) verifies in proto's server, its reply
    /// checks with S2C, a restamped one is the fresh one, a changed reply is refused.
    #[test]
    fn gcm_siv_requests_replies_and_restamps() {
        let master = KeySet::new(MasterKey { id: 3, key: [0x33; 32] }, 3);
        let mut keys = ClientKeys { algorithm: AEAD_AES_128_GCM_SIV, c2s: [0; 32], s2c: [0; 32] };
        keys.c2s[..16].fill(0xC2);
        keys.s2c[..16].fill(0x5C);
        let mut cookie = [0u8; COOKIE_LEN];
        assert!(master.seal(&keys, &[1; 16], &mut cookie));
        let uid = [0xAB; 32];
        for placeholders in [0, 2] {
            let mut p = request_with(30, &keys.c2s, &cookie, &uid, NtpTimestamp::from_bits(77), placeholders, &[9; 16]);
            assert_eq!(&p[p.len() - 32..p.len() - 28], &[0, 12, 0, 16], "a 12-byte nonce");
            let len = p.len();
            let (NtsCheck::Verified(v), fresh) = check(&mut p, &master) else { panic!("the server verifies it") };
            let reply_len = write_reply(&mut p, len, &v, &fresh, &[5; 16]).unwrap();
            let cookies = check_reply(&keys.s2c, &p[..reply_len], &uid).expect("authentic");
            assert_eq!(cookies.len(), 1 + placeholders);
            assert!(cookies.iter().all(|c| master.open(c).as_ref() == Some(&keys)));
            assert_eq!(check_load_reply(&keys.s2c, &p[..reply_len], &uid), Ok(()));
            let mut changed = p[..reply_len].to_vec();
            changed[reply_len - 1] ^= 1;
            assert_eq!(check_load_reply(&keys.s2c, &changed, &uid), Err(NtsReplyError::Authenticator));
        }
        let prefix = [0x11; 24];
        let mut p = request_with(30, &keys.c2s, &cookie, &load_uid(&prefix, &[0; 8]), NtpTimestamp::ZERO, 0, &[7; 16]);
        for transmit in [[1u8; 8], [0xFE; 8]] {
            restamp(&keys.c2s, &mut p, &transmit);
            let t = NtpTimestamp::from_be_bytes(transmit);
            assert_eq!(p, request_with(30, &keys.c2s, &cookie, &load_uid(&prefix, &transmit), t, 0, &[7; 16]));
            assert!(matches!(check(&mut p.clone(), &master).0, NtsCheck::Verified(_)));
        }
    }
}
