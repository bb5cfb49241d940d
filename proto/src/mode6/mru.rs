//! The nonce exchange and `mrulist` (REQ_NONCE and READ_MRU), as NTPsec's ntpq runs them:
//!
//! 1. ntpq asks REQ_NONCE; the reply is `nonce=<24 hex digits>`.
//! 2. ntpq asks READ_MRU with `nonce=..., frags=N` (or `limit=N`) and maybe filters; a reply
//!    carries `nonce=<fresh>`, then per entry `addr.i, last.i, first.i, ct.i, mv.i, rs.i, dr.i`,
//!    and `now=..., last.newest=...` when the list is complete (ntpq stops asking then).
//!
//! The nonce binds the client's address to a time, so a spoofed source cannot get the (large)
//! MRU reply sent to a victim: only a client that received the nonce can ask. Here the whole
//! list (the rate limiter's heaviest clients, already bounded by the caller) always fits in one
//! reply, so `now` is always sent and the addr.N/last.N continuation is never needed.

use core::fmt::Write;
use std::net::IpAddr;

use sha1::{Digest, Sha1};

use super::header::{MAX_DATA, MAX_FRAGMENTS};
use super::vars::timestamp;
use crate::time::NtpTimestamp;

/// How long a nonce is good for, seconds (ntpd's NONCE_TIMEOUT is 16; ntpq fetches a new one
/// after that).
pub const NONCE_LIFETIME: u32 = 16;

/// The secret nonces are made with (random, chosen once at start by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceKey(pub [u8; 16]);

impl NonceKey {
    /// `nonce=` text for `client` at `now`: 8 hex digits of time, 16 of a keyed hash.
    pub fn issue(&self, client: IpAddr, now: NtpTimestamp) -> String {
        format!("{:08x}{:016x}", now.seconds(), self.mac(client, now.seconds()))
    }

    /// Whether `nonce` was issued to `client` at most [`NONCE_LIFETIME`] seconds before `now`.
    pub fn verify(&self, nonce: &str, client: IpAddr, now: NtpTimestamp) -> bool {
        if nonce.len() != 24 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let (Ok(issued), Ok(mac)) = (u32::from_str_radix(&nonce[..8], 16), u64::from_str_radix(&nonce[8..], 16)) else {
            return false;
        };
        now.seconds().wrapping_sub(issued) <= NONCE_LIFETIME && mac == self.mac(client, issued)
    }

    fn mac(&self, client: IpAddr, seconds: u32) -> u64 {
        let mut h = Sha1::new();
        h.update(self.0);
        match client {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(seconds.to_be_bytes());
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

/// One client of the MRU list (the rate limiter's record of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MruEntry {
    pub address: IpAddr,
    pub port: u16,
    /// Requests seen.
    pub count: u64,
    /// Requests not answered (rate-limited: dropped or kissed).
    pub dropped: u64,
    /// First and last seen; when the table keeps no times the caller gives the reply's time
    /// for both (ntpq then shows lstint and avgint 0).
    pub first: NtpTimestamp,
    pub last: NtpTimestamp,
    /// Its packets' mode and version as ntpd keeps them (`version << 3 | mode`).
    pub mode_version: u8,
    /// Being limited now (ntpq shows `L`).
    pub limited: bool,
}

/// RES_LIMITED, the restriction bit ntpq shows as `L`.
const RES_LIMITED: u32 = 0x0020;

/// What a READ_MRU request asks, from its `key=value, ...` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MruQuery<'a> {
    pub nonce: &'a str,
    /// Fragments the reply may use (`frags=`, at most [`MAX_FRAGMENTS`]).
    pub frags: usize,
    /// Entries the reply may carry (`limit=`).
    pub limit: usize,
    /// Entries with fewer requests are left out (`mincount=`).
    pub mincount: u64,
}

/// Parses a READ_MRU request's text. None without a nonce (the request is then dropped).
pub fn parse_query(data: &[u8]) -> Option<MruQuery<'_>> {
    let text = core::str::from_utf8(data).ok()?;
    let mut q = MruQuery { nonce: "", frags: MAX_FRAGMENTS, limit: usize::MAX, mincount: 0 };
    for item in text.split(',') {
        let item = item.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        match key.trim() {
            "nonce" => q.nonce = value.trim(),
            "frags" => q.frags = value.trim().parse::<usize>().ok()?.clamp(1, MAX_FRAGMENTS),
            "limit" => q.limit = value.trim().parse::<usize>().ok()?.max(1),
            "mincount" => q.mincount = value.trim().parse().ok()?,
            // Other filters (resall, laddr, ...) and the continuation (addr.N, last.N) change
            // nothing here: the whole list is sent every time.
            _ => {}
        }
    }
    (!q.nonce.is_empty()).then_some(q)
}

