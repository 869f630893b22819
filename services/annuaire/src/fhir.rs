//! The Annuaire Santé FHIR API: `PractitionerRole` searches on `mailbox-mss`, paged through
//! `link[rel=next]`, BAL types filtered locally (the gateway ignores `mailbox-mss-type`).

use std::path::Path;

use serde_json::Value;

use crate::config::FhirSource;
use crate::entry::Entry;
use crate::error::{AnnuaireError, Result};
use crate::extraction::plausible_address;

/// One Bundle page may not exceed this (the gateway pages by 50 entries by default).
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;
const METADATA_EXTENSION: &str = "as-ext-mailbox-mss-metadata";

/// Every mailbox of the configured search, across all pages (at most `max_pages`).
pub async fn fetch(config: &FhirSource, api_key: &str, ca_bundle: &Path) -> Result<Vec<Entry>> {
    let base = config.base_url.trim_end_matches('/');
    let mut url = format!(
        "{base}/PractitionerRole?mailbox-mss:contains={}",
        percent_encode(&config.mailbox_contains)
    );
    let mut entries = Vec::new();
    for page in 0.. {
        if page == config.max_pages {
            return Err(AnnuaireError::Source {
                source_name: "fhir",
                url,
                reason: format!("more than {} pages", config.max_pages),
            });
        }
        let body = crate::http::get(
            "fhir",
            &url,
            &[
                ("ESANTE-API-KEY", api_key),
                ("Accept", "application/fhir+json"),
            ],
            ca_bundle,
            config.timeout,
            MAX_PAGE_BYTES,
        )
        .await?;
        let bundle: Value = serde_json::from_slice(&body).map_err(|e| AnnuaireError::Source {
            source_name: "fhir",
            url: url.clone(),
            reason: format!("not a JSON Bundle: {e}"),
        })?;
        entries.extend(mailboxes(&bundle, &config.bal_types));
        let next = bundle["link"].as_array().and_then(|links| {
            links
                .iter()
                .find(|l| l["relation"] == "next")
                .and_then(|l| l["url"].as_str())
        });
        match next {
            // The API key goes with every page: never to another server than the configured one.
            Some(next) if same_origin(next, base) => next.clone_into(&mut url),
            Some(next) => {
                return Err(AnnuaireError::Source {
                    source_name: "fhir",
                    url,
                    reason: format!("next page {next:?} is not under {base}"),
                });
            }
            None => break,
        }
    }
    tracing::info!(entries = entries.len(), "FHIR mailboxes fetched");
    Ok(entries)
}

/// The mailboxes of one Bundle: each telecom of a `PractitionerRole` (or `Organization`)
/// that carries the mailbox-mss metadata extension. Red-listed
/// mailboxes (`listeRouge`) and types not asked for are left out.
fn mailboxes(bundle: &Value, bal_types: &[String]) -> Vec<Entry> {
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| &e["resource"]).collect())
        .unwrap_or_default();
    // Practitioners referenced by the roles, for names.
    let practitioner = |reference: &str| {
        resources.iter().find(|r| {
            r["resourceType"] == "Practitioner"
                && r["id"]
                    .as_str()
                    .is_some_and(|id| reference.ends_with(&format!("Practitioner/{id}")))
        })
    };
    let mut out = Vec::new();
    for resource in &resources {
        let Some(telecoms) = resource["telecom"].as_array() else {
            continue;
        };
        if resource["resourceType"] == "Practitioner" {
            continue;
        }
        let person = resource["practitioner"]["reference"]
            .as_str()
            .and_then(practitioner);
        let name = person
            .and_then(|p| p["name"].as_array())
            .and_then(|n| n.first());
        for telecom in telecoms {
            let Some(mail) = telecom["value"].as_str() else {
                continue;
            };
            let Some(meta) = telecom["extension"].as_array().and_then(|exts| {
                exts.iter().find(|e| {
                    e["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(METADATA_EXTENSION))
                })
            }) else {
                continue;
            };
            let sub = |key: &str| {
                meta["extension"]
                    .as_array()
                    .and_then(|exts| exts.iter().find(|e| e["url"] == key))
            };
            let bal_type = sub("type")
                .and_then(|e| {
                    e["valueCodeableConcept"]["coding"][0]["code"]
                        .as_str()
                        .or_else(|| e["valueCoding"]["code"].as_str())
                })
                .unwrap_or_default();
            let liste_rouge = sub("listeRouge").is_some_and(|e| e["valueBoolean"] == true);
            if liste_rouge
                || !bal_types.iter().any(|t| t == bal_type)
                || !plausible_address(mail)
                || mail.len() > 256
            {
                continue;
            }
            let text = |v: &Value| v.as_str().unwrap_or_default().chars().take(256).collect();
            out.push(Entry {
                mail: mail.to_owned(),
                bal_type: bal_type.to_owned(),
                nom: name.map(|n| text(&n["family"])).unwrap_or_default(),
                prenom: name.map(|n| text(&n["given"][0])).unwrap_or_default(),
                profession: text(&resource["code"][0]["coding"][0]["display"]),
                specialite: text(&resource["specialty"][0]["coding"][0]["display"]),
                organisation: text(&resource["organization"]["display"]),
                ville: String::new(),
                code_postal: String::new(),
                raw: (*resource).clone(),
            });
        }
    }
    out
}

fn same_origin(url: &str, base: &str) -> bool {
    let origin = |u: &str| {
        u.parse::<hyper::Uri>().ok().map(|u| {
            (
                u.scheme_str().map(str::to_owned),
                u.authority().map(ToString::to_string),
            )
        })
    };
    origin(url).is_some_and(|o| Some(o) == origin(base))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
