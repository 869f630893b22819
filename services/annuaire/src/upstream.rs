//! TM2.1.1A: the national LDAP, for a person looking for a recipient. Never a bulk harvest
//! (EX_2.1.1_5010): a search needs real criteria, combined with AND, each a "contains"
//! match (RE_2.1_5010 makes "contains" the default). A `SizeLimitExceeded` or
//! `TimeLimitExceeded` answer becomes [`AnnuaireError::RefineSearch`], and refining a
//! search filters the previous result set locally instead of asking again (RE_2.1_5020).

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions, ldap_escape};

use crate::config::UpstreamLdap;
use crate::entry::{Entry, Field, fold};
use crate::error::{AnnuaireError, Result};

/// A criterion shorter than this (after trimming wildcards) does not count: it would match
/// a large part of the directory.
const MIN_CRITERION_CHARS: usize = 2;
/// Longest criterion accepted (the widest searchable attribute is X(164)).
const MAX_CRITERION_BYTES: usize = 164;

/// Search criteria of Réf. #1 §6.5.1, each "contains", combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    pub nom: Option<String>,
    pub prenom: Option<String>,
    pub profession: Option<String>,
    pub specialite: Option<String>,
    pub organisation: Option<String>,
    pub ville: Option<String>,
    pub code_postal: Option<String>,
}

impl Criteria {
    fn pairs(&self) -> Vec<(Field, &str)> {
        [
            (Field::Nom, &self.nom),
            (Field::Prenom, &self.prenom),
            (Field::Profession, &self.profession),
            (Field::Specialite, &self.specialite),
            (Field::Organisation, &self.organisation),
            (Field::Ville, &self.ville),
            (Field::CodePostal, &self.code_postal),
        ]
        .into_iter()
        .filter_map(|(f, v)| {
            v.as_deref()
                .map(|v| (f, v.trim_matches(|c: char| c == '*' || c.is_whitespace())))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// EX_2.1.1_5010: refuse what would amount to fetching the directory.
    fn check(&self) -> Result<Vec<(Field, &str)>> {
        let pairs = self.pairs();
        if let Some((field, _)) = pairs.iter().find(|(_, v)| v.len() > MAX_CRITERION_BYTES) {
            return Err(AnnuaireError::BadQuery {
                reason: format!("{field:?} longer than {MAX_CRITERION_BYTES} bytes"),
            });
        }
        if !pairs
            .iter()
            .any(|(_, v)| v.chars().filter(|c| *c != '*').count() >= MIN_CRITERION_CHARS)
        {
            return Err(AnnuaireError::BulkHarvestRefused {
                reason: format!(
                    "at least one criterion of {MIN_CRITERION_CHARS} characters or more is needed"
                ),
            });
        }
        Ok(pairs)
    }

    fn matches(&self, entry: &Entry) -> bool {
        self.pairs()
            .iter()
            .all(|(field, v)| fold(entry.field(*field)).contains(&fold(v)))
    }

    /// True when every entry matching `self` is matched by `earlier` too.
    fn narrows(&self, earlier: &Criteria) -> bool {
        let mine = self.pairs();
        earlier.pairs().iter().all(|(field, old)| {
            mine.iter()
                .any(|(f, new)| f == field && fold(new).contains(&fold(old)))
        })
    }
}

/// The answer to one search, kept to refine locally (RE_2.1_5020).
#[derive(Debug, Clone)]
pub struct ResultSet {
    pub criteria: Criteria,
    pub entries: Vec<Entry>,
}

impl ResultSet {
    /// RE_2.1_5020: when `narrower` only adds to or lengthens the criteria of this result,
    /// filter it locally; `None` when it does not (then search again).
    pub fn refine(&self, narrower: &Criteria) -> Option<ResultSet> {
        narrower.narrows(&self.criteria).then(|| ResultSet {
            criteria: narrower.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| narrower.matches(e))
                .cloned()
                .collect(),
        })
    }
}

/// Client of the national LDAP.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    config: UpstreamLdap,
}

impl UpstreamClient {
    pub fn new(config: UpstreamLdap) -> Self {
        Self { config }
    }

