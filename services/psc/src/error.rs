use std::path::PathBuf;

/// Everything the Pro Santé Connect client can fail with. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum PscError {
    #[error("PSC configuration: {0}")]
    Config(String),
    #[error("secret file {path}: {why}")]
    SecretFile { path: PathBuf, why: String },
    #[error("refresh-token store {path}: {why}")]
    Store { path: PathBuf, why: String },
    #[error("refresh-token store key from token key {label:?}: {why}")]
    StoreKey { label: String, why: String },
    /// No refresh token was ever stored for this BAL (the practitioner never logged in).
    #[error("BAL {bal}: no Pro Santé Connect session; log in with CPS/e-CPS (OA-07)")]
    NoSession { bal: String },
    /// PSC refused the refresh token (SSO session over, revoked): a human must log in again
    /// (EX_LPS_1000, Réf. #2 1.10, OA-07). Mail for the BAL stays queued.
    #[error("BAL {bal}: re-authentication with Pro Santé Connect required: {reason}")]
    ReauthRequired { bal: String, reason: String },
    /// The interactive login did not give a usable session (code refused, nonce mismatch).
    #[error("BAL {bal}: Pro Santé Connect login refused: {why}")]
    LoginRefused { bal: String, why: String },
    /// PSC unreachable or answering 5xx/garbage: try again later.
    #[error("Pro Santé Connect token endpoint {url}: {why} (temporary)")]
    Unavailable { url: String, why: String },
    /// PSC refused our client credentials: an operator must fix the configuration.
    #[error("Pro Santé Connect refused client {client_id}: {why}")]
    ClientRefused { client_id: String, why: String },
}

impl PscError {
    /// Worth retrying later without human action.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
