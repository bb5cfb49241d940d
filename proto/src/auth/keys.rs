//! Symmetric keys and their MACs.
//!
//! AES-128-CMAC is RFC 8573's MAC: CMAC(key, packet). MD5 and SHA-1 are the legacy ntpd MACs,
//! digest(key || packet), which chrony, ntpd and NTPsec still speak; MD5 is accepted for old
//! clients only (the server warns when one is configured).
//!
//! Each key is prepared once: the AES key schedule and CMAC subkeys, or the hash state after the
//! key has been absorbed, so that a request costs one clone of that state and the packet's blocks.
//! Comparison is constant-time ([`subtle`]): how far a forged MAC matches leaks nothing.

use core::fmt;

use aes::Aes128;
use cmac::{Cmac, Mac as _};
use md5::Md5;
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq;

use super::{Authenticate, KeyRef, MacCheck};

/// The longest digest of any supported key type (SHA-1).
pub const MAX_DIGEST_LEN: usize = 20;

/// A key's MAC algorithm, as the key file names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RFC 8573: AES-128-CMAC, a 16-byte key and a 16-byte MAC.
    Aes128Cmac,
    /// Legacy SHA-1(key || packet), 20-byte MAC.
    Sha1,
    /// Legacy MD5(key || packet), 16-byte MAC. Broken as a hash; accepted, warned.
    Md5,
}

impl KeyType {
    /// The MAC's length in bytes (after the 4-byte key id).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Aes128Cmac | Self::Md5 => 16,
            Self::Sha1 => 20,
        }
    }

    /// The name the key file uses (ntpd's spelling).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Aes128Cmac => "AES128CMAC",
            Self::Sha1 => "SHA1",
            Self::Md5 => "MD5",
        }
    }

    /// Reads a type name as ntpd, NTPsec and chrony write it (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        const NAMES: [(&str, KeyType); 8] = [
            ("AES128CMAC", KeyType::Aes128Cmac),
            ("AES-128-CMAC", KeyType::Aes128Cmac),
            ("AES128", KeyType::Aes128Cmac), // chrony
            ("AES", KeyType::Aes128Cmac),    // NTPsec's Python tools
            ("SHA1", KeyType::Sha1),
            ("SHA-1", KeyType::Sha1),
            ("MD5", KeyType::Md5),
            ("M", KeyType::Md5), // ntpd's old one-letter name
        ];
        NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, t)| t)
    }
}

/// A key's prepared MAC state. Kept inline although CMAC's is the largest by far: a server has a
/// handful of keys, and a pointer chase per signed request buys nothing.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Cmac(Cmac<Aes128>),
    Sha1(Sha1),
    Md5(Md5),
}

/// One symmetric key, ready to compute MACs.
#[derive(Clone)]
pub struct SymmetricKey {
    id: u32,
    kind: KeyType,
    prepared: Prepared,
}

impl fmt::Debug for SymmetricKey {
    // Never the secret, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricKey").field("id", &self.id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl SymmetricKey {
    /// Prepares `secret` as key `id` of type `kind`; `None` if AES-128-CMAC is not given 16 bytes.
    pub fn new(id: u32, kind: KeyType, secret: &[u8]) -> Option<Self> {
        let prepared = match kind {
            KeyType::Aes128Cmac => Prepared::Cmac(Cmac::<Aes128>::new_from_slice(secret).ok()?),
            KeyType::Sha1 => Prepared::Sha1(Sha1::new_with_prefix(secret)),
            KeyType::Md5 => Prepared::Md5(Md5::new_with_prefix(secret)),
        };
        Some(Self { id, kind, prepared })
    }

    pub const fn id(&self) -> u32 {
        self.id
    }

    pub const fn kind(&self) -> KeyType {
        self.kind
    }

    /// The MAC of `data` into `out[..digest_len]`; returns the digest length.
    pub fn mac(&self, data: &[u8], out: &mut [u8; MAX_DIGEST_LEN]) -> usize {
        match &self.prepared {
            Prepared::Cmac(state) => {
                let mut m = state.clone();
                m.update(data);
                out[..16].copy_from_slice(&m.finalize().into_bytes());
                16
            }
            Prepared::Sha1(state) => {
                let mut h = state.clone();
                h.update(data);
                out[..20].copy_from_slice(&h.finalize());
                20
            }
            Prepared::Md5(state) => {
                let mut h = state.clone();
                h.update(data);
                out[..16].copy_from_slice(&h.finalize());
                16
            }
        }
    }

    /// Whether `digest` is this key's MAC of `data`, in constant time. A MAC of another length
    /// (truncated, or meant for another key type) is wrong.
    pub fn verify(&self, data: &[u8], digest: &[u8]) -> bool {
        let mut expected = [0u8; MAX_DIGEST_LEN];
        let len = self.mac(data, &mut expected);
        digest.len() == len && bool::from(expected[..len].ct_eq(digest))
    }

