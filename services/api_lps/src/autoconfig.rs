//! TM5.1P autoconfiguration: DNS SRV `_submission._tcp.<domain>` / `_imap._tcp.<domain>`,
//! the priority selecting the front (10 = PER/ORG, 20 = APP; EX_LPS_0300) and never used as
//! a fail-over order (AC-02); weight only among records of the chosen priority (AC-03).
//! For `*.mssante.fr` domains without SRV records, the Mozilla autoconfig file
//! `https://autoconfig.<domain>/mail/config-v1.1.xml` (Réf. #2 draft req. 1.3) is the
//! fallback (AC-04).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpStream;

use crate::ApiLpsError;
use crate::config::{BalConfig, BalKind, DnsConfig, Endpoint};

/// Largest autoconfig XML document read.
pub const MAX_AUTOCONFIG_XML: usize = 64 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which API LPS service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `_submission._tcp`, SMTP 587 STARTTLS (EX_LPS_0400).
    Submission,
    /// `_imap._tcp`, IMAP 143 STARTTLS (EX_LPS_0500).
    Imap,
}

impl Service {
    fn srv_label(self) -> &'static str {
        match self {
            Self::Submission => "_submission._tcp",
            Self::Imap => "_imap._tcp",
        }
    }
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// DNS (and HTTPS fallback) lookups with an in-memory cache of the last answers.
#[derive(Debug)]
pub struct Autoconfig {
    resolver: TokioResolver,
    https: Arc<rustls::ClientConfig>,
    https_port: u16,
    cache: Mutex<HashMap<(String, Service, BalKind), Endpoint>>,
}

impl Autoconfig {
    /// `https` validates the autoconfig web server (HTTPS only, AC-04).
    pub fn new(dns: &DnsConfig, https: Arc<rustls::ClientConfig>) -> Result<Self, ApiLpsError> {
        let provider = TokioConnectionProvider::default();
        let builder = if let Some(ns) = dns.nameserver {
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                provider,
            )
        } else {
            TokioResolver::builder(provider)
                .map_err(|e| ApiLpsError::Config(format!("system DNS configuration: {e}")))?
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        Ok(Self {
            resolver: builder.with_options(opts).build(),
            https,
            https_port: 443,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Fetch the autoconfig XML on this port instead of 443 (tests).
    #[must_use]
    pub fn with_https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    pub async fn submission(&self, bal: &BalConfig) -> Result<Endpoint, ApiLpsError> {
        self.endpoint(bal, Service::Submission).await
    }

    /// The IMAP front of a BAL, for the inbound mirror.
    pub async fn imap(&self, bal: &BalConfig) -> Result<Endpoint, ApiLpsError> {
        self.endpoint(bal, Service::Imap).await
    }

    async fn endpoint(&self, bal: &BalConfig, service: Service) -> Result<Endpoint, ApiLpsError> {
        let domain = bal
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .ok_or_else(|| autoconfig_error(bal, "BAL address has no domain".into()))?;
        let found = match self.srv(&domain, service).await {
            Ok(records) if !records.is_empty() => select(&records, bal.kind.srv_priority())
                .map(|r| Endpoint {
                    host: r.target.trim_end_matches('.').to_owned(),
                    port: r.port,
                    address: None,
                })
                .ok_or_else(|| {
                    autoconfig_error(
                        bal,
                        format!(
                            "{}.{domain} has no record of priority {} for a {:?} BAL (no fail-over to the other front)",
                            service.srv_label(),
                            bal.kind.srv_priority(),
                            bal.kind
                        ),
                    )
                }),
            Ok(_) if domain.ends_with(".mssante.fr") => self.mozilla(&domain, bal, service).await,
            Ok(_) => Err(autoconfig_error(
                bal,
                format!("no {} SRV records for {domain}", service.srv_label()),
            )),
            Err(e) => Err(autoconfig_error(bal, e)),
        };
        let key = (domain, service, bal.kind);
        match found {
            Ok(e) => {
                self.cache
                    .lock()
                    .map_err(|_| autoconfig_error(bal, "cache poisoned".into()))?
                    .insert(key, e.clone());
                Ok(e)
            }
            // Offline: the last answer still names the right front (AC-06).
            Err(err) => self
                .cache
                .lock()
                .ok()
                .and_then(|c| c.get(&key).cloned())
                .ok_or(err),
        }
    }

    /// SRV records; an empty list when the name does not exist.
    pub async fn srv(&self, domain: &str, service: Service) -> Result<Vec<SrvTarget>, String> {
        let name = format!("{}.{domain}.", service.srv_label());
        match self.resolver.srv_lookup(name.as_str()).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|r| SrvTarget {
                    priority: r.priority(),
                    weight: r.weight(),
                    port: r.port(),
                    target: r.target().to_utf8(),
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(format!("DNS SRV {name}: {e}")),
        }
    }

    /// The address of a front's host name.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ApiLpsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let ips = self
            .resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| ApiLpsError::Config(format!("DNS {host}: {e}")))?;
        ips.iter()
            .next()
            .map(|ip| SocketAddr::new(ip, port))
            .ok_or_else(|| ApiLpsError::Config(format!("DNS {host}: no address")))
    }

    async fn mozilla(
        &self,
        domain: &str,
        bal: &BalConfig,
        service: Service,
    ) -> Result<Endpoint, ApiLpsError> {
        let host = format!("autoconfig.{domain}");
        let xml = self
            .fetch(&host, "/mail/config-v1.1.xml")
            .await
            .map_err(|e| {
                autoconfig_error(bal, format!("https://{host}/mail/config-v1.1.xml: {e}"))
            })?;
        parse_mozilla(&xml, service, bal.kind).map_err(|e| autoconfig_error(bal, e))
    }

    async fn fetch(&self, host: &str, path: &str) -> Result<String, String> {
        let addr = self
            .resolve(host, self.https_port)
            .await
            .map_err(|e| e.to_string())?;
        let work = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let request = hyper::Request::get(path)
                .header(hyper::header::HOST, host)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let (status, body) = passerelle_trust::exchange(
                Arc::clone(&self.https),
                host,
                tcp,
                request,
                MAX_AUTOCONFIG_XML,
            )
            .await?;
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_owned())
        };
        tokio::time::timeout(HTTP_TIMEOUT, work)
            .await
            .map_err(|_| "timeout".to_owned())?
    }
}

