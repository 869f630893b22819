use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::MirrorError;

/// `[mirror]`: the inbound half of the API LPS (TM5.3P personal/organisational BALs,
/// TM5.4P applicative BALs) mirrored into the appliance's local Dovecot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// UIDVALIDITY/UID bookkeeping (SQLite).
    pub state_db: PathBuf,
    /// The local Dovecot's IMAP listener (loopback): mirrored mail is saved into
    /// `local_user`'s mailboxes with `APPEND`, logged in as Dovecot's master user.
    pub local_imap: SocketAddr,
    /// Dovecot's master user (a `master = yes` passdb) the mirror logs in as.
    pub local_master_user: String,
    /// Its password, in a 0600 file.
    pub local_master_password_file: PathBuf,
    /// Trust profile validating the operator's IMAP server (EX_OPE_5010 client profile).
    #[serde(default = "default_profile")]
    pub server_profile: String,
    /// IDLE is ended and re-issued after this long: below the operator's 15-minute
    /// inactivity cut (EX_LPS_1000) and RFC 2177's 29 minutes.
    #[serde(with = "humantime_serde", default = "default_idle")]
    pub idle_reissue: Duration,
    /// A session older than this is closed and reopened with a fresh token, before the
    /// operator's 4-hour limit (EX_LPS_1000).
    #[serde(with = "humantime_serde", default = "default_session_max")]
    pub session_max: Duration,
    /// First reconnection delay after a failure; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde", default = "default_reconnect_min")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde", default = "default_reconnect_max")]
    pub reconnect_max: Duration,
    /// Bound of connect, STARTTLS, AUTHENTICATE and each command.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// UIDs fetched per `UID FETCH` command.
    #[serde(default = "default_batch")]
    pub fetch_batch: u32,
    /// Parallel sessions saving into the local Dovecot.
    #[serde(default = "default_inbox_workers")]
    pub inbox_workers: u32,
    pub bals: Vec<BalMirror>,
}

/// One mirrored BAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalMirror {
    /// The BAL address (the `user=` of XOAUTH2, the PLAIN authcid).
    pub bal: String,
    pub auth: BalAuth,
    /// The operator's IMAP front (TLS server name; resolved unless `imap_addr` is set).
    pub imap_host: String,
    #[serde(default = "default_port")]
    pub imap_port: u16,
    /// Connect here instead of resolving `imap_host` (autoconfiguration result, tests).
    #[serde(default)]
    pub imap_addr: Option<SocketAddr>,
    /// The local Dovecot user whose mailboxes receive this BAL's mail.
    pub local_user: String,
    /// Folders mirrored; IDLE watches the first one, the others are re-synced at each
    /// wake-up. Folder `F` is mirrored into the local folder `F`, created when missing.
    #[serde(default = "default_folders")]
    pub folders: Vec<String>,
    /// Seed 002, "supprimer les messages traités": expunge from the operator once the
    /// local delivery is durable. Off by default.
    #[serde(default)]
    pub delete_after_mirror: bool,
}

/// How the BAL authenticates (TM5.3P vs TM5.4P).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "method")]
pub enum BalAuth {
    /// Personal/organisational BAL: SASL XOAUTH2 with a PSC access token (EX_LPS_0700).
    Xoauth2,
    /// Applicative BAL: ORG AUTH_CLI client certificate from the token (key label) and
    /// AUTHENTICATE PLAIN with the BAL address (EX_LPS_1200); the password, which the spec
    /// leaves to the operator, is read from a 0600 file when given.
    Certificate {
        key_label: String,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
}

fn default_profile() -> String {
    "mssante-server".to_owned()
}
fn default_idle() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_session_max() -> Duration {
    Duration::from_secs(3 * 3600 + 50 * 60)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_batch() -> u32 {
    200
}
fn default_inbox_workers() -> u32 {
    4
}
fn default_port() -> u16 {
    143
}
fn default_folders() -> Vec<String> {
    vec!["INBOX".to_owned()]
}

impl MirrorConfig {
    /// Checks what serde cannot: the IDLE period, the names sent to IMAP servers.
    pub fn validate(&self) -> Result<(), MirrorError> {
        let bad = |why: String| Err(MirrorError::Config(why));
        let plain = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !plain(&self.local_master_user) {
            return bad("local_master_user must be a non-empty name".into());
        }
        if let Some(b) = self.bals.iter().find(|b| !plain(&b.local_user)) {
            return bad(format!(
                "BAL {}: local_user must be a non-empty name",
                b.bal
            ));
        }
        if self.idle_reissue.is_zero() || self.idle_reissue >= Duration::from_secs(14 * 60) {
            return bad(format!(
                "idle_reissue {:?} must be below 14 min (EX_LPS_1000: the operator cuts after 15 min of inactivity)",
                self.idle_reissue
            ));
        }
        if self.session_max >= Duration::from_secs(4 * 3600) || self.session_max.is_zero() {
            return bad("session_max must be below 4 h (EX_LPS_1000)".into());
        }
        if self.inbox_workers == 0 || self.inbox_workers > 64 {
            return bad("inbox_workers must be 1 to 64".into());
        }
        if self.fetch_batch == 0 {
            return bad("fetch_batch must be at least 1".into());
        }
        for b in &self.bals {
            if b.folders.is_empty() {
                return bad(format!("BAL {}: no folder", b.bal));
            }
            for f in &b.folders {
                if f.is_empty()
                    || f.len() > 200
                    || f.chars().any(|c| c.is_control() || c == '"' || c == '\\')
                {
                    return bad(format!("BAL {}: folder name {f:?} not supported", b.bal));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "state_db = '/var/lib/passerelle/mirror.db'\nlocal_imap = '127.0.0.1:143'\n\
        local_master_user = 'passerelle'\n\
        local_master_password_file = '/var/lib/passerelle/dovecot-master'\n\
        [[bals]]\nbal = 'jean.dupond@medecin.mssante.fr'\nauth = { method = 'xoauth2' }\n\
        imap_host = 'imap.operateur.mssante.fr'\nlocal_user = 'medecin@cabinet.local'\n";

    #[test]
    fn defaults_keep_idle_below_the_operator_cut_and_deletion_off() {
        let c: MirrorConfig = toml::from_str(BASE).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.idle_reissue, Duration::from_secs(600));
        assert!(!c.bals[0].delete_after_mirror);
        assert_eq!(c.bals[0].folders, ["INBOX"]);
        assert_eq!(c.bals[0].imap_port, 143);
    }

    #[test]
    fn ex_lps_1000_idle_period_of_15_min_is_refused() {
        let c: MirrorConfig =
            toml::from_str(&BASE.replace("local_imap =", "idle_reissue = '15m'\nlocal_imap ="))
                .expect("parses");
        let err = c.validate().expect_err("15 min is the operator's cut");
        assert!(err.to_string().contains("EX_LPS_1000"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = BASE.replace("local_imap =", "idle = '1m'\nlocal_imap =");
        assert!(toml::from_str::<MirrorConfig>(&text).is_err());
    }
}
