//! Recipient certificate rules (A4 §6.2.3, §6.3; digest §1.4–§1.5, §7 cases 8–19) against a
//! trust store pinned to the test PKI's SESAM-Vitale CAs.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use passerelle_sesam::{Env, Flow, Profiles, RecipientCertificates, SesamError, validate_for};
use passerelle_testpki::{
    Attr, Dn, KeyAlg, KeyUsageBit, LeafSpec, PkiOptions, TestPki, Validity, names as n,
};
use passerelle_trust::{TrustConfig, TrustStore, sha256_hex};
use rustls_pki_types::UnixTime;

const PINNED: &[&str] = &[
    n::SV_ROOT,
    n::SV_FACTURATION,
    n::SV_TEST_ROOT,
    n::SV_TEST_FACTURATION,
];
/// A renewed AMO test certificate (issued on the PKI's day, valid two years).
const SV_AMO_TEST_RENEWED: &str = "sv-amo-test-renewed";

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut pki = TestPki::generate(&PkiOptions::new(6)).expect("test PKI");
        let day = pki.day();
        let dn = Dn::new()
            .push(Attr::C, "FR")
            .push(Attr::O, "sesam-vitale")
            .push(Attr::Ou, "AC-SESAM-VITALE-TEST-2034")
            .push(Attr::Ou, "AC-FACTURATION-TEST")
            .push(Attr::Cn, "amo_pj.test@test.rss.fr");
        let spec = LeafSpec::new(SV_AMO_TEST_RENEWED, dn)
            .with_key("sv-renewed", KeyAlg::Rsa(2048))
            .with_key_usage(
                &[
                    KeyUsageBit::DigitalSignature,
                    KeyUsageBit::NonRepudiation,
                    KeyUsageBit::KeyEncipherment,
                ],
                true,
            )
            .with_sans(vec![
                passerelle_testpki::email_san("amo_pj.test@test.rss.fr").expect("san"),
            ])
            .with_validity(Validity::Explicit {
                not_before: day,
                not_after: day + time::Duration::days(730),
            });
        pki.issue_leaf(n::SV_TEST_FACTURATION, spec)
            .expect("renewed leaf");
        pki
    })
}

fn file(name: &str) -> String {
    format!("{name}.der")
}

/// A trust store with the real and test SESAM-Vitale branches pinned at once (A4 §6.3.1: at
/// least two CAs in parallel), with or without their CRLs installed.
fn store(dir: &Path, with_crls: bool) -> TrustStore {
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors).expect("mkdir");
    let mut pins = String::new();
    for name in PINNED {
        let der = pki().cert(name).expect("ca").der();
        std::fs::write(anchors.join(file(name)), der).expect("write");
        writeln!(pins, "{}  {}", sha256_hex(der), file(name)).expect("fmt");
    }
    std::fs::write(dir.join("pins.sha256"), pins).expect("write");
    let text = format!(
        r#"anchors_dir = '{}'
pins_file = '{}'
crl_cache_dir = '{}'

[profiles.sesam-vitale]
role = "any"
anchors = ["{root}"]
allowed_issuers = ["{fact}"]

[profiles.sesam-vitale-test]
role = "any"
anchors = ["{test_root}"]
allowed_issuers = ["{test_fact}"]
"#,
        anchors.display(),
        dir.join("pins.sha256").display(),
        dir.join("crl").display(),
        root = file(n::SV_ROOT),
        fact = file(n::SV_FACTURATION),
        test_root = file(n::SV_TEST_ROOT),
        test_fact = file(n::SV_TEST_FACTURATION),
    );
    let config: TrustConfig = toml::from_str(&text).expect("config");
    let store = TrustStore::load(&config).expect("load");
    if with_crls {
        for name in [n::SV_FACTURATION, n::SV_TEST_FACTURATION] {
            let crl = pki().full_crl(name).expect("crl");
            store.install_crl(crl.der(), name).expect("install");
        }
    }
    store
}

fn der(name: &str) -> Vec<u8> {
    pki().cert(name).expect("cert").der().to_vec()
}

/// `days` after the PKI's reference day (plus an hour).
fn day_plus(days: u64) -> UnixTime {
    let day = u64::try_from(pki().day().unix_timestamp()).expect("after 1970");
    UnixTime::since_unix_epoch(Duration::from_secs(day + days * 86_400 + 3600))
}

fn check(
    store: &TrustStore,
    name: &str,
    flow: Flow,
    env: Env,
    at: UnixTime,
) -> Result<(), SesamError> {
    validate_for(store, &Profiles::default(), &der(name), flow, env, at).map(|_| ())
}

#[test]
fn valid_test_and_real_certificates_are_accepted_with_two_cas_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    let now = day_plus(1);
    check(&store, n::SV_AMO_TEST, Flow::Fse, Env::Test, now).expect("AMO test");
    check(&store, n::SV_AMO_TEST, Flow::Fse, Env::Demo, now).expect("AMO demo");
    check(&store, n::SV_AMC_TEST, Flow::Dre, Env::Test, now).expect("AMC test");
    // Under the other AC-FACTURATION, in the same store.
    check(&store, n::SV_AMO_REEL, Flow::Fse, Env::Real, now).expect("AMO real");
}

