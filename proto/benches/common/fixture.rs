//! The server state every `respond()` benchmark answers from (included by the bench targets with `#[path]`).

use stratum_proto::{ClockCorrection, LeapIndicator, NtpShort, NtpTimestamp, RefId, ServerSnapshot};

/// A synchronised stratum-1 GPS server.
pub(crate) fn snapshot() -> ServerSnapshot {
    ServerSnapshot {
        leap: LeapIndicator::NoWarning,
        stratum: 1,
        precision: -24,
        ref_id: RefId(*b"GPS\0"),
        reference_time: NtpTimestamp::from_parts(0xEC00_0000, 0),
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_micros(10),
        dispersion_base: NtpTimestamp::from_parts(0xEC00_0000, 0),
        dispersion_rate: 64_425,
        tai_offset: 37,
        correction: ClockCorrection::IDENTITY,
    }
}
