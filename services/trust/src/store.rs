//! The trust store: pinned CAs, profiles, CRLs, and certificate validation.
//!
//! Path building is rustls-webpki's, given the profile's anchors and the *local* intermediates
//! only: what the peer sends is never used to build the chain (EX_OPE_5040), only to explain a
//! refusal. Branch restriction and revocation (full + delta CRLs, EX_OPE_5050) run on the path
//! webpki verified.

use std::collections::BTreeMap;

use rustls::DistinguishedName;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage};
use x509_parser::certificate::X509Certificate;

use crate::anchors;
use crate::config::{
    PeerRole, RevocationMethod, RevocationScope, TlsOptions, TrustConfig, UnknownStatusPolicy,
};
use crate::crl::{CrlStore, CrlUpdate, Status};
use crate::dn::Dn;
use crate::error::{Refusal, TrustError};
use crate::ldap::LdapCrlSource;
use crate::ocsp::{OcspClient, Query};
use crate::source::{CrlSource, HttpCrlSource, RefreshReport};

/// A pinned CA certificate.
#[derive(Debug)]
pub(crate) struct CaCert {
    /// File name in the anchors directory (the name the pin list and the profiles use).
    pub(crate) name: String,
    pub(crate) der: Vec<u8>,
    pub(crate) subject: Dn,
    subject_raw: Vec<u8>,
}

/// A loaded trust profile.
#[derive(Debug)]
pub struct Profile {
    name: String,
    role: PeerRole,
    anchor_names: Vec<String>,
    anchors: Vec<TrustAnchor<'static>>,
    allowed_issuers: Vec<String>,
    unknown_status: UnknownStatusPolicy,
    scope: RevocationScope,
    revocation: RevocationMethod,
    ocsp_url: Option<String>,
    ocsp_timeout: std::time::Duration,
    hints: Vec<DistinguishedName>,
}

impl Profile {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// Subjects of the allowed issuing CAs: what a TLS server lists in its CertificateRequest so
    /// the client picks the right certificate.
    pub fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
}

/// Result of a successful validation.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The peer certificate's subject, for the liste blanche DN ↔ domain checks (EX_OPE_5020,
    /// EX_LBL_5010) that the connector does.
    pub subject: Dn,
    /// The validated path above the peer certificate, issuer first: pinned file names.
    pub chain: Vec<String>,
    /// Set when the profile's soft-fail policy accepted an unknown revocation status.
    pub revocation_unknown: Option<Refusal>,
}

/// Pinned CAs, trust profiles and the CRL cache.
#[derive(Debug)]
pub struct TrustStore {
    cas: Vec<CaCert>,
    /// Every pinned CA that is not self-issued, with its name: the only intermediates paths are
    /// built from.
    intermediates: Vec<CertificateDer<'static>>,
    intermediate_names: Vec<String>,
    profiles: BTreeMap<String, Profile>,
    crls: CrlStore,
    ocsp: OcspClient,
    sources: Vec<ConfiguredSource>,
    tls: TlsOptions,
}

/// A CRL source of the configuration, by URL scheme.
#[derive(Debug)]
enum ConfiguredSource {
    Http(HttpCrlSource),
    Ldap(LdapCrlSource),
}

/// A certificate whose revocation status is to be established.
struct Target {
    serial: Vec<u8>,
    is_ca: bool,
    /// Pinned file name of its issuer.
    issuer: String,
    /// Its OCSP URL: the profile's, else its AIA's.
    ocsp_url: Option<String>,
}

/// A path that verified, before revocation.
struct Checked<'a> {
    profile: &'a Profile,
    subject: Dn,
    chain: Vec<String>,
    targets: Vec<Target>,
    now: i64,
}

