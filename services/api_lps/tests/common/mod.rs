//! Shared fixtures: the test PKI, an "operator" made of real Postfix (client certificate
//! required, `permit_tls_clientcerts`, SASL by Dovecot) delivering by LMTP into Dovecot,
//! the practice mail service on loopback, and a LAN client.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use argon2::password_hash::{PasswordHasher, SaltString};
use passerelle_api_lps::autoconfig::Autoconfig;
use passerelle_api_lps::{
    AccessTokens, BalConfig, BalKind, DeliveryConfig, DnsConfig, Endpoint, EvictFuture, Limits,
    LocalAccount, PracticeMail, PracticeMailConfig, TlsSetup, TokenError, TokenFuture,
};
use passerelle_harness::{Dovecot, Postfix, TlsFiles};
use passerelle_queue::{Queue, QueueConfig, SqliteStore};
use passerelle_smtp::{ClientConfig, Delivery, Envelope, MailFrom, SmtpClient};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub const FRONT: &str = "mail.operateur-a.mssante.fr";
pub const APP_BAL: &str = "secretariat@cabinet.medecin.mssante.fr";
pub const APP_PASSWORD: &str = "app-bal-secret";
pub const DOCTOR: &str = "dr.house@medecin.mssante.fr";
pub const DOCTOR2: &str = "dr.wilson@medecin.mssante.fr";
pub const LAN_USER: &str = "alice";
pub const LAN_PASSWORD: &str = "alice-pw";
pub const LAN_MAILBOX: &str = "alice@cabinet.local";
pub const NIL: &str = "PASSERELLE/GW01/0.1";

pub struct Pki {
    pub pki: TestPki,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(4242))?;
        let dir = tempfile::tempdir()?;
        pki.write_to(dir.path())?;
        Ok(Self { pki, dir })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path(&format!("chain-{}.pem", names::SERVER_A)),
            key: self.path(&format!("{}.key.pem", names::SERVER_A)),
            ca: self.path(&format!("anchors/{}-bundle.pem", names::ACR_EL)),
        }
    }

    fn chain(&self, name: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        Ok(self
            .pki
            .chain(name)?
            .iter()
            .filter(|c| c.issuer().is_some())
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect())
    }

    fn key(&self, name: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.pki.cert(name)?.key().pkcs8_der().to_vec(),
        )))
    }

    pub fn roots(&self) -> anyhow::Result<Arc<rustls::RootCertStore>> {
        let mut store = rustls::RootCertStore::empty();
        store.add(CertificateDer::from(
            self.pki.cert(names::ACR_EL)?.der().to_vec(),
        ))?;
        Ok(Arc::new(store))
    }

    /// The LAN listener's certificate (server-a stands in for the device certificate).
    pub fn listener_tls(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(self.chain(names::SERVER_A)?, self.key(names::SERVER_A)?)?;
        Ok(Arc::new(config))
    }

    /// The MSSanté client profile (EX_LPS_0200 suites) presenting `resolver`'s certificate.
    pub fn upstream_tls(
        &self,
        resolver: Arc<dyn ResolvesClientCert>,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots()?,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        Ok(Arc::new(passerelle_trust::mssante_client_config(
            resolver,
            verifier,
            passerelle_trust::TlsOptions::default(),
        )?))
    }

    /// The test PKI's ORG AUTH_CLI with its software key.
    pub fn software_org_auth_cli(&self) -> anyhow::Result<Arc<dyn ResolvesClientCert>> {
        let key = rustls::crypto::ring::sign::any_supported_type(&self.key(names::ORG_AUTH_CLI)?)?;
        Ok(Arc::new(FixedCert(Arc::new(
            rustls::sign::CertifiedKey::new(self.chain(names::ORG_AUTH_CLI)?, key),
        ))))
    }

    pub fn org_auth_cli_fingerprint(&self) -> anyhow::Result<String> {
        use sha2::Digest as _;
        let der = self.pki.cert(names::ORG_AUTH_CLI)?.der().to_vec();
        Ok(sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"))
    }

    /// The LAN client's TLS: trusts the test root.
    pub fn lan_client_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth(),
        ))
    }
}

