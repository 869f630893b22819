//! EX_2.2_5040, EX_2.2_5050, RE_2.2_5010, EX_LBL_5010: what verifies and what is refused.

use passerelle_liste_blanche::{ListeBlancheError, SignerIdentity, verify};
use passerelle_testpki::names;
use passerelle_trust::Dn;

use crate::common::*;

#[test]
fn ex_2_2_5040_list_signed_by_xmlsec1_verifies_as_xmlsec1_says() {
    let env = Env::new();
    let signed = signed_sample(&env);
    assert!(
        env.xmlsec_verifies(&signed),
        "xmlsec1 rejects its own signature"
    );
    let verified = verify(&signed, &env.policy(&ans()), now()).expect("verifies");
    assert_eq!(verified.liste.domain_count(), 4);
    assert_eq!(verified.signer, Dn::parse("CN=Liste Blanche MSSante,OU=318751275100020,O=AGENCE DU NUMERIQUE EN SANTE,ST=Paris (75),C=FR").expect("dn"));
    let full = verify(&signed, &env.policy(&ans_subject()), now()).expect("subject identity");
    assert_eq!(full.sha256, verified.sha256);
}

#[test]
fn ex_2_2_5040_one_byte_changed_in_a_nom_is_refused_by_both() {
    let env = Env::new();
    let signed = signed_sample(&env);
    let altered = replace(&signed, "<Nom>hopital-a.", "<Nom>hopital-b.");
    assert!(!env.xmlsec_verifies(&altered));
    let err = verify(&altered, &env.policy(&ans()), now()).expect_err("altered");
    assert!(matches!(err, ListeBlancheError::DigestMismatch), "{err}");
}

#[test]
fn ex_2_2_5040_every_single_byte_flip_in_the_signed_content_is_refused() {
    let env = Env::new();
    let signed = signed_sample(&env);
    let text = std::str::from_utf8(&signed).expect("utf-8");
    let start = text.find("<ListeDomaines>").expect("start");
    let end = text.find("</ListeDomaines>").expect("end");
    // Every 7th byte of the domain list (letters become another letter, markup breaks).
    for i in (start..end).step_by(7) {
        let mut altered = signed.clone();
        altered[i] = if altered[i] == b'a' { b'b' } else { b'a' };
        if altered == signed {
            continue;
        }
        assert!(
            verify(&altered, &env.policy(&ans()), now()).is_err(),
            "byte {i} altered and still accepted"
        );
    }
}

#[test]
fn ex_2_2_5040_signature_value_altered_is_refused() {
    let env = Env::new();
    let signed = signed_sample(&env);
    let text = std::str::from_utf8(&signed).expect("utf-8");
    let at = text.find("<ds:SignatureValue>").expect("sig") + "<ds:SignatureValue>".len() + 2;
    let mut altered = signed.clone();
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    assert!(!env.xmlsec_verifies(&altered));
    let err = verify(&altered, &env.policy(&ans()), now()).expect_err("bad signature");
    assert!(matches!(err, ListeBlancheError::BadSignature), "{err}");
}

#[test]
fn ex_2_2_5050_list_signed_by_a_certificate_outside_igc_sante_is_refused() {
    let env = Env::new();
    let signed = env.sign(&list_template(&sample_entries()), names::SERVER_A_PUBLIC_CA);
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("public CA");
    assert!(matches!(err, ListeBlancheError::Signer(_)), "{err}");
    assert!(err.to_string().contains("EX_2.2_5050"), "{err}");
}

#[test]
fn ex_2_2_5050_list_signed_by_an_igc_sante_certificate_that_is_not_ans_is_refused() {
    let env = Env::new();
    let signed = env.sign(&list_template(&sample_entries()), names::SERVER_A);
    assert!(env.xmlsec_verifies(&signed), "a valid XMLDSig for xmlsec1");
    let err = verify(&signed, &env.policy(&ans_subject()), now()).expect_err("not ANS");
    assert!(matches!(err, ListeBlancheError::NotAns { .. }), "{err}");
    let other_ou = SignerIdentity::Ou("130007669".to_owned());
    let err = verify(&signed, &env.policy(&other_ou), now()).expect_err("not ANS");
    assert!(matches!(err, ListeBlancheError::NotAns { .. }), "{err}");
}

