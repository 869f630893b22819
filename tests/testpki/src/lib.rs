//! Deterministic test PKI shaped like the French health hierarchies
//! (IGC-Santé, SESAM-Vitale), for validation tests and external servers.
//!
//! ```no_run
//! use passerelle_testpki::{PkiOptions, TestPki, names};
//! let pki = TestPki::generate(&PkiOptions::new(42)).unwrap();
//! let server = pki.cert(names::SERVER_A).unwrap();
//! let pins = pki.anchor_fingerprints();
//! pki.write_to(std::path::Path::new("/tmp/pki")).unwrap();
//! # let _ = (server, pins);
//! ```
//!
//! # Determinism
//! Same [`PkiOptions`] ⇒ byte-identical certificates, keys and CRLs: keys come
//! from `ChaCha20Rng` seeded by (seed, key label), serials from (seed, name),
//! dates from `now` truncated to the UTC day, and all issuers are RSA
//! (PKCS#1 v1.5 signatures are deterministic; ECDSA ones are not, so EC keys
//! are only ever subject keys). Generated keys are cached on disk (see
//! [`KeyCache`]): a cold generation costs a few seconds, a warm one well
//! under a second.
//!
//! # Dates (`day` = `now` truncated to 00:00 UTC)
//! CAs: `day − 3 years` … `day + 10 years`. Leaves: `day − 1 day` …
//! `day + 1 year`; expired: `day − 400 days` … `day − 30 days`;
//! not yet valid: `day + 30 days` … `day + 400 days`. Full CRLs: thisUpdate
//! `day − 1 day`, nextUpdate `day + 7 days`, number [`FULL_CRL_NUMBER`];
//! delta CRLs: thisUpdate `day`, nextUpdate `day + 1 day`, number
//! [`DELTA_CRL_NUMBER`], base [`FULL_CRL_NUMBER`].
//!
//! # Hierarchy (names from [`names`]; DNs in RFC 2253 order, CN first)
//! IGC-Santé CAs are `CN=<cn>,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR`:
//! - `acr-el` `AC RACINE IGC-SANTE ELEMENTAIRE` (anchor)
//!   - `aci-el-org` `AC IGC-SANTE ELEMENTAIRE ORGANISATIONS`
//!   - `aci-el-pp` `AC IGC-SANTE ELEMENTAIRE PERSONNES`
//! - `acr-fo` `AC RACINE IGC-SANTE FORT` (anchor)
//!   - `aci-fo-pp` `AC IGC-SANTE FORT PERSONNES`
//! - `test-acr-el` `TEST AC RACINE IGC-SANTE ELEMENTAIRE` (anchor)
//!   - `test-aci-el-org` `TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS`
//! - `rogue-aci-el-org`: self-signed, same DN as `aci-el-org`, own key (not an anchor)
//! - `public-root` `CN=Example Public Root CA,O=Example Trust Services,C=US` (not an anchor)
//!
//! SESAM-Vitale (names as in the `annuaire.sesam-vitale.fr` DNs):
//! - `sv-test-root` `CN=AC-SESAM-VITALE-TEST-2034,OU=AC-SESAM-VITALE-TEST-2034,O=sesam-vitale,C=FR` (anchor)
//!   - `sv-test-facturation` `CN=AC-FACTURATION-TEST,OU=AC-FACTURATION-TEST,OU=AC-SESAM-VITALE-TEST-2034,O=sesam-vitale,C=FR`
//! - `sv-root` / `sv-facturation`: the same without `-TEST` (anchor)
//!
//! Appliance: `device-ca` `CN=Passerelle Device CA,O=Passerelle,C=FR` (anchor).
//!
//! Leaves (RSA-2048 unless noted):
//! - `server-a` under `aci-el-org`:
//!   `CN=mail.operateur-a.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR`
//!   (Tableau 44), SAN dNSName, KU digitalSignature+keyEncipherment, EKU serverAuth+clientAuth.
//! - `server-comma`: the same shape with `O=CLINIQUE DU PARC\, SAS`, `ST=Hauts-de-Seine (92)`.
//! - `org-auth-cli`: `CN=Authentification MSS,OU=318751275100020,O=…,ST=Paris (75),C=FR`, EKU clientAuth.
//! - `liste-blanche`: `CN=Liste Blanche MSSante,OU=318751275100020,O=AGENCE DU NUMERIQUE EN SANTE,ST=Paris (75),C=FR`,
//!   KU digitalSignature+nonRepudiation, EKU emailProtection (SERV_S/MIME-like).
//! - `cps-auth`, `cps-sign` under `aci-fo-pp`: `CN=899700218896+SN=DUPONT+GN=JEAN,title=Médecin,C=FR`
//!   (a multi-valued RDN as seen on real CPS certificates; `899700218896` is the national id `8` + RPPS
//!   of the test series). Auth: KU digitalSignature, EKU clientAuth; signature: KU nonRepudiation.
//!   Two distinct keys, as on the card; [`TestKey::pkcs1_der`] gives the card form.
//! - `sv-amo-test`, `sv-amc-test` under `sv-test-facturation`, `sv-amo-reel` under `sv-facturation`:
//!   `CN=amo_pj.test@test.rss.fr,OU=AC-FACTURATION-TEST,…`, SAN rfc822Name of the CN, **critical**
//!   KU digitalSignature+nonRepudiation+keyEncipherment, CRL DP LDAP (directory shape) + HTTP.
//! - `device-webadmin` under `device-ca`: ECDSA P-256, `CN=passerelle.local,O=Passerelle,C=FR`, EKU serverAuth.
//!
//! Variants: `server-a-expired`, `server-a-not-yet-valid`, `server-a-revoked` (in the full CRL of
//! `aci-el-org`), `server-a-revoked-delta` (only in its delta CRL), `server-a-by-el-pp`,
//! `server-a-by-fo-pp`, `server-a-test-branch`, `server-a-rogue` (issued by `rogue-aci-el-org`),
//! `server-a-public-ca` (issued by `public-root`, same subject as `server-a`), `sv-amo-test-wrong-san`,
//! `sv-amo-test-ku-no-keyenc`, `sv-amo-test-ku-not-critical`, `sv-amo-test-expired`,
//! `sv-amo-test-revoked` (in the full CRL of `sv-test-facturation`). All `server-a*` share one key.
//!
//! Every CA has a full and a delta CRL. Certificates carry a CRL Distribution
//! Point `<crl_base_url>/crl/<issuer>.crl` and, when
//! [`PkiOptions::freshest_crl`] is set, leaves and full CRLs carry FreshestCRL
//! `<crl_base_url>/crl/<issuer>-delta.crl`.
//!
//! # Files written by [`TestPki::write_to`]
//! ```text
//! <name>.crt.pem  <name>.crt.der    every certificate
//! <name>.key.pem  <name>.key.der    its private key, PKCS#8
//! chain-<name>.pem                  the certificate then its intermediates (no root), for servers
//! crl/<ca>.crl    crl/<ca>-delta.crl          DER, the paths of the CRL DP URLs
//! crl/<ca>.crl.pem crl/<ca>-delta.crl.pem     PEM (what `openssl verify -CRLfile` reads)
//! anchors/<root>.pem                each trust anchor
//! anchors/<root>-bundle.pem         the anchor then every CA under it (a trust store per EX_OPE_5040)
//! anchors/fingerprints.txt          `<root> <SHA-256 as AA:BB:…>` per line
//! ```

