//! TLS profiles limited to what EX_OPE_5010 allows, and rustls verifiers that validate peers
//! with a [`TrustStore`] profile (local intermediates only, branch restriction, CRLs).
//!
//! Offered: TLS 1.2 with `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` (0xC030) and
//! `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` (0xC02F), ECDHE over X25519, P-256 or P-384 (all
//! ≥ 256 bits); TLS 1.3 only when [`TlsOptions::tls13`] is set (RE_OPE_5015). The four CBC and
//! DHE suites of the list are not offered: rustls implements neither (MAC-then-encrypt CBC is
//! the Lucky13/padding-oracle construction; finite-field DHE needs per-peer group checks and
//! ECDHE gives the same forward secrecy). A peer offering only those suites is refused; see
//! ARCHITECTURE.md.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::{PeerRole, TlsOptions};
use crate::error::TrustError;
use crate::store::TrustStore;

/// The ring provider reduced to the EX_OPE_5010 suites and ≥ 256-bit ECDHE groups.
pub fn mssante_provider(options: TlsOptions) -> CryptoProvider {
    let mut cipher_suites = Vec::new();
    if options.tls13 {
        cipher_suites.extend([
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ]);
    }
    cipher_suites.extend([
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ]);
    CryptoProvider {
        cipher_suites,
        kx_groups: vec![
            ring::kx_group::X25519,
            ring::kx_group::SECP256R1,
            ring::kx_group::SECP384R1,
        ],
        ..ring::default_provider()
    }
}

static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS12_AND_13: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS12, &rustls::version::TLS13];

fn versions(options: TlsOptions) -> &'static [&'static SupportedProtocolVersion] {
    if options.tls13 {
        TLS12_AND_13
    } else {
        TLS12_ONLY
    }
}

/// Client side of an MSSanté connection (SMTP to another operator, API LPS, Annuaire, liste
/// blanche): mutual TLS with the certificate from `resolver`, the peer checked by `verifier`.
pub fn mssante_client_config(
    resolver: Arc<dyn ResolvesClientCert>,
    verifier: Arc<dyn ServerCertVerifier>,
    options: TlsOptions,
) -> Result<ClientConfig, TrustError> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(mssante_provider(options)))
            .with_protocol_versions(versions(options))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver),
    )
}

/// Server side (inbound SMTP from another operator): the client certificate is required
/// (EX_OPE_5020 applies in both directions) and checked by `client_verifier`.
pub fn mssante_server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    options: TlsOptions,
) -> Result<ServerConfig, TrustError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(mssante_provider(options)))
        .with_protocol_versions(versions(options))?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(resolver);
    // Our order (AES-256 first), not the client's.
    config.ignore_client_order = true;
    Ok(config)
}

fn refused(err: TrustError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    ring::default_provider().signature_verification_algorithms
}

fn profile_for(store: &TrustStore, profile: &str, role: PeerRole) -> Result<(), TrustError> {
    let p = store.profile(profile)?;
    if p.role() == role {
        Ok(())
    } else {
        Err(TrustError::Config(format!(
            "profile {profile} is for {:?} peers, not {role:?}",
            p.role()
        )))
    }
}

/// Checks a TLS server's certificate with a [`TrustStore`] profile of role `tls-server`.
/// The intermediates the server sends are ignored for path building (EX_OPE_5040).
#[derive(Debug)]
pub struct ProfileServerVerifier {
    store: Arc<TrustStore>,
    profile: String,
    check_server_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ProfileServerVerifier {
    /// The server's certificate must also be valid for the name connected to (SAN dNSName).
    pub fn new(store: Arc<TrustStore>, profile: &str) -> Result<Self, TrustError> {
        profile_for(&store, profile, PeerRole::TlsServer)?;
        Ok(Self {
            store,
            profile: profile.to_owned(),
            check_server_name: true,
            algorithms: algorithms(),
        })
    }

    /// Skip the host name check, for a caller that matches the peer against the liste blanche
    /// DN itself (the connector does, EX_3.2_5050 steps 5–6).
    #[must_use]
    pub fn without_server_name_check(mut self) -> Self {
        self.check_server_name = false;
        self
    }
}

impl ServerCertVerifier for ProfileServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.store
            .validate(&self.profile, end_entity, intermediates, now)
            .map_err(refused)?;
        if self.check_server_name {
            webpki::EndEntityCert::try_from(end_entity)
                .and_then(|ee| ee.verify_is_valid_for_subject_name(server_name))
                .map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Requires and checks a TLS client's certificate with a profile of role `tls-client`.
/// The CertificateRequest lists the profile's allowed issuers.
#[derive(Debug)]
pub struct ProfileClientVerifier {
    store: Arc<TrustStore>,
    profile: String,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ProfileClientVerifier {
    pub fn new(store: Arc<TrustStore>, profile: &str) -> Result<Self, TrustError> {
        profile_for(&store, profile, PeerRole::TlsClient)?;
        let hints = store.profile(profile)?.root_hint_subjects().to_vec();
        Ok(Self {
            store,
            profile: profile.to_owned(),
            hints,
            algorithms: algorithms(),
        })
    }
}

impl ClientCertVerifier for ProfileClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store
            .validate(&self.profile, end_entity, intermediates, now)
            .map_err(refused)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ex_ope_5010_provider_offers_only_the_listed_gcm_suites() {
        let names = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        let tls12 = mssante_provider(TlsOptions { tls13: false });
        assert_eq!(
            names(&tls12),
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        let with13 = mssante_provider(TlsOptions { tls13: true });
        assert!(
            names(&with13)
                .iter()
                .filter(|n| !n.starts_with("TLS13_"))
                .eq(names(&tls12).iter())
        );
        let groups: Vec<String> = tls12
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp256r1", "secp384r1"]);
    }

    #[test]
    fn ex_ope_5010_protocol_versions() {
        assert_eq!(versions(TlsOptions { tls13: false }).len(), 1);
        assert_eq!(
            versions(TlsOptions { tls13: false })[0].version,
            rustls::ProtocolVersion::TLSv1_2
        );
        assert_eq!(
            versions(TlsOptions { tls13: true })[1].version,
            rustls::ProtocolVersion::TLSv1_3
        );
    }
}
