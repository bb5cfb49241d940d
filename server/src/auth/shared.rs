//! The NTS master keys while stratumd runs: one set shared by the workers and the NTS-KE server,
//! rotated every `[nts] key-rotation` and written back to the key file (so a restart keeps every
//! cookie working, BAD_INPUTS 49), and re-read when someone else changes the file (a fleet whose
//! members are given the same file by whoever rotates it).
//!
//! Workers never take the lock on the request path: each keeps its own `Arc` of the set and
//! compares one atomic generation number per NTS request; only after a rotation (once a day) does
//! it take the read lock once to pick up the new set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use stratum_proto::nts::{KeySet, MASTER_KEY_LEN};

use super::{MasterKeys, KEEP_MASTER_KEYS};

/// How often the rotation thread looks at the clock and the file.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The master keys in use and where they are kept.
#[derive(Debug)]
pub struct SharedKeys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    generation: AtomicU64,
    rotation: Option<Duration>,
}

/// A fresh random master key.
pub fn random_key() -> [u8; MASTER_KEY_LEN] {
    let mut key = [0u8; MASTER_KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

impl SharedKeys {
    /// The configured keys; a key file that did not exist yet is written now (mode 0600).
    pub fn start(keys: &MasterKeys, rotation: Option<Duration>) -> std::io::Result<Arc<Self>> {
        if keys.created {
            write_atomically(&keys.path, &keys.set.to_text())?;
            tracing::info!(path = %keys.path.display(), "NTS master key file created");
        }
        Ok(Arc::new(Self {
            path: keys.path.clone(),
            current: RwLock::new(Arc::new(keys.set.clone())),
            generation: AtomicU64::new(0),
            rotation,
        }))
    }

    /// The set to seal and open cookies with now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Bumped on every change of the set: a worker compares it with the one it last saw.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn publish(&self, set: KeySet) {
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(set),
            Err(e) => *e.into_inner() = Arc::new(set),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Rotates now: a fresh key becomes current, the oldest beyond the few kept is dropped, and
    /// the file is rewritten before anyone seals with the new key.
    pub fn rotate(&self) -> std::io::Result<()> {
        let mut set = (*self.current()).clone();
        set.rotate(random_key());
        write_atomically(&self.path, &set.to_text())?;
        tracing::info!(id = set.current().id, kept = set.len(), "NTS master key rotated");
        self.publish(set);
        Ok(())
    }

    /// Re-reads the file if it no longer holds what we use (another server rotated it).
    fn reload_if_changed(&self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return };
        match KeySet::from_text(&text, KEEP_MASTER_KEYS) {
            Ok(set) if set != *self.current() => {
                tracing::info!(id = set.current().id, path = %self.path.display(), "NTS master keys re-read: the file changed");
                self.publish(set);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "NTS master key file unreadable, keeping the keys in use: {e}")
            }
        }
    }

    /// The thread that rotates on time and notices changes to the file.
    pub fn spawn(self: &Arc<Self>, shutdown: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        let keys = self.clone();
        std::thread::Builder::new().name("stratumd-ntskeys".into()).spawn(move || {
            let mut seen = modified(&keys.path);
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(CHECK_EVERY);
                let now = modified(&keys.path);
                if now != seen {
                    keys.reload_if_changed();
                    seen = now;
                }
                let due = match (keys.rotation, seen) {
                    (Some(every), Some(written)) => SystemTime::now().duration_since(written).is_ok_and(|age| age >= every),
                    _ => false,
                };
                if due {
                    if let Err(e) = keys.rotate() {
                        tracing::error!(path = %keys.path.display(), "cannot write the NTS master key file; not rotated: {e}");
                    }
                    seen = modified(&keys.path);
                }
            }
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Writes `text` to `path` through a temporary file in the same directory (mode 0600) and a
/// rename, so that a reader (or a crash) never sees half a key file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::nts::MasterKey;

    fn keys(dir: &Path, created: bool) -> MasterKeys {
        let set = KeySet::new(MasterKey { id: 5, key: [1; 32] }, KEEP_MASTER_KEYS);
        MasterKeys { path: dir.join("nts.keys"), set, created }
    }

    #[test]
    fn a_new_file_is_written_private_and_rotation_rewrites_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedKeys::start(&keys(dir.path(), true), None).unwrap();
        let path = dir.path().join("nts.keys");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(KeySet::from_text(&std::fs::read_to_string(&path).unwrap(), 3).unwrap(), *shared.current());
        let g = shared.generation();
        shared.rotate().unwrap();
        assert_eq!(shared.generation(), g + 1);
        let on_disk = KeySet::from_text(&std::fs::read_to_string(&path).unwrap(), 3).unwrap();
        assert_eq!(on_disk, *shared.current());
        assert_eq!((on_disk.current().id, on_disk.len()), (6, 2));
    }

    #[test]
    fn a_changed_file_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedKeys::start(&keys(dir.path(), true), None).unwrap();
        let other = KeySet::new(MasterKey { id: 40, key: [2; 32] }, 3);
        write_atomically(&dir.path().join("nts.keys"), &other.to_text()).unwrap();
        shared.reload_if_changed();
        assert_eq!(shared.current().current().id, 40);
        std::fs::write(dir.path().join("nts.keys"), "garbage\n").unwrap();
        shared.reload_if_changed();
        assert_eq!(shared.current().current().id, 40, "a bad file leaves the keys in use");
    }
}
