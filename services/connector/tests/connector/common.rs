//! Shared setup: the test PKI with one connector certificate per operator, a pinned trust
//! store, a liste blanche signed by `xmlsec1`, connector instances (the one under test with
//! its key in a SoftHSM2 token), a DNS server answering MX/A on loopback, TLS clients.

#![allow(dead_code, reason = "each test uses a different subset")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use passerelle_connector::{Connector, ConnectorConfig};
use passerelle_harness::SoftHsm;
use passerelle_keystore::{Department, KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Subject};
use passerelle_liste_blanche::{
    ListeBlancheConfig, ListeBlancheHandle, ListeBlancheService, LocalCopy, SignerIdentity,
    SignerPolicy,
};
use passerelle_queue::{Queue, QueueConfig, SqliteStore};
use passerelle_smtp::{ClientConfig, SmtpClient};
use passerelle_testpki::{LeafSpec, PkiOptions, TestPki, names};
use passerelle_trust::{
    PeerRole, ProfileConfig, ProfileServerVerifier, RevocationMethod, RevocationScope, TlsOptions,
    TrustConfig, TrustStore, UnknownStatusPolicy, mssante_client_config, sha256_hex,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::net::TcpListener;

pub const ANS_OU: &str = "318751275100020";
pub const DOMAIN_A: &str = "operateur-a.mssante.fr";
pub const DOMAIN_B: &str = "operateur-b.mssante.fr";
pub const DOMAIN_C: &str = "operateur-c.mssante.fr";
pub const HOPITAL_A: &str = "hopital-a.mssante.fr";

/// DN of testpki's `server-a` (operator A's connector).
pub const DN_A: &str = "CN=mail.operateur-a.mssante.fr,OU=318751275100020,O=AGENCE DES SYSTEMES D'INFORMATION PARTAG,ST=Paris (75),C=FR";
/// Operator B's connector, issued into the SoftHSM2 token (see [`token_identity`]).
pub const DN_B: &str =
    "CN=mail.operateur-b.mssante.fr,OU=3499700000000002,O=OPERATEUR B,ST=Gironde (33),C=FR";
/// Operator C (another operator, for the relay case).
pub const DN_C: &str =
    "CN=mail.operateur-c.mssante.fr,OU=3499700000000003,O=OPERATEUR C,ST=Rhone (69),C=FR";
/// A valid IGC-Santé certificate whose DN no liste blanche entry carries.
pub const DN_X: &str = "CN=mail.intrus.mssante.fr,OU=3499700000000009,O=INTRUS,ST=Nord (59),C=FR";

/// The PKI on disk, the trust store, the list.
pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub trust: Arc<TrustStore>,
}

impl World {
    pub fn new() -> anyhow::Result<Self> {
        let mut pki = TestPki::generate(&PkiOptions::new(11))?;
        for (name, fqdn, ou, o, st) in [
            (
                "server-c",
                "mail.operateur-c.mssante.fr",
                "3499700000000003",
                "OPERATEUR C",
                "Rhone (69)",
            ),
            (
                "server-x",
                "mail.intrus.mssante.fr",
                "3499700000000009",
                "INTRUS",
                "Nord (59)",
            ),
        ] {
            pki.issue_leaf(
                names::ACI_EL_ORG,
                LeafSpec::mssante_server(name, fqdn, ou, o, st)?,
            )?;
        }
        let dir = tempfile::tempdir()?;
        pki.write_to(&dir.path().join("pki"))?;
        let trust = Arc::new(trust_store(&pki, dir.path())?);
        Ok(Self { dir, pki, trust })
    }

