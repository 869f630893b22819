//! Vendor signing keys in a PKCS#11 token (P-256, through passerelle-keystore): tough's
//! `KeySource`/`Sign` over the keystore's token signer, so release keys never exist as files.

use std::sync::Arc;

use passerelle_keystore::{KeyAlgorithm, TokenKey, TokenSigningKey};
use rustls::SignatureScheme;
use rustls::sign::SigningKey as _;
use tough::key_source::KeySource;
use tough::schema::key::Key;
use tough::sign::Sign;

use crate::error::UpdateError;
use crate::slot::hex;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A token-held P-256 key usable wherever tough takes a `KeySource`.
#[derive(Debug, Clone)]
pub struct TokenKeySource {
    signing: Arc<TokenSigningKey>,
    key: Key,
}

impl TokenKeySource {
    /// Refuses RSA keys: our TUF roles are ECDSA P-256 (`ecdsa-sha2-nistp256`).
    pub fn new(key: TokenKey) -> Result<Self, UpdateError> {
        if key.algorithm() != KeyAlgorithm::EcP256 {
            return Err(UpdateError::Vendor {
                step: "token key",
                reason: format!(
                    "{} is {}, TUF signing keys must be ec-p256",
                    key.info().label,
                    key.algorithm().as_str()
                ),
            });
        }
        // tough reads an ECDSA public key as hex of the uncompressed point.
        let key_json = serde_json::json!({
            "keytype": "ecdsa",
            "scheme": "ecdsa-sha2-nistp256",
            "keyval": { "public": hex(key.public_key_bits()) },
        });
        let tuf_key: Key =
            serde_json::from_value(key_json).map_err(|e| UpdateError::vendor("token key", e))?;
        Ok(Self {
            signing: Arc::new(TokenSigningKey::new(key)),
            key: tuf_key,
        })
    }
}

#[tough::async_trait]
impl KeySource for TokenKeySource {
    async fn as_sign(&self) -> Result<Box<dyn Sign>, BoxError> {
        Ok(Box::new(self.clone()))
    }

    async fn write(&self, _value: &str, _key_id_hex: &str) -> Result<(), BoxError> {
        Err("a token key cannot be overwritten from TUF metadata".into())
    }
}

#[tough::async_trait]
impl Sign for TokenKeySource {
    fn tuf_key(&self) -> Key {
        self.key.clone()
    }

    async fn sign(
        &self,
        msg: &[u8],
        _rng: &(dyn aws_lc_rs::rand::SecureRandom + Sync),
    ) -> Result<Vec<u8>, BoxError> {
        let signing = self.signing.clone();
        let msg = msg.to_vec();
        // The token signer blocks (bounded by the keystore's SIGN_TIMEOUT).
        tokio::task::spawn_blocking(move || {
            let signer = signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .ok_or("token key offers no ECDSA P-256 SHA-256 scheme")?;
            signer.sign(&msg).map_err(|e| Box::new(e) as BoxError)
        })
        .await?
    }
}
