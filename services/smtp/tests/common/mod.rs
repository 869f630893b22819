//! Shared fixtures: the test PKI on disk, rustls configurations from it, a recording
//! handler and a server on an ephemeral loopback port.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use passerelle_harness::TlsFiles;
use passerelle_smtp::{
    AuthDecision, AuthMechanism, Envelope, Handler, Reply, ServerConfig, SessionInfo, TlsInfo,
};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::sync::{Notify, oneshot};

pub const SERVER_NAME: &str = "mail.operateur-a.mssante.fr";

pub struct Pki {
    pub pki: TestPki,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(5321))?;
        let dir = tempfile::tempdir()?;
        pki.write_to(dir.path())?;
        Ok(Self { pki, dir })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// server-a's chain and key, client certificates checked against the Élémentaire root.
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

    pub fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        store.add(CertificateDer::from(
            self.pki.cert(names::ACR_EL)?.der().to_vec(),
        ))?;
        Ok(store)
    }

    /// Server side of our engine: server-a, client certificates optional.
    pub fn rustls_server(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            Arc::clone(&provider),
        )
        .allow_unauthenticated()
        .build()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(names::SERVER_A)?, self.key(names::SERVER_A)?)?;
        Ok(Arc::new(config))
    }

    /// Client side: trusts the Élémentaire root, optionally presents `org-auth-cli`.
    pub fn rustls_client(&self, client_cert: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(self.roots()?);
        let config = if client_cert {
            builder.with_client_auth_cert(
                self.chain(names::ORG_AUTH_CLI)?,
                self.key(names::ORG_AUTH_CLI)?,
            )?
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    /// `AA:BB:…` SHA-256 of org-auth-cli, as Postfix's `relay_clientcerts` wants it.
    pub fn org_auth_cli_fingerprint(&self) -> anyhow::Result<String> {
        let der = self.pki.cert(names::ORG_AUTH_CLI)?.der().to_vec();
        let digest = ring_sha256(&der);
        Ok(digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"))
    }
}

fn ring_sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("static name")
}

/// What the recording handler saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub messages: Vec<(Envelope, Vec<u8>)>,
    pub auths: Vec<(AuthMechanism, String, String)>,
    pub tls: Vec<TlsInfo>,
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Mutex<Seen>,
    pub notify: Notify,
}

impl Recorder {
    pub fn messages(&self) -> usize {
        self.seen.lock().expect("lock").messages.len()
    }

    /// Waits until `n` messages arrived, with a deadline.
    pub async fn wait_messages(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, async {
            loop {
                let notified = self.notify.notified();
                if self.messages() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .with_context(|| format!("{n} message(s) not received within {within:?}"))
    }
}

impl Handler for Recorder {
    async fn on_tls(&self, _session: &SessionInfo, tls: &TlsInfo) -> Result<(), Reply> {
        self.seen.lock().expect("lock").tls.push(tls.clone());
        Ok(())
    }

    async fn on_auth(
        &self,
        _session: &SessionInfo,
        mechanism: AuthMechanism,
        _authzid: &str,
        authcid: &str,
        secret: &str,
    ) -> AuthDecision {
        self.seen.lock().expect("lock").auths.push((
            mechanism,
            authcid.to_owned(),
            secret.to_owned(),
        ));
        match (mechanism, secret) {
            (AuthMechanism::XOAuth2, "good-token") | (_, "secret") => AuthDecision::Accept,
            (AuthMechanism::XOAuth2, _) => AuthDecision::RefuseWithChallenge {
                challenge: br#"{"status":"401","schemes":"bearer","scope":"openid"}"#.to_vec(),
                reply: Reply::new(535, (5, 7, 8), "Authentication credentials invalid"),
            },
            _ => AuthDecision::Refuse(Reply::new(
                535,
                (5, 7, 8),
                "Authentication credentials invalid",
            )),
        }
    }

    async fn on_rcpt(
        &self,
        _session: &SessionInfo,
        _from: &passerelle_smtp::MailFrom,
        to: &str,
    ) -> Result<(), Reply> {
        if to.starts_with("refused") {
            return Err(Reply::new(550, (5, 1, 1), "No such user"));
        }
        if to.starts_with("later") {
            return Err(Reply::new(450, (4, 2, 1), "Try later"));
        }
        Ok(())
    }

    async fn on_data(&self, _session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        self.seen
            .lock()
            .expect("lock")
            .messages
            .push((envelope, message));
        self.notify.notify_waiters();
        Reply::new(250, (2, 0, 0), "Queued")
    }
}

/// A running engine on 127.0.0.1; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let recorder = Arc::new(Recorder::default());
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(passerelle_smtp::serve(
            listener,
            Arc::clone(&recorder),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            recorder,
            stop: Some(stop),
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Server config for tests: STARTTLS with server-a, AUTH PLAIN/LOGIN/XOAUTH2 after TLS.
pub fn tls_config(pki: &Pki) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::new("mx.test.passerelle");
    config.tls = Some(pki.rustls_server()?);
    config.auth_mechanisms = vec![
        AuthMechanism::Plain,
        AuthMechanism::Login,
        AuthMechanism::XOAuth2,
    ];
    Ok(config)
}
