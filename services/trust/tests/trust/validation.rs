//! Certificate validation: one test per refusal reason, each named after its requirement.

use passerelle_testpki::names as n;
use passerelle_trust::{Dn, Refusal, TrustError, TrustStore};
use rustls_pki_types::CertificateDer;

use crate::common::{self, der, file, now};

fn refusal(result: Result<passerelle_trust::Validated, TrustError>) -> Refusal {
    match result {
        Err(TrustError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn validate(
    store: &TrustStore,
    profile: &str,
    leaf: &str,
) -> Result<passerelle_trust::Validated, TrustError> {
    store.validate(profile, &der(leaf), &[], now())
}

const SERVER_A_DN: &str = "CN=mail.operateur-a.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR";

#[test]
fn ex_ope_5020_good_chain_is_accepted_and_exposes_the_subject_dn() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    // The peer also sends its real intermediate: harmless, and not used.
    let sent = [der(n::ACI_EL_ORG)];
    let ok = store
        .validate("mssante-server", &der(n::SERVER_A), &sent, now())
        .expect("accepted");
    assert_eq!(ok.chain, [file(n::ACI_EL_ORG), file(n::ACR_EL)]);
    assert_eq!(ok.subject, Dn::parse(SERVER_A_DN).expect("dn"));
    assert!(ok.revocation_unknown.is_none());
}

#[test]
fn ex_ope_5020_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let err = validate(&store, "mssante-server", n::SERVER_A_EXPIRED).expect_err("expired");
    let text = err.to_string();
    assert!(
        matches!(err.refusal(), Some(Refusal::Expired { .. })),
        "{text}"
    );
    assert!(
        text.starts_with(
            "EX_OPE_5020: refused by trust profile mssante-server: CN=mail.operateur-a"
        ),
        "{text}"
    );
}

#[test]
fn ex_ope_5020_not_yet_valid_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let reason = refusal(validate(
        &store,
        "mssante-server",
        n::SERVER_A_NOT_YET_VALID,
    ));
    assert!(matches!(reason, Refusal::NotYetValid { .. }), "{reason}");
}

#[test]
fn ex_ope_5050_revoked_in_the_full_crl_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let err = validate(&store, "mssante-server", n::SERVER_A_REVOKED).expect_err("revoked");
    assert!(
        matches!(err.refusal(), Some(Refusal::RevokedFull { .. })),
        "{err}"
    );
    assert!(err.to_string().starts_with("EX_OPE_5050"), "{err}");
}

#[test]
fn ex_ope_5050_revoked_only_in_the_delta_crl_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let reason = refusal(validate(
        &store,
        "mssante-server",
        n::SERVER_A_REVOKED_DELTA,
    ));
    assert!(matches!(reason, Refusal::RevokedDelta { .. }), "{reason}");

    // Without the delta CRL the same certificate passes: the delta is what catches it.
    let dir = tempfile::tempdir().expect("tmp");
    let full_only = TrustStore::load(&common::config(dir.path(), "")).expect("load");
    common::install_crls(&full_only, false);
    validate(&full_only, "mssante-server", n::SERVER_A_REVOKED_DELTA).expect("not in the full CRL");
}

#[test]
fn ex_ope_5040_wrong_branch_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    // Chains to the right root, but through ELEMENTAIRE PERSONNES, not ORGANISATIONS.
    let reason = refusal(validate(&store, "mssante-server", n::SERVER_A_BY_EL_PP));
    match &reason {
        Refusal::WrongBranch { issuer } => assert!(
            issuer.contains("AC IGC-SANTE ELEMENTAIRE PERSONNES"),
            "{issuer}"
        ),
        other => panic!("expected WrongBranch, got {other}"),
    }
    assert_eq!(reason.requirement(), "EX_OPE_5040");
    // The FORT root is not an anchor of the profile at all.
    let reason = refusal(validate(&store, "mssante-server", n::SERVER_A_BY_FO_PP));
    assert!(matches!(reason, Refusal::UnknownIssuer { .. }), "{reason}");
}

#[test]
fn ex_ope_5040_rogue_intermediate_sent_by_the_peer_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    // Same DN as the ORGANISATIONS CA, different key, sent by the peer with its certificate.
    let sent = [der(n::ROGUE_ACI_EL_ORG)];
    let err = store
        .validate("mssante-server", &der(n::SERVER_A_ROGUE), &sent, now())
        .expect_err("rogue");
    match err.refusal() {
        Some(Refusal::UntrustedPeerIntermediate { issuer }) => {
            assert!(
                issuer.contains("AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
                "{issuer}"
            );
        }
        other => panic!("expected UntrustedPeerIntermediate, got {other:?}"),
    }
    // Not sent: the local ORGANISATIONS CA has the name but not the key.
    let reason = refusal(validate(&store, "mssante-server", n::SERVER_A_ROGUE));
    assert!(
        matches!(
            reason,
            Refusal::BadSignature | Refusal::UnknownIssuer { .. }
        ),
        "{reason}"
    );
}

