//! The crate's one error type. Each variant names the file, certificate or rule concerned, so
//! the CLI's one-line answer and the lot's state say what refused what.

use std::path::PathBuf;

/// Everything that can go wrong while selecting a recipient certificate, encrypting a lot or
/// writing its message.
#[derive(Debug, thiserror::Error)]
pub enum SesamError {
    /// I/O on a lot, a certificate or an output file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// An empty lot is never encrypted nor sent.
    #[error("{path}: the lot is empty; nothing to encrypt")]
    EmptyLot { path: PathBuf },

    /// The lot exceeds the configured maximum.
    #[error("{path}: the lot is {size} bytes, above the maximum of {max} bytes")]
    LotTooLarge { path: PathBuf, size: u64, max: u64 },

    /// The lot's length changed while it was read (the LPS is still writing it).
    #[error("the lot changed while it was read: {expected} bytes announced, {actual} read")]
    LotChanged { expected: u64, actual: u64 },

    /// A certificate is not a parsable X.509 RSA certificate.
    #[error("recipient certificate: {why}")]
    Certificate { why: String },

    /// [CE1]: the recipient certificate is invalid for this flow and environment (chain, dates,
    /// revocation, SubjectAltName label, KeyUsage). Sending stays blocked until the
    /// certificate is updated.
    #[error("[CE1] recipient certificate refused for {flow} {env}: {why}")]
    CertificateRefused {
        flow: &'static str,
        env: &'static str,
        why: String,
    },

    /// [CE2]: no CRL is installed for the certificate's issuer. Sending stays blocked until a
    /// CRL is installed.
    #[error("[CE2] no CRL installed for {issuer}: sending is blocked until one is installed")]
    NoCrl { issuer: String },

    /// No valid certificate is stored for this recipient.
    #[error("[CE1] no valid recipient certificate stored for {flow} {env}")]
    NoCertificate {
        flow: &'static str,
        env: &'static str,
    },

    /// The Subject reference supplied by the LPS (Formater_Lot) is malformed.
    #[error("subject reference {reference:?}: {why}")]
    SubjectRef { reference: String, why: String },

    /// A header value (address, file name) is unusable in a message.
    #[error("message header {header}: {why}")]
    Header { header: &'static str, why: String },

    /// DER encoding of the CMS structure failed.
    #[error("CMS encoding: {0}")]
    Der(#[from] der::Error),

    /// RSA key transport of the content key failed.
    #[error("RSA key transport: {0}")]
    Rsa(#[from] rsa::Error),

    /// The trust store failed for a reason other than refusing the certificate.
    #[error("trust store: {0}")]
    Trust(passerelle_trust::TrustError),

    /// A received CMS envelope (OCT profile) is not one we can open: its shape, or it is
    /// addressed to another certificate.
    #[error("received envelope: {why}")]
    Envelope { why: String },

    /// The envelope could not be decrypted (wrong key or corrupt content; deliberately not
    /// more precise, see `open`).
    #[error("received envelope: it could not be decrypted with our key")]
    Unopenable,

    /// The SESAM-Vitale directory could not be read.
    #[error("directory {url}: {why}")]
    Directory { url: String, why: String },
}

impl SesamError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SesamError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for the refusals that block sending until a certificate or CRL is installed
    /// ([CE1], [CE2]), as opposed to a bad lot or an I/O failure.
    pub fn blocks_sending(&self) -> bool {
        matches!(
            self,
            SesamError::CertificateRefused { .. }
                | SesamError::NoCrl { .. }
                | SesamError::NoCertificate { .. }
        )
    }
}
