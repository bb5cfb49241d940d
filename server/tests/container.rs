//! The container image (#17, item 1): the top-level Dockerfile, built with podman from a Debian
//! base the test makes itself (base images cannot be pulled here), then run the way a container
//! runtime would: its root file system from `podman mount`, chrooted into inside a network
//! namespace, as the image's USER, with its ENTRYPOINT, CMD and ENV (`podman run` is refused by
//! this sandbox). A real chronyd client queries it, and the image's HEALTHCHECK command, run in
//! that root file system, passes while stratumd is synchronised and fails while it is not. Each
//! `docker run` line of README's "Docker" runs too: the unprivileged one with compose's config
//! (no capability, no_new_privs), and the root ones (host network on port 123; the xdp backend on
//! a veth) with exactly the capabilities they name, dropping to the image's user.
//! Needs root, podman, mmdebstrap (and Debian's mirror for the base and the image's libelf1);
//! skips outside CI without them, fails in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The Dockerfile's runtime base; the test tags its own bookworm minbase as this.
const BASE: &str = "docker.io/library/debian:bookworm-slim";

fn available() -> bool {
    require(is_root() && have_tool("ip"), "the container test needs root and ip (podman, chroot, namespaces)")
        && require(
            have_tool("podman") && have_tool("mmdebstrap"),
            "podman or mmdebstrap is not installed (apt-get install podman mmdebstrap)",
        )
        && require(have_tool("chronyd"), "chronyd is not installed (apt-get install chrony)")
}

fn podman(args: &[&str]) -> String {
    let out = run_ok(Command::new("podman").args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The bookworm base, made once with mmdebstrap and kept under target/ between runs.
fn base_image() {
    if Command::new("podman").args(["image", "exists", BASE]).status().is_ok_and(|s| s.success()) {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("base-bookworm.tar");
    if !tar.exists() {
        let partial = dir.join("base-bookworm.tar.partial");
        run_ok(
            Command::new("mmdebstrap").args(["--quiet", "--variant=minbase", "--format=tar", "bookworm"]).arg(&partial),
        );
        std::fs::rename(&partial, &tar).unwrap();
    }
    run_ok(Command::new("podman").arg("import").arg(&tar).arg(BASE));
}

/// The image's run-time settings (`podman image inspect`).
struct ImageConfig {
    user: String,
    env: Vec<String>,
    argv: Vec<String>,
    healthcheck: Vec<String>,
}

fn inspect(image: &str) -> ImageConfig {
    let v: serde_json::Value = serde_json::from_str(&podman(&["image", "inspect", image])).unwrap();
    let config = &v[0]["Config"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
    };
    let mut argv = strings(&config["Entrypoint"]);
    argv.extend(strings(&config["Cmd"]));
    // ["CMD", argv...] or ["CMD-SHELL", "a shell line"], as Docker keeps it.
    let test = strings(&v[0]["Healthcheck"]["Test"]);
    let healthcheck = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1].clone()],
        _ => panic!("the image has no HEALTHCHECK command: {test:?}"),
    };
    ImageConfig {
        user: config["User"].as_str().unwrap_or_default().to_string(),
        env: strings(&config["Env"]),
        argv,
        healthcheck,
    }
}

/// The built image's container: its root file system mounted, removed on drop.
struct Container {
    id: String,
    root: PathBuf,
    config: ImageConfig,
    ns: Netns,
}

impl Container {
    fn new(image: &str, tag: &str) -> Self {
        let config = inspect(image);
        let id = podman(&["create", "--no-healthcheck", image]);
        let root = PathBuf::from(podman(&["mount", &id]));
        Self { id, root, config, ns: Netns::new(tag) }
    }