#[test]
fn ex_ope_5040_public_ca_certificate_with_a_matching_name_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let leaf = der(n::SERVER_A_PUBLIC_CA);
    assert_eq!(
        TrustStore::subject_of(&leaf).expect("dn"),
        Dn::parse(SERVER_A_DN).expect("dn"),
        "same subject"
    );
    let reason = refusal(store.validate("mssante-server", &leaf, &[], now()));
    match reason {
        Refusal::UnknownIssuer { issuer } => {
            assert!(issuer.contains("Example Public Root CA"), "{issuer}");
        }
        other => panic!("expected UnknownIssuer, got {other}"),
    }
}

#[test]
fn tls_07_test_branch_and_production_profiles_do_not_mix() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let reason = refusal(validate(&store, "mssante-server", n::SERVER_A_TEST_BRANCH));
    assert!(matches!(reason, Refusal::UnknownIssuer { .. }), "{reason}");
    let reason = refusal(validate(&store, "mssante-server-test", n::SERVER_A));
    assert!(matches!(reason, Refusal::UnknownIssuer { .. }), "{reason}");
    validate(&store, "mssante-server-test", n::SERVER_A_TEST_BRANCH)
        .expect("test branch in the test profile");
}

#[test]
fn ex_ope_5050_unknown_status_hard_fails_by_default_and_soft_fails_when_configured() {
    let dir = tempfile::tempdir().expect("tmp");
    let no_crls = TrustStore::load(&common::config(dir.path(), "")).expect("load");
    let reason = refusal(validate(&no_crls, "mssante-server", n::SERVER_A));
    assert!(
        matches!(reason, Refusal::RevocationUnknown { .. }),
        "{reason}"
    );
    let ok = validate(&no_crls, "mssante-server-soft", n::SERVER_A).expect("soft-fail accepts");
    assert!(matches!(
        ok.revocation_unknown,
        Some(Refusal::RevocationUnknown { .. })
    ));
    // Soft-fail never lets a known revocation through.
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let reason = refusal(validate(&store, "mssante-server-soft", n::SERVER_A_REVOKED));
    assert!(matches!(reason, Refusal::RevokedFull { .. }), "{reason}");
}

#[test]
fn ex_ope_5050_out_of_date_crls_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    // Day + 2: the delta (nextUpdate day + 1) is stale, the full CRL (day + 7) is not.
    let err = store
        .validate(
            "mssante-server",
            &der(n::SERVER_A),
            &[],
            common::day_plus(2),
        )
        .expect_err("stale delta");
    assert!(
        matches!(
            err.refusal(),
            Some(Refusal::CrlExpired { kind: "delta", .. })
        ),
        "{err}"
    );
    let err = store
        .validate(
            "mssante-server",
            &der(n::SERVER_A),
            &[],
            common::day_plus(8),
        )
        .expect_err("stale full");
    assert!(
        matches!(
            err.refusal(),
            Some(Refusal::CrlExpired { kind: "full", .. })
        ),
        "{err}"
    );
}

#[test]
fn ex_ope_5050_chain_scope_checks_the_intermediate_against_the_root_crl() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let ok =
        validate(&store, "mssante-server-chain", n::SERVER_A).expect("intermediate not revoked");
    assert_eq!(ok.chain.len(), 2);
}

#[test]
fn ex_ope_5020_client_profile_accepts_org_auth_cli_and_checks_eku() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let ok = validate(&store, "mssante-client-auth", n::ORG_AUTH_CLI).expect("AUTH_CLI");
    assert_eq!(ok.subject.get("2.5.4.3"), Some("Authentification MSS"));
    // The liste blanche signing certificate has EKU emailProtection only.
    let reason = refusal(validate(&store, "mssante-client-auth", n::LISTE_BLANCHE));
    assert!(
        matches!(reason, Refusal::NotAnAllowedKeyUsage { .. }),
        "{reason}"
    );
}

#[test]
fn sesam_vitale_test_chain_is_accepted_by_its_profile() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    validate(&store, "sesam-vitale-test", n::SV_AMO_TEST).expect("AM test certificate");
    let reason = refusal(validate(
        &store,
        "sesam-vitale-test",
        n::SV_AMO_TEST_REVOKED,
    ));
    assert!(matches!(reason, Refusal::RevokedFull { .. }), "{reason}");
    let reason = refusal(validate(&store, "sesam-vitale-test", n::SV_AMO_REEL));
    assert!(matches!(reason, Refusal::UnknownIssuer { .. }), "{reason}");
}

#[test]
fn corrupt_peer_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = common::store(dir.path());
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01]);
    let err = store
        .validate("mssante-server", &garbage, &[], now())
        .expect_err("garbage");
    assert!(matches!(err, TrustError::Certificate { .. }), "{err}");
    assert!(
        err.to_string().contains("not an X.509 certificate"),
        "{err}"
    );
    let err = store
        .validate("no-such-profile", &der(n::SERVER_A), &[], now())
        .expect_err("profile");
    assert!(matches!(err, TrustError::UnknownProfile(_)), "{err}");
}
