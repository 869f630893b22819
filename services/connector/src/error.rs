//! The one error type of the crate.

use std::path::PathBuf;

/// Errors of the connector, naming the peer, file or requirement concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector configuration: {0}")]
    Config(String),
    #[error("connector: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connector: listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("connector: trust: {0}")]
    Trust(#[from] passerelle_trust::TrustError),
    #[error("connector: keystore: {0}")]
    Keystore(#[from] passerelle_keystore::KeystoreError),
    #[error("connector: queue: {0}")]
    Queue(#[from] passerelle_queue::QueueError),
    #[error("connector: smtp: {0}")]
    Smtp(#[from] passerelle_smtp::SmtpError),
    #[error("connector: queued item {id}: {detail}")]
    BadItem { id: String, detail: String },
}

impl ConnectorError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
