//! Serving the management endpoints (`/metrics`, the control socket): an accept loop that checks
//! for shutdown, and one short-lived thread per connection, a bounded number at once, so that a
//! slow or silent client never delays another, and the data plane never at all.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request or read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 8;
/// How often the accept loop looks at the shutdown flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Accepts connections on the non-blocking `listener` until `shutdown`, handing each to `serve` on
/// a thread of its own (see [`spawn_limited`]).
pub fn accept_loop<L: AsRawFd, S: Send + 'static>(
    listener: &L,
    accept: impl Fn(&L) -> std::io::Result<S>,
    thread_name: &str,
    shutdown: &AtomicBool,
    serve: impl Fn(S) + Clone + Send + 'static,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Ordering::Relaxed) {
        if !wait_readable(listener.as_raw_fd()) {
            continue;
        }
        if let Ok(stream) = accept(listener) {
            let serve = serve.clone();
            spawn_limited(&in_flight, thread_name, move || serve(stream));
        }
    }
}

/// Runs [`accept_loop`] on a thread named `name` until shutdown: how both endpoints start.
/// `listener` must already be non-blocking (the loop polls it so that it sees shutdown).
pub fn spawn_accept_thread<L: AsRawFd + Send + 'static, S: Send + 'static>(
    name: &str,
    listener: L,
    accept: impl Fn(&L) -> std::io::Result<S> + Send + 'static,
    connection_name: &'static str,
    shutdown: Arc<AtomicBool>,
    serve: impl Fn(S) + Clone + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || accept_loop(&listener, accept, connection_name, &shutdown, serve))
}

/// Runs `serve` on a short-lived thread of its own, unless [`MAX_CONNECTIONS`] are already being
/// served (then the connection is dropped: closed unanswered). So a slow or silent client holds
/// one slot for at most [`CLIENT_TIMEOUT`] and never delays anyone else, a worker least of all.
pub fn spawn_limited(in_flight: &Arc<AtomicUsize>, name: &str, serve: impl FnOnce() + Send + 'static) {
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let slot = in_flight.clone();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        serve();
        slot.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits up to [`POLL_INTERVAL`] for `fd` to become readable (a connection to accept).
pub fn wait_readable(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: pfd is one valid pollfd that lives across the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
    ready > 0 && pfd.revents & libc::POLLIN != 0
}
