//! `[webadmin]` configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where the web admin listens and how strict it is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebadminConfig {
    /// HTTPS listener (the LAN address of the appliance, port 443 on the box).
    pub listen: SocketAddr,
    /// Plain HTTP listener that only redirects to HTTPS; none when absent.
    #[serde(default)]
    pub redirect_listen: Option<SocketAddr>,
    /// Directory of `webadmin.sqlite` (accounts, sessions, audit log, samples).
    pub data_dir: PathBuf,
    /// File the first-run setup writes the token user PIN to (mode 0600); the keystore's
    /// `pin_file`.
    #[serde(default)]
    pub token_pin_file: Option<PathBuf>,
    /// Absolute lifetime of a session.
    #[serde(default = "default_session_lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// A session unused this long ends.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default)]
    pub lockout: LockoutPolicy,
    /// Pro Santé Connect authorize endpoint for the BAL sign-in (e.g.
    /// `https://wallet.esw.esante.gouv.fr/auth`); no sign-in button without it.
    #[serde(default)]
    pub psc_authorize_url: Option<String>,
    /// The redirect URI registered with PSC (`https://<box>/messagerie/psc/callback`);
    /// by default built from the address the browser used.
    #[serde(default)]
    pub psc_redirect_uri: Option<String>,
    /// Scopes asked at the sign-in.
    #[serde(default = "default_psc_scope")]
    pub psc_scope: String,
    /// Interval of the queue samples behind the 24 h charts.
    #[serde(default = "default_sample_interval", with = "humantime_serde")]
    pub sample_interval: Duration,
}

/// Failed logins allowed per account and per client address within `window` before both are
/// locked for `duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            duration: Duration::from_secs(15 * 60),
        }
    }
}

fn default_psc_scope() -> String {
    "openid scope_all".to_owned()
}

fn default_session_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_sample_interval() -> Duration {
    Duration::from_secs(5 * 60)
}

impl WebadminConfig {
    /// Defaults for everything but the addresses and the data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            redirect_listen: None,
            data_dir,
            token_pin_file: None,
            session_lifetime: default_session_lifetime(),
            idle_timeout: default_idle_timeout(),
            lockout: LockoutPolicy::default(),
            sample_interval: default_sample_interval(),
            psc_authorize_url: None,
            psc_redirect_uri: None,
            psc_scope: default_psc_scope(),
        }
    }
}
