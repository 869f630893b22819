//! `[trust]` configuration: where the pinned anchors live, the profiles built from them, the CRL
//! cache and its sources. Validated when the store is loaded ([`crate::TrustStore::load`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The trust configuration. The config crate embeds it as its `[trust]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Directory holding the CA certificates (DER or PEM), one per file.
    pub anchors_dir: PathBuf,
    /// Pin list, `sha256sum` format: `<sha256 of the DER, hex>  <file name>` per line
    /// (RE_OPE_5040). Every file of `anchors_dir` must be pinned and match.
    pub pins_file: PathBuf,
    /// Where fetched CRLs are kept between restarts.
    pub crl_cache_dir: PathBuf,
    /// How often the CRL sources are fetched. IGC-Santé publishes full and delta CRLs daily
    /// (EX_OPE_5050); the default of 4 h catches a new publication within the morning.
    #[serde(with = "humantime_serde", default = "default_refresh_every")]
    pub crl_refresh_every: Duration,
    /// CRL download locations. Which CA a CRL belongs to, and whether it is full or delta, is
    /// read from the CRL itself after its signature is verified.
    #[serde(default)]
    pub crl_sources: Vec<CrlSourceConfig>,
    /// TLS protocol options shared by every TLS profile.
    #[serde(default)]
    pub tls: TlsOptions,
    /// Trust profiles by name (`mssante-server`, `sesam-vitale`, …).
    pub profiles: BTreeMap<String, ProfileConfig>,
}

fn default_refresh_every() -> Duration {
    Duration::from_hours(4)
}

/// One CRL download location.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlSourceConfig {
    /// `http://` URL, or `ldap://host[:port]/<dn>[?attribute]` (SESAM-Vitale; the attribute
    /// defaults to `certificateRevocationList;binary`). CRLs are signed, so plain HTTP and LDAP
    /// are what the CAs publish and all we need.
    pub url: String,
    /// Per-download time limit.
    #[serde(with = "humantime_serde", default = "default_fetch_timeout")]
    pub timeout: Duration,
}

fn default_ocsp_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_mins(1)
}

/// TLS options.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Also offer TLS 1.3 (RE_OPE_5015 allows it). Off by default: EX_OPE_5010 lists TLS 1.2
    /// suites only, and a conformity scan of the connector expects exactly those.
    #[serde(default)]
    pub tls13: bool,
}

/// A trust profile: which anchors, which issuing CAs, which use, which revocation policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// What the peer certificate is used for.
    pub role: PeerRole,
    /// Anchor file names (from the pin list) a chain may end at.
    pub anchors: Vec<String>,
    /// File names of the CAs allowed to issue the peer's certificate: the branch restriction
    /// (EX_OPE_5040: only "Élémentaire / Organisations" for MSSanté servers). Every other pinned
    /// CA may still appear higher up in the chain.
    pub allowed_issuers: Vec<String>,
    /// Revocation method: `crl` (default), `ocsp` or `ocsp-then-crl` (see [`RevocationMethod`]).
    #[serde(default)]
    pub revocation: RevocationMethod,
    /// OCSP responder URL (`http://`). When absent, the URL of the certificate's Authority
    /// Information Access extension (id-ad-ocsp) is used.
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// Time limit of one OCSP exchange.
    #[serde(with = "humantime_serde", default = "default_ocsp_timeout")]
    pub ocsp_timeout: Duration,
    /// What to do when revocation status cannot be established.
    #[serde(default)]
    pub unknown_status: UnknownStatusPolicy,
    /// Which certificates of the chain are checked for revocation.
    #[serde(default)]
    pub revocation_scope: RevocationScope,
}

/// What the peer's certificate is used for; sets the extended key usage required.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PeerRole {
    /// A TLS server (EKU serverAuth if EKU is present, KU digitalSignature if KU is present).
    TlsServer,
    /// A TLS client (EKU clientAuth if EKU is present, KU digitalSignature if KU is present).
    TlsClient,
    /// Not TLS (e.g. a SESAM-Vitale encryption certificate): no EKU or KU requirement here; the
    /// caller checks its own.
    Any,
}

/// How revocation is established (EX_OPE_5050: ANS publishes full + delta CRLs daily and runs an
/// OCSP service; the spec does not rank them, so the profile chooses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationMethod {
    /// Full + delta CRLs from the cache (no network at validation time).
    #[default]
    Crl,
    /// OCSP only: a good or revoked answer decides; anything else is unknown.
    Ocsp,
    /// OCSP first; when OCSP gives no answer (unreachable, unknown, unverifiable) the cached
    /// CRLs decide. Revoked by either is refused.
    OcspThenCrl,
}

/// Policy when the revocation status is unknown (no CRL, an out-of-date CRL). EX_OPE_5050 does
/// not say; hard-fail is the default because an MSSanté connector must not accept a certificate
/// it could not check.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownStatusPolicy {
    /// Refuse the certificate.
    #[default]
    HardFail,
    /// Accept it and log a warning. A revoked certificate is still refused.
    SoftFail,
}

/// Which certificates are checked for revocation.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationScope {
    /// The peer's certificate only (what EX_OPE_5050 requires).
    #[default]
    EndEntity,
    /// The peer's certificate and every intermediate (needs the roots' CRLs too).
    Chain,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_table(text: &str) -> Result<TrustConfig, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let trust = table.remove("trust").ok_or("no [trust]")?;
        trust.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    #[test]
    fn example_configuration_parses_with_hard_fail_defaults() {
        let config = trust_table(include_str!("../trust.example.toml")).expect("example");
        let names: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "cps",
                "mssante-client-auth",
                "mssante-server",
                "mssante-server-test",
                "oct",
                "sesam-vitale",
                "sesam-vitale-test"
            ]
        );
        for (name, profile) in &config.profiles {
            assert_eq!(profile.unknown_status, UnknownStatusPolicy::HardFail);
            let expected = if name == "mssante-server" {
                RevocationMethod::OcspThenCrl
            } else {
                RevocationMethod::Crl
            };
            assert_eq!(profile.revocation, expected, "{name}");
        }
        assert_eq!(config.crl_refresh_every, Duration::from_hours(4));
        assert_eq!(config.crl_sources[1].timeout, Duration::from_mins(2));
        assert!(!config.tls.tls13);
    }

    #[test]
    fn ex_ope_5050_revocation_methods_parse_and_unknown_ones_are_refused() {
        let profile = |method: &str| {
            format!(
                "[trust]\nanchors_dir = 'a'\npins_file = 'p'\ncrl_cache_dir = 'c'\n\
                 [trust.profiles.x]\nrole = 'tls-server'\nanchors = ['r']\nallowed_issuers = ['i']\nrevocation = '{method}'\n"
            )
        };
        for (text, method) in [
            ("crl", RevocationMethod::Crl),
            ("ocsp", RevocationMethod::Ocsp),
            ("ocsp-then-crl", RevocationMethod::OcspThenCrl),
        ] {
            let config = trust_table(&profile(text)).expect(text);
            assert_eq!(config.profiles["x"].revocation, method);
            assert_eq!(config.profiles["x"].ocsp_timeout, Duration::from_secs(10));
        }
        let err = trust_table(&profile("crl-then-ocsp")).expect_err("unknown method");
        assert!(err.contains("crl-then-ocsp"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "[trust]\nanchors_dir = 'a'\npins_file = 'p'\ncrl_cache_dir = 'c'\nprofiles = {}\nverify = false\n";
        let err = trust_table(text).expect_err("unknown field");
        assert!(err.contains("unknown field `verify`"), "{err}");
    }
}
