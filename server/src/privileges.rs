//! Least privilege: once every socket is bound and the XDP program attached, a stratumd started
//! as root becomes `[server] user` with no capabilities at all (neither backend needs one to
//! serve: the sockets, rings and maps are already open), and `no_new_privs` set. glibc applies
//! setuid and setgid to every thread of the process, and the kernel clears a thread's
//! capabilities when its user stops being root, so the workers already running lose them too.
//!
//! With `discipline = "system"` one capability stays, CAP_SYS_TIME, for the sync thread's
//! clock_adjtime: the calling (main) thread sets PR_SET_KEEPCAPS around the user change (a
//! per-thread flag, so every other thread still loses everything), then capset leaves it
//! CAP_SYS_TIME alone, permitted and effective. capset is per thread too: the sync thread,
//! spawned from the main thread after this, inherits the main thread's set, and the main thread
//! then gives its own up ([`drop_thread_capabilities`]), as does the resolver thread.

use std::ffi::CString;
use std::io;

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
}