    pub fn pki_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("pki").join(name)
    }

    /// A verified liste blanche with `entries` installed in a fresh data dir, and the handle
    /// the connector reads.
    pub fn liste_blanche(&self, entries: &[(&str, &[&str])]) -> anyhow::Result<ListeBlancheHandle> {
        let data = tempfile::tempdir_in(self.dir.path())?.keep();
        let signed = self.sign(&list_template(entries))?;
        let identity = SignerIdentity::Ou(ANS_OU.to_owned());
        let policy = SignerPolicy {
            trust: &self.trust,
            profile: "liste-blanche",
            identity: &identity,
        };
        let now = UnixTime::now();
        LocalCopy::open(&data)?.install(&signed, now.as_secs(), &policy, now)?;
        let service = ListeBlancheService::open(&lb_config()?, &data, Arc::clone(&self.trust))?;
        Ok(service.handle())
    }

    /// The standard list: A with two domains, B, C; the intruder's DN nowhere.
    pub fn standard_list(&self) -> anyhow::Result<ListeBlancheHandle> {
        self.liste_blanche(&[
            (DOMAIN_A, &[DN_A]),
            (HOPITAL_A, &[DN_A]),
            (DOMAIN_B, &[DN_B]),
            (DOMAIN_C, &[DN_C]),
        ])
    }

    fn sign(&self, template: &str) -> anyhow::Result<Vec<u8>> {
        let work = tempfile::tempdir()?;
        let input = work.path().join("template.xml");
        let output = work.path().join("signed.xml");
        std::fs::write(&input, template)?;
        let key = self.pki_file(&format!("{}.key.pem", names::LISTE_BLANCHE));
        let cert = self.pki_file(&format!("{}.crt.pem", names::LISTE_BLANCHE));
        let out = Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(format!("{},{}", key.display(), cert.display()))
            .arg("--output")
            .arg(&output)
            .arg(&input)
            .output()
            .context("run xmlsec1 (apt-get install -y xmlsec1)")?;
        ensure!(
            out.status.success(),
            "xmlsec1 --sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(std::fs::read(&output)?)
    }

    /// `name`'s certificate and in-memory key (the peer not under test).
    pub fn memory_identity(&self, name: &str) -> anyhow::Result<Arc<CertifiedKey>> {
        let cert = self.pki.cert(name)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key().pkcs8_der().to_vec()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            signer,
        )))
    }

    /// A TLS client config presenting `identity`, checking the server with `mssante-server`.
    pub fn client_tls(
        &self,
        identity: Option<Arc<CertifiedKey>>,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let verifier = Arc::new(
            ProfileServerVerifier::new(Arc::clone(&self.trust), "mssante-server")?
                .without_server_name_check(),
        );
        let resolver: Arc<dyn rustls::client::ResolvesClientCert> = match identity {
            Some(id) => Arc::new(passerelle_keystore::TokenCertResolver::new(id)),
            None => Arc::new(NoClientCert),
        };
        Ok(Arc::new(mssante_client_config(
            resolver,
            verifier,
            TlsOptions::default(),
        )?))
    }

    /// An operator's connector talking to `addr`: connected, STARTTLS done.
    pub async fn operator_client(
        &self,
        addr: std::net::SocketAddr,
        identity: Option<Arc<CertifiedKey>>,
    ) -> anyhow::Result<SmtpClient> {
        let mut client =
            SmtpClient::connect(addr, ClientConfig::new("mail.operateur-a.mssante.fr")).await?;
        client.ehlo().await?;
        client
            .starttls(
                self.client_tls(identity)?,
                ServerName::try_from("mx.operateur-b.mssante.fr")?,
            )
            .await?;
        Ok(client)
    }
}

#[derive(Debug)]
struct NoClientCert;

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

fn lb_config() -> anyhow::Result<ListeBlancheConfig> {
    Ok(serde_json::from_value(serde_json::json!({
        "url": "https://127.0.0.1:9/listeblanchemssante.xml",
        "signer_profile": "liste-blanche",
        "https_profile": "mssante-server",
        "signer_ou": ANS_OU,
    }))?)
}

