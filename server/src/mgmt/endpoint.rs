//! Serving the management endpoints (`/metrics`, the control socket): one thread per endpoint
//! that multiplexes every connection with poll(2). A connection costs a descriptor and a buffer,
//! never a thread, and has one deadline for its whole request and answer, so slow or silent
//! clients (a slow-loris trickling a byte a second) cannot hold the endpoint: a scrape that
//! arrives among hundreds of them is answered at once. Nothing here touches the data plane.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a client has for its whole request and for reading the whole answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections open at once; past this, the one closest to its deadline is closed for a new one.
pub const MAX_CONNECTIONS: usize = 256;
/// How often the loop looks at the shutdown flag when nothing happens.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What an endpoint speaks: when a request is whole, and the answer to it.
pub trait Protocol: Send + 'static {
    /// The longest request read; past it, [`Protocol::answer`] is asked with `too_long`.
    const MAX_REQUEST: usize;
    /// Whether `request` (all bytes read so far) is a whole request.
    fn is_complete(&self, request: &[u8]) -> bool;
    /// The bytes to send back. `too_long`: the request passed [`Self::MAX_REQUEST`];
    /// `at_eof`: the client closed its side before the request was complete. None closes the
    /// connection without an answer.
    fn answer(&self, request: &[u8], too_long: bool, at_eof: bool) -> Option<Vec<u8>>;
}

/// A listening socket the loop accepts from: TCP for `/metrics`, Unix for the control socket.
pub trait Listener: AsRawFd + Send + 'static {
    type Stream: Read + Write + AsRawFd + Send;
    /// Accepts one pending connection, non-blocking (WouldBlock when none), and says whether the
    /// peer may be served (an allow list, a peer credential check).
    fn accept_one(&self) -> io::Result<(Self::Stream, bool)>;
}

/// Runs the endpoint on a thread named `name` until `shutdown`. `listener` must be non-blocking.
pub fn spawn<L: Listener, P: Protocol>(
    name: &str,
    listener: L,
    protocol: P,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut connections: Vec<Connection<L::Stream>> = Vec::new();
        while !shutdown.load(Ordering::Relaxed) {
            serve_once(&listener, &protocol, &mut connections, Instant::now());
        }
    })
}

enum Phase {
    Reading,
    Writing { answer: Vec<u8>, sent: usize },
}

struct Connection<S> {
    stream: S,
    request: Vec<u8>,
    phase: Phase,
    deadline: Instant,
}

