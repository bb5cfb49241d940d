//! Per-reply counters of a load step, and the reasons a reply is invalid.

use serde::Serialize;
use stratum_proto::client::{NumberedError, OutOfOrder};
use stratum_proto::RefId;

/// Why a reply seen by `load` is invalid. Each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not exactly 48 bytes (our requests are 48, and a reply is never longer than its request).
    Length,
    /// Not version 4, or not mode 4.
    Header,
    /// The origin timestamp names no request of this run.
    Origin,
    /// A second reply to a request already answered.
    Duplicate,
    /// A reply to a request so old that its send record was reused.
    Late,
    /// T2 lies outside [T1, T4], widened by the reply's precision.
    T2Window,
    /// T3 lies outside [T2, T4], widened by the reply's precision.
    T3Window,
    /// `load --nts-ke`: not our unique identifier, or an authenticator that does not open with
    /// S2C (not authentic), or NTS fields that do not parse.
    Nts,
}

impl From<NumberedError> for Invalid {
    fn from(e: NumberedError) -> Self {
        match e {
            NumberedError::Length => Self::Length,
            NumberedError::Header => Self::Header,
            NumberedError::Origin => Self::Origin,
        }
    }
}

impl From<OutOfOrder> for Invalid {
    fn from(e: OutOfOrder) -> Self {
        match e {
            OutOfOrder::T2 => Self::T2Window,
            OutOfOrder::T3 => Self::T3Window,
        }
    }
}

/// Per-reply counters. received = valid + invalid + kod + unsynced; answered = the requests with
/// at least one reply that names them (valid, KoD, unsynchronised, or failing a timestamp check).
///
/// Serialized as the counter keys of a ramp step (`StepResult` flattens it), in this order; those
/// have never had `send_errors` and `received`, so these two are not serialized. The load
/// report writes every counter under its own keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sent: u64,
    #[serde(skip_serializing)]
    pub send_errors: u64,
    #[serde(skip_serializing)]
    pub received: u64,
    pub answered: u64,
    pub valid: u64,
    pub kod: u64,
    pub invalid: u64,
    /// `invalid` by reason.
    pub invalid_length: u64,
    pub invalid_header: u64,
    pub invalid_origin: u64,
    pub duplicate: u64,
    pub invalid_late: u64,
    pub invalid_t2_window: u64,
    pub invalid_t3_window: u64,
    /// `load --nts-ke`: replies that are not authentic NTS replies to our requests (only
    /// serialized when there were any, so a plain run's keys are as before).
    #[serde(skip_serializing_if = "is_zero")]
    pub invalid_nts: u64,
    /// Replies to an earlier step of the same ramp (they arrived after that step's drain): not
    /// this step's replies, so in none of the counts above, and not held against the step.
    pub stale: u64,
    pub unsynced: u64,
    /// `kod` by code: RATE (the server rate-limits us), and DENY or RSTR (it refuses us).
    pub kod_rate: u64,
    pub kod_deny_rstr: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        let Self {
            sent,
            send_errors,
            received,
            answered,
            valid,
            kod,
            invalid,
            invalid_length,
            invalid_header,
            invalid_origin,
            duplicate,
            invalid_late,
            invalid_t2_window,
            invalid_t3_window,
            invalid_nts,
            stale,
            unsynced,
            kod_rate,
            kod_deny_rstr,
        } = o;
        self.sent += sent;
        self.send_errors += send_errors;
        self.received += received;
        self.answered += answered;
        self.valid += valid;
        self.invalid += invalid;
        self.kod += kod;
        self.unsynced += unsynced;
        self.invalid_length += invalid_length;
        self.invalid_header += invalid_header;
        self.invalid_origin += invalid_origin;
        self.duplicate += duplicate;
        self.invalid_late += invalid_late;
        self.invalid_t2_window += invalid_t2_window;
        self.invalid_t3_window += invalid_t3_window;
        self.invalid_nts += invalid_nts;
        self.stale += stale;
        self.kod_rate += kod_rate;
        self.kod_deny_rstr += kod_deny_rstr;
    }
}

impl Counts {
    /// One kiss-o'-death reply with this code.
    #[inline]
    pub fn count_kod(&mut self, code: RefId) {
        self.kod += 1;
        match &code.0 {
            b"RATE" => self.kod_rate += 1,
            b"DENY" | b"RSTR" => self.kod_deny_rstr += 1,
            _ => {}
        }
    }

    pub fn count_invalid(&mut self, why: Invalid) {
        self.invalid += 1;
        *match why {
            Invalid::Length => &mut self.invalid_length,
            Invalid::Header => &mut self.invalid_header,
            Invalid::Origin => &mut self.invalid_origin,
            Invalid::Duplicate => &mut self.duplicate,
            Invalid::Late => &mut self.invalid_late,
            Invalid::T2Window => &mut self.invalid_t2_window,
            Invalid::T3Window => &mut self.invalid_t3_window,
            Invalid::Nts => &mut self.invalid_nts,
        } += 1;
    }
}
