//! Network interfaces by name: index and RX queue count (sysfs), for the xdp backend and the AF_XDP load generator.

use std::ffi::CString;

/// The interface's index, or None when there is no such interface.
pub fn index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// How many RX queues the interface has (`/sys/class/net/NAME/queues/rx-*`), at least 1.
pub fn rx_queues(name: &str) -> usize {
    let dir = format!("/sys/class/net/{name}/queues");
    let count = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(0);
    count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert_eq!(index("lo"), Some(1));
        assert_eq!(index("no-such-if0"), None);
        assert_eq!(index("bad\0name"), None);
        assert!(rx_queues("lo") >= 1);
    }
}
