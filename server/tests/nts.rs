//! NTS on the data plane (issue 16 item 3, BAD_INPUTS 49 and 56), socket backend, with the client
//! side written here from RFC 8915 (no NTS-KE server yet: the test mints the first cookie with
//! the same master key file stratumd reads, as an NTS-KE server sharing it would). A request
//! with a valid cookie gets a reply authenticated with the S2C key, as long as the request,
//! carrying fresh cookies that open to the same keys; a cookie from other master keys gets an NTS
//! NAK; after a restart with the same key file the cookies still work.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use stratum_proto::nts::ef::{NTS_AUTHENTICATOR, NTS_COOKIE, NTS_COOKIE_PLACEHOLDER, UNIQUE_IDENTIFIER};
use stratum_proto::nts::{
    Aead, AesSivCmac256, ClientKeys, KeySet, MasterKey, AEAD_AES_SIV_CMAC_256, COOKIE_LEN, TAG_LEN,
};
use stratum_proto::NtpPacket;

fn field(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = kind.to_be_bytes().to_vec();
    f.extend(((body.len() + 4) as u16).to_be_bytes());
    f.extend(body);
    f
}

fn client_keys() -> ClientKeys {
    ClientKeys { algorithm: AEAD_AES_SIV_CMAC_256, c2s: [0x3C; 32], s2c: [0xC3; 32] }
}

/// An NTS request as chrony sends one: UID, cookie, placeholders, authenticator (C2S).
fn request(cookie: &[u8], placeholders: usize, uid: u8) -> (Vec<u8>, stratum_proto::NtpTimestamp) {
    let t1 = now_ntp();
    let mut p = NtpPacket::client_request(4, t1).to_bytes().to_vec();
    p.extend(field(UNIQUE_IDENTIFIER, &[uid; 32]));
    p.extend(field(NTS_COOKIE, cookie));
    for _ in 0..placeholders {
        p.extend(field(NTS_COOKIE_PLACEHOLDER, &vec![0; cookie.len()]));
    }
    let nonce = [uid ^ 0x5A; 16];
    let mut tag = [0u8; TAG_LEN];
    assert!(AesSivCmac256::seal(&client_keys().c2s, &nonce, &p, &mut tag));
    let mut body = 16u16.to_be_bytes().to_vec();
    body.extend(16u16.to_be_bytes());
    body.extend(nonce);
    body.extend(tag);
    p.extend(field(NTS_AUTHENTICATOR, &body));
    (p, t1)
}

/// A client's checks of a reply: the UID, the authenticator (S2C over header and UID); the
/// cookies inside.
fn cookies_in(reply: &[u8], uid: u8) -> Vec<Vec<u8>> {
    assert_eq!(&reply[48..52], &[0x01, 0x04, 0, 36], "the unique identifier first");
    assert_eq!(&reply[52..84], &[uid; 32], "echoed");
    let at = 84;
    assert_eq!(reply[at..at + 2], NTS_AUTHENTICATOR.to_be_bytes());
    let nonce_len = u16::from_be_bytes([reply[at + 4], reply[at + 5]]) as usize;
    let ct_len = u16::from_be_bytes([reply[at + 6], reply[at + 7]]) as usize;
    let start = at + 8 + nonce_len.next_multiple_of(4);
    let mut sealed = reply[start..start + ct_len].to_vec();
    assert!(
        AesSivCmac256::open(&client_keys().s2c, &reply[at + 8..at + 8 + nonce_len], &reply[..at], &mut sealed),
        "the reply authenticates with S2C"
    );
    sealed[TAG_LEN..]
        .chunks(4 + COOKIE_LEN)
        .map(|f| {
            assert_eq!(f[..2], NTS_COOKIE.to_be_bytes());
            f[4..].to_vec()
        })
        .collect()
}

fn nts_config(port: u16, keys: &Path) -> String {
    format!(
        "{}\n[nts]\nmaster-keys = \"{}\"\n",
        config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2"),
        keys.display()
    )
}

