//! Anycast scale-out gated on health (#17, item 6): deploy/anycast/bird.conf and health-gate.sh
//! with two real BIRD 2 daemons. stratumd and a BIRD in one network namespace (the anycast
//! server: the service address a /32 on `lo`), a BIRD as the upstream router in another, joined by
//! a veth. The router learns the /32 over BGP (and a client beside it reaches stratumd on it) only
//! while `stratumctl health` passes, and loses it within 10 s of stratumd stopping; an
//! unsynchronised stratumd is never announced. A pair of servers (a second namespace and BIRD, the
//! shipped bird.conf with its per-server values edited) behind one router with ECMP: both announce,
//! clients are spread over both, one stops and the other answers them all. Needs root
//! (namespaces, port 123) and Debian's bird2: skips outside CI without them, fails in CI.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stratum_proto::NtpPacket;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/anycast");
/// The service address in deploy/anycast/bird.conf, and the uplink's two ends.
const ANYCAST: &str = "192.0.2.123";
const SERVER_LINK: &str = "10.92.0.1";
const ROUTER_LINK: &str = "10.92.0.2";

fn available(test: &str) -> bool {
    require(is_root() && have_tool("ip"), &format!("{test}: needs root and ip (network namespaces, port 123)"))
        && require(have_tool("bird") && have_tool("birdc"), "BIRD 2 is not installed (apt-get install bird2)")
}

fn chronyd_available() -> bool {
    require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)")
}

