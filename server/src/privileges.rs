//! Least privilege: once every socket is bound and the XDP program attached, a stratumd started
//! as root becomes `[server] user` with no capabilities at all (neither backend needs one to
//! serve: the sockets, rings and maps are already open), and `no_new_privs` set. glibc applies
//! setuid and setgid to every thread of the process, and the kernel clears a thread's
//! capabilities when its user stops being root, so the workers already running lose them too.

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

/// Becomes `user` for good: supplementary groups dropped, its group and user id set (real,
/// effective and saved), every capability gone, no_new_privs set. Needs root.
pub fn drop_to(user: &User) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments; each result is checked. glibc broadcasts
    // setgroups/setgid/setuid to every thread of the process.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
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
