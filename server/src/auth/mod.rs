//! `[auth]`: the symmetric keys the data plane checks MACs with (RFC 8573), read from an
//! ntp.keys-format file when the configuration is (before privileges are dropped), parsed by
//! `stratum_proto::auth`. Each worker gets its own clone of the table.
//!
//! ```toml
//! [auth]
//! keys = "/etc/stratumd/ntp.keys"   # lines: ID TYPE KEY, e.g. 1 AES128CMAC 0f1e...(32 hex digits)
//! ```

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use stratum_proto::auth::{parse_keys, KeyTable, KeyType};
use stratum_proto::nts::KeySet;

pub mod shared;
mod worker;
pub use shared::SharedKeys;
pub use worker::WorkerAuth;

/// Master keys kept to open cookies: the current one and the two before it.
const KEEP_MASTER_KEYS: usize = 3;
/// `[nts] key-rotation`'s default (chrony rotates weekly; the issue asks for a day).
const DEFAULT_ROTATION_S: f64 = 86_400.0;

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// The key file; absent: no keys, and a request with a MAC is dropped as before (BAD_INPUTS 10).
    #[serde(default, deserialize_with = "key_file")]
    pub keys: Option<KeyFile>,
}

/// A key file as read at start.
#[derive(Clone, Debug)]
pub struct KeyFile {
    pub path: PathBuf,
    pub table: KeyTable,
    /// Whether any other user may read it (warned: the secrets are in it).
    pub world_readable: bool,
}

impl AuthConfig {
    /// The workers' key table (empty without `keys`).
    pub fn table(&self) -> KeyTable {
        self.keys.as_ref().map(|k| k.table.clone()).unwrap_or_default()
    }

    /// What is valid but should not be: MD5 keys (RFC 8573 deprecates them) and a key file other
    /// users can read. One message each, for `auth.keys`.
    pub fn warnings(&self) -> Vec<String> {
        let Some(file) = &self.keys else { return Vec::new() };
        let path = file.path.display();
        let mut warnings = Vec::new();
        let md5: Vec<String> =
            file.table.iter().filter(|k| k.kind() == KeyType::Md5).map(|k| k.id().to_string()).collect();
        if !md5.is_empty() {
            warnings.push(format!(
                "{path}: key {} is MD5, which is broken (RFC 8573); accepted for old clients only, move them to AES128CMAC",
                md5.join(", ")
            ));
        }
        if file.world_readable {
            warnings.push(format!("{path} is readable by every user; its keys are secrets (chmod 600)"));
        }
        if file.table.is_empty() {
            warnings.push(format!("{path} holds no keys: every request with a MAC gets a crypto-NAK"));
        }
        warnings
    }
}

/// `[nts]`: Network Time Security on the data plane (RFC 8915).
///
/// ```toml
/// [nts]
/// master-keys = "/var/lib/stratumd/nts.keys"   # ID HEX lines, newest first
/// ```
///
/// The cookies clients present are opened with these master keys, so every server given the same
/// file (a fleet, or this one after a restart) accepts them. The NTS-KE server that hands out
/// cookies is `listen` (with `certificate` and `private-key`); the cookies it hands out and the
/// ones on the data plane are sealed with these keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NtsConfig {
    /// The master key file (made, mode 0600, at start if it does not exist); absent: no NTS (an
    /// NTS request is answered as a basic one).
    #[serde(default, deserialize_with = "master_keys")]
    pub master_keys: Option<MasterKeys>,
    /// The NTS-KE server's address (port 4460 by convention); absent: no NTS-KE server.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// The KE server's certificate chain (PEM), leaf first.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// How often a fresh master key is made (seconds; `"off"`: never, for fleet members that
    /// take the file from the one that rotates it).
    #[serde(default = "default_rotation", deserialize_with = "rotation")]
    pub key_rotation: Option<f64>,
    /// The AEADs (IANA ids) the NTS-KE server may choose for a client's keys, as chrony's
    /// `ntsaeads`: 30 (AES-128-GCM-SIV) and 15 (AES-SIV-CMAC-256); the server takes the first of
    /// the client's list that is here, so the order does not matter. Cookies are AES-SIV-CMAC
    /// under the master keys whatever this says.
    #[serde(default = "default_aeads", deserialize_with = "aeads")]
    pub aeads: Vec<u16>,
}

impl Default for NtsConfig {
    fn default() -> Self {
        Self {
            master_keys: None,
            listen: None,
            certificate: None,
            private_key: None,
            key_rotation: default_rotation(),
            aeads: default_aeads(),
        }
    }
}

fn default_aeads() -> Vec<u16> {
    stratum_proto::nts::aead::SUPPORTED.to_vec()
}

fn aeads<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let ids = Vec::<u16>::deserialize(d)?;
    if ids.is_empty() {
        return Err(de::Error::custom("at least one AEAD: 30 (AES-128-GCM-SIV) or 15 (AES-SIV-CMAC-256)"));
    }
    if let Some(id) = ids.iter().find(|id| !stratum_proto::nts::aead::SUPPORTED.contains(id)) {
        return Err(de::Error::custom(format!(
            "AEAD {id} is not one stratumd has: 30 (AES-128-GCM-SIV), 15 (AES-SIV-CMAC-256)"
        )));
    }
    Ok(ids)
}

fn default_rotation() -> Option<f64> {
    Some(DEFAULT_ROTATION_S)
}

