//! Seeded key generation with an on-disk cache.
//!
//! RSA-2048 generation costs 0.1–1 s even optimised, and every test process
//! regenerates the whole PKI, so keys are cached by (seed, label, algorithm).
//! The cache only saves time: a key is a pure function of its cache key.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};
use rsa::pkcs8::EncodePrivateKey;
use rustls_pki_types::PrivatePkcs8KeyDer;
use sha2::{Digest, Sha256};

use crate::{TestPkiError, der};

/// Bumped whenever the derivation below changes, so stale cache files are
/// never picked up.
const CACHE_FORMAT: &str = "v1";

/// Key algorithm of a generated key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSA with the given modulus size; all MSSanté suites are `*_RSA_*`
    /// and SESAM-Vitale mandates RSA-2048.
    Rsa(usize),
    /// ECDSA P-256 (the appliance's own web admin certificate).
    P256,
}

impl KeyAlg {
    fn tag(self) -> String {
        match self {
            KeyAlg::Rsa(bits) => format!("rsa{bits}"),
            KeyAlg::P256 => "p256".to_owned(),
        }
    }
}

/// Where generated keys are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyCache {
    /// `std::env::temp_dir()/passerelle-testpki-keys/`.
    #[default]
    TempDir,
    /// A directory of the caller's choosing (for example a fresh temp dir to
    /// measure a cold generation).
    Dir(PathBuf),
    /// Always generate.
    Disabled,
}

impl KeyCache {
    fn dir(&self) -> Option<PathBuf> {
        match self {
            KeyCache::TempDir => Some(std::env::temp_dir().join("passerelle-testpki-keys")),
            KeyCache::Dir(d) => Some(d.clone()),
            KeyCache::Disabled => None,
        }
    }
}

/// A private key, kept as PKCS#8 DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestKey {
    alg: KeyAlg,
    pkcs8: Vec<u8>,
}

impl TestKey {
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// PKCS#8 `PrivateKeyInfo` DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// PKCS#1 `RSAPrivateKey` DER (what a virtual CPS card stores); `None`
    /// for EC keys.
    pub fn pkcs1_der(&self) -> Option<Vec<u8>> {
        if !matches!(self.alg, KeyAlg::Rsa(_)) {
            return None;
        }
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING }
        // and for rsaEncryption the octets are the RSAPrivateKey.
        let fields = der::sequence_elements(&self.pkcs8).ok()?;
        Some(der::read_tlv(fields.get(2)?).ok()?.content.to_vec())
    }

    pub(crate) fn key_pair(&self) -> Result<KeyPair, TestPkiError> {
        let alg = match self.alg {
            KeyAlg::Rsa(_) => &PKCS_RSA_SHA256,
            KeyAlg::P256 => &PKCS_ECDSA_P256_SHA256,
        };
        Ok(KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.pkcs8.as_slice()),
            alg,
        )?)
    }
}

/// Returns the key for (seed, label, alg), from the cache when possible.
pub(crate) fn key_for(
    cache: &KeyCache,
    seed: u64,
    label: &str,
    alg: KeyAlg,
) -> Result<TestKey, TestPkiError> {
    let Some(dir) = cache.dir() else {
        return generate(seed, label, alg);
    };
    let safe_label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // The digest keeps distinct labels that sanitise alike apart.
    let digest = &hex(&derivation_seed(seed, label, alg))[..12];
    let path = dir.join(format!(
        "{CACHE_FORMAT}-{}-{seed:016x}-{safe_label}-{digest}.p8",
        alg.tag()
    ));
    if let Some(key) = read_cached(&path, alg) {
        return Ok(key);
    }
    fs::create_dir_all(&dir).map_err(|e| TestPkiError::io(&dir, e))?;
    // Serialise generation across test processes so a cold suite pays once.
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).map_err(|e| TestPkiError::io(&lock_path, e))?;
    lock.lock().map_err(|e| TestPkiError::io(&lock_path, e))?;
    if let Some(key) = read_cached(&path, alg) {
        return Ok(key);
    }
    let key = generate(seed, label, alg)?;
    write_atomically(&path, &key.pkcs8)?;
    Ok(key)
}

fn read_cached(path: &Path, alg: KeyAlg) -> Option<TestKey> {
    let pkcs8 = fs::read(path).ok()?;
    let key = TestKey { alg, pkcs8 };
    // A truncated or foreign file is regenerated rather than trusted.
    key.key_pair().ok().map(|_| key)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TestPkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| TestPkiError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| TestPkiError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TestPkiError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TestPkiError::io(path, e))
}

fn derivation_seed(seed: u64, label: &str, alg: KeyAlg) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"passerelle-testpki key ");
    h.update(CACHE_FORMAT.as_bytes());
    h.update(seed.to_be_bytes());
    h.update(alg.tag().as_bytes());
    h.update([0]);
    h.update(label.as_bytes());
    h.finalize().into()
}

fn generate(seed: u64, label: &str, alg: KeyAlg) -> Result<TestKey, TestPkiError> {
    let mut rng = ChaCha20Rng::from_seed(derivation_seed(seed, label, alg));
    let pkcs8 = match alg {
        KeyAlg::Rsa(bits) => rsa::RsaPrivateKey::new(&mut rng, bits)?
            .to_pkcs8_der()
            .map_err(|e| TestPkiError::KeyEncoding(e.to_string()))?
            .as_bytes()
            .to_vec(),
        KeyAlg::P256 => p256::SecretKey::random(&mut rng)
            .to_pkcs8_der()
            .map_err(|e| TestPkiError::KeyEncoding(e.to_string()))?
            .as_bytes()
            .to_vec(),
    };
    Ok(TestKey { alg, pkcs8 })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1::DecodeRsaPrivateKey;

    use super::*;

    #[test]
    fn cached_key_equals_fresh_derivation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = KeyCache::Dir(dir.path().to_owned());
        let first = key_for(&cache, 7, "unit/p256", KeyAlg::P256).expect("gen");
        let again = key_for(&cache, 7, "unit/p256", KeyAlg::P256).expect("cached");
        let fresh = key_for(&KeyCache::Disabled, 7, "unit/p256", KeyAlg::P256).expect("fresh");
        assert_eq!(first, again);
        assert_eq!(first, fresh);
        let other = key_for(&KeyCache::Disabled, 8, "unit/p256", KeyAlg::P256).expect("other");
        assert_ne!(first, other);
    }

    #[test]
    fn rsa_key_is_seeded_and_exposes_pkcs1() {
        let a = key_for(&KeyCache::Disabled, 1, "unit/rsa", KeyAlg::Rsa(2048)).expect("gen");
        let b = key_for(&KeyCache::Disabled, 1, "unit/rsa", KeyAlg::Rsa(2048)).expect("gen");
        assert_eq!(a, b);
        let pkcs1 = a.pkcs1_der().expect("rsa key has a PKCS#1 form");
        let parsed = rsa::RsaPrivateKey::from_pkcs1_der(&pkcs1).expect("valid PKCS#1");
        assert_eq!(rsa::traits::PublicKeyParts::size(&parsed), 256);
    }
}
