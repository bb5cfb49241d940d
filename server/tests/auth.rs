//! Symmetric keys (issue 16 item 4, BAD_INPUTS 57): real clients that sign their requests accept
//! stratumd's signed replies with the right key and refuse them with a wrong one. chronyd (-Q,
//! which never touches the clock) with AES-128-CMAC and SHA1 keys over loopback; NTPsec's ntpdig
//! (`-k keyfile -a id`) inside a network namespace, since it only speaks to port 123. Also the
//! wire itself (a signed request gets a 68-byte signed reply, a bad MAC a 52-byte crypto-NAK) and
//! the key file's errors.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use stratum_proto::auth::{KeyType, SymmetricKey};
use stratum_proto::NtpPacket;

const CMAC_HEX: &str = "8d1f5c0e2a9b4c7d6e3f10a2b4c6d8e0";
const SHA1_HEX: &str = "5e884898da28047151d0e56f8dc6292773603d0d";
const WRONG_CMAC_HEX: &str = "00000000000000000000000000000001";
const WRONG_SHA1_HEX: &str = "0000000000000000000000000000000000000001";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// stratumd's key file (ntpd's format: more than 20 characters is hex): key 1 AES-128-CMAC,
/// key 2 SHA1, key 3 MD5 (legacy: warned at start).
fn server_keys(dir: &Path) -> String {
    let path = dir.join("ntp.keys");
    let text = format!("# test keys\n1 AES128CMAC {CMAC_HEX}\n2 SHA1 {SHA1_HEX}\n3 MD5 legacy-secret\n");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn auth_config(listen: &[String], keys: &str) -> String {
    format!("{}\n[auth]\nkeys = \"{keys}\"\n", config(listen, 1, "source = \"local\"\nstratum = 2"))
}

/// `chronyd -Q` signing with key `id` of a chrony-format key file holding `key_line`: the offset,
/// or chronyd's log when it refused every reply.
fn chronyd_with_key(port: u16, id: u32, key_line: &str) -> Result<f64, String> {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("chrony.keys");
    std::fs::write(&keyfile, format!("{key_line}\n")).unwrap();
    let out = std::process::Command::new("chronyd")
        .args([
            "-Q",
            "-t",
            "6",
            &format!("keyfile {}", keyfile.display()),
            &format!("server 127.0.0.1 port {port} key {id} iburst maxsamples 1"),
        ])
        .output()
        .expect("run chronyd");
    chronyd_offset(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn chronyd_accepts_signed_replies_with_the_right_key_and_refuses_a_wrong_one() {
    if !require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)") {
        return;
    }
    let port = free_port();
    let keydir = tempfile::tempdir().unwrap();
    let keys = server_keys(keydir.path());
    let mut server = Server::start(&auth_config(&[format!("127.0.0.1:{port}")], &keys), port);
    for (id, kind, good) in [(1, "AES128", CMAC_HEX), (2, "SHA1", SHA1_HEX)] {
        let offset = chronyd_with_key(port, id, &format!("{id} {kind} HEX:{good}"))
            .unwrap_or_else(|log| panic!("chronyd refused key {id} ({kind}): {log}"));
        assert!(offset.abs() < 0.05, "key {id}: offset {offset}");
    }
    for (id, kind, wrong) in [(1, "AES128", WRONG_CMAC_HEX), (2, "SHA1", WRONG_SHA1_HEX), (9, "SHA1", SHA1_HEX)] {
        let refused = chronyd_with_key(port, id, &format!("{id} {kind} HEX:{wrong}"));
        assert!(
            refused.is_err(),
            "chronyd accepted a reply for key {id} with a wrong secret or unknown id: {refused:?}"
        );
    }
    let log = server.stop_output();
    assert!(log.contains("auth.keys") && log.contains("key 3 is MD5"), "MD5 warned at start: {log}");
}

#[test]
fn ntpdig_accepts_signed_replies_with_the_right_key_and_refuses_a_wrong_one() {
    if !ntpdig_available() {
        return;
    }
    let ns = Netns::new("auth");
    let keydir = tempfile::tempdir().unwrap();
    let keys = server_keys(keydir.path());
    let mut server = Server::start_with(ns.command(BIN), &auth_config(&["127.0.0.1:123".into()], &keys), 123, None);
    let ntpdig_keyed = |id: u32, line: &str| {
        let file = keydir.path().join(format!("client-{id}.keys"));
        std::fs::write(&file, format!("{line}\n")).unwrap();
        ns.command("ntpdig")
            .args(["-j", "-t", "2", "-k"])
            .arg(&file)
            .args(["-a", &id.to_string(), "127.0.0.1"])
            .output()
            .expect("run ntpdig")
    };
    // Wait for the server with an unauthenticated query first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ntpdig(&ns, "127.0.0.1").status.success() {
        assert!(Instant::now() < deadline, "stratumd did not answer ntpdig in the namespace");
        std::thread::sleep(Duration::from_millis(200));
    }
    for (id, line) in [(1, format!("1 AES128CMAC {CMAC_HEX}")), (2, format!("2 SHA1 {SHA1_HEX}"))] {
        let out = ntpdig_keyed(id, &line);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("\"stratum\":2"),
            "ntpdig with key {id} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (id, line) in [(1, format!("1 AES128CMAC {WRONG_CMAC_HEX}")), (2, format!("2 SHA1 {WRONG_SHA1_HEX}"))] {
        let out = ntpdig_keyed(id, &line);
        assert!(
            !out.status.success(),
            "ntpdig accepted a reply for key {id} with a wrong secret: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    server.stop();
}

#[test]
fn the_wire_signed_reply_crypto_nak_and_drop() {
    let (port, metrics_port) = (free_port(), free_port());
    let keydir = tempfile::tempdir().unwrap();
    let keys = server_keys(keydir.path());
    let config = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        auth_config(&[format!("127.0.0.1:{port}")], &keys)
    );
    let mut server = Server::start(&config, port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let key = SymmetricKey::new(1, KeyType::Aes128Cmac, &unhex(CMAC_HEX)).unwrap();
    let t1 = now_ntp();
    let mut request = NtpPacket::client_request(4, t1).to_bytes().to_vec();
    request.resize(68, 0);
    key.sign(&mut request, 48).unwrap();

    let reply = exchange(addr, &request, Duration::from_secs(2)).expect("a signed reply");
    assert_eq!(reply.len(), 68, "header, key id, 16-byte CMAC");
    assert_eq!(reply[48..52], 1u32.to_be_bytes());
    assert!(key.verify(&reply[..48], &reply[52..]), "the reply's MAC verifies with key 1");
    assert_eq!(NtpPacket::parse(&reply).unwrap().origin_timestamp, t1);

    let mut forged = request.clone();
    forged[60] ^= 0x40;
    let nak = exchange(addr, &forged, Duration::from_secs(2)).expect("a crypto-NAK");
    assert_eq!((nak.len(), &nak[48..]), (52, &[0u8; 4][..]), "crypto-NAK: key id 0, no MAC");

    let mut crypto_nak_request = request[..52].to_vec();
    crypto_nak_request[48..].fill(0);
    assert!(
        exchange(addr, &crypto_nak_request, Duration::from_millis(500)).is_none(),
        "a crypto-NAK request is dropped"
    );
    // /metrics by kind: the signed reply and the crypto-NAK (the dropped request in neither).
    assert_eq!((auth_replies(metrics_port, "mac"), auth_replies(metrics_port, "crypto_nak")), (1, 1));
    assert_eq!(auth_replies(metrics_port, "nts") + auth_replies(metrics_port, "nts_nak"), 0);
    server.stop();
}

#[test]
fn without_keys_a_signed_request_is_still_dropped() {
    let port = free_port();
    let mut server = Server::start(&config(&[format!("127.0.0.1:{port}")], 1, "source = \"local\"\nstratum = 2"), port);
    let key = SymmetricKey::new(1, KeyType::Aes128Cmac, &unhex(CMAC_HEX)).unwrap();
    let mut request = NtpPacket::client_request(4, now_ntp()).to_bytes().to_vec();
    request.resize(68, 0);
    key.sign(&mut request, 48).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(exchange(addr, &request, Duration::from_millis(500)).is_none(), "BAD_INPUTS 10 without [auth]");
    server.stop();
}

#[test]
fn a_bad_key_file_is_one_line_naming_both_files_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ntp.keys");
    std::fs::write(&keys, "1 SHA1 fine\n\n7 SHA512 0123456789abcdef0123456789abcdef\n").unwrap();
    let text = format!(
        "{}\n[auth]\nkeys = \"{}\"\n",
        config(&["127.0.0.1:123".into()], 1, "source = \"local\""),
        keys.display()
    );
    let detail = format!("{}:3: key 7: unsupported type \"SHA512\"", keys.display());
    assert_refused(&text, 9, "auth.keys", &detail);

    std::fs::write(&keys, "5 AES128CMAC tooshort\n").unwrap();
    assert_refused(&text, 9, "auth.keys", &format!("{}:1: key 5: AES128CMAC needs a 16-byte key", keys.display()));

    let missing = text.replace("ntp.keys", "absent.keys");
    assert_refused(&missing, 9, "auth.keys", "cannot read");

    std::fs::write(&keys, "3 MD5 old\n").unwrap();
    let (ok, out, err, _) = check_config(&text);
    assert!(ok, "MD5 is accepted: {err}");
    assert!(format!("{out}{err}").contains("key 3 is MD5"), "and warned: {out} {err}");
}

/// stratumd as a client: `[[upstream]] key = N` signs its requests; it synchronises to a keyed
/// stratumd with the right secret, and never with a wrong one (the crypto-NAKs and the replies it
/// cannot verify count as lost), nor against a server without keys (which drops signed requests).
#[test]
fn a_keyed_upstream_synchronises_only_with_the_right_key() {
    let upstream_port = free_port();
    let keydir = tempfile::tempdir().unwrap();
    let keys = server_keys(keydir.path());
    let mut upstream = Server::start(&auth_config(&[format!("127.0.0.1:{upstream_port}")], &keys), upstream_port);
    let plain_port = free_port();
    let mut plain =
        Server::start(&config(&[format!("127.0.0.1:{plain_port}")], 1, "source = \"local\"\nstratum = 2"), plain_port);
    let wrong = keydir.path().join("wrong.keys");
    std::fs::write(&wrong, format!("1 AES128CMAC {WRONG_CMAC_HEX}\n")).unwrap();
    let client = |keyfile: &str, port: u16, control: &Path| {
        let listen = free_port();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{listen}\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n\
             [control]\nsocket = \"{}\"\n\n[auth]\nkeys = \"{keyfile}\"\n\n\
             [[upstream]]\naddress = \"127.0.0.1:{port}\"\niburst = true\nminpoll = -2\nmaxpoll = 0\nkey = 1\n",
            control.display()
        );
        Server::start(&text, listen)
    };
    let dir = tempfile::tempdir().unwrap();
    let good_ctl = dir.path().join("good.sock");
    let wrong_ctl = dir.path().join("wrong.sock");
    let plain_ctl = dir.path().join("plain.sock");
    let mut good = client(&keys, upstream_port, &good_ctl);
    let mut bad = client(&wrong.display().to_string(), upstream_port, &wrong_ctl);
    let mut unkeyed = client(&keys, plain_port, &plain_ctl);
    let tracking = wait_for(Duration::from_secs(20), "synchronised over key 1", &good_ctl, "tracking", |t| {
        t["synchronized"] == true
    });
    assert_eq!(tracking["stratum"].as_u64(), Some(3), "{tracking}");
    for (ctl, what) in [(&wrong_ctl, "a wrong secret"), (&plain_ctl, "a server without keys")] {
        let t = ctl_json(ctl, &["tracking"]).expect("tracking");
        assert_eq!(t["synchronized"], false, "synchronised with {what}: {t}");
        let sources = ctl_json(ctl, &["sources"]).expect("sources");
        assert!(
            sources.to_string().contains("\"reach\":\"0\"") || sources.to_string().contains("\"reach\":0"),
            "{what}: no reply counted: {sources}"
        );
    }
    for s in [&mut good, &mut bad, &mut unkeyed, &mut plain, &mut upstream] {
        s.stop();
    }
}