#[test]
fn cp1_test_env_requires_test_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    let now = day_plus(1);
    let err =
        check(&store, n::SV_AMO_REEL, Flow::Fse, Env::Test, now).expect_err("real cert on test");
    assert!(
        matches!(err, SesamError::CertificateRefused { .. }),
        "{err}"
    );
    let err =
        check(&store, n::SV_AMO_TEST, Flow::Fse, Env::Real, now).expect_err("test cert on real");
    assert!(
        matches!(err, SesamError::CertificateRefused { .. }),
        "{err}"
    );
    assert!(err.blocks_sending());
}

#[test]
fn ce1_san_without_the_expected_label_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    let now = day_plus(1);
    let err =
        check(&store, n::SV_AMO_TEST_WRONG_SAN, Flow::Fse, Env::Test, now).expect_err("wrong SAN");
    assert!(err.to_string().contains("amo_pj.test@test.rss.fr"), "{err}");
    // amc_… where amo_… is expected.
    let err =
        check(&store, n::SV_AMC_TEST, Flow::Fse, Env::Test, now).expect_err("AMC cert for FSE");
    assert!(err.to_string().starts_with("[CE1]"), "{err}");
}

#[test]
fn ce1_key_usage_missing_key_encipherment_or_not_critical_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    let now = day_plus(1);
    let err = check(
        &store,
        n::SV_AMO_TEST_KU_NO_KEYENC,
        Flow::Fse,
        Env::Test,
        now,
    )
    .expect_err("no keyEncipherment");
    assert!(err.to_string().contains("keyEncipherment"), "{err}");
    let err = check(
        &store,
        n::SV_AMO_TEST_KU_NOT_CRITICAL,
        Flow::Fse,
        Env::Test,
        now,
    )
    .expect_err("not critical");
    assert!(err.to_string().contains("not marked critical"), "{err}");
}

#[test]
fn ce1_expired_and_revoked_certificates_block_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    let now = day_plus(1);
    for name in [n::SV_AMO_TEST_EXPIRED, n::SV_AMO_TEST_REVOKED] {
        let err = check(&store, name, Flow::Fse, Env::Test, now).expect_err(name);
        assert!(
            matches!(err, SesamError::CertificateRefused { .. }),
            "{name}: {err}"
        );
        assert!(err.blocks_sending());
    }
}

#[test]
fn ce2_no_crl_blocks_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), false);
    let err = check(&store, n::SV_AMO_TEST, Flow::Fse, Env::Test, day_plus(1)).expect_err("no CRL");
    assert!(matches!(err, SesamError::NoCrl { .. }), "{err}");
    assert!(err.to_string().starts_with("[CE2]"), "{err}");
    assert!(err.blocks_sending());
}

#[test]
fn cp2_expired_crl_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path(), true);
    // The full CRL's nextUpdate is day + 7.
    let accepted = validate_for(
        &store,
        &Profiles::default(),
        &der(n::SV_AMO_TEST),
        Flow::Fse,
        Env::Test,
        day_plus(10),
    )
    .expect("stale CRL does not block");
    assert!(
        accepted
            .stale_crl
            .as_deref()
            .is_some_and(|w| w.starts_with("[CP2]"))
    );
    // The stale CRL is still consulted: a certificate it lists stays refused.
    let err = check(
        &store,
        n::SV_AMO_TEST_REVOKED,
        Flow::Fse,
        Env::Test,
        day_plus(10),
    )
    .expect_err("revoked");
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn most_recent_valid_certificate_is_kept_and_the_older_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = store(dir.path(), true);
    let certs_dir = dir.path().join("recipients");
    let mut certs = RecipientCertificates::open(&certs_dir, Profiles::default()).expect("open");
    let now = day_plus(1);
    assert!(
        certs.refresh_due(Flow::Fse, Env::Test, now),
        "nothing stored yet"
    );
    // The directory returns the current, an expired and a wrong-SAN certificate.
    certs
        .offer(
            &trust,
            &[
                der(n::SV_AMO_TEST_EXPIRED),
                der(n::SV_AMO_TEST),
                der(n::SV_AMO_TEST_WRONG_SAN),
            ],
            Flow::Fse,
            Env::Test,
            now,
        )
        .expect("one valid");
    assert_eq!(
        certs.stored(Flow::Fse, Env::Test),
        Some(der(n::SV_AMO_TEST).as_slice())
    );
    // Later it returns the old and a renewed one: the renewed replaces the old.
    certs
        .offer(
            &trust,
            &[der(n::SV_AMO_TEST), der(SV_AMO_TEST_RENEWED)],
            Flow::Fse,
            Env::Test,
            now,
        )
        .expect("renewed");
    assert_eq!(
        certs.stored(Flow::Fse, Env::Test),
        Some(der(SV_AMO_TEST_RENEWED).as_slice())
    );
    let reopened = RecipientCertificates::open(&certs_dir, Profiles::default()).expect("reopen");
    assert_eq!(
        reopened.stored(Flow::Fse, Env::Test),
        Some(der(SV_AMO_TEST_RENEWED).as_slice())
    );
    assert_eq!(
        std::fs::read_dir(&certs_dir).expect("dir").count(),
        1,
        "older removed"
    );
    reopened
        .for_sending(&trust, Flow::Fse, Env::Test, now)
        .expect("usable");
    // Nothing valid offered: the store keeps what it had.
    let err = certs
        .offer(
            &trust,
            &[der(n::SV_AMO_TEST_KU_NOT_CRITICAL)],
            Flow::Fse,
            Env::Test,
            now,
        )
        .expect_err("nothing valid");
    assert!(err.blocks_sending());
    assert_eq!(
        certs.stored(Flow::Fse, Env::Test),
        Some(der(SV_AMO_TEST_RENEWED).as_slice())
    );
}