#[test]
fn ex_2_2_5050_list_signed_by_a_revoked_certificate_is_refused() {
    let env = Env::new();
    let signed = env.sign(&list_template(&sample_entries()), names::SERVER_A_REVOKED);
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("revoked");
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn ex_2_2_5040_rsa_sha1_is_refused_even_when_xmlsec1_accepts_it() {
    let env = Env::new();
    let template = list_template(&sample_entries())
        .replace(RSA_SHA256, "http://www.w3.org/2000/09/xmldsig#rsa-sha1");
    let signed = env.sign(&template, names::LISTE_BLANCHE);
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("sha1");
    assert!(
        matches!(err, ListeBlancheError::SignatureProfile(_)),
        "{err}"
    );
}

#[test]
fn ex_2_2_5040_signature_wrapping_second_unsigned_liste_domaines_is_refused() {
    let env = Env::new();
    let signed = signed_sample(&env);
    let wrapped = replace(
        &signed,
        "<ListeDomaines>",
        "<ListeDomaines><Domaine><Nom>attaquant.example</Nom><DNCertificatOperateur>CN=evil</DNCertificatOperateur></Domaine></ListeDomaines>\n  <ListeDomaines>",
    );
    let err = verify(&wrapped, &env.policy(&ans()), now()).expect_err("wrapped");
    assert!(err.to_string().contains("second <ListeDomaines>"), "{err}");
    // Hidden inside the signature instead (an Object), the signed part untouched.
    let hidden = replace(
        &signed,
        "</ds:KeyInfo>",
        "</ds:KeyInfo><ds:Object><ListeDomaines xmlns=\"https://listeblanche.mssante.fr/schema\"/></ds:Object>",
    );
    let err = verify(&hidden, &env.policy(&ans()), now()).expect_err("object");
    assert!(
        matches!(err, ListeBlancheError::SignatureProfile(_)),
        "{err}"
    );
}

#[test]
fn ex_2_2_5040_signature_wrapping_reference_to_a_sub_element_is_refused() {
    let env = Env::new();
    // A signed list whose Reference points at an Id'd element: signed by xmlsec1, valid XMLDSig.
    let template = list_template(&sample_entries())
        .replace("<ListeDomaines>", "<ListeDomaines Id=\"d\">")
        .replace("<ds:Reference URI=\"\">", "<ds:Reference URI=\"#d\">");
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("t.xml");
    let output = work.path().join("s.xml");
    std::fs::write(&input, template).expect("write");
    let status = std::process::Command::new("xmlsec1")
        .args(["--sign", "--id-attr:Id", "ListeDomaines", "--privkey-pem"])
        .arg(format!(
            "{},{}",
            env.pki_file("liste-blanche.key.pem").display(),
            env.pki_file("liste-blanche.crt.pem").display()
        ))
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .status()
        .expect("xmlsec1");
    assert!(status.success());
    let signed = std::fs::read(&output).expect("read");
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("sub-element");
    assert!(err.to_string().contains("EX_2.2_5040"), "{err}");
}

#[test]
fn ex_2_2_5040_second_signature_or_extra_transform_is_refused() {
    let env = Env::new();
    let signed = signed_sample(&env);
    let text = String::from_utf8(signed.clone()).expect("utf-8");
    let sig_start = text.find("<ds:Signature").expect("sig");
    let sig_end = text.find("</ds:Signature>").expect("end") + "</ds:Signature>".len();
    let twice = format!(
        "{}{}{}",
        &text[..sig_end],
        &text[sig_start..sig_end],
        &text[sig_end..]
    );
    let err = verify(twice.as_bytes(), &env.policy(&ans()), now()).expect_err("two");
    assert!(err.to_string().contains("2 ds:Signature"), "{err}");
    let extra = replace(
        &signed,
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/><ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"/>",
    );
    let err = verify(&extra, &env.policy(&ans()), now()).expect_err("transform");
    assert!(
        matches!(err, ListeBlancheError::SignatureProfile(_)),
        "{err}"
    );
}

#[test]
fn ex_2_2_5040_canonicalisation_matches_xmlsec1_on_awkward_markup() {
    let env = Env::new();
    // Prefixed and default namespaces, xsi attributes out of order, escaped characters, CDATA,
    // a comment, a PI before the root, non-ASCII text, CRLF line ends.
    let template = list_template(&[("clinique.mssante.fr", &[COMMA_DN])])
        .replace(
            "<ListeBlanche xmlns=\"https://listeblanche.mssante.fr/schema\">",
            "<!-- généré -->\n<?xml-stylesheet href=\"lb.xsl\" type=\"text/xsl\"?>\n<lb:ListeBlanche xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"  xmlns:lb='https://listeblanche.mssante.fr/schema' xsi:schemaLocation=\"https://listeblanche.mssante.fr/schema listeblanchemssante.xsd\" xsi:noNamespaceSchemaLocation='x &amp; &quot;y&quot;\tz'>",
        )
        .replace("</ListeBlanche>", "</lb:ListeBlanche>")
        .replace("<ListeDomaines>", "<lb:ListeDomaines>")
        .replace("</ListeDomaines>", "</lb:ListeDomaines>")
        .replace("<Domaine>", "<Domaine xmlns=\"https://listeblanche.mssante.fr/schema\">")
        .replace("<versionFormat>1.0</versionFormat>", "<lb:versionFormat><![CDATA[1.0 <&>]]></lb:versionFormat><!-- c -->")
        .replace("<DateDeGeneration>2026-11-23T02:00:00+01:00</DateDeGeneration>", "<lb:DateDeGeneration>2026-11-23T02:00:00+01:00</lb:DateDeGeneration>")
        .replace("BAL de test", "Répondeur &amp; test &gt; &#233;t&#xE9; \r\n fin")
        .replace("<ResponsableContact/>", "<ResponsableContact></ResponsableContact>");
    let signed = env.sign(&template, names::LISTE_BLANCHE);
    assert!(env.xmlsec_verifies(&signed));
    let verified = verify(&signed, &env.policy(&ans()), now()).expect("same canonical form");
    assert!(verified.liste.is_domain_listed("clinique.mssante.fr"));
}

#[test]
fn ex_lbl_5010_domains_and_dns_are_many_to_many_with_normalised_dns() {
    let env = Env::new();
    let verified = verify(&signed_sample(&env), &env.policy(&ans()), now()).expect("verifies");
    let list = verified.liste;
    let a = Dn::parse(SERVER_A_DN).expect("dn");
    // One DN, two domains.
    assert!(list.dn_allowed_for_domain(&a, "operateur-a.mssante.fr"));
    assert!(list.dn_allowed_for_domain(&a, "HOPITAL-A.mssante.fr"));
    assert_eq!(list.domains_for_dn(&a).len(), 2);
    // One domain, two DNs (rollover); spacing, case and escaping do not matter.
    let comma = Dn::parse("cn=MAIL.clinique.mssante.fr, ou=499700000000001, o=\"CLINIQUE DU PARC, SAS\", st=Hauts-de-Seine (92), c=fr").expect("dn");
    assert!(list.dn_allowed_for_domain(&comma, "clinique.mssante.fr"));
    assert_eq!(list.dns_for_domain("clinique.mssante.fr").len(), 2);
    // Listed for another domain only.
    assert!(!list.dn_allowed_for_domain(&a, "clinique.mssante.fr"));
    assert!(!list.dn_allowed_for_domain(&comma, "operateur-a.mssante.fr"));
    // Listed without a certificate yet; not listed at all.
    assert!(list.is_domain_listed("interop-mssante.apicrypt.org"));
    assert!(
        list.dns_for_domain("interop-mssante.apicrypt.org")
            .is_empty()
    );
    assert!(!list.is_domain_listed("gmail.com"));
    assert!(!list.is_dn_listed(&Dn::parse("CN=x,C=FR").expect("dn")));
}

#[test]
fn ex_lbl_5010_a_dn_with_broken_escaping_refuses_the_list_with_its_domain() {
    let env = Env::new();
    let signed = env.sign(
        &list_template(&[("odd.mssante.fr", &["CN=odd\\,O=x\\"])]),
        names::LISTE_BLANCHE,
    );
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("bad DN");
    assert!(
        matches!(&err, ListeBlancheError::BadDn { domain, .. } if domain == "odd.mssante.fr"),
        "{err}"
    );
}

#[test]
fn ex_2_2_5040_malformed_dtd_deep_and_huge_documents_are_refused_with_a_reason() {
    let env = Env::new();
    let identity = ans();
    let policy = env.policy(&identity);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"<ListeBlanche><ListeDomaines></ListeBlanche>".to_vec(), "not an acceptable XML"),
        (
            b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><l>&b;</l>".to_vec(),
            "not an acceptable XML",
        ),
        (
            format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)).into_bytes(),
            "nested deeper",
        ),
        (vec![b' '; passerelle_liste_blanche::MAX_LIST_BYTES + 1], "more than"),
        (vec![0xff, 0xfe, b'<'], "not UTF-8"),
        (
            b"<l xmlns=\"https://listeblanche.mssante.fr/schema\"><ListeDomaines/></l>".to_vec(),
            "0 ds:Signature",
        ),
    ];
    for (bytes, reason) in cases {
        let err = verify(&bytes, &policy, now()).expect_err(reason);
        assert!(err.to_string().contains(reason), "{reason}: {err}");
    }
}

