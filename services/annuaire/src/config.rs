//! `[annuaire]` of passerelle.toml.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The Annuaire service: where its data comes from, where it lives and how the LAN reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnuaireConfig {
    /// Directory of the local cache (one SQLite file per generation plus a pointer file).
    pub cache_dir: PathBuf,
    /// Time between two refreshes of the bulk sources.
    #[serde(with = "humantime_serde", default = "default_refresh_every")]
    pub refresh_every: Duration,
    /// Age of the last good refresh after which the cache is reported stale.
    #[serde(with = "humantime_serde", default = "default_stale_after")]
    pub stale_after: Duration,
    /// PEM bundle of the CAs trusted for `https://` sources (the national gateway and the
    /// extraction's download site use public CAs).
    #[serde(default = "default_ca_bundle")]
    pub ca_bundle: PathBuf,
    /// A new load with fewer entries than this percentage of the current one is refused.
    #[serde(default = "default_sanity_floor")]
    pub sanity_floor_percent: u8,
    #[serde(default)]
    pub extraction: Option<ExtractionSource>,
    #[serde(default)]
    pub fhir: Option<FhirSource>,
    #[serde(default)]
    pub upstream_ldap: Option<UpstreamLdap>,
    #[serde(default)]
    pub ldap_server: Option<LdapServerConfig>,
}

/// The public extraction file (pipe-delimited text), downloaded on each refresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractionSource {
    /// `https://…` or `http://…` URL, or `file:///…` for a file dropped on the appliance.
    pub url: String,
    #[serde(with = "humantime_serde", default = "default_download_timeout")]
    pub timeout: Duration,
}

/// The Annuaire Santé FHIR API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSource {
    /// Base URL, e.g. `https://gateway.api.esante.gouv.fr/fhir/v2`.
    pub base_url: String,
    /// File holding the API key sent as `ESANTE-API-KEY` (secrets by path, never inline).
    pub api_key_file: PathBuf,
    /// `mailbox-mss:contains` value of the search, e.g. a domain.
    pub mailbox_contains: String,
    /// BAL types kept (the gateway ignores the type parameter, so we filter locally).
    #[serde(default = "default_bal_types")]
    pub bal_types: Vec<String>,
    #[serde(default = "default_max_pages")]
    pub max_pages: usize,
    #[serde(with = "humantime_serde", default = "default_download_timeout")]
    pub timeout: Duration,
}

/// TM2.1.1A: the national LDAP, for interactive look-ups only (EX_2.1.1_5010).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLdap {
    /// e.g. `ldap://ldap.annuaire.mssante.fr:389`
    pub url: String,
    /// At least `ou=bal,o=mssante,c=fr`.
    #[serde(default = "default_upstream_base")]
    pub base_dn: String,
    /// Size limit sent with each search (the server's default is 100).
    #[serde(default = "default_upstream_size")]
    pub size_limit: i32,
    /// Client-side bound of one search (the server's default time limit is 1 minute).
    #[serde(with = "humantime_serde", default = "default_upstream_timeout")]
    pub timeout: Duration,
    /// Attribute names of the upstream schema (not given by Réf. #1).
    #[serde(default)]
    pub attributes: UpstreamAttributes,
}

/// Upstream attribute names for each searchable field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamAttributes {
    pub mail: String,
    pub bal_type: String,
    pub nom: String,
    pub prenom: String,
    pub profession: String,
    pub specialite: String,
    pub organisation: String,
    pub ville: String,
    pub code_postal: String,
}

impl Default for UpstreamAttributes {
    fn default() -> Self {
        Self {
            mail: "mail".into(),
            bal_type: "description".into(),
            nom: "sn".into(),
            prenom: "givenName".into(),
            profession: "title".into(),
            specialite: "businessCategory".into(),
            organisation: "o".into(),
            ville: "l".into(),
            code_postal: "postalCode".into(),
        }
    }
}

/// The read-only LDAP server for the LAN's mail clients and LPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapServerConfig {
    pub listen: SocketAddr,
    #[serde(default = "default_base_dn")]
    pub base_dn: String,
    /// Most entries one search returns (then `sizeLimitExceeded`).
    #[serde(default = "default_server_size")]
    pub size_limit: usize,
    #[serde(with = "humantime_serde", default = "default_server_time")]
    pub time_limit: Duration,
    /// Most concurrent client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Serve clients that bind anonymously or not at all (the usual for an address book).
    #[serde(default = "default_true")]
    pub allow_anonymous: bool,
    /// Local accounts for simple bind.
    #[serde(default)]
    pub accounts: Vec<LdapAccount>,
}

/// A local account of the LAN LDAP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapAccount {
    /// Bind DN, e.g. `cn=lps,ou=annuaire,o=passerelle`.
    pub dn: String,
    /// argon2 PHC string (`$argon2id$v=19$…`): a hash, never the password.
    pub password_hash: String,
}

fn default_ca_bundle() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}
fn default_refresh_every() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_stale_after() -> Duration {
    Duration::from_secs(3 * 24 * 3600)
}
fn default_sanity_floor() -> u8 {
    50
}
fn default_download_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_bal_types() -> Vec<String> {
    ["PER", "ORG", "APP", "CAB"].map(String::from).to_vec()
}
fn default_max_pages() -> usize {
    1000
}
fn default_upstream_base() -> String {
    "ou=bal,o=mssante,c=fr".into()
}
fn default_upstream_size() -> i32 {
    100
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_base_dn() -> String {
    "ou=annuaire,o=passerelle".into()
}
fn default_server_size() -> usize {
    200
}
fn default_server_time() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_max_connections() -> usize {
    64
}
