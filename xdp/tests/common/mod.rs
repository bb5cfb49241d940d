//! What the xdp crate's integration tests share: the root and tool prerequisites (skip with one
//! line outside CI, fail when CI is set), `ip`, a veth pair removed on drop (made only where the
//! prerequisites hold: [`veth_for`]), interface facts and CLOCK_TAI.
#![allow(dead_code, unreachable_pub)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Whether a prerequisite holds; outside CI a missing one skips the test with one line, in CI it
/// fails the test.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but {what}; the test command runs everything as root");
    eprintln!("skipped: {what}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(test: &str) -> bool {
    require(is_root(), &format!("{test} needs root (BPF, XDP and AF_XDP)"))
}

pub fn have_ip() -> bool {
    Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Root and the ip command: what a test on a veth pair needs.
pub fn veth_ready(test: &str) -> bool {
    require_root(test) && require(have_ip(), &format!("{test} needs the ip command (iproute2)"))
}

/// A veth pair tagged `tag` for `test`, where the test's prerequisites (root, ip) hold; None
/// where they do not (outside CI: the test has said why and returns).
pub fn veth_for(test: &str, tag: &str) -> Option<Veth> {
    veth_ready(test).then(|| Veth::new(tag))
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A veth pair in the root namespace, both ends up, named `s<tag><pid>a` and `...b` (unique to the
/// test and the process), removed when dropped (a panicking test included).
pub struct Veth {
    pub a: String,
    pub b: String,
}

impl Veth {
    pub fn new(tag: &str) -> Self {
        let n = std::process::id() % 10000;
        let a = format!("s{tag}{n}a");
        let b = format!("s{tag}{n}b");
        assert!(a.len() <= 15, "{a}: interface names have at most 15 bytes");
        let _ = Command::new("ip").args(["link", "del", &a]).output();
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        let veth = Self { a, b };
        ip(&["link", "set", &veth.a, "up"]);
        ip(&["link", "set", &veth.b, "up"]);
        veth
    }

    /// Gives end b the address 10.77.N.2/24 (N from the process id), for the kernel's stack to
    /// answer on, and returns it.
    pub fn address_b(&self) -> Ipv4Addr {
        let addr = Ipv4Addr::new(10, 77, (std::process::id() % 200 + 20) as u8, 2);
        ip(&["addr", "add", &format!("{addr}/24"), "dev", &self.b]);
        addr
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
    }
}

pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no interface {name}");
    i
}

pub fn mac(name: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
    let mut mac = [0u8; 6];
    for (i, part) in text.trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

pub fn clock_tai_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for clock_gettime to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Turns on SO_TIMESTAMPNS (the kernel's CLOCK_REALTIME receive stamp of each datagram).
pub fn set_timestampns(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a live socket and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
}
