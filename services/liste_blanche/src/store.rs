//! The local copy (EX_2.2_5030, EX_2.2_5035): the downloaded bytes, unaltered, written only after
//! verification (temporary file, fsync, rename, directory fsync); the previous copy kept beside
//! it; the signature checked again at every load (RE_2.2_5010).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustls_pki_types::UnixTime;
use serde::{Deserialize, Serialize};

use crate::error::ListeBlancheError;
use crate::verify::{SignerPolicy, VerifiedList, verify};

const CURRENT: &str = "current.xml";
const PREVIOUS: &str = "previous.xml";
const META: &str = "current.json";

/// What is recorded about the copy in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Unix seconds of the download.
    pub fetched_at: u64,
    /// Unix seconds of the last successful verification.
    pub verified_at: u64,
    pub domain_count: usize,
    pub signer: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// The `liste_blanche/` directory.
#[derive(Clone, Debug)]
pub struct LocalCopy {
    dir: PathBuf,
}

impl LocalCopy {
    /// `<data_dir>/liste_blanche`, created if needed.
    pub fn open(data_dir: &Path) -> Result<Self, ListeBlancheError> {
        let dir = data_dir.join("liste_blanche");
        std::fs::create_dir_all(&dir).map_err(|e| ListeBlancheError::io(&dir, &e))?;
        Ok(LocalCopy { dir })
    }

    /// Path of the list in use.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Load and verify the copy in use; when it is missing or no longer verifies (tampered on
    /// disk, signer revoked), the previous copy. `None` when neither verifies.
    pub fn load(
        &self,
        policy: &SignerPolicy<'_>,
        now: UnixTime,
    ) -> Result<Option<(VerifiedList, Metadata)>, ListeBlancheError> {
        let meta = self.read_meta();
        for name in [CURRENT, PREVIOUS] {
            let path = self.dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ListeBlancheError::io(&path, &e)),
            };
            match verify(&bytes, policy, now) {
                Ok(list) => {
                    let fetched_at = meta
                        .as_ref()
                        .filter(|m| m.sha256 == hex(&list.sha256))
                        .map_or(now.as_secs(), |m| m.fetched_at);
                    let meta = metadata(&list, fetched_at, now);
                    return Ok(Some((list, meta)));
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, requirement = "RE_2.2_5010", "local liste blanche refused");
                }
            }
        }
        Ok(None)
    }

    /// Verify the copy in use again (RE_2.2_5010), without falling back to the previous one.
    pub fn recheck(
        &self,
        policy: &SignerPolicy<'_>,
        now: UnixTime,
    ) -> Result<VerifiedList, ListeBlancheError> {
        let path = self.current_path();
        let bytes = std::fs::read(&path).map_err(|e| ListeBlancheError::io(&path, &e))?;
        verify(&bytes, policy, now)
    }

    /// Verify `bytes` and, only when they verify, make them the copy in use (the old one becomes
    /// the previous copy). Returns the verified list; on refusal nothing on disk changes.
    pub fn install(
        &self,
        bytes: &[u8],
        fetched_at: u64,
        policy: &SignerPolicy<'_>,
        now: UnixTime,
    ) -> Result<(VerifiedList, Metadata), ListeBlancheError> {
        let list = verify(bytes, policy, now)?;
        let meta = metadata(&list, fetched_at, now);
        let tmp = self.dir.join("current.xml.tmp");
        write_synced(&tmp, bytes)?;
        let current = self.dir.join(CURRENT);
        if current.exists() {
            let previous = self.dir.join(PREVIOUS);
            std::fs::rename(&current, &previous)
                .map_err(|e| ListeBlancheError::io(&previous, &e))?;
        }
        std::fs::rename(&tmp, &current).map_err(|e| ListeBlancheError::io(&current, &e))?;
        let meta_tmp = self.dir.join("current.json.tmp");
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| ListeBlancheError::Config(e.to_string()))?;
        write_synced(&meta_tmp, &json)?;
        let meta_path = self.dir.join(META);
        std::fs::rename(&meta_tmp, &meta_path)
            .map_err(|e| ListeBlancheError::io(&meta_path, &e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ListeBlancheError::io(&self.dir, &e))?;
        Ok((list, meta))
    }

    fn read_meta(&self) -> Option<Metadata> {
        let bytes = std::fs::read(self.dir.join(META)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn metadata(list: &VerifiedList, fetched_at: u64, now: UnixTime) -> Metadata {
    Metadata {
        fetched_at,
        verified_at: now.as_secs(),
        domain_count: list.liste.domain_count(),
        signer: list.signer.to_string(),
        sha256: hex(&list.sha256),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ListeBlancheError> {
    let mut f = std::fs::File::create(path).map_err(|e| ListeBlancheError::io(path, &e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ListeBlancheError::io(path, &e))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
