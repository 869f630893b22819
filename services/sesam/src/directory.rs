//! Recipient certificates from the GIE SESAM-Vitale LDAP directory (A4 §6.3.2; digest §1.5,
//! §8 #12): anonymous bind, subtree search under the AC-FACTURATION branch of the environment
//! for the entries named by the certificate label, attribute `userCertificate;binary`; the
//! connection is closed right after (A4 §6.3.3). Nothing read here is trusted: every
//! certificate goes through [`crate::certs::validate_for`] before it is stored.
//!
//! The exchange is the trust crate's [`AnonymousSearch`] (also used for CRLs), on
//! `ldap3_proto`'s codec, which bounds every message it reads (`ldap3` reads messages of any
//! size).

use std::time::Duration;

use ldap3_proto::proto::{LdapFilter, LdapResultCode, LdapSearchScope};
use passerelle_trust::AnonymousSearch;

use crate::certs::expected_label;
use crate::error::SesamError;
use crate::message::{Env, Flow};

/// Largest LDAP message read (an entry holding a few certificates).
const MAX_LDAP_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest certificate accepted.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// Most certificates taken from one search (the directory may hold several for a label).
const MAX_CERTS: usize = 16;
/// Messages read before giving up.
const MAX_MESSAGES: usize = 32;
const ATTRIBUTE: &str = "userCertificate;binary";

/// Search base of the AC-FACTURATION branch holding the AM certificates of `env` (test and
/// demo use the TEST branch, [CP1]).
pub fn search_base(env: Env) -> &'static str {
    match env {
        Env::Real => "ou=AC-FACTURATION,ou=AC-SESAM-VITALE-2034,o=sesam-vitale,c=fr",
        Env::Test | Env::Demo => {
            "ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr"
        }
    }
}

/// The directory server (`ldap://annuaire.sesam-vitale.fr` in production).
#[derive(Clone, Debug)]
pub struct Directory {
    url: String,
    host: String,
    port: u16,
    timeout: Duration,
}

impl Directory {
    /// `ldap://host[:port][/]`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SesamError> {
        let bad = |why: &str| SesamError::Directory {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = url
            .strip_prefix("ldap://")
            .ok_or_else(|| bad("only ldap:// (certificates are verified, not the transport)"))?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, 389),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("bad host"));
        }
        Ok(Self {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            timeout,
        })
    }

    /// Every certificate the directory holds for the label of `flow`/`env`, unvalidated.
    pub async fn fetch_certificates(
        &self,
        flow: Flow,
        env: Env,
    ) -> Result<Vec<Vec<u8>>, SesamError> {
        let label = expected_label(flow, env);
        tokio::time::timeout(self.timeout, self.search(search_base(env), label))
            .await
            .map_err(|_| SesamError::Directory {
                url: self.url.clone(),
                why: format!("no complete answer within {:?}", self.timeout),
            })?
            .map_err(|why| SesamError::Directory {
                url: self.url.clone(),
                why,
            })
    }

    async fn search(&self, base: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
        let done = AnonymousSearch {
            host: &self.host,
            port: self.port,
            base,
            scope: LdapSearchScope::Subtree,
            filter: LdapFilter::Or(vec![
                LdapFilter::Equality("cn".to_owned(), label.to_owned()),
                LdapFilter::Equality("mail".to_owned(), label.to_owned()),
            ]),
            attribute: ATTRIBUTE,
            size_limit: i32::try_from(MAX_CERTS).unwrap_or(i32::MAX),
            timeout: self.timeout,
            max_message_bytes: MAX_LDAP_MESSAGE_BYTES,
            max_messages: MAX_MESSAGES,
        }
        .run()
        .await?;
        match done.code {
            LdapResultCode::Success | LdapResultCode::SizeLimitExceeded => Ok(done
                .values
                .into_iter()
                .filter(|v| !v.is_empty() && v.len() <= MAX_CERT_BYTES)
                .take(MAX_CERTS)
                .collect()),
            LdapResultCode::NoSuchObject => Ok(Vec::new()),
            code => Err(format!("search of {base:?}: {code:?} {}", done.message)),
        }
    }
}
