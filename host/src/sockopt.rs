//! Socket options that socket2 does not wrap (SO_TIMESTAMPING, IP_PKTINFO, the privileged
//! buffer sizes...): most take one C int.

use std::io;
use std::os::fd::AsRawFd;

/// setsockopt with an int value, the shape of most socket options.
pub fn set_int(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; the fd stays open for the
    // call (it is borrowed from its owner).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_an_option_and_reports_a_bad_one() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
        let e = set_int(&socket, libc::SOL_SOCKET, -1, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