    /// A client's check of a reply (or any packet) signed with this key: header, this key's id
    /// and its MAC, nothing else. The header (what the MAC covers) when it verifies; `None` for a
    /// reply without a MAC, a crypto-NAK, another key's or a wrong MAC.
    pub fn verify_packet<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        const HEADER: usize = crate::packet::HEADER_LEN;
        if packet.len() != HEADER + 4 + self.kind.digest_len() || packet[HEADER..HEADER + 4] != self.id.to_be_bytes() {
            return None;
        }
        self.verify(&packet[..HEADER], &packet[HEADER + 4..]).then(|| &packet[..HEADER])
    }

    /// Appends this key's id and the MAC of `buf[..len]`; the new length, or `None` without room.
    pub fn sign(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        let end = len.checked_add(4 + self.kind.digest_len())?;
        if end > buf.len() {
            return None;
        }
        let mut digest = [0u8; MAX_DIGEST_LEN];
        let n = self.mac(&buf[..len], &mut digest);
        buf[len..len + 4].copy_from_slice(&self.id.to_be_bytes());
        buf[len + 4..end].copy_from_slice(&digest[..n]);
        Some(end)
    }
}

/// The server's keys, sorted by id. Each worker holds its own clone (a few hundred bytes a key),
/// so a lookup touches only that core's memory.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    keys: Vec<SymmetricKey>,
}

