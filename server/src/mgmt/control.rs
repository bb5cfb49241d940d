//! The control socket `stratumctl` talks to: a Unix stream socket (mode 0660), one JSON request
//! line in, one JSON response line out, then the connection closes.
//!
//! Requests: `{"command":"status"}`, `{"command":"workers"}`, `{"command":"sources"}`,
//! `{"command":"clients","top":N}`. A response is the command's JSON object, or
//! `{"error":"..."}`. Served on its own threads (one per connection, a few at most); it only reads
//! [`ServerStatus`], so it never makes a worker wait.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::mgmt::endpoint;
use crate::mgmt::status::ServerStatus;

/// The longest request line read.
pub const MAX_REQUEST_BYTES: u64 = 4096;
/// The most clients `clients --top` lists.
pub const MAX_TOP: usize = 10_000;
/// The socket file's mode: owner and group (the operators' group) may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// One request, as its JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum ControlRequest {
    Status,
    Workers,
    Sources,
    Tracking,
    Health,
    Clients {
        #[serde(default = "default_top")]
        top: usize,
    },
}

fn default_top() -> usize {
    10
}

/// How long a `clients` answer is reused: the table scan behind it (up to the whole limiter
/// table) runs at most once a second however often it is asked.
const CLIENTS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The control protocol over the endpoint loop: one JSON line in, one JSON line out.
struct Control {
    status: Arc<ServerStatus>,
    /// `[health] max-root-distance`, seconds.
    max_root_distance: f64,
    /// The last `clients` answer: when, for how many, and the answer.
    clients: std::cell::RefCell<Option<(std::time::Instant, usize, Value)>>,
}

impl Control {
    /// Answers one request line.
    fn answer_line(&self, line: &str) -> Value {
        let status = &self.status;
        match serde_json::from_str::<ControlRequest>(line.trim()) {
            Ok(ControlRequest::Status) => status.status_json(),
            Ok(ControlRequest::Workers) => status.workers_json(),
            Ok(ControlRequest::Sources) => status.sources_json(),
            Ok(ControlRequest::Tracking) => status.tracking_json(),
            Ok(ControlRequest::Health) => {
                let h = status.health(self.max_root_distance);
                json!({
                    "healthy": h.healthy,
                    "reason": h.reason,
                    "root_distance_seconds": h.root_distance,
                    "max_root_distance_seconds": self.max_root_distance,
                    "stratum": h.stratum,
                })
            }
            Ok(ControlRequest::Clients { top }) if (1..=MAX_TOP).contains(&top) => self.clients(top),
            Ok(ControlRequest::Clients { top }) => json!({ "error": format!("top {top} is outside 1..={MAX_TOP}") }),
            Err(e) => json!({ "error": format!("bad request: {e}") }),
        }
    }

    /// `clients --top N`, from the last scan when it is recent and was for at least N.
    fn clients(&self, top: usize) -> Value {
        let mut cache = self.clients.borrow_mut();
        let fresh = cache.as_ref().filter(|(at, n, _)| at.elapsed() < CLIENTS_REUSE && *n >= top);
        let mut value = match fresh {
            Some((_, _, v)) => v.clone(),
            None => {
                let v = self.status.clients_json(top);
                *cache = Some((std::time::Instant::now(), top, v.clone()));
                v
            }
        };
        if let Some(list) = value.get_mut("clients").and_then(Value::as_array_mut) {
            list.truncate(top);
        }
        value
    }
}

impl endpoint::Protocol for Control {
    const MAX_REQUEST: usize = MAX_REQUEST_BYTES as usize;

    fn is_complete(&self, request: &[u8]) -> bool {
        request.contains(&b'\n')
    }

    fn answer(&self, request: &[u8], too_long: bool, at_eof: bool) -> Option<Vec<u8>> {
        let response = if too_long {
            json!({ "error": "request too long" })
        } else if at_eof && request.is_empty() {
            return None;
        } else {
            // A line, or at EOF whatever came.
            let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
            self.answer_line(&String::from_utf8_lossy(line))
        };
        let mut out = response.to_string().into_bytes();
        out.push(b'\n');
        Some(out)
    }
}

/// The control socket's listener, with the peer check applied at accept.
struct ControlListener {
    listener: UnixListener,
    /// Members of this group (besides root and stratumd's own user) may ask; None: whoever
    /// the socket file's mode lets connect.
    group: Option<u32>,
}

