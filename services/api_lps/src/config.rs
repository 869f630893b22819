//! `[practice_mail]`: the LAN listener, local accounts, the MSSanté BALs and delivery tuning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The practice profile's mail settings (embedded in the one configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PracticeMailConfig {
    /// LAN address of the submission listener (587 on the practice network).
    pub listen: SocketAddr,
    /// Name in the banner, in EHLO to the operator and as Message-ID right-hand side.
    pub hostname: String,
    /// Token label of the device key whose certificate the listener presents on STARTTLS.
    pub device_key_label: String,
    /// Value of `X-MSS-NIL` set on every message (Réf. #2 req. 2.3): the NIL of the solution.
    pub x_mss_nil: String,
    /// Trust profile the operator's fronts are validated with.
    #[serde(default = "default_server_profile")]
    pub server_profile: String,
    pub accounts: Vec<LocalAccount>,
    pub bals: Vec<BalConfig>,
    #[serde(default)]
    pub limits: Limits,
    /// LMTP server (Dovecot on the appliance) DSNs are delivered to.
    pub dsn_lmtp: SocketAddr,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_server_profile() -> String {
    "mssante-server".to_owned()
}

/// A LAN user of the submission listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalAccount {
    /// Login (AUTH PLAIN/LOGIN authcid).
    pub user: String,
    /// Argon2 PHC string (`$argon2id$v=19$…`), never the password.
    pub password_hash: String,
    /// The user's local mailbox in Dovecot: DSNs go there.
    pub mailbox: String,
    /// Names of the BALs this account may send as; the first is used when the envelope
    /// sender is the local mailbox.
    pub bals: Vec<String>,
}

/// Kind of MSSanté BAL, which selects the API LPS front and the authentication (TM5.1P).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalKind {
    /// Applicative BAL: ORG AUTH_CLI certificate + AUTH PLAIN (TM5.4P, SRV priority 20).
    App,
    /// Personal BAL: Pro Santé Connect token over XOAUTH2 (TM5.2P, SRV priority 10).
    Per,
    /// Organisational BAL: as `Per`.
    Org,
}

impl BalKind {
    /// The SRV priority that selects this kind's front (EX_LPS_0300).
    pub fn srv_priority(self) -> u16 {
        match self {
            Self::App => 20,
            Self::Per | Self::Org => 10,
        }
    }
}

/// One MSSanté BAL passerelle sends from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalConfig {
    /// Short name (`[a-z0-9_-]`, ≤ 32), used for the outbox kind and in logs.
    pub name: String,
    /// The BAL address (`secretariat@cabinet.medecin.mssante.fr`).
    pub address: String,
    pub kind: BalKind,
    /// Token label of the ORG AUTH_CLI key (APP BALs; also presented by PER/ORG when set).
    #[serde(default)]
    pub client_key_label: Option<String>,
    /// File holding the AUTH PLAIN password of an APP BAL (operator-specific, EX_LPS_1200).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Skips autoconfiguration: the submission front to use.
    #[serde(default)]
    pub submission: Option<Endpoint>,
    /// Simultaneous SMTP sessions to the operator for this BAL.
    #[serde(default = "default_connections")]
    pub connections: usize,
}

fn default_connections() -> usize {
    2
}

/// A host and port; `address` bypasses the host's DNS resolution (tests, pinned IPs) while
/// `host` stays the TLS name checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub address: Option<SocketAddr>,
}

/// Acceptance limits of the listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, MIME-encoded (EX_GBM_4410: at least 10 Mo).
    pub max_message_size: usize,
    /// Recipients per message (EX_GBM_4420: 40).
    pub max_recipients: usize,
    /// Concurrent LAN sessions.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 10 * 1024 * 1024 + 512 * 1024,
            max_recipients: 40,
            max_sessions: 100,
        }
    }
}

/// DNS used for autoconfiguration (TM5.1P).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Ask this server instead of the system resolvers.
    pub nameserver: Option<SocketAddr>,
}

/// Delivery tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How long a worker holds an item before another may take it over.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// First and longest interval between reachability probes while the operator is down.
    #[serde(with = "humantime_serde")]
    pub probe_min: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_max: Duration,
    /// Delay before a message whose link broke mid-transaction is tried again.
    #[serde(with = "humantime_serde")]
    pub link_retry: Duration,
    /// A BAL needing re-authentication is tried again after this long (or when told).
    #[serde(with = "humantime_serde")]
    pub reauth_retry: Duration,
    /// An idle session waits this long for new mail before QUIT (well under the
    /// operator's 15 min idle cut, EX_LPS_1000).
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// Reconnect before the operator's 4 h session limit (EX_LPS_1000).
    #[serde(with = "humantime_serde")]
    pub max_session_age: Duration,
    /// Per-command timeout toward the operator.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(600),
            probe_min: Duration::from_secs(1),
            probe_max: Duration::from_secs(60),
            link_retry: Duration::from_secs(5),
            reauth_retry: Duration::from_secs(600),
            session_idle: Duration::from_secs(60),
            max_session_age: Duration::from_secs(3 * 3600 + 50 * 60),
            command_timeout: Duration::from_secs(120),
        }
    }
}

impl PracticeMailConfig {
    pub fn bal(&self, name: &str) -> Option<&BalConfig> {
        self.bals.iter().find(|b| b.name == name)
    }
}
