//! The crate's one error type. Refusals of a peer certificate carry the profile, the
//! certificate's subject and the requirement they enforce, so a log line or the CLI's one-line
//! answer says which rule refused what.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A certificate file could not be read or is not a certificate.
    #[error("certificate {path}: {why}")]
    CertificateFile { path: PathBuf, why: String },

    /// A certificate given as bytes (e.g. by a TLS peer) is not a parsable certificate.
    #[error("certificate: {why}")]
    Certificate { why: String },

    /// A CRL (file, cache entry or download) is unusable.
    #[error("CRL {origin}: {why}")]
    Crl { origin: String, why: String },

    /// A CRL source could not be fetched.
    #[error("CRL source {source_name}: {why}")]
    CrlFetch { source_name: String, why: String },

    /// A distinguished name string or encoding is malformed.
    #[error("DN {input:?}: {why}")]
    Dn { input: String, why: String },

    /// The trust configuration is inconsistent.
    #[error("trust configuration: {0}")]
    Config(String),

    /// RE_OPE_5040: an installed anchor does not match its pinned SHA-256 fingerprint, or the
    /// pin list and the anchors directory disagree. The report lists every discrepancy.
    #[error("RE_OPE_5040: anchors do not match their pins: {0}")]
    AnchorPins(String),

    /// No profile of that name is configured.
    #[error("no trust profile named {0:?}")]
    UnknownProfile(String),

    /// I/O on a trust file or the CRL cache.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A rustls configuration error (protocol versions against the provider).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// A peer certificate was refused.
    #[error("{}: refused by trust profile {profile}: {subject}: {reason}", reason.requirement())]
    Refused {
        profile: String,
        subject: String,
        reason: Refusal,
    },
}

impl TrustError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrustError::Io {
            path: path.into(),
            source,
        }
    }

    /// The refusal reason, when this error is a refused certificate.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            TrustError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Why a peer certificate was refused. One variant per distinct cause, so callers and tests can
/// tell them apart and the user gets a specific message (EX_OPE_5040 recommends one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("expired (notAfter {not_after})")]
    Expired { not_after: String },

    #[error("not yet valid (notBefore {not_before})")]
    NotYetValid { not_before: String },

    /// No path to the profile's anchors through the profile's *local* intermediates.
    #[error("issuer {issuer} does not chain to an anchor of the local store")]
    UnknownIssuer { issuer: String },

    /// The peer sent an intermediate for the issuer, but it is not in the local store; the chain
    /// is only ever built from local certificates (EX_OPE_5040).
    #[error("the peer sent intermediate {issuer}, which is not in the local store")]
    UntrustedPeerIntermediate { issuer: String },

    /// Chains to an anchor, but the issuing CA is not one the profile allows.
    #[error("issued by {issuer}, which this profile does not accept (wrong branch)")]
    WrongBranch { issuer: String },

    #[error("a signature in the chain does not verify")]
    BadSignature,

    #[error("key usage not allowed: {why}")]
    NotAnAllowedKeyUsage { why: String },

    #[error("revoked in the full CRL of {issuer} (serial {serial})")]
    RevokedFull { issuer: String, serial: String },

    #[error("revoked in the delta CRL of {issuer} (serial {serial})")]
    RevokedDelta { issuer: String, serial: String },

    #[error(
        "revoked according to the OCSP responder of {issuer} (serial {serial}, since {revoked_at})"
    )]
    RevokedOcsp {
        issuer: String,
        serial: String,
        revoked_at: String,
    },

    #[error("the {kind} CRL of {issuer} is out of date (nextUpdate {next_update})")]
    CrlExpired {
        issuer: String,
        kind: &'static str,
        next_update: String,
    },

    #[error("revocation status unknown: {why}")]
    RevocationUnknown { why: String },

    /// Anything else the path validator rejects (encoding, constraints, limits).
    #[error("invalid certificate: {why}")]
    Invalid { why: String },
}

impl Refusal {
    /// The requirement this refusal enforces.
    pub fn requirement(&self) -> &'static str {
        match self {
            Refusal::UnknownIssuer { .. }
            | Refusal::UntrustedPeerIntermediate { .. }
            | Refusal::WrongBranch { .. } => "EX_OPE_5040",
            Refusal::RevokedFull { .. }
            | Refusal::RevokedDelta { .. }
            | Refusal::RevokedOcsp { .. }
            | Refusal::CrlExpired { .. }
            | Refusal::RevocationUnknown { .. } => "EX_OPE_5050",
            Refusal::Expired { .. }
            | Refusal::NotYetValid { .. }
            | Refusal::BadSignature
            | Refusal::NotAnAllowedKeyUsage { .. }
            | Refusal::Invalid { .. } => "EX_OPE_5020",
        }
    }
}
