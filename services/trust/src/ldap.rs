//! CRLs from an LDAP directory (the SESAM-Vitale `annuaire.sesam-vitale.fr`): anonymous bind,
//! base-scope read of one attribute of the entry named by the URL (RFC 4516):
//!
//! ```text
//! ldap://annuaire.sesam-vitale.fr/cn=AC-FACTURATION,ou=AC-FACTURATION,ou=AC-SESAM-VITALE-2034,o=sesam-vitale,c=fr
//! ldap://host:389/<dn>?deltaRevocationList;binary
//! ```
//!
//! The attribute defaults to `certificateRevocationList;binary`; a delta CRL published in
//! `deltaRevocationList;binary` is a second source. The directory offers no transport
//! security, which is fine: the CRL is installed only after its signature verified against a
//! pinned CA, like an HTTP one.
//!
//! The exchange uses `ldap3_proto`'s codec rather than the `ldap3` client because the codec
//! bounds the size of every message it reads (`ldap3` reads messages of any size).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp, LdapResultCode,
    LdapSearchRequest, LdapSearchScope,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::crl::MAX_CRL_BYTES;
use crate::error::TrustError;
use crate::source::{CrlSource, FetchFuture};

/// Largest LDAP message read: one CRL ([`MAX_CRL_BYTES`]) plus the entry's DN and framing.
const MAX_LDAP_MESSAGE_BYTES: usize = 32 * 1024 * 1024 + 64 * 1024;
const _: () = assert!(MAX_LDAP_MESSAGE_BYTES as u64 > MAX_CRL_BYTES);
/// Longest URL accepted in the configuration.
const MAX_URL_LEN: usize = 2048;
/// Messages read before giving up (a base-scope search yields one entry and a result).
const MAX_MESSAGES: usize = 8;
const DEFAULT_ATTRIBUTE: &str = "certificateRevocationList;binary";
const CRL_ATTRIBUTES: &[&str] = &[
    "certificateRevocationList",
    "deltaRevocationList",
    "authorityRevocationList",
];

/// A CRL in an attribute of an LDAP entry.
#[derive(Debug)]
pub struct LdapCrlSource {
    url: String,
    host: String,
    port: u16,
    dn: String,
    attribute: String,
    timeout: Duration,
}

impl LdapCrlSource {
    /// Parse `ldap://host[:port]/<dn>[?attribute]`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, TrustError> {
        let bad = |why: &str| TrustError::Config(format!("CRL source {url:?}: {why}"));
        if url.len() > MAX_URL_LEN {
            return Err(bad("URL too long"));
        }
        let rest = url.strip_prefix("ldap://").ok_or_else(|| {
            bad("only ldap:// is supported here (the CRL is signed; ldaps adds nothing)")
        })?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no DN after the host"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, 389),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut parts = path.split('?');
        let dn = percent_decode(parts.next().unwrap_or_default())
            .ok_or_else(|| bad("bad %-escape in the DN"))?;
        if dn.is_empty() {
            return Err(bad("no DN"));
        }
        let attribute = match parts.next() {
            Some(a) if !a.is_empty() => {
                percent_decode(a).ok_or_else(|| bad("bad %-escape in the attribute"))?
            }
            _ => DEFAULT_ATTRIBUTE.to_owned(),
        };
        let base = attribute.split(';').next().unwrap_or_default();
        if !CRL_ATTRIBUTES.iter().any(|a| a.eq_ignore_ascii_case(base)) {
            return Err(bad(
                "the attribute must be certificateRevocationList, deltaRevocationList or authorityRevocationList",
            ));
        }
        if let Some(scope) = parts.next()
            && !scope.is_empty()
            && !scope.eq_ignore_ascii_case("base")
        {
            return Err(bad("only base scope is supported"));
        }
        Ok(LdapCrlSource {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            dn,
            attribute,
            timeout,
        })
    }

    async fn read(&self) -> Result<Vec<u8>, String> {
        let done = AnonymousSearch {
            host: &self.host,
            port: self.port,
            base: &self.dn,
            scope: LdapSearchScope::Base,
            filter: LdapFilter::Present("objectClass".to_owned()),
            attribute: &self.attribute,
            size_limit: 1,
            timeout: self.timeout,
            max_message_bytes: MAX_LDAP_MESSAGE_BYTES,
            max_messages: MAX_MESSAGES,
        }
        .run()
        .await?;
        if done.code != LdapResultCode::Success {
            return Err(format!(
                "search of {:?}: {:?} {}",
                self.dn, done.code, done.message
            ));
        }
        let mut values = done.values;
        match values.len() {
            1 if values[0].len() as u64 > MAX_CRL_BYTES => Err(format!(
                "{} is larger than {MAX_CRL_BYTES} bytes",
                self.attribute
            )),
            1 => Ok(values.remove(0)),
            0 => Err(format!("no {} in {:?}", self.attribute, self.dn)),
            n => Err(format!(
                "{n} values of {} in {:?}; expected one",
                self.attribute, self.dn
            )),
        }
    }
}

/// One search of an LDAP directory after an anonymous bind, every message read bounded in
/// size and number; the connection is closed after the result. Used for CRLs here and for
/// the SESAM-Vitale recipient certificates by the `sesam` crate. Time is bounded by the
/// caller (a `tokio::time::timeout` around [`AnonymousSearch::run`]).
#[derive(Debug)]
pub struct AnonymousSearch<'a> {
    pub host: &'a str,
    pub port: u16,
    pub base: &'a str,
    pub scope: LdapSearchScope,
    pub filter: LdapFilter,
    /// The attribute whose values are collected, matched on its name before any `;option`.
    pub attribute: &'a str,
    pub size_limit: i32,
    /// Sent as the server-side time limit.
    pub timeout: Duration,
    pub max_message_bytes: usize,
    /// Messages read after the search request before giving up.
    pub max_messages: usize,
}