/// The anycast server's namespace (stratumd, its BIRD, the gate) and the router's, joined by a
/// veth: the server is 10.92.0.1/30, the router 10.92.0.2/30.
struct Lab {
    server: Netns,
    router: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let server = Netns::new(&format!("{tag}s"));
        let router = Netns::new(&format!("{tag}r"));
        server.link("as0", &format!("{SERVER_LINK}/30"), &router, "ar0", &format!("{ROUTER_LINK}/30"));
        run_ok(Command::new("ip").args(["-n", &server.name, "addr", "add", &format!("{ANYCAST}/32"), "dev", "lo"]));
        Self { server, router, dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// BIRD in `ns`, in the foreground, with its own config and control socket, logging to a file.
    fn bird(&self, ns: &Netns, name: &str, conf: &str) -> Running {
        let conf = format!("log \"{}\" all;\n{conf}", self.path(&format!("{name}.log")).display());
        let path = self.path(&format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        let child = ns
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(self.path(&format!("{name}.ctl")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bird");
        Running(Some(child))
    }

    /// The server's BIRD with the shipped deploy/anycast/bird.conf as is.
    fn server_bird(&self) -> Running {
        let conf = std::fs::read_to_string(format!("{DEPLOY}/bird.conf")).unwrap();
        assert!(conf.contains(&format!("route {ANYCAST}/32")) && conf.contains(ROUTER_LINK), "bird.conf changed");
        self.bird(&self.server, "server", &conf)
    }

    /// The upstream router: takes routes from the server over eBGP and installs them in its kernel.
    fn router_bird(&self) -> Running {
        let conf = format!(
            "router id {ROUTER_LINK};\nprotocol device {{}}\n\
             protocol kernel {{ ipv4 {{ export all; }}; }}\n\
             protocol bgp server1 {{\n  local {ROUTER_LINK} as 65000;\n  neighbor {SERVER_LINK} as 65001;\n  \
             ipv4 {{ import all; export none; }};\n}}\n"
        );
        self.bird(&self.router, "router", &conf)
    }

    /// stratumd in the server namespace on the anycast address, `clock` and `extra` as given.
    fn stratumd(&self, clock: &str, extra: &str) -> (Server, PathBuf) {
        self.stratumd_in(&self.server, "control", clock, extra)
    }

    /// stratumd in `ns` on the anycast address, its control socket `name`.sock.
    fn stratumd_in(&self, ns: &Netns, name: &str, clock: &str, extra: &str) -> (Server, PathBuf) {
        let control = self.path(&format!("{name}.sock"));
        let text = format!(
            "[server]\nlisten = [\"{ANYCAST}:123\", \"127.0.0.1:123\"]\nworkers = 1\n\n[clock]\n{clock}\n\n\
             [control]\nsocket = \"{}\"\n{extra}",
            control.display()
        );
        let server = Server::start_with(ns.command(BIN), &text, 123, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !control.exists() {
            assert!(Instant::now() < deadline, "stratumd did not make its control socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        (server, control)
    }

    /// deploy/anycast/health-gate.sh against this stratumd and the server's BIRD.
    fn gate(&self, control: &Path) -> Running {
        self.gate_in(&self.server, control, "server", "gate.log")
    }

    /// The gate in `ns`, for the BIRD named `bird`, logging to `log`.
    fn gate_in(&self, ns: &Netns, control: &Path, bird: &str, log: &str) -> Running {
        let log = std::fs::File::create(self.path(log)).unwrap();
        let child = ns
            .command("sh")
            .arg(format!("{DEPLOY}/health-gate.sh"))
            .env("STRATUMCTL", CTL)
            .env("STRATUMD_SOCKET", control)
            .env("BIRD_SOCKET", self.path(&format!("{bird}.ctl")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start health-gate.sh");
        Running(Some(child))
    }

    /// chronyd serving its host clock at stratum 1 in the router's namespace, never touching the
    /// clock (-x): the upstream stratumd synchronises to.
    fn chronyd_upstream(&self) -> Running {
        chronyd_local_server(&self.router, self.dir.path(), ROUTER_LINK)
    }

    fn healthy(&self, control: &Path) -> bool {
        Command::new(CTL).arg("--socket").arg(control).arg("health").output().is_ok_and(|o| o.status.success())
    }

    fn birdc(&self, name: &str, command: &str) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.path(&format!("{name}.ctl")))
            .args(command.split_whitespace())
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the router has the anycast /32: in BIRD's table (from BGP) and in its kernel.
    fn router_has_route(&self) -> bool {
        let bird = self.birdc("router", &format!("show route {ANYCAST}/32"));
        let kernel = run_ok(Command::new("ip").args(["-n", &self.router.name, "route", "show", ANYCAST]));
        let in_bird = bird.contains(&format!("{ANYCAST}/32")) && bird.contains("server1");
        in_bird && !kernel.stdout.is_empty()
    }

    fn established(&self) -> bool {
        self.birdc("router", "show protocols server1").contains("Established")
    }

    fn logs(&self) -> String {
        ["server.log", "router.log", "gate.log", "second.log", "gate-b.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(self.path(f)).unwrap_or_default()))
            .collect()
    }

    fn wait_for(&self, what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < within, "{what} within {within:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// One NTP client exchange with the anycast address from the router's namespace (a thread
    /// that joins it), the way a client behind the router reaches the service.
    fn query_from_router(&self) -> Option<NtpPacket> {
        self.query_from_router_at(ROUTER_LINK)
    }

    /// The same from `source`, an address of the router's.
    fn query_from_router_at(&self, source: &'static str) -> Option<NtpPacket> {
        let path = format!("/run/netns/{}", self.router.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).ok()?;
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let socket = UdpSocket::bind((source, 0)).ok()?;
            socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let to: SocketAddr = format!("{ANYCAST}:123").parse().unwrap();
            socket.send_to(&NtpPacket::client_request(4, now_ntp()).to_bytes(), to).ok()?;
            let mut buf = [0u8; 2048];
            let (len, from) = socket.recv_from(&mut buf).ok()?;
            assert_eq!(from, to, "the reply must come from the anycast address");
            NtpPacket::parse(&buf[..len])
        })
        .join()
        .ok()?
    }
}

#[test]
fn announced_while_healthy_and_withdrawn_within_10s_of_stratumd_stopping() {
    if !available("anycast") {
        return;
    }
    let lab = Lab::new("anyup");
    let _router = lab.router_bird();
    let _bird = lab.server_bird();
    let (mut stratumd, control) = lab.stratumd("source = \"local\"\nstratum = 2", "");
    let _gate = lab.gate(&control);

    lab.wait_for("BGP session established and the anycast route learned", Duration::from_secs(30), || {
        lab.router_has_route()
    });
    let reply = lab.query_from_router().expect("a client beside the router reaches stratumd on the anycast address");
    assert_eq!(reply.stratum, 2);

    stratumd.stop();
    let took = lab.wait_for("the anycast route withdrawn after stratumd stopped", Duration::from_secs(10), || {
        !lab.router_has_route()
    });
    eprintln!("withdrawn {took:?} after stratumd stopped");
    assert!(lab.established(), "the withdrawal must come from the gate, not a dropped session:\n{}", lab.logs());
    assert!(lab.query_from_router().is_none(), "no route, no answer");
    let gate = std::fs::read_to_string(lab.path("gate.log")).unwrap();
    assert!(gate.contains("enable anycast: healthy") && gate.contains("disable anycast"), "{gate}");
}

#[test]
fn an_unsynchronised_server_is_never_announced() {
    if !available("anycast") {
        return;
    }
    let lab = Lab::new("anyns");
    let _router = lab.router_bird();
    let _bird = lab.server_bird();
    // An upstream that never answers (nothing listens on the router's port 123): LI=3, stratum 16.
    let upstream = format!("\n[[upstream]]\naddress = \"{ROUTER_LINK}:123\"\niburst = true\n");
    let (mut stratumd, control) = lab.stratumd("source = \"sync\"", &upstream);
    let _gate = lab.gate(&control);

    lab.wait_for("BGP session established", Duration::from_secs(30), || lab.established());
    // The gate has run for as long as the session took and then some: still nothing announced.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!lab.router_has_route(), "an unsynchronised server was announced:\n{}", lab.logs());
    assert!(lab.birdc("server", "show protocols anycast").contains("down"), "{}", lab.logs());
    let gate = std::fs::read_to_string(lab.path("gate.log")).unwrap();
    assert!(gate.contains("disable anycast: unhealthy: unsynchronised"), "{gate}");
    stratumd.stop();
}

/// Synchronised to a real upstream (chronyd beside the router): announced. The upstream goes away;
/// after `max-holdover` stratumd serves LI=3, `stratumctl health` fails, and the router loses the
/// route within 10 s of that, the BGP session still up.
#[test]
fn withdrawn_within_10s_of_stratumd_losing_sync() {
    if !available("anycast") || !chronyd_available() {
        return;
    }
    let lab = Lab::new("anyls");
    let mut upstream = lab.chronyd_upstream();
    let _router = lab.router_bird();
    let _bird = lab.server_bird();
    std::thread::sleep(Duration::from_millis(300));
    let extra = format!("\n[[upstream]]\naddress = \"{ROUTER_LINK}:123\"\niburst = true\nminpoll = -2\nmaxpoll = -1\n");
    let (mut stratumd, control) = lab.stratumd("source = \"sync\"\nmax-holdover = \"2s\"", &extra);
    let _gate = lab.gate(&control);

    lab.wait_for("synchronised to chronyd", Duration::from_secs(20), || lab.healthy(&control));
    lab.wait_for("the anycast route learned", Duration::from_secs(30), || lab.router_has_route());

    upstream.stop();
    let lost = Instant::now();
    lab.wait_for("unhealthy after max-holdover", Duration::from_secs(20), || !lab.healthy(&control));
    let unhealthy = lost.elapsed();
    let took = lab.wait_for("the anycast route withdrawn after stratumd lost sync", Duration::from_secs(10), || {
        !lab.router_has_route()
    });
    eprintln!("upstream gone; unhealthy after {unhealthy:?}, withdrawn {took:?} later");
    assert!(lab.established(), "the withdrawal must come from the gate:\n{}", lab.logs());
    let gate = std::fs::read_to_string(lab.path("gate.log")).unwrap();
    assert!(gate.contains("disable anycast: unhealthy: unsynchronised"), "{gate}");
    stratumd.stop();
}

/// The second server of a pair: its own namespace, joined to the router by a second veth
/// (10.92.0.5/30 here, 10.92.0.6/30 on the router), the same anycast /32 on its `lo`.
const SECOND_LINK: &str = "10.92.0.5";
const ROUTER_LINK_2: &str = "10.92.0.6";
/// A client address on the router's `lo`: on neither link, so the kernel picks the path by the
/// flow's hash alone (a source address of one link makes Linux prefer that link's nexthop).
const CLIENT: &str = "10.92.9.1";

impl Lab {
    fn add_second_server(&self, tag: &str) -> Netns {
        let second = Netns::new(tag);
        second.link("bs0", &format!("{SECOND_LINK}/30"), &self.router, "br0", &format!("{ROUTER_LINK_2}/30"));
        run_ok(Command::new("ip").args(["-n", &second.name, "addr", "add", &format!("{ANYCAST}/32"), "dev", "lo"]));
        // Replies to clients behind the router go back through it.
        run_ok(Command::new("ip").args(["-n", &second.name, "route", "add", "default", "via", ROUTER_LINK_2]));
        run_ok(Command::new("ip").args(["-n", &self.server.name, "route", "add", "default", "via", ROUTER_LINK]));
        run_ok(Command::new("ip").args(["-n", &self.router.name, "addr", "add", &format!("{CLIENT}/32"), "dev", "lo"]));
        // The router hashes flows on addresses and ports (L4), as ECMP routers do for UDP.
        run_ok(self.router.command("sysctl").args(["-qw", "net.ipv4.fib_multipath_hash_policy=1"]));
        second
    }

    /// The second server's BIRD: the shipped bird.conf with the values it says to edit per
    /// server (router id, uplink address, neighbor); the same AS and service address.
    fn second_bird(&self, second: &Netns) -> Running {
        let conf = std::fs::read_to_string(format!("{DEPLOY}/bird.conf")).unwrap();
        let edits = [
            (format!("router id {SERVER_LINK};"), format!("router id {SECOND_LINK};")),
            (format!("local {SERVER_LINK} as"), format!("local {SECOND_LINK} as")),
            (format!("neighbor {ROUTER_LINK} as"), format!("neighbor {ROUTER_LINK_2} as")),
        ];
        let mut conf = conf;
        for (from, to) in edits {
            assert_eq!(conf.matches(&from).count(), 1, "bird.conf changed: {from}");
            conf = conf.replace(&from, &to);
        }
        self.bird(second, "second", &conf)
    }

    /// The router with a session to each server and ECMP into its kernel (`merge paths`).
    fn router_bird_pair(&self) -> Running {
        let conf = format!(
            "router id {ROUTER_LINK};\nprotocol device {{}}\n\
             protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
             protocol bgp server1 {{\n  local {ROUTER_LINK} as 65000;\n  neighbor {SERVER_LINK} as 65001;\n  \
             ipv4 {{ import all; export none; }};\n}}\n\
             protocol bgp server2 {{\n  local {ROUTER_LINK_2} as 65000;\n  neighbor {SECOND_LINK} as 65001;\n  \
             ipv4 {{ import all; export none; }};\n}}\n"
        );
        self.bird(&self.router, "router", &conf)
    }

    /// Which servers the router has the anycast route from: (server1, server2, kernel nexthops).
    fn router_paths(&self) -> (bool, bool, usize) {
        let bird = self.birdc("router", &format!("show route {ANYCAST}/32"));
        let kernel = run_ok(Command::new("ip").args(["-n", &self.router.name, "route", "show", ANYCAST]));
        let kernel = String::from_utf8_lossy(&kernel.stdout).to_string();
        let hops = if kernel.contains("nexthop") {
            kernel.matches("nexthop").count()
        } else {
            usize::from(!kernel.trim().is_empty())
        };
        (bird.contains("server1"), bird.contains("server2"), hops)
    }
}

/// Two servers behind one anycast address: both announce it, the router spreads clients over both
/// (ECMP); one stops, its route is withdrawn within 10 s, and clients reach the other.
#[test]
fn a_pair_shares_the_address_and_the_other_server_takes_over() {
    if !available("anycast") {
        return;
    }
    let lab = Lab::new("anyp1");
    let second = lab.add_second_server("anyp2");
    let _router = lab.router_bird_pair();
    let _bird = lab.server_bird();
    let _bird2 = lab.second_bird(&second);
    // Told apart by their stratum.
    let (mut first, control1) = lab.stratumd_in(&lab.server, "first", "source = \"local\"\nstratum = 2", "");
    let (mut other, control2) = lab.stratumd_in(&second, "second", "source = \"local\"\nstratum = 3", "");
    let _gate = lab.gate_in(&lab.server, &control1, "server", "gate.log");
    let _gate2 = lab.gate_in(&second, &control2, "second", "gate-b.log");

    lab.wait_for("the route from both servers, two nexthops in the kernel", Duration::from_secs(30), || {
        lab.router_paths() == (true, true, 2)
    });
    let mut strata = BTreeSet::new();
    for _ in 0..40 {
        strata.insert(lab.query_from_router_at(CLIENT).expect("answered on the anycast address").stratum);
    }
    assert_eq!(strata, BTreeSet::from([2, 3]), "ECMP spreads clients over both servers");

    first.stop();
    let took = lab.wait_for("the first server's route withdrawn", Duration::from_secs(10), || {
        lab.router_paths() == (false, true, 1)
    });
    eprintln!("first server stopped: its route withdrawn {took:?} later, the other's kept");
    assert!(lab.established(), "the withdrawal must come from the gate:\n{}", lab.logs());
    for _ in 0..10 {
        let reply = lab.query_from_router_at(CLIENT).expect("the other server of the pair answers");
        assert_eq!(reply.stratum, 3);
    }
    other.stop();
}
