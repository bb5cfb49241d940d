//! The server's decision for one request: reply, Kiss-o'-Death, or a counted drop.
//!
//! [`respond`] reads a request from a buffer and, when it answers, writes the reply over the
//! request in the same buffer (both backends then send the buffer back as it is). It owes the
//! behaviour in BAD_INPUTS.md rows 1-16: every request ends in exactly one [`Verdict`], a reply is
//! never longer than its request, the client's transmit timestamp is echoed bit for bit, and the
//! transmit timestamp is read from the clock last and written last.
//!
//! Admission (access lists, rate limiting) is a seam: the caller passes an [`AdmissionPolicy`] that
//! sees only well-formed client requests. Authentication is another: a request with a MAC is
//! checked by the caller's [`Authenticate`] after admission (the limiter sees it first, so a flood
//! of forged MACs costs no more than its rate allows) and its reply is signed with the same key,
//! or carries a crypto-NAK (BAD_INPUTS 57).

use core::net::SocketAddr;

use crate::auth::{Authenticate, MacCheck};
use crate::nts::server::NtsCheck;
use crate::packet::{
    scan_trailer, write_transmit_timestamp, KissCode, LeapIndicator, Mac, NtpHeader, NtpMode, NtpPacket, HEADER_LEN,
    MAX_PACKET_LEN,
};
use crate::server::interleaved::{BasicOnly, Interleave};
use crate::server::snapshot::ServerSnapshot;
use crate::time::{NtpShort, NtpTimestamp};

/// The smallest poll exponent we put in a reply: clients are told not to poll faster than 16 s.
pub const MIN_REPLY_POLL: i8 = 4;
/// The largest poll exponent in a reply (36 h, RFC 5905's maximum).
pub const MAX_REPLY_POLL: i8 = 17;

/// What the backend learned about a request before handing it to [`respond`].
#[derive(Clone, Copy, Debug)]
pub struct RxMeta {
    /// The request's source address and port.
    pub client: SocketAddr,
    /// When the request arrived, read from the host clock (UTC), before the snapshot's correction.
    pub rx_time: NtpTimestamp,
    /// Fresh unpredictable bits; they fill the timestamp bits below the clock's precision.
    pub noise: u64,
}

/// The outcome of one request. Every request ends in exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the first `len` bytes of the buffer back to the client.
    Reply(usize),
    /// Send the Kiss-o'-Death now in the first [`HEADER_LEN`] bytes of the buffer.
    Kod(KissCode),
    /// Send nothing; count the reason.
    Drop(DropReason),
}

impl Verdict {
    /// How many bytes of the buffer to send, if any.
    pub const fn reply_len(&self) -> Option<usize> {
        match self {
            Self::Reply(len) => Some(*len),
            Self::Kod(_) => Some(HEADER_LEN),
            Self::Drop(_) => None,
        }
    }
}

/// Why a request got no answer. The names are the `reason` label of the drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Payload shorter than the 48-byte header.
    Short,
    /// Not a multiple of 4 bytes, or a bad extension field.
    Malformed,
    /// Longer than [`MAX_PACKET_LEN`].
    TooLong,
    /// Version 0 or above 4.
    Version,
    /// A mode other than client (symmetric, server, broadcast replies never start state here).
    Mode,
    /// Mode 6 or 7 (control and private) is never answered on the data plane.
    Control,
    /// Carries a MAC while the server holds no keys, or a crypto-NAK: never treated as
    /// authenticated. (With keys, an unknown key or a bad MAC is answered with a crypto-NAK.)
    Authenticated,
    /// Source port 0.
    SourcePort,
    /// Refused by the access list.
    Denied,
    /// Over the client's rate limit (and not picked to be answered anyway).
    RateLimited,
    /// Addressed to a broadcast or multicast address (seen by the backend, not by [`respond`]).
    Destination,
    /// A source address no real client can have (see [`crate::server::access::is_martian`]).
    Martian,
    /// The host clock could not be read (clock_gettime failed): nothing is sent rather than a
    /// reply without a true time (seen by the server, not by [`respond`]; BAD_INPUTS 45).
    Clock,
}

impl DropReason {
    pub const ALL: [Self; 13] = [
        Self::Short,
        Self::Malformed,
        Self::TooLong,
        Self::Version,
        Self::Mode,
        Self::Control,
        Self::Authenticated,
        Self::SourcePort,
        Self::Denied,
        Self::RateLimited,
        Self::Destination,
        Self::Martian,
        Self::Clock,
    ];

    /// Position in [`DropReason::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
            Self::Version => "version",
            Self::Mode => "mode",
            Self::Control => "control",
            Self::Authenticated => "authenticated",
            Self::SourcePort => "source_port",
            Self::Denied => "denied",
            Self::RateLimited => "rate_limited",
            Self::Destination => "destination",
            Self::Martian => "martian",
            Self::Clock => "clock",
        }
    }
}

/// A well-formed client request, as admission sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub version: u8,
    pub poll: i8,
    pub transmit: NtpTimestamp,
}

/// Admission's answer for one well-formed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmitAction {
    Serve,
    /// Answer with a Kiss-o'-Death; the reply's poll is at least `poll`.
    Kod {
        code: KissCode,
        poll: i8,
    },
    Drop(DropReason),
}

/// Decides whether a client is served: access lists and rate limiting plug in here.
pub trait AdmissionPolicy {
    /// `rx` carries the client's address and the receive time (the rate limiter's clock).
    fn admit(&mut self, rx: &RxMeta, request: &ClientRequest) -> AdmitAction;
}

/// Admits everything: the policy when no access list or rate limit is configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeAll;