mod cert;
mod crl;
mod der;
mod dn;
mod keys;
mod pki;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use cert::KeyUsageBit;
pub use crl::{Crl, CrlKind, Revocation, RevocationReason};
pub use dn::{Attr, Dn};
pub use keys::{KeyAlg, KeyCache, TestKey};
pub use pki::{DELTA_CRL_NUMBER, FULL_CRL_NUMBER, TestPki, names};
pub use rcgen::{ExtendedKeyUsagePurpose, SanType};

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum TestPkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("RSA key generation: {0}")]
    Rsa(#[from] rsa::Error),
    #[error("key encoding: {0}")]
    KeyEncoding(String),
    #[error("DER: {0}")]
    Der(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate named {0:?}")]
    UnknownName(String),
    #[error("{0:?} is not a CA")]
    NotACa(String),
    #[error("a certificate named {0:?} already exists")]
    DuplicateName(String),
    #[error("openssl x509 -req: {0}")]
    Openssl(String),
}

impl TestPkiError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TestPkiError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Signs a CSR made in a token (whose key the PKI never sees) with one of the PKI's CAs as
/// written by [`TestPki::write_to`] in `pki_dir`, with the `openssl x509 -req` CLI:
/// IGC-Santé CA names repeat OU, which rcgen cannot write as an issuer. `extensions` is an
/// openssl extension file's text; the certificate (PEM) is written to `out` and lasts 30
/// days.
pub fn openssl_issue(
    pki_dir: &Path,
    ca: &str,
    csr_pem: &str,
    extensions: &str,
    serial: u64,
    out: &Path,
) -> Result<(), TestPkiError> {
    let (csr, ext) = (out.with_extension("csr.pem"), out.with_extension("ext"));
    std::fs::write(&csr, csr_pem).map_err(|e| TestPkiError::io(&csr, e))?;
    std::fs::write(&ext, extensions).map_err(|e| TestPkiError::io(&ext, e))?;
    let signed = std::process::Command::new("openssl")
        .args(["x509", "-req", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki_dir.join(format!("{ca}.crt.pem")))
        .arg("-CAkey")
        .arg(pki_dir.join(format!("{ca}.key.pem")))
        .args([
            "-set_serial",
            &format!("{serial:#x}"),
            "-days",
            "30",
            "-sha256",
        ])
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(out)
        .output()
        .map_err(|e| TestPkiError::Openssl(e.to_string()))?;
    if signed.status.success() {
        Ok(())
    } else {
        Err(TestPkiError::Openssl(
            String::from_utf8_lossy(&signed.stderr).into_owned(),
        ))
    }
}

/// Inputs of [`TestPki::generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiOptions {
    pub seed: u64,
    /// Reference time; only its UTC day matters.
    pub now: OffsetDateTime,
    /// Prefix of CRL URLs, without trailing slash, e.g. `http://127.0.0.1:8080`.
    pub crl_base_url: String,
    /// Whether leaves and full CRLs point at the delta CRL (FreshestCRL).
    pub freshest_crl: bool,
    pub key_cache: KeyCache,
}

impl PkiOptions {
    /// `now` = current time, CRLs on `http://127.0.0.1:8080`, FreshestCRL on,
    /// keys cached in the temp dir.
    pub fn new(seed: u64) -> Self {
        PkiOptions {
            seed,
            now: OffsetDateTime::now_utc(),
            crl_base_url: "http://127.0.0.1:8080".to_owned(),
            freshest_crl: true,
            key_cache: KeyCache::TempDir,
        }
    }
}

/// Validity period of a leaf, relative to the options' day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// `day − 1 day` … `day + 1 year`.
    Current,
    /// `day − 400 days` … `day − 30 days`.
    Expired,
    /// `day + 30 days` … `day + 400 days`.
    NotYetValid,
    Explicit {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
}

/// Description of a leaf certificate for [`TestPki::issue_leaf`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Unique name; also the file stem in [`TestPki::write_to`].
    pub name: String,
    pub subject: Dn,
    /// Leaves with the same label and algorithm share a key.
    pub key_label: String,
    pub key_alg: KeyAlg,
    pub validity: Validity,
    pub key_usage: Vec<KeyUsageBit>,
    pub key_usage_critical: bool,
    pub extended_key_usage: Vec<ExtendedKeyUsagePurpose>,
    pub subject_alt_names: Vec<SanType>,
    /// CRL DP URIs placed before the issuer's HTTP one (e.g. an LDAP URL).
    pub extra_crl_uris: Vec<String>,
}

