//! `[connector]` configuration; the config crate embeds [`ConnectorConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConnectorError;

/// The Connecteur MSSanté of the operator profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// FQDN of the connector: banner, EHLO name, `Reporting-MTA` of DSNs. The CN of its
    /// certificate (Tableau 44).
    pub hostname: String,
    /// Our whitelisted mail domains: inbound mail is accepted for these only (no relay).
    pub domains: Vec<String>,
    /// Label of the connector's key in the keystore; its certificate is presented as TLS
    /// server certificate inbound and as client certificate outbound (EX_OPE_5020).
    pub key_label: String,
    /// Trust profile (role `tls-client`) checking the sending operator's certificate inbound.
    #[serde(default = "default_inbound_profile")]
    pub inbound_profile: String,
    /// Trust profile (role `tls-server`) checking the receiving operator's certificate.
    #[serde(default = "default_outbound_profile")]
    pub outbound_profile: String,
    pub inbound: InboundConfig,
    pub relay: RelayConfig,
    pub internal: InternalConfig,
    #[serde(default)]
    pub outbound: OutboundConfig,
    pub traces: TracesConfig,
    /// Delivery workers: lease length and idle poll bound.
    #[serde(default)]
    pub workers: WorkersConfig,
}

fn default_inbound_profile() -> String {
    "mssante-client-auth".to_owned()
}

fn default_outbound_profile() -> String {
    "mssante-server".to_owned()
}

/// TM3.1P listener for the other operators' connectors.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// `0.0.0.0:25` in production.
    pub listen: SocketAddr,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

/// The LAN listener the internal mail server relays outgoing MSSanté mail to (TM3.2P).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    /// Clients allowed to relay, as `address` or `address/prefix` (the internal mail server).
    /// No SMTP AUTH: the restriction is by address.
    pub allowed_clients: Vec<String>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
}

/// The internal mail server inbound mail (and DSNs to internal senders) is delivered to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    pub target: SocketAddr,
    /// Speak LMTP (Dovecot) instead of SMTP (Postfix).
    #[serde(default)]
    pub lmtp: bool,
}

/// TM3.2P delivery.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// DNS servers for the MX lookups (`ip:port`); empty: the system resolver configuration.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Port of the peers' MX hosts: 25 (tests run the peers on other loopback ports).
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            smtp_port: default_smtp_port(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// §6.9.2 traces.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// Directory of the daily append-only JSON-lines files.
    pub dir: PathBuf,
    /// EX_GDT_5070: files older than this are deleted (functional traces: 10 years in the
    /// former CNIL authorisation).
    #[serde(with = "humantime_serde", default = "default_retention")]
    pub retention: Duration,
    /// File holding the HMAC key for subjects (health data, EX_GDT_5050): the trace carries
    /// `HMAC-SHA256(key, subject)` so an investigator holding the key can match a known subject.
    /// Absent: subjects are not traced at all.
    #[serde(default)]
    pub subject_hmac_key_file: Option<PathBuf>,
}

/// Delivery workers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// How long a leased item is ours before another worker may take it.
    #[serde(with = "humantime_serde", default = "default_lease")]
    pub lease: Duration,
    /// Longest sleep when nothing is due (new items also wake the worker at once).
    #[serde(with = "humantime_serde", default = "default_idle")]
    pub idle_poll: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            lease: default_lease(),
            idle_poll: default_idle(),
        }
    }
}

fn default_max_message_size() -> usize {
    // MSSanté: 10 MB per message (ch. 8 limits), plus headers and encoding headroom.
    15 * 1024 * 1024
}
fn default_max_sessions() -> usize {
    100
}
fn default_smtp_port() -> u16 {
    25
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retention() -> Duration {
    Duration::from_hours(24 * 3653)
}
fn default_lease() -> Duration {
    Duration::from_mins(5)
}
fn default_idle() -> Duration {
    Duration::from_secs(30)
}

/// A parsed `address[/prefix]` of [`RelayConfig::allowed_clients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<Self, ConnectorError> {
        let bad = || ConnectorError::Config(format!("relay.allowed_clients: bad network {text:?}"));
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let net = IpNet::parse("10.1.0.0/16").expect("net");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        let host = IpNet::parse("127.0.0.1").expect("host");
        assert!(host.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!host.contains("127.0.0.2".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(
            IpNet::parse("0.0.0.0/0")
                .expect("any")
                .contains("8.8.8.8".parse().expect("ip"))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = r#"{"hostname":"h","domains":[],"key_label":"k","inbound":{"listen":"127.0.0.1:25"},
            "relay":{"listen":"127.0.0.1:2525","allowed_clients":[]},"internal":{"target":"127.0.0.1:24"},
            "traces":{"dir":"/tmp"},"relayhost":"x"}"#;
        let err =
            serde_json::from_str::<ConnectorConfig>(text).expect_err("relayhost is no option");
        assert!(err.to_string().contains("relayhost"), "{err}");
    }
}