impl AdmissionPolicy for ServeAll {
    fn admit(&mut self, _: &RxMeta, _: &ClientRequest) -> AdmitAction {
        AdmitAction::Serve
    }
}

/// Decides what to do with the request in `buf` (exactly the UDP payload) and, when answering,
/// writes the reply over it.
///
/// `tx_clock` reads the host clock; it is called once, last, and only for a normal reply.
/// `auth` checks a request's MAC and signs the reply ([`crate::auth::NoAuth`] without keys).
/// Basic mode only: [`respond_with`] and [`BasicOnly`].
pub fn respond<A, Au, C>(
    buf: &mut [u8],
    rx: RxMeta,
    snapshot: &ServerSnapshot,
    admission: &mut A,
    auth: &mut Au,
    tx_clock: C,
) -> Verdict
where
    A: AdmissionPolicy + ?Sized,
    Au: Authenticate + ?Sized,
    C: FnOnce() -> NtpTimestamp,
{
    respond_with(buf, rx, snapshot, admission, auth, &mut BasicOnly, tx_clock)
}

/// As [`respond`], with interleaved mode (RFC 9769, as chrony's server does it) through
/// `interleave`. Every reply's receive timestamp has its LSB set and its transmit timestamp its
/// LSB clear, so a request whose origin has the LSB set can only be quoting one of our receive
/// timestamps: such an NTPv4 request (receive != transmit, as chrony checks) is interleaved. When
/// `interleave` still holds the transmit time of the reply it quotes, the reply carries that as
/// its transmit timestamp and the request's receive field as its origin; either way this reply's
/// receive timestamp and T3 are saved for the client's next request. Never for a KoD.
pub fn respond_with<A, Au, I, C>(
    buf: &mut [u8],
    rx: RxMeta,
    snapshot: &ServerSnapshot,
    admission: &mut A,
    auth: &mut Au,
    interleave: &mut I,
    tx_clock: C,
) -> Verdict
where
    A: AdmissionPolicy + ?Sized,
    Au: Authenticate + ?Sized,
    I: Interleave + ?Sized,
    C: FnOnce() -> NtpTimestamp,
{
    let (request, mac) = match parse_request(buf, &rx.client) {
        Ok(parsed) => parsed,
        Err(reason) => return Verdict::Drop(reason),
    };
    let Some(out) = buf.first_chunk_mut::<HEADER_LEN>() else {
        return Verdict::Drop(DropReason::Short);
    };
    match admission.admit(&rx, &request) {
        AdmitAction::Serve => {}
        AdmitAction::Drop(reason) => return Verdict::Drop(reason),
        AdmitAction::Kod { code, poll } => {
            kiss_of_death(out, request.version, code, request.poll.max(poll), request.transmit);
            return Verdict::Kod(code);
        }
    }
    // After admission: the rate limiter has already bounded what a flood of forged MACs costs.
    let signing = match mac {
        None => None,
        Some(at) => match check_mac(buf, at, auth) {
            Ok(check) => Some(check),
            Err(reason) => return Verdict::Drop(reason),
        },
    };
    // NTS (RFC 8915): only a request with extension fields and no MAC can be one.
    let request_len = buf.len();
    let nts = match mac {
        None if request_len > HEADER_LEN => match auth.check_nts(buf) {
            NtsCheck::NotNts => None,
            NtsCheck::Verified(verified) => Some(verified),
            NtsCheck::Malformed => return Verdict::Drop(DropReason::Malformed),
            NtsCheck::Nak { uid } => return nts_nak(buf, &request, uid),
        },
        _ => None,
    };
    let Some(out) = buf.first_chunk_mut::<HEADER_LEN>() else {
        return Verdict::Drop(DropReason::Short);
    };

    // The request's origin and receive fields, read before the reply overwrites them.
    let (origin, client_receive) = NtpHeader::new(&out[..])
        .map_or((NtpTimestamp::ZERO, NtpTimestamp::ZERO), |h| (h.origin_timestamp(), h.receive_timestamp()));
    let candidate = request.version == 4 && origin.to_bits() & 1 == 1 && client_receive != request.transmit;
    let earlier = if candidate { interleave.take(origin) } else { None };

    let receive = randomize_below_precision(snapshot.correction.apply(rx.rx_time), snapshot.precision, rx.noise as u32);
    let receive = NtpTimestamp::from_bits(receive.to_bits() | 1);
    let reply = NtpPacket {
        leap: snapshot.leap,
        version: request.version,
        mode: NtpMode::Server,
        stratum: snapshot.stratum,
        poll: request.poll.clamp(MIN_REPLY_POLL, MAX_REPLY_POLL),
        precision: snapshot.precision,
        root_delay: snapshot.root_delay,
        root_dispersion: snapshot.root_dispersion_at(receive),
        ref_id: snapshot.ref_id,
        reference_timestamp: snapshot.reference_time,
        origin_timestamp: if earlier.is_some() { client_receive } else { request.transmit },
        receive_timestamp: receive,
        transmit_timestamp: NtpTimestamp::ZERO,
    };
    reply.emit_before_transmit(out);
    let t3 = snapshot.correction.apply(tx_clock());
    let transmit = randomize_below_precision(earlier.unwrap_or(t3), snapshot.precision, (rx.noise >> 32) as u32);
    write_transmit_timestamp(out, NtpTimestamp::from_bits(transmit.to_bits() & !1));
    if candidate {
        interleave.save(receive, t3);
    }
    match (signing, nts) {
        (Some(check), _) => sign_reply(buf, check, auth),
        (None, Some(verified)) => match auth.sign_nts(buf, request_len, &verified) {
            Some(len) => Verdict::Reply(len),
            None => Verdict::Drop(DropReason::Authenticated),
        },
        (None, None) => Verdict::Reply(HEADER_LEN),
    }
}

