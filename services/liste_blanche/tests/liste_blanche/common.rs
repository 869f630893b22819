//! Test PKI, an ad hoc trust store, and lists signed by `xmlsec1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use passerelle_liste_blanche::{ADHOC_PROFILE, SignerIdentity, SignerPolicy, adhoc_trust};
use passerelle_testpki::{PkiOptions, TestPki, names};
use passerelle_trust::{Dn, TrustStore};
use rustls_pki_types::UnixTime;

pub const ANS_OU: &str = "318751275100020";
pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate(&PkiOptions::new(5)).expect("test PKI"))
}

/// The PKI written once per test process, and the anchors directory the CLI would be given:
/// the IGC-Santé Élémentaire root, the Organisations CA and its CRLs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: std::sync::Arc<TrustStore>,
}

impl Env {
    pub fn new() -> Self {
        Self::with(pki())
    }

    pub fn with(pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        pki.write_to(&dir.path().join("pki")).expect("write pki");
        let anchors = dir.path().join("anchors");
        std::fs::create_dir_all(&anchors).expect("mkdir");
        for ca in [names::ACR_EL, names::ACI_EL_ORG] {
            let pem = dir.path().join("pki").join(format!("{ca}.crt.pem"));
            std::fs::copy(&pem, anchors.join(format!("{ca}.pem"))).expect("copy");
        }
        for crl in [
            names::ACI_EL_ORG.to_owned(),
            format!("{}-delta", names::ACI_EL_ORG),
        ] {
            let src = dir.path().join("pki/crl").join(format!("{crl}.crl"));
            std::fs::copy(&src, anchors.join(format!("{crl}.crl"))).expect("copy");
        }
        let work = dir.path().join("work");
        let store = adhoc_trust(&anchors, &work).expect("adhoc trust");
        Env {
            dir,
            store: std::sync::Arc::new(store),
        }
    }

    pub fn pki_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("pki").join(name)
    }

    pub fn policy<'a>(&'a self, identity: &'a SignerIdentity) -> SignerPolicy<'a> {
        SignerPolicy {
            trust: &self.store,
            profile: ADHOC_PROFILE,
            identity,
        }
    }

    /// Sign `template` (an enveloped `ds:Signature` with empty values) with `signer`'s key and
    /// certificate, by `xmlsec1 --sign`.
    pub fn sign(&self, template: &str, signer: &str) -> Vec<u8> {
        let work = tempfile::tempdir().expect("tempdir");
        let input = work.path().join("template.xml");
        let output = work.path().join("signed.xml");
        std::fs::write(&input, template).expect("write");
        let key = self.pki_file(&format!("{signer}.key.pem"));
        let cert = self.pki_file(&format!("{signer}.crt.pem"));
        let out = Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(format!("{},{}", key.display(), cert.display()))
            .arg("--output")
            .arg(&output)
            .arg(&input)
            .output()
            .expect("run xmlsec1");
        assert!(
            out.status.success(),
            "xmlsec1 --sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&output).expect("signed")
    }

    /// Whether `xmlsec1 --verify` accepts the file with the IGC-Santé root and Organisations CA.
    pub fn xmlsec_verifies(&self, bytes: &[u8]) -> bool {
        let work = tempfile::tempdir().expect("tempdir");
        let file = work.path().join("list.xml");
        std::fs::write(&file, bytes).expect("write");
        xmlsec_verify(
            &file,
            &self.pki_file(&format!("{}.crt.pem", names::ACR_EL)),
            &self.pki_file(&format!("{}.crt.pem", names::ACI_EL_ORG)),
        )
    }
}

pub fn xmlsec_verify(file: &Path, root: &Path, intermediate: &Path) -> bool {
    Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(root)
        .arg("--untrusted-pem")
        .arg(intermediate)
        .arg(file)
        .output()
        .expect("run xmlsec1")
        .status
        .success()
}

pub fn now() -> UnixTime {
    UnixTime::now()
}

pub fn ans() -> SignerIdentity {
    SignerIdentity::Ou(ANS_OU.to_owned())
}

pub fn ans_subject() -> SignerIdentity {
    SignerIdentity::Subject(
        Dn::parse("CN=Liste Blanche MSSante,OU=318751275100020,O=AGENCE DU NUMERIQUE EN SANTE,ST=Paris (75),C=FR")
            .expect("dn"),
    )
}

pub const SERVER_A_DN: &str = "CN=mail.operateur-a.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR";
pub const COMMA_DN: &str = "CN=mail.clinique.mssante.fr,OU=499700000000001,O=CLINIQUE DU PARC\\, SAS,ST=Hauts-de-Seine (92),C=FR";

/// The signature template: Tableau 45 parameters, enveloped, `URI=""`.
pub fn signature_template(signature_method: &str) -> String {
    format!(
        r#"<ds:Signature xmlns:ds="{DS_NS}">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <ds:SignatureMethod Algorithm="{signature_method}"/>
      <ds:Reference URI="">
        <ds:Transforms>
          <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
          <ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        </ds:Transforms>
        <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <ds:DigestValue/>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue/>
    <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
  </ds:Signature>"#
    )
}

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// A liste blanche template: `(domain, [DN…])` entries.
pub fn list_template(entries: &[(&str, &[&str])]) -> String {
    let mut domaines = String::new();
    for (nom, dns) in entries {
        domaines.push_str("    <Domaine>\n      <Nom>");
        domaines.push_str(nom);
        domaines.push_str("</Nom>\n      <Description>BAL de test</Description>\n");
        for dn in *dns {
            domaines.push_str("      <DNCertificatOperateur>");
            domaines.push_str(&dn.replace('&', "&amp;").replace('<', "&lt;"));
            domaines.push_str("</DNCertificatOperateur>\n");
        }
        domaines.push_str(
            "      <ResponsableContact/>\n      <SupportContact/>\n      <DateMAJ>2026-11-20T10:00:00+01:00</DateMAJ>\n    </Domaine>\n",
        );
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListeBlanche xmlns=\"https://listeblanche.mssante.fr/schema\">\n  <versionFormat>1.0</versionFormat>\n  <DateDeGeneration>2026-11-23T02:00:00+01:00</DateDeGeneration>\n  <ListeDomaines>\n{domaines}  </ListeDomaines>\n  {}\n</ListeBlanche>\n",
        signature_template(RSA_SHA256)
    )
}

/// Operator A with two domains, a clinic whose domain has two DNs (certificate rollover).
pub fn sample_entries() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("operateur-a.mssante.fr", &[SERVER_A_DN]),
        ("hopital-a.mssante.fr", &[SERVER_A_DN]),
        (
            "clinique.mssante.fr",
            &[
                COMMA_DN,
                "CN=mail2.clinique.mssante.fr,OU=499700000000001,O=CLINIQUE DU PARC\\, SAS,ST=Hauts-de-Seine (92),C=FR",
            ],
        ),
        ("interop-mssante.apicrypt.org", &[]),
    ]
}

pub fn signed_sample(env: &Env) -> Vec<u8> {
    env.sign(&list_template(&sample_entries()), names::LISTE_BLANCHE)
}

/// Replace the first occurrence of `from` by `to` in a signed document.
pub fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    assert!(text.contains(from), "{from} not in the document");
    text.replacen(from, to, 1).into_bytes()
}