/// The READ_MRU reply's text: a fresh nonce, as many of `entries` (heaviest first) as fit in
/// the fragments the query allows, the lightest of them first (ntpq prints the list backwards,
/// so the heaviest comes out on top), then the end marker.
pub fn render(query: &MruQuery<'_>, entries: &[MruEntry], fresh_nonce: &str, now: NtpTimestamp) -> String {
    let tail = format!(", now={}, last.newest={}", timestamp(now), timestamp(now));
    let budget = query.frags * MAX_DATA - tail.len();
    let mut chosen: Vec<&MruEntry> = Vec::new();
    let mut size = "nonce=".len() + fresh_nonce.len();
    let mut text = String::new();
    for e in entries.iter().filter(|e| e.count >= query.mincount).take(query.limit) {
        text.clear();
        entry_text(&mut text, 0, e);
        // Indexes take up to 3 digits more per key than the 0 measured here.
        if size + text.len() + 7 * 3 > budget {
            break;
        }
        size += text.len() + 7 * 3;
        chosen.push(e);
    }
    let mut out = format!("nonce={fresh_nonce}");
    for (i, e) in chosen.iter().rev().enumerate() {
        entry_text(&mut out, i, e);
    }
    out.push_str(&tail);
    out
}

fn entry_text(out: &mut String, i: usize, e: &MruEntry) {
    let addr = match e.address {
        IpAddr::V4(a) => format!("{a}:{}", e.port),
        IpAddr::V6(a) => format!("[{a}]:{}", e.port),
    };
    let rs = if e.limited { RES_LIMITED } else { 0 };
    let _ = write!(
        out,
        ", addr.{i}={addr}, last.{i}={}, first.{i}={}, ct.{i}={}, mv.{i}={}, rs.{i}={rs:#x}, dr.{i}={}",
        timestamp(e.last),
        timestamp(e.first),
        e.count,
        e.mode_version,
        e.dropped
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: NonceKey = NonceKey([7; 16]);

    fn at(s: u32) -> NtpTimestamp {
        NtpTimestamp::from_parts(s, 0)
    }

    #[test]
    fn a_nonce_is_good_for_its_client_for_16_seconds() {
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        let n = KEY.issue(me, at(1000));
        assert_eq!(n.len(), 24);
        assert!(KEY.verify(&n, me, at(1000)));
        assert!(KEY.verify(&n, me, at(1016)));
        assert!(!KEY.verify(&n, me, at(1017)), "expired");
        assert!(!KEY.verify(&n, "127.0.0.2".parse().unwrap(), at(1000)), "another client");
        assert!(!KEY.verify(&n, me, at(999)), "from the future");
        assert!(!NonceKey([8; 16]).verify(&n, me, at(1000)), "another key");
        assert!(!KEY.verify("zz", me, at(1000)));
    }

    #[test]
    fn the_query_as_ntpq_sends_it() {
        let q = parse_query(b"nonce=0123456789abcdef01234567, frags=32, mincount=2").unwrap();
        assert_eq!((q.nonce, q.frags, q.limit, q.mincount), ("0123456789abcdef01234567", 32, usize::MAX, 2));
        let q = parse_query(b"nonce=ab, limit=5, addr.0=1.2.3.4:123, last.0=0x1.2").unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(parse_query(b"frags=3"), None, "no nonce");
        assert_eq!(parse_query(b"nonce=ab, frags=x"), None);
    }

    #[test]
    fn the_reply_fits_its_fragments_and_ends_with_now() {
        let e = |i: u32| MruEntry {
            address: IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + i)),
            port: 0,
            count: 1000 - u64::from(i),
            dropped: 0,
            first: at(5),
            last: at(6),
            mode_version: 0x23,
            limited: i == 0,
        };
        let entries: Vec<MruEntry> = (0..500).map(e).collect();
        let q = MruQuery { nonce: "x", frags: 2, limit: usize::MAX, mincount: 0 };
        let text = render(&q, &entries, "n", at(10));
        assert!(text.len() <= 2 * MAX_DATA, "{}", text.len());
        assert!(text.starts_with("nonce=n, addr.0="));
        assert!(text.ends_with(", now=0x0000000a.00000000, last.newest=0x0000000a.00000000"));
        // The heaviest is sent last, and it is the limited one.
        let last = text.rfind("addr.").unwrap();
        assert!(text[last..].starts_with(&format!("addr.{}=192.0.2.0:0", text.matches("addr.").count() - 1)));
        assert!(text.ends_with(&format!(
            "rs.{0}=0x20, dr.{0}=0, now=0x0000000a.00000000, last.newest=0x0000000a.00000000",
            text.matches("addr.").count() - 1
        )));
        let q = MruQuery { nonce: "x", frags: 32, limit: 3, mincount: 998 };
        assert_eq!(render(&q, &entries, "n", at(10)).matches("addr.").count(), 3);
        let q = MruQuery { nonce: "x", frags: 32, limit: 10, mincount: 999 };
        assert_eq!(render(&q, &entries, "n", at(10)).matches("addr.").count(), 2);
    }
}
