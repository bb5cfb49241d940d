//! AES-128-GCM-SIV for NTS (issue 16, RFC 8915 + RFC 8452, IANA AEAD 30), socket backend, on
//! loopback. No real peer here speaks it (chrony 4.3 offers AES-SIV-CMAC only; GCM-SIV came with
//! chrony 4.4, and NTPsec has SIV-CMAC only), so the client is written here: an NTS-KE over TLS
//! 1.3 (rustls, the test CA) offering an AEAD list, with or without chrony's compliant-export
//! record (type 1024), the keys exported as chrony's client does, then NTS requests sealed with
//! GCM-SIV (a 12-byte nonce, the tag after the ciphertext) to the data plane.
//!
//! Checked: the server takes the first of the client's list it has; with GCM-SIV and the record
//! it echoes the record and exports under id 30, without it under id 15 (chrony 4.4 to 4.5),
//! and the data plane answers with GCM-SIV replies whose fresh cookies work again; keys from the
//! other context get an NTS NAK; only unknown AEADs get an empty AEAD record; `[nts]
//! aeads = [15]` makes the server choose SIV-CMAC for a GCM-SIV-first client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use stratum_proto::nts::ef::{NTS_AUTHENTICATOR, NTS_COOKIE, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
use stratum_proto::nts::ke::{self, AEAD_ALGORITHM, COMPLIANT_128GCM_EXPORT, CRITICAL, END_OF_MESSAGE, ERROR};
use stratum_proto::nts::ke::{NEW_COOKIE, NEXT_PROTOCOL, NTPV4_PORT};
use stratum_proto::nts::{Aead, AesGcmSiv128, AesSivCmac256, KeySet, MasterKey, TAG_LEN};
use stratum_proto::{NtpPacket, NtpTimestamp};

fn record(kind: u16, body: &[u8]) -> Vec<u8> {
    [&kind.to_be_bytes()[..], &(body.len() as u16).to_be_bytes(), body].concat()
}

/// What the KE response said, and the keys exported under `context_aead`.
#[derive(Debug, Default)]
struct Ke {
    aead: Option<u16>,
    /// The server answered an empty AEAD record (RFC 8915: none of the offered AEADs).
    aead_empty: bool,
    compliant_echoed: bool,
    error: Option<u16>,
    cookies: Vec<Vec<u8>>,
    port: Option<u16>,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
}

/// One NTS-KE offering `aeads` (and the compliant-export record if `compliant`); the keys are
/// exported with `key_len` bytes under the context naming `context_aead` (None: as chrony's
/// client does, from what the server said).
fn key_exchange(
    addr: SocketAddr,
    ca: &std::path::Path,
    aeads: &[u16],
    compliant: bool,
    context_aead: Option<u16>,
) -> Ke {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"ntske/1".to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect to the KE server");
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    let list: Vec<u8> = aeads.iter().flat_map(|a| a.to_be_bytes()).collect();
    let mut request = [record(CRITICAL | NEXT_PROTOCOL, &[0, 0]), record(CRITICAL | AEAD_ALGORITHM, &list)].concat();
    if compliant {
        request.extend(record(COMPLIANT_128GCM_EXPORT, &[]));
    }
    request.extend(record(CRITICAL | END_OF_MESSAGE, &[]));
    tls.write_all(&request).unwrap();
    tls.flush().unwrap();
    let mut response = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => break,
            Err(e) => panic!("NTS-KE: {e}"),
        }
    }
    let mut ke = Ke::default();
    let mut at = 0;
    while at + 4 <= response.len() {
        let kind = u16::from_be_bytes([response[at], response[at + 1]]) & !CRITICAL;
        let len = usize::from(u16::from_be_bytes([response[at + 2], response[at + 3]]));
        let body = &response[at + 4..at + 4 + len];
        let be16 = || u16::from_be_bytes([body[0], body[1]]);
        match kind {
            AEAD_ALGORITHM if body.is_empty() => ke.aead_empty = true,
            AEAD_ALGORITHM => ke.aead = Some(be16()),
            COMPLIANT_128GCM_EXPORT => ke.compliant_echoed = true,
            ERROR => ke.error = Some(be16()),
            NEW_COOKIE => ke.cookies.push(body.to_vec()),
            NTPV4_PORT => ke.port = Some(be16()),
            _ => {}
        }
        at += 4 + len;
    }
    if let Some(aead) = ke.aead {
        let key_len = stratum_proto::nts::aead::key_len(aead).expect("an AEAD we have");
        let context_aead = context_aead.unwrap_or(if aead == 30 && !ke.compliant_echoed { 15 } else { aead });
        ke.c2s = vec![0; key_len];
        ke.s2c = vec![0; key_len];
        let context = |s2c| ke::exporter_context(context_aead, s2c);
        tls.conn.export_keying_material(&mut ke.c2s, ke::EXPORTER_LABEL, Some(&context(false))).unwrap();
        tls.conn.export_keying_material(&mut ke.s2c, ke::EXPORTER_LABEL, Some(&context(true))).unwrap();
    }
    ke
}

