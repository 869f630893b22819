//! The crate's one error type. Every refusal of a list names the requirement it enforces, so the
//! log line and the CLI answer say which rule refused it.

use std::path::PathBuf;

/// Why a liste blanche was refused, or could not be fetched or stored.
#[derive(Debug, thiserror::Error)]
pub enum ListeBlancheError {
    /// The document is not acceptable XML (malformed, DTD, too big, too deep).
    #[error("EX_2.2_5040: not an acceptable XML document: {0}")]
    Xml(String),
    /// The document does not have the liste blanche structure (unexpected element or attribute,
    /// a second `ListeDomaines`, text where none belongs).
    #[error("EX_2.2_5040: not a liste blanche: {0}")]
    Schema(String),
    /// The signature does not follow the strict profile (Tableau 45 algorithms, one enveloped
    /// signature over the whole document).
    #[error("EX_2.2_5040: signature outside the accepted profile: {0}")]
    SignatureProfile(String),
    /// The document's digest does not match the signed `DigestValue`: the list was altered.
    #[error("EX_2.2_5040: digest mismatch: the list was altered after signing")]
    DigestMismatch,
    /// The RSA signature over `SignedInfo` does not verify with the `X509Data` certificate.
    #[error("EX_2.2_5040: the signature value does not verify with the X509Data certificate")]
    BadSignature,
    /// The `X509Data` certificate is unreadable or does not validate to the IGC-Santé anchors.
    #[error("EX_2.2_5050: signer certificate refused: {0}")]
    Signer(String),
    /// The signer certificate validated but is not the ANS identity configured.
    #[error("EX_2.2_5050: signer {subject} is not the expected ANS identity ({expected})")]
    NotAns { subject: String, expected: String },
    /// A `DNCertificatOperateur` that does not parse as an RFC 2253 DN.
    #[error("EX_LBL_5010: domain {domain}: DNCertificatOperateur is not a DN: {why}")]
    BadDn { domain: String, why: String },
    /// Download failure (temporary: the previous verified list stays in use, EX_2.2_5035).
    #[error("EX_2.2_5010: fetching {url} failed: {why}")]
    Fetch { url: String, why: String },
    /// A local file could not be read or written.
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    /// Configuration error (profile, identity, URL).
    #[error("liste blanche configuration: {0}")]
    Config(String),
}

impl ListeBlancheError {
    pub(crate) fn io(path: &std::path::Path, e: &std::io::Error) -> Self {
        ListeBlancheError::Io {
            path: path.to_owned(),
            why: e.to_string(),
        }
    }
}
