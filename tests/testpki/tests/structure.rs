//! Contents of the generated certificates and CRLs, read back with
//! x509-parser.

mod common;

use passerelle_testpki::{
    Attr, CrlKind, Dn, KeyAlg, LeafSpec, PkiOptions, Revocation, RevocationReason, TestPki,
    names as n,
};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use time::macros::datetime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der)
        .expect("certificate parses")
        .1
}

/// (OID, value) per RDN, in encoding order.
fn rdns(cert: &X509Certificate<'_>) -> Vec<Vec<(String, String)>> {
    cert.subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    (
                        atv.attr_type().to_id_string(),
                        atv.as_str().expect("string value").to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

fn crl_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(dps) = ext.parsed_extension() {
            for dp in dps.iter() {
                if let Some(DistributionPointName::FullName(names)) = &dp.distribution_point {
                    for name in names {
                        if let GeneralName::URI(u) = name {
                            uris.push((*u).to_owned());
                        }
                    }
                }
            }
        }
    }
    uris
}

fn options(seed: u64) -> PkiOptions {
    PkiOptions {
        now: datetime!(2026-03-10 09:30 UTC),
        ..PkiOptions::new(seed)
    }
}

#[test]
fn same_seed_is_byte_identical_and_seeds_differ() {
    let first = TestPki::generate(&options(common::SEED)).expect("first");
    // Another time on the same day: dates are truncated to the day.
    let second = TestPki::generate(&PkiOptions {
        now: datetime!(2026-03-10 23:59 UTC),
        ..options(common::SEED)
    })
    .expect("second");
    let certs_a: Vec<_> = first.certs().collect();
    let certs_b: Vec<_> = second.certs().collect();
    assert_eq!(certs_a, certs_b);
    assert!(certs_a.len() > 30);
    for ca in &certs_a {
        if ca.is_ca() {
            assert_eq!(
                first.full_crl(ca.name()).expect("full"),
                second.full_crl(ca.name()).expect("full")
            );
            assert_eq!(
                first.delta_crl(ca.name()).expect("delta"),
                second.delta_crl(ca.name()).expect("delta")
            );
        }
    }

    let other = TestPki::generate(&options(common::SEED + 1)).expect("other seed");
    for name in [n::ACR_EL, n::SERVER_A, n::CPS_AUTH, n::DEVICE_WEBADMIN] {
        let (x, y) = (
            first.cert(name).expect("first"),
            other.cert(name).expect("other"),
        );
        assert_ne!(x.der(), y.der(), "{name}");
        assert_ne!(x.key(), y.key(), "{name}");
        assert_ne!(x.serial(), y.serial(), "{name}");
    }
}

#[test]
fn server_variants_share_one_key_and_rogue_ca_has_its_own() {
    let pki = common::pki();
    let key = pki.cert(n::SERVER_A).expect("server").key();
    for name in [
        n::SERVER_A_EXPIRED,
        n::SERVER_A_REVOKED,
        n::SERVER_A_ROGUE,
        n::SERVER_A_PUBLIC_CA,
    ] {
        assert_eq!(pki.cert(name).expect("variant").key(), key, "{name}");
    }
    let real = pki.cert(n::ACI_EL_ORG).expect("real");
    let rogue = pki.cert(n::ROGUE_ACI_EL_ORG).expect("rogue");
    assert_eq!(real.subject(), rogue.subject());
    assert_eq!(
        parse(real.der()).subject().as_raw(),
        parse(rogue.der()).subject().as_raw()
    );
    assert_ne!(real.key(), rogue.key());
    // A public CA's leaf carries exactly the connector's DN.
    let server = parse(pki.cert(n::SERVER_A).expect("server").der())
        .subject()
        .as_raw()
        .to_vec();
    let public = pki
        .cert(n::SERVER_A_PUBLIC_CA)
        .expect("public")
        .der()
        .to_vec();
    assert_eq!(parse(&public).subject().as_raw(), server.as_slice());
}