impl TrustStore {
    /// Check the pins (RE_OPE_5040, refusing on any discrepancy), load the CAs, the profiles and
    /// the cached CRLs.
    pub fn load(config: &TrustConfig) -> Result<Self, TrustError> {
        let pinned = anchors::load_pinned(&config.anchors_dir, &config.pins_file)?;
        let mut cas = Vec::new();
        for (name, der) in pinned {
            let path = config.anchors_dir.join(&name);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
                TrustError::CertificateFile {
                    path: path.clone(),
                    why: e.to_string(),
                }
            })?;
            if !cert.is_ca() {
                return Err(TrustError::CertificateFile {
                    path,
                    why: "not a CA certificate (basicConstraints cA is not set); only CAs belong in the anchors directory"
                        .to_owned(),
                });
            }
            cas.push(CaCert {
                subject: Dn::from_x509(cert.subject())?,
                subject_raw: cert.subject().as_raw().to_vec(),
                name,
                der: der.clone(),
            });
        }
        let (mut intermediates, mut intermediate_names) = (Vec::new(), Vec::new());
        for ca in &cas {
            let (_, cert) = parse(&ca.der)?;
            if cert.subject().as_raw() != cert.issuer().as_raw() {
                intermediates.push(CertificateDer::from(ca.der.clone()));
                intermediate_names.push(ca.name.clone());
            }
        }
        let profiles = config
            .profiles
            .iter()
            .map(|(name, pc)| Ok((name.clone(), build_profile(name, pc, &cas, config)?)))
            .collect::<Result<_, TrustError>>()?;
        let sources = config
            .crl_sources
            .iter()
            .map(|s| {
                Ok(if s.url.starts_with("ldap://") {
                    ConfiguredSource::Ldap(LdapCrlSource::new(&s.url, s.timeout)?)
                } else {
                    ConfiguredSource::Http(HttpCrlSource::new(&s.url, s.timeout)?)
                })
            })
            .collect::<Result<_, TrustError>>()?;
        let crls = CrlStore::open(&config.crl_cache_dir, &cas)?;
        tracing::info!(
            cas = cas.len(),
            profiles = config.profiles.len(),
            "trust store loaded"
        );
        Ok(TrustStore {
            cas,
            intermediates,
            intermediate_names,
            profiles,
            crls,
            ocsp: OcspClient::new(),
            sources,
            tls: config.tls,
        })
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Result<&Profile, TrustError> {
        self.profiles
            .get(name)
            .ok_or_else(|| TrustError::UnknownProfile(name.to_owned()))
    }

    /// TLS options of the configuration.
    pub fn tls_options(&self) -> TlsOptions {
        self.tls
    }

    /// Verify and install one CRL (e.g. fetched by hand); see [`TrustStore::refresh`].
    pub fn install_crl(&self, bytes: &[u8], origin: &str) -> Result<CrlUpdate, TrustError> {
        self.crls.install(bytes, origin, &self.cas)
    }

    /// Fetch every configured CRL source once and install what verifies and is newer.
    pub async fn refresh(&self) -> RefreshReport {
        let sources: Vec<&dyn CrlSource> = self
            .sources
            .iter()
            .map(|s| match s {
                ConfiguredSource::Http(h) => h as &dyn CrlSource,
                ConfiguredSource::Ldap(l) => l as &dyn CrlSource,
            })
            .collect();
        self.refresh_from(&sources).await
    }

    /// Fetch the given sources once; a failing source does not stop the others.
    pub async fn refresh_from(&self, sources: &[&dyn CrlSource]) -> RefreshReport {
        let mut report = RefreshReport::default();
        for source in sources {
            let name = source.name();
            let result = match source.fetch().await {
                Ok(bytes) => self.crls.install(&bytes, &name, &self.cas),
                Err(e) => Err(e),
            };
            match result {
                Ok(update) if update.changed => report.changed.push(update),
                Ok(update) => report.unchanged.push(update),
                Err(e) => {
                    tracing::warn!(source = %name, error = %e, "CRL refresh failed");
                    report.failed.push((name, e.to_string()));
                }
            }
        }
        report
    }

    /// Refresh every `every` until `shutdown` completes. The first refresh runs at once.
    pub async fn refresh_periodically(
        &self,
        every: std::time::Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    let report = self.refresh().await;
                    tracing::info!(changed = report.changed.len(), unchanged = report.unchanged.len(), failed = report.failed.len(), "CRL refresh");
                }
            }
        }
    }

    /// Validate a peer certificate under `profile` at time `now`.
    ///
    /// `presented` are the intermediates the peer sent. They are **not** used to build the
    /// chain (EX_OPE_5040); they only turn an "unknown issuer" into the more precise
    /// [`Refusal::UntrustedPeerIntermediate`] when the peer tried to supply its own.
    ///
    /// Synchronous (rustls verifiers call it) and without network I/O: a profile using OCSP is
    /// answered from the OCSP cache that [`TrustStore::validate_online`] fills; without a cached
    /// answer the status is unknown (`ocsp`) or the CRLs decide (`ocsp-then-crl`).
    pub fn validate(
        &self,
        profile: &str,
        end_entity: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Validated, TrustError> {
        let checked = self.check_path(profile, end_entity, presented, now)?;
        let uses_ocsp = checked.profile.revocation != RevocationMethod::Crl;
        let ocsp = checked
            .targets
            .iter()
            .map(|t| {
                uses_ocsp.then(|| {
                    self.ocsp
                        .cached(&t.issuer, &t.serial, checked.now)
                        .unwrap_or_else(|| {
                            Status::Unknown(Refusal::RevocationUnknown {
                                why: format!(
                                    "no OCSP answer cached for a certificate of {}",
                                    t.issuer
                                ),
                            })
                        })
                })
            })
            .collect();
        self.finish(checked, ocsp)
    }

    /// [`TrustStore::validate`], asking the OCSP responder (HTTP POST within `ocsp_timeout`)
    /// when the profile uses OCSP and no fresh answer is cached. For callers that can await: the
    /// SMTP/HTTP clients before connecting, the SESAM-Vitale certificate checks.
    pub async fn validate_online(
        &self,
        profile: &str,
        end_entity: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Validated, TrustError> {
        let checked = self.check_path(profile, end_entity, presented, now)?;
        let mut ocsp = Vec::with_capacity(checked.targets.len());
        for t in &checked.targets {
            if checked.profile.revocation == RevocationMethod::Crl {
                ocsp.push(None);
                continue;
            }
            let status = match (&t.ocsp_url, self.cas.iter().find(|c| c.name == t.issuer)) {
                (Some(url), Some(ca)) => {
                    let query = Query {
                        ca_name: &t.issuer,
                        issuer_der: &ca.der,
                        serial: &t.serial,
                        url,
                        timeout: checked.profile.ocsp_timeout,
                    };
                    self.ocsp.status(&query, checked.now).await
                }
                (None, _) => Status::Unknown(Refusal::RevocationUnknown {
                    why: "no OCSP URL (no ocsp_url in the profile, no AIA id-ad-ocsp in the certificate)"
                        .to_owned(),
                }),
                (_, None) => Status::Unknown(Refusal::RevocationUnknown {
                    why: format!("issuer {} is not in the local store", t.issuer),
                }),
            };
            ocsp.push(Some(status));
        }
        self.finish(checked, ocsp)
    }

    fn refuse(profile: &Profile, subject: &Dn, reason: Refusal) -> TrustError {
        tracing::warn!(
            profile = %profile.name,
            subject = %subject,
            requirement = reason.requirement(),
            reason = %reason,
            "certificate refused"
        );
        TrustError::Refused {
            profile: profile.name.clone(),
            subject: subject.to_string(),
            reason,
        }
    }

    /// Everything but revocation: dates, key usage, path from the local store, branch.
    fn check_path<'p>(
        &'p self,
        profile: &str,
        end_entity: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Checked<'p>, TrustError> {
        let profile = self.profile(profile)?;
        let (_, leaf) = parse(end_entity)?;
        let subject = Dn::from_x509(leaf.subject())?;
        let refuse = |reason: Refusal| Self::refuse(profile, &subject, reason);
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);

        let validity = leaf.validity();
        if now_secs > validity.not_after.timestamp() {
            return Err(refuse(Refusal::Expired {
                not_after: validity.not_after.to_string(),
            }));
        }
        if now_secs < validity.not_before.timestamp() {
            return Err(refuse(Refusal::NotYetValid {
                not_before: validity.not_before.to_string(),
            }));
        }
        if let Some(why) = key_usage_problem(&leaf, profile.role) {
            return Err(refuse(Refusal::NotAnAllowedKeyUsage { why }));
        }

        let ee = EndEntityCert::try_from(end_entity).map_err(|e| {
            refuse(Refusal::Invalid {
                why: format!("{e:?}"),
            })
        })?;
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &profile.anchors,
                &self.intermediates,
                now,
                RoleEku(profile.role),
                None,
                None,
            )
            .map_err(|e| refuse(self.explain(&e, &leaf, presented)))?;

        // Names of the path above the leaf, issuer first.
        let mut chain = Vec::new();
        for cert in path.intermediate_certificates() {
            let der = cert.der();
            let idx = self
                .intermediates
                .iter()
                .position(|i| i.as_ref() == der.as_ref());
            chain.push(idx.map_or_else(|| "?".to_owned(), |i| self.intermediate_names[i].clone()));
        }
        let anchor_idx = profile.anchors.iter().position(|a| a == path.anchor());
        chain.push(anchor_idx.map_or_else(|| "?".to_owned(), |i| profile.anchor_names[i].clone()));

        let issuer = &chain[0];
        if !profile.allowed_issuers.contains(issuer) {
            let issuer_dn = self
                .cas
                .iter()
                .find(|c| &c.name == issuer)
                .map_or_else(|| issuer.clone(), |c| c.subject.to_string());
            return Err(refuse(Refusal::WrongBranch { issuer: issuer_dn }));
        }

        let ocsp_url = |cert: &X509Certificate<'_>| {
            profile
                .ocsp_url
                .clone()
                .or_else(|| crate::ocsp::aia_ocsp_url(cert))
        };
        let mut targets = vec![Target {
            serial: leaf.serial.to_bytes_be(),
            is_ca: false,
            issuer: chain[0].clone(),
            ocsp_url: ocsp_url(&leaf),
        }];
        if profile.scope == RevocationScope::Chain {
            for (i, cert) in path.intermediate_certificates().enumerate() {
                let der = cert.der();
                let (_, parsed) = parse(&der)?;
                targets.push(Target {
                    serial: parsed.serial.to_bytes_be(),
                    is_ca: true,
                    issuer: chain[i + 1].clone(),
                    ocsp_url: ocsp_url(&parsed),
                });
            }
        }
        Ok(Checked {
            profile,
            subject,
            chain,
            targets,
            now: now_secs,
        })
    }

    /// Revocation of every target by CRL, OCSP (`ocsp[i]`, when the profile uses it) or OCSP
    /// then CRL; then the unknown-status policy.
    fn finish(
        &self,
        checked: Checked<'_>,
        ocsp: Vec<Option<Status>>,
    ) -> Result<Validated, TrustError> {
        let Checked {
            profile,
            subject,
            chain,
            targets,
            now,
        } = checked;
        let mut revocation_unknown = None;
        for (t, ocsp) in targets.iter().zip(ocsp) {
            let crl = || self.crls.status(&t.issuer, &t.serial, t.is_ca, now);
            let status = match (profile.revocation, ocsp) {
                (RevocationMethod::Crl, _) | (_, None) => crl(),
                (RevocationMethod::OcspThenCrl, Some(Status::Unknown(ocsp_why))) => match crl() {
                    Status::Unknown(crl_why) => Status::Unknown(Refusal::RevocationUnknown {
                        why: format!("{ocsp_why}; then CRL: {crl_why}"),
                    }),
                    decided => decided,
                },
                (RevocationMethod::Ocsp | RevocationMethod::OcspThenCrl, Some(s)) => s,
            };
            match status {
                Status::Good => {}
                Status::Revoked(reason) => return Err(Self::refuse(profile, &subject, reason)),
                Status::Unknown(reason) => match profile.unknown_status {
                    UnknownStatusPolicy::HardFail => {
                        return Err(Self::refuse(profile, &subject, reason));
                    }
                    UnknownStatusPolicy::SoftFail => {
                        tracing::warn!(profile = %profile.name, subject = %subject, reason = %reason, "revocation status unknown; accepted by soft-fail policy");
                        revocation_unknown = Some(reason);
                    }
                },
            }
        }
        tracing::debug!(profile = %profile.name, subject = %subject, chain = ?chain, "certificate accepted");
        Ok(Validated {
            subject,
            chain,
            revocation_unknown,
        })
    }

    /// Turn a webpki error into a refusal reason, naming a peer-supplied intermediate when that
    /// is what the peer relied on.
    fn explain(
        &self,
        err: &webpki::Error,
        leaf: &X509Certificate<'_>,
        presented: &[CertificateDer<'_>],
    ) -> Refusal {
        let issuer = Dn::from_x509(leaf.issuer())
            .map_or_else(|_| leaf.issuer().to_string(), |d| d.to_string());
        let peer_supplied_issuer = || {
            presented.iter().any(|p| {
                let local = self.cas.iter().any(|c| c.der == p.as_ref());
                !local
                    && parse(p).is_ok_and(|(_, c)| c.subject().as_raw() == leaf.issuer().as_raw())
            })
        };
        let secs = |t: UnixTime| {
            x509_parser::time::ASN1Time::from_timestamp(
                i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            )
            .map_or_else(|_| t.as_secs().to_string(), |t| t.to_string())
        };
        match err {
            webpki::Error::UnknownIssuer
            | webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::SignatureAlgorithmMismatch
                if peer_supplied_issuer() =>
            {
                Refusal::UntrustedPeerIntermediate { issuer }
            }
            webpki::Error::UnknownIssuer => Refusal::UnknownIssuer { issuer },
            webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::SignatureAlgorithmMismatch => Refusal::BadSignature,
            webpki::Error::CertExpired { not_after, .. } => Refusal::Expired {
                not_after: secs(*not_after),
            },
            webpki::Error::CertNotValidYet { not_before, .. } => Refusal::NotYetValid {
                not_before: secs(*not_before),
            },
            webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::EmptyEkuExtension => {
                Refusal::NotAnAllowedKeyUsage {
                    why: format!("extended key usage: {err:?}"),
                }
            }
            other => Refusal::Invalid {
                why: format!("{other:?}"),
            },
        }
    }

    /// The subject of a certificate (for callers that hold a validated peer certificate).
    pub fn subject_of(cert: &CertificateDer<'_>) -> Result<Dn, TrustError> {
        let (_, c) = parse(cert)?;
        Dn::from_x509(c.subject())
    }
}