/// One round: wait for any socket to be ready (or the nearest deadline), accept what is
/// pending, advance every ready connection, close the finished and the late.
fn serve_once<L: Listener, P: Protocol>(
    listener: &L,
    protocol: &P,
    connections: &mut Vec<Connection<L::Stream>>,
    now: Instant,
) {
    let wait = connections.iter().map(|c| c.deadline.saturating_duration_since(now)).min().unwrap_or(POLL_INTERVAL);
    let mut fds = Vec::with_capacity(connections.len() + 1);
    fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
    for c in connections.iter() {
        let events = if matches!(c.phase, Phase::Reading) { libc::POLLIN } else { libc::POLLOUT };
        fds.push(pollfd(c.stream.as_raw_fd(), events));
    }
    let timeout = wait.min(POLL_INTERVAL).as_millis().max(1) as libc::c_int;
    // SAFETY: fds is a live array of pollfd of the length given, for the duration of the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    let now = Instant::now();
    if ready > 0 {
        // Connections first (their indexes match fds[1..]), then new ones.
        for (c, fd) in connections.iter_mut().zip(&fds[1..]) {
            if fd.revents != 0 {
                advance(c, protocol);
            }
        }
    }
    connections.retain(|c| c.deadline > now && !finished(c));
    if ready > 0 && fds[0].revents & libc::POLLIN != 0 {
        accept_pending(listener, connections, now);
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Accepts every pending connection; at [`MAX_CONNECTIONS`], each new one replaces the oldest.
fn accept_pending<L: Listener>(listener: &L, connections: &mut Vec<Connection<L::Stream>>, now: Instant) {
    loop {
        match listener.accept_one() {
            Ok((stream, true)) => {
                if connections.len() >= MAX_CONNECTIONS {
                    if let Some(oldest) = (0..connections.len()).min_by_key(|&i| connections[i].deadline) {
                        connections.swap_remove(oldest);
                    }
                }
                let deadline = now + CLIENT_TIMEOUT;
                connections.push(Connection { stream, request: Vec::new(), phase: Phase::Reading, deadline });
            }
            Ok((_refused, false)) => {} // closed unanswered
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EMFILE and the like: leave the rest in the backlog for the next round.
            Err(_) => return,
        }
    }
}

/// Reads what the client sent, or writes what it may take, without blocking.
fn advance<S: Read + Write, P: Protocol>(c: &mut Connection<S>, protocol: &P) {
    match &mut c.phase {
        Phase::Reading => {
            let mut buf = [0u8; 4096];
            let (eof, broken) = match c.stream.read(&mut buf) {
                Ok(0) => (true, false),
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    (false, false)
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return,
                Err(_) => (false, true),
            };
            let too_long = c.request.len() > P::MAX_REQUEST;
            let answer = if broken {
                None
            } else if too_long || protocol.is_complete(&c.request) || eof {
                protocol.answer(&c.request, too_long, eof && !protocol.is_complete(&c.request))
            } else {
                return;
            };
            c.request = Vec::new();
            c.phase = Phase::Writing { answer: answer.unwrap_or_default(), sent: 0 };
            // Most answers fit the socket buffer: send now rather than a round later.
            advance(c, protocol);
        }
        Phase::Writing { answer, sent } => {
            while *sent < answer.len() {
                match c.stream.write(&answer[*sent..]) {
                    Ok(0) => break,
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        *sent = answer.len(); // the client went away: done with it
                    }
                }
            }
        }
    }
}

fn finished<S>(c: &Connection<S>) -> bool {
    matches!(&c.phase, Phase::Writing { answer, sent } if *sent >= answer.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    /// Echo of one line, in capitals.
    struct Shout;

    impl Protocol for Shout {
        const MAX_REQUEST: usize = 64;
        fn is_complete(&self, request: &[u8]) -> bool {
            request.ends_with(b"\n")
        }
        fn answer(&self, request: &[u8], too_long: bool, at_eof: bool) -> Option<Vec<u8>> {
            if too_long {
                return Some(b"too long\n".to_vec());
            }
            (!at_eof).then(|| request.to_ascii_uppercase())
        }
    }

    struct Unix(UnixListener);

    impl AsRawFd for Unix {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl Listener for Unix {
        type Stream = UnixStream;
        fn accept_one(&self) -> io::Result<(UnixStream, bool)> {
            let (s, _) = self.0.accept()?;
            s.set_nonblocking(true)?;
            Ok((s, true))
        }
    }

    fn ask(path: &std::path::Path, request: &[u8]) -> Vec<u8> {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    #[test]
    fn slow_and_silent_clients_do_not_hold_up_a_quick_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = spawn("test-endpoint", Unix(listener), Shout, shutdown.clone()).unwrap();

        // Far more slow clients than a thread-per-connection design had slots: each sent half a
        // request and waits.
        let slow: Vec<UnixStream> = (0..40)
            .map(|_| {
                let mut s = UnixStream::connect(&path).unwrap();
                s.write_all(b"hal").unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        assert_eq!(ask(&path, b"hello\n"), b"HELLO\n");
        assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
        assert_eq!(ask(&path, &[b'x'; 100]), b"too long\n");

        // A silent client is closed at its deadline: its read ends with nothing.
        let mut silent = UnixStream::connect(&path).unwrap();
        silent.set_read_timeout(Some(CLIENT_TIMEOUT * 3)).unwrap();
        let waited = Instant::now();
        let mut buf = [0u8; 8];
        assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
        let closed_after = waited.elapsed();
        assert!(closed_after >= CLIENT_TIMEOUT - Duration::from_millis(200), "{closed_after:?}");
        assert!(closed_after < CLIENT_TIMEOUT + Duration::from_secs(1), "{closed_after:?}");
        drop(slow);

        shutdown.store(true, Ordering::Relaxed);
        thread.join().unwrap();
    }
}
