//! A complete test environment for PSC/API LPS tests: the test PKI (with the fake's
//! certificate) on disk, a trust store pinning its IGC-Santé CAs with every CRL installed,
//! and a SoftHSM2 token holding the RSA key the refresh-token store derives its key from.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use passerelle_harness::{SoftHsm, TlsFiles};
use passerelle_keystore::KeystoreConfig;
use passerelle_testpki::{PkiOptions, TestPki, names as n};
use passerelle_trust::{TrustConfig, TrustStore, sha256_hex};

use crate::FakePscError;

/// CAs pinned by the environment's trust store.
const PINNED: &[&str] = &[n::ACR_EL, n::ACI_EL_ORG, n::ACI_EL_PP];

/// Name the operator's servers present (the test PKI's `server-a`).
pub const OPERATOR_NAME: &str = "mail.operateur-a.mssante.fr";

#[derive(Debug)]
pub struct TestEnv {
    pub pki: TestPki,
    pub dir: tempfile::TempDir,
    pub trust: Arc<TrustStore>,
    pub hsm: SoftHsm,
    pub keystore: KeystoreConfig,
}

fn err(e: impl std::fmt::Display) -> FakePscError {
    FakePscError::Pki(e.to_string())
}

/// Writes `content` to `dir/name` with mode 0600.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> Result<PathBuf, FakePscError> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

impl TestEnv {
    /// Builds everything; sets `SOFTHSM2_CONF` for this process (nextest: one per test).
    pub fn new() -> Result<Self, FakePscError> {
        let mut pki = TestPki::generate(&PkiOptions::new(3)).map_err(err)?;
        crate::issue_cert(&mut pki)?;
        let dir = tempfile::tempdir()?;
        let pki_dir = dir.path().join("pki");
        pki.write_to(&pki_dir).map_err(err)?;

        let anchors = dir.path().join("trust/anchors");
        std::fs::create_dir_all(&anchors)?;
        let mut pins = String::new();
        for name in PINNED {
            let der = pki.cert(name).map_err(err)?.der();
            std::fs::write(anchors.join(format!("{name}.der")), der)?;
            let _ = writeln!(pins, "{}  {name}.der", sha256_hex(der));
        }
        let trust_dir = dir.path().join("trust");
        std::fs::write(trust_dir.join("pins.sha256"), pins)?;
        let text = format!(
            "anchors_dir = '{}'\npins_file = '{}'\ncrl_cache_dir = '{}'\n\
             [profiles.mssante-server]\nrole = \"tls-server\"\nanchors = [\"{}.der\"]\n\
             allowed_issuers = [\"{}.der\"]\n",
            anchors.display(),
            trust_dir.join("pins.sha256").display(),
            trust_dir.join("crl").display(),
            n::ACR_EL,
            n::ACI_EL_ORG,
        );
        let config: TrustConfig = toml::from_str(&text).map_err(err)?;
        let trust = TrustStore::load(&config).map_err(err)?;
        for name in PINNED {
            let full = pki.full_crl(name).map_err(err)?;
            trust.install_crl(full.der(), name).map_err(err)?;
            let delta = pki.delta_crl(name).map_err(err)?;
            trust.install_crl(delta.der(), name).map_err(err)?;
        }

        let hsm = SoftHsm::builder().build().map_err(err)?;
        hsm.set_process_env();
        let pin_file = secret_file(dir.path(), "user.pin", &hsm.token().user_pin)?;
        let keystore = KeystoreConfig {
            module: hsm.module_path().to_owned(),
            token_label: hsm.token().label.clone(),
            pin_file,
        };
        Ok(Self {
            pki,
            dir,
            trust: Arc::new(trust),
            hsm,
            keystore,
        })
    }

    /// A file of the PKI written under the environment (layout of passerelle-testpki).
    pub fn pki_path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("pki").join(rel)
    }

    /// The operator's TLS files (`server-a`, IGC-Santé ORG branch) for Dovecot/Postfix.
    pub fn operator_tls(&self) -> TlsFiles {
        TlsFiles {
            cert: self.pki_path(&format!("chain-{}.pem", n::SERVER_A)),
            key: self.pki_path(&format!("{}.key.pem", n::SERVER_A)),
            ca: self.pki_path(&format!("anchors/{}-bundle.pem", n::ACR_EL)),
        }
    }

    /// The anchor bundle (for Dovecot's `tls_ca_cert_file` toward the fake PSC).
    pub fn ca_bundle(&self) -> PathBuf {
        self.pki_path(&format!("anchors/{}-bundle.pem", n::ACR_EL))
    }
}

impl TestEnv {
    /// dovecot.conf lines that make a harness Dovecot an API LPS IMAP front for PER/ORG
    /// BALs: SASL XOAUTH2/OAUTHBEARER validated by the fake PSC's introspection endpoint
    /// (EX_LPS_0900: the operator asks PSC about the token; the introspection answer's
    /// `username` must equal the BAL in `user=`). Files go in a world-readable directory
    /// because Dovecot's auth process does not run as root.
    pub fn dovecot_oauth2(&self, fake: &crate::FakePsc) -> Result<String, FakePscError> {
        let dir = self.dir.path().join("dovecot-oauth2");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let ca = dir.join("ca.pem");
        std::fs::copy(self.ca_bundle(), &ca)?;
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644))?;
        let conf = dir.join("oauth2.conf.ext");
        std::fs::write(
            &conf,
            format!(
                "introspection_mode = post\nintrospection_url = {}\n\
                 username_attribute = username\nactive_attribute = active\nactive_value = true\n\
                 tls_ca_cert_file = {}\n",
                fake.introspection_url(),
                ca.display()
            ),
        )?;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))?;
        Ok(format!(
            "auth_mechanisms = plain login xoauth2 oauthbearer\n\
             passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
            conf.display()
        ))
    }
}