type Seal = fn(&[u8], &[u8], &[u8], &mut [u8]) -> bool;

/// (seal, open, where the text is, the nonce chrony sends) for `aead`.
fn aead_fns(aead: u16) -> (Seal, Seal, usize, usize) {
    match aead {
        30 => (AesGcmSiv128::seal, AesGcmSiv128::open, AesGcmSiv128::TEXT_AT, 12),
        15 => (AesSivCmac256::seal, AesSivCmac256::open, AesSivCmac256::TEXT_AT, 16),
        other => panic!("AEAD {other}"),
    }
}

fn field(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = kind.to_be_bytes().to_vec();
    f.extend(((body.len() + 4) as u16).to_be_bytes());
    f.extend(body);
    f
}

/// An NTS request as chrony sends one, sealed with `c2s` under `aead`.
fn request(aead: u16, c2s: &[u8], cookie: &[u8], placeholders: usize, uid: u8, t1: NtpTimestamp) -> Vec<u8> {
    let (seal, _, _, nonce_len) = aead_fns(aead);
    let mut p = NtpPacket::client_request(4, t1).to_bytes().to_vec();
    p.extend(field(UNIQUE_IDENTIFIER, &[uid; 32]));
    p.extend(field(NTS_COOKIE, cookie));
    for _ in 0..placeholders {
        p.extend(field(NTS_COOKIE_PLACEHOLDER, &vec![0; cookie.len()]));
    }
    let nonce = vec![uid ^ 0x5A; nonce_len];
    let mut tag = [0u8; TAG_LEN];
    assert!(seal(c2s, &nonce, &p, &mut tag));
    let mut body = (nonce_len as u16).to_be_bytes().to_vec();
    body.extend(16u16.to_be_bytes());
    body.extend(&nonce);
    body.extend(tag);
    p.extend(field(NTS_AUTHENTICATOR, &body));
    p
}

