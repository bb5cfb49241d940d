//! `source = "sync"` configurations through `--check-config` (issue #20): every bad upstream,
//! pool or leap-seconds entry is refused with one line naming its file, line and key; the good
//! ones, and the shipped example, pass. One test runs two stratumd on loopback: a pool's
//! servers inherit its selection options.

mod common;

use std::time::Duration;

use common::*;

const SERVER: &str = "[server]\nlisten = [\"127.0.0.1:11123\"]\nworkers = 1\n";

fn sync(clock: &str, rest: &str) -> String {
    format!("{SERVER}\n[clock]\nsource = \"sync\"\n{clock}\n{rest}")
}

const UPSTREAM: &str = "[[upstream]]\naddress = \"192.0.2.10\"\n";

#[test]
fn good_sync_configurations_pass() {
    let leap = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/data/leap-seconds.list");
    for text in [
        sync("", UPSTREAM),
        sync(
            &format!("step-threshold = 0.5\nmax-steps = 0\nmax-holdover = \"90m\"\nminsane = 2\nleap-seconds = \"{leap}\""),
            "[[upstream]]\naddress = \"[2001:db8::1]:4123\"\niburst = true\nminpoll = -6\nmaxpoll = 17\nprefer = true\n\n\
             [[pool]]\nname = \"pool.example.net\"\nmax-sources = 4\n",
        ),
        // The system discipline (checked here, never run: it would steer this machine's clock).
        sync("discipline = \"system\"", UPSTREAM),
        sync("discipline = \"system\"\nleap-mode = \"kernel\"", UPSTREAM),
        sync("discipline = \"system\"\nleap-mode = \"smear\"", UPSTREAM),
        sync("discipline = \"system\"\nleap-mode = \"step\"", UPSTREAM),
        sync("leap-mode = \"smear\"", UPSTREAM),
        sync("discipline = \"virtual\"\nleap-mode = \"step\"", UPSTREAM),
    ] {
        let (ok, _, err, _) = check_config(&text);
        assert!(ok, "{err}\n{text}");
    }
}

#[test]
fn bad_upstream_pool_and_clock_keys_name_their_line() {
    // Lines: 1-3 [server], 4 blank, 5 [clock], 6 source, 7 the clock key below (if any), ...
    assert_refused(&sync("", "[[upstream]]\naddress = \"192.0.2.10:0\"\n"), 9, "upstream.address", "not a port");
    assert_refused(&sync("", "[[upstream]]\naddress = \"a b\"\n"), 9, "upstream.address", "not a host");
    assert_refused(
        &sync("", "[[upstream]]\naddress = \"192.0.2.10\"\nminpoll = 18\n"),
        10,
        "upstream.minpoll",
        "-6..=17",
    );
    assert_refused(
        &sync("", "[[upstream]]\naddress = \"192.0.2.10\"\nmaxpoll = -7\n"),
        10,
        "upstream.maxpoll",
        "-6..=17",
    );
    assert_refused(
        &sync("", "[[upstream]]\naddress = \"192.0.2.10\"\nburst = true\n"),
        10,
        "upstream.burst",
        "unknown field",
    );
    assert_refused(&sync("", "[[upstream]]\nminpoll = 4\n"), 8, "upstream", "address");
    assert_refused(
        &sync("", &format!("{UPSTREAM}\n[[upstream]]\naddress = \"192.0.2.11\"\nminpoll = 8\nmaxpoll = 6\n")),
        11,
        "upstream",
        "minpoll 8 is above maxpoll 6",
    );
    assert_refused(&sync("", &format!("{UPSTREAM}\n{UPSTREAM}")), 11, "upstream", "listed twice");
    assert_refused(
        &sync("", "[[pool]]\nname = \"pool.example.net\"\nmax-sources = 0\n"),
        10,
        "pool.max-sources",
        "1..=16",
    );
    assert_refused(
        &sync("", "[[pool]]\nname = \"pool.example.net\"\nminpoll = 9\nmaxpoll = 7\n"),
        8,
        "pool",
        "above maxpoll",
    );
    assert_refused(&sync("", ""), 6, "clock.source", "needs servers to poll");
    assert_refused(&sync("step-threshold = -1", UPSTREAM), 7, "clock.step-threshold", "outside");
    assert_refused(&sync("max-holdover = \"3w\"", UPSTREAM), 7, "clock.max-holdover", "not a duration");
    assert_refused(&sync("minsane = 3", UPSTREAM), 7, "clock.minsane", "never synchronised");
    assert_refused(&sync("discipline = \"sundial\"", UPSTREAM), 7, "clock.discipline", "unknown variant");
    assert_refused(&sync("leap-mode = \"kernel\"", UPSTREAM), 7, "clock.leap-mode", "needs discipline = \"system\"");
    assert_refused(
        &sync("discipline = \"virtual\"\nleap-mode = \"kernel\"", UPSTREAM),
        8,
        "clock.leap-mode",
        "needs discipline = \"system\"",
    );
    assert_refused(&sync("leap-mode = \"slew\"", UPSTREAM), 7, "clock.leap-mode", "unknown variant");
    assert_refused(
        &format!("{SERVER}\n[clock]\nsource = \"local\"\nleap-mode = \"smear\"\n"),
        7,
        "clock.leap-mode",
        "needs source = \"sync\"",
    );
    assert_refused(&sync("stratum = 2", UPSTREAM), 7, "clock.stratum", "follow the selected upstream");
    assert_refused(
        &sync("leap-seconds = \"/nonexistent/leap-seconds.list\"", UPSTREAM),
        7,
        "clock.leap-seconds",
        "cannot read",
    );
    // [[pool]]'s selection options are booleans, as [[upstream]]'s.
    assert_refused(
        &sync("", "[[pool]]\nname = \"pool.example.net\"\nprefer = \"yes\"\n"),
        10,
        "pool.prefer",
        "expected a boolean",
    );
    assert_refused(&sync("", "[[pool]]\nname = \"pool.example.net\"\nrequire = 1\n"), 10, "pool.require", "boolean");
    assert_refused(
        &sync("", "[[pool]]\nname = \"pool.example.net\"\nnoselct = true\n"),
        10,
        "pool.noselct",
        "unknown field",
    );
    // Upstreams without source = "sync" would be silently unused.
    let local = format!("{SERVER}\n[clock]\nsource = \"local\"\n\n{UPSTREAM}");
    assert_refused(&local, 8, "upstream", "need [clock] source = \"sync\"");
}

