//! The one error type of the crate.

use passerelle_smtp::SmtpError;

/// Errors of the practice mail service, naming the BAL or peer concerned.
#[derive(Debug, thiserror::Error)]
pub enum ApiLpsError {
    #[error("practice mail configuration: {0}")]
    Config(String),
    #[error("BAL {bal}: autoconfiguration (TM5.1P/EX_LPS_0300): {detail}")]
    Autoconfig { bal: String, detail: String },
    #[error("BAL {bal}: {source}")]
    Smtp { bal: String, source: Box<SmtpError> },
    #[error("BAL {bal}: access token: {detail}")]
    Token { bal: String, detail: String },
    #[error("BAL {bal}: re-authentication required (EX_LPS_0710): {detail}")]
    ReauthRequired { bal: String, detail: String },
    #[error("outbox: {0}")]
    Queue(#[from] passerelle_queue::QueueError),
    #[error("outbox item: {0}")]
    Payload(String),
    #[error("keystore: {0}")]
    Keystore(#[from] passerelle_keystore::KeystoreError),
    #[error("trust: {0}")]
    Trust(#[from] passerelle_trust::TrustError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ApiLpsError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