/// Pinned `acr-el` anchor and `aci-el-org` issuer, its CRLs installed, the three profiles the
/// connector and the list use.
fn trust_store(pki: &TestPki, dir: &Path) -> anyhow::Result<TrustStore> {
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors)?;
    let mut pins = String::new();
    for name in [names::ACR_EL, names::ACI_EL_ORG] {
        let der = pki.cert(name)?.der();
        std::fs::write(anchors.join(format!("{name}.der")), der)?;
        let _ = writeln!(pins, "{}  {name}.der", sha256_hex(der));
    }
    let pins_file = dir.join("pins.sha256");
    std::fs::write(&pins_file, pins)?;
    let profile = |role| ProfileConfig {
        role,
        anchors: vec![format!("{}.der", names::ACR_EL)],
        allowed_issuers: vec![format!("{}.der", names::ACI_EL_ORG)],
        revocation: RevocationMethod::Crl,
        ocsp_url: None,
        ocsp_timeout: Duration::from_secs(5),
        unknown_status: UnknownStatusPolicy::HardFail,
        revocation_scope: RevocationScope::EndEntity,
    };
    let store = TrustStore::load(&TrustConfig {
        anchors_dir: anchors,
        pins_file,
        crl_cache_dir: dir.join("crl-cache"),
        crl_refresh_every: Duration::from_hours(24),
        crl_sources: Vec::new(),
        tls: TlsOptions::default(),
        profiles: BTreeMap::from([
            ("mssante-server".to_owned(), profile(PeerRole::TlsServer)),
            (
                "mssante-client-auth".to_owned(),
                profile(PeerRole::TlsClient),
            ),
            ("liste-blanche".to_owned(), profile(PeerRole::Any)),
        ]),
    })?;
    store.install_crl(pki.full_crl(names::ACI_EL_ORG)?.der(), "test full CRL")?;
    store.install_crl(pki.delta_crl(names::ACI_EL_ORG)?.der(), "test delta CRL")?;
    Ok(store)
}

pub fn list_template(entries: &[(&str, &[&str])]) -> String {
    let mut domaines = String::new();
    for (nom, dns) in entries {
        let _ = write!(
            domaines,
            "    <Domaine>\n      <Nom>{nom}</Nom>\n      <Description>test</Description>\n"
        );
        for dn in *dns {
            let _ = writeln!(
                domaines,
                "      <DNCertificatOperateur>{}</DNCertificatOperateur>",
                dn.replace('&', "&amp;").replace('<', "&lt;")
            );
        }
        domaines.push_str("      <ResponsableContact/>\n      <SupportContact/>\n      <DateMAJ>2026-11-20T10:00:00+01:00</DateMAJ>\n    </Domaine>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListeBlanche xmlns=\"https://listeblanche.mssante.fr/schema\">\n  <versionFormat>1.0</versionFormat>\n  <DateDeGeneration>2026-11-23T02:00:00+01:00</DateDeGeneration>\n  <ListeDomaines>\n{domaines}  </ListeDomaines>\n  <ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\n    <ds:SignedInfo>\n      <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\n      <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\n      <ds:Reference URI=\"\">\n        <ds:Transforms>\n          <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\n          <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\n        </ds:Transforms>\n        <ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\n        <ds:DigestValue/>\n      </ds:Reference>\n    </ds:SignedInfo>\n    <ds:SignatureValue/>\n    <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>\n  </ds:Signature>\n</ListeBlanche>\n"
    )
}

/// Operator B's connector key generated in a SoftHSM2 token, its certificate issued by
/// `aci-el-org` from the token-signed CSR (openssl CLI as the CA: IGC-Santé CA names repeat
/// `OU`, which rcgen cannot write as an issuer) and imported into the token.
/// Fields drop in order: the key and the keystore before the token directory goes.
pub struct TokenIdentity {
    pub certified: Arc<CertifiedKey>,
    pub keystore: Keystore,
    pub hsm: SoftHsm,
    _dir: tempfile::TempDir,
}

pub async fn token_identity(world: &World) -> anyhow::Result<TokenIdentity> {
    let hsm = SoftHsm::builder().build()?;
    hsm.set_process_env();
    let dir = tempfile::tempdir()?;
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin))?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    let keystore = Keystore::open(&KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    })
    .await?;
    let key = KeyRef::Label("connector".to_owned());
    keystore
        .generate("connector", KeyAlgorithm::Rsa2048)
        .await?;
    let csr = keystore
        .csr(
            &key,
            &Subject::ConnectorServer {
                fqdn: "mail.operateur-b.mssante.fr".to_owned(),
                id_nat_prefix: "3".to_owned(),
                id_nat_struct: "499700000000002".to_owned(),
                organization: "OPERATEUR B".to_owned(),
                department: Department {
                    name: "Gironde".to_owned(),
                    code: "33".to_owned(),
                },
            },
        )
        .await?;
    let cert = dir.path().join("b.crt.pem");
    passerelle_testpki::openssl_issue(
        &world.pki_file(""),
        names::ACI_EL_ORG,
        &csr,
        "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:mail.operateur-b.mssante.fr\n",
        0x4b0b,
        &cert,
    )?;
    keystore.import_certificate(&key, &cert).await?;
    let certified = keystore.certified_key(&key).await?;
    Ok(TokenIdentity {
        certified,
        keystore,
        hsm,
        _dir: dir,
    })
}

