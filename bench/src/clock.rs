//! Reading the clock the servers we measure serve: CLOCK_REALTIME, as an NTP timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

use stratum_proto::NtpTimestamp;

/// Now, from CLOCK_REALTIME (a vDSO read, no syscall).
pub fn now_ntp() -> NtpTimestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos())
}
