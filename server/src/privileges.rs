//! Least privilege: once every socket is bound and the XDP program attached, every thread of
//! stratumd keeps only what its configuration still needs: no capability at all on either backend
//! (the sockets, rings and maps are already open), CAP_SYS_TIME in the sync thread alone with
//! `discipline = "system"`; ambient and inheritable sets empty, the bounding set cut to the same
//! where the process may (CAP_SETPCAP), and `no_new_privs` set. Two ways in:
//!
//! - **Started as root with `[server] user`**: [`drop_to`] becomes that user. glibc applies
//!   setuid and setgid to every thread of the process, and the kernel clears a thread's
//!   capabilities when its user stops being root, so the workers already running lose them too.
//!   With `discipline = "system"` the calling (main) thread sets PR_SET_KEEPCAPS around the user
//!   change (a per-thread flag, so every other thread still loses everything), then capset leaves
//!   it CAP_SYS_TIME alone, permitted and effective.
//! - **Started as a user with ambient capabilities** (systemd `User=`/`DynamicUser=` with
//!   `AmbientCapabilities=`, `setpriv --ambient-caps`): no user change clears anything, and the
//!   kernel keeps capabilities per thread (capset, the bounding set, the ambient set and
//!   no_new_privs all act on the calling thread only), so the workers, the address watcher and the
//!   endpoint threads spawned before this point would keep every capability they were started with.
//!   [`restrict_every_thread`] asks each of them to give its own up.
//!
//! Why a per-thread broadcast rather than dropping before the other threads start: the threads
//! are started by the parts that need the capabilities (the data plane binds, attaches and spawns
//! its workers in one call; the NTS-KE and metrics listeners bind and spawn), so a drop before the
//! first spawn would mean splitting every one of them into a privileged half and a spawning half,
//! and any later part that spawned a thread early would silently hand it the full set again. The
//! broadcast does not depend on how the rest is ordered, and it checks its own result: it is what
//! glibc does for setuid, done for capabilities. Each thread is sent a real-time signal whose
//! handler makes the calls for its own thread (raw system calls only, errno kept); the caller then
//! reads every thread's /proc/self/task/TID/status until two passes in a row list the same threads,
//! each with nothing left (a thread spawned meanwhile by one not yet done shows up in the second
//! pass and is asked too; a thread spawned by one already done inherits its reduced set). A thread
//! that is still not done after [`BROADCAST_TIMEOUT`] stops stratumd with its name: it fails
//! closed. Worker loops already treat EINTR as "nothing yet" (the setuid broadcast and SIGTERM
//! interrupt them the same way).
//!
//! Threads spawned later (the sync thread, the resolver, the reference clock readers, each
//! NTS-KE connection's thread from the accept thread) start from a thread that is done, so they
//! inherit the reduced set. With `discipline = "system"` the main thread keeps CAP_SYS_TIME until
//! it has spawned the sync thread (which inherits it), then gives its own up
//! ([`drop_thread_capabilities`]), as do the resolver thread and each reference clock reader
//! (started from the main thread just before the sync thread, so they would keep it otherwise).
//! A reader's timed recv is interrupted by any signal that lands on it (this broadcast, SIGHUP):
//! it reads again. A stratumd started as root without `[server] user` keeps root's
//! power: nothing here runs.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// A user to run as, looked up in the user database when the configuration is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl User {
    /// By name (the password database) or by number (its primary group then the same number).
    pub fn lookup(text: &str) -> Result<Self, String> {
        let missing = || format!("no user `{text}` on this host");
        let name = CString::new(text).map_err(|_| missing())?;
        // SAFETY: all-zero is a valid passwd to be filled; buf outlives the call; result points
        // at pwd or is null.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0u8; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is live for the call and buf's length is given.
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == 0 && !result.is_null() {
            return Ok(Self { name: text.to_string(), uid: pwd.pw_uid, gid: pwd.pw_gid });
        }
        let uid: u32 = text.parse().map_err(|_| missing())?;
        Ok(Self { name: text.to_string(), uid, gid: uid })
    }
}

