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
    /// The LAN SMTP relay the LPS mails its lots to (intake path (a)), e.g.
    /// `192.168.1.2:2525`; LAN side only, like the API.
    #[serde(default)]
    pub relay_listen: Option<SocketAddr>,
    /// A sent lot without an ARL after this long goes `overdue` (digest §8 #9: alert at
    /// D+3 working days; 5 calendar days covers a weekend).
    #[serde(with = "humantime_serde", default = "default_arl_deadline")]
    pub arl_deadline: Duration,
    /// Gzip lots before encrypting them (`…/ZK`).
    #[serde(default)]
    pub compress: bool,
    /// CRL download locations of the SESAM-Vitale CAs (`ldap://host/<dn>[?attribute]` or
    /// `http://…`); empty: the CRL distribution points of the stored recipient certificates.
    #[serde(default)]
    pub crl_sources: Vec<String>,
    /// The name that picks this installation's CRL download slot (02:00–22:00 UTC);
    /// default: the host name.
    #[serde(default)]
    pub device_id: Option<String>,
    pub route: RouteConfig,
    pub returns: ReturnsConfig,
    /// OCT profile: the intake of practices' encrypted lots (needs the keystore).
    #[serde(default)]
    pub oct: Option<OctConfig>,
}

/// OCT profile (`[billing.oct]`): practices mail their lots, encrypted for the OCT
/// certificate, to `listen`; the OCT key is `key_label` in the PKCS#11 token.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctConfig {
    /// The SMTP intake practices mail their lots to.
    pub listen: SocketAddr,
    /// The OCT's private key in the token (RSA; `passerelle keys generate`).
    pub key_label: String,
    /// The OCT's certificate (PEM or DER) the practices encrypt for.
    pub certificate: PathBuf,
    /// STARTTLS on the intake with this token key and the certificate imported beside it
    /// (`passerelle keys import`); MAIL is then refused before STARTTLS. The lots are
    /// encrypted end to end anyway; TLS protects the envelope and the practice's identity.
    #[serde(default)]
    pub tls_key_label: Option<String>,
    /// The practices served.
    pub practices: Vec<crate::oct::Practice>,
}

impl BillingConfig {
    /// The reasons this configuration cannot be used (the config crate may call it at load;
    /// [`crate::serve`] checks it too).
    pub fn check(&self) -> Result<(), String> {
        self.returns.check()?;
        if let Some(oct) = &self.oct {
            if oct.practices.is_empty() {
                return Err("oct.practices: at least one practice".into());
            }
            for p in &oct.practices {
                if p.id.is_empty() || p.senders.is_empty() || !p.return_to.contains('@') {
                    return Err(format!(
                        "oct.practices {:?}: an id, senders and a return_to address",
                        p.id
                    ));
                }
            }
        }
        Ok(())
    }
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

/// The billing mailbox, read over POP3 with STLS (the default, as Annexe 4 names it) or
/// IMAP with STARTTLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnsConfig {
    /// `pop3` or `imap`.
    #[serde(default)]
    pub protocol: ReturnsProtocol,
    pub host: String,
    /// Default 110 (POP3) or 143 (IMAP); STLS/STARTTLS is always required.
    pub port: Option<u16>,
    /// IMAP: the folder the returns arrive in.
    #[serde(default = "default_folder")]
    pub folder: String,
    /// IMAP: what is done with a handled return: `delete` (default) or `flag` (the keyword
    /// `flag_keyword` and `\Seen`; the mail stays).
    #[serde(default)]
    pub after: AfterConfig,
    #[serde(default = "default_keyword")]
    pub flag_keyword: String,
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

/// How the billing mailbox is read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReturnsProtocol {
    #[default]
    Pop3,
    Imap,
}

/// IMAP: what becomes of a handled return.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AfterConfig {
    #[default]
    Delete,
    Flag,
}

impl ReturnsConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.protocol {
            ReturnsProtocol::Pop3 => 110,
            ReturnsProtocol::Imap => 143,
        })
    }

    /// The reasons this section cannot be used.
    pub fn check(&self) -> Result<(), String> {
        let atom = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
        };
        if !atom(&self.flag_keyword) || self.flag_keyword.starts_with('\\') {
            return Err(format!(
                "returns.flag_keyword {:?}: an IMAP keyword (atom, no backslash)",
                self.flag_keyword
            ));
        }
        if self.folder.is_empty() || self.folder.len() > 200 || self.folder.contains(['\r', '\n']) {
            return Err("returns.folder: a folder name".into());
        }
        Ok(())
    }
}

fn default_folder() -> String {
    "INBOX".into()
}

fn default_keyword() -> String {
    "$PasserelleHandled".into()
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
        assert_eq!((c.route.port, c.returns.port()), (587, 110));
        assert_eq!(c.returns.protocol, ReturnsProtocol::Pop3);
        c.returns.check().expect("valid");
        let imap: BillingConfig = toml::from_str(&MIN.replace(
            "[returns]\n",
            "[returns]\nprotocol = 'imap'\nafter = 'flag'\nfolder = 'Retours'\n",
        ))
        .expect("parse");
        assert_eq!(imap.returns.port(), 143);
        assert_eq!(imap.returns.after, AfterConfig::Flag);
        imap.returns.check().expect("valid");
        let mut bad = imap.returns.clone();
        bad.flag_keyword = "a b".into();
        assert!(bad.check().is_err());
        assert!(c.api_listen.is_none());
        assert!(toml::from_str::<BillingConfig>(&format!("bogus = 1\n{MIN}")).is_err());
    }
}
