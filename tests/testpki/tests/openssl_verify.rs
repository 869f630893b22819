//! Chains checked by `openssl verify`, the reference PKIX implementation
//! the external servers (Postfix, Dovecot) use.

mod common;

use std::path::Path;

use passerelle_testpki::names as n;

fn verify(
    dir: &Path,
    root: &str,
    intermediate: Option<&str>,
    extra: &[&str],
    leaf: &str,
) -> (bool, String) {
    let ca = format!("{root}.crt.pem");
    let leaf = format!("{leaf}.crt.pem");
    let untrusted = intermediate.map(|i| format!("{i}.crt.pem"));
    let mut args = vec!["verify", "-CAfile", &ca];
    if let Some(u) = &untrusted {
        args.extend(["-untrusted", u.as_str()]);
    }
    args.extend(extra);
    args.push(&leaf);
    common::openssl(dir, &args)
}

fn assert_fails_with(result: (bool, String), reason: &str) {
    let (ok, text) = result;
    assert!(!ok, "expected failure ({reason}), got: {text}");
    assert!(text.contains(reason), "expected {reason:?} in: {text}");
}

#[test]
fn good_chains_verify() {
    let (dir, _pki) = common::written();
    let d = dir.path();
    for (root, ca, leaf) in [
        (n::ACR_EL, n::ACI_EL_ORG, n::SERVER_A),
        (n::ACR_EL, n::ACI_EL_ORG, n::SERVER_COMMA),
        (n::ACR_EL, n::ACI_EL_ORG, n::ORG_AUTH_CLI),
        (n::ACR_EL, n::ACI_EL_ORG, n::LISTE_BLANCHE),
        (n::ACR_FO, n::ACI_FO_PP, n::CPS_AUTH),
        (n::ACR_FO, n::ACI_FO_PP, n::CPS_SIGN),
        (n::SV_TEST_ROOT, n::SV_TEST_FACTURATION, n::SV_AMO_TEST),
        (n::SV_TEST_ROOT, n::SV_TEST_FACTURATION, n::SV_AMC_TEST),
        (n::SV_ROOT, n::SV_FACTURATION, n::SV_AMO_REEL),
    ] {
        let (ok, text) = verify(d, root, Some(ca), &[], leaf);
        assert!(ok, "{leaf}: {text}");
        // With revocation checking of the whole chain, full + delta CRLs.
        let crls = [
            format!("crl/{root}.crl.pem"),
            format!("crl/{ca}.crl.pem"),
            format!("crl/{ca}-delta.crl.pem"),
        ];
        let extra = [
            "-crl_check_all",
            "-use_deltas",
            "-CRLfile",
            &crls[0],
            "-CRLfile",
            &crls[1],
            "-CRLfile",
            &crls[2],
        ];
        let (ok, text) = verify(d, root, Some(ca), &extra, leaf);
        assert!(ok, "{leaf} with CRLs: {text}");
    }
    let (ok, text) = verify(d, n::DEVICE_CA, None, &[], n::DEVICE_WEBADMIN);
    assert!(ok, "device: {text}");
    // The public CA's certificate is valid on its own terms: only the
    // anchor choice rejects it.
    let (ok, text) = verify(d, n::PUBLIC_ROOT, None, &[], n::SERVER_A_PUBLIC_CA);
    assert!(ok, "public CA: {text}");
}

#[test]
fn validity_variants_fail_with_openssl_reason() {
    let (dir, _pki) = common::written();
    let d = dir.path();
    let el = |leaf| verify(d, n::ACR_EL, Some(n::ACI_EL_ORG), &[], leaf);
    assert_fails_with(el(n::SERVER_A_EXPIRED), "certificate has expired");
    assert_fails_with(
        el(n::SERVER_A_NOT_YET_VALID),
        "certificate is not yet valid",
    );
    assert_fails_with(
        verify(
            d,
            n::SV_TEST_ROOT,
            Some(n::SV_TEST_FACTURATION),
            &[],
            n::SV_AMO_TEST_EXPIRED,
        ),
        "certificate has expired",
    );
}

