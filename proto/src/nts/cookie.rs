//! NTS cookies and the master keys that seal them (RFC 8915 section 6, as chrony and ntpd-rs do
//! it): a cookie is `key id (4) || nonce (16) || AEAD(master key, nonce, ad = key id,
//! algorithm (2) || 0 (2) || C2S key || S2C key)`. Any server holding the same master keys opens
//! any cookie, so a fleet given one key file serves every client of every member.
//!
//! The master keys rotate: [`KeySet`] keeps the newest few, seals with the newest and opens with
//! whichever the cookie names, so a cookie outlives a rotation or two. The set's text form is the
//! key file a restart reads back (BAD_INPUTS 49). Pure: every key and nonce is the caller's.

use core::fmt;

use super::aead::TAG_LEN;
use super::siv::{Batch, SivKey, TagCheck};

/// Length of a master key (AEAD_AES_SIV_CMAC_256's).
pub const MASTER_KEY_LEN: usize = 32;
/// Longest per-client key (AES-SIV-CMAC-256's 32 bytes; AES-128-GCM-SIV's 16 are followed by
/// zeros, so a cookie has one length whatever its client's AEAD).
pub const MAX_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 16;
const PLAINTEXT_LEN: usize = 4 + 2 * MAX_KEY_LEN;
/// A cookie's length: id, nonce, tag and the sealed keys. A multiple of 4, as a field body must be.
pub const COOKIE_LEN: usize = 4 + NONCE_LEN + TAG_LEN + PLAINTEXT_LEN;

/// Most cookies one reply carries (chrony and ntpd-rs send at most 8).
pub const MAX_COOKIES: usize = super::siv::MAX_BATCH;

/// The fresh cookies for one reply, sealed while its request is checked
/// ([`KeySet::seal_fresh`]): a worker's scratch, reused request after request.
#[derive(Clone)]
pub struct FreshCookies {
    cookies: [[u8; COOKIE_LEN]; MAX_COOKIES],
    len: usize,
}

impl Default for FreshCookies {
    fn default() -> Self {
        Self { cookies: [[0; COOKIE_LEN]; MAX_COOKIES], len: 0 }
    }
}

impl fmt::Debug for FreshCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshCookies").field("len", &self.len).finish_non_exhaustive()
    }
}

impl FreshCookies {
    /// The cookies the last [`KeySet::seal_fresh`] sealed.
    pub fn get(&self) -> &[[u8; COOKIE_LEN]] {
        &self.cookies[..self.len]
    }
}

/// The keys one NTS-KE handshake gave a client (from the TLS exporter), which its cookies carry.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeys {
    /// The AEAD's IANA number (AEAD_AES_SIV_CMAC_256 or AEAD_AES_128_GCM_SIV).
    pub algorithm: u16,
    /// The keys, each the algorithm's key length long and zero after it.
    pub c2s: [u8; MAX_KEY_LEN],
    pub s2c: [u8; MAX_KEY_LEN],
}

impl ClientKeys {
    /// The algorithm's key length (`None` for an algorithm proto does not have).
    pub fn key_len(&self) -> Option<usize> {
        super::aead::key_len(self.algorithm).filter(|&n| n <= MAX_KEY_LEN)
    }
}