#[test]
fn an_upstream_key_must_be_in_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = server_keys(dir.path());
    let base = "[server]\nlisten = [\"127.0.0.1:123\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n";
    let upstream = "[[upstream]]\naddress = \"192.0.2.1\"\nkey = 4\n";
    let text = format!("{base}\n[auth]\nkeys = \"{keys}\"\n\n{upstream}");
    assert_refused(&text, 11, "upstream.key", &format!("key 4 is not in {keys}"));
    let text = format!("{base}\n{upstream}");
    assert_refused(&text, 8, "upstream.key", "key 4 needs [auth] keys");
}

/// The upstream side against a real server: chronyd serving with the same AES128 key answers
/// stratumd's signed requests with signed replies, which stratumd verifies and synchronises to.
#[test]
fn a_keyed_upstream_synchronises_to_chronyd() {
    if !require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let chrony_port = free_port();
    std::fs::write(dir.path().join("chrony.keys"), format!("1 AES128 HEX:{CMAC_HEX}\n")).unwrap();
    let conf = format!(
        "local stratum 1\nallow 127.0.0.1\nport {chrony_port}\nbindaddress 127.0.0.1\ncmdport 0\n\
         pidfile {d}/chronyd.pid\ndriftfile {d}/chrony.drift\nkeyfile {d}/chrony.keys\n"
    );
    let _chronyd = spawn_chronyd(None, dir.path(), &conf, &["-u", "root"]);
    let keys = server_keys(dir.path());
    let control = dir.path().join("control.sock");
    let listen = free_port();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{listen}\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n\
         [control]\nsocket = \"{}\"\n\n[auth]\nkeys = \"{keys}\"\n\n\
         [[upstream]]\naddress = \"127.0.0.1:{chrony_port}\"\niburst = true\nminpoll = -2\nmaxpoll = 0\nkey = 1\n",
        control.display()
    );
    let mut server = Server::start(&text, listen);
    let tracking = wait_for(Duration::from_secs(20), "synchronised to chronyd over key 1", &control, "tracking", |t| {
        t["synchronized"] == true
    });
    assert_eq!(tracking["stratum"].as_u64(), Some(2), "{tracking}");
    server.stop();
}
