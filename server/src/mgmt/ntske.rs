//! The NTS-KE server (RFC 8915 section 4): TLS 1.3 only (rustls with the ring provider), ALPN
//! `ntske/1`, on its own threads, never a worker's. Each connection: the handshake, the client's
//! records (proto::nts::ke: the AEAD is the first of the client's list in `[nts] aeads`, as
//! chrony's server picks it), the two keys from the TLS exporter (the AEAD's key length, the
//! exporter context as chrony sets it for AES-128-GCM-SIV), eight cookies sealed with the master
//! keys the data plane opens them with, the response, close_notify.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at once (more are closed at accept, counted), each with
//! a deadline for the whole exchange and per read/write timeouts, so half-open or slow clients
//! (BAD_INPUTS 53, 56) hold a slot for seconds at most and never touch the data plane; and at
//! most [`PER_IP_BURST`] new connections from one address per [`PER_IP_WINDOW`].
//!
//! SIGHUP re-reads the certificate and key (a renewed certificate) for the next connection; a
//! pair that does not load is logged and the one in use kept. The data plane never notices.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngCore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use stratum_proto::nts::ke::{self, KeRequest};
use stratum_proto::nts::{ClientKeys, KeySet, COOKIE_LEN};

use crate::auth::{NtsConfig, SharedKeys};

/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// The whole exchange, handshake included.
const DEADLINE: Duration = Duration::from_secs(5);
/// One read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Cookies per response (what chrony and ntpd-rs give).
const COOKIES: usize = 8;
/// New connections one address may open per window (a client needs one per restart).
pub const PER_IP_BURST: u32 = 20;
pub const PER_IP_WINDOW: Duration = Duration::from_secs(10);
/// Addresses the limiter remembers at most (it forgets them all when full: an attacker with more
/// addresses than this gets no more than the connection cap anyway).
const PER_IP_TABLE: usize = 65_536;
const ALPN: &[u8] = b"ntske/1";

/// What the KE server counts.
#[derive(Debug, Default)]
pub struct KeCounters {
    pub served: AtomicU64,
    pub errors: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_rate: AtomicU64,
    pub reloads: AtomicU64,
    pub failed: AtomicU64,
}

/// The running KE server.
#[derive(Debug)]
pub struct NtsKe {
    pub address: SocketAddr,
    pub counters: Arc<KeCounters>,
    thread: JoinHandle<()>,
}