impl fmt::Debug for ClientKeys {
    // Never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// One master key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub id: u32,
    pub key: [u8; MASTER_KEY_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Seals `keys` into `out` with `nonce` (fresh random bytes for every cookie).
    pub fn seal(&self, keys: &ClientKeys, nonce: &[u8; NONCE_LEN], out: &mut [u8; COOKIE_LEN]) -> bool {
        seal_with(self.id, &SivKey::new(&self.key), keys, nonce, out)
    }
}

fn seal_with(id: u32, key: &SivKey, keys: &ClientKeys, nonce: &[u8; NONCE_LEN], out: &mut [u8; COOKIE_LEN]) -> bool {
    let id = id.to_be_bytes();
    out[..4].copy_from_slice(&id);
    out[4..4 + NONCE_LEN].copy_from_slice(nonce);
    let sealed = &mut out[4 + NONCE_LEN..];
    sealed[TAG_LEN..].copy_from_slice(&plaintext_of(keys));
    key.seal(&id, nonce, sealed)
}

/// What a cookie seals: `algorithm (2) || 0 (2) || C2S key || S2C key`.
fn plaintext_of(keys: &ClientKeys) -> [u8; PLAINTEXT_LEN] {
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    plaintext[..2].copy_from_slice(&keys.algorithm.to_be_bytes());
    plaintext[4..4 + MAX_KEY_LEN].copy_from_slice(&keys.c2s);
    plaintext[4 + MAX_KEY_LEN..].copy_from_slice(&keys.s2c);
    plaintext
}

/// Opens a cookie sealed with `key`; `None` if it was not, or was changed.
fn open_with(key: &SivKey, cookie: &[u8]) -> Option<ClientKeys> {
    let cookie: &[u8; COOKIE_LEN] = cookie.try_into().ok()?;
    let (id, rest) = cookie.split_at(4);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let mut buf = [0u8; TAG_LEN + PLAINTEXT_LEN];
    buf.copy_from_slice(sealed);
    if !key.open(id, nonce, &mut buf) {
        return None;
    }
    let plaintext = &buf[TAG_LEN..];
    let algorithm = u16::from_be_bytes([plaintext[0], plaintext[1]]);
    let mut keys = ClientKeys { algorithm, c2s: [0; MAX_KEY_LEN], s2c: [0; MAX_KEY_LEN] };
    keys.c2s.copy_from_slice(&plaintext[4..4 + MAX_KEY_LEN]);
    keys.s2c.copy_from_slice(&plaintext[4 + MAX_KEY_LEN..]);
    Some(keys)
}

/// The master keys in use, newest first, at most `keep` of them.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<MasterKey>,
    /// Each key prepared once (key schedules, CMAC subkeys), in `keys`' order: a request's
    /// cookie is opened and its fresh ones sealed without any key setup.
    prepared: Vec<SivKey>,
    keep: usize,
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys && self.keep == other.keep
    }
}

impl Eq for KeySet {}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.keys).field("keep", &self.keep).finish()
    }
}

/// A key file line the parser refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySetError {
    /// 1-based line.
    pub line: usize,
    pub message: &'static str,
}

impl fmt::Display for KeySetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

impl KeySet {
    /// A set holding `first` alone, keeping at most `keep` (at least 1) keys across rotations.
    pub fn new(first: MasterKey, keep: usize) -> Self {
        Self::from_keys(vec![first], keep.max(1))
    }

    fn from_keys(keys: Vec<MasterKey>, keep: usize) -> Self {
        let prepared = keys.iter().map(|k| SivKey::new(&k.key)).collect();
        Self { keys, prepared, keep }
    }

    /// The key new cookies are sealed with.
    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Makes `key` (fresh random bytes) current under the next id; the oldest beyond `keep` is
    /// forgotten, and with it every cookie it sealed.
    pub fn rotate(&mut self, key: [u8; MASTER_KEY_LEN]) {
        let id = self.keys[0].id.wrapping_add(1);
        self.prepared.insert(0, SivKey::new(&key));
        self.keys.insert(0, MasterKey { id, key });
        self.keys.truncate(self.keep);
        self.prepared.truncate(self.keep);
    }

    /// Seals a cookie for `keys` with the current key.
    pub fn seal(&self, keys: &ClientKeys, nonce: &[u8; NONCE_LEN], out: &mut [u8; COOKIE_LEN]) -> bool {
        seal_with(self.keys[0].id, &self.prepared[0], keys, nonce, out)
    }

    /// Seals `n` (at most [`MAX_COOKIES`]) fresh cookies for `keys` with the current key into
    /// `fresh`, each with the next of `nonces`, in one pass; with `check` (a request's
    /// authenticator under an AES-SIV-CMAC-256 client key), checks it in the same pass
    /// ([`SivKey::seal_batch_checking`]). Returns false when the check fails (the cookies are
    /// sealed all the same, and the caller drops them).
    pub fn seal_fresh(
        &self,
        keys: &ClientKeys,
        n: usize,
        mut nonces: impl FnMut() -> [u8; NONCE_LEN],
        fresh: &mut FreshCookies,
        check: Option<TagCheck<'_>>,
    ) -> bool {
        fresh.len = n.min(MAX_COOKIES);
        // One alone: the single seal costs less than a batch's bookkeeping.
        if check.is_none() && fresh.len == 1 {
            return self.seal(keys, &nonces(), &mut fresh.cookies[0]);
        }
        let id = self.keys[0].id.to_be_bytes();
        let plaintext = plaintext_of(keys);
        for cookie in &mut fresh.cookies[..fresh.len] {
            cookie[..4].copy_from_slice(&id);
            cookie[4..4 + NONCE_LEN].copy_from_slice(&nonces());
        }
        let batch = Batch {
            ad: &id,
            plaintext: &plaintext,
            nonce: 4..4 + NONCE_LEN,
            sealed_at: 4 + NONCE_LEN,
            seals: &mut fresh.cookies[..fresh.len],
        };
        match check {
            Some(check) => self.prepared[0].seal_batch_checking(batch, check),
            None => self.prepared[0].seal_batch(batch),
        }
    }