/// CAP_SYS_TIME's number.
pub const CAP_SYS_TIME: u32 = 25;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets this thread's permitted and effective capabilities to `mask` (inheritable none).
fn set_thread_capabilities(mask: u64) -> io::Result<()> {
    let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let word = |i: u32| (mask >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData { effective: word(i), permitted: word(i), inheritable: 0 });
    // SAFETY: header and data are live, of the layout capset(2) takes for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives up every capability of the calling thread alone (other threads keep theirs).
pub fn drop_thread_capabilities() -> io::Result<()> {
    set_thread_capabilities(0)
}

/// Becomes `user` for good: supplementary groups dropped, its group and user id set (real,
/// effective and saved), every capability gone, no_new_privs set. Needs root. With
/// `keep_sys_time`, the calling thread (and the threads it spawns afterwards) keeps CAP_SYS_TIME
/// and nothing else.
pub fn drop_to(user: &User, keep_sys_time: bool) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments; each result is checked. glibc broadcasts
    // setgroups/setgid/setuid to every thread of the process.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if keep_sys_time && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let groups = [user.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        // Back to root must be impossible now.
        if user.uid != 0 && libc::setuid(0) == 0 {
            return Err(io::Error::other("could set the user back to root after dropping it"));
        }
        if keep_sys_time {
            // The permitted set survived the user change (effective did not): CAP_SYS_TIME
            // alone, made effective; then keep-caps off again.
            set_thread_capabilities(1 << CAP_SYS_TIME)?;
            if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// How long [`restrict_every_thread`] waits for every thread to be done.
pub const BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);

/// One step of [`restrict_every_thread`], for the calling thread: each is a set of the flags below.
/// Bounding set cut to [`KEEP`] (where CAP_SETPCAP allows), ambient set cleared, no_new_privs.
const LIMIT: u32 = 1;
/// Permitted, effective and inheritable sets emptied (ambient with them).
const CLEAR: u32 = 2;

/// What the signal handler does ([`LIMIT`], [`CLEAR`]) and the bounding set it keeps; set before
/// the signals are sent.
static ASKED: AtomicU32 = AtomicU32::new(0);
static KEEP: AtomicU64 = AtomicU64::new(0);

/// The signal that carries the request: a real-time one nothing else in stratumd uses (glibc
/// keeps the first two for itself, SIGRTMIN() is past them; the xdp crate's generator, in another
/// process, uses SIGRTMIN()).
fn restrict_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// The calling thread's part, async-signal-safe (raw system calls, no allocation). `bound`: the
/// bounding set kept; `keep`: with [`CLEAR`], the permitted and effective set kept. Returns 0 or
/// the first errno that matters (the bounding set's EPERM without CAP_SETPCAP does not).
fn restrict_this_thread(what: u32, bound: u64, keep: u64) -> i32 {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: prctl and capset with integer arguments or pointers to live locals.
    unsafe {
        if what & LIMIT != 0 {
            for cap in 0..64u64 {
                // EINVAL past the kernel's last capability, EPERM without CAP_SETPCAP: left as is.
                if bound & (1 << cap) == 0 {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                }
            }
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) != 0 {
                return errno();
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return errno();
            }
        }
        if what & CLEAR != 0 {
            let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
            let word = |i: u32| (keep >> (32 * i)) as u32;
            let data = [0, 1].map(|i| CapData { effective: word(i), permitted: word(i), inheritable: 0 });
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                return errno();
            }
        }
    }
    0
}

extern "C" fn on_restrict_signal(_: libc::c_int) {
    // SAFETY: errno is this thread's; kept across the handler so that the interrupted code sees
    // its own.
    unsafe {
        let saved = *libc::__errno_location();
        restrict_this_thread(ASKED.load(Ordering::SeqCst), KEEP.load(Ordering::SeqCst), 0);
        *libc::__errno_location() = saved;
    }
}