/// The NTS NAK (RFC 8915 section 5.7): a Kiss-o'-Death with kiss code `NTSN` and the request's
/// unique identifier, so the client knows to get new cookies. No time in it.
#[cold]
fn nts_nak(buf: &mut [u8], request: &ClientRequest, uid: core::ops::Range<usize>) -> Verdict {
    let Some(out) = buf.first_chunk_mut::<HEADER_LEN>() else {
        return Verdict::Drop(DropReason::Short);
    };
    kiss_of_death(out, request.version, KissCode::Deny, request.poll, request.transmit);
    match crate::nts::server::write_nak(buf, uid) {
        Some(len) => Verdict::Reply(len),
        None => Verdict::Drop(DropReason::Malformed),
    }
}

/// Where a request's MAC starts (its key id), as [`parse_request`] found it.
#[derive(Clone, Copy, Debug)]
struct MacAt {
    offset: usize,
    key_id: u32,
}

/// Checks the request's MAC: `Ok` with what the reply gets, or the drop (a crypto-NAK in a
/// request, or a MAC at a server without keys).
fn check_mac<Au: Authenticate + ?Sized>(buf: &[u8], at: MacAt, auth: &mut Au) -> Result<MacCheck, DropReason> {
    let (signed, rest) = buf.split_at(at.offset.min(buf.len()));
    match auth.check(signed, at.key_id, rest.get(4..).unwrap_or(&[])) {
        MacCheck::Unsupported => Err(DropReason::Authenticated),
        check => Ok(check),
    }
}

/// Appends the reply's MAC after the header: the request's key, or a crypto-NAK (key id 0 and no
/// digest, RFC 5905 section 7.3) when its MAC did not verify. Both fit in the request's own MAC.
fn sign_reply<Au: Authenticate + ?Sized>(buf: &mut [u8], check: MacCheck, auth: &mut Au) -> Verdict {
    let signed = match check {
        MacCheck::Valid(key) => auth.sign(key, buf, HEADER_LEN),
        _ => buf.get_mut(HEADER_LEN..HEADER_LEN + 4).map(|nak| {
            nak.fill(0);
            HEADER_LEN + 4
        }),
    };
    match signed {
        Some(len) => Verdict::Reply(len),
        None => Verdict::Drop(DropReason::Authenticated),
    }
}

/// Checks everything about a request that does not depend on who sent it or on policy; finds its
/// MAC, if any.
fn parse_request(buf: &[u8], client: &SocketAddr) -> Result<(ClientRequest, Option<MacAt>), DropReason> {
    if client.port() == 0 {
        return Err(DropReason::SourcePort);
    }
    if buf.len() > MAX_PACKET_LEN {
        return Err(DropReason::TooLong);
    }
    // Mode 6 and 7 requests are shorter than an NTP header (ntpq's are 12 bytes): named for what
    // they are, so that the socket backend can hand an allowed one to the ntpq thread.
    if buf.first().is_some_and(|b| matches!(b & 7, 6 | 7)) {
        return Err(DropReason::Control);
    }
    let header = NtpHeader::new(buf).ok_or(DropReason::Short)?;
    if buf.len() % 4 != 0 {
        return Err(DropReason::Malformed);
    }
    let version = header.version();
    if !(1..=4).contains(&version) {
        return Err(DropReason::Version);
    }
    match (header.mode(), version) {
        (NtpMode::Client, _) | (NtpMode::Reserved, 1) => {}
        (NtpMode::Control | NtpMode::Private, _) => return Err(DropReason::Control),
        _ => return Err(DropReason::Mode),
    }
    // A basic request (the header alone, nearly every request) has no trailer to scan.
    if buf.len() == HEADER_LEN {
        let request = ClientRequest { version, poll: header.poll(), transmit: header.transmit_timestamp() };
        return Ok((request, None));
    }
    let trailer = scan_trailer(version, &buf[HEADER_LEN..]).map_err(|_| DropReason::Malformed)?;
    let mac = match trailer.mac {
        None => None,
        Some(Mac::CryptoNak { .. }) => return Err(DropReason::Authenticated),
        Some(Mac::Digest { key_id, digest_len }) => {
            Some(MacAt { offset: buf.len() - 4 - usize::from(digest_len), key_id })
        }
    };
    let request = ClientRequest { version, poll: header.poll(), transmit: header.transmit_timestamp() };
    Ok((request, mac))
}

/// Writes a Kiss-o'-Death (RFC 5905 section 7.4): stratum 0, the kiss code as reference id, the
/// client's transmit timestamp as origin, and no usable time anywhere else.
pub fn kiss_of_death(out: &mut [u8; HEADER_LEN], version: u8, code: KissCode, poll: i8, origin: NtpTimestamp) {
    NtpPacket {
        leap: LeapIndicator::Unsynchronized,
        version,
        mode: NtpMode::Server,
        stratum: 0,
        poll: poll.clamp(MIN_REPLY_POLL, MAX_REPLY_POLL),
        precision: 0,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        ref_id: code.ref_id(),
        reference_timestamp: NtpTimestamp::ZERO,
        origin_timestamp: origin,
        receive_timestamp: NtpTimestamp::ZERO,
        transmit_timestamp: NtpTimestamp::ZERO,
    }
    .emit(out);
}