#[test]
fn refresh_is_due_15_days_before_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = store(dir.path(), true);
    let mut certs =
        RecipientCertificates::open(&dir.path().join("recipients"), Profiles::default())
            .expect("open");
    certs
        .offer(
            &trust,
            &[der(n::SV_AMO_TEST)],
            Flow::Fse,
            Env::Test,
            day_plus(1),
        )
        .expect("stored");
    // sv-amo-test ends at day + 365.
    assert!(!certs.refresh_due(Flow::Fse, Env::Test, day_plus(340)));
    assert!(certs.refresh_due(Flow::Fse, Env::Test, day_plus(351)));
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// slapd shaped like annuaire.sesam-vitale.fr's TEST branch: the AC-FACTURATION-TEST entry
/// and, below it, the AMO entry holding an expired and the current certificate, and the AMC
/// entry.
fn directory() -> passerelle_harness::Slapd {
    const BRANCH: &str = "ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
    const CA: &str = "cn=AC-FACTURATION-TEST,ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
    let ldif = format!(
        "dn: {BRANCH}\nobjectClass: organizationalUnit\nou: AC-SESAM-VITALE-TEST-2034\n\n\
         dn: ou=AC-FACTURATION-TEST,{BRANCH}\nobjectClass: organizationalUnit\nou: AC-FACTURATION-TEST\n\n\
         dn: {CA}\nobjectClass: applicationProcess\nobjectClass: pkiCA\ncn: AC-FACTURATION-TEST\n\
         cACertificate;binary:: {ca}\n\n\
         dn: cn=amo_pj.test@test.rss.fr,{CA}\nobjectClass: applicationProcess\nobjectClass: pkiUser\n\
         cn: amo_pj.test@test.rss.fr\nuserCertificate;binary:: {expired}\nuserCertificate;binary:: {amo}\n\n\
         dn: cn=amc_pj.test@test.rss.fr,{CA}\nobjectClass: applicationProcess\nobjectClass: pkiUser\n\
         cn: amc_pj.test@test.rss.fr\nuserCertificate;binary:: {amc}\n",
        ca = base64(&der(n::SV_TEST_FACTURATION)),
        expired = base64(&der(n::SV_AMO_TEST_EXPIRED)),
        amo = base64(&der(n::SV_AMO_TEST)),
        amc = base64(&der(n::SV_AMC_TEST)),
    );
    passerelle_harness::Slapd::builder()
        .suffix("o=sesam-vitale,c=fr")
        .ldif(ldif)
        .start()
        .expect("slapd")
}

#[tokio::test]
async fn directory_fetch_stores_the_valid_certificate_of_each_label() {
    let slapd = directory();
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = store(dir.path(), true);
    let directory =
        passerelle_sesam::Directory::new(slapd.url(), Duration::from_secs(10)).expect("url");
    let mut certs =
        RecipientCertificates::open(&dir.path().join("recipients"), Profiles::default())
            .expect("open");
    let now = day_plus(1);
    let fetched = directory
        .fetch_certificates(Flow::Fse, Env::Test)
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 2, "both AMO certificates read");
    certs
        .refresh_from(&directory, &trust, Flow::Fse, Env::Test, now)
        .await
        .expect("AMO");
    assert_eq!(
        certs.stored(Flow::Fse, Env::Test),
        Some(der(n::SV_AMO_TEST).as_slice())
    );
    certs
        .refresh_from(&directory, &trust, Flow::Dre, Env::Demo, now)
        .await
        .expect("AMC");
    assert_eq!(
        certs.stored(Flow::Dre, Env::Demo),
        Some(der(n::SV_AMC_TEST).as_slice())
    );
    // The real branch is absent from this directory: nothing to store, a clear [CE1].
    let err = certs
        .refresh_from(&directory, &trust, Flow::Fse, Env::Real, now)
        .await
        .expect_err("no real certificate");
    assert!(matches!(err, SesamError::NoCertificate { .. }), "{err}");
}