    /// The LDAP filter for `criteria`; values are escaped (RFC 4515), so a criterion cannot
    /// change the filter's structure.
    pub fn filter(&self, criteria: &Criteria) -> Result<String> {
        let pairs = criteria.check()?;
        let attrs = &self.config.attributes;
        let name = |f: Field| match f {
            Field::Mail => &attrs.mail,
            Field::BalType => &attrs.bal_type,
            Field::Nom => &attrs.nom,
            Field::Prenom => &attrs.prenom,
            Field::Profession => &attrs.profession,
            Field::Specialite => &attrs.specialite,
            Field::Organisation => &attrs.organisation,
            Field::Ville => &attrs.ville,
            Field::CodePostal => &attrs.code_postal,
        };
        let terms: Vec<String> = pairs
            .iter()
            .map(|(f, v)| format!("({}=*{}*)", name(*f), ldap_escape(*v)))
            .collect();
        let terms = terms.concat();
        Ok(format!("(&{terms})"))
    }

    /// One interactive search.
    pub async fn search(&self, criteria: &Criteria) -> Result<ResultSet> {
        let filter = self.filter(criteria)?;
        let peer = self.config.url.clone();
        let fail = |context: &'static str| {
            let peer = peer.clone();
            move |e: ldap3::LdapError| AnnuaireError::Upstream {
                peer,
                context,
                reason: e.to_string(),
            }
        };
        let timeout = self.config.timeout;
        let exchange = async {
            let settings = LdapConnSettings::new().set_conn_timeout(timeout);
            let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
                .await
                .map_err(fail("connect"))?;
            ldap3::drive!(conn);
            let time_limit = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
            let attrs = &self.config.attributes;
            let wanted = [
                &attrs.mail,
                &attrs.bal_type,
                &attrs.nom,
                &attrs.prenom,
                &attrs.profession,
                &attrs.specialite,
                &attrs.organisation,
                &attrs.ville,
                &attrs.code_postal,
            ];
            let result = ldap
                .with_search_options(
                    SearchOptions::new()
                        .sizelimit(self.config.size_limit)
                        .timelimit(time_limit),
                )
                .search(
                    &self.config.base_dn,
                    Scope::Subtree,
                    &filter,
                    wanted.to_vec(),
                )
                .await
                .map_err(fail("search"))?;
            // Best effort: the answer is in hand whatever the unbind does.
            let _ = ldap.unbind().await;
            Ok(result)
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| AnnuaireError::Timeout {
                peer: peer.clone(),
                context: "TM2.1.1A search",
                after: timeout,
            })??;
        match result.1.rc {
            0 => {}
            4 => {
                return Err(AnnuaireError::RefineSearch {
                    peer,
                    limit: "SizeLimitExceeded",
                });
            }
            3 => {
                return Err(AnnuaireError::RefineSearch {
                    peer,
                    limit: "TimeLimitExceeded",
                });
            }
            rc => {
                return Err(AnnuaireError::Upstream {
                    peer,
                    context: "search",
                    reason: format!("result code {rc}: {}", result.1.text),
                });
            }
        }
        let entries = result
            .0
            .into_iter()
            .map(|re| self.entry(&SearchEntry::construct(re)))
            .collect();
        Ok(ResultSet {
            criteria: criteria.clone(),
            entries,
        })
    }

    fn entry(&self, e: &SearchEntry) -> Entry {
        let attrs = &self.config.attributes;
        let get = |name: &str| {
            e.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first().cloned())
                .unwrap_or_default()
        };
        Entry {
            mail: get(&attrs.mail),
            bal_type: get(&attrs.bal_type),
            nom: get(&attrs.nom),
            prenom: get(&attrs.prenom),
            profession: get(&attrs.profession),
            specialite: get(&attrs.specialite),
            organisation: get(&attrs.organisation),
            ville: get(&attrs.ville),
            code_postal: get(&attrs.code_postal),
            raw: serde_json::json!({ "dn": e.dn, "attrs": e.attrs }),
        }
    }
}
