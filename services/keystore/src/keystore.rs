//! The async keystore API and token-held signing keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::object::ObjectHandle;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use sha2::Digest;

use crate::cert::{self, CertificateObject};
use crate::config::KeystoreConfig;
use crate::csr::Subject;
use crate::der;
use crate::error::{KeystoreError, Result};
use crate::keys::{KeyAlgorithm, KeyId, KeyInfo, KeyRef};
use crate::token::{self, SignMechanism, Worker};

/// How long a synchronous signer (a TLS handshake, a CSR) waits for the token
/// before failing. Local tokens answer in milliseconds (SoftHSM) to a few
/// hundred (TPM); a token that takes longer is stuck, and a handshake that
/// fails is better than a worker thread held indefinitely.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// A logged-in PKCS#11 token. Cheap to clone; every clone talks to the same
/// token thread, which stops when the last clone and the last [`TokenKey`]
/// are dropped.
///
/// One `Keystore` per module per process: PKCS#11 initialisation is
/// process-wide.
#[derive(Clone, Debug)]
pub struct Keystore {
    worker: Worker,
}

impl Keystore {
    /// Loads the module, finds the token by label, reads the PIN file and
    /// logs in once. A wrong PIN is reported (`CKR_PIN_INCORRECT`) and never
    /// retried.
    pub async fn open(config: &KeystoreConfig) -> Result<Self> {
        let worker = Worker::start(
            config.module.clone(),
            config.token_label.clone(),
            config.pin_file.clone(),
        )
        .await?;
        Ok(Self { worker })
    }

    /// Creates the token `config.token_label` in a free slot, with the SO
    /// PIN from `so_pin_file` and the user PIN from `config.pin_file`.
    /// Refuses a label that already exists.
    pub async fn init_token(config: &KeystoreConfig, so_pin_file: &Path) -> Result<()> {
        let config = config.clone();
        let so_pin_file = so_pin_file.to_owned();
        let token = config.token_label.clone();
        tokio::task::spawn_blocking(move || {
            token::init_token(
                &config.module,
                &config.token_label,
                &so_pin_file,
                &config.pin_file,
            )
        })
        .await
        .map_err(|_| KeystoreError::WorkerGone { token })?
    }

    /// Closes the token session and resolves once it is closed; every
    /// handle from this keystore (its `TokenKey`s too) then fails with
    /// `WorkerGone`. A keystore dropped without it keeps its session until
    /// the process exits: closing it then, from the token thread, could race
    /// the module's destructors that `exit` runs.
    pub async fn close(&self) {
        self.worker.close().await;
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        self.worker.token()
    }

    /// Generates a key pair in the token: private half `CKA_SENSITIVE`,
    /// not extractable, usable only for signing (and deciphering, for RSA).
    pub async fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo> {
        let label = label.to_owned();
        self.worker
            .call(move |t| t.generate(&label, algorithm))
            .await
    }