#[test]
fn revoked_variants_fail_with_crl_check() {
    let (dir, _pki) = common::written();
    let d = dir.path();
    let full = ["-crl_check", "-CRLfile", "crl/aci-el-org.crl.pem"];
    // `-extended_crl`: without it OpenSSL 3.0 may score the delta as a complete CRL and pick
    // it over the base for being newer, so a certificate revoked in the base passes
    // (openssl/openssl#31040, fixed upstream in 2026 but not in Debian 12's 3.0.19).
    let with_delta = [
        "-crl_check",
        "-use_deltas",
        "-extended_crl",
        "-CRLfile",
        "crl/aci-el-org.crl.pem",
        "-CRLfile",
        "crl/aci-el-org-delta.crl.pem",
    ];
    let el = |extra: &[&str], leaf| verify(d, n::ACR_EL, Some(n::ACI_EL_ORG), extra, leaf);
    assert_fails_with(el(&full, n::SERVER_A_REVOKED), "certificate revoked");
    // Revoked after the base CRL: only the delta knows.
    let (ok, text) = el(&full, n::SERVER_A_REVOKED_DELTA);
    assert!(ok, "not in the base CRL: {text}");
    assert_fails_with(
        el(&with_delta, n::SERVER_A_REVOKED_DELTA),
        "certificate revoked",
    );
    assert_fails_with(el(&with_delta, n::SERVER_A_REVOKED), "certificate revoked");
    // No CRL at all is an error under -crl_check, as SESAM-Vitale requires ([CE2]).
    assert_fails_with(
        el(&["-crl_check"], n::SERVER_A),
        "unable to get certificate CRL",
    );
    assert_fails_with(
        verify(
            d,
            n::SV_TEST_ROOT,
            Some(n::SV_TEST_FACTURATION),
            &["-crl_check", "-CRLfile", "crl/sv-test-facturation.crl.pem"],
            n::SV_AMO_TEST_REVOKED,
        ),
        "certificate revoked",
    );
}

#[test]
fn wrong_branch_rogue_and_public_ca_are_rejected_by_the_organisations_anchor() {
    let (dir, _pki) = common::written();
    let d = dir.path();
    for leaf in [
        n::SERVER_A_BY_EL_PP,
        n::SERVER_A_BY_FO_PP,
        n::SERVER_A_TEST_BRANCH,
        n::SERVER_A_ROGUE,
        n::SERVER_A_PUBLIC_CA,
    ] {
        assert_fails_with(
            verify(d, n::ACR_EL, Some(n::ACI_EL_ORG), &[], leaf),
            "unable to get local issuer certificate",
        );
    }
    // Even when the peer sends the rogue CA, its self-signature is not trusted.
    assert_fails_with(
        verify(
            d,
            n::ACR_EL,
            Some(n::ROGUE_ACI_EL_ORG),
            &[],
            n::SERVER_A_ROGUE,
        ),
        "self-signed certificate in certificate chain",
    );
    // The wrong-branch leaves do chain to their own anchors.
    let (ok, text) = verify(d, n::ACR_FO, Some(n::ACI_FO_PP), &[], n::SERVER_A_BY_FO_PP);
    assert!(ok, "{text}");
    let (ok, text) = verify(
        d,
        n::TEST_ACR_EL,
        Some(n::TEST_ACI_EL_ORG),
        &[],
        n::SERVER_A_TEST_BRANCH,
    );
    assert!(ok, "{text}");
}

#[test]
fn connector_subject_prints_in_tableau_44_order() {
    let (dir, _pki) = common::written();
    let subject = |name: &str| {
        let file = format!("{name}.crt.pem");
        let (ok, text) = common::openssl(
            dir.path(),
            &[
                "x509", "-in", &file, "-noout", "-subject", "-nameopt", "RFC2253",
                // UTF-8 as is rather than \C3\A9 (title=Médecin).
                "-nameopt", "-esc_msb",
            ],
        );
        assert!(ok, "{text}");
        text.trim().to_owned()
    };
    assert_eq!(
        subject(n::SERVER_A),
        "subject=CN=mail.operateur-a.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR"
    );
    assert_eq!(
        subject(n::SERVER_COMMA),
        "subject=CN=mail.clinique-du-parc.mssante.fr,OU=312345678900012,O=CLINIQUE DU PARC\\, SAS,ST=Hauts-de-Seine (92),C=FR"
    );
    assert_eq!(
        subject(n::CPS_AUTH),
        "subject=CN=899700218896+SN=DUPONT+GN=JEAN,title=Médecin,C=FR"
    );
}

#[test]
fn delta_crl_is_understood_by_openssl() {
    let (dir, _pki) = common::written();
    let (ok, text) = common::openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl/aci-el-org-delta.crl",
            "-noout",
            "-text",
        ],
    );
    assert!(ok, "{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("CRL Number: 101"), "{text}");
    assert!(flat.contains("Delta CRL Indicator: critical 100"), "{text}");
    let (ok, text) = common::openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl/aci-el-org.crl",
            "-noout",
            "-text",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("Freshest CRL"), "{text}");
    assert!(text.contains("aci-el-org-delta.crl"), "{text}");
    assert!(!text.contains("Delta CRL Indicator"), "{text}");
    // The CRL signature checks out against the issuer.
    let (ok, text) = common::openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl/aci-el-org-delta.crl",
            "-noout",
            "-CAfile",
            "aci-el-org.crt.pem",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
}
