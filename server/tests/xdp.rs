//! The xdp backend end to end over veth between two namespaces the test creates: real chronyd and
//! ntpdig get valid replies; ping, TCP and other UDP ports still reach the kernel; a multi-queue
//! veth runs one worker per queue; the socket and xdp backends give the same reply bytes; BAD
//! INPUTS 17-22 as raw frames; kill -9 leaves nothing attached. Root only (fails when CI is set).
#![cfg(feature = "xdp")]

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{chronyd_offset, ctl_json, have_tool, is_root, require, run_ok, Netns, Server, BIN};
use serde_json::Value;
use stratum_proto::frame::checksum;

fn available() -> bool {
    require(is_root(), "the xdp backend needs root (XDP, AF_XDP, network namespaces)")
        && require(
            have_tool("ip") && have_tool("chronyd") && have_tool("ntpdig") && have_tool("python3"),
            "ip, chronyd, ntpdig or python3 is missing (scripts/test installs them)",
        )
}

/// Two namespaces joined by a veth pair with `queues` queues each way: `srv` (10.89.N.1, fd89:N::1,
/// interface `xs`) and `cli` (10.89.N.2, fd89:N::2, interface `xc`).
struct Pair {
    srv: Netns,
    cli: Netns,
    net: u8,
}

impl Pair {
    fn new(tag: &str, queues: u32) -> Self {
        let srv = Netns::new(&format!("{tag}s"));
        let cli = Netns::new(&format!("{tag}c"));
        let net = (std::process::id() % 200) as u8 + u8::try_from(tag.len()).unwrap();
        let q = queues.to_string();
        // Made in the root namespace first: names unique per test and process.
        let (xs, xc) =
            (format!("{tag}s{}", std::process::id() % 10000), format!("{tag}c{}", std::process::id() % 10000));
        let _ = Command::new("ip").args(["link", "del", &xs]).output();
        run_ok(Command::new("ip").args([
            "link",
            "add",
            &xs,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &xc,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]));
        run_ok(Command::new("ip").args(["link", "set", &xs, "netns", &srv.name, "name", "xs"]));
        run_ok(Command::new("ip").args(["link", "set", &xc, "netns", &cli.name, "name", "xc"]));
        for (ns, dev, host) in [(&srv, "xs", 1), (&cli, "xc", 2)] {
            run_ok(Command::new("ip").args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("10.89.{net}.{host}/24"),
                "dev",
                dev,
            ]));
            run_ok(Command::new("ip").args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("fd89:{net}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]));
            run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
        }
        Self { srv, cli, net }
    }

    fn server_v4(&self) -> String {
        format!("10.89.{}.1", self.net)
    }

    fn server_v6(&self) -> String {
        format!("fd89:{}::1", self.net)
    }