fn parse(der: &[u8]) -> Result<(&[u8], X509Certificate<'_>), TrustError> {
    x509_parser::parse_x509_certificate(der).map_err(|e| TrustError::Certificate {
        why: anchors::describe_x509_error(&e),
    })
}

/// TLS signs the handshake with the certificate key: digitalSignature must be allowed when the
/// KeyUsage extension is present.
fn key_usage_problem(leaf: &X509Certificate<'_>, role: PeerRole) -> Option<String> {
    if role == PeerRole::Any {
        return None;
    }
    match leaf.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => {
            Some(format!("KeyUsage {} lacks digitalSignature", ku.value))
        }
        Ok(_) => None,
        Err(e) => Some(format!("malformed KeyUsage: {e}")),
    }
}

/// The EKU the profile's role requires (if the certificate has an EKU extension at all).
struct RoleEku(PeerRole);

impl ExtendedKeyUsageValidator for RoleEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        match self.0 {
            PeerRole::TlsServer => KeyUsage::server_auth().validate(iter),
            PeerRole::TlsClient => KeyUsage::client_auth().validate(iter),
            PeerRole::Any => Ok(()),
        }
    }
}

fn build_profile(
    name: &str,
    pc: &crate::config::ProfileConfig,
    cas: &[CaCert],
    config: &TrustConfig,
) -> Result<Profile, TrustError> {
    let bad = |why: String| TrustError::Config(format!("profile {name}: {why}"));
    let find = |ca: &str| {
        cas.iter().find(|c| c.name == ca).ok_or_else(|| {
            bad(format!(
                "{ca} is not a pinned certificate of {}",
                config.anchors_dir.display()
            ))
        })
    };
    if pc.anchors.is_empty() {
        return Err(bad("anchors is empty".to_owned()));
    }
    if pc.allowed_issuers.is_empty() {
        return Err(bad(
            "allowed_issuers is empty; name the CA(s) allowed to issue the peer's certificate"
                .to_owned(),
        ));
    }
    let ocsp_url = match &pc.ocsp_url {
        Some(url) => Some(
            crate::ocsp::check_url(url)
                .map(|_| url.clone())
                .map_err(|why| bad(format!("ocsp_url {why}")))?,
        ),
        None => None,
    };
    let mut anchors = Vec::new();
    for a in &pc.anchors {
        let ca = find(a)?;
        let der = CertificateDer::from(ca.der.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| bad(format!("{a} is not a usable trust anchor: {e:?}")))?;
        anchors.push(anchor.to_owned());
    }
    let mut hints = Vec::new();
    for issuer in &pc.allowed_issuers {
        hints.push(DistinguishedName::from(find(issuer)?.subject_raw.clone()));
    }
    Ok(Profile {
        name: name.to_owned(),
        role: pc.role,
        anchor_names: pc.anchors.clone(),
        anchors,
        allowed_issuers: pc.allowed_issuers.clone(),
        unknown_status: pc.unknown_status,
        scope: pc.revocation_scope,
        revocation: pc.revocation,
        ocsp_url,
        ocsp_timeout: pc.ocsp_timeout,
        hints,
    })
}