/// A connector instance running until dropped.
pub struct Instance {
    pub inbound: std::net::SocketAddr,
    pub relay: std::net::SocketAddr,
    pub traces_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Listeners bound ahead, so two instances can be told each other's ports.
pub struct Listeners {
    pub inbound: TcpListener,
    pub relay: TcpListener,
}

impl Listeners {
    pub async fn bind() -> anyhow::Result<Self> {
        Ok(Self {
            inbound: TcpListener::bind("127.0.0.1:0").await?,
            relay: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    pub fn inbound_port(&self) -> u16 {
        self.inbound.local_addr().map_or(0, |a| a.port())
    }
}

pub struct InstanceSpec<'a> {
    pub hostname: &'a str,
    pub domains: &'a [&'a str],
    pub internal: std::net::SocketAddr,
    pub lmtp: bool,
    pub nameserver: Option<std::net::SocketAddr>,
    pub peer_port: u16,
    /// `relay.allowed_clients`.
    pub relay_clients: &'a [&'a str],
}

impl Instance {
    pub async fn start(
        world: &World,
        spec: &InstanceSpec<'_>,
        identity: Arc<CertifiedKey>,
        list: ListeBlancheHandle,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("subject.key");
        std::fs::write(&key, [42u8; 32])?;
        let traces_dir = dir.path().join("traces");
        let config: ConnectorConfig = serde_json::from_value(serde_json::json!({
            "hostname": spec.hostname,
            "domains": spec.domains,
            "key_label": "connector",
            "inbound": { "listen": "127.0.0.1:0" },
            "relay": { "listen": "127.0.0.1:0", "allowed_clients": spec.relay_clients },
            "internal": { "target": spec.internal.to_string(), "lmtp": spec.lmtp },
            "outbound": {
                "nameservers": spec.nameserver.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "smtp_port": spec.peer_port,
                "connect_timeout": "5s",
            },
            "traces": { "dir": traces_dir, "retention": "3650days", "subject_hmac_key_file": key },
            "workers": { "lease": "30s", "idle_poll": "1s" },
        }))?;
        let qc = QueueConfig {
            first_retry: Duration::from_millis(200),
            max_retry: Duration::from_secs(1),
            ..QueueConfig::default()
        };
        let queue: Queue<SqliteStore> = Queue::open_sqlite(dir.path().join("queue"), qc).await?;
        let inbound = listeners.inbound.local_addr()?;
        let relay = listeners.relay.local_addr()?;
        let connector = Connector::with_listeners(
            config,
            queue,
            identity,
            Arc::clone(&world.trust),
            list,
            listeners.inbound,
            listeners.relay,
        )?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = connector
                .run(async {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("connector stopped: {e}");
            }
        });
        Ok(Self {
            inbound,
            relay,
            traces_dir,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        })
    }

    /// Every trace line written so far.
    pub fn traces(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.traces_dir) {
            for e in entries.filter_map(Result::ok) {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// Wait (bounded) until the traces contain `needle`.
    pub async fn wait_for_trace(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let t = self.traces();
            if t.contains(needle) {
                return Ok(t);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no trace with {needle:?} within {timeout:?}:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A test message.
pub fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCompte rendu de test.\r\n",
        fastrand::u64(..)
    )
    .into_bytes()
}

pub fn envelope(from: &str, to: &[&str]) -> passerelle_smtp::Envelope {
    passerelle_smtp::Envelope {
        mail_from: passerelle_smtp::MailFrom {
            address: from.to_owned(),
            size: None,
            eight_bit: false,
        },
        recipients: to.iter().map(|s| (*s).to_owned()).collect(),
    }
}