    /// Every private key on the token, by label.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        self.worker.call(token::TokenState::list).await
    }

    /// One key's description, read from the token.
    pub async fn info(&self, key: &KeyRef) -> Result<KeyInfo> {
        let key = key.clone();
        self.worker.call(move |t| t.info(&key)).await
    }

    /// Destroys a key pair and its certificate.
    pub async fn delete(&self, key: &KeyRef) -> Result<KeyInfo> {
        let key = key.clone();
        self.worker.call(move |t| t.delete(&key)).await
    }

    /// A handle to sign with the private key `key` names.
    pub async fn key(&self, key: &KeyRef) -> Result<TokenKey> {
        let key_ref = key.clone();
        let (handle, info, public) = self.worker.call(move |t| t.public_key(&key_ref)).await?;
        Ok(TokenKey {
            inner: Arc::new(KeyInner {
                worker: self.worker.clone(),
                handle,
                info,
                public,
            }),
        })
    }

    /// A PEM PKCS#10 request for `key` with `subject`, signed in the token.
    pub async fn csr(&self, key: &KeyRef, subject: &Subject) -> Result<String> {
        let token_key = self.key(key).await?;
        let subject = subject.clone();
        // rcgen calls the signer synchronously; keep that wait off the runtime.
        let label = token_key.info().label.clone();
        tokio::task::spawn_blocking(move || crate::csr::build(&token_key, &subject))
            .await
            .map_err(|_| KeystoreError::Csr {
                key: label,
                reason: "CSR task panicked".to_owned(),
            })?
    }

    /// Reads a certificate file (PEM, possibly with a chain, or DER), keeps
    /// the certificate whose public key is `key`'s, and stores it in the
    /// token under the key's `CKA_ID` and label. A file whose certificates
    /// certify another key is refused.
    pub async fn import_certificate(&self, key: &KeyRef, path: &Path) -> Result<KeyInfo> {
        let bytes =
            tokio::fs::read(path)
                .await
                .map_err(|source| KeystoreError::CertificateRead {
                    path: path.to_owned(),
                    source,
                })?;
        let certs = cert::read_certificates(path, &bytes)?;
        let token_key = self.key(key).await?;
        let chosen = matching(&certs, token_key.public_key_bits()).ok_or_else(|| {
            KeystoreError::CertificateKeyMismatch {
                path: path.to_owned(),
                token: self.token_label().to_owned(),
                key: key.to_string(),
                reason: format!(
                    "its public key is not the token key's (certificate subject: {})",
                    certs
                        .iter()
                        .map(cert::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        })?;
        let key = key.clone();
        self.worker
            .call(move |t| t.store_certificate(&key, &chosen))
            .await
    }

    /// The key and its stored certificate, ready for rustls. Fails if either
    /// is missing: a listener or client without its token key must not
    /// start, and there is no software-key fallback.
    pub async fn certified_key(&self, key: &KeyRef) -> Result<Arc<CertifiedKey>> {
        let token_key = self.key(key).await?;
        let id = token_key.info().id.clone();
        let cert = self
            .worker
            .call(move |t| t.certificate(&id))
            .await?
            .ok_or_else(|| KeystoreError::CertificateMissing {
                token: self.token_label().to_owned(),
                key: key.to_string(),
            })?;
        let certified = CertifiedKey::new(
            vec![CertificateDer::from(cert)],
            Arc::new(crate::tls::TokenSigningKey::new(token_key)),
        );
        certified
            .keys_match()
            .map_err(|e| KeystoreError::CertificateKeyMismatch {
                path: format!("token {}", self.token_label()).into(),
                token: self.token_label().to_owned(),
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Arc::new(certified))
    }
}

fn matching(certs: &[CertificateObject], public_key: &[u8]) -> Option<CertificateObject> {
    certs.iter().find(|c| c.public_key == public_key).cloned()
}

/// A private key in the token, usable by rustls and rcgen. Holds no key
/// material: only the object handle and the public half.
#[derive(Clone)]
pub struct TokenKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    worker: Worker,
    handle: ObjectHandle,
    info: KeyInfo,
    public: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("token", &self.inner.worker.token())
            .field("label", &self.inner.info.label)
            .field("id", &self.inner.info.id)
            .field("algorithm", &self.inner.info.algorithm)
            .finish()
    }
}

impl TokenKey {
    pub fn info(&self) -> &KeyInfo {
        &self.inner.info
    }

    pub fn id(&self) -> &KeyId {
        &self.inner.info.id
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.inner.info.algorithm
    }

    /// The SubjectPublicKeyInfo bit string content: `RSAPublicKey` DER or
    /// the uncompressed EC point.
    pub fn public_key_bits(&self) -> &[u8] {
        &self.inner.public
    }

    /// Decrypts `ciphertext` with this RSA key in the token, RSAES-PKCS1-v1_5
    /// (`CKM_RSA_PKCS`): the key-transport unwrap of a CMS EnvelopedData
    /// addressed to this key (SESAM-Vitale OCT profile). The plaintext (a
    /// content key) leaves the token; the private key does not. A padding
    /// failure is a [`KeystoreError::Pkcs11`]: callers unwrapping CMS keys
    /// must not tell it apart from a later content failure (Bleichenbacher).
    pub async fn decrypt_rsa_pkcs1(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let inner = &self.inner;
        if !matches!(
            inner.info.algorithm,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072
        ) {
            return Err(KeystoreError::UnsupportedKey {
                token: inner.worker.token().to_owned(),
                key: inner.info.label.clone(),
                reason: "RSA decryption needs an RSA key".to_owned(),
            });
        }
        let (handle, label, data) = (inner.handle, inner.info.label.clone(), ciphertext.to_vec());
        inner
            .worker
            .call(move |t| t.decrypt_rsa_pkcs(handle, &label, &data))
            .await
    }

    /// Signs `message` in the token, hashing as `mechanism` says. ECDSA
    /// returns DER `Ecdsa-Sig-Value`, as X.509 and TLS expect.
    pub(crate) fn sign(&self, mechanism: SignMechanism, message: &[u8]) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let data = match mechanism {
            SignMechanism::EcdsaPrehashed => sha2::Sha256::digest(message).to_vec(),
            _ => message.to_vec(),
        };
        let handle = inner.handle;
        let label = inner.info.label.clone();
        let raw = inner.worker.call_blocking(SIGN_TIMEOUT, move |t| {
            t.sign(handle, &label, mechanism, &data)
        })?;
        match mechanism {
            SignMechanism::EcdsaPrehashed => {
                der::ecdsa_signature(&raw).ok_or_else(|| KeystoreError::MalformedTokenOutput {
                    token: inner.worker.token().to_owned(),
                    key: inner.info.label.clone(),
                    what: "ECDSA signature",
                })
            }
            _ => Ok(raw),
        }
    }
}