/// stratumd on loopback serving NTS and NTS-KE (`KeServer::start`), with what a test needs of it.
struct KeServer {
    server: Server,
    /// The data plane's port (NTP).
    port: u16,
    ke_port: u16,
    /// The test CA the KE server's certificate chains to, the certificate and its key.
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl KeServer {
    /// The test CA and a certificate for 127.0.0.1 made in `certs`; the master keys in
    /// DIR/nts.keys, `master` written there first (None: stratumd makes the file at start); a
    /// [metrics] listener on `metrics_port` where one is given.
    fn start(dir: &Path, certs: &Path, master: Option<KeySet>, metrics_port: Option<u16>) -> Self {
        let (ca, cert, key) = make_certificates(certs, "127.0.0.1");
        let keyfile = dir.join("nts.keys");
        if let Some(master) = master {
            std::fs::write(&keyfile, master.to_text()).unwrap();
        }
        let (port, ke_port) = (free_port(), free_port());
        let mut text = format!(
            "{}listen = \"127.0.0.1:{ke_port}\"\ncertificate = \"{}\"\nprivate-key = \"{}\"\n",
            nts_config(port, &keyfile),
            cert.display(),
            key.display()
        );
        if let Some(metrics_port) = metrics_port {
            text += &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        }
        let server = Server::start(&text, port);
        Self { server, port, ke_port, ca, cert, key }
    }
}

/// `chronyd -Q -t SECONDS` (never touching the clock) once against `port` over NTS with its KE
/// on `ke_port`, trusting `ca` (None: only the system's CAs): the offset it measured, or its log.
fn chronyd_over_nts(seconds: &str, ca: Option<&Path>, port: u16, ke_port: u16) -> Result<f64, String> {
    let mut cmd = std::process::Command::new("chronyd");
    cmd.args(["-Q", "-t", seconds]);
    if let Some(ca) = ca {
        cmd.arg(format!("ntstrustedcerts {}", ca.display()));
    }
    cmd.arg(format!("server 127.0.0.1 port {port} nts ntsport {ke_port} iburst maxsamples 1"));
    let out = cmd.output().expect("run chronyd");
    chronyd_offset(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn nts_requests_get_authenticated_replies_with_fresh_cookies_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("nts.keys");
    let mut master = KeySet::new(MasterKey { id: 41, key: [0x17; 32] }, 3);
    master.rotate([0x29; 32]);
    std::fs::write(&keyfile, master.to_text()).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let with_metrics = format!("{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n", nts_config(port, &keyfile));
    let mut server = Server::start(&with_metrics, port);

    let mut first = [0u8; COOKIE_LEN];
    assert!(master.seal(&client_keys(), &[1; 16], &mut first));
    let (req, t1) = request(&first, 2, 0xA1);
    let reply = exchange(addr, &req, Duration::from_secs(2)).expect("an NTS reply");
    assert_eq!(reply.len(), req.len(), "as long as the request, never longer");
    let header = NtpPacket::parse(&reply).unwrap();
    assert_eq!((header.stratum, header.origin_timestamp), (2, t1));
    let cookies = cookies_in(&reply, 0xA1);
    assert_eq!(cookies.len(), 3, "one per cookie and placeholder");
    for c in &cookies {
        assert_eq!(master.open(c), Some(client_keys()), "a fresh cookie for the same keys");
        assert_ne!(c[..], first[..], "fresh, not the old one back");
    }

    // A cookie from another server's master keys (same id, other key): an NTS NAK.
    let stranger = KeySet::new(MasterKey { id: 42, key: [0x99; 32] }, 1);
    let mut foreign = [0u8; COOKIE_LEN];
    assert!(stranger.seal(&client_keys(), &[2; 16], &mut foreign));
    let (req, t1) = request(&foreign, 0, 0xB2);
    let nak = exchange(addr, &req, Duration::from_secs(2)).expect("an NTS NAK");
    assert_eq!(nak.len(), 84, "KoD header and the unique identifier");
    let kod = NtpPacket::parse(&nak).unwrap();
    assert_eq!((kod.stratum, &kod.ref_id.0, kod.origin_timestamp), (0, b"NTSN", t1));
    assert_eq!(&nak[52..84], &[0xB2; 32]);

    // A request whose authenticator does not verify (a byte of the request changed): a NAK too.
    let (mut req, _) = request(&cookies[0], 0, 0xC3);
    req[20] ^= 1;
    let nak = exchange(addr, &req, Duration::from_secs(2)).expect("an NTS NAK");
    assert_eq!(&nak[12..16], b"NTSN");
    // /metrics counts them by kind: one NTS reply, two NTS NAKs, nothing signed with a key.
    assert_eq!(auth_replies(metrics_port, "nts"), 1);
    assert_eq!(auth_replies(metrics_port, "nts_nak"), 2);
    assert_eq!(auth_replies(metrics_port, "mac") + auth_replies(metrics_port, "crypto_nak"), 0);
    server.stop();

    // Restarted with the same key file: the cookies it handed out before still work.
    let mut server = Server::start(&nts_config(port, &keyfile), port);
    let (req, _) = request(&cookies[1], 0, 0xD4);
    let reply = exchange(addr, &req, Duration::from_secs(2)).expect("an NTS reply after the restart");
    assert_eq!(cookies_in(&reply, 0xD4).len(), 1);
    server.stop();
}

#[test]
fn a_bad_master_key_file_is_one_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("nts.keys");
    std::fs::write(&keyfile, "# keys\n5 abcd\n").unwrap();
    let text = nts_config(123, &keyfile);
    assert_refused(&text, 10, "nts.master-keys", &format!("{}:2: a master key is 64 hex digits", keyfile.display()));
    let missing_dir = text.replace("nts.keys", "absent/nts.keys");
    assert_refused(&missing_dir, 10, "nts.master-keys", "cannot read");
    // A missing file in a directory that exists is made at start (not by --check-config).
    let missing = text.replace("nts.keys", "absent.keys");
    let (ok, _, err, _) = check_config(&missing);
    assert!(ok, "{err}");
    assert!(!dir.path().join("absent.keys").exists(), "--check-config writes nothing");
}

/// stratum-bench's NTS client (the load generator's groundwork) against stratumd: one NTS-KE with
/// rustls trusting the test CA gives 8 cookies and the NTP port record; an NTS request built
/// with a cookie gets an authentic reply (S2C) with fresh cookies, the same cookie again too (a
/// load test may re-use its cookies); a CA it does not trust fails the KE.
#[test]
fn the_bench_nts_client_does_the_ke_and_gets_authentic_replies() {
    if !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certificates(other.path(), "127.0.0.1");
    let master = KeySet::new(MasterKey { id: 5, key: [0x65; 32] }, 3);
    let KeServer { mut server, port, ke_port, ca, .. } = KeServer::start(dir.path(), dir.path(), Some(master), None);
    let ke: SocketAddr = ([127, 0, 0, 1], ke_port).into();
    let session = stratum_bench::nts::key_exchange(ke, "127.0.0.1", &ca, Duration::from_secs(3)).expect("NTS-KE");
    assert_eq!(session.cookies.len(), 8);
    assert_eq!(session.port, Some(port), "the NTPv4 port record (not 123)");
    let ntp = SocketAddr::from(([127, 0, 0, 1], port));
    for (i, placeholders) in [(0u8, 1), (1, 0)] {
        let uid = [0x40 + i; 32];
        let t1 = stratum_proto::NtpTimestamp::from_bits(0x1234_5678_9abc_def1 + u64::from(i));
        let req = stratum_bench::nts::request(&session.c2s, &session.cookies[0], &uid, t1, placeholders, &[i; 16]);
        let reply = exchange(ntp, &req, Duration::from_secs(2)).expect("an NTS reply");
        assert_eq!(NtpPacket::parse(&reply).unwrap().origin_timestamp, t1);
        let fresh = stratum_bench::nts::check_reply(&session.s2c, &reply, &uid).expect("authentic");
        assert_eq!(fresh.len(), 1 + placeholders, "round {i}: the same cookie again is answered too");
    }
    // query_with: a changed cookie gets the NAK (kiss code NTSN); a reply that does not open with
    // the S2C we hold is ignored as forged.
    let mut changed = session.clone();
    changed.cookies[0][30] ^= 1;
    match stratum_bench::query::query_with(ntp, Duration::from_secs(2), Some(&changed)) {
        Err(stratum_bench::query::QueryError::KissOfDeath { code, .. }) => assert_eq!(code, "NTSN"),
        other => panic!("expected an NTS NAK: {other:?}"),
    }
    let mut wrong_s2c = session.clone();
    wrong_s2c.s2c[0] ^= 1;
    match stratum_bench::query::query_with(ntp, Duration::from_millis(500), Some(&wrong_s2c)) {
        Err(stratum_bench::query::QueryError::NoValidReply { ignored, .. }) => assert_eq!(ignored, 1),
        other => panic!("expected the reply ignored: {other:?}"),
    }
    let refused = stratum_bench::nts::key_exchange(ke, "127.0.0.1", &other_ca, Duration::from_secs(3));
    assert!(refused.is_err(), "a KE server whose certificate the CA file does not vouch for");

    // The same through `stratum-bench query --nts-ke --nts-ca`: exit 0 and the server's stratum;
    // with the other CA, exit 1 naming the KE.
    let query = |ca: &Path| {
        let (ntp, ke, ca) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{ke_port}"), ca.display().to_string());
        let args = ["stratum-bench", "query", &ntp, "--nts-ke", &ke, "--nts-ca", &ca, "--json", "--timeout", "3"];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = stratum_bench::cli::run(args, &mut out, &mut err);
        (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    };
    let (code, out, err) = query(&ca);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"stratum\":2"), "{out}");
    let (code, _, err) = query(&other_ca);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NTS-KE"), "{err}");
    server.stop();
}