#[test]
fn connector_dn_follows_tableau_44_and_server_profile() {
    let pki = common::pki();
    let cert = parse(pki.cert(n::SERVER_A).expect("server").der());
    // Encoding order is the reverse of the printed CN-first order.
    let got = rdns(&cert);
    let want: Vec<Vec<(String, String)>> = [
        ("2.5.4.6", "FR"),
        ("2.5.4.8", "Paris (75)"),
        ("2.5.4.10", "AGENCE DES SYSTEMES D'INFORMATION PARTAG"),
        ("2.5.4.11", "318751275100020"),
        ("2.5.4.3", "mail.operateur-a.mssante.fr"),
    ]
    .iter()
    .map(|(o, v)| vec![((*o).to_owned(), (*v).to_owned())])
    .collect();
    assert_eq!(got, want);
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = cert.key_usage().expect("ku").expect("present");
    assert!(ku.critical && ku.value.digital_signature() && ku.value.key_encipherment());
    assert_eq!(
        crl_uris(&cert),
        ["http://127.0.0.1:8080/crl/aci-el-org.crl"]
    );
    assert!(
        cert.extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == "2.5.29.46" && !e.critical)
    );
    let spki = cert.public_key();
    assert_eq!(
        spki.algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );

    let comma = parse(pki.cert(n::SERVER_COMMA).expect("comma").der());
    assert_eq!(
        rdns(&comma)[2],
        [("2.5.4.10".to_owned(), "CLINIQUE DU PARC, SAS".to_owned())]
    );
}

#[test]
fn igc_sante_cas_have_the_national_dn_shape() {
    let pki = common::pki();
    for (name, cn) in [
        (n::ACR_EL, "AC RACINE IGC-SANTE ELEMENTAIRE"),
        (n::ACI_EL_ORG, "AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
        (n::ACI_EL_PP, "AC IGC-SANTE ELEMENTAIRE PERSONNES"),
        (n::ACR_FO, "AC RACINE IGC-SANTE FORT"),
        (n::ACI_FO_PP, "AC IGC-SANTE FORT PERSONNES"),
        (n::TEST_ACR_EL, "TEST AC RACINE IGC-SANTE ELEMENTAIRE"),
        (
            n::TEST_ACI_EL_ORG,
            "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
        ),
    ] {
        let cert = parse(pki.cert(name).expect("ca").der());
        assert_eq!(
            cert.subject().to_string(),
            format!("C=FR, O=ASIP-SANTE, OU=0002 187512751, OU=IGC-SANTE, CN={cn}"),
        );
        assert!(cert.is_ca());
    }
    let inter = parse(pki.cert(n::ACI_EL_ORG).expect("inter").der());
    assert_eq!(
        inter.issuer().to_string(),
        parse(pki.cert(n::ACR_EL).expect("root").der())
            .subject()
            .to_string()
    );
    assert_eq!(crl_uris(&inter), ["http://127.0.0.1:8080/crl/acr-el.crl"]);
}

#[test]
fn sesam_vitale_leaf_has_san_critical_ku_and_ldap_crl_dp() {
    let pki = common::pki();
    for (name, addr, ca_cn) in [
        (
            n::SV_AMO_TEST,
            "amo_pj.test@test.rss.fr",
            "AC-FACTURATION-TEST",
        ),
        (
            n::SV_AMC_TEST,
            "amc_pj.test@test.rss.fr",
            "AC-FACTURATION-TEST",
        ),
        (n::SV_AMO_REEL, "amo_pj.reel@reel.rss.fr", "AC-FACTURATION"),
    ] {
        let cert = parse(pki.cert(name).expect("leaf").der());
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value;
        assert_eq!(san.general_names, [GeneralName::RFC822Name(addr)], "{name}");
        let ku = cert.key_usage().expect("ku").expect("present");
        assert!(ku.critical, "{name}");
        // digitalSignature(0) + nonRepudiation(1) + keyEncipherment(2), nothing else.
        assert_eq!(ku.value.flags, 0b111, "{name}");
        assert_eq!(cert.public_key().parsed().expect("rsa").key_size(), 2048);
        assert!(
            cert.issuer().to_string().ends_with(&format!("CN={ca_cn}")),
            "{name}"
        );
        let uris = crl_uris(&cert);
        assert!(
            uris[0].starts_with(&format!(
                "ldap://annuaire.sesam-vitale.fr/cn={ca_cn},ou={ca_cn},"
            )),
            "{uris:?}"
        );
        assert!(uris[1].starts_with("http://"), "{uris:?}");
    }

    let cert = |name| pki.cert(name).expect("variant").der().to_vec();
    let wrong_san = cert(n::SV_AMO_TEST_WRONG_SAN);
    let san = parse(&wrong_san)
        .subject_alternative_name()
        .expect("san")
        .expect("present")
        .value
        .general_names
        .clone();
    assert_eq!(san, [GeneralName::RFC822Name("pj.test@autre-domaine.fr")]);
    let no_keyenc = cert(n::SV_AMO_TEST_KU_NO_KEYENC);
    let ku = parse(&no_keyenc)
        .key_usage()
        .expect("ku")
        .expect("present")
        .value
        .flags;
    assert_eq!(ku, 0b011);
    let not_critical = cert(n::SV_AMO_TEST_KU_NOT_CRITICAL);
    let not_critical = parse(&not_critical);
    let ku = not_critical.key_usage().expect("ku").expect("present");
    assert!(!ku.critical);
    assert_eq!(ku.value.flags, 0b111);
    let expired = cert(n::SV_AMO_TEST_EXPIRED);
    assert!(!parse(&expired).validity().is_valid());
}

#[test]
fn cps_certificates_carry_the_national_id_and_a_card_key() {
    let pki = common::pki();
    let auth = pki.cert(n::CPS_AUTH).expect("auth");
    let sign = pki.cert(n::CPS_SIGN).expect("sign");
    assert_ne!(auth.key(), sign.key(), "a CPS card holds two key pairs");
    let cert = parse(auth.der());
    let got = rdns(&cert);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], [("2.5.4.12".to_owned(), "Médecin".to_owned())]);
    let mut multi = got[2].clone();
    multi.sort();
    assert_eq!(
        multi,
        [
            ("2.5.4.3".to_owned(), "899700218896".to_owned()),
            ("2.5.4.4".to_owned(), "DUPONT".to_owned()),
            ("2.5.4.42".to_owned(), "JEAN".to_owned()),
        ]
    );
    assert_eq!(auth.subject().get(Attr::Cn), Some("899700218896"));
    assert!(
        cert.issuer()
            .to_string()
            .ends_with("CN=AC IGC-SANTE FORT PERSONNES")
    );
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(
        cert.key_usage().expect("ku").expect("present").value.flags,
        0b001
    );
    let sign_cert = parse(sign.der());
    let sign_ku = sign_cert.key_usage().expect("ku").expect("present").value;
    assert!(sign_ku.non_repudiation() && !sign_ku.digital_signature());

    let pkcs1 = auth.key().pkcs1_der().expect("RSA key");
    let from_pkcs1 = rsa::RsaPrivateKey::from_pkcs1_der(&pkcs1).expect("PKCS#1");
    let from_pkcs8 = rsa::RsaPrivateKey::from_pkcs8_der(auth.key().pkcs8_der()).expect("PKCS#8");
    assert_eq!(from_pkcs1, from_pkcs8);
    assert!(
        auth.key()
            .pkcs8_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[test]
fn device_certificate_is_ec_p256() {
    let pki = common::pki();
    let dev = pki.cert(n::DEVICE_WEBADMIN).expect("device");
    assert_eq!(dev.key().alg(), KeyAlg::P256);
    assert_eq!(dev.key().pkcs1_der(), None);
    let cert = parse(dev.der());
    let alg = &cert.public_key().algorithm;
    assert_eq!(alg.algorithm.to_id_string(), "1.2.840.10045.2.1");
    // Signed by an RSA CA: deterministic signatures.
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );
}

