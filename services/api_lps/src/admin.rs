//! What the web admin reads and does on the practice mail service, additive to [`crate::serve`]:
//! a [`MailHandle`] on the running BALs (state, connection test), and the [`BalOverlay`], the
//! applicative BALs added from the web admin, kept in a file of the data directory and merged
//! into the configuration when the service starts (applied on the next restart).

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use passerelle_smtp::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::ApiLpsError;
use crate::config::{BalConfig, BalKind, PracticeMailConfig};
use crate::delivery::BalDelivery;
use crate::upstream::{ConnectError, TokenError, Upstream};

/// Largest overlay file read.
const MAX_OVERLAY: u64 = 1024 * 1024;
/// Most BALs the overlay holds.
pub const MAX_OVERLAY_BALS: usize = 64;

#[derive(Debug, Default)]
struct Running {
    config: Option<PracticeMailConfig>,
    overlay: Option<PathBuf>,
    bals: Vec<Arc<BalDelivery>>,
}

/// A handle on the running service, filled when it has started. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MailHandle(Arc<RwLock<Running>>);

impl MailHandle {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Running> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(
        &self,
        config: PracticeMailConfig,
        overlay: Option<PathBuf>,
        bals: Vec<Arc<BalDelivery>>,
    ) {
        let mut running = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = Running {
            config: Some(config),
            overlay,
            bals,
        };
    }

    /// The running BALs, by name; empty until the service has started.
    pub fn bals(&self) -> Vec<Arc<BalDelivery>> {
        self.read().bals.clone()
    }

    pub fn bal(&self, name: &str) -> Option<Arc<BalDelivery>> {
        self.read()
            .bals
            .iter()
            .find(|b| b.upstream.bal().name == name)
            .cloned()
    }

    /// The configuration the service runs with (overlay merged).
    pub fn config(&self) -> Option<PracticeMailConfig> {
        self.read().config.clone()
    }

    /// Where BALs added from the web admin are kept, when the daemon gave a place.
    pub fn overlay_path(&self) -> Option<PathBuf> {
        self.read().overlay.clone()
    }
}

/// A successful connection test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionReport {
    /// The front's TLS name and the address reached.
    pub host: String,
    pub peer: SocketAddr,
    /// `PLAIN` (APP BAL) or `XOAUTH2` (PER/ORG BAL).
    pub mechanism: &'static str,
    pub elapsed: Duration,
}

impl Upstream {
    /// Connects to the BAL's front, STARTTLS with the MSSanté profile, authenticates once and
    /// quits. Unlike [`Upstream::connect`] it changes nothing: no token eviction, no
    /// "re-authentication required" mark.
    pub async fn test_connection(&self) -> Result<ConnectionReport, ConnectError> {
        let started = Instant::now();
        let (endpoint, _) = self.endpoint().await?;
        let mut client = self.open().await?;
        let bal = self.bal();
        let (mechanism, result) = match bal.kind {
            BalKind::App => {
                let password = self.password().unwrap_or("");
                ("PLAIN", client.auth_plain("", &bal.address, password).await)
            }
            BalKind::Per | BalKind::Org => {
                let token = self
                    .tokens()
                    .token(&bal.address)
                    .await
                    .map_err(|e| match e {
                        TokenError::ReauthRequired(d) => ConnectError::Reauth(d),
                        TokenError::Unavailable(d) => ConnectError::Unreachable(d),
                    })?;
                ("XOAUTH2", client.auth_xoauth2(&bal.address, &token).await)
            }
        };
        let peer = client.peer();
        drop(client.quit().await);
        match result {
            Ok(()) => Ok(ConnectionReport {
                host: endpoint.host,
                peer,
                mechanism,
                elapsed: started.elapsed(),
            }),
            Err(e) if e.kind() == ErrorKind::Authentication => {
                Err(ConnectError::Reauth(e.to_string()))
            }
            Err(e) => Err(ConnectError::Unreachable(e.to_string())),
        }
    }
}