fn rotation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    let seconds = crate::config::sync::parse_duration(&text).map_err(de::Error::custom)?;
    if !(1.0..=365.0 * 86_400.0).contains(&seconds) {
        return Err(de::Error::custom(format!("{seconds} s is outside 1 s..=365 days")));
    }
    Ok(Some(seconds))
}

impl NtsConfig {
    /// `key-rotation` as a duration, if on.
    pub fn rotation(&self) -> Option<std::time::Duration> {
        self.key_rotation.map(std::time::Duration::from_secs_f64)
    }

    /// `listen` needs the certificate, the key and the master keys, and the certificate and key
    /// must load and go together (checked now, so that a bad one is a configuration error).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.listen.is_none() {
            return Ok(());
        }
        if self.master_keys.is_none() {
            return Err(("nts.listen", "the NTS-KE server needs master-keys (the cookies' keys)".into()));
        }
        let Some(certificate) = &self.certificate else {
            return Err(("nts.listen", "the NTS-KE server needs certificate = \"PEM FILE\"".into()));
        };
        let Some(key) = &self.private_key else {
            return Err(("nts.listen", "the NTS-KE server needs private-key = \"PEM FILE\"".into()));
        };
        crate::mgmt::ntske::tls_config(certificate, key).map(|_| ()).map_err(|e| ("nts.certificate", format!("{e:#}")))
    }
}

/// The master key file as read at start.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    pub path: PathBuf,
    pub set: KeySet,
    /// The file did not exist: `set` is a fresh random key, written when stratumd starts
    /// (not by `--check-config`).
    pub created: bool,
}

fn master_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MasterKeys>, D::Error> {
    let path = PathBuf::from(String::deserialize(d)?);
    read_master_keys(path).map(Some).map_err(de::Error::custom)
}

fn read_master_keys(path: PathBuf) -> Result<MasterKeys, String> {
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && path.parent().is_none_or(|d| d.as_os_str().is_empty() || d.is_dir()) =>
        {
            let id = rand::random::<u32>();
            let set = KeySet::new(stratum_proto::nts::MasterKey { id, key: shared::random_key() }, KEEP_MASTER_KEYS);
            return Ok(MasterKeys { path, set, created: true });
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let set = KeySet::from_text(&text, KEEP_MASTER_KEYS).map_err(|e| format!("{}:{e}", path.display()))?;
    Ok(MasterKeys { path, set, created: false })
}

/// Reads and parses the key file named by `keys`; a bad line is `PATH:LINE: key ID: what`.
fn key_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyFile>, D::Error> {
    let path = PathBuf::from(String::deserialize(d)?);
    read_key_file(path).map(Some).map_err(de::Error::custom)
}

fn read_key_file(path: PathBuf) -> Result<KeyFile, String> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = parse_keys(&text).map_err(|e| format!("{}:{e}", path.display()))?;
    let table = KeyTable::new(entries.into_iter().map(|e| e.key).collect())
        .ok_or_else(|| format!("{}: a key id is defined twice", path.display()))?;
    let world_readable = std::fs::metadata(&path).map(|m| m.mode() & 0o004 != 0).unwrap_or(false);
    Ok(KeyFile { path, table, world_readable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_keys_and_warns_about_md5() {
        let f = file("1 AES128CMAC 000102030405060708090a0b0c0d0e0f\n2 MD5 oldsecret\n3 M other\n");
        let keys = read_key_file(f.path().into()).unwrap();
        let auth = AuthConfig { keys: Some(keys) };
        assert_eq!(auth.table().len(), 3);
        let warnings = auth.warnings();
        assert!(warnings.iter().any(|w| w.contains("key 2, 3 is MD5")), "{warnings:?}");
    }

    #[test]
    fn a_bad_line_names_file_line_and_key() {
        let f = file("# keys\n1 SHA1 good\n7 SHA512 nope\n");
        let e = read_key_file(f.path().into()).unwrap_err();
        assert_eq!(
            e,
            format!("{}:3: key 7: unsupported type \"SHA512\" (supported: AES128CMAC, SHA1, MD5)", f.path().display())
        );
        let e = read_key_file("/nonexistent/ntp.keys".into()).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/ntp.keys: "), "{e}");
    }

    #[test]
    fn master_keys_are_read_and_bad_ones_named() {
        let f = file(&format!("# keys\n7 {}\n6 {}\n", "ab".repeat(32), "cd".repeat(32)));
        let m = read_master_keys(f.path().into()).unwrap();
        assert_eq!((m.set.current().id, m.set.len()), (7, 2));
        let f = file("7 abcd\n");
        let e = read_master_keys(f.path().into()).unwrap_err();
        assert_eq!(e, format!("{}:1: a master key is 64 hex digits", f.path().display()));
    }

    /// `[nts] aeads`: chrony's `ntsaeads` ids; default both, ours only, never empty.
    #[test]
    fn nts_aeads_are_ids_we_have() {
        let nts = |text: &str| toml::from_str::<NtsConfig>(text).map(|c| c.aeads).map_err(|e| e.to_string());
        assert_eq!(nts(""), Ok(vec![30, 15]));
        assert_eq!(nts("aeads = [15]"), Ok(vec![15]));
        assert_eq!(nts("aeads = [15, 30]"), Ok(vec![15, 30]));
        assert!(nts("aeads = []").unwrap_err().contains("at least one AEAD"));
        assert!(nts("aeads = [15, 16]").unwrap_err().contains("AEAD 16 is not one stratumd has"));
    }

    #[test]
    fn no_section_no_keys() {
        assert!(AuthConfig::default().table().is_empty());
        assert!(AuthConfig::default().warnings().is_empty());
    }
}