/// One thread's privileges as /proc/self/task/TID/status shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadPrivileges {
    pub name: String,
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl ThreadPrivileges {
    /// Parses a status file (and the thread's name).
    pub fn parse(name: &str, status: &str) -> Option<Self> {
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let mask = |key: &str| field(key).and_then(|hex| u64::from_str_radix(hex, 16).ok());
        Some(Self {
            name: name.to_string(),
            inheritable: mask("CapInh:")?,
            permitted: mask("CapPrm:")?,
            effective: mask("CapEff:")?,
            bounding: mask("CapBnd:")?,
            ambient: mask("CapAmb:")?,
            no_new_privs: field("NoNewPrivs:")? == "1",
        })
    }

    /// Thread `tid` of this process; None once it has ended.
    fn of(tid: i32) -> Option<Self> {
        let dir = format!("/proc/self/task/{tid}");
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let name = std::fs::read_to_string(format!("{dir}/comm")).unwrap_or_default();
        Self::parse(name.trim(), &status)
    }

    /// Whether steps `what` are done here, `bound` being the bounding set kept (None: it could
    /// not be cut, no CAP_SETPCAP).
    fn done(&self, what: u32, bound: Option<u64>) -> bool {
        let limited = self.ambient == 0 && self.no_new_privs && bound.is_none_or(|b| self.bounding & !b == 0);
        let cleared = self.permitted == 0 && self.effective == 0 && self.inheritable == 0;
        (what & LIMIT == 0 || limited) && (what & CLEAR == 0 || cleared)
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Every thread of this process (ids).
fn task_ids() -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> =
        std::fs::read_dir("/proc/self/task")?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Steps `what` in every thread: this one at once (keeping `keep` with [`CLEAR`]), the others
/// through the signal; returns once every thread is seen done twice over the same thread list.
fn broadcast(what: u32, bound: u64, keep: u64) -> io::Result<()> {
    let done = broadcast_once(what, bound, keep);
    // A signal that comes later (a repeat still queued, or one from outside) changes nothing: the
    // sync thread keeps its CAP_SYS_TIME.
    ASKED.store(0, Ordering::SeqCst);
    done
}

fn broadcast_once(what: u32, bound: u64, keep: u64) -> io::Result<()> {
    static HANDLER: Once = Once::new();
    let mut installed = Ok(());
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_restrict_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(restrict_signal(), &action, std::ptr::null_mut()) != 0 {
                installed = Err(io::Error::last_os_error());
            }
        }
    });
    installed?;
    ASKED.store(what, Ordering::SeqCst);
    KEEP.store(bound, Ordering::SeqCst);
    match restrict_this_thread(what, bound, keep) {
        0 => {}
        e => return Err(io::Error::from_raw_os_error(e)),
    }
    let me = gettid();
    // The bounding set is checked in the others only if it could be cut here.
    let bound = ThreadPrivileges::of(me).filter(|p| p.bounding & !bound == 0).map(|_| bound);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let started = Instant::now();
    let mut asked: HashMap<i32, Instant> = HashMap::new();
    let mut clean: Option<Vec<i32>> = None;
    loop {
        let tids = task_ids()?;
        let mut left = Vec::new();
        for &tid in tids.iter().filter(|&&t| t != me) {
            let Some(p) = ThreadPrivileges::of(tid) else { continue };
            if p.done(what, bound) {
                continue;
            }
            // Asked again only if the first signal seems lost (never, in practice).
            if asked.get(&tid).is_none_or(|at| at.elapsed() > Duration::from_millis(200)) {
                // SAFETY: tgkill to a thread of this process; ESRCH (it ended) is fine.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, restrict_signal()) };
                asked.insert(tid, Instant::now());
            }
            left.push(format!("{} ({tid})", p.name));
        }
        if left.is_empty() {
            if clean.as_ref() == Some(&tids) {
                return Ok(());
            }
            clean = Some(tids);
        } else {
            clean = None;
            if started.elapsed() > BROADCAST_TIMEOUT {
                return Err(io::Error::other(format!(
                    "threads still holding capabilities after {BROADCAST_TIMEOUT:?}: {}",
                    left.join(", ")
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first step, before any user change: in every thread the bounding set is cut to `keep`
/// (where CAP_SETPCAP allows: root, or a user given it), the ambient set cleared and no_new_privs
/// set. Capabilities in use are untouched, so root can still change user afterwards.
pub fn limit_every_thread(keep: u64) -> io::Result<()> {
    broadcast(LIMIT, keep, 0)
}

/// The last step: every other thread has no capability left (permitted, effective, inheritable,
/// ambient), this one `keep` where it has it (permitted, effective), and every thread has the
/// [`limit_every_thread`] step done too. For a process that is not root (any more).
pub fn restrict_every_thread(keep: u64) -> io::Result<()> {
    let permitted = ThreadPrivileges::of(gettid()).map_or(0, |p| p.permitted);
    broadcast(LIMIT | CLEAR, keep, keep & permitted)
}

/// This thread's privileges.
pub fn this_thread() -> Option<ThreadPrivileges> {
    ThreadPrivileges::of(gettid())
}

/// The capabilities this thread may still use (CapEff of /proc/thread-self/status), as a mask.
pub fn effective_capabilities() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_and_number() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(User::lookup("12345").unwrap(), User { name: "12345".into(), uid: 12345, gid: 12345 });
        assert!(User::lookup("no-such-user-here").unwrap_err().contains("no user"));
        assert!(effective_capabilities().is_ok());
    }

    #[test]
    fn thread_privileges_from_a_status_file() {
        let status = "Name:\tstratumd-w0\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000400\n\
                      CapEff:\t0000000000000400\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000400\n\
                      NoNewPrivs:\t0\n";
        let p = ThreadPrivileges::parse("stratumd-w0", status).unwrap();
        assert_eq!((p.permitted, p.effective, p.ambient, p.bounding), (0x400, 0x400, 0x400, 0x1ff_ffff_ffff));
        assert!(!p.no_new_privs);
        assert!(!p.done(LIMIT, None) && !p.done(CLEAR, None));
        let cleared = ThreadPrivileges { permitted: 0, effective: 0, ambient: 0, no_new_privs: true, ..p.clone() };
        assert!(cleared.done(LIMIT | CLEAR, None));
        // The bounding set counts only where it could be cut.
        assert!(!cleared.done(LIMIT, Some(1 << CAP_SYS_TIME)));
        assert!(ThreadPrivileges { bounding: 1 << CAP_SYS_TIME, ..cleared }.done(LIMIT, Some(1 << CAP_SYS_TIME)));
        assert_eq!(ThreadPrivileges::parse("x", "CapInh:\t0\n"), None);
        // This thread's own, as the kernel shows them.
        assert!(this_thread().is_some());
    }
}
