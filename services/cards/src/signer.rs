//! rustls client authentication with the card's authentication key.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::CardService;

/// DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The SHA-256 DigestInfo of `message`: what the card's raw PKCS#1 v1.5 operation signs.
pub fn sha256_digest_info(message: &[u8]) -> Vec<u8> {
    let mut di = SHA256_DIGEST_INFO_PREFIX.to_vec();
    di.extend_from_slice(&Sha256::digest(message));
    di
}

/// Presents the active CPS card's authentication certificate; signs with the card.
#[derive(Debug, Clone)]
pub struct CardCertResolver {
    service: CardService,
}

impl CardCertResolver {
    pub fn new(service: CardService) -> Self {
        Self { service }
    }
}

impl ResolvesClientCert for CardCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if !sigschemes.contains(&SignatureScheme::RSA_PKCS1_SHA256) {
            tracing::warn!("server accepts no RSA PKCS#1 SHA-256 client signature: no card");
            return None;
        }
        let (_, card) = self.service.active_card()?;
        let cert = card.auth_certificate?;
        Some(Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(cert)],
            Arc::new(CardSigningKey {
                service: self.service.clone(),
                generation: card.generation,
            }),
        )))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The authentication key of one card insertion: a signature after the card was removed
/// (even if reinserted) fails instead of signing with another session's card.
#[derive(Debug)]
pub struct CardSigningKey {
    service: CardService,
    generation: u64,
}

impl SigningKey for CardSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // INTERNAL AUTHENTICATE does raw PKCS#1 v1.5 over our DigestInfo; no PSS.
        offered
            .contains(&SignatureScheme::RSA_PKCS1_SHA256)
            .then(|| {
                Box::new(CardSigner {
                    service: self.service.clone(),
                    generation: self.generation,
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct CardSigner {
    service: CardService,
    generation: u64,
}

impl Signer for CardSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.service
            .sign_blocking(self.generation, sha256_digest_info(message))
            .map_err(|e| rustls::Error::General(format!("CPS card: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::RSA_PKCS1_SHA256
    }
}