/// Replaces the fraction bits finer than the clock's precision with random ones, so that a client
/// cannot predict our timestamps from earlier replies and the low bits carry no false accuracy.
pub const fn randomize_below_precision(t: NtpTimestamp, precision: i8, noise: u32) -> NtpTimestamp {
    let bits = 32 + precision as i32;
    let mask: u64 = if bits <= 0 {
        0
    } else if bits >= 32 {
        u32::MAX as u64
    } else {
        (1u64 << bits) - 1
    };
    NtpTimestamp::from_bits((t.to_bits() & !mask) | (noise as u64 & mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NoAuth;
    use crate::time::NtpDuration;
    use crate::{ClockCorrection, RefId};
    use proptest::prelude::*;

    const CLIENT: &str = "192.0.2.10:40000";
    const T1: NtpTimestamp = NtpTimestamp::from_parts(0xE000_0000, 0x1234_5678);
    const T2: NtpTimestamp = NtpTimestamp::from_parts(0xE000_0001, 0x8000_0000);
    const T3: NtpTimestamp = NtpTimestamp::from_parts(0xE000_0001, 0x8000_1000);

    fn synced() -> ServerSnapshot {
        ServerSnapshot {
            leap: LeapIndicator::NoWarning,
            stratum: 2,
            precision: -20,
            ref_id: RefId([192, 0, 2, 1]),
            reference_time: NtpTimestamp::from_parts(0xE000_0000, 0),
            root_delay: NtpShort::from_micros(1500),
            root_dispersion: NtpShort::from_micros(300),
            dispersion_base: NtpTimestamp::from_parts(0xE000_0000, 0),
            dispersion_rate: 0,
            tai_offset: 37,
            correction: ClockCorrection::IDENTITY,
        }
    }

    fn request(version: u8, mode: u8) -> Vec<u8> {
        let mut p = NtpPacket::client_request(version, T1).to_bytes().to_vec();
        p[0] = (p[0] & !7) | mode;
        p
    }

    fn meta() -> RxMeta {
        RxMeta { client: CLIENT.parse().unwrap(), rx_time: T2, noise: 0 }
    }

    fn run(buf: &mut [u8]) -> Verdict {
        respond(buf, meta(), &synced(), &mut ServeAll, &mut NoAuth, || T3)
    }

    struct Fixed(AdmitAction);
    impl AdmissionPolicy for Fixed {
        fn admit(&mut self, _: &RxMeta, _: &ClientRequest) -> AdmitAction {
            self.0
        }
    }

    #[test]
    fn row1_short_payloads_are_dropped() {
        for len in 0..48 {
            assert_eq!(run(&mut request(4, 3)[..len]), Verdict::Drop(DropReason::Short), "len {len}");
        }
    }

    #[test]
    fn row2_unaligned_lengths_are_malformed() {
        for extra in [1, 2, 3, 5, 50] {
            let mut p = request(4, 3);
            p.extend(vec![0u8; extra]);
            assert_eq!(run(&mut p), Verdict::Drop(DropReason::Malformed), "extra {extra}");
        }
    }

    #[test]
    fn row3_unknown_versions_are_dropped() {
        for v in [0, 5, 6, 7] {
            assert_eq!(run(&mut request(v, 3)), Verdict::Drop(DropReason::Version), "v{v}");
        }
    }

    #[test]
    fn row4_versions_1_to_4_get_a_mode_4_reply_in_their_version() {
        for v in 1..=4 {
            let mut p = request(v, 3);
            assert_eq!(run(&mut p), Verdict::Reply(48));
            let r = NtpPacket::parse(&p).unwrap();
            assert_eq!((r.version, r.mode), (v, NtpMode::Server));
        }
    }

    #[test]
    fn row5_ntpv1_mode_0_gets_mode_4() {
        let mut p = request(1, 0);
        assert_eq!(run(&mut p), Verdict::Reply(48));
        assert_eq!(NtpPacket::parse(&p).unwrap().mode, NtpMode::Server);
        // Mode 0 is only the old NTPv1 convention; in later versions it is reserved.
        assert_eq!(run(&mut request(4, 0)), Verdict::Drop(DropReason::Mode));
    }

    #[test]
    fn row6_non_client_modes_are_dropped_untouched() {
        for mode in [1, 2, 4, 5] {
            let mut p = request(4, mode);
            let before = p.clone();
            assert_eq!(run(&mut p), Verdict::Drop(DropReason::Mode), "mode {mode}");
            assert_eq!(p, before, "a dropped request is not written over");
        }
    }

    #[test]
    fn row7_control_and_private_modes_are_dropped() {
        for mode in [6, 7] {
            assert_eq!(run(&mut request(2, mode)), Verdict::Drop(DropReason::Control));
        }
        // ntpq's READVAR: 12 bytes, shorter than an NTP header, still a control drop.
        let mut readvar = vec![0x26, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(run(&mut readvar), Verdict::Drop(DropReason::Control));
    }

    #[test]
    fn row8_bad_extension_fields_are_malformed() {
        let mut p = request(4, 3);
        p.extend([0x01, 0x04, 0x00, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // length 12 < 16
        assert_eq!(run(&mut p), Verdict::Drop(DropReason::Malformed));
    }

    #[test]
    fn row9_many_extension_fields_are_answered_without_echo() {
        let mut p = request(4, 3);
        for _ in 0..60 {
            p.extend([0x20, 0x05, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        }
        assert_eq!(run(&mut p), Verdict::Reply(48));
    }

    #[test]
    fn row10_macs_and_crypto_nak_are_never_authenticated() {
        for mac_len in [4, 20, 24] {
            let mut p = request(4, 3);
            p.extend(vec![0u8; mac_len]);
            assert_eq!(run(&mut p), Verdict::Drop(DropReason::Authenticated), "mac {mac_len}");
        }
    }

    fn keys() -> crate::auth::KeyTable {
        use crate::auth::{KeyType, SymmetricKey};
        let cmac = SymmetricKey::new(7, KeyType::Aes128Cmac, &[0x42; 16]).unwrap();
        let sha1 = SymmetricKey::new(9, KeyType::Sha1, b"sha1-secret").unwrap();
        crate::auth::KeyTable::new(vec![cmac, sha1]).unwrap()
    }

    /// A v4 request signed with `key`, after `extensions` bytes of extension fields.
    fn signed_request(key: &crate::auth::SymmetricKey, extensions: usize) -> Vec<u8> {
        let mut p = request(4, 3);
        for _ in 0..extensions / 16 {
            p.extend([0x20, 0x05, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        }
        let len = p.len();
        p.resize(len + 4 + key.kind().digest_len(), 0);
        assert_eq!(key.sign(&mut p, len), Some(p.len()));
        p
    }

    fn run_keys(buf: &mut [u8]) -> Verdict {
        respond(buf, meta(), &synced(), &mut ServeAll, &mut keys(), || T3)
    }

    #[test]
    fn row57_a_known_key_gets_a_reply_signed_with_it() {
        for id in [7, 9] {
            let table = keys();
            let key = table.get(id).unwrap();
            for extensions in [0, 32] {
                let mut p = signed_request(key, extensions);
                let mac_len = 4 + key.kind().digest_len();
                assert_eq!(run_keys(&mut p), Verdict::Reply(HEADER_LEN + mac_len), "key {id}");
                assert_eq!(p[48..52], id.to_be_bytes());
                assert!(key.verify(&p[..48], &p[52..48 + mac_len]), "reply MAC, key {id}");
                let r = NtpPacket::parse(&p[..48]).unwrap();
                assert_eq!((r.mode, r.origin_timestamp, r.stratum), (NtpMode::Server, T1, 2));
            }
        }
    }

    #[test]
    fn row57_unknown_key_bad_or_truncated_mac_get_a_crypto_nak() {
        let table = keys();
        let mut unknown = signed_request(table.get(7).unwrap(), 0);
        unknown[48..52].copy_from_slice(&8u32.to_be_bytes());
        let mut bad = signed_request(table.get(9).unwrap(), 0);
        bad[60] ^= 1;
        let mut forged_header = signed_request(table.get(7).unwrap(), 0);
        forged_header[20] ^= 1;
        // Key 9 is SHA-1 (20 bytes): a 16-byte MAC for it is truncated.
        let mut truncated = signed_request(table.get(7).unwrap(), 0);
        truncated[48..52].copy_from_slice(&9u32.to_be_bytes());
        for (name, mut p) in [("unknown", unknown), ("bad", bad), ("header", forged_header), ("truncated", truncated)] {
            assert_eq!(run_keys(&mut p), Verdict::Reply(52), "{name}");
            assert_eq!(p[48..52], [0, 0, 0, 0], "{name}: crypto-NAK");
            assert_eq!(NtpPacket::parse(&p[..48]).unwrap().origin_timestamp, T1, "{name}");
        }
    }

    #[test]
    fn row57_crypto_nak_requests_are_dropped_even_with_keys() {
        let mut p = request(4, 3);
        p.extend([0u8; 4]);
        assert_eq!(run_keys(&mut p), Verdict::Drop(DropReason::Authenticated));
    }

    #[test]
    fn row57_a_rate_limited_signed_request_gets_the_kod_without_a_mac_check() {
        let mut p = signed_request(keys().get(7).unwrap(), 0);
        let mut policy = Fixed(AdmitAction::Kod { code: KissCode::Rate, poll: 6 });
        assert_eq!(respond(&mut p, meta(), &synced(), &mut policy, &mut keys(), || T3), Verdict::Kod(KissCode::Rate));
    }

    /// An authenticator with NTS and no symmetric keys, as a worker holds one.
    struct TestNts {
        master: crate::nts::KeySet,
        n: u8,
        fresh: crate::nts::server::FreshCookies,
    }

    impl Authenticate for TestNts {
        fn check(&mut self, _: &[u8], _: u32, _: &[u8]) -> MacCheck {
            MacCheck::Unsupported
        }
        fn sign(&mut self, _: crate::auth::KeyRef, _: &mut [u8], _: usize) -> Option<usize> {
            None
        }
        fn check_nts(&mut self, packet: &mut [u8]) -> NtsCheck {
            let n = &mut self.n;
            crate::nts::server::check_request(packet, &self.master, &mut self.fresh, || {
                *n += 1;
                [*n; 16]
            })
        }
        fn sign_nts(&mut self, buf: &mut [u8], len: usize, v: &crate::nts::server::Verified) -> Option<usize> {
            crate::nts::server::write_reply(buf, len, v, &self.fresh, &[0x99; 16])
        }
    }

    #[test]
    fn row56_an_nts_request_gets_an_authenticated_reply_with_cookies_never_longer() {
        use crate::nts::server::tests::{client_check_reply, client_keys, client_request, master};
        let mut auth = TestNts { master: master(), n: 0, fresh: Default::default() };
        for placeholders in [0, 2] {
            let mut p = client_request(&auth.master, &client_keys(), placeholders);
            let len = p.len();
            let v = respond(&mut p, meta(), &synced(), &mut ServeAll, &mut auth, || T3);
            assert_eq!(v, Verdict::Reply(len), "placeholders {placeholders}");
            let r = NtpPacket::parse(&p[..48]).unwrap();
            assert_eq!((r.mode, r.stratum, r.origin_timestamp.to_bits()), (NtpMode::Server, 2, 0x1234));
            assert_eq!(client_check_reply(&p[..len], &client_keys(), &auth.master), 1 + placeholders);
        }
    }

    /// The same through respond() for a client whose NTS-KE chose AES-128-GCM-SIV (its cookie
    /// says so): a GCM-SIV reply under its S2C key.
    #[test]
    fn row56_a_gcm_siv_nts_request_gets_a_gcm_siv_reply() {
        use crate::nts::server::tests::{client_check_reply, client_request, gcm_siv_keys, master};
        let mut auth = TestNts { master: master(), n: 0, fresh: Default::default() };
        let mut p = client_request(&auth.master, &gcm_siv_keys(), 2);
        let len = p.len();
        assert_eq!(respond(&mut p, meta(), &synced(), &mut ServeAll, &mut auth, || T3), Verdict::Reply(len));
        let r = NtpPacket::parse(&p[..48]).unwrap();
        assert_eq!((r.mode, r.stratum, r.origin_timestamp.to_bits()), (NtpMode::Server, 2, 0x1234));
        assert_eq!(client_check_reply(&p[..len], &gcm_siv_keys(), &auth.master), 3);
    }

    #[test]
    fn row56_unknown_cookie_gets_an_nts_nak_malformed_nothing() {
        use crate::nts::server::tests::{client_keys, client_request, master};
        let mut auth = TestNts { master: master(), n: 0, fresh: Default::default() };
        let mut p = client_request(&auth.master, &client_keys(), 1);
        p[100] ^= 1; // inside the cookie
        assert_eq!(respond(&mut p, meta(), &synced(), &mut ServeAll, &mut auth, || T3), Verdict::Reply(84));
        let r = NtpPacket::parse(&p[..48]).unwrap();
        assert_eq!((r.stratum, r.ref_id, r.origin_timestamp.to_bits()), (0, RefId(*b"NTSN"), 0x1234));
        assert_eq!((r.receive_timestamp, r.transmit_timestamp), (NtpTimestamp::ZERO, NtpTimestamp::ZERO));
        assert_eq!(&p[48..52], &[0x01, 0x04, 0, 36], "the unique identifier echoed");

        let good = client_request(&auth.master, &client_keys(), 0);
        let mut cut = good[..good.len() - 40].to_vec();
        let before = cut.clone();
        assert_eq!(
            respond(&mut cut, meta(), &synced(), &mut ServeAll, &mut auth, || T3),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(cut, before);
    }

    #[test]
    fn row56_without_nts_an_nts_request_is_a_basic_request() {
        use crate::nts::server::tests::{client_keys, client_request, master};
        let mut p = client_request(&master(), &client_keys(), 1);
        assert_eq!(run(&mut p), Verdict::Reply(48));
    }

    #[test]
    fn row11_oversized_payloads_are_dropped() {
        let mut p = request(4, 3);
        p.resize(MAX_PACKET_LEN + 4, 0);
        assert_eq!(run(&mut p), Verdict::Drop(DropReason::TooLong));
        let mut p = request(4, 3);
        p.resize(9000, 0);
        assert_eq!(run(&mut p), Verdict::Drop(DropReason::TooLong));
    }

    #[test]
    fn row12_client_header_garbage_is_ignored() {
        let mut p = request(4, 3);
        p[0] |= 0xC0; // LI 3
        p[1] = 200;
        p[4..40].fill(0xA5);
        assert_eq!(run(&mut p), Verdict::Reply(48));
        let r = NtpPacket::parse(&p).unwrap();
        assert_eq!(r.stratum, 2);
        assert_eq!(r.leap, LeapIndicator::NoWarning);
        assert_eq!(r.origin_timestamp, T1);
    }

    #[test]
    fn row13_poll_is_clamped() {
        for (poll, expected) in [(-128i8, MIN_REPLY_POLL), (127, MAX_REPLY_POLL), (6, 6)] {
            let mut p = request(4, 3);
            p[2] = poll as u8;
            run(&mut p);
            assert_eq!(NtpPacket::parse(&p).unwrap().poll, expected);
        }
    }

    #[test]
    fn row14_odd_transmit_timestamps_are_echoed_bit_for_bit() {
        for t in [0, u64::MAX, 0xFFFF_FFFF_0000_0000, 0x0000_0000_FFFF_FFFF, 0x8000_0000_0000_0001] {
            let mut p = request(4, 3);
            p[40..48].copy_from_slice(&t.to_be_bytes());
            assert_eq!(run(&mut p), Verdict::Reply(48));
            assert_eq!(p[24..32], t.to_be_bytes());
        }
    }

    #[test]
    fn row16_low_bits_are_random_and_high_bits_exact() {
        let mut a = request(4, 3);
        let mut b = request(4, 3);
        let snap = synced();
        respond(&mut a, RxMeta { noise: 0, ..meta() }, &snap, &mut ServeAll, &mut NoAuth, || T3);
        respond(&mut b, RxMeta { noise: u64::MAX, ..meta() }, &snap, &mut ServeAll, &mut NoAuth, || T3);
        let (ra, rb) = (NtpPacket::parse(&a).unwrap(), NtpPacket::parse(&b).unwrap());
        let mask = (1u64 << 12) - 1; // precision -20: 12 bits below it
                                     // ... but for the LSBs interleaved mode needs: receive's set, transmit's clear.
        assert_eq!(ra.receive_timestamp.to_bits() & mask, 1);
        assert_eq!(rb.receive_timestamp.to_bits() & mask, mask);
        assert_eq!(ra.transmit_timestamp.to_bits() & !mask, T3.to_bits() & !mask);
        assert_eq!(ra.receive_timestamp.to_bits() & !mask, T2.to_bits() & !mask);
        assert_eq!(rb.transmit_timestamp.to_bits() & mask, mask & !1);
    }

    #[test]
    fn reply_carries_the_snapshot() {
        let mut p = request(4, 3);
        run(&mut p);
        let r = NtpPacket::parse(&p).unwrap();
        let s = synced();
        assert_eq!(r.ref_id, s.ref_id);
        assert_eq!(r.precision, s.precision);
        assert_eq!(r.root_delay, s.root_delay);
        assert_eq!(r.root_dispersion, s.root_dispersion);
        assert_eq!(r.reference_timestamp, s.reference_time);
    }

    #[test]
    fn unsynchronized_snapshot_answers_li3_stratum_16() {
        let mut p = request(4, 3);
        respond(&mut p, meta(), &ServerSnapshot::unsynchronized(-20), &mut ServeAll, &mut NoAuth, || T3);
        let r = NtpPacket::parse(&p).unwrap();
        assert_eq!((r.leap, r.stratum), (LeapIndicator::Unsynchronized, 16));
    }

    #[test]
    fn correction_shifts_both_server_timestamps() {
        let snap = ServerSnapshot {
            correction: ClockCorrection { offset: NtpDuration::from_seconds(3), ..ClockCorrection::IDENTITY },
            precision: -32,
            ..synced()
        };
        let mut p = request(4, 3);
        respond(&mut p, meta(), &snap, &mut ServeAll, &mut NoAuth, || T3);
        let r = NtpPacket::parse(&p).unwrap();
        // T2's LSB is set in every reply (interleaved mode's marker); T3's is already clear.
        assert_eq!(r.receive_timestamp.since(T2), NtpDuration::from_bits(NtpDuration::from_seconds(3).to_bits() | 1));
        assert_eq!(r.transmit_timestamp.since(T3), NtpDuration::from_seconds(3));
    }

    /// A map standing in for the store: what respond() takes and saves.
    #[derive(Default)]
    struct Remember(std::collections::HashMap<u64, NtpTimestamp>, u32);

    impl Interleave for Remember {
        fn take(&mut self, origin: NtpTimestamp) -> Option<NtpTimestamp> {
            self.0.remove(&origin.to_bits())
        }
        fn save(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp) {
            self.1 += 1;
            self.0.insert(receive.to_bits(), transmit);
        }
    }

    /// A request as chronyd's `xleave` client sends it: origin = our last receive timestamp,
    /// receive = when it got our last reply, transmit = now.
    fn interleaved_request(origin: NtpTimestamp, receive: NtpTimestamp, transmit: NtpTimestamp) -> Vec<u8> {
        let mut p = request(4, 3);
        p[24..32].copy_from_slice(&origin.to_be_bytes());
        p[32..40].copy_from_slice(&receive.to_be_bytes());
        p[40..48].copy_from_slice(&transmit.to_be_bytes());
        p
    }

    fn serve(p: &mut [u8], store: &mut Remember, rx_time: NtpTimestamp, t3: NtpTimestamp) -> NtpPacket {
        let rx = RxMeta { rx_time, ..meta() };
        let snap = ServerSnapshot { precision: -32, ..synced() };
        assert_eq!(respond_with(p, rx, &snap, &mut ServeAll, &mut NoAuth, store, || t3), Verdict::Reply(48));
        NtpPacket::parse(p).unwrap()
    }

    #[test]
    fn an_xleave_client_gets_the_previous_replys_transmit_time_from_its_third_request() {
        let mut store = Remember::default();
        let ts = |s: u32, f: u32| NtpTimestamp::from_parts(0xE000_0000 + s, f);
        // 1: a fresh client, origin zero: basic, nothing saved.
        let r1 = serve(
            &mut interleaved_request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, ts(1, 0)),
            &mut store,
            ts(1, 10),
            ts(1, 20),
        );
        assert_eq!((r1.origin_timestamp, store.1), (ts(1, 0), 0));
        assert_eq!(r1.receive_timestamp.to_bits() & 1, 1);
        // 2: origin = our receive timestamp of reply 1 (LSB 1), not stored: basic, saved.
        let r2 = serve(
            &mut interleaved_request(r1.receive_timestamp, ts(1, 30), ts(2, 0)),
            &mut store,
            ts(2, 10),
            ts(2, 20),
        );
        assert_eq!(r2.origin_timestamp, ts(2, 0));
        assert_eq!(r2.transmit_timestamp, ts(2, 20));
        assert_eq!(store.1, 1);
        // The kernel's stamp of reply 2 arrives: 3 units later.
        store.0.insert(r2.receive_timestamp.to_bits(), ts(2, 24));
        // 3: quotes reply 2's receive timestamp: interleaved. Origin = the request's receive
        // field; transmit = reply 2's true transmit time, LSB clear.
        let r3 = serve(
            &mut interleaved_request(r2.receive_timestamp, ts(2, 30), ts(3, 0)),
            &mut store,
            ts(3, 10),
            ts(3, 20),
        );
        assert_eq!(r3.origin_timestamp, ts(2, 30));
        assert_eq!(r3.transmit_timestamp, ts(2, 24));
        assert_eq!(r3.receive_timestamp, ts(3, 11));
        // Used once: the same request again gets a basic reply.
        let again = serve(
            &mut interleaved_request(r2.receive_timestamp, ts(2, 30), ts(3, 5)),
            &mut store,
            ts(3, 40),
            ts(3, 50),
        );
        assert_eq!((again.origin_timestamp, again.transmit_timestamp), (ts(3, 5), ts(3, 50)));
    }

    #[test]
    fn basic_clients_never_touch_the_store() {
        let mut store = Remember::default();
        let t = |f: u32| NtpTimestamp::from_parts(0xE000_0001, f);
        store.0.insert(t(7).to_bits(), t(1));
        // ntpd-like: origin = our last transmit timestamp (LSB clear).
        serve(&mut interleaved_request(t(6), t(9), t(11)), &mut store, t(20), t(30));
        // chrony in basic mode: origin and receive zero.
        serve(&mut interleaved_request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, t(11)), &mut store, t(20), t(30));
        // NTPv3, and receive == transmit (chrony's sign of a client that cannot use it).
        let mut v3 = interleaved_request(t(7), t(9), t(11));
        v3[0] = (3 << 3) | 3;
        serve(&mut v3, &mut store, t(20), t(30));
        serve(&mut interleaved_request(t(7), t(11), t(11)), &mut store, t(20), t(30));
        assert_eq!((store.0.len(), store.1), (1, 0));
    }

    #[test]
    fn a_kod_is_never_interleaved() {
        let mut store = Remember::default();
        let t = |f: u32| NtpTimestamp::from_parts(0xE000_0001, f);
        store.0.insert(t(7).to_bits(), t(1));
        let mut p = interleaved_request(t(7), t(9), t(11));
        let mut policy = Fixed(AdmitAction::Kod { code: KissCode::Rate, poll: 6 });
        let v = respond_with(&mut p, meta(), &synced(), &mut policy, &mut NoAuth, &mut store, || T3);
        assert_eq!(v, Verdict::Kod(KissCode::Rate));
        assert_eq!((store.0.len(), store.1), (1, 0), "nothing taken, nothing saved");
        assert_eq!(NtpPacket::parse(&p).unwrap().origin_timestamp, t(11));
    }

    #[test]
    fn source_port_zero_is_dropped() {
        let mut p = request(4, 3);
        let rx = RxMeta { client: "192.0.2.10:0".parse().unwrap(), ..meta() };
        assert_eq!(
            respond(&mut p, rx, &synced(), &mut ServeAll, &mut NoAuth, || T3),
            Verdict::Drop(DropReason::SourcePort)
        );
    }

    #[test]
    fn kod_rate_follows_rfc5905() {
        let mut p = request(4, 3);
        p[2] = 2;
        let mut policy = Fixed(AdmitAction::Kod { code: KissCode::Rate, poll: 6 });
        let mut clock_read = false;
        let v = respond(&mut p, meta(), &synced(), &mut policy, &mut NoAuth, || {
            clock_read = true;
            T3
        });
        assert_eq!(v, Verdict::Kod(KissCode::Rate));
        assert!(!clock_read, "a KoD carries no time, so the clock is not read");
        let r = NtpPacket::parse(&p).unwrap();
        assert_eq!((r.stratum, r.ref_id, r.poll, r.origin_timestamp), (0, RefId(*b"RATE"), 6, T1));
        assert_eq!((r.receive_timestamp, r.transmit_timestamp), (NtpTimestamp::ZERO, NtpTimestamp::ZERO));
        assert!(NtpHeader::new(&p).unwrap().is_kiss_of_death());
    }

    #[test]
    fn admission_drop_is_reported() {
        let mut p = request(4, 3);
        let mut policy = Fixed(AdmitAction::Drop(DropReason::Denied));
        assert_eq!(
            respond(&mut p, meta(), &synced(), &mut policy, &mut NoAuth, || T3),
            Verdict::Drop(DropReason::Denied)
        );
    }

    #[test]
    fn drop_reason_indices_match_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_grow(bytes in proptest::collection::vec(any::<u8>(), 0..1200), port in any::<u16>(), noise in any::<u64>()) {
            let mut buf = bytes.clone();
            let rx = RxMeta { client: SocketAddr::from(([198, 51, 100, 7], port)), rx_time: T2, noise };
            let verdict = respond(&mut buf, rx, &synced(), &mut ServeAll, &mut NoAuth, || T3);
            match verdict.reply_len() {
                Some(len) => {
                    prop_assert!(len <= bytes.len());
                    let r = NtpPacket::parse(&buf).unwrap();
                    prop_assert_eq!(r.mode, NtpMode::Server);
                    prop_assert_eq!(&buf[24..32], &bytes[40..48]);
                }
                None => prop_assert_eq!(&buf, &bytes),
            }
        }

        #[test]
        fn arbitrary_bytes_with_keys_never_panic_and_never_grow(bytes in proptest::collection::vec(any::<u8>(), 48..200), key_id in prop_oneof![Just(7u32), Just(9), any::<u32>()]) {
            let mut buf = bytes.clone();
            buf[0] = 0x23;
            let len = buf.len() & !3;
            buf.truncate(len);
            if len >= 52 {
                buf[len - 24.min(len - 48)..][..4].copy_from_slice(&key_id.to_be_bytes());
            }
            let before = buf.clone();
            let verdict = respond(&mut buf, meta(), &synced(), &mut ServeAll, &mut keys(), || T3);
            match verdict.reply_len() {
                Some(len) => prop_assert!(len <= before.len()),
                None => prop_assert_eq!(&buf, &before),
            }
        }

        #[test]
        fn valid_requests_with_random_fields_are_answered(header in proptest::array::uniform32(any::<u8>()), xmt in any::<u64>(), version in 1u8..=4) {
            let mut buf = [0u8; 48];
            buf[..32].copy_from_slice(&header);
            buf[40..].copy_from_slice(&xmt.to_be_bytes());
            buf[0] = (buf[0] & 0xC0) | (version << 3) | 3;
            let verdict = respond(&mut buf, meta(), &synced(), &mut ServeAll, &mut NoAuth, || T3);
            prop_assert_eq!(verdict, Verdict::Reply(48));
            prop_assert_eq!(NtpHeader::new(&buf).unwrap().origin_timestamp().to_bits(), xmt);
        }
    }
}