/// The reply's fresh cookies if it authenticates with `s2c` under `aead` (its nonce of that
/// AEAD's length), None for an NTS NAK.
fn check_reply(aead: u16, s2c: &[u8], reply: &[u8], uid: u8, t1: NtpTimestamp) -> Option<Vec<Vec<u8>>> {
    let header = NtpPacket::parse(reply).unwrap();
    assert_eq!(header.origin_timestamp, t1);
    assert_eq!(&reply[48..52], &[0x01, 0x04, 0, 36]);
    assert_eq!(&reply[52..84], &[uid; 32], "the unique identifier echoed");
    if header.stratum == 0 {
        assert_eq!(&header.ref_id.0, b"NTSN");
        return None;
    }
    let (_, open, text_at, nonce_len) = aead_fns(aead);
    let at = 84;
    assert_eq!(reply[at..at + 2], NTS_AUTHENTICATOR.to_be_bytes());
    assert_eq!(usize::from(u16::from_be_bytes([reply[at + 4], reply[at + 5]])), nonce_len, "the AEAD's nonce");
    let ct_len = usize::from(u16::from_be_bytes([reply[at + 6], reply[at + 7]]));
    let start = at + 8 + nonce_len.next_multiple_of(4);
    let mut sealed = reply[start..start + ct_len].to_vec();
    assert!(open(s2c, &reply[at + 8..at + 8 + nonce_len], &reply[..at], &mut sealed), "authentic under S2C");
    Some(
        sealed[text_at..text_at + ct_len - TAG_LEN]
            .chunks(4 + 104)
            .map(|f| {
                assert_eq!(f[..2], NTS_COOKIE.to_be_bytes());
                f[4..].to_vec()
            })
            .collect(),
    )
}

/// stratumd with the KE server on loopback; `extra` is appended to `[nts]`.
fn start(dir: &std::path::Path, extra: &str) -> (Server, SocketAddr, SocketAddr, std::path::PathBuf) {
    let (ca, cert, key) = make_certificates(dir, "127.0.0.1");
    let keyfile = dir.join("nts.keys");
    std::fs::write(&keyfile, KeySet::new(MasterKey { id: 9, key: [0x39; 32] }, 3).to_text()).unwrap();
    let (port, ke_port) = (free_port(), free_port());
    let text = format!(
        "{}\n[nts]\nmaster-keys = \"{}\"\nlisten = \"127.0.0.1:{ke_port}\"\ncertificate = \"{}\"\n\
         private-key = \"{}\"\n{extra}",
        config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2"),
        keyfile.display(),
        cert.display(),
        key.display()
    );
    let server = Server::start(&text, port);
    (server, ([127, 0, 0, 1], port).into(), ([127, 0, 0, 1], ke_port).into(), ca)
}

/// Two NTS exchanges with the KE's first cookie (one placeholder, then a fresh cookie from the
/// first reply): both authentic under `aead`.
fn exchanges_work(ntp: SocketAddr, ke: &Ke, aead: u16) {
    let t1 = now_ntp();
    let req = request(aead, &ke.c2s, &ke.cookies[0], 1, 0x41, t1);
    let reply = exchange(ntp, &req, Duration::from_secs(2)).expect("an NTS reply");
    assert_eq!(reply.len(), req.len(), "as long as the request");
    let fresh = check_reply(aead, &ke.s2c, &reply, 0x41, t1).expect("not a NAK");
    assert_eq!(fresh.len(), 2);
    let t1 = now_ntp();
    let req = request(aead, &ke.c2s, &fresh[1], 0, 0x42, t1);
    let reply = exchange(ntp, &req, Duration::from_secs(2)).expect("an NTS reply");
    assert_eq!(check_reply(aead, &ke.s2c, &reply, 0x42, t1).expect("a fresh cookie works").len(), 1);
}