    /// `argv` inside the root file system and the namespace, as `user` (as chroot's --userspec)
    /// with the image's environment only, and /proc and /dev as a runtime provides them; with
    /// `caps`, only those capabilities (as `--cap-drop ALL --cap-add ...` leaves a root process:
    /// its bounding set, through the image's own setpriv).
    fn command(&self, user: &str, run_as: Option<&RunAs>, argv: &[String]) -> Command {
        let mut c = self.ns.command("sh");
        c.arg("-c")
            .arg(
                r#"root=$1 user=$2 memlock=$3; shift 3; [ "$memlock" = unlimited ] && ulimit -l unlimited; mount -t proc proc "$root/proc" && mount -t sysfs -o ro sysfs "$root/sys" && mount --rbind /dev "$root/dev" && exec chroot --userspec="$user" "$root" env -i "$@""#,
            )
            .arg("sh")
            .arg(&self.root)
            .arg(user)
            .arg(if run_as.is_some_and(|r| r.memlock_unlimited) { "unlimited" } else { "default" });
        c.args(&self.config.env);
        if let Some(run_as) = run_as {
            // A root process keeps its bounding set; a user has no capability to bound.
            let mut setpriv = vec!["setpriv".to_string()];
            if user.starts_with("0:") {
                let keep: Vec<String> = run_as.caps.iter().map(|c| format!(",+{}", c.to_lowercase())).collect();
                setpriv.extend([format!("--bounding-set=-all{}", keep.concat()), "--inh-caps=-all".into()]);
            }
            if run_as.no_new_privs {
                setpriv.push("--no-new-privs".into());
            }
            c.args(setpriv).arg("--");
        }
        c.args(argv);
        c
    }

    /// stratumd, started as the image starts it (ENTRYPOINT + CMD) plus `extra` arguments.
    fn start(&self, user: &str, caps: Option<&RunAs>, extra: &[&str]) -> Running {
        let mut argv = self.config.argv.clone();
        argv.extend(extra.iter().map(|s| s.to_string()));
        let child = self.command(user, caps, &argv).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        Running(Some(child))
    }

    /// The image's HEALTHCHECK command: (passed, what it printed).
    fn healthcheck(&self, user: &str, caps: Option<&RunAs>) -> (bool, String) {
        let out = self.command(user, caps, &self.config.healthcheck).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    }

    fn control_socket(&self) -> PathBuf {
        self.root.join("run/stratumd/control.sock")
    }

    /// Waits for the control socket (stratumd has bound everything by then).
    fn wait_up(&self, server: &mut Running) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.control_socket().exists() {
            if let Some(status) = server.0.as_mut().unwrap().try_wait().unwrap() {
                let mut log = String::new();
                std::io::Read::read_to_string(server.0.as_mut().unwrap().stderr.as_mut().unwrap(), &mut log).unwrap();
                panic!("stratumd in the image exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                let mut child = server.0.take().unwrap();
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "stratumd in the image made no control socket within 20 s: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `chronyd -Q` in the namespace against 127.0.0.1:`port`.
    fn chronyd(&self, port: u16) -> Result<f64, String> {
        let out = self
            .ns
            .command("chronyd")
            .args(["-Q", "-t", "5", &format!("server 127.0.0.1 port {port} iburst maxsamples 1")])
            .output()
            .unwrap();
        chronyd_offset(&String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["umount", &self.id]).output();
        let _ = Command::new("podman").args(["rm", "--force", &self.id]).output();
    }
}

/// The built image, removed on drop; the base and the `runtime` stage (its apt layer) stay
/// cached for the next run.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", &self.0]).output();
    }
}

/// What README's `docker run` line grants: its `--cap-add` names (after `--cap-drop ALL`),
/// whether it lifts the locked-memory limit (`--ulimit memlock=-1`), whether it sets
/// `--security-opt no-new-privileges`.
struct RunAs {
    caps: Vec<String>,
    memlock_unlimited: bool,
    no_new_privs: bool,
}

/// README's `docker run` line after the comment `heading`.
fn readme_caps(heading: &str) -> RunAs {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let docker = readme.split("### Docker").nth(1).expect("README has a Docker section");
    let block: Vec<&str> = docker
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.starts_with('#') && !l.starts_with("```"))
        .collect();
    let words: Vec<&str> = block.iter().flat_map(|l| l.split_whitespace()).collect();
    let caps: Vec<String> = words.windows(2).filter(|w| w[0] == "--cap-add").map(|w| w[1].to_string()).collect();
    assert!(words.windows(2).any(|w| w == ["--cap-drop", "ALL"]), "README's `{heading}` line: {block:?}");
    RunAs {
        caps,
        memlock_unlimited: words.windows(2).any(|w| w == ["--ulimit", "memlock=-1"]),
        no_new_privs: words.windows(2).any(|w| w == ["--security-opt", "no-new-privileges"]),
    }
}

/// One NTP exchange with `to` from inside `ns` (a thread that joins it).
fn query_in(ns: &Netns, to: &str) -> Option<stratum_proto::NtpPacket> {
    let (path, to): (String, std::net::SocketAddr) = (format!("/run/netns/{}", ns.name), to.parse().unwrap());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(path).ok()?;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.send_to(&stratum_proto::NtpPacket::client_request(4, now_ntp()).to_bytes(), to).ok()?;
        let mut buf = [0u8; 2048];
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        stratum_proto::NtpPacket::parse(&buf[..len])
    })
    .join()
    .ok()?
}

