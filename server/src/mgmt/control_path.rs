//! Where the control socket lives when `[control]` names no `socket`, for stratumd and stratumctl
//! alike, so that the quickstart's `stratumctl status` finds the quickstart's stratumd with no
//! flag, whether it runs as root, as a systemd service, or as an unprivileged user.

use std::path::PathBuf;

/// The system-wide place: a root stratumd, and stratumd.service (its RuntimeDirectory).
pub const SYSTEM_CONTROL_SOCKET: &str = "/run/stratumd/control.sock";

/// The default control socket, first match wins:
/// 1. `$RUNTIME_DIRECTORY/control.sock`: systemd's `RuntimeDirectory=` (a service with a
///    DynamicUser is not root, yet owns /run/stratumd);
/// 2. [`SYSTEM_CONTROL_SOCKET`] for root;
/// 3. `$XDG_RUNTIME_DIR/stratumd/control.sock` for a user with a login session;
/// 4. `/tmp/stratumd-UID/control.sock` otherwise (the directory must be the user's own and
///    private; the control socket's bind checks that).
pub fn default_control_socket() -> PathBuf {
    choose(
        std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from),
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        unsafe { libc::geteuid() },
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    )
}

/// Where stratumctl looks when given no `--socket`: the default for this user, then the system
/// place (an operator's shell asking a stratumd that runs as a service).
pub fn client_candidates() -> Vec<PathBuf> {
    let mut paths = vec![default_control_socket()];
    if paths[0] != std::path::Path::new(SYSTEM_CONTROL_SOCKET) {
        paths.push(PathBuf::from(SYSTEM_CONTROL_SOCKET));
    }
    paths
}

fn choose(runtime_directory: Option<PathBuf>, euid: u32, xdg_runtime_dir: Option<PathBuf>) -> PathBuf {
    let usable = |p: &Option<PathBuf>| p.as_ref().filter(|p| p.is_absolute()).cloned();
    if let Some(dir) = usable(&runtime_directory) {
        // systemd may list several directories, separated by ':'; the first is ours.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first).join("control.sock");
    }
    if euid == 0 {
        return PathBuf::from(SYSTEM_CONTROL_SOCKET);
    }
    if let Some(dir) = usable(&xdg_runtime_dir) {
        return dir.join("stratumd").join("control.sock");
    }
    PathBuf::from(format!("/tmp/stratumd-{euid}")).join("control.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_who_runs_it() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(choose(p("/run/stratumd"), 61234, None), PathBuf::from("/run/stratumd/control.sock"));
        assert_eq!(choose(p("/run/stratumd:/run/other"), 0, None), PathBuf::from("/run/stratumd/control.sock"));
        assert_eq!(choose(None, 0, p("/run/user/0")), PathBuf::from(SYSTEM_CONTROL_SOCKET));
        assert_eq!(choose(None, 1000, p("/run/user/1000")), PathBuf::from("/run/user/1000/stratumd/control.sock"));
        assert_eq!(choose(None, 1000, None), PathBuf::from("/tmp/stratumd-1000/control.sock"));
        // A relative value is not a place to trust.
        assert_eq!(choose(p("run"), 1000, p("tmp")), PathBuf::from("/tmp/stratumd-1000/control.sock"));
    }
}