/// The values found and the search's result code, which the caller judges (a missing base
/// or a size limit may be an answer).
#[derive(Debug)]
pub struct SearchDone {
    pub values: Vec<Vec<u8>>,
    pub code: LdapResultCode,
    pub message: String,
}

impl AnonymousSearch<'_> {
    /// Runs the search. The error says what failed, for the caller's own error type.
    pub async fn run(self) -> Result<SearchDone, String> {
        let stream = TcpStream::connect((self.host, self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let limit = self.max_message_bytes;
        let mut conn = Framed::new(stream, LdapCodec::new(Some(limit), None));
        let bind = LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: String::new(),
            cred: LdapBindCred::Simple(String::new()),
        });
        conn.send(LdapMsg::new(1, bind))
            .await
            .map_err(|e| format!("bind: {e:?}"))?;
        match next(&mut conn, limit).await? {
            LdapMsg {
                msgid: 1,
                op: LdapOp::BindResponse(r),
                ..
            } if r.res.code == LdapResultCode::Success => {}
            LdapMsg {
                op: LdapOp::BindResponse(r),
                ..
            } => {
                return Err(format!(
                    "anonymous bind refused: {:?} {}",
                    r.res.code, r.res.message
                ));
            }
            other => return Err(format!("unexpected answer to bind: {:?}", other.op)),
        }
        let search = LdapOp::SearchRequest(LdapSearchRequest {
            base: self.base.to_owned(),
            scope: self.scope,
            aliases: LdapDerefAliases::Never,
            sizelimit: self.size_limit,
            timelimit: i32::try_from(self.timeout.as_secs()).unwrap_or(i32::MAX),
            typesonly: false,
            filter: self.filter,
            attrs: vec![self.attribute.to_owned()],
        });
        conn.send(LdapMsg::new(2, search))
            .await
            .map_err(|e| format!("search: {e:?}"))?;
        let wanted = self.attribute.split(';').next().unwrap_or_default();
        let mut values = Vec::new();
        for _ in 0..self.max_messages {
            match next(&mut conn, limit).await? {
                LdapMsg {
                    msgid: 2,
                    op: LdapOp::SearchResultEntry(entry),
                    ..
                } => {
                    for attr in entry.attributes {
                        let name = attr.atype.split(';').next().unwrap_or_default();
                        if name.eq_ignore_ascii_case(wanted) {
                            values.extend(attr.vals);
                        }
                    }
                }
                LdapMsg {
                    msgid: 2,
                    op: LdapOp::SearchResultDone(done),
                    ..
                } => {
                    // Best effort: the connection is dropped right after anyway.
                    let _ = conn.send(LdapMsg::new(3, LdapOp::UnbindRequest)).await;
                    return Ok(SearchDone {
                        values,
                        code: done.code,
                        message: done.message,
                    });
                }
                LdapMsg {
                    msgid: 2,
                    op: LdapOp::SearchResultReference(_),
                    ..
                } => {}
                other => return Err(format!("unexpected message: {:?}", other.op)),
            }
        }
        Err(format!(
            "more than {} messages for one search",
            self.max_messages
        ))
    }
}

async fn next(conn: &mut Framed<TcpStream, LdapCodec>, limit: usize) -> Result<LdapMsg, String> {
    match conn.next().await {
        Some(Ok(msg)) => Ok(msg),
        Some(Err(e)) => Err(format!("bad LDAP message (limit {limit} bytes): {e:?}")),
        None => Err("the server closed the connection".to_owned()),
    }
}

/// RFC 3986 percent-decoding of a URL component into UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl CrlSource for LdapCrlSource {
    fn name(&self) -> String {
        self.url.clone()
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let err = |why: String| TrustError::CrlFetch {
                source_name: self.url.clone(),
                why,
            };
            tokio::time::timeout(self.timeout, self.read())
                .await
                .map_err(|_| err(format!("no complete answer within {:?}", self.timeout)))?
                .map_err(err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sesam_vitale_url_parses_with_the_default_attribute() {
        let s = LdapCrlSource::new(
            "ldap://annuaire.sesam-vitale.fr/cn=AC-FACTURATION,ou=AC-FACTURATION,ou=AC-SESAM-VITALE-2034,o=sesam-vitale,c=fr",
            Duration::from_secs(1),
        )
        .expect("url");
        assert_eq!((s.host.as_str(), s.port), ("annuaire.sesam-vitale.fr", 389));
        assert_eq!(
            s.dn,
            "cn=AC-FACTURATION,ou=AC-FACTURATION,ou=AC-SESAM-VITALE-2034,o=sesam-vitale,c=fr"
        );
        assert_eq!(s.attribute, "certificateRevocationList;binary");
        let d = LdapCrlSource::new(
            "ldap://h:1389/cn=A%20B,c=fr?deltaRevocationList;binary",
            Duration::from_secs(1),
        )
        .expect("delta");
        assert_eq!(
            (d.port, d.dn.as_str(), d.attribute.as_str()),
            (1389, "cn=A B,c=fr", "deltaRevocationList;binary")
        );
        for bad in [
            "ldaps://h/c=fr",
            "ldap://h",
            "ldap://h/c=fr?userPassword",
            "ldap://h/c=fr?certificateRevocationList?sub",
            "ldap://h/%zz",
        ] {
            assert!(
                LdapCrlSource::new(bad, Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