/// The uid stratumd runs as (its /proc status line `Uid:`, real id).
fn uid_of(server: &Running) -> u32 {
    let pid = server.0.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The image's user's uid, from its own /etc/passwd.
fn image_uid(root: &Path, user: &str) -> u32 {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line =
        passwd.lines().find(|l| l.starts_with(&format!("{user}:"))).unwrap_or_else(|| panic!("no {user} in the image"));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

#[test]
fn the_image_serves_chronyd_as_its_user_and_its_healthcheck_follows_sync() {
    if !available() {
        return;
    }
    let started = Instant::now();
    base_image();
    // The prebuilt target: a context holding only the two binaries this test run built.
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(BIN, context.path().join("stratumd")).unwrap();
    std::fs::copy(CTL, context.path().join("stratumctl")).unwrap();
    let image = format!("localhost/stratumd-test:{}", std::process::id());
    let build = Command::new("podman")
        .args(["build", "--isolation=chroot", "--format=docker", "--target", "prebuilt", "-t", &image, "-f"])
        .arg(Path::new(REPO).join("Dockerfile"))
        .arg(context.path())
        .output()
        .unwrap();
    let _image = Image(image.clone());
    assert!(build.status.success(), "podman build failed: {}", String::from_utf8_lossy(&build.stderr));
    let c = Container::new(&image, "ctr");
    let user = c.config.user.clone();
    let uid = image_uid(&c.root, &user);
    assert!(!user.is_empty() && user != "root" && uid != 0, "the image's USER is `{user}` (uid {uid})");

    // 1. As the image starts it: the embedded default, as its user; a real client is answered.
    let mut server = c.start(&user, None, &[]);
    c.wait_up(&mut server);
    assert_eq!(uid_of(&server), uid, "stratumd runs as the image's user");
    let offset = c.chronyd(11123).unwrap_or_else(|log| panic!("chronyd refused the image's stratumd: {log}"));
    assert!(offset.abs() < 0.01, "offset {offset}");
    let (ok, said) = c.healthcheck(&user, None);
    assert!(ok && said.starts_with("healthy: synchronised"), "HEALTHCHECK while synchronised: {said}");
    server.stop();
    std::fs::remove_file(c.control_socket()).ok();

    // 2. A mounted configuration whose clock is unsynchronised (an upstream that never answers):
    //    the HEALTHCHECK fails and says why.
    let etc = c.root.join("etc/stratumd");
    std::fs::write(
        etc.join("stratumd.toml"),
        "[server]\nlisten = [\"127.0.0.1:11123\"]\nworkers = 1\n\n[clock]\nsource = \"sync\"\n\n\
         [[upstream]]\naddress = \"127.0.0.1:10999\"\niburst = true\n\n\
         [control]\n",
    )
    .unwrap();
    let mut server = c.start(&user, None, &["--config", "/etc/stratumd/stratumd.toml"]);
    c.wait_up(&mut server);
    let (ok, said) = c.healthcheck(&user, None);
    assert!(!ok && said.starts_with("unhealthy: unsynchronised"), "HEALTHCHECK while unsynchronised: {said}");
    assert!(c.chronyd(11123).is_err(), "chronyd accepted an unsynchronised server");
    server.stop();
    std::fs::remove_file(c.control_socket()).ok();

    // 3. README's run line for port 123 on the host's network: started as root (`--user 0`) with
    //    only the capabilities that line adds and `[server] user` naming the image's user: it
    //    binds, then serves as that user; the HEALTHCHECK, run as the container's user (root)
    //    with the same capabilities, passes.
    let caps = readme_caps("# socket backend on the host's network");
    std::fs::write(
        etc.join("stratumd.toml"),
        format!("[server]\nlisten = [\"127.0.0.1:123\"]\nworkers = 1\nuser = \"{user}\"\n\n[clock]\nsource = \"local\"\nstratum = 4\n\n[control]\n"),
    )
    .unwrap();
    let mut server = c.start("0:0", Some(&caps), &["--config", "/etc/stratumd/stratumd.toml"]);
    c.wait_up(&mut server);
    let offset = chronyd_client(&c.ns, "127.0.0.1", 5).unwrap_or_else(|log| panic!("chronyd on port 123: {log}"));
    assert!(offset.abs() < 0.01, "offset {offset}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while uid_of(&server) != uid {
        assert!(Instant::now() < deadline, "stratumd still runs as uid {} after binding port 123", uid_of(&server));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, said) = c.healthcheck("0:0", Some(&caps));
    assert!(ok, "HEALTHCHECK as root with {:?}: {said}", caps.caps);
    server.stop();
    std::fs::remove_file(c.control_socket()).ok();

    // 4. README's xdp line: the AF_XDP backend on a veth in the namespace (the image's libelf and
    //    the drop-in's capabilities, nothing more), as root then the image's user; a chronyd
    //    client on the other end of the veth is answered by the XDP program's workers.
    let xdp = readme_caps("# xdp backend");
    let client = Netns::new("ctrc");
    let (xs, xc) = (format!("ctxs{}", std::process::id() % 10000), format!("ctxc{}", std::process::id() % 10000));
    run_ok(Command::new("ip").args(["link", "add", &xs, "type", "veth", "peer", "name", &xc]));
    run_ok(Command::new("ip").args(["link", "set", &xs, "netns", &c.ns.name, "name", "xs"]));
    run_ok(Command::new("ip").args(["link", "set", &xc, "netns", &client.name, "name", "xc"]));
    for (ns, dev, host) in [(&c.ns, "xs", 1), (&client, "xc", 2)] {
        run_ok(Command::new("ip").args(["-n", &ns.name, "addr", "add", &format!("10.88.123.{host}/24"), "dev", dev]));
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
    }
    std::fs::write(
        etc.join("stratumd.toml"),
        format!("[server]\nbackend = \"xdp\"\ninterface = \"xs\"\nuser = \"{user}\"\n\n[clock]\nsource = \"local\"\nstratum = 5\n\n[control]\n"),
    )
    .unwrap();
    let mut server = c.start("0:0", Some(&xdp), &["--config", "/etc/stratumd/stratumd.toml"]);
    c.wait_up(&mut server);
    let deadline = Instant::now() + Duration::from_secs(10);
    let offset = loop {
        match chronyd_client(&client, "10.88.123.1", 3) {
            Ok(offset) => break offset,
            Err(log) => assert!(Instant::now() < deadline, "chronyd over the veth to the image's xdp backend: {log}"),
        }
    };
    assert!(offset.abs() < 0.01, "offset {offset}");
    assert_eq!(uid_of(&server), uid, "the xdp backend serves as `{user}`");
    // The image's own stratumctl (the mounted path is too long for a Unix socket address).
    let argv = ["/usr/local/bin/stratumctl", "status", "--json"].map(String::from);
    let out = c.command("0:0", Some(&xdp), &argv).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("stratumctl status: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(status["backend"], "xdp", "{status}");
    let (ok, said) = c.healthcheck("0:0", Some(&xdp));
    assert!(ok, "HEALTHCHECK as root with {:?}: {said}", xdp.caps);
    server.stop();
    std::fs::remove_file(c.control_socket()).ok();

    // 5. README's first line, as deploy/compose.yml runs the image: its user, no capability,
    //    no_new_privs, with deploy/compose/stratumd.toml (0.0.0.0:11123, /metrics on 9123).
    let plain = readme_caps("# socket backend, its own network namespace");
    assert!(plain.caps.is_empty() && plain.no_new_privs);
    let compose = std::fs::read_to_string(Path::new(REPO).join("deploy/compose.yml")).unwrap();
    assert!(compose.contains("cap_drop: [ALL]") && compose.contains("no-new-privileges:true"), "compose.yml changed");
    std::fs::copy(Path::new(REPO).join("deploy/compose/stratumd.toml"), etc.join("stratumd.toml")).unwrap();
    let mut server = c.start(&user, Some(&plain), &["--config", "/etc/stratumd/stratumd.toml"]);
    c.wait_up(&mut server);
    let reply = query_in(&c.ns, "127.0.0.1:11123").expect("the compose config serves on 11123");
    assert_eq!(uid_of(&server), uid);
    // `source = "external"`: healthy or not as this host's kernel says, but the HEALTHCHECK
    // answers either way and agrees with the reply's leap indicator.
    let (ok, said) = c.healthcheck(&user, Some(&plain));
    let synchronised = reply.leap != stratum_proto::packet::LeapIndicator::Unsynchronized;
    assert!(said.starts_with(if ok { "healthy" } else { "unhealthy" }), "{said}");
    assert!(ok || !synchronised || said.contains("root distance"), "{said} with a synchronised reply");
    server.stop();

    drop(c);
    eprintln!("container test took {:?}", started.elapsed());
}
