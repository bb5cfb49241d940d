use super::*;

const T0: i64 = 1_773_144_000;

fn ts(unix: f64) -> NtpTimestamp {
    NtpTimestamp::from_unix(unix.floor() as i64, ((unix - unix.floor()) * 1e9) as u32)
}

/// A time-of-day sample for true second `s` as an NMEA receiver gives it: arriving `late`
/// seconds after the second, on a host clock `host_offset` ahead, with `offset` configured.
fn nmea(s: i64, late: f64, host_offset: f64, offset: f64) -> TimeSample {
    TimeSample {
        reference: ts(s as f64 + offset),
        local: ts(s as f64 + late + host_offset),
        leap: LeapIndicator::NoWarning,
        dispersion: 1e-3,
        delay: 0.0,
    }
}

/// Runs `n` seconds of the simulator with an NMEA sample each second (after its pulse), returns
/// the pulse offsets used and the rejects.
fn run(sim: &mut SimPps, lock: &mut PpsLock, n: usize, late: f64, offset: f64) -> (Vec<f64>, Vec<PulseReject>) {
    let mut tracker = EdgeTracker::new(Edge::Assert);
    let (mut used, mut rejected) = (Vec::new(), Vec::new());
    let end = sim.next_second + n as i64;
    while sim.next_second < end {
        let info = sim.fetch(Duration::from_secs(1)).unwrap();
        if let Some(t) = tracker.next(&info) {
            match lock.pulse(t) {
                Ok(s) => used.push(s.offset()),
                Err(e) => rejected.push(e),
            }
        }
        // The sentence for the second that pulse began (it comes after the clear edge).
        if sim.pending_clear.is_none() && sim.pending_double.is_none() {
            lock.time_of_day(nmea(sim.next_second - 1, late, sim.host_offset, offset));
        }
    }
    (used, rejected)
}

#[test]
fn locked_pulses_name_the_second_to_their_jitter() {
    let mut sim = SimPps::new(T0, 7);
    sim.host_offset = 0.123_456;
    sim.jitter = 100e-9;
    let mut lock = PpsLock::new(PpsConfig::default());
    let (used, rejected) = run(&mut sim, &mut lock, 100, 0.3, 0.3);
    assert_eq!(rejected, vec![PulseReject::NoLock], "only the first pulse, before any sentence");
    assert_eq!(used.len(), 99);
    for o in &used {
        assert!((o + 0.123_456).abs() < 300e-9, "offset {o}");
    }
    assert!(lock.is_locked());
}

/// BAD_INPUTS 36: without a time-of-day sample, or with one too old, no pulse is numbered; an
/// uncalibrated NMEA 500 ms late disagrees and is not used either.
#[test]
fn without_a_fresh_lock_no_pulse_is_numbered() {
    let mut lock = PpsLock::new(PpsConfig::default());
    assert_eq!(lock.pulse(ts(T0 as f64)), Err(PulseReject::NoLock));
    lock.time_of_day(nmea(T0, 0.3, 0.0, 0.3));
    assert!(lock.pulse(ts(T0 as f64 + 1.0)).is_ok());
    assert!(lock.pulse(ts(T0 as f64 + 2.0)).is_ok());
    assert!(lock.pulse(ts(T0 as f64 + 3.0)).is_err(), "3 pulses old with max-lock-age 2");
    lock.forget_time_of_day();
    assert_eq!(lock.pulse(ts(T0 as f64 + 4.0)), Err(PulseReject::NoLock));
    // NMEA 0.5 s late, offset not configured: the edge is 0.5 s from the second it names.
    lock.time_of_day(nmea(T0 + 4, 0.5, 0.0, 0.0));
    assert!(matches!(lock.pulse(ts(T0 as f64 + 5.0)), Err(PulseReject::LockDisagrees(_))));
    assert!(!lock.is_locked());
    assert_eq!(lock.counters().unlocked, 4);
}

/// BAD_INPUTS 37: missing pulses leave the lock; double pulses and the pulse's other edge are
/// dropped.
#[test]
fn missing_double_and_wrong_edge_pulses_are_filtered() {
    let mut sim = SimPps::new(T0, 11);
    sim.jitter = 100e-9;
    sim.missing = 0.2;
    sim.double = 0.2;
    let mut lock = PpsLock::new(PpsConfig::default());
    let (used, rejected) = run(&mut sim, &mut lock, 300, 0.3, 0.3);
    let doubles = rejected.iter().filter(|r| **r == PulseReject::Double).count();
    assert!(doubles > 20, "{rejected:?}");
    assert!(used.len() > 200, "{} used", used.len());
    assert!(used.iter().all(|o| o.abs() < 300e-9));
    assert_eq!(lock.counters().doubles as usize, doubles);
    // Every one of the 300 seconds is a numbered pulse, a refused one or a missing one (the
    // first and last seconds may fall outside the numbered span).
    let c = lock.counters();
    let accounted = c.locked + c.unlocked + c.missing;
    assert!((298..=300).contains(&accounted), "{c:?}");
    // (Unlocked: runs of missing pulses here also skip their NMEA sentences, so the lock's
    // sample grows older than `max_lock_age`.)
    assert!(c.missing > 40, "{c:?}");
    println!(
        "FIGURE pps-lock 300 s, 20 % missing, 20 % double: {c:?}, max |offset| {:.0} ns",
        used.iter().fold(0.0f64, |m, o| m.max(o.abs())) * 1e9
    );

    // Capturing the clear edge of a 100 ms pulse by mistake (or both): with `width` the lock
    // puts it 0.1 s after the second and drops it.
    let mut lock = PpsLock::new(PpsConfig { width: 0.1, ..PpsConfig::default() });
    lock.time_of_day(nmea(T0, 0.3, 0.0, 0.3));
    assert_eq!(lock.pulse(ts(T0 as f64 + 1.1)), Err(PulseReject::WrongEdge));
    assert!(lock.pulse(ts(T0 as f64 + 2.0)).is_ok());
    assert_eq!(lock.counters().wrong_edges, 1);
}

#[test]
fn the_edge_tracker_takes_each_sequence_once_and_only_its_edge() {
    let mut sim = SimPps::new(T0, 3);
    let mut assert = EdgeTracker::new(Edge::Assert);
    let mut clear = EdgeTracker::new(Edge::Clear);
    let (mut a, mut c) = (0, 0);
    for _ in 0..20 {
        let info = sim.step();
        a += usize::from(assert.next(&info).is_some());
        c += usize::from(clear.next(&info).is_some());
    }
    assert_eq!((a, c), (10, 10));
}
