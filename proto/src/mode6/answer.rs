//! One mode 6 request in, its reply fragments out.

use std::net::IpAddr;

use super::header::{self, error_reply, fragments, ErrorCode, Rejection, ReplyHeader, MAX_FRAGMENTS};
use super::mru::{self, MruEntry, NonceKey};
use super::op;
use super::vars::{self, PeerVars, SystemVars};
use crate::time::NtpTimestamp;

/// What the answers are made of, read by the caller once per request.
#[derive(Clone, Debug, PartialEq)]
pub struct Mode6State<'a> {
    pub system: SystemVars<'a>,
    pub peers: &'a [PeerVars],
    /// The MRU list, heaviest first, already bounded by the caller.
    pub mru: &'a [MruEntry],
    /// Now, on the served clock.
    pub now: NtpTimestamp,
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these datagrams back, in order.
    Reply(Vec<Vec<u8>>),
    /// Nothing to send (not a request, or an MRU request without a good nonce); why, for the
    /// caller's counters.
    Drop(&'static str),
}

/// Answers `datagram`, a mode 6 request from `client`.
pub fn answer(datagram: &[u8], state: &Mode6State<'_>, client: IpAddr, key: &NonceKey) -> Outcome {
    let request = match header::parse_request(datagram) {
        Ok(r) => r,
        Err(Rejection::Drop(why)) => return Outcome::Drop(why),
        Err(Rejection::Error { version, opcode, sequence, association, code }) => {
            let h = ReplyHeader { version, opcode, sequence, status: 0, association };
            return Outcome::Reply(vec![error_reply(&h, code)]);
        }
    };
    let system_status = state.system.status_word();
    let reply = ReplyHeader::to(&request, system_status);
    let error = |code| Outcome::Reply(vec![error_reply(&reply, code)]);
    let text = |h: &ReplyHeader, text: String| Outcome::Reply(fragments(h, text.as_bytes(), MAX_FRAGMENTS));
    match request.opcode {
        op::READSTAT if request.association == 0 => {
            let mut data = Vec::with_capacity(state.peers.len() * 4);
            for p in state.peers {
                data.extend_from_slice(&p.association.to_be_bytes());
                data.extend_from_slice(&p.status_word().to_be_bytes());
            }
            Outcome::Reply(fragments(&reply, &data, MAX_FRAGMENTS))
        }
        op::READSTAT | op::READVAR => {
            if request.association == 0 {
                return match vars::render(&state.system.list(), request.data) {
                    Ok(t) => text(&reply, t),
                    Err(code) => error(code),
                };
            }
            let Some(peer) = state.peers.iter().find(|p| p.association == request.association) else {
                return error(ErrorCode::BadAssociation);
            };
            let h = ReplyHeader { status: peer.status_word(), ..reply };
            match vars::render(&peer.list(), request.data) {
                Ok(t) => text(&h, t),
                Err(code) => Outcome::Reply(vec![error_reply(&h, code)]),
            }
        }
        op::REQ_NONCE => text(&reply, format!("nonce={}", key.issue(client, state.now))),
        op::READ_MRU => {
            let Some(query) = mru::parse_query(request.data) else {
                return Outcome::Drop("mrulist without a nonce");
            };
            if !key.verify(query.nonce, client, state.now) {
                return Outcome::Drop("mrulist with a bad nonce");
            }
            let body = mru::render(&query, state.mru, &key.issue(client, state.now), state.now);
            Outcome::Reply(fragments(&reply, body.as_bytes(), query.frags))
        }
        // Writes, configuration and traps change the server: never over mode 6 here.
        op::WRITEVAR | op::WRITECLOCK | op::CONFIGURE | op::SAVECONFIG | op::SETTRAP | op::UNSETTRAP => {
            error(ErrorCode::Permission)
        }
        // No refclock variables, ordered lists or async messages to give.
        _ => error(ErrorCode::BadOpcode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode6::vars::{Selection, TimeSource};

    const KEY: NonceKey = NonceKey([1; 16]);

    fn state_parts() -> (SystemVars<'static>, Vec<PeerVars>) {
        let system = SystemVars {
            version: "stratumd",
            processor: "x86_64",
            system: "Linux",
            leap: 0,
            stratum: 2,
            precision: -24,
            root_delay_ms: 1.0,
            root_dispersion_ms: 1.0,
            refid: "127.0.0.1",
            reftime: None,
            clock: NtpTimestamp::from_parts(100, 0),
            peer: 1,
            source: TimeSource::Ntp,
            tc: 6,
            mintc: 3,
            offset_ms: 0.0,
            frequency_ppm: 0.0,
            sys_jitter_ms: 0.0,
            clk_jitter_ms: None,
            clk_wander_ppm: None,
            tai: None,
            leapsec: None,
            expire: None,
        };
        let peer = PeerVars {
            association: 1,
            selection: Selection::SystemPeer,
            reach: 0xff,
            srcadr: "127.0.0.1".parse().unwrap(),
            srcport: 123,
            srchost: Some("a".repeat(2000)),
            dstadr: None,
            leap: None,
            stratum: None,
            precision: None,
            root_delay_ms: None,
            root_dispersion_ms: None,
            refid: None,
            rec: None,
            unreach: None,
            hmode: 3,
            pmode: 4,
            hpoll: 6,
            ppoll: 6,
            headway: 0,
            flash: 0,
            offset_ms: None,
            delay_ms: None,
            dispersion_ms: None,
            jitter_ms: None,
            xleave_ms: 0.0,
            filtdelay_ms: vec![],
            filtoffset_ms: vec![],
            filtdisp_ms: vec![],
        };
        (system, vec![peer])
    }

    fn req(opcode: u8, association: u16, data: &[u8]) -> Vec<u8> {
        let mut r = vec![0x26, opcode, 0, 1, 0, 0];
        r.extend_from_slice(&association.to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    fn me() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn replies(o: Outcome) -> Vec<Vec<u8>> {
        match o {
            Outcome::Reply(r) => r,
            Outcome::Drop(why) => panic!("dropped: {why}"),
        }
    }

    #[test]
    fn readstat_lists_associations_with_their_status_words() {
        let (system, peers) = state_parts();
        let s = Mode6State { system, peers: &peers, mru: &[], now: NtpTimestamp::from_parts(100, 0) };
        let r = replies(answer(&req(1, 0, b""), &s, me(), &KEY));
        assert_eq!(r.len(), 1);
        assert_eq!(&r[0][4..6], &[0x06, 0x00], "system status");
        assert_eq!(&r[0][12..16], &[0, 1, 0x96, 0x00]);
    }

    #[test]
    fn peer_variables_are_fragmented_and_unknown_ones_refused() {
        let (system, peers) = state_parts();
        let s = Mode6State { system, peers: &peers, mru: &[], now: NtpTimestamp::from_parts(100, 0) };
        let r = replies(answer(&req(2, 1, b""), &s, me(), &KEY));
        assert_eq!(r.len(), 5, "2000-byte srchost in 468-byte fragments");
        assert!(r.iter().all(|f| f[4] == 0x96));
        let r = replies(answer(&req(2, 2, b""), &s, me(), &KEY));
        assert_eq!(r[0][1], 0xc2);
        assert_eq!(r[0][4], ErrorCode::BadAssociation as u8);
        let r = replies(answer(&req(2, 0, b"bogus"), &s, me(), &KEY));
        assert_eq!(r[0][4], ErrorCode::UnknownVariable as u8);
    }

    #[test]
    fn writes_and_configuration_are_refused_with_permission_denied() {
        let (system, peers) = state_parts();
        let s = Mode6State { system, peers: &peers, mru: &[], now: NtpTimestamp::from_parts(100, 0) };
        for opcode in [op::WRITEVAR, op::WRITECLOCK, op::CONFIGURE, op::SAVECONFIG, op::SETTRAP, op::UNSETTRAP] {
            let r = replies(answer(&req(opcode, 0, b"stratum=1"), &s, me(), &KEY));
            assert_eq!(r, vec![vec![0x26, 0xc0 | opcode, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]], "opcode {opcode}");
        }
        let r = replies(answer(&req(op::READ_ORDLIST_A, 0, b""), &s, me(), &KEY));
        assert_eq!(r[0][4], ErrorCode::BadOpcode as u8);
    }

    #[test]
    fn mrulist_needs_the_nonce_it_was_given() {
        let (system, peers) = state_parts();
        let now = NtpTimestamp::from_parts(100, 0);
        let s = Mode6State { system, peers: &peers, mru: &[], now };
        let r = replies(answer(&req(op::REQ_NONCE, 0, b""), &s, me(), &KEY));
        let nonce = std::str::from_utf8(&r[0][12..12 + 30]).unwrap().to_string();
        assert!(nonce.starts_with("nonce="), "{nonce}");
        let q = format!("{nonce}, frags=32");
        let r = replies(answer(&req(op::READ_MRU, 0, q.as_bytes()), &s, me(), &KEY));
        let count = usize::from(u16::from_be_bytes([r[0][10], r[0][11]]));
        let text = std::str::from_utf8(&r[0][12..12 + count]).unwrap();
        assert!(text.contains("now=0x00000064.00000000"), "{text}");
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            answer(&req(op::READ_MRU, 0, q.as_bytes()), &s, other, &KEY),
            Outcome::Drop("mrulist with a bad nonce")
        );
        assert_eq!(answer(&req(op::READ_MRU, 0, b"frags=3"), &s, me(), &KEY), Outcome::Drop("mrulist without a nonce"));
    }
}
