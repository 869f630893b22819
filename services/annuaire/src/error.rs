//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the Annuaire service; each variant names the source, the
/// row or the requirement concerned.
#[derive(Debug, thiserror::Error)]
pub enum AnnuaireError {
    /// The extraction file as a whole is unusable; the previous cache stays in place.
    #[error("extraction {source_name}: refused as a whole: {reason}")]
    ExtractionRefused { source_name: String, reason: String },
    /// A refresh produced too few entries compared with the last good load.
    #[error(
        "refresh refused: {new} entries is below the sanity floor of {floor} (last good load had {previous}); old cache kept"
    )]
    BelowSanityFloor {
        new: usize,
        previous: usize,
        floor: usize,
    },
    /// No source is enabled, so a refresh has nothing to load.
    #[error("no Annuaire source is enabled in the configuration")]
    NoSource,
    /// The local cache (SQLite) failed.
    #[error("annuaire cache {path}: {context}: {source}")]
    Cache {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A file of the cache or of a source could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is unusable.
    #[error("annuaire configuration: {reason}")]
    Config { reason: String },
    /// The LAN LDAP server could not listen.
    #[error("LDAP server {addr}: {context}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A search the user typed cannot be run as is.
    #[error("search refused: {reason}")]
    BadQuery { reason: String },
    /// EX_2.1.1_5010: the upstream LDAP is for interactive look-ups only.
    #[error("EX_2.1.1_5010: refused, the national LDAP is not for bulk harvesting: {reason}")]
    BulkHarvestRefused { reason: String },
    /// RE_2.1_5010: the upstream answered SizeLimitExceeded or TimeLimitExceeded.
    #[error("RE_2.1_5010: too many results from {peer} ({limit}); refine your search")]
    RefineSearch { peer: String, limit: &'static str },
    /// The upstream LDAP failed otherwise.
    #[error("upstream LDAP {peer}: {context}: {reason}")]
    Upstream {
        peer: String,
        context: &'static str,
        reason: String,
    },
    /// A remote source (extraction download, FHIR API) failed.
    #[error("source {source_name} ({url}): {reason}")]
    Source {
        source_name: &'static str,
        url: String,
        reason: String,
    },
    /// A peer did not answer within its bound.
    #[error("{peer}: no answer within {after:?} ({context})")]
    Timeout {
        peer: String,
        context: &'static str,
        after: std::time::Duration,
    },
}

impl AnnuaireError {
    pub(crate) fn cache(
        path: &std::path::Path,
        context: &'static str,
        source: sqlx::Error,
    ) -> Self {
        Self::Cache {
            path: path.to_owned(),
            context,
            source,
        }
    }

    pub(crate) fn io(
        path: &std::path::Path,
        context: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.to_owned(),
            context,
            source,
        }
    }
}

/// Result type of the crate.
pub type Result<T, E = AnnuaireError> = std::result::Result<T, E>;
