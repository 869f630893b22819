//! The read-only LDAP server of the LAN: mail clients and LPS address books search the
//! local cache with ordinary LDAP (anonymous bind; substring, equality, presence,
//! AND/OR/NOT filters on `cn`, `sn`, `givenName`, `mail`, `o`, `l`, `postalCode`, `title`,
//! `businessCategory`, `description`).
//!
//! Bounds: BER messages are limited in size and depth by the codec, filters in depth, node
//! count and value bytes by [`QueryLimits`]; each search in entries (`sizeLimitExceeded`
//! with the entries up to the limit, as slapd does) and in time (`timeLimitExceeded`);
//! connections in number and idle time. A filter is translated to a [`Query`] (values are
//! data, never SQL), so filter injection has nothing to inject into.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
use futures::{SinkExt as _, StreamExt as _};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindResponse, LdapExtendedResponse, LdapFilter, LdapMsg, LdapOp,
    LdapPartialAttribute, LdapResult, LdapResultCode, LdapSearchRequest, LdapSearchResultEntry,
    LdapSearchScope, LdapSubstringFilter,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;

use crate::cache::Cache;
use crate::config::LdapServerConfig;
use crate::entry::{Entry, Field, fold};
use crate::error::{AnnuaireError, Result};
use crate::query::{Attr, Pattern, Query, QueryLimits};

/// Largest LDAP message accepted from a client.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Deepest BER nesting accepted (a filter of depth 8 needs about 2 levels per step).
const MAX_BER_DEPTH: usize = 24;
/// A client silent for this long is disconnected.
const IDLE: Duration = Duration::from_secs(300);
const OBJECT_CLASSES: [&str; 4] = ["top", "person", "organizationalPerson", "inetOrgPerson"];

/// A bound, not yet running, LAN LDAP server.
#[derive(Debug)]
pub struct LdapServer {
    listener: TcpListener,
    config: LdapServerConfig,
    cache: Arc<Cache>,
    limits: QueryLimits,
}

impl LdapServer {
    /// Bind the configured address.
    pub async fn bind(config: LdapServerConfig, cache: Arc<Cache>) -> Result<Self> {
        if let Some(bad) = config
            .accounts
            .iter()
            .find(|a| PasswordHash::new(&a.password_hash).is_err())
        {
            return Err(AnnuaireError::Config {
                reason: format!(
                    "LDAP account {}: password_hash is not an argon2 PHC string",
                    bad.dn
                ),
            });
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|e| AnnuaireError::Listen {
                    addr: config.listen,
                    context: "bind",
                    source: e,
                })?;
        Ok(Self {
            listener,
            config,
            cache,
            limits: QueryLimits::default(),
        })
    }

