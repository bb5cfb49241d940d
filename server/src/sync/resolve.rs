//! Host names to addresses, off the sync thread: getaddrinfo can block for seconds, and the sync
//! thread must keep polling the sources it has. One thread takes names from a channel and sends
//! back what they resolved to; it ends when the sync thread drops its side.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};

use crate::config::sync::HostPort;

/// What a name resolved to: the upstream or pool it was asked for, and its addresses.
#[derive(Debug)]
pub struct Resolved {
    pub key: usize,
    pub addresses: io::Result<Vec<SocketAddr>>,
}

/// The sync thread's end of the resolver.
#[derive(Debug)]
pub struct Resolver {
    requests: Sender<(usize, HostPort)>,
    pub results: Receiver<Resolved>,
}

impl Resolver {
    pub fn start() -> io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<(usize, HostPort)>();
        let (outbox, results) = mpsc::channel();
        // Not joined: a getaddrinfo in progress at shutdown finishes on its own, and the thread
        // then sees the closed channel and ends.
        std::thread::Builder::new().name("stratumd-resolve".into()).spawn(move || {
            // Started from a thread that may hold CAP_SYS_TIME (discipline = "system" as a
            // configured user): names need none.
            if crate::privileges::effective_capabilities().is_ok_and(|c| c != 0) {
                let _ = crate::privileges::drop_thread_capabilities();
            }
            for (key, name) in inbox {
                let addresses = (name.host.as_str(), name.port).to_socket_addrs().map(|a| dedup(a.collect()));
                if outbox.send(Resolved { key, addresses }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { requests, results })
    }

    /// Asks for `name`; the answer comes back on [`Self::results`] with `key`.
    pub fn ask(&self, key: usize, name: &HostPort) {
        let _ = self.requests.send((key, name.clone()));
    }
}

/// Each address once, in the order given (getaddrinfo lists one per socket type).
fn dedup(addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = Vec::with_capacity(addresses.len());
    for a in addresses {
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn literals_and_localhost_resolve_and_nonsense_does_not() {
        let r = Resolver::start().unwrap();
        r.ask(1, &HostPort { host: "192.0.2.7".into(), port: 4123 });
        r.ask(2, &HostPort { host: "localhost".into(), port: 123 });
        r.ask(3, &HostPort { host: "no-such-host.invalid".into(), port: 123 });
        let mut got: Vec<Resolved> = (0..3).map(|_| r.results.recv_timeout(Duration::from_secs(20)).unwrap()).collect();
        got.sort_by_key(|g| g.key);
        assert_eq!(got[0].addresses.as_ref().unwrap(), &["192.0.2.7:4123".parse::<SocketAddr>().unwrap()]);
        assert!(got[1].addresses.as_ref().unwrap().iter().all(|a| a.ip().is_loopback() && a.port() == 123));
        assert!(got[2].addresses.is_err());
    }
}
