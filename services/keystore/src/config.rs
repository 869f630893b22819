//! Configuration of the token the appliance keeps its keys in.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the keys live: which PKCS#11 module, which token, and the file the
/// user PIN is read from (root-only, mode 0600 or stricter).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreConfig {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, the TPM's
    /// `libtpm2_pkcs11.so`, …).
    pub module: PathBuf,
    /// Label of the token; slot numbers are not stable across initialisations.
    pub token_label: String,
    /// File holding the user PIN, alone on its first line.
    pub pin_file: PathBuf,
}
