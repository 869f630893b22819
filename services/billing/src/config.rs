//! The billing service's settings: where lots come in, the caisse route, the billing
//! mailbox, and how long an ARL may take.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Billing settings (`[sesam.billing]` or `[billing]`, next to `[sesam]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// The lot store (`lots.db`, `content/`), kept returns (`returns/raw`).
    pub state_dir: PathBuf,
    /// The spool folder the LPS writes lots into (atomic rename protocol).
    pub spool_dir: PathBuf,
    /// How often the spool folder is scanned.
    #[serde(with = "humantime_serde", default = "default_spool_interval")]
    pub spool_interval: Duration,
    /// The local HTTP API (LAN side only), e.g. `127.0.0.1:8470`.
    pub api_listen: Option<SocketAddr>,
    /// A sent lot without an ARL after this long goes `overdue` (digest §8 #9: alert at
    /// D+3 working days; 5 calendar days covers a weekend).
    #[serde(with = "humantime_serde", default = "default_arl_deadline")]
    pub arl_deadline: Duration,
    /// Gzip lots before encrypting them (`…/ZK`).
    #[serde(default)]
    pub compress: bool,
    pub route: RouteConfig,
    pub returns: ReturnsConfig,
}

/// The caisse (or OCT) SMTP route; STARTTLS is always required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub host: String,
    /// Digest §8 #1: submission with STARTTLS by default.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The name the server certificate must carry (default: `host`).
    pub server_name: Option<String>,
    /// PEM CA certificates the route's server certificate must chain to.
    pub ca_file: PathBuf,
    /// AUTH PLAIN after STARTTLS, when the provider asks for it.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_helo")]
    pub helo: String,
    /// The billing mailbox address (From; the returns come back to it).
    pub from: String,
    /// AMO and AMC addresses (digest §8 #2: configured, never derived).
    pub to_amo: String,
    pub to_amc: String,
    #[serde(with = "humantime_serde", default = "default_send_interval")]
    pub send_interval: Duration,
}

/// The billing mailbox, read over POP3 with STLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnsConfig {
    pub host: String,
    #[serde(default = "default_pop3_port")]
    pub port: u16,
    pub server_name: Option<String>,
    pub ca_file: PathBuf,
    pub user: String,
    pub password_file: PathBuf,
    #[serde(with = "humantime_serde", default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// RSP/NOEMIE files for the LPS.
    pub lps_out_dir: PathBuf,
    /// Largest return mail read.
    #[serde(default = "default_max_mail")]
    pub max_mail_bytes: usize,
}

fn default_spool_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_arl_deadline() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}

fn default_smtp_port() -> u16 {
    587
}

fn default_pop3_port() -> u16 {
    110
}

fn default_helo() -> String {
    "passerelle".into()
}

fn default_send_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_max_mail() -> usize {
    32 << 20
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "state_dir = '/var/lib/passerelle/billing'
spool_dir = '/srv/spool'
[route]
host = 'smtp.caisse.example'
ca_file = '/etc/passerelle/route-ca.pem'
from = 'facturation@cabinet.example'
to_amo = '01996@996.01.rss.fr'
to_amc = 'amc@amc.example'
[returns]
host = 'pop.cabinet.example'
ca_file = '/etc/passerelle/route-ca.pem'
user = 'facturation'
password_file = '/etc/passerelle/pop3.pw'
lps_out_dir = '/srv/spool/returns'
";

    #[test]
    fn defaults() {
        let c: BillingConfig = toml::from_str(MIN).expect("parse");
        assert_eq!(c.arl_deadline, Duration::from_secs(432_000));
        assert_eq!(c.spool_interval, Duration::from_secs(5));
        assert_eq!((c.route.port, c.returns.port), (587, 110));
        assert!(c.api_listen.is_none());
        assert!(toml::from_str::<BillingConfig>(&format!("bogus = 1\n{MIN}")).is_err());
    }
}