impl LeafSpec {
    /// RSA-2048 key labelled `name`, current validity, critical KeyUsage
    /// digitalSignature, no EKU, no SAN.
    pub fn new(name: impl Into<String>, subject: Dn) -> Self {
        let name = name.into();
        LeafSpec {
            key_label: name.clone(),
            name,
            subject,
            key_alg: KeyAlg::Rsa(2048),
            validity: Validity::Current,
            key_usage: vec![KeyUsageBit::DigitalSignature],
            key_usage_critical: true,
            extended_key_usage: Vec::new(),
            subject_alt_names: Vec::new(),
            extra_crl_uris: Vec::new(),
        }
    }

    /// An MSSanté connector certificate (Tableau 44 DN, SAN dNSName,
    /// KU digitalSignature+keyEncipherment, EKU serverAuth+clientAuth:
    /// connectors are both SMTP client and server).
    pub fn mssante_server(
        name: impl Into<String>,
        fqdn: &str,
        ou: &str,
        o: &str,
        st: &str,
    ) -> Result<Self, TestPkiError> {
        let mut spec = LeafSpec::new(name, Dn::mssante_server(fqdn, ou, o, st));
        spec.key_usage = vec![KeyUsageBit::DigitalSignature, KeyUsageBit::KeyEncipherment];
        spec.extended_key_usage = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        spec.subject_alt_names = vec![dns_san(fqdn)?];
        Ok(spec)
    }

    #[must_use]
    pub fn with_key(mut self, label: impl Into<String>, alg: KeyAlg) -> Self {
        self.key_label = label.into();
        self.key_alg = alg;
        self
    }

    #[must_use]
    pub fn with_validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    #[must_use]
    pub fn with_key_usage(mut self, bits: &[KeyUsageBit], critical: bool) -> Self {
        self.key_usage = bits.to_vec();
        self.key_usage_critical = critical;
        self
    }

    #[must_use]
    pub fn with_eku(mut self, eku: &[ExtendedKeyUsagePurpose]) -> Self {
        self.extended_key_usage = eku.to_vec();
        self
    }

    #[must_use]
    pub fn with_sans(mut self, sans: Vec<SanType>) -> Self {
        self.subject_alt_names = sans;
        self
    }
}

/// A dNSName SAN (ASCII only).
pub fn dns_san(name: &str) -> Result<SanType, TestPkiError> {
    Ok(SanType::DnsName(name.try_into()?))
}

/// An rfc822Name SAN (ASCII only).
pub fn email_san(addr: &str) -> Result<SanType, TestPkiError> {
    Ok(SanType::Rfc822Name(addr.try_into()?))
}

/// A generated certificate with its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    name: String,
    der: Vec<u8>,
    key: TestKey,
    issuer: Option<String>,
    serial: Vec<u8>,
    subject: Dn,
    is_ca: bool,
}

impl IssuedCert {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    pub fn key(&self) -> &TestKey {
        &self.key
    }

    /// Name of the issuing CA; `None` when self-signed.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Big-endian serial number.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    pub fn subject(&self) -> &Dn {
        &self.subject
    }

    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// SHA-256 of the DER certificate (what RE_OPE_5040 pins).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// `AA:BB:…`, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn sha256_fingerprint(&self) -> String {
        self.sha256()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