#[test]
fn full_and_delta_crls_parse_with_number_and_indicator() {
    let pki = common::pki();
    let revoked = pki
        .cert(n::SERVER_A_REVOKED)
        .expect("revoked")
        .serial()
        .to_vec();
    let delta_revoked = pki
        .cert(n::SERVER_A_REVOKED_DELTA)
        .expect("revoked")
        .serial()
        .to_vec();

    let full = pki.full_crl(n::ACI_EL_ORG).expect("full");
    assert_eq!(
        full.kind(),
        CrlKind::Full {
            number: passerelle_testpki::FULL_CRL_NUMBER
        }
    );
    let (_, crl) = CertificateRevocationList::from_der(full.der()).expect("full parses");
    assert_eq!(
        crl.crl_number().map(ToString::to_string).as_deref(),
        Some("100")
    );
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials, std::slice::from_ref(&revoked));
    assert!(crl.next_update().is_some());
    assert!(
        crl.extensions()
            .iter()
            .all(|e| e.oid.to_id_string() != "2.5.29.27")
    );
    assert_eq!(
        crl.issuer().to_string(),
        parse(pki.cert(n::ACI_EL_ORG).expect("ca").der())
            .subject()
            .to_string()
    );

    let delta = pki.delta_crl(n::ACI_EL_ORG).expect("delta");
    let (_, crl) = CertificateRevocationList::from_der(delta.der()).expect("delta parses");
    assert_eq!(
        crl.crl_number().map(ToString::to_string).as_deref(),
        Some("101")
    );
    let indicator = crl
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.27")
        .expect("Delta CRL Indicator");
    assert!(indicator.critical);
    assert_eq!(
        indicator.value,
        [0x02, 0x01, 100],
        "INTEGER base CRL number"
    );
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials, [delta_revoked]);
    assert!(delta.pem().starts_with("-----BEGIN X509 CRL-----"));

    // Every CA has both.
    for ca in pki.certs().filter(|c| c.is_ca()) {
        assert!(
            pki.full_crl(ca.name()).is_ok() && pki.delta_crl(ca.name()).is_ok(),
            "{}",
            ca.name()
        );
    }
}

