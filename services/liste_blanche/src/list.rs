//! The verified list in memory: domains ↔ operator certificate DNs, many-to-many (EX_LBL_5010),
//! DNs compared after RFC 4518 normalisation ([`passerelle_trust::Dn`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher as _, RandomState};

use passerelle_trust::Dn;

use crate::error::ListeBlancheError;

/// What the index keeps of one `Domaine` entry (`Description` and `DateMAJ` are checked, not
/// kept: nothing decides on them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Domaine {
    pub(crate) nom: String,
    /// The DNs as written (RFC 2253 strings); none when the operator has no certificate yet.
    pub(crate) dns: Vec<String>,
}

/// The index built from a verified list. Domain names are compared case-insensitively (DNS).
#[derive(Clone, Debug, Default)]
pub struct ListeBlanche {
    version_format: Option<String>,
    date_de_generation: Option<String>,
    domains: BTreeMap<String, BTreeSet<usize>>,
    dns: Vec<Dn>,
    /// DN → its id, keyed by the DN's hash computed once: hashing a [`Dn`] prepares every value
    /// (RFC 4518), too costly to repeat on every rehash of a 10 000-entry map.
    by_dn: HashMap<u64, Vec<usize>>,
    hasher: RandomState,
    domains_of_dn: Vec<BTreeSet<String>>,
}

impl ListeBlanche {
    /// Build the index; each distinct DN string is parsed and prepared once (operators often
    /// serve many domains with one certificate).
    pub(crate) fn build(
        version_format: Option<String>,
        date_de_generation: Option<String>,
        entries: &[Domaine],
    ) -> Result<Self, ListeBlancheError> {
        let mut list = ListeBlanche {
            version_format,
            date_de_generation,
            ..ListeBlanche::default()
        };
        let mut by_text: HashMap<&str, usize> = HashMap::new();
        for entry in entries {
            let domain = entry.nom.to_ascii_lowercase();
            let mut ids = BTreeSet::new();
            for text in &entry.dns {
                let id = if let Some(&id) = by_text.get(text.as_str()) {
                    id
                } else {
                    let dn = Dn::parse(text).map_err(|e| ListeBlancheError::BadDn {
                        domain: entry.nom.clone(),
                        why: e.to_string(),
                    })?;
                    let hash = list.hasher.hash_one(&dn);
                    let id = if let Some(id) = list.dn_id_hashed(&dn, hash) {
                        id
                    } else {
                        list.dns.push(dn);
                        list.domains_of_dn.push(BTreeSet::new());
                        let id = list.dns.len() - 1;
                        list.by_dn.entry(hash).or_default().push(id);
                        id
                    };
                    by_text.insert(text, id);
                    id
                };
                ids.insert(id);
                list.domains_of_dn[id].insert(domain.clone());
            }
            list.domains.entry(domain).or_default().extend(ids);
        }
        Ok(list)
    }

    fn dn_id(&self, dn: &Dn) -> Option<usize> {
        self.dn_id_hashed(dn, self.hasher.hash_one(dn))
    }

    fn dn_id_hashed(&self, dn: &Dn, hash: u64) -> Option<usize> {
        self.by_dn
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.dns[id] == *dn)
    }

    /// `versionFormat` of the list.
    pub fn version_format(&self) -> Option<&str> {
        self.version_format.as_deref()
    }

    /// `DateDeGeneration` of the list, as written.
    pub fn date_de_generation(&self) -> Option<&str> {
        self.date_de_generation.as_deref()
    }

    /// Number of distinct domains.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Every listed domain, lowercase, sorted.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// EX_3.2_5060, EX_3.1_5030 step 6: the domain is in the list.
    pub fn is_domain_listed(&self, domain: &str) -> bool {
        self.domains.contains_key(&domain.to_ascii_lowercase())
    }

    /// EX_3.1_5030 step 4: the certificate DN is in the list (for any domain).
    pub fn is_dn_listed(&self, dn: &Dn) -> bool {
        self.dn_id(dn).is_some()
    }

    /// EX_3.1_5030 step 5–6, EX_3.2_5050 step 6: the DN is recorded for this domain.
    pub fn dn_allowed_for_domain(&self, dn: &Dn, domain: &str) -> bool {
        match (
            self.dn_id(dn),
            self.domains.get(&domain.to_ascii_lowercase()),
        ) {
            (Some(id), Some(ids)) => ids.contains(&id),
            _ => false,
        }
    }

    /// The DNs recorded for a domain.
    pub fn dns_for_domain(&self, domain: &str) -> Vec<&Dn> {
        self.domains
            .get(&domain.to_ascii_lowercase())
            .map(|ids| ids.iter().map(|&i| &self.dns[i]).collect())
            .unwrap_or_default()
    }

    /// The domains recorded for a DN.
    pub fn domains_for_dn(&self, dn: &Dn) -> Vec<&str> {
        self.dn_id(dn)
            .map(|i| self.domains_of_dn[i].iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}