#[test]
fn gcm_siv_is_negotiated_exported_as_chrony_does_and_served() {
    if !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, ntp, ke_addr, ca) = start(dir.path(), "");

    // chrony 4.6 on: 30 15 and the compliant-export record: GCM-SIV, record echoed, context 30.
    let ke = key_exchange(ke_addr, &ca, &[30, 15], true, None);
    assert_eq!((ke.aead, ke.compliant_echoed, ke.error, ke.cookies.len()), (Some(30), true, None, 8));
    assert_eq!(ke.port, Some(ntp.port()));
    assert_eq!(ke.c2s.len(), 16, "AES-128-GCM-SIV's key length");
    exchanges_work(ntp, &ke, 30);

    // chrony 4.4 to 4.5: no record: GCM-SIV with the keys under context 15.
    let ke = key_exchange(ke_addr, &ca, &[30, 15], false, None);
    assert_eq!((ke.aead, ke.compliant_echoed, ke.cookies.len()), (Some(30), false, 8));
    exchanges_work(ntp, &ke, 30);
    // The same KE's keys under the other context are not the server's: an NTS NAK.
    let wrong = key_exchange(ke_addr, &ca, &[30, 15], false, Some(30));
    let t1 = now_ntp();
    let reply = exchange(ntp, &request(30, &wrong.c2s, &wrong.cookies[0], 0, 0x43, t1), Duration::from_secs(2));
    assert_eq!(check_reply(30, &wrong.s2c, &reply.expect("a NAK"), 0x43, t1), None, "NTS NAK");

    // SIV-CMAC first (chrony 4.3, NTPsec offer only 15): SIV-CMAC, 32-byte keys.
    let ke = key_exchange(ke_addr, &ca, &[15, 30], true, None);
    assert_eq!((ke.aead, ke.compliant_echoed, ke.c2s.len()), (Some(15), false, 32));
    exchanges_work(ntp, &ke, 15);

    // Unknown ids are skipped; only unknown ones: an empty AEAD record (RFC 8915 section 4.1.5),
    // no error record, no cookies.
    assert_eq!(key_exchange(ke_addr, &ca, &[31, 30], false, None).aead, Some(30));
    let ke = key_exchange(ke_addr, &ca, &[31, 0x7FFF], false, None);
    assert_eq!((ke.aead, ke.aead_empty, ke.error, ke.cookies.len()), (None, true, None, 0));
}

#[test]
fn nts_aeads_limits_the_choice() {
    if !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, ntp, ke_addr, ca) = start(dir.path(), "aeads = [15]\n");
    let ke = key_exchange(ke_addr, &ca, &[30, 15], true, None);
    assert_eq!((ke.aead, ke.compliant_echoed), (Some(15), false));
    exchanges_work(ntp, &ke, 15);
    let ke = key_exchange(ke_addr, &ca, &[30], true, None);
    assert_eq!((ke.aead, ke.aead_empty, ke.error), (None, true, None), "GCM-SIV only, not enabled");
}

/// stratum-bench asks for GCM-SIV (`--nts-aead gcm-siv`: 30 alone, the compliant record): the
/// query library gets an authentic reply, and a 1 s load at 5000/s is answered authentically
/// (at least 95 %, no NAK, no reply that fails to open with S2C); with `--engine xdp` the CLI
/// refuses it before any KE.
#[test]
fn the_bench_client_loads_with_gcm_siv() {
    if !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, ntp, ke_addr, ca) = start(dir.path(), "");
    let session = stratum_bench::nts::key_exchange_with(ke_addr, "127.0.0.1", &ca, Duration::from_secs(3), 30)
        .expect("an NTS-KE asking for GCM-SIV");
    assert_eq!((session.aead, session.cookies.len()), (30, 8));
    assert_eq!(&session.c2s[16..], &[0; 16], "a 16-byte key");
    stratum_bench::query::query_with(ntp, Duration::from_secs(2), Some(&session)).expect("an authentic GCM-SIV reply");

    let (target, ke, ca) = (ntp.to_string(), ke_addr.to_string(), ca.display().to_string());
    let load = |extra: &[&str]| {
        let mut args = vec!["stratum-bench", "load", "--target", &target, "--rate", "5000", "--duration", "1"];
        args.extend(["--sockets", "4", "--nts-ke", &ke, "--nts-ca", &ca, "--nts-aead", "gcm-siv", "--json"]);
        args.extend(extra);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = stratum_bench::cli::run(args, &mut out, &mut err);
        (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    };
    let (code, out, err) = load(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON report");
    assert_authentic_nts_load(&v, 4900);
    let (code, _, err) = load(&["--engine", "xdp", "--interface", "lo"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--nts-aead gcm-siv is for the socket engine"), "{err}");
}
