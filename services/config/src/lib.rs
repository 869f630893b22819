//! The one configuration file of passerelle.
//!
//! On the appliance it lives at `/etc/passerelle/passerelle.toml`; `passerelle.example.toml`
//! at the repository root documents every key line by line, and a test keeps it loadable.
//!
//! Rules this crate enforces at load, so the daemon never starts half-configured:
//! - unknown keys are errors (a typo must not silently fall back to a default);
//! - every error names the key (`queue.retry.initial`) and the reason, plus the line;
//! - secrets (PINs, passwords, tokens) are never inline: sections that need one take a
//!   `*_file` path to a root-only file, read when the secret is used;
//! - listeners that serve without authentication (the status endpoint) may only bind
//!   loopback.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use passerelle_annuaire::AnnuaireConfig;
pub use passerelle_api_lps::PracticeMailConfig;
pub use passerelle_billing::BillingConfig;
pub use passerelle_cards::CardsConfig;
pub use passerelle_connector::ConnectorConfig;
pub use passerelle_imap_mirror::MirrorConfig;
pub use passerelle_keystore::KeystoreConfig;
pub use passerelle_liste_blanche::ListeBlancheConfig;
pub use passerelle_psc::PscConfig;
pub use passerelle_queue::QueueConfig;
pub use passerelle_rights::RightsConfig;
pub use passerelle_sesam::SesamConfig;
pub use passerelle_trust::TrustConfig;
pub use passerelle_updater::service::UpdaterConfig;
pub use passerelle_webadmin::WebadminConfig;

/// The configuration `make run` starts with: data under `./var`, listeners on 127.0.0.1.
pub const DEMO_TOML: &str = include_str!("../demo.toml");

/// Where the appliance image installs the configuration.
pub const DEFAULT_PATH: &str = "/etc/passerelle/passerelle.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read the configuration: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: key `{key}`{line}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        /// `" (line N)"` when the position is known, else empty.
        line: LineHint,
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

/// A source line for an error message, printed as ` (line N)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineHint(pub Option<usize>);

impl fmt::Display for LineHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, " (line {n})"),
            None => Ok(()),
        }
    }
}

/// Which side of the MSSanté space this box plays (product.md, "Two profiles, one image").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Client of an operator's API LPS (Réf. #2 side).
    Practice,
    /// The site's own Connecteur MSSanté (Réf. #1 side).
    Operator,
    /// Concentrator for many practices (operator connector plus billing concentration).
    Oct,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub general: General,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub queue: QueueConfig,
    /// The PKCS#11 token holding every private key of the box (issue #3).
    pub keystore: Option<KeystoreConfig>,
    /// Pinned anchors, trust profiles and CRLs (issue #3).
    pub trust: Option<TrustConfig>,
    /// The local Annuaire Santé cache and its LAN LDAP server (issue #10).
    pub annuaire: Option<AnnuaireConfig>,
    /// SESAM-Vitale attachment encryption and recipient certificates (issue #6).
    pub sesam: Option<SesamConfig>,
    /// The verified liste blanche of the MSSanté domains (operator and OCT profiles, issue #5).
    pub liste_blanche: Option<ListeBlancheConfig>,
    /// The site's Connecteur MSSanté: TM3.1P inbound, TM3.2P outbound (issue #5).
    pub connector: Option<ConnectorConfig>,
    /// The box's own identity on the LAN: its device key in the token (web admin, rights
    /// endpoint).
    pub device: Option<Device>,
    /// The local web admin (issue #8).
    pub webadmin: Option<WebadminConfig>,
    /// CPS card readers over PC/SC (issue #7).
    pub cards: Option<CardsConfig>,
    /// The Visiodroits/AMC rights proxy (issue #7).
    pub rights: Option<RightsConfig>,
    /// Pro Santé Connect tokens for personal and organisational BALs (issue #4).
    pub psc: Option<PscConfig>,
    /// The mirror of the operator's BALs into the local mailboxes (issue #4).
    pub mirror: Option<MirrorConfig>,
    /// Practice profile, outbound: LAN submission and delivery through the API LPS (issue #4).
    pub practice_mail: Option<PracticeMailConfig>,
    /// Billing lots: intake, transmission to the caisse, returns and ARL tracking (issue #6).
    pub billing: Option<BillingConfig>,
    /// Signed A/B updates from the vendor's TUF repository (issue #9).
    pub updater: Option<UpdaterConfig>,
}

