//! What the AF_XDP bench tests share (tests/xdp_engine.rs, tests/xdp_interleaved.rs): the root
//! check, `ip`, a veth pair between two network namespaces the test creates, and a UDP responder
//! thread inside one of them.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use stratum_host::sockopt::set_int;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_stratum-bench");

/// True when root; otherwise fails when CI is set, else says why `test` is skipped.
pub(crate) fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: needs root, and CI is set");
    eprintln!("skipping {test}: needs root (network namespaces, XDP and AF_XDP)");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Namespaces `gen` and `srv` joined by veth `gen_if` (10.N.M.1, fd00:5b:..::1) - `srv_if` (.2, ::2),
/// with the simulated clients routed back to the generator. Removed on drop.
pub(crate) struct Pair {
    pub(crate) gen: String,
    pub(crate) srv: String,
    pub(crate) gen_if: String,
    pub(crate) srv_if: String,
    pub(crate) v4: [String; 2],
    pub(crate) v6: [String; 2],
}

impl Pair {
    /// `tag` (one letter) tells apart the pairs of tests running at once.
    pub(crate) fn new(tag: char) -> Self {
        let n = std::process::id();
        let (gen, srv) = (format!("sbx{tag}g{n}"), format!("sbx{tag}s{n}"));
        let (gen_if, srv_if) = (format!("sbx{tag}g{}", n % 100_000), format!("sbx{tag}s{}", n % 100_000));
        let (a, b) = ((n >> 8) % 200 + 20, (n + tag as u32) % 256);
        let v4 = [format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2")];
        let v6 = [format!("fd00:5b:{n:x}:{:x}::1", tag as u32), format!("fd00:5b:{n:x}:{:x}::2", tag as u32)];
        let pair = Self { gen, srv, gen_if, srv_if, v4, v6 };
        for ns in [&pair.gen, &pair.srv] {
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", &pair.gen_if, "type", "veth", "peer", "name", &pair.srv_if]);
        for (ns, dev, i) in [(&pair.gen, &pair.gen_if, 0), (&pair.srv, &pair.srv_if, 1)] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{}/24", pair.v4[i]), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{}/64", pair.v6[i]), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &pair.srv, "route", "add", "10.200.0.0/16", "via", &pair.v4[0]]);
        ip(&["-n", &pair.srv, "-6", "route", "add", "fd00:5354:c1::/64", "via", &pair.v6[0]]);
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A UDP socket bound to `addr` in namespace `ns`, with a 50 ms receive timeout (and, with
/// `rcvbuf`, that receive buffer forced first), handed to `serve` on a thread that joined the
/// namespace; returns once the socket is bound.
pub(crate) fn responder<T: Send + 'static>(
    ns: &str,
    addr: String,
    rcvbuf: Option<libc::c_int>,
    serve: impl FnOnce(UdpSocket) -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("the namespace's handle");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns with an open namespace fd; it moves only this thread.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let socket = UdpSocket::bind(&addr).expect("bind the responder");
        if let Some(size) = rcvbuf {
            set_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).expect("SO_RCVBUFFORCE");
        }
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        ready_tx.send(()).unwrap();
        serve(socket)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("the responder is ready");
    handle
}
