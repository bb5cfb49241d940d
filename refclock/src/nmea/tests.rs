use proptest::prelude::*;

use super::*;

/// 2026-03-10 12:00:00 UTC.
const T0: i64 = 1_773_144_000;

fn host(unix: f64) -> NtpTimestamp {
    NtpTimestamp::from_unix(unix.floor() as i64, ((unix - unix.floor()) * 1e9) as u32)
}

fn hms(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}{:02}{:02}.00", s / 3600, s / 60 % 60, s % 60)
}

fn ddmmyy(unix: i64) -> (u32, u32, i64) {
    let (y, m, d) = stratum_proto::sync::calendar::civil_from_days(unix.div_euclid(86_400));
    (d, m, y)
}

fn rmc(unix: i64, status: char) -> String {
    let (d, m, y) = ddmmyy(unix);
    sentence(&format!("GPRMC,{},{status},4807.038,N,01131.000,E,0.0,0.0,{d:02}{m:02}{:02},,,A", hms(unix), y % 100))
}

fn gga(unix: i64, quality: u8, satellites: u32) -> String {
    sentence(&format!("GPGGA,{},4807.038,N,01131.000,E,{quality},{satellites:02},0.9,545.4,M,46.9,M,,", hms(unix)))
}

fn zda(unix: i64) -> String {
    let (d, m, y) = ddmmyy(unix);
    sentence(&format!("GPZDA,{},{d:02},{m:02},{y},00,00", hms(unix)))
}

fn decoder() -> NmeaDecoder {
    NmeaDecoder::new(NmeaConfig { offset: 0.3, delay: 0.1, ..NmeaConfig::default() })
}

/// Feeds RMC for seconds `from..to`, each 300 ms late; returns the events.
fn run(d: &mut NmeaDecoder, from: i64, to: i64) -> Vec<NmeaEvent> {
    (from..to).map(|s| d.handle_line(&rmc(s, 'A'), host(s as f64 + 0.3))).collect()
}

#[test]
fn rmc_once_a_second_gives_samples_with_the_offset_taken_out() {
    let mut d = decoder();
    let events = run(&mut d, T0, T0 + 5);
    assert_eq!(events[0], NmeaEvent::Rejected(Reject::Burst), "the first sentence waits for a second one");
    for e in &events[1..] {
        let NmeaEvent::Sample(s) = e else { panic!("{e:?}") };
        assert!(s.offset().abs() < 1e-6, "{s:?}");
        assert_eq!(s.delay, 0.1);
    }
    assert_eq!(d.counters().samples, 4);
}

#[test]
fn zda_with_its_four_digit_year_and_one_sample_per_second() {
    let mut d = decoder();
    let mut samples = 0;
    for s in T0..T0 + 4 {
        for line in [rmc(s, 'A'), zda(s), gga(s, 1, 9)] {
            if let NmeaEvent::Sample(x) = d.handle_line(&line, host(s as f64 + 0.3)) {
                samples += 1;
                assert_eq!(x.reference.to_unix(T0).0, s);
            }
        }
    }
    assert_eq!(samples, 3);
    // ZDA alone.
    let mut d = decoder();
    let events: Vec<_> = (T0..T0 + 3).map(|s| d.handle_line(&zda(s), host(s as f64 + 0.3))).collect();
    assert!(matches!(events[2], NmeaEvent::Sample(_)), "{events:?}");
}

/// BAD_INPUTS 35: no fix, too few satellites: stale.
#[test]
fn no_fix_and_too_few_satellites_are_stale() {
    let mut d = decoder();
    run(&mut d, T0, T0 + 3);
    assert_eq!(d.handle_line(&rmc(T0 + 3, 'V'), host(T0 as f64 + 3.3)), NmeaEvent::Stale(Stale::RmcInvalid));
    assert_eq!(d.handle_line(&gga(T0 + 3, 0, 0), host(T0 as f64 + 3.35)), NmeaEvent::Info);
    assert_eq!(d.handle_line(&rmc(T0 + 4, 'A'), host(T0 as f64 + 4.3)), NmeaEvent::Stale(Stale::NoFix));
    d.handle_line(&gga(T0 + 4, 1, 3), host(T0 as f64 + 4.35));
    assert_eq!(d.handle_line(&rmc(T0 + 5, 'A'), host(T0 as f64 + 5.3)), NmeaEvent::Stale(Stale::TooFewSatellites(3)));
    let gsa_no_fix = sentence("GPGSA,A,1,,,,,,,,,,,,,,,");
    d.handle_line(&gga(T0 + 5, 1, 8), host(T0 as f64 + 5.35));
    assert_eq!(d.handle_line(&gsa_no_fix, host(T0 as f64 + 5.36)), NmeaEvent::Info);
    assert_eq!(d.handle_line(&rmc(T0 + 6, 'A'), host(T0 as f64 + 6.3)), NmeaEvent::Stale(Stale::NoFix));
    let gsa_3d = sentence("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1");
    assert_eq!(d.handle_line(&gsa_3d, host(T0 as f64 + 6.36)), NmeaEvent::Info);
    assert!(matches!(d.handle_line(&rmc(T0 + 7, 'A'), host(T0 as f64 + 7.3)), NmeaEvent::Sample(_)));
    assert_eq!(d.fix(), FixStatus { fix: Some(true), satellites: Some(8) });
}