/// The device certificate the box presents on the LAN. Its key is generated in the token at
/// first start and its certificate is self-signed by that key until an issued one is imported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Label of the device key in the token.
    #[serde(default = "default_device_key_label")]
    pub key_label: String,
    /// Name the box answers to on the LAN (the certificate's CN and DNS name).
    pub name: String,
    /// The practice or organisation operating the box (the certificate's O).
    pub organization: String,
}

fn default_device_key_label() -> String {
    "device".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    pub profile: Profile,
    /// Durable state: queues, caches, audit log. `/var/lib/passerelle` on the appliance.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
}

/// The unauthenticated status endpoint (`/healthz`, `/metrics`) used by the updater's
/// health check and by local monitoring. Loopback only: it serves no health data, but
/// queue depths are still nobody else's business.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Status {
    pub listen: SocketAddr,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            listen: SocketAddr::from(([127, 0, 0, 1], 8079)),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        Config::from_toml(&text, &origin)
    }

    /// The embedded demonstration configuration (`make run`).
    pub fn demo() -> Result<Config, ConfigError> {
        Config::from_toml(DEMO_TOML, "embedded demo configuration")
    }

    /// Parses and validates TOML text; `origin` names the source in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            ConfigError::Invalid {
                origin: origin.to_owned(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                line: LineHint(inner.span().map(|span| line_of(text, span.start))),
                reason: inner.message().trim().to_owned(),
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            line: LineHint(None),
            reason,
        };
        if self.general.data_dir.as_os_str().is_empty() {
            return Err(invalid("general.data_dir", "must not be empty".to_owned()));
        }
        if !self.status.listen.ip().is_loopback() {
            return Err(invalid(
                "status.listen",
                format!(
                    "{} is not a loopback address; the status endpoint has no authentication \
                     and may only listen on 127.0.0.0/8 or ::1",
                    self.status.listen
                ),
            ));
        }
        if let Some(sesam) = &self.sesam {
            sesam.check().map_err(|reason| {
                let (key, reason) = reason
                    .split_once(": ")
                    .map_or(("sesam".to_owned(), reason.clone()), |(key, why)| {
                        (format!("sesam.{key}"), why.to_owned())
                    });
                invalid(&key, reason)
            })?;
        }
        if let Some(billing) = &self.billing {
            billing.check().map_err(|reason| {
                // "returns.folder: …" or "oct.practices \"x\": …" → billing.returns.folder
                let key = reason
                    .split([':', ' '])
                    .next()
                    .filter(|k| !k.is_empty())
                    .map_or_else(|| "billing".to_owned(), |k| format!("billing.{k}"));
                invalid(&key, reason.clone())
            })?;
        }
        if let Some(practice_mail) = &self.practice_mail {
            let needs_psc = practice_mail
                .bals
                .iter()
                .any(|bal| bal.kind != passerelle_api_lps::BalKind::App);
            if needs_psc && self.psc.is_none() {
                return Err(invalid(
                    "practice_mail.bals",
                    "personal and organisational BALs sign in with Pro Santé Connect: \
                     configure [psc] (EX_LPS_0700)"
                        .to_owned(),
                ));
            }
        }
        if let Some(mirror) = &self.mirror {
            mirror
                .validate()
                .map_err(|err| invalid("mirror", err.to_string()))?;
        }
        let queue = &self.queue;
        if queue.first_retry.is_zero() {
            return Err(invalid(
                "queue.first_retry",
                "must be longer than zero".to_owned(),
            ));
        }
        if queue.max_retry < queue.first_retry {
            return Err(invalid(
                "queue.max_retry",
                "must not be shorter than queue.first_retry".to_owned(),
            ));
        }
        if !(0.0..=1.0).contains(&queue.retry_jitter) {
            return Err(invalid(
                "queue.retry_jitter",
                "must be a ratio between 0.0 and 1.0".to_owned(),
            ));
        }
        if queue.lifetime <= queue.first_retry {
            return Err(invalid(
                "queue.lifetime",
                "must be longer than queue.first_retry, or nothing is ever retried".to_owned(),
            ));
        }
        if queue.inline_payload_max > queue.max_payload {
            return Err(invalid(
                "queue.inline_payload_max",
                "must not exceed queue.max_payload".to_owned(),
            ));
        }
        Ok(())
    }

    /// The queue database lives here.
    pub fn queue_dir(&self) -> PathBuf {
        self.general.data_dir.join("queue")
    }
}

