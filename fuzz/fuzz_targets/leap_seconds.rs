//! Any leap-seconds.list text: the parser never panics, and a list it accepts answers every
//! question about any time without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::sync::LeapSecondsList;

fuzz_target!(|input: (&str, i64)| {
    let (text, unix) = input;
    if let Ok(list) = LeapSecondsList::parse(text) {
        let _ = list.expiry(unix);
        let _ = list.tai_offset_at(unix);
        let _ = list.next_leap_after(unix);
    }
});
