//! Searches over the cache: a small filter language shared by the LAN LDAP server, the JSON
//! API and the CLI. Matching is done here, on folded copies of the values (accent- and
//! case-insensitive); the SQLite FTS5 trigram index only narrows the candidates.

use crate::entry::{Entry, Field, fold};
use crate::error::{AnnuaireError, Result};

/// Bounds on what a user may ask for, whatever the front end.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Nesting depth of AND/OR/NOT.
    pub max_depth: usize,
    /// Number of nodes in the filter.
    pub max_nodes: usize,
    /// Total bytes of the values in the filter.
    pub max_value_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_nodes: 64,
            max_value_bytes: 1024,
        }
    }
}

/// Which value(s) of an entry a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Field(Field),
    /// The display name ("Prénom Nom", or the structure).
    CommonName,
    /// Any searchable field (free text).
    Any,
}

impl Attr {
    fn columns(self) -> Vec<&'static str> {
        match self {
            Attr::Field(f) => vec![f.column()],
            Attr::CommonName => vec!["nom", "prenom", "organisation"],
            Attr::Any => Field::ALL.iter().map(|f| f.column()).collect(),
        }
    }

    fn values(self, entry: &Entry) -> Vec<String> {
        match self {
            Attr::Field(f) => vec![fold(entry.field(f))],
            Attr::CommonName => vec![fold(&entry.common_name())],
            Attr::Any => Field::ALL.iter().map(|f| fold(entry.field(*f))).collect(),
        }
    }
}

/// A value pattern; its strings are already folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Equals(String),
    Substring {
        initial: Option<String>,
        any: Vec<String>,
        final_: Option<String>,
    },
}

impl Pattern {
    /// "contains `text`".
    pub fn contains(text: &str) -> Self {
        Pattern::Substring {
            initial: None,
            any: vec![fold(text)],
            final_: None,
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Equals(want) => value == want,
            Pattern::Substring {
                initial,
                any,
                final_,
            } => {
                let mut rest = value;
                if let Some(initial) = initial {
                    match rest.strip_prefix(initial.as_str()) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                for part in any {
                    match rest.find(part.as_str()) {
                        Some(at) => rest = &rest[at + part.len()..],
                        None => return false,
                    }
                }
                final_.as_ref().is_none_or(|f| rest.ends_with(f.as_str()))
            }
        }
    }

    fn components(&self) -> Vec<&str> {
        match self {
            Pattern::Equals(v) => vec![v.as_str()],
            Pattern::Substring {
                initial,
                any,
                final_,
            } => initial
                .iter()
                .chain(any)
                .chain(final_)
                .map(String::as_str)
                .collect(),
        }
    }
}

/// A search over the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    Match(Attr, Pattern),
    Present(Attr),
    /// Matches every entry (e.g. `(objectClass=*)`).
    All,
    /// Matches nothing (an attribute the directory does not have).
    Nothing,
}

impl Query {
    /// Free text: every word must occur somewhere in the entry.
    pub fn free_text(text: &str, limits: &QueryLimits) -> Result<Self> {
        if text.len() > limits.max_value_bytes {
            return Err(AnnuaireError::BadQuery {
                reason: format!("text longer than {} bytes", limits.max_value_bytes),
            });
        }
        let words: Vec<Query> = text
            .split_whitespace()
            .map(|w| Query::Match(Attr::Any, Pattern::contains(w)))
            .collect();
        if words.is_empty() {
            return Err(AnnuaireError::BadQuery {
                reason: "empty search".to_owned(),
            });
        }
        if words.len() > limits.max_nodes {
            return Err(AnnuaireError::BadQuery {
                reason: format!("more than {} words", limits.max_nodes),
            });
        }
        Ok(Query::And(words))
    }

    pub fn matches(&self, entry: &Entry) -> bool {
        match self {
            Query::And(qs) => qs.iter().all(|q| q.matches(entry)),
            Query::Or(qs) => qs.iter().any(|q| q.matches(entry)),
            Query::Not(q) => !q.matches(entry),
            Query::Match(attr, pattern) => attr.values(entry).iter().any(|v| pattern.matches(v)),
            Query::Present(attr) => attr.values(entry).iter().any(|v| !v.is_empty()),
            Query::All => true,
            Query::Nothing => false,
        }
    }

    /// An FTS5 expression whose matches are a superset of this query's, or `None` when the
    /// index cannot narrow it (then every entry is a candidate). User text only ever appears
    /// inside double-quoted FTS5 strings with quotes doubled, and the whole expression is
    /// bound as a parameter: it cannot change the SQL nor the FTS5 query's structure.
    pub(crate) fn fts(&self) -> Option<String> {
        match self {
            Query::And(qs) => {
                let parts: Vec<String> = qs.iter().filter_map(Query::fts).collect();
                (!parts.is_empty()).then(|| parts.join(" AND "))
            }
            Query::Or(qs) => {
                let parts: Option<Vec<String>> = qs.iter().map(Query::fts).collect();
                parts
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("({})", p.join(") OR (")))
            }
            Query::Match(attr, pattern) => {
                let columns = attr.columns().join(" ");
                let parts: Vec<String> = pattern
                    .components()
                    .into_iter()
                    // The trigram index needs three characters; a display-name component
                    // with a space may straddle two columns.
                    .filter(|c| c.chars().count() >= 3)
                    .filter(|c| *attr != Attr::CommonName || !c.contains(' '))
                    .map(|c| format!("{{{columns}}} : \"{}\"", c.replace('"', "\"\"")))
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" AND "))
            }
            Query::Not(_) | Query::Present(_) | Query::All | Query::Nothing => None,
        }
    }

    /// True when the query can match nothing whatever the data (lets callers skip the scan).
    pub(crate) fn is_nothing(&self) -> bool {
        match self {
            Query::Nothing => true,
            Query::And(qs) => qs.iter().any(Query::is_nothing),
            Query::Or(qs) => qs.iter().all(Query::is_nothing),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            mail: "helene.lefevre@test.mssante.fr".into(),
            bal_type: "PER".into(),
            nom: "Lefèvre".into(),
            prenom: "Hélène".into(),
            ville: "42000 SAINT-ÉTIENNE".into(),
            ..Entry::default()
        }
    }

    #[test]
    fn substring_semantics_are_anchored_and_ordered() {
        let e = entry();
        let sub = |i: Option<&str>, any: &[&str], f: Option<&str>| {
            Query::Match(
                Attr::CommonName,
                Pattern::Substring {
                    initial: i.map(fold),
                    any: any.iter().map(|s| fold(s)).collect(),
                    final_: f.map(fold),
                },
            )
        };
        assert!(sub(Some("hél"), &[], None).matches(&e));
        assert!(!sub(Some("lef"), &[], None).matches(&e));
        assert!(sub(None, &["ene", "fev"], Some("re")).matches(&e));
        // Components never overlap: "vre" would reuse the "v" of "fev".
        assert!(!sub(None, &["ene", "fev"], Some("vre")).matches(&e));
        assert!(!sub(None, &["fev", "ene"], None).matches(&e));
    }

    #[test]
    fn fts_expression_quotes_user_text() {
        let q = Query::Match(Attr::Field(Field::Nom), Pattern::contains("a\"b OR c"));
        assert_eq!(q.fts().as_deref(), Some("{nom} : \"a\"\"b or c\""));
    }
}