/// `[[pool]]` takes chrony's selection options (its servers inherit them); `require` with
/// `noselect` on any kind of source is accepted, as chrony does, with one warning line naming
/// the file, line and key (such a source can never meet its own requirement).
#[test]
fn pool_selection_options_and_the_require_noselect_warning() {
    let pool = "[[pool]]\nname = \"pool.example.net\"\nprefer = true\ntrust = true\nrequire = true\n";
    let (ok, _, err, _) = check_config(&sync("", pool));
    assert!(ok && err.trim().is_empty(), "{err}");
    let (ok, _, err, _) = check_config(&sync("", "[[pool]]\nname = \"pool.example.net\"\nnoselect = true\n"));
    assert!(ok && err.trim().is_empty(), "{err}");

    // Each warning names its entry's line (as the other checks across keys do): 8 [[pool]],
    // 13 [[upstream]], 18 [[refclock]].
    let text = sync(
        "",
        "[[pool]]\nname = \"pool.example.net\"\nnoselect = true\nrequire = true\n\n\
         [[upstream]]\naddress = \"192.0.2.10\"\nnoselect = true\nrequire = true\n\n\
         [[refclock]]\ndriver = \"sock\"\ndevice = \"/run/stratumd/gps.sock\"\nnoselect = true\nrequire = true\n",
    );
    let (ok, out, err, path) = check_config(&text);
    assert!(ok, "a warning, not an error: {err}");
    assert!(out.contains(": ok"), "{out}");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 3, "one line per entry: {err}");
    for (line, key) in [(8, "pool.require"), (13, "upstream.require"), (18, "refclock.require")] {
        let start = format!("{path}:{line}: {key}: warning: require with noselect");
        assert!(lines.iter().any(|l| l.starts_with(&start) && l.contains("never steered")), "wanted {start}: {err}");
    }
}

#[test]
fn a_leap_seconds_file_with_a_bad_hash_is_refused() {
    let good =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/data/leap-seconds.list")).unwrap();
    // One changed entry: the #h line no longer matches.
    let tampered = good.replacen("      37      #", "      38      #", 1);
    assert_ne!(tampered, good);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leap-seconds.list");
    std::fs::write(&path, tampered).unwrap();
    assert_refused(&sync(&format!("leap-seconds = \"{}\"", path.display()), UPSTREAM), 7, "clock.leap-seconds", "");
}

/// A `[[pool]]`'s options reach the servers its name resolves to: with `noselect` the pool's
/// server (a stratumd on loopback) is polled and reachable but never selected, so the client
/// stays unsynchronised; the same pool without it is selected. No root needed.
#[test]
fn a_pools_servers_inherit_its_noselect() {
    let upstream_port = free_port();
    let mut upstream = Server::start(
        &config(&[format!("127.0.0.1:{upstream_port}")], 1, "source = \"local\"\nstratum = 1"),
        upstream_port,
    );
    for (noselect, selected) in [(true, false), (false, true)] {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let text = format!(
            "{}\n[[pool]]\nname = \"127.0.0.1:{upstream_port}\"\niburst = true\nminpoll = -1\nmaxpoll = -1\n\
             noselect = {noselect}\n\n[control]\nsocket = \"{}\"\n",
            config(&[format!("127.0.0.1:{port}")], 1, "source = \"sync\""),
            control.display()
        );
        let mut client = Server::start(&text, port);
        let what = format!("the pool's server reached (noselect = {noselect})");
        let sources = wait_for(Duration::from_secs(10), &what, &control, "sources", |s| {
            s["sources"][0]["reach"].as_str().is_some_and(|r| r.len() >= 2)
        });
        if selected {
            wait_for(Duration::from_secs(10), "selected without noselect", &control, "tracking", |t| {
                t["synchronized"] == true
            });
        } else {
            // Four more polls (0.5 s apart): reachable all along, never selected.
            std::thread::sleep(Duration::from_secs(2));
            let sources = ctl_json(&control, &["sources"]).expect("stratumctl sources");
            assert_eq!(sources["sources"][0]["state"], "unselectable", "{sources}");
            let tracking = ctl_json(&control, &["tracking"]).expect("stratumctl tracking");
            assert_eq!(tracking["synchronized"], false, "{tracking}\n{sources}");
        }
        eprintln!("noselect = {noselect}: {sources}");
        client.stop();
    }
    upstream.stop();
}
