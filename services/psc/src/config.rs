use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[psc]`: the appliance as a Pro Santé Connect client (the "serveur intermédiaire" of
/// §6.8.4.2, Figure 35).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PscConfig {
    /// Token endpoint, e.g.
    /// `https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet/protocol/openid-connect/token`.
    pub token_url: String,
    /// The client id PSC registered for this appliance.
    pub client_id: String,
    /// File holding the client secret (mode 0600, first line), sent as `client_secret` in
    /// the form body (`client_secret_post`).
    pub client_secret_file: PathBuf,
    /// Trust profile that validates the PSC server certificate.
    pub https_profile: String,
    /// The encrypted refresh-token store (a JSON file, written atomically).
    pub store_file: PathBuf,
    /// Label of the RSA key in the PKCS#11 token from which the store key is derived
    /// (`passerelle keystore generate <label> rsa2048`).
    #[serde(default = "default_store_key_label")]
    pub store_key_label: String,
    /// An access token with less than this left is refreshed before use: PSC tokens live
    /// ~60 s and must be valid when the IMAP/SMTP server checks them (EX_LPS_0900 step 6).
    #[serde(with = "humantime_serde", default = "default_refresh_margin")]
    pub refresh_margin: Duration,
    /// Bound of one token-endpoint exchange.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

fn default_store_key_label() -> String {
    "psc-store".to_owned()
}

fn default_refresh_margin() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}