/// `stratum-bench load --nts-ke --nts-ca`: one NTS-KE, then every request an NTS request with
/// one of its cookies (re-used); at least 95 % of them get authentic replies (S2C opens their
/// authenticators), none is a NAK or not authentic. With the other CA the KE, and so the load,
/// fails (exit 1).
#[test]
fn an_nts_load_gets_authentic_replies() {
    if !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certificates(other.path(), "127.0.0.1");
    let master = KeySet::new(MasterKey { id: 6, key: [0x66; 32] }, 3);
    let metrics_port = free_port();
    let KeServer { mut server, port, ke_port, ca, .. } =
        KeServer::start(dir.path(), dir.path(), Some(master), Some(metrics_port));
    let load = |ca: &Path| {
        let (target, ke, ca) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{ke_port}"), ca.display().to_string());
        let args = [
            "stratum-bench",
            "load",
            "--target",
            &target,
            "--rate",
            "5000",
            "--duration",
            "1",
            "--sockets",
            "4",
            "--nts-ke",
            &ke,
            "--nts-ca",
            &ca,
            "--json",
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = stratum_bench::cli::run(args, &mut out, &mut err);
        (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    };
    let (code, out, err) = load(&ca);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON report");
    let valid = assert_authentic_nts_load(&v, 4900);
    assert!(auth_replies(metrics_port, "nts") >= valid, "the server sealed each");
    let (code, _, err) = load(&other_ca);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NTS-KE"), "{err}");
    server.stop();
}

/// The whole chain with a real client: chronyd (-Q, never touching the clock) does the NTS-KE
/// handshake with stratumd (trusting the test's CA), gets cookies, and takes an NTS-authenticated
/// sample from the data plane; without the CA it refuses the KE server. A flood of half-open
/// TCP connections to the KE port does not stop the data plane, and the KE serves again after.
#[test]
fn chronyd_synchronises_over_nts() {
    if !require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)")
        || !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let master = KeySet::new(MasterKey { id: 1, key: [0x61; 32] }, 3);
    let metrics_port = free_port();
    let KeServer { mut server, port, ke_port, ca, .. } =
        KeServer::start(dir.path(), dir.path(), Some(master), Some(metrics_port));
    let chronyd = |trust: bool| chronyd_over_nts("8", trust.then_some(ca.as_path()), port, ke_port);
    let offset = chronyd(true).unwrap_or_else(|log| panic!("chronyd refused stratumd over NTS: {log}"));
    assert!(offset.abs() < 0.05, "offset {offset}");
    assert!(chronyd(false).is_err(), "chronyd accepted a KE server signed by a CA it does not trust");

    // Half-open connections, more than the cap, from another address (the per-address limit
    // closes most of them at once): the data plane answers at once.
    let ke: SocketAddr = ([127, 0, 0, 1], ke_port).into();
    let from: SocketAddr = ([127, 0, 0, 2], 0).into();
    let half_open = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        s.bind(&from.into()).ok()?;
        s.connect(&ke.into()).ok()?;
        Some(s)
    };
    let idle: Vec<_> = (0..100).filter_map(|_| half_open()).collect();
    let ntp = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(query(ntp, 4, Duration::from_millis(500)).is_some(), "the data plane answers during a KE flood");
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let offset = chronyd(true).unwrap_or_else(|log| panic!("the KE serves again after the flood: {log}"));
    assert!(offset.abs() < 0.05);
    // /metrics: the KE's connections by outcome.
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let text = scrape().expect("/metrics");
    let count = |outcome: &str| -> u64 {
        let prefix = format!("stratumd_ntske_connections_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(count("served") >= 2, "the two trusting chronyd runs served: {text}");
    assert!(count("failed") >= 21, "the untrusting run and the 20 half-open ones failed: {text}");
    assert!(count("refused_rate") >= 70, "the flood's connections beyond 20 refused at accept: {text}");
    server.stop();
}

/// `chronyc -N authdata` against a running chronyd client (-x: never touches the clock) of
/// stratumd over NTS: mode NTS, no NAK, and still a full jar of cookies after more exchanges
/// than the eight cookies the KE gave: every reply replaced the cookie its request used.
#[test]
fn chronyc_authdata_shows_nts_with_cookies_replaced() {
    if !require(have_tool("chronyd") && have_tool("chronyc"), "chrony is not installed (apt-get install chrony)")
        || !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let master = KeySet::new(MasterKey { id: 3, key: [0x62; 32] }, 3);
    let KeServer { mut server, port, ke_port, ca, .. } = KeServer::start(dir.path(), dir.path(), Some(master), None);
    // chronyd wants its command socket's directory closed to others.
    let sockdir = dir.path().join("run");
    std::fs::create_dir(&sockdir).unwrap();
    std::fs::set_permissions(&sockdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sock = sockdir.join("chronyd.sock");
    let conf = format!(
        "server 127.0.0.1 port {port} nts ntsport {ke_port} iburst minpoll -4 maxpoll -4\n\
         ntstrustedcerts {}\nbindcmdaddress {}\ncmdport 0\npidfile {}\ndriftfile {}\n",
        ca.display(),
        sock.display(),
        dir.path().join("chronyd.pid").display(),
        dir.path().join("drift").display()
    );
    // What it logs (DIR/chronyd.log) goes with chronyc's answers into the failure messages.
    let _chronyd = spawn_chronyd(None, dir.path(), &conf, &["-u", "root"]);
    let chronyc = |args: &[&str]| {
        let out = std::process::Command::new("chronyc").arg("-h").arg(&sock).args(args).output().expect("chronyc");
        let log = std::fs::read_to_string(dir.path().join("chronyd.log")).unwrap_or_default();
        format!("{}{}{log}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let received = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("Total valid RX"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    loop {
        let ntpdata = chronyc(&["-n", "ntpdata", "127.0.0.1"]);
        if received(&ntpdata) >= 16 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "chronyd took no 16 samples over NTS: {ntpdata}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let authdata = chronyc(&["-n", "-c", "authdata"]);
    let authdata = authdata.lines().next().unwrap_or_default().to_string();
    // CSV: name, mode, key id, type, key length, last KE, attempts, NAKs, cookies, cookie length.
    eprintln!("chronyc -N authdata (CSV): {authdata}");
    let row: Vec<&str> = authdata.split(',').collect();
    assert_eq!(row.get(1).copied(), Some("NTS"), "{authdata}");
    assert_eq!(row.get(7).copied(), Some("0"), "no NAK: {authdata}");
    let cookies: u32 = row.get(8).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!(cookies >= 7, "cookies replaced, not used up (16 exchanges, 8 from the KE): {authdata}");
    assert_eq!(row.get(9).copied(), Some("104"), "our cookie length: {authdata}");
    server.stop();
}

/// Both kinds of authentication on the xdp backend (the same respond() path, frames answered in
/// place): stratumd with `backend = "xdp"` on one end of a veth pair, real chronyd clients in the
/// other namespace: one with an AES128 symmetric key, one over NTS (KE over TCP to the same
/// namespace, the NTP exchange through the XDP program and an AF_XDP socket).
#[cfg(feature = "xdp")]
#[test]
fn xdp_backend_serves_symmetric_keys_and_nts() {
    if !require(is_root(), "the xdp backend needs root (XDP, AF_XDP, network namespaces)")
        || !require(
            have_tool("ip") && have_tool("chronyd") && have_tool("openssl"),
            "ip, chronyd or openssl is missing (scripts/test installs them)",
        )
    {
        return;
    }
    let (srv, cli) = (Netns::new("ntsxs"), Netns::new("ntsxc"));
    let net = (std::process::id() % 200) as u8 + 7;
    srv.link("xs", &format!("10.87.{net}.1/24"), &cli, "xc", &format!("10.87.{net}.2/24"));
    let server_ip = format!("10.87.{net}.1");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), &server_ip);
    let masterfile = dir.path().join("nts.keys");
    std::fs::write(&masterfile, KeySet::new(MasterKey { id: 9, key: [0x63; 32] }, 3).to_text()).unwrap();
    let keys = dir.path().join("ntp.keys");
    std::fs::write(&keys, "1 AES128CMAC 8d1f5c0e2a9b4c7d6e3f10a2b4c6d8e0\n").unwrap();
    let text = format!(
        "[server]\nbackend = \"xdp\"\ninterface = \"xs\"\nport = 123\nxdp-mode = \"auto\"\n\n\
         [clock]\nsource = \"local\"\nstratum = 2\n\n[auth]\nkeys = \"{}\"\n\n\
         [nts]\nmaster-keys = \"{}\"\nlisten = \"{server_ip}:4460\"\ncertificate = \"{}\"\nprivate-key = \"{}\"\n",
        keys.display(),
        masterfile.display(),
        cert.display(),
        key.display()
    );
    let mut server = Server::start_with(srv.command(BIN), &text, 123, None);
    let chrony_keys = dir.path().join("chrony.keys");
    std::fs::write(&chrony_keys, "1 AES128 HEX:8d1f5c0e2a9b4c7d6e3f10a2b4c6d8e0\n").unwrap();
    let chronyd = |directives: &[String]| {
        let out = cli.command("chronyd").args(["-Q", "-t", "5"]).args(directives).output().expect("run chronyd");
        chronyd_offset(&String::from_utf8_lossy(&out.stderr))
    };
    let keyed = [format!("keyfile {}", chrony_keys.display()), format!("server {server_ip} key 1 iburst maxsamples 1")];
    let nts = [format!("ntstrustedcerts {}", ca.display()), format!("server {server_ip} nts iburst maxsamples 1")];
    // The first try also waits for the program to attach (seconds on a loaded host).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let offset = loop {
        match chronyd(&keyed) {
            Ok(offset) => break offset,
            Err(log) => assert!(std::time::Instant::now() < deadline, "chronyd (key 1) refused stratumd (xdp): {log}"),
        }
    };
    assert!(offset.abs() < 0.05, "key 1: offset {offset}");
    let offset = chronyd(&nts).unwrap_or_else(|log| panic!("chronyd refused stratumd (xdp) over NTS: {log}"));
    assert!(offset.abs() < 0.05, "NTS: offset {offset}");
    let log = server.stop_output();
    assert!(log.contains("backend=\"xdp\""), "it ran the xdp backend: {log}");
}

/// The master keys while running: a missing key file is made at start (mode 0600); with
/// `key-rotation = "2s"` a fresh key becomes current and is written back (the cookies a reply
/// carries are sealed with it) while a cookie of the first key still works until it is rotated
/// out (3 kept); a file changed by someone else (a fleet's rotating member) is picked up.
#[test]
fn master_keys_are_created_rotated_and_re_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("nts.keys");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = format!("{}key-rotation = \"2s\"\n", nts_config(port, &keyfile));
    let mut server = Server::start(&text, port);
    assert_eq!(std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777, 0o600);
    let first = KeySet::from_text(&std::fs::read_to_string(&keyfile).unwrap(), 3).unwrap();
    let first_id = first.current().id;
    let mut cookie = [0u8; COOKIE_LEN];
    assert!(first.seal(&client_keys(), &[4; 16], &mut cookie));
    let (req, _) = request(&cookie, 0, 0x11);
    let reply = exchange(addr, &req, Duration::from_secs(2)).expect("a reply with the created key");
    assert_eq!(cookies_in(&reply, 0x11)[0][..4], first_id.to_be_bytes());

    // One rotation later: the file holds a newer key, replies' cookies use it, the old cookie works.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rotated = loop {
        let set = KeySet::from_text(&std::fs::read_to_string(&keyfile).unwrap(), 3).unwrap();
        if set.current().id != first_id {
            break set;
        }
        assert!(std::time::Instant::now() < deadline, "no rotation within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(300)); // the workers see it with their next NTS request
    let (req, _) = request(&cookie, 0, 0x12);
    let reply = exchange(addr, &req, Duration::from_secs(2)).expect("the old cookie still works");
    let fresh = &cookies_in(&reply, 0x12)[0];
    assert_ne!(fresh[..4], first_id.to_be_bytes(), "sealed with a newer key");
    assert!(
        rotated.open(fresh).is_some()
            || KeySet::from_text(&std::fs::read_to_string(&keyfile).unwrap(), 3).unwrap().open(fresh).is_some()
    );

    // Rotated out after three more: a NAK.
    std::thread::sleep(Duration::from_secs(7));
    let (req, _) = request(&cookie, 0, 0x13);
    let nak = exchange(addr, &req, Duration::from_secs(2)).expect("a NAK");
    assert_eq!(&nak[12..16], b"NTSN", "a cookie of a key rotated out");

    // Another member wrote the file: its keys are used within a moment.
    let fleet = KeySet::new(MasterKey { id: 999, key: [0x77; 32] }, 3);
    std::fs::write(dir.path().join("fleet.tmp"), fleet.to_text()).unwrap();
    std::fs::rename(dir.path().join("fleet.tmp"), &keyfile).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut theirs = [0u8; COOKIE_LEN];
    assert!(fleet.seal(&client_keys(), &[5; 16], &mut theirs));
    let (req, _) = request(&theirs, 0, 0x14);
    let reply = exchange(addr, &req, Duration::from_secs(2)).expect("a reply");
    assert_ne!(&reply[12..16], b"NTSN", "the fleet's key is accepted");
    assert_eq!(cookies_in(&reply, 0x14).len(), 1);
    server.stop();
}

/// SIGHUP re-reads the KE server's certificate and key (a renewed certificate): clients that
/// trust only the new CA get through afterwards, those that trusted the old one no more; the data
/// plane answers throughout.
#[test]
fn sighup_reloads_the_ke_certificate() {
    if !require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)")
        || !require(have_tool("openssl"), "openssl is not installed (apt-get install openssl)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old_dir, new_dir) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir(&old_dir).unwrap();
    std::fs::create_dir(&new_dir).unwrap();
    let (new_ca, new_cert, new_key) = make_certificates(&new_dir, "127.0.0.1");
    // The master key file is made at start.
    let KeServer { mut server, port, ke_port, ca: old_ca, cert, key } =
        KeServer::start(dir.path(), &old_dir, None, None);
    let chronyd = |ca: &Path| chronyd_over_nts("6", Some(ca), port, ke_port);
    chronyd(&old_ca).unwrap_or_else(|log| panic!("the first certificate: {log}"));
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(query(SocketAddr::from(([127, 0, 0, 1], port)), 4, Duration::from_millis(500)).is_some());
    chronyd(&new_ca).unwrap_or_else(|log| panic!("the renewed certificate after SIGHUP: {log}"));
    assert!(chronyd(&old_ca).is_err(), "the old certificate is no longer served");
    let log = server.stop_output();
    assert!(log.contains("re-read (SIGHUP)"), "{log}");
}

/// NTPsec's ntpd (unpacked by scripts/test; `disable ntp`: it never steers the clock) as an NTS
/// client in one namespace, stratumd in another: ntpd does the KE (trusting the test's CA),
/// reaches stratumd over NTS and calls it authenticated: its peerstats status word has the
/// authentic and reachable bits (0x2000, 0x1000).
#[test]
fn ntpsec_ntpd_uses_stratumd_over_nts() {
    let unpacked = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/peers/ntpsec/usr/sbin/ntpd");
    if !require(is_root(), "ntpd and stratumd on port 123 need root and network namespaces")
        || !require(
            Path::new(unpacked).is_file() && have_tool("ip") && have_tool("openssl"),
            "NTPsec's ntpd (scripts/test unpacks it into target/peers/ntpsec), ip or openssl is missing",
        )
    {
        return;
    }
    let (srv, cli) = (Netns::new("ntsps"), Netns::new("ntspc"));
    let net = (std::process::id() % 200) as u8 + 3;
    srv.link("vs", &format!("10.86.{net}.1/24"), &cli, "vc", &format!("10.86.{net}.2/24"));
    let server_ip = format!("10.86.{net}.1");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), &server_ip);
    let keyfile = dir.path().join("nts.keys");
    let text = format!(
        "[server]\nlisten = [\"{server_ip}:123\"]\nworkers = 1\n\n[clock]\nsource = \"local\"\nstratum = 2\n\n\
         [nts]\nmaster-keys = \"{}\"\nlisten = \"{server_ip}:4460\"\ncertificate = \"{}\"\nprivate-key = \"{}\"\n",
        keyfile.display(),
        cert.display(),
        key.display()
    );
    let mut server = Server::start_with(srv.command(BIN), &text, 123, None);
    std::thread::sleep(Duration::from_millis(500));
    let d = dir.path().display();
    let conf = dir.path().join("ntp.conf");
    std::fs::write(
        &conf,
        format!(
            "server {server_ip} nts ca {} iburst minpoll 3 maxpoll 3\ndisable ntp\ndisable kernel\n\
             driftfile {d}/ntp.drift\nstatsdir {d}/\nstatistics peerstats\nfilegen peerstats file peerstats type none enable\n",
            ca.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("ntpd.log");
    let _ntpd = Running(Some(
        cli.command(unpacked)
            .args(["-n", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("ntpd.pid"))
            .arg("-l")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ntpd"),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    // peerstats: MJD seconds address status(hex) offset delay dispersion jitter
    let authentic = |line: &str| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.get(2) == Some(&server_ip.as_str())
            && cols.get(3).and_then(|s| u16::from_str_radix(s, 16).ok()).is_some_and(|s| s & 0x3000 == 0x3000)
    };
    loop {
        let stats = std::fs::read_to_string(dir.path().join("peerstats")).unwrap_or_default();
        if let Some(line) = stats.lines().find(|l| authentic(l)) {
            eprintln!("ntpd peerstats: {line}");
            break;
        }
        let ntpd_log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            std::time::Instant::now() < deadline,
            "ntpd did not reach stratumd over NTS, authentic: peerstats {stats}\nntpd log: {ntpd_log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let ntpd_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ntpd_log.contains("NTSc"), "ntpd did the NTS-KE: {ntpd_log}");
    server.stop();
}
