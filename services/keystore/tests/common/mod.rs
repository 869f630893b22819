//! Shared setup: a SoftHSM2 token per test (nextest runs each test in its own
//! process, so `SOFTHSM2_CONF` can be set process-wide), PIN files, the test
//! PKI on disk, and a CA signing a CSR with the openssl CLI.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, ensure};
use passerelle_harness::SoftHsm;
use passerelle_keystore::{Department, KeystoreConfig, Subject};
use passerelle_testpki::{PkiOptions, TestPki};

/// A token store with its config; the temp dirs go when it drops.
pub struct TokenEnv {
    pub hsm: SoftHsm,
    pub dir: tempfile::TempDir,
    pub config: KeystoreConfig,
}

/// One initialised SoftHSM2 token (`passerelle-test`, user PIN `1234`) and a
/// config pointing at it with a mode-0600 PIN file.
pub fn token() -> anyhow::Result<TokenEnv> {
    let hsm = SoftHsm::builder().build()?;
    hsm.set_process_env();
    let dir = tempfile::tempdir()?;
    let pin_file = secret_file(dir.path(), "user.pin", &hsm.token().user_pin)?;
    let config = KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    };
    Ok(TokenEnv { hsm, dir, config })
}

/// Writes `content` to `dir/name` with mode 0600.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// The ORG AUTH_CLI subject of the test PKI's structure.
pub fn org_auth_cli_subject() -> Subject {
    Subject::OrgAuthCli {
        id_nat_struct: "318751275100020".to_owned(),
        organization: "AGENCE DES SYSTEMES D'INFORMATION PARTAG".to_owned(),
        department: Department {
            name: "Paris".to_owned(),
            code: "75".to_owned(),
        },
    }
}

/// Runs openssl, failing with its stderr.
pub fn openssl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("run openssl (apt-get install -y openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The test PKI written to a temp dir (layout in passerelle-testpki's docs).
pub struct PkiFiles {
    pub pki: TestPki,
    pub dir: tempfile::TempDir,
}

impl PkiFiles {
    pub fn generate() -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(3))?;
        let dir = tempfile::tempdir()?;
        pki.write_to(dir.path())?;
        Ok(Self { pki, dir })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Issues an ORG AUTH_CLI certificate from `csr_pem` with the
    /// `aci-el-org` CA.
    pub fn issue_org_auth_cli(&self, csr_pem: &str) -> anyhow::Result<PathBuf> {
        self.issue(
            "org-auth-cli-token",
            csr_pem,
            "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n",
        )
    }

    /// Issues a connector server certificate for `fqdn` from `csr_pem`.
    pub fn issue_server(&self, csr_pem: &str, fqdn: &str) -> anyhow::Result<PathBuf> {
        self.issue(
            "server-token",
            csr_pem,
            &format!(
                "keyUsage = critical, digitalSignature, keyEncipherment\n\
                 extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:{fqdn}\n"
            ),
        )
    }

    /// Signs `csr_pem` with the `aci-el-org` CA. The CA signs with the
    /// openssl CLI: IGC-Santé CA names repeat `OU`, which rcgen's
    /// `DistinguishedName` cannot hold, so an rcgen issuer would write an
    /// issuer name different from the CA's subject and no chain would build.
    fn issue(&self, name: &str, csr_pem: &str, extensions: &str) -> anyhow::Result<PathBuf> {
        let work = self.dir.path();
        let csr = work.join(format!("{name}.csr.pem"));
        let ext = work.join(format!("{name}.ext"));
        let cert = work.join(format!("{name}.crt.pem"));
        std::fs::write(&csr, csr_pem)?;
        std::fs::write(&ext, extensions)?;
        let ca = passerelle_testpki::names::ACI_EL_ORG;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&self.path(&format!("{ca}.crt.pem")))?,
            "-CAkey",
            path_str(&self.path(&format!("{ca}.key.pem")))?,
            "-set_serial",
            &format!("0x{:x}", serial_for(name)),
            "-days",
            "30",
            "-sha256",
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(cert)
    }

    /// The IGC-Santé Élémentaire root, as a rustls trust store.
    pub fn root_store(&self) -> anyhow::Result<rustls::RootCertStore> {
        let root = self.pki.cert(passerelle_testpki::names::ACR_EL)?;
        let mut store = rustls::RootCertStore::empty();
        store.add(rustls::pki_types::CertificateDer::from(root.der().to_vec()))?;
        Ok(store)
    }
}

/// A distinct serial per issued name (serials only need to differ per CA).
fn serial_for(name: &str) -> u64 {
    name.bytes().fold(0x5a17_e11e_u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    })
}

pub fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 temp path")
}

/// SHA-256 of a PEM certificate as Postfix writes fingerprints (`AA:BB:…`).
pub fn postfix_fingerprint(cert_pem: &Path) -> anyhow::Result<String> {
    let out = openssl(&[
        "x509",
        "-in",
        path_str(cert_pem)?,
        "-noout",
        "-fingerprint",
        "-sha256",
    ])?;
    out.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .context("openssl fingerprint output")
}
