//! Any bytes from a serial port: the line buffer and the NMEA decoder never panic, and every
//! line handed out is at most 80 printable characters starting with `$`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_proto::NtpTimestamp;
use stratum_refclock::nmea::{LineBuffer, NmeaConfig, NmeaDecoder, MAX_LINE};

fuzz_target!(|bytes: &[u8]| {
    let mut lines = LineBuffer::new();
    let mut decoder = NmeaDecoder::new(NmeaConfig::default());
    for (i, &b) in bytes.iter().enumerate() {
        let now = NtpTimestamp::from_unix(1_773_144_000 + (i / 8) as i64, 0);
        if let Some(line) = lines.push(b, now) {
            assert!(line.text.len() <= MAX_LINE - 2 && line.text.starts_with('$'));
            let (text, start) = (line.text.to_owned(), line.start);
            let _ = decoder.handle_line(&text, start);
        }
    }
});
