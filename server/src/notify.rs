//! systemd's service notifications (sd_notify(3)), written by hand: one datagram per message on
//! the socket `NOTIFY_SOCKET` names. With `Type=notify` stratumd says READY=1 once it serves,
//! STOPPING=1 when it begins to stop; with `WatchdogSec=` the sync thread says WATCHDOG=1 at half
//! of `WATCHDOG_USEC`, so a time plane that hangs (not just a process that dies) is restarted.
//! Without `NOTIFY_SOCKET` (not under systemd, or another Type=) every call is a no-op.
//!
//! The state is process-wide, set once by [`init_from_env`] before any thread pings: the sync
//! loops call [`watchdog`] without being handed anything. Only the sync thread pings, once per
//! loop (at most every second): no hot path goes near it.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    /// Half of WATCHDOG_USEC and the last ping, when the watchdog is on for this process.
    watchdog: Option<(Duration, Mutex<Option<Instant>>)>,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once. An unusable socket is logged
/// once and notifications stay off (stratumd serves regardless; systemd then reports the
/// missing READY=1 itself).
pub fn init_from_env() {
    NOTIFIER.get_or_init(|| {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match open(&path.to_string_lossy()) {
            Ok((socket, to)) => Some(Notifier { socket, to, watchdog: watchdog.map(|d| (d, Mutex::new(None))) }),
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET {} is unusable: no readiness or watchdog notifications", path.to_string_lossy());
                None
            }
        }
    });
}

/// An absolute path, or `@name` for an abstract socket (what systemd passes).
fn open(path: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let to = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither a path nor @name")),
    };
    Ok((UnixDatagram::unbound()?, to))
}

/// How often to ping: half of `WATCHDOG_USEC`, if it is set, positive, and meant for this
/// process (`WATCHDOG_PID`, when present, is ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

fn send(state: &str) {
    if let Some(Some(n)) = NOTIFIER.get() {
        // A lost notification is not worth a log line per second; systemd will say it timed out.
        let _ = n.socket.send_to_addr(state.as_bytes(), &n.to);
    }
}

/// READY=1, with a one-line STATUS= that `systemctl status` shows.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")));
}

/// STOPPING=1: stratumd has begun to stop.
pub fn stopping() {
    send("STOPPING=1");
}

/// The sync thread's heartbeat: WATCHDOG=1 when half the watchdog interval has passed since the
/// last one. Called every loop; costs a clock read when nothing is due.
pub fn watchdog() {
    let Some(Some(Notifier { watchdog: Some((half, last)), .. })) = NOTIFIER.get() else { return };
    let now = Instant::now();
    let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_none_or(|t| now.duration_since(t) >= *half) {
        *last = Some(now);
        send("WATCHDOG=1");
    }
}

/// Whether the watchdog is on (for the start-up log).
pub fn watchdog_interval_in_use() -> Option<Duration> {
    NOTIFIER.get()?.as_ref()?.watchdog.as_ref().map(|(half, _)| *half * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_interval_and_only_for_this_process() {
        assert_eq!(watchdog_interval(Some("10000000"), None, 7), Some(Duration::from_secs(5)));
        assert_eq!(watchdog_interval(Some("10000000"), Some("7"), 7), Some(Duration::from_secs(5)));
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn socket_names_are_paths_or_abstract() {
        assert!(open("/run/systemd/notify").is_ok());
        assert!(open("@/org/freedesktop/systemd1/notify/1").is_ok());
        assert!(open("relative").is_err());
    }
}