impl AsRawFd for ControlListener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl endpoint::Listener for ControlListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> std::io::Result<(UnixStream, bool)> {
        let (stream, _) = self.listener.accept()?;
        stream.set_nonblocking(true)?;
        let allowed = match self.group {
            None => true,
            Some(gid) => peer::credentials(&stream).is_some_and(|c| peer::may_ask(&c, gid)),
        };
        Ok((stream, allowed))
    }
}

/// Makes the socket: creates the parent directory if missing, removes a stale socket file (one
/// nobody answers on), refuses to replace a live one or a file that is not a socket.
fn bind(path: &Path) -> anyhow::Result<(UnixListener, Option<PathBuf>)> {
    let mut made_directory = None;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            made_directory = Some(parent.to_path_buf());
        }
        prepare_directory(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!("{} is in use: another stratumd is running with this control socket", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket; not replacing it", path.display()),
        Err(_) => {}
    }
    // The file is born with its mode (a chmod after bind would follow a symlink swapped in
    // between); umask is process-wide, and at start no other thread makes files.
    // SAFETY: umask cannot fail; the old mask is put back right after.
    let old = unsafe { libc::umask(0o777 & !SOCKET_MODE as libc::mode_t) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot make the control socket {}", path.display()))?;
    Ok((listener, made_directory))
}

/// Creates the socket's directory where it is missing. Inside a world-writable directory (the
/// `/tmp/stratumd-UID` fallback), where anyone could have made it first, it must be this user's
/// and writable by nobody else (so nobody else can plant a file or link in it): made 0700 here,
/// and refused when it is anyone else's or group/world-writable.
fn prepare_directory(dir: &Path) -> anyhow::Result<()> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let in_shared_place =
        dir.parent().and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.permissions().mode() & 0o002 != 0);
    if !in_shared_place {
        return Ok(());
    }
    if !existed {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory of uid {me} that only it can write (it must be one, inside a \
             world-writable directory); remove it, or set [control] socket",
            dir.display()
        );
    }
    Ok(())
}

/// Who is on the other end of a control connection, and whether they may ask.
mod peer {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// SO_PEERCRED: the connecting process, its user and primary group.
    pub(super) fn credentials(stream: &UnixStream) -> Option<libc::ucred> {
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are live and of the sizes the kernel expects for SO_PEERCRED.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(cred)
    }

    /// Root, stratumd's own user, or a member of `gid` (primary, or supplementary as the
    /// process's /proc status lists them when it connected).
    pub(super) fn may_ask(cred: &libc::ucred, gid: u32) -> bool {
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        let me = unsafe { libc::geteuid() };
        if cred.uid == 0 || cred.uid == me || cred.gid == gid {
            return true;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", cred.pid)).unwrap_or_default();
        let member = supplementary_groups(&status).any(|g| g == gid);
        member
    }

    fn supplementary_groups(status: &str) -> impl Iterator<Item = u32> + '_ {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .into_iter()
            .flat_map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn groups_come_from_proc_status() {
            let status = "Name:\tstratumctl\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 27 1001 \nNgid:\t0\n";
            assert_eq!(supplementary_groups(status).collect::<Vec<_>>(), [4, 27, 1001]);
            assert_eq!(supplementary_groups("Name:\tx\n").count(), 0);
            // SAFETY: getegid cannot fail.
            let me = libc::ucred { pid: std::process::id() as i32, uid: 12345, gid: unsafe { libc::getegid() } };
            assert!(may_ask(&me, me.gid));
            let stranger = libc::ucred { pid: std::process::id() as i32, uid: 54321, gid: 54321 };
            assert!(!may_ask(&stranger, 54322));
        }
    }
}

/// The control socket, served on its own thread until shutdown; the file is removed on join.
#[derive(Debug)]
pub struct ControlServer {
    pub path: PathBuf,
    /// The socket's directory, when stratumd created it.
    made_directory: Option<PathBuf>,
    thread: JoinHandle<()>,
}