impl BalDelivery {
    /// See [`Upstream::test_connection`].
    pub async fn test_connection(&self) -> Result<ConnectionReport, ConnectError> {
        self.upstream.test_connection().await
    }
}

/// One BAL added from the web admin, and the local accounts that may send as it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayBal {
    pub bal: BalConfig,
    #[serde(default)]
    pub accounts: Vec<String>,
}

/// The applicative BALs added from the web admin (a JSON file in the data directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalOverlay {
    pub bals: Vec<OverlayBal>,
}

fn overlay_err(path: &Path, why: impl std::fmt::Display) -> ApiLpsError {
    ApiLpsError::Config(format!("BAL overlay {}: {why}", path.display()))
}

/// A BAL short name: `[a-z0-9_-]`, 1 to 32 characters.
pub fn valid_bal_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A BAL address: one `@`, a non-empty local part, a dotted domain, no spaces or controls.
pub fn valid_bal_address(address: &str) -> bool {
    address.len() <= 254
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !address
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>')
}

impl BalOverlay {
    /// Reads the overlay; a missing file is an empty overlay.
    pub fn load(path: &Path) -> Result<Self, ApiLpsError> {
        use std::io::Read as _;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(overlay_err(path, e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_OVERLAY + 1)
            .read_to_end(&mut raw)
            .map_err(|e| overlay_err(path, e))?;
        if raw.len() as u64 > MAX_OVERLAY {
            return Err(overlay_err(path, "larger than 1 MiB"));
        }
        let overlay: Self = serde_json::from_slice(&raw).map_err(|e| overlay_err(path, e))?;
        if overlay.bals.len() > MAX_OVERLAY_BALS {
            return Err(overlay_err(path, "too many BALs"));
        }
        Ok(overlay)
    }

    /// Writes the overlay atomically (mode 0600, fsynced, renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), ApiLpsError> {
        use std::io::Write as _;
        let tmp = path.with_extension("part");
        let json = serde_json::to_vec_pretty(self).map_err(|e| overlay_err(path, e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| overlay_err(path, e))?;
        file.write_all(&json).map_err(|e| overlay_err(path, e))?;
        file.sync_all().map_err(|e| overlay_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| overlay_err(path, e))
    }

    /// Checks `bal` against `config` and this overlay before it is added.
    pub fn check(&self, config: &PracticeMailConfig, new: &OverlayBal) -> Result<(), String> {
        let b = &new.bal;
        if b.kind != BalKind::App {
            return Err("only applicative BALs are added here".into());
        }
        if !valid_bal_name(&b.name) {
            return Err(format!("BAL name {:?}: [a-z0-9_-], 32 at most", b.name));
        }
        if !valid_bal_address(&b.address) {
            return Err(format!("BAL address {:?} is not an address", b.address));
        }
        if b.client_key_label.is_none() {
            return Err("an applicative BAL needs its ORG AUTH_CLI key (EX_LPS_1200)".into());
        }
        let taken = |name: &str, address: &str| {
            config
                .bals
                .iter()
                .chain(self.bals.iter().map(|o| &o.bal))
                .any(|x| x.name == name || x.address.eq_ignore_ascii_case(address))
        };
        if taken(&b.name, &b.address) {
            return Err(format!("BAL {} or {} already exists", b.name, b.address));
        }
        if let Some(a) = new
            .accounts
            .iter()
            .find(|a| !config.accounts.iter().any(|x| &x.user == *a))
        {
            return Err(format!("no local account {a:?}"));
        }
        if self.bals.len() >= MAX_OVERLAY_BALS {
            return Err("too many BALs added".into());
        }
        Ok(())
    }

    /// Merges the overlay into `config`: each BAL is appended and named in its accounts.
    pub fn apply(&self, config: &mut PracticeMailConfig) -> Result<(), ApiLpsError> {
        let mut merged = Self::default();
        for o in &self.bals {
            merged
                .check(config, o)
                .map_err(|why| ApiLpsError::Config(format!("BAL overlay: {why}")))?;
            config.bals.push(o.bal.clone());
            for account in &mut config.accounts {
                if o.accounts.contains(&account.user) {
                    account.bals.push(o.bal.name.clone());
                }
            }
            merged.bals.push(o.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeliveryConfig, DnsConfig, Limits, LocalAccount};

    fn config() -> PracticeMailConfig {
        PracticeMailConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            hostname: "passerelle.cabinet.local".into(),
            device_key_label: "device".into(),
            x_mss_nil: "NIL".into(),
            server_profile: "mssante-server".into(),
            accounts: vec![LocalAccount {
                user: "alice".into(),
                password_hash: "$argon2id$x".into(),
                mailbox: "alice@cabinet.local".into(),
                bals: vec![],
            }],
            bals: vec![],
            limits: Limits::default(),
            dsn_lmtp: "127.0.0.1:24".parse().expect("addr"),
            dns: DnsConfig::default(),
            delivery: DeliveryConfig::default(),
        }
    }

    fn app(name: &str, address: &str) -> OverlayBal {
        OverlayBal {
            bal: BalConfig {
                name: name.into(),
                address: address.into(),
                kind: BalKind::App,
                client_key_label: Some("org".into()),
                password_file: Some("/data/bal.password".into()),
                submission: None,
                connections: 2,
            },
            accounts: vec!["alice".into()],
        }
    }

    #[test]
    fn the_overlay_round_trips_and_merges_into_the_configuration() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bal-overlay.json");
        assert_eq!(
            BalOverlay::load(&path).expect("missing is empty"),
            BalOverlay::default()
        );
        let overlay = BalOverlay {
            bals: vec![app("compta", "compta@cabinet.mssante.fr")],
        };
        overlay.save(&path).expect("save");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let loaded = BalOverlay::load(&path).expect("load");
        assert_eq!(loaded, overlay);
        let mut config = config();
        loaded.apply(&mut config).expect("apply");
        assert_eq!(config.bals.len(), 1);
        assert_eq!(config.accounts[0].bals, ["compta"]);
    }

    #[test]
    fn the_overlay_refuses_duplicates_non_app_bals_unknown_accounts_and_bad_names() {
        let mut config = config();
        let overlay = BalOverlay {
            bals: vec![app("compta", "compta@cabinet.mssante.fr")],
        };
        overlay.apply(&mut config).expect("apply");
        let empty = BalOverlay::default();
        assert!(
            empty
                .check(&config, &app("compta", "x@cabinet.mssante.fr"))
                .is_err()
        );
        assert!(
            empty
                .check(&config, &app("autre", "COMPTA@cabinet.mssante.fr"))
                .is_err()
        );
        assert!(
            empty
                .check(&config, &app("Autre!", "a@cabinet.mssante.fr"))
                .is_err()
        );
        assert!(
            empty
                .check(&config, &app("autre", "pas-une-adresse"))
                .is_err()
        );
        let mut per = app("autre", "a@cabinet.mssante.fr");
        per.bal.kind = BalKind::Per;
        assert!(empty.check(&config, &per).is_err());
        let mut stranger = app("autre", "a@cabinet.mssante.fr");
        stranger.accounts = vec!["mallory".into()];
        assert!(empty.check(&config, &stranger).is_err());
        let mut keyless = app("autre", "a@cabinet.mssante.fr");
        keyless.bal.client_key_label = None;
        assert!(empty.check(&config, &keyless).is_err());
        assert!(
            empty
                .check(&config, &app("autre", "a@cabinet.mssante.fr"))
                .is_ok()
        );
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o.json");
        std::fs::write(&path, b"{\"bals\": 3}").expect("write");
        assert!(
            BalOverlay::load(&path).is_err(),
            "garbage is an error, not empty"
        );
    }
}
