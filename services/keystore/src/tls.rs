//! rustls signing with token keys, and certificate resolvers for TLS clients
//! and servers.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::keys::KeyAlgorithm;
use crate::keystore::TokenKey;
use crate::token::SignMechanism;

/// Schemes offered for RSA keys, best first. PSS first: TLS 1.3 requires it;
/// SHA-512 is left out because the MSSanté suites top out at SHA-384.
const RSA_SCHEMES: [(SignatureScheme, SignMechanism); 4] = [
    (SignatureScheme::RSA_PSS_SHA256, SignMechanism::RsaPssSha256),
    (SignatureScheme::RSA_PSS_SHA384, SignMechanism::RsaPssSha384),
    (
        SignatureScheme::RSA_PKCS1_SHA256,
        SignMechanism::RsaPkcs1Sha256,
    ),
    (
        SignatureScheme::RSA_PKCS1_SHA384,
        SignMechanism::RsaPkcs1Sha384,
    ),
];

const EC_SCHEMES: [(SignatureScheme, SignMechanism); 1] = [(
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignMechanism::EcdsaPrehashed,
)];

/// A rustls `SigningKey` whose private half stays in the token.
#[derive(Debug)]
pub struct TokenSigningKey {
    key: TokenKey,
    spki: Vec<u8>,
}

impl TokenSigningKey {
    pub fn new(key: TokenKey) -> Self {
        let spki = rcgen::PublicKeyData::subject_public_key_info(&SpkiView(&key));
        Self { key, spki }
    }
}

/// Adapter to reuse rcgen's SubjectPublicKeyInfo encoder.
struct SpkiView<'a>(&'a TokenKey);

impl rcgen::PublicKeyData for SpkiView<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_bits()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        if self.0.algorithm().is_rsa() {
            &rcgen::PKCS_RSA_SHA256
        } else {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let schemes: &[(SignatureScheme, SignMechanism)] = match self.key.algorithm() {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => &RSA_SCHEMES,
            KeyAlgorithm::EcP256 => &EC_SCHEMES,
        };
        let (scheme, mechanism) = schemes.iter().find(|(s, _)| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: self.key.clone(),
            scheme: *scheme,
            mechanism: *mechanism,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        if self.key.algorithm().is_rsa() {
            SignatureAlgorithm::RSA
        } else {
            SignatureAlgorithm::ECDSA
        }
    }
}

/// One signature with a chosen scheme. `sign` is synchronous in rustls; it
/// waits for the token thread at most [`crate::SIGN_TIMEOUT`].
#[derive(Debug)]
struct TokenSigner {
    key: TokenKey,
    scheme: SignatureScheme,
    mechanism: SignMechanism,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.mechanism, message).map_err(|e| {
            tracing::error!(key.label = %self.key.info().label, scheme = ?self.scheme, error = %e, "token signature failed");
            rustls::Error::General(e.to_string())
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Presents one token-held key and its certificate, as a TLS client
/// (`ResolvesClientCert`, e.g. ORG AUTH_CLI towards an operator) and as a
/// TLS server (`ResolvesServerCert`). Built from
/// [`crate::Keystore::certified_key`], which fails when the key or its
/// certificate is missing, so no TLS endpoint can start without its token key.
#[derive(Debug)]
pub struct TokenCertResolver {
    certified: Arc<CertifiedKey>,
}

impl TokenCertResolver {
    pub fn new(certified: Arc<CertifiedKey>) -> Self {
        Self { certified }
    }
}

impl ResolvesClientCert for TokenCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Sending a certificate whose key cannot sign any offered scheme
        // would only fail the handshake later with a vaguer error.
        self.certified
            .key
            .choose_scheme(sigschemes)
            .map(|_| Arc::clone(&self.certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for TokenCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.certified))
    }
}