#[test]
fn extra_leaf_and_fresh_crl_on_demand() {
    let mut pki = common::pki();
    let spec = LeafSpec::mssante_server(
        "server-extra",
        "mail.operateur-x.mssante.fr",
        "312345678900099",
        "OPERATEUR X",
        "Gironde (33)",
    )
    .expect("spec")
    .with_key(n::SERVER_A, KeyAlg::Rsa(2048));
    let serial = pki
        .issue_leaf(n::ACI_EL_ORG, spec.clone())
        .expect("issue")
        .serial()
        .to_vec();
    assert!(
        pki.issue_leaf(n::ACI_EL_ORG, spec).is_err(),
        "names are unique"
    );
    assert!(
        pki.issue_leaf(
            n::SERVER_A,
            LeafSpec::new("x", Dn::new().push(Attr::Cn, "x"))
        )
        .is_err(),
        "a leaf cannot issue"
    );
    let crl = pki
        .crl(
            n::ACI_EL_ORG,
            &[Revocation {
                serial: serial.clone(),
                revoked_at: pki.day(),
                reason: Some(RevocationReason::Superseded),
            }],
            CrlKind::Full { number: 102 },
        )
        .expect("crl");
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write_to(dir.path()).expect("write");
    std::fs::write(dir.path().join("fresh.crl"), crl.pem()).expect("write crl");
    let (ok, text) = common::openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "acr-el.crt.pem",
            "-untrusted",
            "aci-el-org.crt.pem",
            "-crl_check",
            "-CRLfile",
            "fresh.crl",
            "server-extra.crt.pem",
        ],
    );
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = common::openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "acr-el.crt.pem",
            "-untrusted",
            "aci-el-org.crt.pem",
            "-crl_check",
            "-CRLfile",
            "crl/aci-el-org.crl.pem",
            "server-extra.crt.pem",
        ],
    );
    assert!(ok, "{text}");
}

#[test]
fn write_to_layout_and_anchor_fingerprints() {
    let (dir, pki) = common::written();
    let d = dir.path();
    for f in [
        "server-a.crt.pem",
        "server-a.crt.der",
        "server-a.key.pem",
        "server-a.key.der",
        "chain-server-a.pem",
        "crl/aci-el-org.crl",
        "crl/aci-el-org-delta.crl",
        "crl/aci-el-org.crl.pem",
        "crl/aci-el-org-delta.crl.pem",
        "anchors/acr-el.pem",
        "anchors/acr-el-bundle.pem",
        "anchors/fingerprints.txt",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    let read = |f: &str| std::fs::read_to_string(d.join(f)).expect("read");
    assert_eq!(
        read("chain-server-a.pem")
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    assert_eq!(
        read("anchors/acr-el-bundle.pem")
            .matches("BEGIN CERTIFICATE")
            .count(),
        3
    );
    assert_eq!(
        std::fs::read(d.join("server-a.crt.der")).expect("der"),
        pki.cert(n::SERVER_A).expect("a").der()
    );

    let anchors: Vec<&str> = pki.anchors().iter().map(|a| a.name()).collect();
    assert!(anchors.contains(&n::ACR_EL) && anchors.contains(&n::SV_TEST_ROOT));
    assert!(!anchors.contains(&n::ROGUE_ACI_EL_ORG) && !anchors.contains(&n::PUBLIC_ROOT));
    assert!(!d.join("anchors/rogue-aci-el-org.pem").exists());

    let pins = pki.anchor_fingerprints();
    let txt = read("anchors/fingerprints.txt");
    for (name, digest) in &pins {
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        assert!(txt.contains(&format!("{name} {}", hex.join(":"))), "{name}");
        // Same value openssl computes.
        let (ok, out) = common::openssl(
            d,
            &[
                "x509",
                "-in",
                &format!("anchors/{name}.pem"),
                "-noout",
                "-fingerprint",
                "-sha256",
            ],
        );
        assert!(ok && out.contains(&hex.join(":")), "{out}");
    }
}
