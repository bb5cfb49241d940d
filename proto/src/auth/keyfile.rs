//! The ntp.keys format ntpd, NTPsec and chrony read: one key a line, `ID TYPE KEY`, `#` to the end
//! of a line a comment.
//!
//! The key is read as ntpd reads it: 20 characters or fewer are the ASCII secret itself, longer
//! ones hex. chrony's explicit prefixes `HEX:` and `ASCII:` are accepted too, as is chrony's
//! two-column `ID KEY` (type MD5). Parsing is pure (the caller reads the file); every error names
//! its line and, when it got that far, the key id.

use core::fmt;

use super::keys::{KeyType, SymmetricKey};

/// Longest secret accepted (ntpd decodes at most 64 bytes of hex).
const MAX_SECRET_LEN: usize = 64;
/// ntpd's rule: a key of at most this many characters is ASCII, a longer one hex.
const MAX_ASCII_LEN: usize = 20;

/// One key as the file gives it.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// 1-based line of the file.
    pub line: usize,
    pub key: SymmetricKey,
}

/// A line the parser refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileError {
    /// 1-based line of the file.
    pub line: usize,
    /// The key id, when the line got that far.
    pub key_id: Option<u32>,
    pub message: String,
}

impl fmt::Display for KeyFileError {
    /// `LINE: key ID: MESSAGE` (the caller puts the file name in front).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_id {
            Some(id) => write!(f, "{}: key {}: {}", self.line, id, self.message),
            None => write!(f, "{}: {}", self.line, self.message),
        }
    }
}

/// Parses a whole key file; the first bad line is the error.
pub fn parse_keys(text: &str) -> Result<Vec<KeyEntry>, KeyFileError> {
    let mut entries: Vec<KeyEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("");
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let err = |key_id, message: String| KeyFileError { line, key_id, message };
        let id = match fields[0].parse::<u32>() {
            Ok(0) => return Err(err(None, "key id 0 is reserved (crypto-NAK); use 1 to 4294967295".into())),
            Ok(id) => id,
            Err(_) => return Err(err(None, format!("key id {:?} is not a number from 1 to 4294967295", fields[0]))),
        };
        let (kind, secret) = match fields[1..] {
            [kind, secret] => match KeyType::from_name(kind) {
                Some(kind) => (kind, secret),
                None => {
                    return Err(err(Some(id), format!("unsupported type {kind:?} (supported: AES128CMAC, SHA1, MD5)")))
                }
            },
            [secret] => (KeyType::Md5, secret),
            _ => return Err(err(Some(id), "expected `ID TYPE KEY`".into())),
        };
        let secret = decode_secret(secret).map_err(|m| err(Some(id), m))?;
        let key = SymmetricKey::new(id, kind, &secret).ok_or_else(|| {
            err(Some(id), format!("AES128CMAC needs a 16-byte key (32 hex digits), got {} bytes", secret.len()))
        })?;
        if let Some(first) = entries.iter().find(|e| e.key.id() == id) {
            return Err(err(Some(id), format!("defined again (first on line {})", first.line)));
        }
        entries.push(KeyEntry { line, key });
    }
    Ok(entries)
}

fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let (hex, body) = if let Some(h) = strip_prefix_ignore_case(text, "HEX:") {
        (true, h)
    } else if let Some(a) = strip_prefix_ignore_case(text, "ASCII:") {
        (false, a)
    } else {
        (text.len() > MAX_ASCII_LEN, text)
    };
    let secret = if hex {
        if body.len() % 2 != 0 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a key longer than {MAX_ASCII_LEN} characters is hex, and this one is not an even number of hex digits"
            ));
        }
        (0..body.len()).step_by(2).filter_map(|i| u8::from_str_radix(&body[i..i + 2], 16).ok()).collect()
    } else {
        if !body.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an ASCII key may hold printable characters only".into());
        }
        body.as_bytes().to_vec()
    };
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(format!("a key is 1 to {MAX_SECRET_LEN} bytes, this one {}", secret.len()));
    }
    Ok(secret)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<SymmetricKey, KeyFileError> {
        parse_keys(line).map(|mut v| v.remove(0).key)
    }

    #[test]
    fn reads_ntpd_and_chrony_lines() {
        let text = "# ntp.keys\n\
                    1 AES128CMAC 000102030405060708090a0b0c0d0e0f  # rfc 8573\n\
                    \n\
                    2 SHA1 0123456789abcdef0123456789abcdef01234567\n\
                    3 M ascii-secret\n\
                    4 AES128 HEX:000102030405060708090A0B0C0D0E0F\n\
                    5 SHA1 ASCII:a-long-ascii-secret-over-20\n\
                    6 plainmd5\n";
        let keys = parse_keys(text).unwrap();
        let summary: Vec<_> = keys.iter().map(|e| (e.line, e.key.id(), e.key.kind())).collect();
        assert_eq!(
            summary,
            [
                (2, 1, KeyType::Aes128Cmac),
                (4, 2, KeyType::Sha1),
                (5, 3, KeyType::Md5),
                (6, 4, KeyType::Aes128Cmac),
                (7, 5, KeyType::Sha1),
                (8, 6, KeyType::Md5),
            ]
        );
        // Same secret whether written ntpd's way or with chrony's HEX: prefix.
        let data = [0x55u8; 48];
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        keys[0].key.mac(&data, &mut a);
        keys[3].key.mac(&data, &mut b);
        assert_eq!(a, b);
        // 20 characters or fewer: ASCII, even when they look like hex.
        let short = one("7 SHA1 0123456789").unwrap();
        let ascii = SymmetricKey::new(7, KeyType::Sha1, b"0123456789").unwrap();
        let (mut x, mut y) = ([0u8; 20], [0u8; 20]);
        short.mac(&data, &mut x);
        ascii.mac(&data, &mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn bad_lines_name_line_and_key() {
        let cases: [(&str, usize, Option<u32>, &str); 10] = [
            ("1 SHA1 secret\n\n0 SHA1 x", 3, None, "reserved"),
            ("abc SHA1 secret", 1, None, "not a number"),
            ("99999999999 SHA1 x", 1, None, "not a number"),
            ("4 SHA256 secret", 1, Some(4), "unsupported type \"SHA256\""),
            ("4 SHA1 a b", 1, Some(4), "expected `ID TYPE KEY`"),
            ("4 SHA1 0123456789abcdef0123456789abcdefxx", 1, Some(4), "hex digits"),
            ("4 SHA1 0123456789abcdef0123456789abcdef012", 1, Some(4), "hex digits"),
            ("4 AES128CMAC short", 1, Some(4), "16-byte key"),
            ("4 SHA1 HEX:", 1, Some(4), "1 to 64 bytes"),
            ("4 SHA1 one\n4 MD5 two", 2, Some(4), "first on line 1"),
        ];
        for (text, line, key_id, needle) in cases {
            let e = parse_keys(text).unwrap_err();
            assert_eq!((e.line, e.key_id), (line, key_id), "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let e = parse_keys("4 SHA1 one\n4 MD5 two").unwrap_err();
        assert_eq!(e.to_string(), "2: key 4: defined again (first on line 1)");
    }

    #[test]
    fn an_empty_file_has_no_keys() {
        assert!(parse_keys("").unwrap().is_empty());
        assert!(parse_keys("# nothing\n   \n").unwrap().is_empty());
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for text in ["\u{fffd} SHA1 x", "1 SHA1 \u{e9}\u{e9}", "1 SHA1 HEX:\u{e9}\u{e9}", "1", "1 HeX:00", "#"] {
            let _ = parse_keys(text);
        }
    }
}