/// Presents one in-memory certificate and key.
#[derive(Debug)]
pub struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl FixedCert {
    pub fn new(key: rustls::sign::CertifiedKey) -> Self {
        Self(Arc::new(key))
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The operator: Dovecot (mailboxes + SASL for Postfix) and Postfix admitting only
/// `fingerprints` (permit_tls_clientcerts) with AUTH PLAIN checked by Dovecot.
pub struct Operator {
    pub dovecot: Dovecot,
    pub postfix: Postfix,
}

impl Operator {
    pub fn start(pki: &Pki, fingerprints: Vec<String>) -> anyhow::Result<Self> {
        Self::start_with_extra(pki, fingerprints, &[])
    }

    /// Postfix refuses `rejected` at RCPT with `550 5.1.1` (a permanent failure).
    pub fn start_with_rejected(
        pki: &Pki,
        fingerprints: Vec<String>,
        rejected: &str,
    ) -> anyhow::Result<Self> {
        let map = pki.path("rcpt_access");
        std::fs::write(&map, format!("{rejected} 550 5.1.1 No such user here\n"))?;
        let line = format!(
            "smtpd_recipient_restrictions = check_recipient_access texthash:{}, permit_tls_clientcerts, reject",
            map.display()
        );
        Self::start_with_extra(pki, fingerprints, &[line.as_str()])
    }

    pub fn start_with_extra(
        pki: &Pki,
        fingerprints: Vec<String>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let auth_port = free_port()?;
        let dovecot = Dovecot::builder()
            .user(DOCTOR, "pw")
            .user(DOCTOR2, "pw")
            .user(APP_BAL, APP_PASSWORD)
            .user(LAN_MAILBOX, "pw")
            .extra_config(format!(
                "service auth {{\n  inet_listener auth-postfix {{\n    address = 127.0.0.1\n    port = {auth_port}\n  }}\n}}"
            ))
            .start()?;
        let mut postfix = Postfix::builder()
            .domain("medecin.mssante.fr")
            .hostname(FRONT)
            .tls(pki.server_files())
            .require_client_cert(fingerprints)
            .deliver_to_lmtp(dovecot.lmtp_addr())
            .main_cf("smtpd_sasl_auth_enable = yes")
            .main_cf("smtpd_sasl_type = dovecot")
            .main_cf(format!("smtpd_sasl_path = inet:127.0.0.1:{auth_port}"))
            .main_cf("smtpd_tls_auth_only = yes")
            .main_cf("message_size_limit = 20971520");
        for line in extra {
            postfix = postfix.main_cf(*line);
        }
        let postfix = postfix.start()?;
        Ok(Self { dovecot, postfix })
    }

    pub fn wait_inbox(&self, user: &str, n: usize, within: Duration) -> anyhow::Result<usize> {
        tokio::task::block_in_place(|| Ok(self.dovecot.wait_for_inbox_count(user, n, within)?))
    }

    pub fn inbox(&self, user: &str) -> anyhow::Result<usize> {
        Ok(self.dovecot.inbox_count(user)?)
    }

    /// Every stored message of `user` (new/ and cur/).
    pub fn messages(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.dovecot.maildir(user).join(sub);
            if !dir.exists() {
                continue;
            }
            for entry in std::fs::read_dir(dir)? {
                out.push(String::from_utf8_lossy(&std::fs::read(entry?.path())?).into_owned());
            }
        }
        Ok(out)
    }
}

/// A token double for unit-level checks; PER/ORG paths against real PSC are the
/// colleague's token manager.
#[derive(Debug, Default)]
pub struct NoTokens;

impl AccessTokens for NoTokens {
    fn token<'a>(&'a self, _bal: &'a str) -> TokenFuture<'a> {
        Box::pin(async {
            Err(TokenError::ReauthRequired(
                "no PSC session in this test".into(),
            ))
        })
    }
    fn evict<'a>(&'a self, _bal: &'a str) -> EvictFuture<'a> {
        Box::pin(async {})
    }
}

/// Argon2 hash with small parameters (tests run unoptimised).
pub fn hash(password: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).expect("argon2 params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"passerelle-salt!").expect("salt");
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

/// A configuration with one APP BAL sending to `front`.
pub fn config(front: SocketAddr, dsn_lmtp: SocketAddr, password_file: &Path) -> PracticeMailConfig {
    PracticeMailConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        hostname: "passerelle.cabinet.local".into(),
        device_key_label: "device".into(),
        x_mss_nil: NIL.into(),
        server_profile: "mssante-server".into(),
        accounts: vec![LocalAccount {
            user: LAN_USER.into(),
            password_hash: hash(LAN_PASSWORD),
            mailbox: LAN_MAILBOX.into(),
            bals: vec!["app".into()],
        }],
        bals: vec![BalConfig {
            name: "app".into(),
            address: APP_BAL.into(),
            kind: BalKind::App,
            client_key_label: Some("org-auth-cli".into()),
            password_file: Some(password_file.to_owned()),
            submission: Some(Endpoint {
                host: FRONT.into(),
                port: front.port(),
                address: Some(front),
            }),
            connections: 2,
        }],
        limits: Limits::default(),
        dsn_lmtp,
        dns: DnsConfig::default(),
        delivery: DeliveryConfig {
            probe_min: Duration::from_millis(100),
            probe_max: Duration::from_millis(500),
            link_retry: Duration::from_millis(200),
            lease: Duration::from_secs(30),
            command_timeout: Duration::from_secs(20),
            ..DeliveryConfig::default()
        },
    }
}

pub fn queue_config() -> QueueConfig {
    QueueConfig {
        first_retry: Duration::from_millis(200),
        max_retry: Duration::from_secs(1),
        ..QueueConfig::default()
    }
}

pub fn write_secret(dir: &Path, content: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("app.password");
    std::fs::write(&path, format!("{content}\n"))?;
    Ok(path)
}

/// Starts the service with `resolver` as the APP BAL's client certificate.
pub async fn start(
    pki: &Pki,
    config: &PracticeMailConfig,
    queue_dir: &Path,
    resolver: Arc<dyn ResolvesClientCert>,
) -> anyhow::Result<(PracticeMail, Arc<Queue<SqliteStore>>)> {
    let queue = Arc::new(Queue::open_sqlite(queue_dir, queue_config()).await?);
    let upstream = pki.upstream_tls(resolver)?;
    let tls = TlsSetup {
        listener: pki.listener_tls()?,
        upstream: config
            .bals
            .iter()
            .map(|b| (b.name.clone(), Arc::clone(&upstream)))
            .collect(),
        https: Arc::clone(&upstream),
    };
    let autoconfig = Autoconfig::new(&config.dns, Arc::clone(&upstream))?;
    let mail = PracticeMail::start(
        config,
        Arc::clone(&queue),
        tls,
        Arc::new(NoTokens),
        autoconfig,
    )
    .await?;
    Ok((mail, queue))
}

/// A LAN practice software session: STARTTLS to the listener, AUTH PLAIN.
pub async fn lan_client(pki: &Pki, addr: SocketAddr) -> anyhow::Result<SmtpClient> {
    let mut client = SmtpClient::connect(addr, ClientConfig::new("lps.cabinet.local")).await?;
    client
        .starttls(
            pki.lan_client_tls()?,
            ServerName::try_from(FRONT).context("name")?,
        )
        .await?;
    client.auth_plain("", LAN_USER, LAN_PASSWORD).await?;
    Ok(client)
}

pub fn envelope(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        mail_from: MailFrom {
            address: from.to_owned(),
            size: None,
            eight_bit: false,
        },
        recipients: to.iter().map(|s| (*s).to_owned()).collect(),
    }
}