fn line_of(text: &str, byte_offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(byte_offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[general]\nprofile = \"practice\"\ndata_dir = \"/var/lib/passerelle\"\n";

    #[test]
    fn minimal_file_gets_safe_defaults() {
        let config = Config::from_toml(MINIMAL, "test").expect("minimal config loads");
        assert_eq!(config.general.profile, Profile::Practice);
        assert!(config.status.listen.ip().is_loopback());
        assert_eq!(config.logging.level, LogLevel::Info);
    }

    #[test]
    fn demo_configuration_loads_and_keeps_data_local() {
        let config = Config::demo().expect("embedded demo config is valid");
        assert!(
            config.general.data_dir.is_relative(),
            "demo data stays under ./var"
        );
        assert!(config.status.listen.ip().is_loopback());
    }

    #[test]
    fn example_file_documents_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../passerelle.example.toml");
        let config = Config::load(&path).expect("passerelle.example.toml loads");
        assert_eq!(config.general.data_dir, Path::new("/var/lib/passerelle"));
    }

    #[test]
    fn updater_table_takes_the_appliance_defaults() {
        use passerelle_updater::service::Reboot;
        let text = format!(
            "{MINIMAL}[updater]\nvendor_url = \"https://updates.example/\"\nboard = \"qemu-x86_64\"\n"
        );
        let updater = Config::from_toml(&text, "t")
            .expect("loads")
            .updater
            .expect("[updater]");
        assert_eq!(updater.slot_b, Path::new("/dev/disk/by-partlabel/root-b"));
        assert_eq!(updater.esp, Path::new("/boot/efi"));
        assert_eq!(updater.reboot, Reboot::At("03:30".into()));
        let now = format!("{text}reboot = \"immediately\"\n");
        let updater = Config::from_toml(&now, "t")
            .expect("loads")
            .updater
            .expect("[updater]");
        assert_eq!(updater.reboot, Reboot::Immediately);
        let at = format!("{text}reboot = {{ at = \"22:15\" }}\n");
        let updater = Config::from_toml(&at, "t")
            .expect("loads")
            .updater
            .expect("[updater]");
        assert_eq!(updater.reboot, Reboot::At("22:15".into()));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}\n[status]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n");
        let err = Config::from_toml(&text, "f.toml").expect_err("typo refused");
        let message = err.to_string();
        assert!(message.contains("f.toml"), "{message}");
        assert!(message.contains("status"), "{message}");
        assert!(message.contains("listne"), "{message}");
        assert!(message.contains("line 7"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let text = format!("{MINIMAL}[logging]\nlevel = 3\n");
        let err = Config::from_toml(&text, "f.toml").expect_err("wrong type refused");
        assert_eq!(err.key(), Some("logging.level"), "{err}");
    }

    #[test]
    fn bad_enum_value_lists_the_choices() {
        let text = MINIMAL.replace("practice", "hospital");
        let err = Config::from_toml(&text, "f.toml").expect_err("unknown profile refused");
        assert_eq!(err.key(), Some("general.profile"), "{err}");
        assert!(err.to_string().contains("practice"), "{err}");
    }

    #[test]
    fn missing_section_is_named() {
        let err = Config::from_toml("[status]\n", "f.toml").expect_err("no [general]");
        assert!(err.to_string().contains("general"), "{err}");
    }

    #[test]
    fn status_listener_off_loopback_is_refused() {
        let text = format!("{MINIMAL}[status]\nlisten = \"0.0.0.0:8079\"\n");
        let err = Config::from_toml(&text, "f.toml").expect_err("public status refused");
        assert_eq!(err.key(), Some("status.listen"), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn inconsistent_retry_policy_is_refused_with_its_key() {
        let text = format!("{MINIMAL}[queue]\nfirst_retry = \"2h\"\nmax_retry = \"1h\"\n");
        let err = Config::from_toml(&text, "f.toml").expect_err("max < first refused");
        assert_eq!(err.key(), Some("queue.max_retry"), "{err}");
        let text = format!("{MINIMAL}[queue]\nretry_jitter = 1.5\n");
        let err = Config::from_toml(&text, "f.toml").expect_err("jitter > 1 refused");
        assert_eq!(err.key(), Some("queue.retry_jitter"), "{err}");
    }

    #[test]
    fn syntax_error_gives_a_line() {
        let err = Config::from_toml("[general\nprofile=1", "f.toml").expect_err("bad TOML");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.toml");
        let err = Config::load(&missing).expect_err("missing file");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }
}