    /// Opens a cookie sealed by any key still held; `None` for an unknown key id (rotated away,
    /// or another fleet's), a changed cookie or a wrong length.
    pub fn open(&self, cookie: &[u8]) -> Option<ClientKeys> {
        let id = u32::from_be_bytes(cookie.get(..4)?.try_into().ok()?);
        let i = self.keys.iter().position(|k| k.id == id)?;
        open_with(&self.prepared[i], cookie)
    }

    /// The key file: one `ID HEX` line per key, newest first.
    pub fn to_text(&self) -> String {
        use fmt::Write as _;
        let mut text = String::from("# stratumd NTS master keys, newest first: ID HEX (keep this file secret)\n");
        for k in &self.keys {
            let _ = write!(text, "{} ", k.id);
            for b in k.key {
                let _ = write!(text, "{b:02x}");
            }
            text.push('\n');
        }
        text
    }

    /// Reads [`KeySet::to_text`]'s form back; `keep` as in [`KeySet::new`] (extra keys dropped).
    pub fn from_text(text: &str, keep: usize) -> Result<Self, KeySetError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message| KeySetError { line: i + 1, message };
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (id, hex) = line.split_once(char::is_whitespace).ok_or(err("expected `ID HEX`"))?;
            let id: u32 = id.parse().map_err(|_| err("the key id is not a number"))?;
            let hex = hex.trim();
            if hex.len() != 2 * MASTER_KEY_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("a master key is 64 hex digits"));
            }
            let mut key = [0u8; MASTER_KEY_LEN];
            for (j, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).map_err(|_| err("bad hex"))?;
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(err("a key id appears twice"));
            }
            keys.push(MasterKey { id, key });
        }
        if keys.is_empty() {
            return Err(KeySetError { line: text.lines().count().max(1), message: "no keys" });
        }
        let keep = keep.max(1);
        keys.truncate(keep);
        Ok(Self::from_keys(keys, keep))
    }
}

#[cfg(test)]
mod tests {
    use super::super::aead::{Aead, AesSivCmac256};
    use super::*;

    fn client() -> ClientKeys {
        ClientKeys { algorithm: 15, c2s: [0xC2; 32], s2c: [0x5C; 32] }
    }

    fn cookie(set: &KeySet, nonce: u8) -> [u8; COOKIE_LEN] {
        let mut out = [0u8; COOKIE_LEN];
        assert!(set.seal(&client(), &[nonce; 16], &mut out));
        out
    }

    #[test]
    fn cookie_format_is_id_nonce_then_sealed_keys() {
        assert_eq!(COOKIE_LEN, 104);
        assert_eq!(COOKIE_LEN % 4, 0);
        let set = KeySet::new(MasterKey { id: 0x0102_0304, key: [9; 32] }, 3);
        let c = cookie(&set, 7);
        assert_eq!(c[..4], [1, 2, 3, 4]);
        assert_eq!(c[4..20], [7; 16]);
        // The sealed part is exactly AES-SIV(master, AD = id, nonce) over the plaintext.
        let mut expected = [0u8; TAG_LEN + PLAINTEXT_LEN];
        expected[TAG_LEN..TAG_LEN + 2].copy_from_slice(&15u16.to_be_bytes());
        expected[TAG_LEN + 4..TAG_LEN + 36].fill(0xC2);
        expected[TAG_LEN + 36..].fill(0x5C);
        assert!(AesSivCmac256::seal(&[9; 32], &[7; 16], &[1, 2, 3, 4], &mut expected));
        assert_eq!(c[20..], expected[..]);
        assert_eq!(set.open(&c), Some(client()));
    }