impl NtsKe {
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// The TLS configuration: TLS 1.3 only, ALPN ntske/1, the certificate chain and key from PEM.
pub fn tls_config(certificate: &std::path::Path, private_key: &std::path::Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate chain {}", certificate.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", certificate.display());
    let key = PrivateKeyDer::from_pem_file(private_key)
        .with_context(|| format!("cannot read the private key {}", private_key.display()))?;
    // ring, not aws-lc-rs (which needs cmake to build); rustls marks it deprecated only for its
    // lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and private key do not go together")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Starts the KE server when `[nts] listen` is set; `ntp_port` goes into the response when the
/// data plane is not on 123.
pub fn start(
    config: &NtsConfig,
    master: Option<Arc<SharedKeys>>,
    ntp_port: Option<u16>,
    counters: Arc<KeCounters>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<Option<NtsKe>> {
    let (Some(listen), Some(cert), Some(key), Some(master)) =
        (config.listen, &config.certificate, &config.private_key, master)
    else {
        return Ok(None);
    };
    let tls = tls_config(cert, key)?;
    let listener = TcpListener::bind(listen).with_context(|| format!("NTS-KE: cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let port = ntp_port.filter(|p| *p != 123);
    let aeads: Arc<[u16]> = config.aeads.clone().into();
    let c = counters.clone();
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
    let files = (cert.clone(), key.clone(), reload);
    let thread = std::thread::Builder::new()
        .name("stratumd-ntske".into())
        .spawn(move || accept_loop(listener, tls, files, master, (port, aeads), c, shutdown))?;
    tracing::info!(%address, "NTS-KE listening (TLS 1.3, ALPN ntske/1)");
    Ok(Some(NtsKe { address, counters, thread }))
}

/// Certificate, key, and the SIGHUP flag that asks to read them again.
type TlsFiles = (std::path::PathBuf, std::path::PathBuf, Arc<AtomicBool>);

fn accept_loop(
    listener: TcpListener,
    mut tls: Arc<ServerConfig>,
    (cert, key, reload): TlsFiles,
    master: Arc<SharedKeys>,
    (port, aeads): (Option<u16>, Arc<[u16]>),
    counters: Arc<KeCounters>,
    shutdown: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut limiter = PerIpLimiter::default();
    while !shutdown.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            match tls_config(&cert, &key) {
                Ok(fresh) => {
                    tls = fresh;
                    counters.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(certificate = %cert.display(), "NTS-KE: certificate and key re-read (SIGHUP)");
                }
                Err(e) => tracing::error!("NTS-KE: SIGHUP: {e:#}; keeping the certificate in use"),
            }
        }
        let stream = match listener.accept() {
            Ok((stream, peer)) => {
                if !limiter.allow(peer.ip(), Instant::now()) {
                    counters.refused_rate.fetch_add(1, Ordering::Relaxed);
                    continue; // dropped: closed
                }
                stream
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            counters.refused_full.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed
        }
        let (tls, master, counters, slot) = (tls.clone(), master.clone(), counters.clone(), active.clone());
        let aeads = aeads.clone();
        let spawned = std::thread::Builder::new().name("stratumd-ntske-c".into()).spawn(move || {
            match serve(stream, tls, &master.current(), port, &aeads) {
                Ok(true) => counters.served.fetch_add(1, Ordering::Relaxed),
                Ok(false) => counters.errors.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.failed.fetch_add(1, Ordering::Relaxed),
            };
            slot.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One connection. Ok(true): cookies given; Ok(false): an error record, or the empty records of nothing in common, sent.
fn serve(
    stream: TcpStream,
    tls: Arc<ServerConfig>,
    master: &KeySet,
    port: Option<u16>,
    aeads: &[u16],
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + DEADLINE;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut tls = StreamOwned::new(ServerConnection::new(tls)?, stream);
    let mut request = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    let negotiated = loop {
        anyhow::ensure!(Instant::now() < deadline, "deadline");
        let n = tls.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "closed before End of Message");
        request.extend_from_slice(&chunk[..n]);
        match ke::parse_request_with(&request, aeads) {
            KeRequest::Incomplete => continue,
            KeRequest::Ntpv4(negotiated) => break negotiated,
            // Nothing in common, or a bad request: no cookies (counted as `error`).
            KeRequest::Declined { ntpv4 } => {
                tls.write_all(&ke::write_declined(ntpv4))?;
                tls.conn.send_close_notify();
                tls.flush()?;
                return Ok(false);
            }
            KeRequest::Error(code) => {
                tls.write_all(&ke::write_error(code))?;
                tls.conn.send_close_notify();
                tls.flush()?;
                return Ok(false);
            }
        }
    };
    anyhow::ensure!(tls.conn.alpn_protocol() == Some(ALPN), "no ntske/1 ALPN");
    let mut keys = ClientKeys { algorithm: negotiated.aead, c2s: [0; 32], s2c: [0; 32] };
    let len = keys.key_len().context("an AEAD without a key length")?;
    let context = |s2c| ke::exporter_context(negotiated.exporter_aead(), s2c);
    tls.conn.export_keying_material(&mut keys.c2s[..len], ke::EXPORTER_LABEL, Some(&context(false)))?;
    tls.conn.export_keying_material(&mut keys.s2c[..len], ke::EXPORTER_LABEL, Some(&context(true)))?;
    let mut rng = rand::thread_rng();
    let mut cookies = [[0u8; COOKIE_LEN]; COOKIES];
    for cookie in &mut cookies {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        anyhow::ensure!(master.seal(&keys, &nonce, cookie), "cannot seal a cookie");
    }
    let refs: Vec<&[u8]> = cookies.iter().map(|c| &c[..]).collect();
    tls.write_all(&ke::write_negotiated(negotiated, &refs, port))?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(true)
}

/// At most [`PER_IP_BURST`] new connections per address per [`PER_IP_WINDOW`] (fixed windows).
#[derive(Debug, Default)]
struct PerIpLimiter {
    seen: std::collections::HashMap<std::net::IpAddr, (Instant, u32)>,
}

impl PerIpLimiter {
    fn allow(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        if self.seen.len() >= PER_IP_TABLE && !self.seen.contains_key(&ip) {
            self.seen.retain(|_, (start, _)| now.duration_since(*start) < PER_IP_WINDOW);
            if self.seen.len() >= PER_IP_TABLE {
                self.seen.clear();
            }
        }
        let entry = self.seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= PER_IP_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= PER_IP_BURST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_burst_per_window_others_theirs() {
        let mut l = PerIpLimiter::default();
        let t0 = Instant::now();
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..PER_IP_BURST {
            assert!(l.allow(a, t0), "connection {i}");
        }
        assert!(!l.allow(a, t0), "over the burst");
        assert!(l.allow(b, t0), "another address is not affected");
        assert!(l.allow(a, t0 + PER_IP_WINDOW), "the next window");
    }
}
