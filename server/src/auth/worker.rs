//! One worker's authenticator: its own copy of the symmetric keys and of the NTS master keys, and
//! its own random source for NTS nonces, so nothing on the request path is shared between cores.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use stratum_proto::auth::{Authenticate, KeyRef, KeyTable, MacCheck};
use stratum_proto::nts::server::{check_request, write_reply, NtsCheck, Verified};

use stratum_proto::nts::KeySet;

use super::SharedKeys;
use crate::config::Config;

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
}

impl Default for WorkerAuth {
    fn default() -> Self {
        Self { keys: KeyTable::default(), nts: None, rng: StdRng::from_entropy() }
    }
}

impl Clone for WorkerAuth {
    /// The keys are copied; the random source is not: each copy seeds its own, so no two workers
    /// ever draw the same nonces.
    fn clone(&self) -> Self {
        Self { keys: self.keys.clone(), nts: self.nts.clone(), rng: StdRng::from_entropy() }
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

    fn nonce(&mut self) -> [u8; 16] {
        let mut n = [0u8; 16];
        self.rng.fill_bytes(&mut n);
        n
    }
}

impl Authenticate for WorkerAuth {
    fn check(&mut self, signed: &[u8], key_id: u32, digest: &[u8]) -> MacCheck {
        self.keys.check(signed, key_id, digest)
    }

    fn sign(&mut self, key: KeyRef, buf: &mut [u8], len: usize) -> Option<usize> {
        self.keys.sign(key, buf, len)
    }

    fn check_nts(&mut self, packet: &mut [u8]) -> NtsCheck {
        match &mut self.nts {
            Some(keys) => check_request(packet, keys.refreshed()),
            None => NtsCheck::NotNts,
        }
    }

    fn sign_nts(&mut self, buf: &mut [u8], request_len: usize, verified: &Verified) -> Option<usize> {
        let nonce = self.nonce();
        let Self { nts, rng, .. } = self;
        let fresh = || {
            let mut n = [0u8; 16];
            rng.fill_bytes(&mut n);
            n
        };
        write_reply(buf, request_len, verified, &nts.as_ref()?.set, &nonce, fresh)
    }
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
