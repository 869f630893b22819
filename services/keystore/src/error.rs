//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong with the keystore. Each variant names what was
/// wrong (which module, token, key or file, and the PKCS#11 return value) so
/// that a CLI line or a log record is enough to act on it. No variant ever
/// carries a PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The PKCS#11 module could not be loaded (missing file, not a module).
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    ModuleLoad { module: PathBuf, reason: String },

    /// No slot holds an initialised token with this label.
    #[error("no PKCS#11 token labelled {token:?} in module {module} (tokens present: {present})")]
    TokenNotFound {
        module: PathBuf,
        token: String,
        present: String,
    },

    /// `init` was asked for a token label that already exists.
    #[error("a token labelled {token:?} already exists; refusing to re-initialise it")]
    TokenExists { token: String },

    /// The module has no free slot to initialise a new token in.
    #[error("no free slot to initialise token {token:?} in module {module}")]
    NoFreeSlot { module: PathBuf, token: String },

    /// The PIN file could not be read.
    #[error("cannot read PIN file {path}: {source}")]
    PinFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The PIN file is readable or writable by group or others.
    #[error(
        "PIN file {path} has mode {mode:04o}; it must not be accessible by group or others (chmod 600)"
    )]
    PinFileMode { path: PathBuf, mode: u32 },

    /// The PIN file is empty (after removing the trailing newline).
    #[error("PIN file {path} is empty")]
    PinFileEmpty { path: PathBuf },

    /// Login was refused. Never retried: a retry loop could lock the token.
    #[error("login to token {token:?} refused: {rv}")]
    Login { token: String, rv: String },

    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} on token {token:?}{} failed: {rv}", key.as_deref().map(|k| format!(" (key {k})")).unwrap_or_default())]
    Pkcs11 {
        token: String,
        key: Option<String>,
        function: String,
        rv: String,
    },

    /// No key with this label or id is on the token.
    #[error("no key {key} on token {token:?}")]
    KeyNotFound { token: String, key: String },

    /// A key with this label already exists (labels name keys in config).
    #[error("a key labelled {label:?} already exists on token {token:?}")]
    KeyExists { token: String, label: String },

    /// The key exists but has no certificate yet.
    #[error(
        "key {key} on token {token:?} has no certificate; import one first (keystore import-cert)"
    )]
    CertificateMissing { token: String, key: String },

    /// The key's type or public data is not one this crate handles.
    #[error("key {key} on token {token:?} is unsupported: {reason}")]
    UnsupportedKey {
        token: String,
        key: String,
        reason: String,
    },

    /// A certificate file could not be read.
    #[error("cannot read certificate file {path}: {source}")]
    CertificateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A certificate file holds no parsable certificate.
    #[error("certificate file {path} is not a valid X.509 certificate: {reason}")]
    CertificateCorrupt { path: PathBuf, reason: String },

    /// None of the certificates in the file certifies the key.
    #[error("certificate in {path} does not match key {key} on token {token:?}: {reason}")]
    CertificateKeyMismatch {
        path: PathBuf,
        token: String,
        key: String,
        reason: String,
    },

    /// A subject field is unusable (empty, or `C` not two letters).
    #[error("invalid subject: {0}")]
    InvalidSubject(String),

    /// rcgen refused to build the CSR.
    #[error("cannot build CSR for key {key}: {reason}")]
    Csr { key: String, reason: String },

    /// A signature from the token had an unexpected shape.
    #[error("token {token:?} returned a malformed {what} for key {key}")]
    MalformedTokenOutput {
        token: String,
        key: String,
        what: &'static str,
    },

    /// The token thread did not answer within the bound.
    #[error("token {token:?} did not answer within {millis} ms")]
    Timeout { token: String, millis: u128 },

    /// The token thread is gone (it panicked or the keystore was dropped).
    #[error("the keystore thread for token {token:?} has stopped")]
    WorkerGone { token: String },

    /// A key id given on the command line is not hex.
    #[error("invalid key id {0:?}: expected hex digits")]
    InvalidKeyId(String),
}

pub type Result<T, E = KeystoreError> = std::result::Result<T, E>;

/// The `CKR_…` name of a PKCS#11 return value (`PinIncorrect` → `CKR_PIN_INCORRECT`),
/// which is what operators search for in token documentation.
pub(crate) fn ckr_name(err: &cryptoki::error::Error) -> String {
    match err {
        cryptoki::error::Error::Pkcs11(rv, _) => {
            let camel = format!("{rv:?}");
            let mut out = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        other => other.to_string(),
    }
}

/// The PKCS#11 function that failed, for error context.
pub(crate) fn function_name(err: &cryptoki::error::Error) -> String {
    match err {
        cryptoki::error::Error::Pkcs11(_, function) => function.to_string(),
        _ => "call".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;
    use cryptoki::error::{Error, RvError};

    #[test]
    fn ckr_name_spells_the_pkcs11_constant() {
        let err = Error::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert_eq!(ckr_name(&err), "CKR_PIN_INCORRECT");
        let err = Error::Pkcs11(RvError::KeyHandleInvalid, Function::Sign);
        assert_eq!(ckr_name(&err), "CKR_KEY_HANDLE_INVALID");
    }
}
