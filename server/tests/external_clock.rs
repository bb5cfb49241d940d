//! `source = "external"` serves what the kernel says. On an unsynchronised kernel (the state of a
//! machine without a time daemon, as on CI) replies carry LI=3 and stratum 16 and real clients
//! refuse them; on a synchronised kernel they carry the configured stratum.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use stratum_proto::LeapIndicator;
use stratumd::time::kernel::read_kernel_state;

#[test]
fn external_source_follows_the_kernel() {
    let kernel = read_kernel_state().expect("adjtimex");
    let port = free_port();
    let mut server =
        Server::start(&config(&[format!("127.0.0.1:{port}")], 1, "source = \"external\"\nstratum = 2"), port);
    let (reply, _, _) = query(SocketAddr::from(([127, 0, 0, 1], port)), 4, Duration::from_secs(1)).unwrap();

    if kernel.synchronized {
        eprintln!("kernel clock is synchronised here: checking the synchronised branch");
        assert_eq!(reply.stratum, 2);
        assert_ne!(reply.leap, LeapIndicator::Unsynchronized);
        assert!((reply.root_dispersion.to_seconds_f64() - kernel.max_error_us as f64 * 1e-6).abs() < 0.01);
        server.stop();
        return;
    }
    assert_eq!((reply.leap, reply.stratum), (LeapIndicator::Unsynchronized, 16));
    if require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)") {
        let refused = chronyd_query("127.0.0.1", port, 3);
        assert!(refused.is_err(), "chronyd must refuse an unsynchronised server, got offset {refused:?}");
    }
    let log = server.stop_output();
    assert!(log.contains("serving unsynchronised"), "{log}");
}

#[test]
fn ntpdig_refuses_an_unsynchronised_server() {
    if read_kernel_state().expect("adjtimex").synchronized {
        eprintln!("skipped: the kernel clock is synchronised here");
        return;
    }
    if !ntpdig_available() {
        return;
    }
    let ns = Netns::new("unsync");
    let mut server =
        Server::start_with(ns.command(BIN), &config(&["127.0.0.1:123".into()], 1, "source = \"external\""), 123, None);
    std::thread::sleep(Duration::from_millis(500));
    let out = ntpdig(&ns, "127.0.0.1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ntpdig accepted an unsynchronised server");
    assert!(stderr.contains("stratum too high") || stderr.contains("leap not in sync"), "{stderr}");
    let log = server.stop_output();
    assert!(log.contains("answered=1"), "ntpdig's request reached the server and was answered: {log}");
}
