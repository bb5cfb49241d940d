//! `[[refclock]]` configurations through `--check-config` (issue 18): every bad key or
//! combination is refused with one line naming its file, line and key; the good ones pass
//! without the devices being there (the check never opens a device).

mod common;

use common::*;

const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:11123\"]\nworkers = 1\n";

/// Lines: 1-3 [server], 4 blank, 5 [clock], 6 source, 7 blank, 8 [[refclock]], 9 on: `rest`.
fn sync(rest: &str) -> String {
    format!("{SERVER}\n[clock]\nsource = \"sync\"\n\n{rest}")
}

fn refclock(keys: &str) -> String {
    sync(&format!("[[refclock]]\n{keys}\n"))
}

#[test]
fn good_refclock_configurations_pass_without_the_devices() {
    for text in [
        refclock("driver = \"shm\"\ndevice = \"0\""),
        refclock("driver = \"sock\"\ndevice = \"/run/stratumd/gps.sock\"\nrefid = \"SOCK\"\nprefer = true"),
        // The appliance: NMEA only to number the pulses, PPS preferred, an upstream as a check.
        sync(
            "[[refclock]]\ndriver = \"nmea\"\ndevice = \"/dev/ttyNONE9\"\nbaud = 115200\noffset = 0.35\ndelay = 0.1\n\
             noselect = true\n\n[[refclock]]\ndriver = \"pps\"\ndevice = \"/dev/ppsNONE9\"\nlock = \"GPS\"\n\
             edge = \"clear\"\nprefer = true\npoll = 2\nfilter = 16\n\n[[upstream]]\naddress = \"192.0.2.10\"\n",
        ),
        sync("[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n\n[[refclock]]\ndriver = \"shm\"\ndevice = \"1\"\nrefid = \"GPS1\"\n"),
        // SOCK pulse samples numbered by an NMEA receiver, as a /dev/pps line's would be.
        sync(
            "[[refclock]]\ndriver = \"nmea\"\ndevice = \"/dev/ttyNONE9\"\noffset = 0.3\nnoselect = true\n\n\
             [[refclock]]\ndriver = \"sock\"\ndevice = \"/run/stratumd/pps.sock\"\nrefid = \"PPS\"\nlock = \"GPS\"\n\
             prefer = true\n",
        ),
        // The selection and staleness keys: a trusted, required PPS, an SHM writer at 1/8 Hz.
        sync(
            "[[refclock]]\ndriver = \"shm\"\ndevice = \"2\"\nmax-age = \"20s\"\nnoselect = true\n\n\
             [[refclock]]\ndriver = \"pps\"\ndevice = \"/dev/ppsNONE9\"\nlock = \"GPS\"\ntrust = true\nrequire = true\n\
             prefer = true\nmax-lock-age = 4\nwidth = 0.1\nmax-age = 3\n",
        ),
        // trust and require on an upstream too (chrony's server options).
        sync("[[upstream]]\naddress = \"192.0.2.10\"\ntrust = true\nrequire = true\n"),
    ] {
        let (ok, _, err, _) = check_config(&text);
        assert!(ok, "{err}\n{text}");
    }
}