    #[test]
    fn fresh_cookies_are_the_cookies_seal_makes_one_by_one() {
        let mut set = KeySet::new(MasterKey { id: 5, key: [9; 32] }, 3);
        set.rotate([3; 32]);
        let mut fresh = FreshCookies::default();
        for n in [0, 1, 2, 8, 9] {
            let mut k = 0u8;
            assert!(set.seal_fresh(
                &client(),
                n,
                || {
                    k += 1;
                    [k; 16]
                },
                &mut fresh,
                None
            ));
            assert_eq!(fresh.get().len(), n.min(MAX_COOKIES));
            for (i, c) in fresh.get().iter().enumerate() {
                assert_eq!(*c, cookie(&set, i as u8 + 1), "cookie {i} of {n}");
                assert_eq!(set.open(c), Some(client()));
            }
        }
        // With a check: its verdict, and the same cookies either way.
        let client_key = [0x77; 32];
        let mut tag = [0u8; TAG_LEN];
        assert!(AesSivCmac256::seal(&client_key, &[1; 16], b"associated", &mut tag));
        for (ad, ok) in [(&b"associated"[..], true), (&b"associatee"[..], false)] {
            let check = TagCheck { key: &client_key, ad, nonce: &[1; 16], tag: &tag };
            let mut k = 0u8;
            assert_eq!(
                set.seal_fresh(
                    &client(),
                    2,
                    || {
                        k += 1;
                        [k; 16]
                    },
                    &mut fresh,
                    Some(check)
                ),
                ok
            );
            assert_eq!(fresh.get(), [cookie(&set, 1), cookie(&set, 2)]);
        }
    }

    #[test]
    fn changed_unknown_and_short_cookies_do_not_open() {
        let set = KeySet::new(MasterKey { id: 1, key: [9; 32] }, 3);
        let c = cookie(&set, 1);
        for i in [0, 5, 30, COOKIE_LEN - 1] {
            let mut bad = c;
            bad[i] ^= 0x80;
            assert_eq!(set.open(&bad), None, "byte {i} changed");
        }
        assert_eq!(set.open(&c[..COOKIE_LEN - 4]), None);
        assert_eq!(set.open(&[]), None);
        let other = KeySet::new(MasterKey { id: 1, key: [8; 32] }, 3);
        assert_eq!(other.open(&c), None, "same id, another fleet's key");
    }

    #[test]
    fn rotation_keeps_the_last_few_keys() {
        let mut set = KeySet::new(MasterKey { id: 10, key: [1; 32] }, 2);
        let old = cookie(&set, 1);
        set.rotate([2; 32]);
        assert_eq!(set.current().id, 11);
        let newer = cookie(&set, 2);
        assert_eq!(newer[..4], 11u32.to_be_bytes());
        assert!(set.open(&old).is_some(), "one rotation later the old cookie still opens");
        set.rotate([3; 32]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.open(&old), None, "two rotations later (keep 2) it is gone");
        assert!(set.open(&newer).is_some());
    }

    #[test]
    fn the_key_file_round_trips_so_a_restart_opens_old_cookies() {
        let mut set = KeySet::new(MasterKey { id: 4_000_000_000, key: [0xA5; 32] }, 3);
        set.rotate([0x5A; 32]);
        let c = cookie(&set, 3);
        let text = set.to_text();
        let back = KeySet::from_text(&text, 3).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.open(&c), Some(client()));
        let fleet_member = KeySet::from_text(&text, 3).unwrap();
        assert_eq!(fleet_member.open(&c), Some(client()), "any server given the file opens it");
    }

    #[test]
    fn bad_key_files_name_the_line() {
        let good = format!("1 {}\n", "ab".repeat(32));
        assert!(KeySet::from_text(&good, 1).is_ok());
        for (text, line, needle) in [
            ("", 1, "no keys"),
            ("# only a comment\n", 1, "no keys"),
            ("x abcd\n", 1, "not a number"),
            ("1\n", 1, "expected"),
            ("1 abcd\n", 1, "64 hex"),
        ] {
            let e = KeySet::from_text(text, 2).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        let twice = format!("{good}{good}");
        assert_eq!(
            KeySet::from_text(&twice, 2).unwrap_err(),
            KeySetError { line: 2, message: "a key id appears twice" }
        );
        let non_ascii = format!("1 {}\u{e9}\n", "ab".repeat(31));
        assert!(KeySet::from_text(&non_ascii, 2).is_err());
    }
}