    fn client_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, self.net, 2)
    }

    fn in_cli(&self, program: &str, args: &[&str]) -> Output {
        self.cli.command(program).args(args).output().expect("run a client command")
    }

    fn python(&self, script: &str, args: &[&str]) -> Output {
        let mut all = vec!["-c", script];
        all.extend_from_slice(args);
        self.in_cli("python3", &all)
    }

    fn xdp_attached(&self) -> bool {
        let out = run_ok(Command::new("ip").args(["-n", &self.srv.name, "-d", "link", "show", "xs"]));
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// The server interface's MAC, as the client must address frames to it.
    fn server_mac(&self) -> [u8; 6] {
        let out = run_ok(Command::new("ip").args(["-n", &self.srv.name, "-o", "link", "show", "xs"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mac = text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a MAC");
        parse_mac(mac)
    }

    fn client_mac(&self) -> [u8; 6] {
        let out = run_ok(Command::new("ip").args(["-n", &self.cli.name, "-o", "link", "show", "xc"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        parse_mac(text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a MAC"))
    }
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate() {
        mac[i] = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

fn xdp_config(queues: &str, control: &std::path::Path, extra: &str) -> String {
    format!(
        "[server]\nbackend = \"xdp\"\ninterface = \"xs\"\nqueues = {queues}\nport = 123\nxdp-mode = \"auto\"\n\n\
         [clock]\nsource = \"local\"\nstratum = 2\n\n[control]\nsocket = \"{}\"\n{extra}",
        control.display()
    )
}

/// Starts stratumd inside the server namespace and waits for its control socket.
fn start_xdp(pair: &Pair, queues: &str, extra: &str) -> (Server, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let control = dir.join("control.sock");
    let mut server = Server::start_with(pair.srv.command(BIN), &xdp_config(queues, &control, extra), 123, None);
    // Generous: on a loaded 2-core host the verifier and the attach alone can take seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl_json(&control, &["status"]).is_none() {
        assert!(Instant::now() < deadline, "stratumd (xdp) did not come up: {}", server.stop_output());
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, control)
}

fn dropped(status: &Value, reason: &str) -> u64 {
    status["requests"]["dropped"][reason].as_u64().unwrap()
}

/// chronyd -Q from the client namespace.
fn chronyd_in(pair: &Pair, host: &str) -> Result<f64, String> {
    let out = pair.in_cli("chronyd", &["-Q", "-t", "6", &format!("server {host} iburst maxsamples 1")]);
    chronyd_offset(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn real_clients_get_valid_replies_and_other_traffic_reaches_the_kernel() {
    if !available() {
        return;
    }
    let pair = Pair::new("xa", 1);
    let metrics = format!("\n[metrics]\nlisten = \"{}:9123\"\n", pair.server_v4());
    let (mut server, control) = start_xdp(&pair, "\"all\"", &metrics);
    assert!(pair.xdp_attached());

    // chronyd and ntpdig, IPv4 and IPv6, accept the replies.
    let offset = chronyd_in(&pair, &pair.server_v4()).expect("chronyd accepts the xdp backend");
    assert!(offset.abs() < 0.05, "offset {offset}");
    for host in [pair.server_v4(), pair.server_v6()] {
        let out = pair.in_cli("ntpdig", &["-j", "-t", "2", &host]);
        assert!(out.status.success(), "ntpdig {host}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("ntpdig JSON");
        assert_eq!(v["stratum"], 2, "{v}");
        assert!(v["offset"].as_f64().unwrap().abs() < 0.05, "{v}");
    }

    // Ping, TCP and another UDP port go to the kernel untouched (BAD_INPUTS 22).
    let ping = pair.python(PING, &[&pair.server_v4()]);
    assert!(ping.status.success(), "ICMP echo through XDP_PASS: {}", String::from_utf8_lossy(&ping.stderr));
    let tcp_listener = pair.srv.command("python3").args(["-c", TCP_ECHO]).spawn().unwrap();
    let _reap = KillOnDrop(tcp_listener);
    let tcp = pair.python(TCP_CLIENT, &[&pair.server_v4()]);
    assert!(tcp.status.success(), "TCP through XDP_PASS: {}", String::from_utf8_lossy(&tcp.stderr));
    assert_eq!(String::from_utf8_lossy(&tcp.stdout).trim(), "hello over tcp");

    let status = ctl_json(&control, &["status"]).unwrap();
    assert_eq!(status["backend"], "xdp");
    assert_eq!(status["xdp"]["attach_mode"], "driver");
    assert_eq!(status["xdp"]["bind_mode"], "copy", "veth has no zero-copy mode");
    assert!(status["requests"]["answered"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["xdp"]["program"]["passed"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["requests"]["send_failed"], 0);

    // /metrics has the XDP families, and every stratumd_xdp_* name the shipped dashboard and
    // alert rules use exists in a scrape of a server running the xdp backend.
    let scrape = pair.python(HTTP_GET, &[&format!("http://{}:9123/metrics", pair.server_v4())]);
    assert!(scrape.status.success(), "{}", String::from_utf8_lossy(&scrape.stderr));
    let text = String::from_utf8_lossy(&scrape.stdout).to_string();
    assert!(text.lines().any(|l| l.starts_with("stratumd_xdp_info{") && l.contains("mode=\"driver\"")), "{text}");
    assert!(text.contains("stratumd_backend_info{backend=\"xdp\"} 1"), "{text}");
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    for file in ["grafana-dashboard.json", "alerts.yml"] {
        let shipped = std::fs::read_to_string(format!("{deploy}/{file}")).unwrap();
        for name in shipped
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("stratumd_xdp_") && !w.ends_with('_'))
        {
            let exported = text.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])));
            assert!(exported, "{file} uses {name}, which the xdp backend does not export");
        }
    }

    let (exit, log, took) = server.stop();
    assert!(exit.success(), "{log}");
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
    assert!(!pair.xdp_attached(), "SIGTERM detaches the program");
}

#[test]
fn socket_and_xdp_backends_give_the_same_reply_bytes() {
    if !available() {
        return;
    }
    let pair = Pair::new("xb", 1);
    let (_xdp, _control) = start_xdp(&pair, "\"all\"", "");
    // The socket backend beside it on another port (the program steers only 123; the rest passes).
    let socket_config = format!(
        "[server]\nlisten = [\"{}:11123\"]\nworkers = 1\n\n[clock]\nsource = \"local\"\nstratum = 2\n",
        pair.server_v4()
    );
    let _socket = Server::start_with(pair.srv.command(BIN), &socket_config, 11123, None);
    std::thread::sleep(Duration::from_millis(500));

    let out = pair.python(SAME_REQUEST, &[&pair.server_v4()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let (xdp, socket) = (hex(lines.next().unwrap()), hex(lines.next().unwrap()));
    assert_eq!(xdp.len(), 48);
    assert_eq!(socket.len(), 48);
    // Everything but the reference, receive and transmit timestamps is the same.
    let masked = |r: &[u8]| [&r[..16], &r[24..32]].concat();
    assert_eq!(masked(&xdp), masked(&socket), "xdp {xdp:02x?}\nsocket {socket:02x?}");
}

#[test]
fn one_worker_per_queue_on_a_multi_queue_veth() {
    if !available() {
        return;
    }
    let pair = Pair::new("xq", 2);
    let (_server, control) = start_xdp(&pair, "\"all\"", "");
    let workers = ctl_json(&control, &["workers"]).unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 2, "{workers}");
    // Many sockets (source ports) spread over the client's two TX queues, hence both RX queues.
    let out = pair.python(MANY_SOCKETS, &[&pair.server_v4(), "64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "64", "every socket got its reply");
    let workers = ctl_json(&control, &["workers"]).unwrap();
    for w in workers["workers"].as_array().unwrap() {
        assert!(w["answered"].as_u64().unwrap() > 0, "every queue's worker answered: {workers}");
    }
}

#[test]
fn kill_9_leaves_nothing_attached_and_a_restart_serves_at_once() {
    if !available() {
        return;
    }
    let pair = Pair::new("xk", 1);
    let (server, _control) = start_xdp(&pair, "\"all\"", "");
    assert!(pair.xdp_attached());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.pid(), libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pair.xdp_attached() {
        assert!(Instant::now() < deadline, "the XDP program outlived kill -9");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let (_again, _control) = start_xdp(&pair, "\"all\"", "");
    chronyd_in(&pair, &pair.server_v4()).expect("the restarted server answers");
}

/// BAD_INPUTS 17-22 as raw frames from the client namespace, each checked against the counters.
#[test]
fn bad_inputs_on_the_xdp_path() {
    if !available() {
        return;
    }
    let pair = Pair::new("xi", 1);
    let (_server, control) = start_xdp(&pair, "\"all\"", "");
    let (smac, dmac) = (pair.client_mac(), pair.server_mac());
    let server: Ipv4Addr = pair.server_v4().parse().unwrap();
    let client = pair.client_v4();
    let ntp = request_payload();
    let frame = |src: Ipv4Addr, dst: Ipv4Addr, dst_mac: [u8; 6], sport: u16, options: &[u8], frag: u16| {
        eth_ipv4_udp(smac, dst_mac, src, dst, sport, 123, options, frag, &ntp)
    };
    let send = |frames: &[Vec<u8>]| {
        let hexes: Vec<String> = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
        let mut args = vec!["xc"];
        args.extend(hexes.iter().map(String::as_str));
        let out = pair.python(RAW_SEND, &args);
        assert!(out.status.success(), "raw send: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
        ctl_json(&control, &["status"]).unwrap()
    };
    let before = ctl_json(&control, &["status"]).unwrap();
    let answered = |s: &Value| s["requests"]["answered"].as_u64().unwrap();
    let passed = |s: &Value| s["xdp"]["program"]["passed"].as_u64().unwrap();

    // 17: IPv4 options (IHL > 5) are parsed and answered.
    let s = send(&[frame(client, server, dmac, 40001, &[1, 1, 1, 0], 0)]);
    assert_eq!(answered(&s), answered(&before) + 1, "IHL 6 request answered: {s}");
    // 17: a fragment goes to the kernel, not to a worker.
    let s2 = send(&[frame(client, server, dmac, 40002, &[], 0x2000)]);
    assert_eq!(answered(&s2), answered(&s), "fragment not answered");
    assert!(passed(&s2) > passed(&s), "fragment passed to the kernel: {s2}");
    // 19: source port 0.
    let s3 = send(&[frame(client, server, dmac, 0, &[], 0)]);
    assert_eq!(dropped(&s3, "source_port"), dropped(&s2, "source_port") + 1, "{s3}");
    // 20: martian sources. One of the host's own addresses (127.0.0.1 is on lo) is not a
    // request to us at all: the program hands it to the kernel, which drops it as a martian, as
    // it does on the socket backend; 0/8 reaches a worker, which drops it as martian.
    let not_ours = |s: &Value| s["xdp"]["program"]["not_ours"].as_u64().unwrap();
    let s4 = send(&[
        frame(Ipv4Addr::new(127, 0, 0, 1), server, dmac, 40003, &[], 0),
        frame(Ipv4Addr::new(0, 1, 2, 3), server, dmac, 40003, &[], 0),
    ]);
    assert_eq!(dropped(&s4, "martian"), dropped(&s3, "martian") + 1, "{s4}");
    assert_eq!(not_ours(&s4), not_ours(&s3) + 1, "{s4}");
    // 21: broadcast and multicast destinations get no reply: not our MAC, the kernel's.
    let broadcast_mac = [0xff; 6];
    let s5 = send(&[
        frame(client, Ipv4Addr::new(10, 89, pair.net, 255), broadcast_mac, 40004, &[], 0),
        frame(client, Ipv4Addr::BROADCAST, broadcast_mac, 40004, &[], 0),
        frame(client, Ipv4Addr::new(224, 0, 1, 1), [0x01, 0x00, 0x5e, 0, 1, 1], 40004, &[], 0),
    ]);
    assert_eq!(answered(&s5), answered(&s4));
    assert_eq!(not_ours(&s5), not_ours(&s4) + 3, "{s5}");
    // 18: a request with a wrong UDP checksum is answered with correct checksums: the client
    // kernel verifies them before chronyd ever sees a reply (checked in the first test); here
    // the request's checksum is garbage and the reply still counts as answered.
    let mut bad_sum = frame(client, server, dmac, 40005, &[], 0);
    let at = 14 + 20 + 6;
    bad_sum[at] ^= 0x5a;
    let s6 = send(&[bad_sum]);
    assert_eq!(answered(&s6), answered(&s5) + 1, "{s6}");
    assert_eq!(s6["requests"]["send_failed"], 0);
}

/// Only requests addressed to this host are answered (issue #13): to another IP on the link, to
/// another MAC, or from one of our own addresses, a request gets no reply on either backend (the
/// program hands it to the kernel, which does what it does without us: drop it); to an address
/// on lo (anycast), added while stratumd runs, it is answered from that address.
#[test]
fn only_requests_addressed_to_this_host_are_answered_on_both_backends() {
    if !available() {
        return;
    }
    let pair = Pair::new("xo", 1);
    let (smac, dmac) = (pair.client_mac(), pair.server_mac());
    let server: Ipv4Addr = pair.server_v4().parse().unwrap();
    let client = pair.client_v4();
    let other_ip = Ipv4Addr::new(10, 89, pair.net, 9);
    let mut other_mac = dmac;
    other_mac[5] ^= 0x40;
    let ntp = request_payload();
    let frames = [
        eth_ipv4_udp(smac, dmac, client, other_ip, 40010, 123, &[], 0, &ntp),
        eth_ipv4_udp(smac, other_mac, client, server, 40011, 123, &[], 0, &ntp),
        eth_ipv4_udp(smac, dmac, server, server, 40012, 123, &[], 0, &ntp),
    ];
    let send = |frames: &[Vec<u8>]| {
        let hexes: Vec<String> = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
        let mut args = vec!["xc"];
        args.extend(hexes.iter().map(String::as_str));
        let out = pair.python(RAW_SEND, &args);
        assert!(out.status.success(), "raw send: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
    };
    let anycast = format!("192.0.2.{}", pair.net);
    run_ok(Command::new("ip").args([
        "-n",
        &pair.cli.name,
        "route",
        "add",
        &format!("{anycast}/32"),
        "via",
        &pair.server_v4(),
    ]));

    for backend in ["xdp", "socket"] {
        let (mut server_process, control) =
            if backend == "xdp" { start_xdp(&pair, "\"all\"", "") } else { start_socket(&pair) };
        let before = ctl_json(&control, &["status"]).unwrap();
        send(&frames);
        let after = ctl_json(&control, &["status"]).unwrap();
        assert_eq!(
            after["requests"]["received"], before["requests"]["received"],
            "{backend}: no worker saw them: {after}"
        );
        assert_eq!(after["requests"]["answered"], before["requests"]["answered"], "{backend}: {after}");
        if backend == "xdp" {
            let not_ours = |s: &Value| s["xdp"]["program"]["not_ours"].as_u64().unwrap();
            assert_eq!(not_ours(&after), not_ours(&before) + 3, "{after}");
        }
        // An anycast address on lo, added now: the program learns it from netlink.
        run_ok(Command::new("ip").args(["-n", &pair.srv.name, "addr", "add", &format!("{anycast}/32"), "dev", "lo"]));
        let deadline = Instant::now() + Duration::from_secs(5);
        let from = loop {
            let out = pair.python(QUERY_FROM, &[&anycast]);
            let from = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() || Instant::now() > deadline {
                break from;
            }
        };
        assert_eq!(from, anycast, "{backend}: the anycast request is answered from the anycast address");
        run_ok(Command::new("ip").args(["-n", &pair.srv.name, "addr", "del", &format!("{anycast}/32"), "dev", "lo"]));
        server_process.stop();
    }
}

/// Least privilege on the xdp backend (#13): started as root with `[server] user`, every thread
/// runs as that user with no capabilities once the program is attached and the sockets bound,
/// and it still answers, reads the program's counters and follows the host's addresses.
#[test]
fn the_xdp_backend_serves_as_the_configured_user_with_no_capabilities() {
    if !available() {
        return;
    }
    let pair = Pair::new("xu", 1);
    let dir = tempfile::tempdir().unwrap().keep();
    let control = dir.join("control.sock");
    let config = xdp_config("\"all\"", &control, "").replace("[clock]", "user = \"nobody\"\n\n[clock]");
    let server = Server::start_with(pair.srv.command(BIN), &config, 123, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl_json(&control, &["status"]).is_none() {
        assert!(Instant::now() < deadline, "stratumd (xdp, user nobody) did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(chronyd_in(&pair, &pair.server_v4()).is_ok(), "answers after the drop");
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field =
            |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().trim().to_string();
        assert!(field("Uid:").split_whitespace().all(|u| u == "65534"), "{status}");
        assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    }
    let s = ctl_json(&control, &["status"]).unwrap();
    assert!(s["xdp"]["program"]["redirected"].as_u64().unwrap() > 0, "the program's maps are read: {s}");
    // The address table is still kept up to date: an address added now is served.
    let anycast = format!("192.0.2.{}", pair.net);
    run_ok(Command::new("ip").args([
        "-n",
        &pair.cli.name,
        "route",
        "add",
        &format!("{anycast}/32"),
        "via",
        &pair.server_v4(),
    ]));
    run_ok(Command::new("ip").args(["-n", &pair.srv.name, "addr", "add", &format!("{anycast}/32"), "dev", "lo"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = pair.python(QUERY_FROM, &[&anycast]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "an address added after the drop is not served");
    }
    drop(server);
}

/// Starts the socket backend on every address inside the server namespace, with a control socket.
fn start_socket(pair: &Pair) -> (Server, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let control = dir.join("control.sock");
    let config = format!(
        "[server]\nlisten = [\"0.0.0.0:123\"]\nworkers = 1\n\n[clock]\nsource = \"local\"\nstratum = 2\n\n\
         [control]\nsocket = \"{}\"\n",
        control.display()
    );
    let server = Server::start_with(pair.srv.command(BIN), &config, 123, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl_json(&control, &["status"]).is_none() {
        assert!(Instant::now() < deadline, "stratumd (socket) did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, control)
}

/// BAD_INPUTS 47: SIGTERM while a flood is being answered stops within a second, detaches the
/// program, and every frame a worker took is counted.
#[test]
fn sigterm_under_load_stops_within_a_second_and_detaches() {
    if !available() {
        return;
    }
    let pair = Pair::new("xt", 1);
    let (mut server, control) = start_xdp(&pair, "\"all\"", "");
    let flood = pair.cli.command("python3").args(["-c", FLOOD, &pair.server_v4(), "4"]).spawn().unwrap();
    let _flood = KillOnDrop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = ctl_json(&control, &["status"]).unwrap();
        if s["requests"]["answered"].as_u64().unwrap() > 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the flood is not being answered: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (exit, log, took) = server.stop();
    assert!(exit.success(), "{log}");
    assert!(took < Duration::from_secs(1), "stopped in {took:?} under load");
    assert!(!pair.xdp_attached(), "SIGTERM detaches the program under load");
    let summary = log.lines().find(|l| l.contains("stopped: ")).expect("a stop summary");
    let field = |name: &str| -> u64 {
        summary.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap().parse().unwrap()
    };
    assert_eq!(field("received"), field("answered"), "every frame taken was answered: {summary}");
}

/// The systemd drop-in's capabilities are exactly enough: stratumd as `nobody` with only them
/// serves over AF_XDP, and without any one of them it refuses to start with one line.
#[test]
fn the_drop_in_capabilities_are_exactly_what_the_xdp_backend_needs() {
    if !available() || !require(have_tool("setpriv"), "setpriv is missing (util-linux)") {
        return;
    }
    let drop_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/stratumd-xdp.conf")).unwrap();
    let caps: Vec<String> = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("an AmbientCapabilities line")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let pair = Pair::new("xp", 1);
    // A copy of the binary and config that `nobody` can read.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("stratumd");
    std::fs::copy(BIN, &bin).unwrap();
    let config = dir.path().join("stratumd.toml");
    std::fs::write(
        &config,
        "[server]\nbackend = \"xdp\"\ninterface = \"xs\"\n[clock]\nsource = \"local\"\nstratum = 2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(dir.path(), 0o755), (bin.as_path(), 0o755), (config.as_path(), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let as_nobody = |caps: &[String]| {
        let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
        let mut cmd = pair.srv.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps=-all{set}"))
            .arg(format!("--ambient-caps=-all{set}"))
            .arg(format!("--bounding-set=-all{set}"))
            .arg(&bin)
            .arg("--config")
            .arg(&config)
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let server = KillOnDrop(as_nobody(&caps).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while chronyd_in(&pair, &pair.server_v4()).is_err() {
        assert!(Instant::now() < deadline, "stratumd as nobody with {caps:?} does not serve");
    }
    drop(server);
    for missing in 0..caps.len() {
        let fewer: Vec<String> =
            caps.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, c)| c.clone()).collect();
        let out = as_nobody(&fewer).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "served without {}: {log}", caps[missing]);
        assert!(log.lines().any(|l| l.contains("ERROR")), "without {}: no error line in {log}", caps[missing]);
        // ... and that line names the capability that is missing, whichever it is.
        let wanted = format!("CAP_{}", caps[missing].to_uppercase());
        assert!(log.lines().any(|l| l.contains("ERROR") && l.contains(&wanted)), "{wanted} not named: {log}");
    }
}

/// A denied source is dropped by the XDP program itself (deny-action = "drop" pushes the list
/// into the program's deny map); the rest are still answered.
#[test]
fn deny_list_is_enforced_in_the_xdp_program() {
    if !available() {
        return;
    }
    let pair = Pair::new("xd", 1);
    let access = format!("\n[access]\ndeny = [\"{}/32\"]\n", pair.client_v4());
    let (_server, control) = start_xdp(&pair, "\"all\"", &access);
    assert!(chronyd_in(&pair, &pair.server_v4()).is_err(), "a denied client gets nothing");
    let s = ctl_json(&control, &["status"]).unwrap();
    let denied = s["xdp"]["program"]["denied"].as_u64().unwrap();
    assert!(denied > 0, "{s}");
    assert_eq!(s["requests"]["answered"], 0, "{s}");
    // Dropped by the program before any worker saw them, and still in the totals, once.
    assert_eq!(dropped(&s, "denied"), denied, "{s}");
    assert_eq!(s["requests"]["received"], denied, "{s}");
    // The same client over IPv6 is not denied.
    let out = pair.in_cli("ntpdig", &["-j", "-t", "2", &pair.server_v6()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn request_payload() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23; // LI 0, version 4, mode 3
    p[40..48].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    p
}

#[allow(clippy::too_many_arguments)]
fn eth_ipv4_udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let header_len = 20 + options.len();
    let total = (header_len + 8 + payload.len()) as u16;
    let mut ip = vec![0u8; header_len];
    ip[0] = 0x40 | (header_len / 4) as u8;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    ip[20..].copy_from_slice(options);
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, 17], &((8 + payload.len()) as u16).to_be_bytes()].concat();
    let c = checksum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ICMP echo over a raw socket (no ping binary needed).
const PING: &str = r#"
import socket, sys, struct
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
body = struct.pack("!BBHHH", 8, 0, 0, 0x5354, 1) + b"stratumd"
s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (sys.argv[1], 0))
while True:
    data, _ = s.recvfrom(1500)
    icmp = data[(data[0] & 15) * 4:]
    if icmp[0] == 0 and icmp[4:6] == b"\x53\x54":
        break
"#;

const TCP_ECHO: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
"#;

const TCP_CLIENT: &str = r#"
import socket, sys, time
for _ in range(50):
    try:
        c = socket.create_connection((sys.argv[1], 7777), timeout=2); break
    except OSError:
        time.sleep(0.1)
c.sendall(b"hello over tcp"); print(c.recv(100).decode())
"#;

/// The same 48-byte request to the xdp backend (port 123) and the socket backend (port 11123).
const SAME_REQUEST: &str = r#"
import socket, sys
req = bytes([0x23, 0, 6, 0xec] + [0] * 36) + bytes.fromhex("0123456789abcdef")
for port in (123, 11123):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    for _ in range(10):
        s.sendto(req, (sys.argv[1], port))
        try:
            data, _ = s.recvfrom(1500); break
        except socket.timeout:
            pass
    print(data.hex())
"#;

/// N sockets (N source ports) each ask once; prints how many got a valid reply.
const MANY_SOCKETS: &str = r#"
import socket, sys, time
n = int(sys.argv[2]); got = 0
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
for i, s in enumerate(socks):
    s.settimeout(2)
    s.sendto(bytes([0x23] + [0] * 39) + i.to_bytes(8, "big"), (sys.argv[1], 123))
for i, s in enumerate(socks):
    try:
        data, _ = s.recvfrom(1500)
        got += data[24:32] == i.to_bytes(8, "big") and (data[0] & 7) == 4
    except socket.timeout:
        pass
print(got)
"#;

/// Sends raw Ethernet frames (hex arguments) on an interface.
const RAW_SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
"#;

/// One NTP request to ARGV[1]:123; prints the address the reply came from (exit 1 on no reply).
const QUERY_FROM: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(bytes([0x23] + [0] * 39) + bytes.fromhex("0123456789abcdef"), (sys.argv[1], 123))
try:
    data, addr = s.recvfrom(512)
except socket.timeout:
    sys.exit(1)
print(addr[0])
"#;

const HTTP_GET: &str = r#"
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"#;

/// Sends NTP requests as fast as Python can for N seconds.
const FLOOD: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
req = bytes([0x23] + [0] * 39) + bytes.fromhex("0123456789abcdef")
end = time.time() + float(sys.argv[2])
while time.time() < end:
    for _ in range(256):
        try:
            s.sendto(req, (sys.argv[1], 123))
        except BlockingIOError:
            pass
"#;