#[test]
fn a_wrong_checksum_is_refused() {
    let mut d = decoder();
    let mut line = rmc(T0, 'A');
    let n = line.len();
    line.replace_range(n - 2.., if &line[n - 2..] == "00" { "01" } else { "00" });
    assert_eq!(d.handle_line(&line, host(T0 as f64)), NmeaEvent::Rejected(Reject::Checksum));
    assert_eq!(d.handle_line("$GPRMC,no,star", host(T0 as f64)), NmeaEvent::Rejected(Reject::Checksum));
    assert_eq!(d.counters().checksum, 2);
}

/// The nmea crate refuses seconds >= 60: 23:59:60 is read, gives no sample, and the second after
/// it (00:00:00) follows on as a sample.
#[test]
fn the_leap_second_23_59_60_is_read_and_skipped() {
    // 2026-12-31 23:59:58.
    let midnight = days_from_civil(2027, 1, 1) * 86_400;
    let mut d = decoder();
    let mut events = Vec::new();
    let line = |s: &str, date: &str| sentence(&format!("GPRMC,{s},A,4807.038,N,01131.000,E,0.0,0.0,{date},,,A"));
    // Host clock: the kernel inserts the leap too, so 23:59:60 arrives one second after 23:59:59
    // and 00:00:00 one after that, all on the same host time line shifted by the leap.
    let h = |k: f64| host(midnight as f64 - 2.0 + k + 0.3);
    events.push(d.handle_line(&line("235958.00", "311226"), h(0.0)));
    events.push(d.handle_line(&line("235959.00", "311226"), h(1.0)));
    events.push(d.handle_line(&line("235960.00", "311226"), h(2.0)));
    events.push(d.handle_line(&line("000000.00", "010127"), h(3.0)));
    events.push(d.handle_line(&zda(midnight + 1), h(4.0)));
    assert!(matches!(events[1], NmeaEvent::Sample(_)), "{events:?}");
    assert_eq!(events[2], NmeaEvent::LeapSecond, "{events:?}");
    let NmeaEvent::Sample(after) = events[3] else { panic!("{events:?}") };
    assert_eq!(after.reference.to_unix(midnight).0, midnight);
    assert!(matches!(events[4], NmeaEvent::Sample(_)), "{events:?}");
    assert_eq!(d.counters().leap_seconds, 1);
    // ZDA and GGA are rewritten the same way.
    let zda60 = sentence("GPZDA,235960.00,31,12,2026,00,00");
    assert_eq!(decoder().handle_line(&zda60, h(2.0)), NmeaEvent::LeapSecond);
}

/// BAD_INPUTS 39: a receiver past a GPS week rollover reports a date 1024 weeks back; two-digit
/// years are placed from the build date.
#[test]
fn a_date_1024_weeks_back_is_refused_and_two_digit_years_follow_the_build_date() {
    let mut d = decoder();
    let back = T0 - 1024 * 7 * 86_400;
    let events =
        (0..3).map(|k| d.handle_line(&rmc(back + k, 'A'), host(T0 as f64 + k as f64 + 0.3))).collect::<Vec<_>>();
    for e in &events {
        assert!(matches!(e, NmeaEvent::Rejected(Reject::DateBeforeBuild { .. })), "{events:?}");
    }
    // With a 2025 build date two digits name 1975-2074 (whatever the nmea crate made of them);
    // those before the build date are then refused as above.
    let d = NmeaDecoder::new(NmeaConfig::default());
    assert_eq!(d.century_year(1999), 1999);
    assert_eq!(d.century_year(2026), 2026);
    assert_eq!(d.century_year(2074), 2074);
    assert_eq!(d.century_year(1983), 1983);
    assert_eq!(d.century_year(2075), 1975);
}

