//! `[sesam]` configuration: the directory, the local certificate store, the trust profiles and
//! the lot limits. The config crate embeds it; [`SesamConfig::check`] is its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::certs::Profiles;
use crate::envelope::MAX_PLAINTEXT_BYTES;
use crate::message::DEFAULT_MAX_LOT_BYTES;

/// SESAM-Vitale attachment encryption settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesamConfig {
    /// GIE SESAM-Vitale directory (`ldap://annuaire.sesam-vitale.fr`).
    #[serde(default = "default_directory_url")]
    pub directory_url: String,
    /// Time limit of one directory search.
    #[serde(with = "humantime_serde", default = "default_directory_timeout")]
    pub directory_timeout: Duration,
    /// The local store of validated recipient certificates.
    pub certificates_dir: PathBuf,
    /// Trust profile for real flows (AC-FACTURATION → AC-SESAM-VITALE-2034).
    #[serde(default = "default_profile_real")]
    pub profile_real: String,
    /// Trust profile for test and demo flows (the TEST branch, [CP1]).
    #[serde(default = "default_profile_test")]
    pub profile_test: String,
    /// Largest lot accepted, in bytes (at most 250 MiB).
    #[serde(default = "default_max_lot_bytes")]
    pub max_lot_bytes: u64,
    /// Gzip lots before encrypting them (`…/ZK`); the source strongly recommends compressing.
    #[serde(default)]
    pub compress: bool,
}

fn default_directory_url() -> String {
    "ldap://annuaire.sesam-vitale.fr".to_owned()
}

fn default_directory_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_profile_real() -> String {
    Profiles::default().real
}

fn default_profile_test() -> String {
    Profiles::default().test
}

fn default_max_lot_bytes() -> u64 {
    DEFAULT_MAX_LOT_BYTES
}

impl SesamConfig {
    /// The reasons this configuration cannot be used, by key.
    pub fn check(&self) -> Result<(), String> {
        if self.max_lot_bytes == 0 || self.max_lot_bytes > MAX_PLAINTEXT_BYTES {
            return Err(format!(
                "max_lot_bytes: must be between 1 and {MAX_PLAINTEXT_BYTES}"
            ));
        }
        crate::directory::Directory::new(&self.directory_url, self.directory_timeout)
            .map(|_| ())
            .map_err(|e| format!("directory_url: {e}"))
    }

    /// The trust profiles to validate recipient certificates with.
    pub fn profiles(&self) -> Profiles {
        Profiles {
            real: self.profile_real.clone(),
            test: self.profile_test.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let c: SesamConfig =
            toml::from_str("certificates_dir = '/var/lib/passerelle/sesam'").expect("parse");
        assert_eq!(c.directory_url, "ldap://annuaire.sesam-vitale.fr");
        assert_eq!(c.max_lot_bytes, DEFAULT_MAX_LOT_BYTES);
        c.check().expect("valid");
        let big: SesamConfig =
            toml::from_str("certificates_dir = '/x'\nmax_lot_bytes = 300000000").expect("parse");
        assert!(big.check().is_err());
    }
}