    /// The address actually bound (port 0 in the config picks a free one).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| AnnuaireError::Listen {
                addr: self.config.listen,
                context: "local address",
                source: e,
            })
    }

    /// Serve until the task is dropped or aborted.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let shared = Arc::new((self.config, self.cache, self.limits));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "LDAP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                tracing::warn!(%peer, "LDAP connection refused: too many connections");
                continue;
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let (config, cache, limits) = &*shared;
                serve_connection(stream, peer, config, cache, limits).await;
                drop(permit);
            });
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: &LdapServerConfig,
    cache: &Cache,
    limits: &QueryLimits,
) {
    // Until a bind says otherwise, a client may search only where anonymous use is allowed.
    let mut may_search = config.allow_anonymous;
    let mut framed = Framed::new(
        stream,
        LdapCodec::new(Some(MAX_MESSAGE_BYTES), Some(MAX_BER_DEPTH)),
    );
    loop {
        let msg = match tokio::time::timeout(IDLE, framed.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(%peer, error = %e, "LDAP message refused; closing");
                break;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        let msgid = msg.msgid;
        let replies = match msg.op {
            LdapOp::BindRequest(request) => {
                let (answer, allowed) = bind(msgid, &request.dn, &request.cred, config).await;
                may_search = allowed;
                vec![answer]
            }
            LdapOp::SearchRequest(_) if !may_search => vec![reply(
                msgid,
                LdapOp::SearchResultDone(result(
                    LdapResultCode::InsufficentAccessRights,
                    "bind with a local account first",
                )),
            )],
            LdapOp::SearchRequest(request) => {
                search(msgid, &request, config, cache, limits, peer).await
            }
            LdapOp::AbandonRequest(_) => Vec::new(),
            LdapOp::ExtendedRequest(_) => vec![reply(
                msgid,
                LdapOp::ExtendedResponse(LdapExtendedResponse {
                    res: result(LdapResultCode::UnwillingToPerform, "no extended operation"),
                    name: None,
                    value: None,
                }),
            )],
            LdapOp::ModifyRequest(_) => vec![reply(msgid, LdapOp::ModifyResponse(read_only()))],
            LdapOp::AddRequest(_) => vec![reply(msgid, LdapOp::AddResponse(read_only()))],
            LdapOp::DelRequest(_) => vec![reply(msgid, LdapOp::DelResponse(read_only()))],
            LdapOp::ModifyDNRequest(_) => {
                vec![reply(msgid, LdapOp::ModifyDNResponse(read_only()))]
            }
            LdapOp::CompareRequest(_) => vec![reply(msgid, LdapOp::CompareResult(read_only()))],
            // Unbind, and anything a client should not send to a server.
            _ => break,
        };
        for r in replies {
            if let Err(e) = framed.feed(r).await {
                tracing::info!(%peer, error = %e, "LDAP write failed; closing");
                return;
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
    }
}

fn reply(msgid: i32, op: LdapOp) -> LdapMsg {
    LdapMsg {
        msgid,
        op,
        ctrl: Vec::new(),
    }
}

fn result(code: LdapResultCode, message: &str) -> LdapResult {
    LdapResult {
        code,
        matcheddn: String::new(),
        message: message.to_owned(),
        referral: Vec::new(),
    }
}

fn read_only() -> LdapResult {
    result(
        LdapResultCode::UnwillingToPerform,
        "read-only copy of the Annuaire Santé",
    )
}

/// Longest password checked: argon2 cost must not be driven by the client.
const MAX_PASSWORD_BYTES: usize = 256;

/// Answer a bind, and whether the connection may now search: a failed bind leaves it
/// anonymous (RFC 4511 §4.2.1).
async fn bind(
    msgid: i32,
    dn: &str,
    cred: &LdapBindCred,
    config: &LdapServerConfig,
) -> (LdapMsg, bool) {
    let (res, allowed) = match cred {
        LdapBindCred::Simple(pw) if dn.is_empty() && pw.is_empty() => {
            if config.allow_anonymous {
                (result(LdapResultCode::Success, ""), true)
            } else {
                (
                    result(
                        LdapResultCode::InappropriateAuthentication,
                        "anonymous bind is not allowed here: bind with a local account",
                    ),
                    false,
                )
            }
        }
        LdapBindCred::Simple(pw) => {
            if check_password(config, dn, pw).await {
                (result(LdapResultCode::Success, ""), true)
            } else {
                tracing::info!(dn, "LDAP bind refused");
                (
                    result(LdapResultCode::InvalidCredentials, "invalid credentials"),
                    config.allow_anonymous,
                )
            }
        }
        _ => (
            result(
                LdapResultCode::AuthMethodNotSupported,
                "only simple bind is offered",
            ),
            config.allow_anonymous,
        ),
    };
    let msg = reply(
        msgid,
        LdapOp::BindResponse(LdapBindResponse {
            res,
            saslcreds: None,
        }),
    );
    (msg, allowed)
}

async fn check_password(config: &LdapServerConfig, dn: &str, password: &str) -> bool {
    let dn = normalise_dn(dn);
    let Some(account) = config.accounts.iter().find(|a| normalise_dn(&a.dn) == dn) else {
        return false;
    };
    // An empty password is an unauthenticated bind (RFC 4513 §5.1.2): never a success.
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let hash = account.password_hash.clone();
    let password = password.to_owned();
    // argon2 is deliberately slow: keep it off the connection tasks' worker.
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

async fn search(
    msgid: i32,
    request: &LdapSearchRequest,
    config: &LdapServerConfig,
    cache: &Cache,
    limits: &QueryLimits,
    peer: SocketAddr,
) -> Vec<LdapMsg> {
    let done = |code, message: &str| reply(msgid, LdapOp::SearchResultDone(result(code, message)));
    let base = normalise_dn(&request.base);
    if base.is_empty() && request.scope == LdapSearchScope::Base {
        return vec![
            root_dse(msgid, &config.base_dn),
            done(LdapResultCode::Success, ""),
        ];
    }
    if base != normalise_dn(&config.base_dn) {
        return vec![done(LdapResultCode::NoSuchObject, "unknown base DN")];
    }
    if request.scope == LdapSearchScope::Base {
        return vec![done(LdapResultCode::Success, "")];
    }
    let query = match translate(&request.filter, limits) {
        Ok(query) => query,
        Err(reason) => {
            tracing::info!(%peer, %reason, "LDAP filter refused");
            return vec![done(LdapResultCode::UnwillingToPerform, &reason)];
        }
    };
    let size_limit = match usize::try_from(request.sizelimit) {
        Ok(n) if n > 0 => n.min(config.size_limit),
        _ => config.size_limit,
    };
    let time_limit = match u64::try_from(request.timelimit) {
        Ok(s) if s > 0 => Duration::from_secs(s).min(config.time_limit),
        _ => config.time_limit,
    };
    let found = match tokio::time::timeout(time_limit, cache.search(&query, size_limit)).await {
        Err(_) => {
            tracing::info!(%peer, ?time_limit, "LDAP search hit its time limit");
            return vec![done(
                LdapResultCode::TimeLimitExceeded,
                "time limit exceeded: refine your search",
            )];
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "LDAP search failed");
            return vec![done(LdapResultCode::Other, "directory unavailable")];
        }
        Ok(Ok(found)) => found,
    };
    tracing::debug!(%peer, entries = found.entries.len(), truncated = found.truncated, "LDAP search");
    let mut out: Vec<LdapMsg> = found
        .entries
        .iter()
        .map(|e| {
            reply(
                msgid,
                LdapOp::SearchResultEntry(to_ldap(e, &config.base_dn, &request.attrs)),
            )
        })
        .collect();
    out.push(if found.truncated {
        done(
            LdapResultCode::SizeLimitExceeded,
            &format!("more than {size_limit} entries match: refine your search"),
        )
    } else {
        done(LdapResultCode::Success, "")
    });
    out
}

fn root_dse(msgid: i32, base_dn: &str) -> LdapMsg {
    reply(
        msgid,
        LdapOp::SearchResultEntry(LdapSearchResultEntry {
            dn: String::new(),
            attributes: vec![
                attribute("objectClass", &["top"]),
                attribute("namingContexts", &[base_dn]),
                attribute("supportedLDAPVersion", &["3"]),
            ],
        }),
    )
}

fn attribute(name: &str, values: &[&str]) -> LdapPartialAttribute {
    LdapPartialAttribute {
        atype: name.to_owned(),
        vals: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    }
}

fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.trim().to_ascii_lowercase())
        .filter(|rdn| !rdn.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// The LDAP view of an entry (inetOrgPerson attributes).
fn to_ldap(entry: &Entry, base_dn: &str, wanted: &[String]) -> LdapSearchResultEntry {
    let cn = entry.common_name();
    let sn = if entry.nom.is_empty() {
        &cn
    } else {
        &entry.nom
    };
    let all: [(&str, &str); 10] = [
        ("cn", &cn),
        ("sn", sn),
        ("givenName", &entry.prenom),
        ("mail", &entry.mail),
        ("o", &entry.organisation),
        ("l", &entry.ville),
        ("postalCode", &entry.code_postal),
        ("title", &entry.profession),
        ("businessCategory", &entry.specialite),
        ("description", &entry.bal_type),
    ];
    let every = wanted.is_empty() || wanted.iter().any(|w| w == "*");
    let want = |name: &str| every || wanted.iter().any(|w| w.eq_ignore_ascii_case(name));
    let mut attributes = Vec::new();
    if want("objectClass") {
        attributes.push(attribute("objectClass", &OBJECT_CLASSES));
    }
    attributes.extend(
        all.iter()
            .filter(|(name, value)| !value.is_empty() && want(name))
            .map(|(name, value)| attribute(name, &[value])),
    );
    LdapSearchResultEntry {
        dn: format!("mail={},{base_dn}", escape_dn_value(&entry.mail)),
        attributes,
    }
}

/// RFC 4514 escaping of an attribute value in a DN.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let edge =
            (i == 0 && (c == ' ' || c == '#')) || (i + 1 == value.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn ldap_attr(name: &str) -> Option<Attr> {
    Some(match name.to_ascii_lowercase().as_str() {
        "cn" | "displayname" => Attr::CommonName,
        "sn" => Attr::Field(Field::Nom),
        "givenname" => Attr::Field(Field::Prenom),
        "mail" => Attr::Field(Field::Mail),
        "o" => Attr::Field(Field::Organisation),
        "l" => Attr::Field(Field::Ville),
        "postalcode" => Attr::Field(Field::CodePostal),
        "title" => Attr::Field(Field::Profession),
        "businesscategory" => Attr::Field(Field::Specialite),
        "description" => Attr::Field(Field::BalType),
        _ => return None,
    })
}

/// Translate an LDAP filter into a [`Query`], within `limits`; the error is the reason
/// given to the client.
pub fn translate(filter: &LdapFilter, limits: &QueryLimits) -> Result<Query, String> {
    let mut budget = Budget {
        nodes: 0,
        bytes: 0,
        limits,
    };
    budget.translate(filter, 0)
}

struct Budget<'a> {
    nodes: usize,
    bytes: usize,
    limits: &'a QueryLimits,
}

impl Budget<'_> {
    fn spend(&mut self, depth: usize, values: &[&str]) -> Result<(), String> {
        self.nodes += 1;
        self.bytes += values.iter().map(|v| v.len()).sum::<usize>();
        if depth > self.limits.max_depth {
            return Err(format!(
                "filter nested deeper than {}",
                self.limits.max_depth
            ));
        }
        if self.nodes > self.limits.max_nodes {
            return Err(format!(
                "filter has more than {} terms",
                self.limits.max_nodes
            ));
        }
        if self.bytes > self.limits.max_value_bytes {
            return Err(format!(
                "filter values exceed {} bytes",
                self.limits.max_value_bytes
            ));
        }
        Ok(())
    }

    fn translate(&mut self, filter: &LdapFilter, depth: usize) -> Result<Query, String> {
        Ok(match filter {
            LdapFilter::And(fs) => {
                self.spend(depth, &[])?;
                Query::And(self.all(fs, depth)?)
            }
            LdapFilter::Or(fs) => {
                self.spend(depth, &[])?;
                Query::Or(self.all(fs, depth)?)
            }
            LdapFilter::Not(f) => {
                self.spend(depth, &[])?;
                Query::Not(Box::new(self.translate(f, depth + 1)?))
            }
            LdapFilter::Equality(attr, value) | LdapFilter::Approx(attr, value) => {
                self.spend(depth, &[attr, value])?;
                if attr.eq_ignore_ascii_case("objectClass") {
                    if OBJECT_CLASSES.iter().any(|c| c.eq_ignore_ascii_case(value)) {
                        Query::All
                    } else {
                        Query::Nothing
                    }
                } else {
                    ldap_attr(attr).map_or(Query::Nothing, |a| {
                        Query::Match(a, Pattern::Equals(fold(value)))
                    })
                }
            }
            LdapFilter::Substring(attr, sub) => {
                let LdapSubstringFilter {
                    initial,
                    any,
                    final_,
                } = sub;
                let mut values: Vec<&str> = any.iter().map(String::as_str).collect();
                values.extend(initial.as_deref());
                values.extend(final_.as_deref());
                values.push(attr);
                self.spend(depth, &values)?;
                ldap_attr(attr).map_or(Query::Nothing, |a| {
                    Query::Match(
                        a,
                        Pattern::Substring {
                            initial: initial.as_deref().map(fold),
                            any: any.iter().map(|s| fold(s)).collect(),
                            final_: final_.as_deref().map(fold),
                        },
                    )
                })
            }
            LdapFilter::Present(attr) => {
                self.spend(depth, &[attr])?;
                if attr.eq_ignore_ascii_case("objectClass") {
                    Query::All
                } else {
                    ldap_attr(attr).map_or(Query::Nothing, Query::Present)
                }
            }
            LdapFilter::GreaterOrEqual(..)
            | LdapFilter::LessOrEqual(..)
            | LdapFilter::Extensible(_) => {
                return Err("ordering and extensible matches are not offered".to_owned());
            }
        })
    }

    fn all(&mut self, filters: &[LdapFilter], depth: usize) -> Result<Vec<Query>, String> {
        filters
            .iter()
            .map(|f| self.translate(f, depth + 1))
            .collect()
    }
}