pub fn message(id: &str, to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {APP_BAL}\r\nTo: {to}\r\nSubject: test {id}\r\nMessage-ID: <{id}@cabinet.local>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

pub async fn submit(client: &mut SmtpClient, id: &str, to: &[&str]) -> anyhow::Result<Delivery> {
    Ok(client
        .send(&envelope(LAN_MAILBOX, to), &message(id, to[0], "hello"))
        .await?)
}

/// Runs openssl, failing with its output.
pub fn openssl(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .context("run openssl")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// Signs an ORG AUTH_CLI CSR with the test PKI's `aci-el-org` CA (openssl: IGC-Santé CA
/// names repeat OU, which rcgen cannot write).
pub fn issue_org_auth_cli(pki: &Pki, csr_pem: &str) -> anyhow::Result<PathBuf> {
    let csr = pki.path("token.csr.pem");
    let ext = pki.path("token.ext");
    let cert = pki.path("token.crt.pem");
    std::fs::write(&csr, csr_pem)?;
    std::fs::write(
        &ext,
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n",
    )?;
    let ca = names::ACI_EL_ORG;
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr)?,
        "-CA",
        path_str(&pki.path(&format!("{ca}.crt.pem")))?,
        "-CAkey",
        path_str(&pki.path(&format!("{ca}.key.pem")))?,
        "-set_serial",
        "0x7e57c0de",
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

/// SHA-256 fingerprint of a PEM certificate as Postfix writes it (`AA:BB:…`).
pub fn pem_fingerprint(cert: &Path) -> anyhow::Result<String> {
    let out = openssl(&[
        "x509",
        "-in",
        path_str(cert)?,
        "-noout",
        "-fingerprint",
        "-sha256",
    ])?;
    out.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .context("openssl fingerprint output")
}
