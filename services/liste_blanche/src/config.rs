//! `[liste_blanche]` configuration; the config crate embeds [`ListeBlancheConfig`].

use std::time::Duration;

use passerelle_trust::Dn;
use serde::Deserialize;

use crate::error::ListeBlancheError;
use crate::verify::SignerIdentity;

/// EX_2.2_5010: the production list.
pub const PRODUCTION_URL: &str = "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml";
/// EX_2.2_5010: the list of the Espace de Confiance de test.
pub const TEST_URL: &str = "https://espacedeconfiance.test.mssante.fr/listeblanchemssante.xml";

/// Where and how often the list is fetched and who must have signed it. The verified copy is
/// kept under `<general.data_dir>/liste_blanche/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListeBlancheConfig {
    /// `https://` URL of the list ([`PRODUCTION_URL`] or [`TEST_URL`]).
    #[serde(default = "default_url")]
    pub url: String,
    /// EX_2.2_5010: every day.
    #[serde(with = "humantime_serde", default = "default_refresh_every")]
    pub refresh_every: Duration,
    /// Alert when the verified list in use is older than this (the spec sets no maximum age;
    /// two missed daily fetches is our default).
    #[serde(with = "humantime_serde", default = "default_stale_after")]
    pub stale_after: Duration,
    /// Time limit of one download.
    #[serde(with = "humantime_serde", default = "default_fetch_timeout")]
    pub fetch_timeout: Duration,
    /// Trust profile (role `any`) the `X509Data` signer certificate is validated with
    /// (IGC-Santé Élémentaire Organisations, with revocation).
    pub signer_profile: String,
    /// Trust profile (role `tls-server`) for the HTTPS server (`mssante-server`, or
    /// `mssante-server-test` for the test list).
    pub https_profile: String,
    /// Expected signer subject DN (RFC 4514), compared after normalisation. One of this and
    /// `signer_ou` is required (EX_2.2_5050: "attribué à l'ANS").
    #[serde(default)]
    pub signer_subject: Option<String>,
    /// Expected `OU` of the signer (the ANS national structure id).
    #[serde(default)]
    pub signer_ou: Option<String>,
}

fn default_url() -> String {
    PRODUCTION_URL.to_owned()
}

fn default_refresh_every() -> Duration {
    Duration::from_hours(24)
}

fn default_stale_after() -> Duration {
    Duration::from_hours(72)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_mins(2)
}

impl ListeBlancheConfig {
    /// The signer identity, from exactly one of `signer_subject` and `signer_ou`.
    pub fn identity(&self) -> Result<SignerIdentity, ListeBlancheError> {
        match (&self.signer_subject, &self.signer_ou) {
            (Some(dn), None) => Dn::parse(dn)
                .map(SignerIdentity::Subject)
                .map_err(|e| ListeBlancheError::Config(format!("signer_subject: {e}"))),
            (None, Some(ou)) if !ou.is_empty() => Ok(SignerIdentity::Ou(ou.clone())),
            _ => Err(ListeBlancheError::Config(
                "exactly one of signer_subject and signer_ou is required".to_owned(),
            )),
        }
    }
}
