use std::net::SocketAddr;
use std::path::PathBuf;

/// What can stop the web admin.
#[derive(Debug, thiserror::Error)]
pub enum WebadminError {
    #[error("web admin database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("web admin database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("web admin state: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("device certificate: {0}")]
    DeviceCertificate(String),
    #[error("keystore: {0}")]
    Keystore(#[from] passerelle_keystore::KeystoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = WebadminError> = std::result::Result<T, E>;