#[test]
fn ex_2_2_5050_signer_certificate_with_escaped_dn_or_expired_is_refused_with_a_reason() {
    let env = Env::new();
    // O=CLINIQUE DU PARC\, SAS: the DN is read structurally and printed back escaped.
    let signed = env.sign(&list_template(&sample_entries()), names::SERVER_COMMA);
    let err = verify(&signed, &env.policy(&ans_subject()), now()).expect_err("not ANS");
    assert!(
        err.to_string().contains("O=CLINIQUE DU PARC\\, SAS"),
        "{err}"
    );
    let signed = env.sign(&list_template(&sample_entries()), names::SERVER_A_EXPIRED);
    let err = verify(&signed, &env.policy(&ans()), now()).expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn ex_2_2_5050_x509data_with_the_chain_designates_the_leaf_as_signer() {
    let env = Env::new();
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("t.xml");
    let output = work.path().join("s.xml");
    std::fs::write(&input, list_template(&sample_entries())).expect("write");
    let status = std::process::Command::new("xmlsec1")
        .args(["--sign", "--privkey-pem"])
        .arg(format!(
            "{},{},{}",
            env.pki_file("liste-blanche.key.pem").display(),
            env.pki_file("liste-blanche.crt.pem").display(),
            env.pki_file("aci-el-org.crt.pem").display()
        ))
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .status()
        .expect("xmlsec1");
    assert!(status.success());
    let signed = std::fs::read(&output).expect("read");
    let certs = String::from_utf8_lossy(&signed)
        .matches("<X509Certificate>")
        .count()
        + String::from_utf8_lossy(&signed)
            .matches("<ds:X509Certificate>")
            .count();
    assert_eq!(certs, 2, "xmlsec1 put the chain in X509Data");
    let verified = verify(&signed, &env.policy(&ans_subject()), now()).expect("verifies");
    assert_eq!(verified.liste.domain_count(), 4);
}

/// What `xmlsec1 --print-debug` shows between `== <what> - start buffer:` and `- end buffer`.
fn xmlsec_buffer(debug: &str, what: &str) -> String {
    let start = format!("== {what} - start buffer:\n");
    let end = format!("\n== {what} - end buffer");
    let from = debug.find(&start).expect("start") + start.len();
    let to = from + debug[from..].find(&end).expect("end");
    debug[from..to].to_owned()
}

#[test]
fn ex_2_2_5040_our_exc_c14n_is_byte_for_byte_xmlsec1s() {
    let env = Env::new();
    let template = list_template(&sample_entries())
        .replace(
            "<ListeBlanche xmlns=\"https://listeblanche.mssante.fr/schema\">",
            "<?pi  data?><lb:ListeBlanche xmlns:lb=\"https://listeblanche.mssante.fr/schema\" xmlns:unused=\"urn:x\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:b=\"2\" xsi:a=\"&lt;1&gt;\">",
        )
        .replace("</ListeBlanche>", "</lb:ListeBlanche>")
        .replace("<ListeDomaines>", "<ListeDomaines xmlns=\"https://listeblanche.mssante.fr/schema\">")
        .replace("<versionFormat>1.0</versionFormat>", "<lb:versionFormat>1.0 &amp; &#x3E;</lb:versionFormat>")
        .replace("<DateDeGeneration>2026-11-23T02:00:00+01:00</DateDeGeneration>", "<!-- x --><lb:DateDeGeneration>2026</lb:DateDeGeneration>");
    let signed = env.sign(&template, names::LISTE_BLANCHE);
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("s.xml");
    std::fs::write(&file, &signed).expect("write");
    let out = std::process::Command::new("xmlsec1")
        .args([
            "--verify",
            "--store-references",
            "--store-signatures",
            "--print-debug",
        ])
        .arg("--trusted-pem")
        .arg(env.pki_file("acr-el.crt.pem"))
        .arg("--untrusted-pem")
        .arg(env.pki_file("aci-el-org.crt.pem"))
        .arg(&file)
        .output()
        .expect("xmlsec1");
    assert!(out.status.success());
    let debug = String::from_utf8(out.stdout).expect("utf-8");
    let text = std::str::from_utf8(&signed).expect("utf-8");
    let doc = roxmltree::Document::parse(text).expect("parse");
    let signature = doc
        .descendants()
        .find(|n| n.has_tag_name((DS_NS, "Signature")))
        .expect("signature");
    let signed_info = signature.first_element_child().expect("SignedInfo");
    assert_eq!(
        passerelle_liste_blanche::c14n::document(&doc, Some(signature.id())),
        xmlsec_buffer(&debug, "PreDigest data")
    );
    assert_eq!(
        passerelle_liste_blanche::c14n::subtree(signed_info),
        xmlsec_buffer(&debug, "PreSigned data")
    );
}
