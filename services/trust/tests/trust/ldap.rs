//! CRLs from LDAP (SESAM-Vitale directory shape, EX_OPE_5050) against a real slapd.

use passerelle_harness::Slapd;
use passerelle_testpki::names as n;
use passerelle_trust::{CrlKind, CrlSource, LdapCrlSource, Refusal, TrustStore};

use crate::common::{self, der, file, now, pki};

const SUFFIX: &str = "o=sesam-vitale,c=fr";
const BRANCH: &str = "ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
const FACTURATION: &str = "cn=AC-FACTURATION-TEST,ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";
/// An entry whose CRL carries the name of a pinned CA (`aci-el-org`) but is signed by the
/// rogue CA of the same name.
const ROGUE: &str =
    "cn=AC-ROGUE,ou=AC-FACTURATION-TEST,ou=AC-SESAM-VITALE-TEST-2034,o=sesam-vitale,c=fr";

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// slapd holding the SESAM-Vitale test CA entry (full CRL in certificateRevocationList, delta in
/// deltaRevocationList) and the rogue entry.
fn directory() -> Slapd {
    let full = pki().full_crl(n::SV_TEST_FACTURATION).expect("full").der();
    let delta = pki()
        .delta_crl(n::SV_TEST_FACTURATION)
        .expect("delta")
        .der();
    let rogue = pki().full_crl(n::ROGUE_ACI_EL_ORG).expect("rogue").der();
    let ldif = format!(
        "dn: {BRANCH}\nobjectClass: organizationalUnit\nou: AC-SESAM-VITALE-TEST-2034\n\n\
         dn: ou=AC-FACTURATION-TEST,{BRANCH}\nobjectClass: organizationalUnit\nou: AC-FACTURATION-TEST\n\n\
         dn: {FACTURATION}\nobjectClass: applicationProcess\nobjectClass: pkiCA\nobjectClass: deltaCRL\n\
         cn: AC-FACTURATION-TEST\ncertificateRevocationList;binary:: {}\ndeltaRevocationList;binary:: {}\n\n\
         dn: {ROGUE}\nobjectClass: applicationProcess\nobjectClass: pkiCA\ncn: AC-ROGUE\n\
         certificateRevocationList;binary:: {}\n",
        base64(full),
        base64(delta),
        base64(rogue),
    );
    Slapd::builder()
        .suffix(SUFFIX)
        .ldif(ldif)
        .start()
        .expect("slapd")
}

#[tokio::test]
async fn ldap_crl_source_fetches_and_verifies_the_sesam_vitale_crl() {
    let slapd = directory();
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!(
        "[[crl_sources]]\nurl = '{url}{FACTURATION}'\n\
         [[crl_sources]]\nurl = '{url}{FACTURATION}?deltaRevocationList;binary'\ntimeout = '10s'\n",
        url = slapd.url()
    );
    let store = TrustStore::load(&common::config(dir.path(), &extra)).expect("load");

    // Before the refresh nothing is known: hard-fail.
    let amo = der(n::SV_AMO_TEST);
    let reason = store
        .validate("sesam-vitale-test", &amo, &[], now())
        .expect_err("no CRL yet");
    assert!(
        matches!(reason.refusal(), Some(Refusal::RevocationUnknown { .. })),
        "{reason}"
    );

    let report = store.refresh().await;
    assert!(report.failed.is_empty(), "{report:?}");
    let mut kinds: Vec<(String, CrlKind)> = report
        .changed
        .iter()
        .map(|u| (u.ca.clone(), u.kind))
        .collect();
    kinds.sort_by_key(|(_, k)| *k == CrlKind::Delta);
    assert_eq!(
        kinds,
        [
            (file(n::SV_TEST_FACTURATION), CrlKind::Full),
            (file(n::SV_TEST_FACTURATION), CrlKind::Delta)
        ]
    );

    store
        .validate("sesam-vitale-test", &amo, &[], now())
        .expect("good per the LDAP CRLs");
    let reason = store
        .validate(
            "sesam-vitale-test",
            &der(n::SV_AMO_TEST_REVOKED),
            &[],
            now(),
        )
        .expect_err("revoked");
    assert!(
        matches!(reason.refusal(), Some(Refusal::RevokedFull { .. })),
        "{reason}"
    );

    // Cached atomically like an HTTP CRL: a reload finds them without the directory.
    drop(slapd);
    let reloaded = TrustStore::load(&common::config(dir.path(), "")).expect("reload");
    reloaded
        .validate("sesam-vitale-test", &amo, &[], now())
        .expect("good from the cache");
}

#[tokio::test]
async fn ldap_crl_source_refuses_a_crl_not_signed_by_a_pinned_ca() {
    let slapd = directory();
    let dir = tempfile::tempdir().expect("tmp");
    let store = TrustStore::load(&common::config(dir.path(), "")).expect("load");
    let rogue = LdapCrlSource::new(
        &format!("{}{ROGUE}", slapd.url()),
        std::time::Duration::from_secs(10),
    )
    .expect("url");
    let missing = LdapCrlSource::new(
        &format!("{}cn=AC-NONE,{BRANCH}", slapd.url()),
        std::time::Duration::from_secs(10),
    )
    .expect("url");
    // The bytes really come from the directory …
    assert_eq!(
        rogue.fetch().await.expect("fetch"),
        pki().full_crl(n::ROGUE_ACI_EL_ORG).expect("rogue").der()
    );
    // … and are refused by the signature check.
    let report = store.refresh_from(&[&rogue, &missing]).await;
    assert!(
        report.changed.is_empty() && report.unchanged.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report.failed[0].1.contains("signature does not verify"),
        "{report:?}"
    );
    assert!(report.failed[1].1.contains("NoSuchObject"), "{report:?}");
    let reason = store
        .validate("mssante-server", &der(n::SERVER_A), &[], now())
        .expect_err("still no CRL");
    assert!(
        matches!(reason.refusal(), Some(Refusal::RevocationUnknown { .. })),
        "{reason}"
    );
}