#[test]
fn bad_refclock_keys_name_their_line() {
    assert_refused(&refclock("driver = \"gps\"\ndevice = \"0\""), 9, "refclock.driver", "unknown variant");
    assert_refused(&refclock("device = \"0\""), 8, "refclock", "driver");
    assert_refused(&refclock("driver = \"shm\""), 8, "refclock", "device");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\nwidht = 0.1"), 11, "refclock.widht", "unknown field");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\nwidth = 1"), 11, "refclock.width", "outside 0..0.5");
    // trust, require, max-age, max-lock-age (issue 18's selection and staleness keys).
    assert_refused(&sync("[[upstream]]\naddress = \"192.0.2.10\"\ntrust = 1\n"), 10, "upstream.trust", "boolean");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\ntrust = \"yes\""), 11, "refclock.trust", "boolean");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\nrequire = 1"), 11, "refclock.require", "boolean");
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nmax-age = 0.01"),
        11,
        "refclock.max-age",
        "0.1 s..=1 day",
    );
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nmax-age = \"2d\""),
        11,
        "refclock.max-age",
        "0.1 s..=1 day",
    );
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nmax-age = \"3w\""),
        11,
        "refclock.max-age",
        "not a duration",
    );
    assert_refused(
        &refclock("driver = \"pps\"\ndevice = \"/dev/pps0\"\nlock = \"GPS\"\nmax-lock-age = 0"),
        12,
        "refclock.max-lock-age",
        "1..=64",
    );
    assert_refused(
        &refclock("driver = \"nmea\"\ndevice = \"/dev/ttyS0\"\nbaud = 12"),
        11,
        "refclock.baud",
        "300..=4000000",
    );
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\npoll = 11"), 11, "refclock.poll", "-6..=10");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\nfilter = 0"), 11, "refclock.filter", "1..=1024");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\nrefid = \"TOOLONG\""), 11, "refclock.refid", "1 to 4");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\noffset = 20.0"), 11, "refclock.offset", "-10..=10");
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"0\"\ndelay = -1.0"), 11, "refclock.delay", "0..=1");
    assert_refused(
        &refclock("driver = \"pps\"\ndevice = \"/dev/pps0\"\nedge = \"both\""),
        11,
        "refclock.edge",
        "unknown variant",
    );
}

#[test]
fn bad_refclock_combinations_name_their_entry() {
    assert_refused(&refclock("driver = \"shm\"\ndevice = \"gps0\""), 8, "refclock", "not a unit number");
    assert_refused(&refclock("driver = \"nmea\"\ndevice = \"ttyS0\""), 8, "refclock", "not an absolute path");
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nbaud = 9600"),
        8,
        "refclock",
        "baud is for the nmea driver",
    );
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nlock = \"GPS\""),
        8,
        "refclock",
        "for the pps and sock",
    );
    assert_refused(
        &refclock("driver = \"shm\"\ndevice = \"0\"\nwidth = 0.1"),
        8,
        "refclock",
        "for a refclock with lock",
    );
    assert_refused(
        &refclock("driver = \"sock\"\ndevice = \"/run/gps.sock\"\nmax-lock-age = 4"),
        8,
        "refclock",
        "for a refclock with lock",
    );
    assert_refused(
        &refclock("driver = \"sock\"\ndevice = \"/run/gps.sock\"\nedge = \"assert\""),
        8,
        "refclock",
        "edge is for the pps driver",
    );
    assert_refused(&refclock("driver = \"pps\"\ndevice = \"/dev/pps0\""), 8, "refclock", "needs lock");
    assert_refused(
        &refclock("driver = \"pps\"\ndevice = \"/dev/pps0\"\nlock = \"NMEA\""),
        8,
        "refclock",
        "names no configured",
    );
    let two = "[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n\n[[refclock]]\ndriver = \"sock\"\ndevice = \"/run/gps.sock\"\n";
    assert_refused(&sync(two), 12, "refclock", "refid GPS is used twice (entry 1)");
    let same = "[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n\n[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\nrefid = \"G2\"\n";
    assert_refused(&sync(same), 12, "refclock", "shm:0 is listed twice (entry 1)");
    let pps_to_pps =
        "[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n\n[[refclock]]\ndriver = \"pps\"\ndevice = \"/dev/pps0\"\n\
                      lock = \"PPS\"\n";
    assert_refused(&sync(pps_to_pps), 12, "refclock", "names a pps refclock");
    // A pulse source numbered by another pulse source names no second.
    let sock_to_locked = "[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n\n[[refclock]]\ndriver = \"sock\"\n\
                          device = \"/run/a.sock\"\nrefid = \"PPS\"\nlock = \"GPS\"\n\n[[refclock]]\ndriver = \"sock\"\n\
                          device = \"/run/b.sock\"\nrefid = \"PPS2\"\nlock = \"PPS\"\n";
    assert_refused(&sync(sock_to_locked), 18, "refclock", "names a refclock with its own lock");
    // Reference clocks need the sync time plane.
    let local = format!("{SERVER}\n[clock]\nsource = \"local\"\n\n[[refclock]]\ndriver = \"shm\"\ndevice = \"0\"\n");
    assert_refused(&local, 8, "refclock", "need [clock] source = \"sync\"");
}