/// BAD_INPUTS 38: a burst of buffered sentences after a stall, a repeated second.
#[test]
fn a_burst_of_buffered_sentences_is_refused() {
    let mut d = decoder();
    run(&mut d, T0, T0 + 3);
    // A 3 s stall, then three sentences at once.
    let at = host(T0 as f64 + 6.3);
    let burst: Vec<_> = (T0 + 3..T0 + 6).map(|s| d.handle_line(&rmc(s, 'A'), at)).collect();
    assert!(burst.iter().all(|e| *e == NmeaEvent::Rejected(Reject::Burst)), "{burst:?}");
    // Back to one a second: the next is a sample again.
    assert!(matches!(d.handle_line(&rmc(T0 + 6, 'A'), host(T0 as f64 + 6.3 + 0.01)), NmeaEvent::Rejected(_)));
    assert!(matches!(d.handle_line(&rmc(T0 + 7, 'A'), host(T0 as f64 + 7.31)), NmeaEvent::Sample(_)));
    assert!(d.counters().bursts >= 3);
}

/// BAD_INPUTS 38: serial garbage, a wrong baud rate (bytes with the high bit), an overlong line.
#[test]
fn the_line_buffer_survives_garbage_and_drops_overlong_lines() {
    let mut lb = LineBuffer::new();
    let t = host(T0 as f64);
    let good = rmc(T0, 'A');
    let mut stream: Vec<u8> = vec![0xff, 0x80, b'x', 0x00];
    stream.extend_from_slice(b"$GPRMC,12\xfe\xfd\r\n");
    stream.push(b'$');
    stream.extend(std::iter::repeat_n(b'A', 200));
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(b"$GPGGA,half");
    stream.extend_from_slice(good.as_bytes());
    stream.extend_from_slice(b"\r\n");
    let mut lines = Vec::new();
    for &b in &stream {
        if let Some(line) = lb.push(b, t) {
            lines.push(line.text.to_owned());
        }
    }
    assert_eq!(lines, vec![good]);
    let c = lb.counters();
    assert_eq!((c.lines, c.overflows, c.garbage_lines), (1, 1, 2), "{c:?}");
    assert!(c.garbage_bytes >= 4);
    // Noise decoded as text is refused without a panic.
    let mut d = decoder();
    assert!(matches!(d.handle_line(&sentence("GPRMC,garbage"), t), NmeaEvent::Rejected(Reject::Garbage)));
}

#[test]
fn the_reader_takes_lines_from_any_read() {
    let text = (T0..T0 + 4).map(|s| rmc(s, 'A') + "\r\n").collect::<String>();
    let mut r = NmeaReader::new(text.as_bytes(), NmeaConfig::default());
    let mut events = Vec::new();
    let mut k = 0.0;
    while r.poll(|| host(T0 as f64 + 0.3), |e| events.push(e)).unwrap() > 0 {
        k += 1.0;
    }
    assert!(k >= 1.0);
    assert_eq!(events.len(), 4);
    assert_eq!(r.line_counters().lines, 4);
}

proptest! {
    /// Any bytes: the line buffer and decoder never panic, every line is at most 80 printable
    /// characters starting with `$`.
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut lb = LineBuffer::new();
        let mut d = decoder();
        for (i, &b) in bytes.iter().enumerate() {
            let t = host(T0 as f64 + i as f64 * 0.01);
            if let Some(line) = lb.push(b, t) {
                prop_assert!(line.text.len() <= MAX_LINE - 2 && line.text.starts_with('$'));
                let text = line.text.to_owned();
                let _ = d.handle_line(&text, t);
            }
        }
    }

    /// Valid sentences with any time and date: a sentence that decodes to a sample names that
    /// second; a flipped character is refused by the checksum (or gives the same sample).
    #[test]
    fn sentences_round_trip_and_corruption_is_caught(s in T0..T0 + 40 * 365 * 86_400, flip in 1usize..60, bit in 0u8..7) {
        let mut d = decoder();
        d.handle_line(&rmc(s - 1, 'A'), host((s - 1) as f64 + 0.3));
        let line = rmc(s, 'A');
        let mut corrupt = line.clone().into_bytes();
        let i = flip.min(corrupt.len() - 4);
        corrupt[i] ^= 1 << bit;
        let ok = d.clone().handle_line(&line, host(s as f64 + 0.3));
        let NmeaEvent::Sample(x) = ok else { panic!("{ok:?}") };
        prop_assert_eq!(x.reference.to_unix(s).0, s);
        if let Ok(text) = core::str::from_utf8(&corrupt) {
            let e = d.handle_line(text, host(s as f64 + 0.3));
            prop_assert!(!matches!(e, NmeaEvent::Sample(y) if y.reference != x.reference), "{:?}", e);
        }
    }
}
