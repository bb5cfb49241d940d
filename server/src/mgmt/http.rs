//! `/metrics` over HTTP: a tiny HTTP/1.x server on the endpoint loop's thread (see
//! [`super::endpoint`]: one deadline per connection, no thread per client), answering `GET`/`HEAD /metrics` with the text
//! exposition that [`super::metrics`] renders, and nothing else.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use prometheus::Registry;

use stratum_proto::server::access::Cidr;

use crate::mgmt::endpoint;
use crate::mgmt::metrics::{registry, render, CONTENT_TYPE};
use crate::mgmt::status::{Health, ServerStatus};

/// The longest request head we read; anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// An HTTP response, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// HEAD: headers only.
    pub head_only: bool,
}

impl Response {
    fn plain(status: u16, text: &str) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec(), head_only: false }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Answers one request head (everything up to the blank line). `metrics` renders the body and is
/// called only for `GET /metrics` or `HEAD /metrics`; `health` only for `/healthz`.
pub fn handle_request(head: &[u8], metrics: impl FnOnce() -> Vec<u8>, health: impl FnOnce() -> Health) -> Response {
    let Some(line) = head.split(|b| *b == b'\n').next().and_then(|l| std::str::from_utf8(l).ok()) else {
        return Response::plain(400, "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::plain(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::plain(400, "bad request\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if !matches!(method, "GET" | "HEAD") {
        return Response::plain(405, "only GET and HEAD\n");
    }
    let response = match path {
        "/metrics" => Response { status: 200, content_type: CONTENT_TYPE, body: metrics(), head_only: false },
        // 200 or 503 with one line saying why: what probes and routing daemons act on.
        "/healthz" => {
            let h = health();
            let status = if h.healthy { 200 } else { 503 };
            Response::plain(status, &format!("{}: {}\n", if h.healthy { "ok" } else { "unhealthy" }, h.reason))
        }
        _ => return Response::plain(404, "not found; try /metrics or /healthz\n"),
    };
    Response { head_only: method == "HEAD", ..response }
}

/// Whether a request head is whole: it ends with its blank line.
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// HTTP over the endpoint loop: a head read whole (or refused past [`MAX_REQUEST_BYTES`]), one
/// answer, then the connection closes.
struct Http {
    registry: Registry,
    status: Arc<ServerStatus>,
    /// `[health] max-root-distance`, seconds.
    max_root_distance: f64,
}

impl endpoint::Protocol for Http {
    const MAX_REQUEST: usize = MAX_REQUEST_BYTES;

    fn is_complete(&self, head: &[u8]) -> bool {
        head_complete(head)
    }

    fn answer(&self, head: &[u8], too_long: bool, at_eof: bool) -> Option<Vec<u8>> {
        if too_long {
            return Some(Response::plain(431, "request too large\n").to_bytes());
        }
        // A client that closed before its head was whole asked nothing.
        let health = || self.status.health(self.max_root_distance);
        (!at_eof).then(|| handle_request(head, || render(&self.registry), health).to_bytes())
    }
}

/// The /metrics listener, with the allow list applied at accept. (Shaped like the control
/// socket's listener: each wraps its listener type and says at accept whether the peer may ask.)
struct MetricsListener {
    listener: TcpListener,
    allow: Vec<Cidr>,
}

impl AsRawFd for MetricsListener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl endpoint::Listener for MetricsListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> std::io::Result<(TcpStream, bool)> {
        let (stream, peer) = self.listener.accept()?;
        stream.set_nonblocking(true)?;
        let allowed = self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer.ip()));
        Ok((stream, allowed))
    }
}

/// The `/metrics` endpoint: bound at start (so a taken port is a start-up error) and served on
/// its own thread until shutdown.
#[derive(Debug)]
pub struct MetricsServer {
    pub address: SocketAddr,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `/metrics` on `listen` to the sources in `allow` (everyone when empty).
    pub fn start(
        listen: SocketAddr,
        allow: &[Cidr],
        max_root_distance: f64,
        status: Arc<ServerStatus>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let registry = registry(status.clone())?;
        let listener = TcpListener::bind(listen).with_context(|| format!("cannot listen for /metrics on {listen}"))?;
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        if !listen.ip().is_loopback() && allow.is_empty() {
            tracing::warn!(
                %listen,
                "/metrics is reachable beyond this host by anyone: set [metrics] allow to your Prometheus servers"
            );
        }
        let listener = MetricsListener { listener, allow: allow.to_vec() };
        let http = Http { registry, status, max_root_distance };
        let thread =
            endpoint::spawn("stratumd-metrics", listener, http, shutdown).context("cannot start the metrics thread")?;
        Ok(Self { address, thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Vec<u8> {
        b"metrics\n".to_vec()
    }

    fn no_health() -> Health {
        panic!("health asked for a request that is not /healthz")
    }

    fn health(healthy: bool) -> impl FnOnce() -> Health {
        move || Health { healthy, reason: "why".into(), root_distance: 0.001, stratum: 2 }
    }

    #[test]
    fn get_metrics_is_answered_and_everything_else_is_not() {
        let r = handle_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", body, no_health);
        assert_eq!((r.status, r.content_type, r.body.as_slice()), (200, CONTENT_TYPE, &b"metrics\n"[..]));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 8\r\n") && text.ends_with("\r\n\r\nmetrics\n"), "{text}");
        assert_eq!(handle_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", body, no_health).status, 200);
        let head = handle_request(b"HEAD /metrics HTTP/1.1\r\n\r\n", body, no_health);
        assert!(String::from_utf8(head.to_bytes())
            .unwrap()
            .ends_with("Content-Length: 8\r\nConnection: close\r\n\r\n"));

        let never = || -> Vec<u8> { panic!("rendered for a request that is not GET /metrics") };
        assert_eq!(handle_request(b"GET / HTTP/1.1\r\n\r\n", never, no_health).status, 404);
        assert_eq!(handle_request(b"GET /metricsx HTTP/1.1\r\n\r\n", never, no_health).status, 404);
        assert_eq!(handle_request(b"POST /metrics HTTP/1.1\r\n\r\n", never, no_health).status, 405);
        assert_eq!(handle_request(b"GET /metrics\r\n\r\n", never, no_health).status, 400);
        assert_eq!(handle_request(b"GET /metrics SPDY/3\r\n\r\n", never, no_health).status, 400);
        assert_eq!(handle_request(b"\xff\xfe\r\n\r\n", never, no_health).status, 400);
        assert_eq!(handle_request(b"", never, no_health).status, 400);
    }

    #[test]
    fn healthz_says_200_or_503_and_why() {
        let never = || -> Vec<u8> { panic!("rendered for /healthz") };
        let ok = handle_request(b"GET /healthz HTTP/1.1\r\n\r\n", never, health(true));
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"ok: why\n"[..]));
        let bad = handle_request(b"GET /healthz HTTP/1.0\r\n\r\n", never, health(false));
        assert_eq!((bad.status, bad.body.as_slice()), (503, &b"unhealthy: why\n"[..]));
        assert!(String::from_utf8(bad.to_bytes()).unwrap().starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        let head = handle_request(b"HEAD /healthz HTTP/1.1\r\n\r\n", never, health(true));
        assert!(head.head_only && head.status == 200);
        assert_eq!(handle_request(b"POST /healthz HTTP/1.1\r\n\r\n", never, no_health).status, 405);
    }
}
