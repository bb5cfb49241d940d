//! One worker's authenticator: its own copy of the symmetric keys and of the NTS master keys, and
//! its own random source for NTS nonces, so nothing on the request path is shared between cores.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use stratum_proto::auth::{Authenticate, KeyRef, KeyTable, MacCheck};
use stratum_proto::nts::server::{check_request, write_reply, FreshCookies, NtsCheck, Verified};

use stratum_proto::nts::KeySet;

use super::SharedKeys;
use crate::config::Config;
use crate::dataplane::stats::{incr, WorkerCounters};

/// Indices into [`WorkerCounters::auth`] (`AUTH_KINDS`' order).
const MAC: usize = 0;
const CRYPTO_NAK: usize = 1;
const NTS: usize = 2;
const NTS_NAK: usize = 3;

/// A worker's view of the NTS master keys: its own `Arc` of the set, refreshed when the shared
/// generation moves (a rotation), one atomic load per NTS request otherwise.
#[derive(Debug, Clone)]
struct NtsKeys {
    shared: Arc<SharedKeys>,
    set: Arc<KeySet>,
    generation: u64,
}

impl NtsKeys {
    fn refreshed(&mut self) -> &KeySet {
        let now = self.shared.generation();
        if now != self.generation {
            self.set = self.shared.current();
            self.generation = now;
        }
        &self.set
    }
}

/// What [`stratum_proto::respond`] authenticates with on one worker.
#[derive(Debug)]
pub struct WorkerAuth {
    keys: KeyTable,
    nts: Option<NtsKeys>,
    /// NTS nonces (the reply's and each cookie's): a CSPRNG seeded from the OS per worker.
    rng: StdRng,
    /// The fresh cookies of the NTS request being answered, sealed while it is checked.
    fresh: FreshCookies,
    /// The worker's counters the authenticated answers are counted in (its only writer).
    counters: Option<Arc<WorkerCounters>>,
}

impl Default for WorkerAuth {
    fn default() -> Self {
        Self {
            keys: KeyTable::default(),
            nts: None,
            rng: StdRng::from_entropy(),
            fresh: FreshCookies::default(),
            counters: None,
        }
    }
}

impl Clone for WorkerAuth {
    /// The keys are copied; the random source is not: each copy seeds its own, so no two workers
    /// ever draw the same nonces. Nor the counters (each has one writer): see
    /// [`WorkerAuth::counting_into`].
    fn clone(&self) -> Self {
        Self { keys: self.keys.clone(), nts: self.nts.clone(), ..Self::default() }
    }
}

impl WorkerAuth {
    /// `[auth] keys` as configured, and the NTS master keys in use (`[nts] master-keys`).
    pub fn new(config: &Config, nts: Option<&Arc<SharedKeys>>) -> Self {
        let nts = nts.map(|shared| NtsKeys {
            shared: shared.clone(),
            set: shared.current(),
            generation: shared.generation(),
        });
        Self { keys: config.auth.table(), nts, ..Self::default() }
    }

    /// This worker's copy, counting its authenticated answers (MAC-signed replies, crypto-NAKs,
    /// NTS replies and NAKs) in the worker's own counters.
    pub fn counting_into(mut self, counters: Arc<WorkerCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    fn count(&self, kind: usize) {
        if let Some(c) = &self.counters {
            incr(&c.auth[kind]);
        }
    }

    fn nonce(&mut self) -> [u8; 16] {
        random_nonce(&mut self.rng)
    }
}

impl Authenticate for WorkerAuth {
    fn check(&mut self, signed: &[u8], key_id: u32, digest: &[u8]) -> MacCheck {
        // respond() asks only after admission, and answers Invalid with a crypto-NAK.
        let check = self.keys.check(signed, key_id, digest);
        if matches!(check, MacCheck::Invalid) {
            self.count(CRYPTO_NAK);
        }
        check
    }

    fn sign(&mut self, key: KeyRef, buf: &mut [u8], len: usize) -> Option<usize> {
        let signed = self.keys.sign(key, buf, len);
        if signed.is_some() {
            self.count(MAC);
        }
        signed
    }

    fn check_nts(&mut self, packet: &mut [u8]) -> NtsCheck {
        let Self { nts, rng, fresh, .. } = self;
        let check = match nts {
            Some(keys) => check_request(packet, keys.refreshed(), fresh, || random_nonce(rng)),
            None => NtsCheck::NotNts,
        };
        // A NAK is what respond() sends for it (after admission, as for any request).
        if matches!(check, NtsCheck::Nak { .. }) {
            self.count(NTS_NAK);
        }
        check
    }

    fn sign_nts(&mut self, buf: &mut [u8], request_len: usize, verified: &Verified) -> Option<usize> {
        let nonce = self.nonce();
        self.nts.as_ref()?;
        let reply = write_reply(buf, request_len, verified, &self.fresh, &nonce);
        if reply.is_some() {
            self.count(NTS);
        }
        reply
    }
}

/// 16 fresh bytes from the worker's CSPRNG: an NTS nonce (the reply's, or a cookie's).
fn random_nonce(rng: &mut StdRng) -> [u8; 16] {
    let mut n = [0u8; 16];
    rng.fill_bytes(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_draw_different_nonces() {
        let mut a = WorkerAuth::default();
        let mut b = a.clone();
        assert_ne!(a.nonce(), b.nonce());
    }

    #[test]
    fn without_nts_nothing_is_nts() {
        let mut a = WorkerAuth::default();
        assert!(matches!(a.check_nts(&mut [0u8; 200]), NtsCheck::NotNts));
    }
}