impl ControlServer {
    /// Serves the control socket at `path`; with `group`, only root, stratumd's own user and
    /// that group's members (SO_PEERCRED) are answered.
    pub fn start(
        path: &Path,
        group: Option<u32>,
        max_root_distance: f64,
        status: Arc<ServerStatus>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let (listener, made_directory) = bind(path)?;
        listener.set_nonblocking(true)?;
        let listener = ControlListener { listener, group };
        let thread = endpoint::spawn(
            "stratumd-control",
            listener,
            Control { status, max_root_distance, clients: Default::default() },
            shutdown,
        )
        .context("cannot start the control thread")?;
        Ok(Self { path: path.to_path_buf(), made_directory, thread })
    }

    /// Waits for the thread (after shutdown was raised) and removes the socket file.
    pub fn join(self) {
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
    }

    /// Gives the socket file, and its directory when stratumd made it, to the user stratumd is
    /// about to become, so that it can still remove the file when it stops.
    pub fn hand_to(&self, uid: u32, gid: u32) -> anyhow::Result<()> {
        let mut paths = vec![self.path.clone()];
        if let Some(dir) = &self.made_directory {
            paths.push(dir.clone());
        }
        for path in paths {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }
}

/// The client side, for `stratumctl`: sends one request, returns the response object.
pub fn request(path: &Path, request: &ControlRequest, timeout: std::time::Duration) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(path).with_context(|| format!("cannot connect to {}", path.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut response = String::new();
    BufReader::new(stream.take(64 << 20))
        .read_line(&mut response)
        .with_context(|| format!("no answer from {}", path.display()))?;
    let value: Value = serde_json::from_str(&response).context("stratumd sent something that is not JSON")?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        bail!("stratumd: {error}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let r = ControlRequest::Clients { top: 5 };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"command":"clients","top":5}"#);
        assert_eq!(serde_json::to_string(&ControlRequest::Status).unwrap(), r#"{"command":"status"}"#);
        let parsed: ControlRequest = serde_json::from_str(r#"{"command":"clients"}"#).unwrap();
        assert_eq!(parsed, ControlRequest::Clients { top: 10 });
        assert!(serde_json::from_str::<ControlRequest>(r#"{"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<ControlRequest>(r#"{"command":"clients","top":-1}"#).is_err());
    }

    #[test]
    fn clients_scans_at_most_once_a_second_for_as_many_as_asked() {
        use stratum_proto::server::ratelimit::{RateLimitConfig, RateLimiter};
        let status = Arc::new(ServerStatus {
            version: "0.0.0",
            started: std::time::Instant::now(),
            backend: "socket",
            tx_timestamps: "software",
            xdp: None,
            addresses: vec![],
            workers: vec![],
            clock_source: "local".into(),
            cell: crate::time::core::SnapshotCell::new(stratum_proto::ServerSnapshot::unsynchronized(-20)),
            limiter: Some(Arc::new(RateLimiter::new(&RateLimitConfig::default(), [1, 2]))),
            sync: None,
            ntpq: None,
            stats: None,
            ntske: None,
        });
        let control = Control { status, max_root_distance: 1.0, clients: Default::default() };
        let scanned_for = |c: &Control| c.clients.borrow().as_ref().map(|(_, n, _)| *n);
        assert_eq!(control.answer_line(r#"{"command":"clients","top":5}"#)["ratelimit"], true);
        assert_eq!(scanned_for(&control), Some(5));
        // Fewer, within the second: the last scan serves.
        control.answer_line(r#"{"command":"clients","top":3}"#);
        assert_eq!(scanned_for(&control), Some(5));
        // More than the last scan holds: a new scan.
        control.answer_line(r#"{"command":"clients","top":7}"#);
        assert_eq!(scanned_for(&control), Some(7));
        // Anything else goes the usual way.
        assert!(control.answer_line(r#"{"command":"reboot"}"#)["error"].is_string());
    }

    #[test]
    fn a_socket_directory_in_a_shared_place_must_be_private() {
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let ours = shared.path().join("stratumd-test");
        prepare_directory(&ours).unwrap();
        assert_eq!(std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777, 0o700);
        // Made by someone before us, open to others: refused, not used.
        let open = shared.path().join("stratumd-open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_directory(&open).unwrap_err().to_string();
        assert!(e.contains("that only it can write"), "{e}");
        // Outside a shared place, whatever the mode: the operator chose it.
        let private = tempfile::tempdir().unwrap();
        prepare_directory(&private.path().join("a/b")).unwrap();
    }
}
