//! A trust directory built from the shared test PKI: its IGC-Santé and SESAM-Vitale CA
//! certificates pinned, profiles like those of `trust.example.toml` pointing at them, and
//! (optionally) every full and delta CRL installed.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use passerelle_testpki::{PkiOptions, TestPki, names as n};
use passerelle_trust::{TrustConfig, TrustStore, sha256_hex};
use rustls_pki_types::{CertificateDer, UnixTime};

/// CAs pinned in the test anchors directory, as `<name>.der`.
pub const PINNED: &[&str] = &[
    n::ACR_EL,
    n::ACI_EL_ORG,
    n::ACI_EL_PP,
    n::ACR_FO,
    n::ACI_FO_PP,
    n::TEST_ACR_EL,
    n::TEST_ACI_EL_ORG,
    n::SV_ROOT,
    n::SV_FACTURATION,
    n::SV_TEST_ROOT,
    n::SV_TEST_FACTURATION,
];

/// One PKI per test binary: generation costs seconds.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate(&PkiOptions::new(3)).expect("test PKI"))
}

pub fn file(name: &str) -> String {
    format!("{name}.der")
}

/// Profiles as an operator would write them (see trust.example.toml).
pub fn profiles_toml() -> String {
    format!(
        r#"
[profiles.mssante-server]
role = "tls-server"
anchors = ["{acr_el}"]
allowed_issuers = ["{aci_el_org}"]

[profiles.mssante-server-test]
role = "tls-server"
anchors = ["{test_acr_el}"]
allowed_issuers = ["{test_aci_el_org}"]

[profiles.mssante-client-auth]
role = "tls-client"
anchors = ["{acr_el}"]
allowed_issuers = ["{aci_el_org}"]

[profiles.mssante-server-soft]
role = "tls-server"
anchors = ["{acr_el}"]
allowed_issuers = ["{aci_el_org}"]
unknown_status = "soft-fail"

[profiles.mssante-server-chain]
role = "tls-server"
anchors = ["{acr_el}"]
allowed_issuers = ["{aci_el_org}"]
revocation_scope = "chain"

[profiles.sesam-vitale-test]
role = "any"
anchors = ["{sv_test_root}"]
allowed_issuers = ["{sv_test_facturation}"]
"#,
        acr_el = file(n::ACR_EL),
        aci_el_org = file(n::ACI_EL_ORG),
        test_acr_el = file(n::TEST_ACR_EL),
        test_aci_el_org = file(n::TEST_ACI_EL_ORG),
        sv_test_root = file(n::SV_TEST_ROOT),
        sv_test_facturation = file(n::SV_TEST_FACTURATION),
    )
}

/// Write anchors + pins under `dir` and return the configuration (extra TOML appended).
pub fn config(dir: &Path, extra: &str) -> TrustConfig {
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors).expect("mkdir");
    let mut pins = String::from("# sha256sum of the DER files\n");
    for name in PINNED {
        let der = pki().cert(name).expect("ca").der();
        std::fs::write(anchors.join(file(name)), der).expect("write");
        writeln!(pins, "{}  {}", sha256_hex(der), file(name)).expect("fmt");
    }
    std::fs::write(dir.join("pins.sha256"), pins).expect("write");
    // TOML literal strings: temp paths hold no quote.
    let text = format!(
        "anchors_dir = '{}'\npins_file = '{}'\ncrl_cache_dir = '{}'\n{extra}\n{}",
        anchors.display(),
        dir.join("pins.sha256").display(),
        dir.join("crl").display(),
        profiles_toml()
    );
    toml::from_str(&text).expect("test config")
}

/// Every full and delta CRL of the pinned CAs.
pub fn install_crls(store: &TrustStore, delta: bool) {
    for name in PINNED {
        let full = pki().full_crl(name).expect("full crl");
        store
            .install_crl(full.der(), &format!("{name} full"))
            .expect("install full");
        if delta {
            let d = pki().delta_crl(name).expect("delta crl");
            store
                .install_crl(d.der(), &format!("{name} delta"))
                .expect("install delta");
        }
    }
}

/// A store with all CRLs installed.
pub fn store(dir: &Path) -> TrustStore {
    let store = TrustStore::load(&config(dir, "")).expect("load");
    install_crls(&store, true);
    store
}

pub fn der(name: &str) -> CertificateDer<'static> {
    CertificateDer::from(pki().cert(name).expect("cert").der().to_vec())
}

pub fn now() -> UnixTime {
    UnixTime::now()
}

/// `days` after the PKI's reference day (CRLs and leaves are dated from it).
pub fn day_plus(days: u64) -> UnixTime {
    let day = u64::try_from(pki().day().unix_timestamp()).expect("after 1970");
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(day + days * 86_400 + 3600))
}
