//! P4: verification of a signed 10 000-domain liste blanche (EX_2.2_5040/5050): passerelle's
//! strict verifier (parse, exc-c14n, SHA-256 digest, RSA-SHA256, signer certificate validated
//! with CRL revocation, DN index built) against `xmlsec1 --verify` (the reference
//! implementation; chain to the same root, no revocation) on the same file signed by
//! `xmlsec1 --sign` with the test PKI's `liste-blanche` certificate. Median of `RUNS`; the
//! anchor includes xmlsec1's process start, which is how the reference is used.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use passerelle_liste_blanche::{ADHOC_PROFILE, SignerIdentity, SignerPolicy, adhoc_trust, verify};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::UnixTime;

const DOMAINS: usize = 10_000;
const RUNS: usize = 5;

pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    TestPki::generate(&PkiOptions::new(4))?.write_to(&pki_dir)?;
    let anchors = dir.path().join("anchors");
    std::fs::create_dir_all(&anchors)?;
    for ca in [names::ACR_EL, names::ACI_EL_ORG] {
        std::fs::copy(
            pki_dir.join(format!("{ca}.crt.pem")),
            anchors.join(format!("{ca}.pem")),
        )?;
    }
    for crl in [
        names::ACI_EL_ORG.to_owned(),
        format!("{}-delta", names::ACI_EL_ORG),
    ] {
        std::fs::copy(
            pki_dir.join("crl").join(format!("{crl}.crl")),
            anchors.join(format!("{crl}.crl")),
        )?;
    }
    let template = dir.path().join("template.xml");
    std::fs::write(&template, list_template(DOMAINS))?;
    let signed = dir.path().join("listeblanchemssante.xml");
    let status = Command::new("xmlsec1")
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!(
            "{},{}",
            pki_dir.join("liste-blanche.key.pem").display(),
            pki_dir.join("liste-blanche.crt.pem").display()
        ))
        .arg("--output")
        .arg(&signed)
        .arg(&template)
        .status()
        .context("xmlsec1 --sign")?;
    ensure!(status.success(), "xmlsec1 --sign failed");
    let bytes = std::fs::read(&signed)?;

    let store = adhoc_trust(&anchors, &dir.path().join("work"))?;
    let identity = SignerIdentity::Ou("318751275100020".to_owned());
    let policy = SignerPolicy {
        trust: &store,
        profile: ADHOC_PROFILE,
        identity: &identity,
    };
    let ours = median(|| {
        let start = Instant::now();
        let list = verify(&bytes, &policy, UnixTime::now())?;
        ensure!(list.liste.domain_count() == DOMAINS, "domain count");
        Ok(start.elapsed())
    })?;
    let root = pki_dir.join(format!("{}.crt.pem", names::ACR_EL));
    let intermediate = pki_dir.join(format!("{}.crt.pem", names::ACI_EL_ORG));
    let anchor = median(|| xmlsec_verify(&signed, &root, &intermediate))?;
    let (ours, anchor) = (ms(ours), ms(anchor));
    println!(
        "BENCH P4 liste-blanche-verify-10k ours={ours:.1} anchor={anchor:.1} unit=ms ratio={:.2}",
        ours / anchor
    );
    Ok(())
}

fn xmlsec_verify(file: &Path, root: &Path, intermediate: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(root)
        .arg("--untrusted-pem")
        .arg(intermediate)
        .arg(file)
        .output()
        .context("xmlsec1 --verify")?;
    let elapsed = start.elapsed();
    ensure!(
        out.status.success(),
        "xmlsec1 --verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

fn median(mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut times = (0..RUNS).map(|_| f()).collect::<anyhow::Result<Vec<_>>>()?;
    times.sort();
    Ok(times[RUNS / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A list of `n` domains, each with one operator DN, and the enveloped signature template of
/// Tableau 45.
fn list_template(n: usize) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListeBlanche xmlns=\"https://listeblanche.mssante.fr/schema\">\n  <versionFormat>1.0</versionFormat>\n  <DateDeGeneration>2026-11-23T02:00:00+01:00</DateDeGeneration>\n  <ListeDomaines>\n",
    );
    for i in 0..n {
        let _ = write!(
            xml,
            "    <Domaine>\n      <Nom>d{i:05}.mssante.fr</Nom>\n      <Description>Domaine {i}</Description>\n      <DNCertificatOperateur>CN=mail.d{i:05}.mssante.fr,OU=4997000{i:08},O=OPERATEUR {i}\\, SAS,ST=Paris (75),C=FR</DNCertificatOperateur>\n      <ResponsableContact/>\n      <SupportContact/>\n      <DateMAJ>2026-11-20T10:00:00+01:00</DateMAJ>\n    </Domaine>\n"
        );
    }
    xml.push_str(
        r#"  </ListeDomaines>
  <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
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
  </ds:Signature>
</ListeBlanche>
"#,
    );
    xml
}
