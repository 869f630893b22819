//! The refresh-token store: one JSON file, each refresh token sealed with AES-256-GCM
//! (random 96-bit nonce, the BAL address as associated data) under a key derived from a
//! non-extractable RSA key of the PKCS#11 token.
//!
//! Why a derived key: the keystore offers signing only (no decrypt/unwrap API), and an
//! RSASSA-PKCS1-v1_5 signature is deterministic, so signing a fixed context string with
//! the token key and running HKDF-SHA256 over the signature gives the same AES key at
//! every start while the key material stays a function of a secret that never leaves
//! the token. A copied store file is useless without the token (OA-09, EX_SSI_5100).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use passerelle_keystore::{KeyRef, Keystore, TokenSigningKey};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls::SignatureScheme;
use rustls::sign::SigningKey as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::PscError;

/// Signed by the token key to derive the store key; changing it orphans every store.
const KEY_CONTEXT: &[u8] = b"passerelle psc refresh-token store key v1";
const HKDF_SALT: &[u8] = b"passerelle-psc-store";
/// Store files beyond this are refused rather than parsed (a practice has a few BALs).
const MAX_STORE_BYTES: u64 = 4 * 1024 * 1024;

/// The AES-256-GCM key of the store.
pub(crate) struct StoreKey(LessSafeKey);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

struct Okm32;
impl ring::hkdf::KeyType for Okm32 {
    fn len(&self) -> usize {
        32
    }
}

impl StoreKey {
    /// Derives the key from the RSA key `label` of the token (see the module docs).
    pub(crate) async fn derive(keystore: &Keystore, label: &str) -> Result<Self, PscError> {
        let err = |why: String| PscError::StoreKey {
            label: label.to_owned(),
            why,
        };
        let key = keystore
            .key(&KeyRef::from(label))
            .await
            .map_err(|e| err(e.to_string()))?;
        if !key.algorithm().is_rsa() {
            return Err(err(
                "not an RSA key: ECDSA signatures are randomised and cannot derive a stable key"
                    .into(),
            ));
        }
        // rustls' Signer waits for the token thread synchronously: keep it off the runtime.
        let signature = tokio::task::spawn_blocking(move || {
            let signer = TokenSigningKey::new(key)
                .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
                .ok_or_else(|| "the token key offers no RSA PKCS#1 SHA-256".to_owned())?;
            signer
                .sign(KEY_CONTEXT)
                .map(Zeroizing::new)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| err(format!("signing task: {e}")))?
        .map_err(err)?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT)
            .extract(&signature)
            .expand(&[b"aes-256-gcm"], Okm32)
            .and_then(|okm| okm.fill(&mut bytes[..]))
            .map_err(|_| err("HKDF failed".into()))?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, &bytes[..]).map_err(|_| err("AES key".into()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    pub(crate) fn seal(&self, bal: &str, secret: &str) -> Result<Sealed, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness".to_owned())?;
        let mut buf = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bal.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "AES-GCM seal failed".to_owned())?;
        Ok(Sealed {
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(buf),
        })
    }

    pub(crate) fn open(&self, bal: &str, sealed: &Sealed) -> Result<Zeroizing<String>, String> {
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| "bad nonce".to_owned())?;
        let mut buf = Zeroizing::new(
            B64.decode(&sealed.ciphertext)
                .map_err(|_| "bad ciphertext encoding".to_owned())?,
        );
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bal.as_bytes()),
                &mut buf,
            )
            .map_err(|_| {
                "does not decrypt: another token key, or the file was altered".to_owned()
            })?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| "not UTF-8".to_owned())
    }
}

/// A sealed secret as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sealed {
    nonce: String,
    ciphertext: String,
}

/// Why a BAL needs a human to log in again, kept for the web admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reauth {
    pub(crate) reason: String,
    /// Unix seconds.
    pub(crate) since: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<Sealed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reauth: Option<Reauth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    pub(crate) version: u32,
    pub(crate) bals: BTreeMap<String, Entry>,
}

impl StoreFile {
    fn err(path: &Path, why: impl Into<String>) -> PscError {
        PscError::Store {
            path: path.to_owned(),
            why: why.into(),
        }
    }

    /// Reads the store; an absent file is an empty store.
    pub(crate) fn load(path: &Path) -> Result<Self, PscError> {
        let bytes = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(e) => return Err(Self::err(path, e.to_string())),
            Ok(meta) if meta.len() > MAX_STORE_BYTES => {
                return Err(Self::err(
                    path,
                    format!("larger than {MAX_STORE_BYTES} bytes"),
                ));
            }
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                return Err(Self::err(
                    path,
                    format!(
                        "mode {:o} lets others read it; chmod 600",
                        meta.permissions().mode() & 0o777
                    ),
                ));
            }
            Ok(_) => std::fs::read(path).map_err(|e| Self::err(path, e.to_string()))?,
        };
        let file: Self =
            serde_json::from_slice(&bytes).map_err(|e| Self::err(path, e.to_string()))?;
        if file.version != 1 {
            return Err(Self::err(path, format!("unknown version {}", file.version)));
        }
        Ok(file)
    }

    fn new() -> Self {
        Self {
            version: 1,
            bals: BTreeMap::new(),
        }
    }

    /// Writes `path.tmp` (0600), fsyncs it, renames it over `path`, fsyncs the directory.
    pub(crate) fn save(&self, path: &Path) -> Result<(), PscError> {
        let io = |e: std::io::Error| Self::err(path, e.to_string());
        let json = serde_json::to_vec_pretty(self).map_err(|e| Self::err(path, e.to_string()))?;
        let tmp: PathBuf = path.with_extension("tmp");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&json).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}