fn autoconfig_error(bal: &BalConfig, detail: String) -> ApiLpsError {
    ApiLpsError::Autoconfig {
        bal: bal.name.clone(),
        detail,
    }
}

/// The record for `priority`, chosen by weight among that priority only (RFC 2782 weighted
/// selection); `None` when the priority has no record: never the other front.
pub fn select(records: &[SrvTarget], priority: u16) -> Option<SrvTarget> {
    let candidates: Vec<&SrvTarget> = records
        .iter()
        .filter(|r| r.priority == priority && r.target != ".")
        .collect();
    let total: u32 = candidates.iter().map(|r| u32::from(r.weight)).sum();
    if total == 0 {
        return candidates.first().map(|r| (*r).clone());
    }
    let mut pick = fastrand::u32(0..total);
    for r in &candidates {
        let w = u32::from(r.weight);
        if pick < w {
            return Some((*r).clone());
        }
        pick -= w;
    }
    candidates.last().map(|r| (*r).clone())
}

fn child<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Vec<&'a str> {
    node.children()
        .filter(|c| c.has_tag_name(name))
        .filter_map(|c| c.text())
        .map(str::trim)
        .collect()
}

/// The server of a Mozilla `config-v1.1.xml` for a service and BAL kind: `OAuth2`
/// authentication for PER/ORG, `TLS-client-cert` for APP; STARTTLS only.
pub fn parse_mozilla(xml: &str, service: Service, kind: BalKind) -> Result<Endpoint, String> {
    if xml.len() > MAX_AUTOCONFIG_XML {
        return Err("autoconfig document too large".into());
    }
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 10_000,
        },
    )
    .map_err(|e| format!("autoconfig XML: {e}"))?;
    let (element, kind_attr) = match service {
        Service::Submission => ("outgoingServer", "smtp"),
        Service::Imap => ("incomingServer", "imap"),
    };
    let wanted_auth = match kind {
        BalKind::App => "TLS-client-cert",
        BalKind::Per | BalKind::Org => "OAuth2",
    };
    doc.descendants()
        .filter(|n| n.has_tag_name(element) && n.attribute("type") == Some(kind_attr))
        .find(|n| {
            child(*n, "authentication").contains(&wanted_auth)
                && child(*n, "socketType").first() == Some(&"STARTTLS")
        })
        .and_then(|n| {
            let host = (*child(n, "hostname").first()?).to_owned();
            let port = child(n, "port").first()?.parse().ok()?;
            Some(Endpoint {
                host,
                port,
                address: None,
            })
        })
        .ok_or_else(|| format!("no {kind_attr} STARTTLS server with {wanted_auth} authentication"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 587,
            target: target.into(),
        }
    }

    #[test]
    fn ex_lps_0300_priority_selects_never_fails_over() {
        let records = vec![rec(10, 100, "psc."), rec(20, 100, "authcli.")];
        assert_eq!(select(&records, 10).expect("must succeed").target, "psc.");
        assert_eq!(
            select(&records, 20).expect("must succeed").target,
            "authcli."
        );
        assert!(select(&records[..1], 20).is_none());
        // AC-03: weights among one priority only.
        let records = vec![rec(20, 1, "a."), rec(20, 0, "b."), rec(10, 1000, "psc.")];
        for _ in 0..50 {
            assert_eq!(select(&records, 20).expect("must succeed").target, "a.");
        }
    }

    #[test]
    fn mozilla_format_by_authentication() {
        let xml = r#"<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="op.mssante.fr">
 <domain>medecin.mssante.fr</domain>
 <incomingServer type="imap"><hostname>imap-psc.op.fr</hostname><port>143</port>
   <socketType>STARTTLS</socketType><authentication>OAuth2</authentication></incomingServer>
 <outgoingServer type="smtp"><hostname>smtp-psc.op.fr</hostname><port>587</port>
   <socketType>STARTTLS</socketType><authentication>OAuth2</authentication></outgoingServer>
 <outgoingServer type="smtp"><hostname>smtp-cli.op.fr</hostname><port>587</port>
   <socketType>STARTTLS</socketType><authentication>TLS-client-cert</authentication></outgoingServer>
 <outgoingServer type="smtp"><hostname>smtps.op.fr</hostname><port>465</port>
   <socketType>SSL</socketType><authentication>TLS-client-cert</authentication></outgoingServer>
</emailProvider></clientConfig>"#;
        let e = parse_mozilla(xml, Service::Submission, BalKind::Per).expect("must succeed");
        assert_eq!((e.host.as_str(), e.port), ("smtp-psc.op.fr", 587));
        let e = parse_mozilla(xml, Service::Submission, BalKind::App).expect("must succeed");
        assert_eq!((e.host.as_str(), e.port), ("smtp-cli.op.fr", 587));
        assert!(parse_mozilla(xml, Service::Imap, BalKind::App).is_err());
        assert!(parse_mozilla("<a><!DOCTYPE x></a>", Service::Imap, BalKind::App).is_err());
    }
}
