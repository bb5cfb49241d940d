//! The RFC 7822 extension-field walk terminates on any input and never reads past it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::packet::scan_trailer;

fuzz_target!(|input: (u8, &[u8])| {
    let (version, rest) = input;
    if let Ok(trailer) = scan_trailer(version & 7, rest) {
        assert!(usize::from(trailer.extension_fields) * 16 <= rest.len());
    }
});