impl KeyTable {
    /// A table of `keys`; `None` if two share an id (the key file parser reports that with its line).
    pub fn new(mut keys: Vec<SymmetricKey>) -> Option<Self> {
        keys.sort_by_key(|k| k.id);
        if keys.windows(2).any(|w| w[0].id == w[1].id) {
            return None;
        }
        Some(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Key `id`, if known (key ids are public: the search need not be constant-time).
    pub fn get(&self, id: u32) -> Option<&SymmetricKey> {
        self.keys.binary_search_by_key(&id, |k| k.id).ok().map(|i| &self.keys[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &SymmetricKey> {
        self.keys.iter()
    }
}

impl Authenticate for KeyTable {
    fn check(&mut self, signed: &[u8], key_id: u32, digest: &[u8]) -> MacCheck {
        if self.keys.is_empty() {
            return MacCheck::Unsupported;
        }
        match self.keys.binary_search_by_key(&key_id, |k| k.id) {
            Ok(i) if self.keys[i].verify(signed, digest) => MacCheck::Valid(KeyRef(i as u32)),
            _ => MacCheck::Invalid,
        }
    }

    fn sign(&mut self, key: KeyRef, buf: &mut [u8], len: usize) -> Option<usize> {
        self.keys.get(key.0 as usize)?.sign(buf, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn mac_hex(key: &SymmetricKey, data: &[u8]) -> String {
        let mut out = [0u8; MAX_DIGEST_LEN];
        let n = key.mac(data, &mut out);
        out[..n].iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn aes_cmac_matches_rfc4493() {
        // RFC 4493 section 4, examples 1-4.
        let key = SymmetricKey::new(1, KeyType::Aes128Cmac, &hex("2b7e151628aed2a6abf7158809cf4f3c")).unwrap();
        let m = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
             30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710");
        assert_eq!(mac_hex(&key, &[]), "bb1d6929e95937287fa37d129b756746");
        assert_eq!(mac_hex(&key, &m[..16]), "070a16b46b4d4144f79bdd9dd04a287c");
        assert_eq!(mac_hex(&key, &m[..40]), "dfa66747de9ae63030ca32611497c827");
        assert_eq!(mac_hex(&key, &m), "51f0bebf7e3b9d92fc49741779363cfe");
    }

    #[test]
    fn macs_match_ntpsec() {
        // Computed with NTPsec's own MAC code (python3: ntp.ntpc.mac(bytes(range(48)), key, type)),
        // the code its ntpd and ntpdig use.
        let payload: Vec<u8> = (0..48).collect();
        let cmac = SymmetricKey::new(1, KeyType::Aes128Cmac, &hex("000102030405060708090a0b0c0d0e0f")).unwrap();
        assert_eq!(mac_hex(&cmac, &payload), "5247121db0e50733fb83bab08fbba8ea");
        let sha1 = SymmetricKey::new(2, KeyType::Sha1, b"sha1secret").unwrap();
        assert_eq!(mac_hex(&sha1, &payload), "ccd18071c2b6bd8c81743d80c134b482fea50471");
        let md5 = SymmetricKey::new(3, KeyType::Md5, b"md5secret").unwrap();
        assert_eq!(mac_hex(&md5, &payload), "5c2fea00dd1389c40084f65d1248b271");
    }

    #[test]
    fn legacy_macs_are_the_digest_of_key_then_packet() {
        // FIPS 180 / RFC 1321 "abc" vectors, split as key "a" and packet "bc".
        let sha1 = SymmetricKey::new(1, KeyType::Sha1, b"a").unwrap();
        assert_eq!(mac_hex(&sha1, b"bc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let md5 = SymmetricKey::new(1, KeyType::Md5, b"a").unwrap();
        assert_eq!(mac_hex(&md5, b"bc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn cmac_needs_a_16_byte_key() {
        assert!(SymmetricKey::new(1, KeyType::Aes128Cmac, &[0; 15]).is_none());
        assert!(SymmetricKey::new(1, KeyType::Aes128Cmac, &[0; 32]).is_none());
        assert!(SymmetricKey::new(1, KeyType::Aes128Cmac, &[0; 16]).is_some());
    }

    #[test]
    fn verify_refuses_wrong_truncated_and_extended_macs() {
        let key = SymmetricKey::new(9, KeyType::Sha1, b"secret").unwrap();
        let mut buf = [7u8; 48 + 24];
        assert_eq!(key.sign(&mut buf, 48), Some(72));
        assert_eq!(buf[48..52], 9u32.to_be_bytes());
        assert!(key.verify(&buf[..48], &buf[52..72]));
        assert!(!key.verify(&buf[..48], &buf[52..68]), "truncated");
        let mut longer = buf[52..72].to_vec();
        longer.push(0);
        assert!(!key.verify(&buf[..48], &longer), "extended");
        for i in 52..72 {
            let mut bad = buf;
            bad[i] ^= 1;
            assert!(!key.verify(&bad[..48], &bad[52..72]), "bit flipped at {i}");
        }
        let mut changed = buf;
        changed[40] ^= 0x80;
        assert!(!key.verify(&changed[..48], &changed[52..72]), "signed bytes changed");
        assert_eq!(key.sign(&mut [0u8; 71], 48), None, "no room");
    }

    #[test]
    fn a_client_verifies_a_signed_reply() {
        let key = SymmetricKey::new(4, KeyType::Aes128Cmac, &[5; 16]).unwrap();
        let mut reply = [0x24u8; 68];
        key.sign(&mut reply, 48).unwrap();
        assert_eq!(key.verify_packet(&reply), Some(&reply[..48]));
        let other = SymmetricKey::new(5, KeyType::Aes128Cmac, &[5; 16]).unwrap();
        assert_eq!(other.verify_packet(&reply), None, "another key id");
        let mut nak = [0x24u8; 52];
        nak[48..].fill(0);
        assert_eq!(key.verify_packet(&nak), None, "crypto-NAK");
        assert_eq!(key.verify_packet(&reply[..48]), None, "no MAC");
        let mut bad = reply;
        bad[67] ^= 1;
        assert_eq!(key.verify_packet(&bad), None, "wrong MAC");
    }

    #[test]
    fn table_checks_by_key_id() {
        let a = SymmetricKey::new(5, KeyType::Aes128Cmac, &[1; 16]).unwrap();
        let b = SymmetricKey::new(2, KeyType::Sha1, b"two").unwrap();
        let mut table = KeyTable::new(vec![a.clone(), b.clone()]).unwrap();
        let mut buf = [3u8; 48 + 20];
        a.sign(&mut buf, 48).unwrap();
        let MacCheck::Valid(r) = table.check(&buf[..48], 5, &buf[52..68]) else { panic!("key 5 valid") };
        let mut reply = [9u8; 68];
        assert_eq!(table.sign(r, &mut reply, 48), Some(68));
        assert!(a.verify(&reply[..48], &reply[52..68]));
        assert_eq!(table.check(&buf[..48], 2, &buf[52..68]), MacCheck::Invalid, "right MAC, other key");
        assert_eq!(table.check(&buf[..48], 6, &buf[52..68]), MacCheck::Invalid, "unknown key");
        assert_eq!(KeyTable::default().check(&buf[..48], 5, &buf[52..68]), MacCheck::Unsupported);
        assert!(KeyTable::new(vec![a.clone(), a]).is_none(), "duplicate id");
    }

    #[test]
    fn type_names() {
        for (name, t) in [
            ("aes128cmac", KeyType::Aes128Cmac),
            ("AES128", KeyType::Aes128Cmac),
            ("sha1", KeyType::Sha1),
            ("M", KeyType::Md5),
        ] {
            assert_eq!(KeyType::from_name(name), Some(t), "{name}");
        }
        assert_eq!(KeyType::from_name("SHA256"), None);
    }
}
