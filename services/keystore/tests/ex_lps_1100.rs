//! EX_LPS_1100: a structure reaches its applicative BALs over SMTP and IMAP by
//! presenting an IGC-Santé ORG AUTH_CLI certificate, here with the private key
//! in a PKCS#11 token (real SoftHSM2, Postfix and Dovecot).

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use passerelle_harness::{Dovecot, Postfix, TlsFiles};
use passerelle_keystore::{KeyAlgorithm, KeyRef, Keystore, TokenCertResolver};
use passerelle_testpki::names;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// The test PKI's connector certificate, which Postfix and Dovecot present.
const SERVER_NAME: &str = "mail.operateur-a.mssante.fr";

/// A line-oriented client over plain TCP or TLS.
struct Lines<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(
            self.stream.read_line(&mut line).await? > 0,
            "connection closed"
        );
        Ok(line.trim_end().to_owned())
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.stream.get_mut().flush().await?;
        Ok(())
    }

    /// One SMTP reply: its code and the text of its last line.
    async fn smtp_reply(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            let line = self.read_line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context(line.clone())?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line));
            }
        }
    }

    async fn smtp(&mut self, command: &str) -> anyhow::Result<(u16, String)> {
        self.send(command).await?;
        self.smtp_reply().await
    }

    /// Sends a tagged IMAP command and returns its tagged completion line.
    async fn imap(&mut self, tag: &str, command: &str) -> anyhow::Result<String> {
        self.send(&format!("{tag} {command}")).await?;
        loop {
            let line = self.read_line().await?;
            if line.starts_with(&format!("{tag} ")) {
                return Ok(line);
            }
        }
    }

    /// The plain stream for the TLS handshake. STARTTLS servers send nothing
    /// after their go-ahead, so nothing buffered is lost.
    fn into_inner(self) -> anyhow::Result<S> {
        ensure!(
            self.stream.buffer().is_empty(),
            "data after the STARTTLS go-ahead"
        );
        Ok(self.stream.into_inner())
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn starttls(
    tcp: TcpStream,
    roots: &rustls::RootCertStore,
    client_cert: Arc<dyn ResolvesClientCert>,
) -> anyhow::Result<Tls> {
    // An explicit provider: the workspace links both ring and aws-lc-rs (tough needs it).
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots.clone())
    .with_client_cert_resolver(client_cert);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(connector
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await?)
}

/// SMTP up to RCPT: returns the RCPT reply after STARTTLS with `client_cert`.
async fn smtp_rcpt(
    postfix: std::net::SocketAddr,
    roots: &rustls::RootCertStore,
    client_cert: Arc<dyn ResolvesClientCert>,
) -> anyhow::Result<(u16, String, Lines<Tls>)> {
    let mut smtp = Lines::new(TcpStream::connect(postfix).await?);
    ensure!(smtp.smtp_reply().await?.0 == 220, "no banner");
    ensure!(smtp.smtp("EHLO passerelle.test").await?.0 == 250, "EHLO");
    let (code, text) = smtp.smtp("STARTTLS").await?;
    ensure!(code == 220, "STARTTLS refused: {text}");
    let mut smtp = Lines::new(starttls(smtp.into_inner()?, roots, client_cert).await?);
    ensure!(
        smtp.smtp("EHLO passerelle.test").await?.0 == 250,
        "EHLO after TLS"
    );
    let (code, text) = smtp.smtp("MAIL FROM:<bal-app@passerelle.test>").await?;
    ensure!(code == 250, "MAIL FROM: {text}");
    let (code, text) = smtp.smtp("RCPT TO:<secretariat@passerelle.test>").await?;
    Ok((code, text, smtp))
}

#[test]
fn ex_lps_1100_org_auth_cli_token_key_authenticates_to_postfix_and_dovecot() -> anyhow::Result<()> {
    let env = common::token()?;
    let pki = common::PkiFiles::generate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The appliance's ORG AUTH_CLI key, generated in the token, certified
    // from a CSR signed in the token.
    let key = KeyRef::from("org-auth-cli");
    let (ks, cert_path) = runtime.block_on(async {
        let ks = Keystore::open(&env.config).await?;
        ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
        let csr = ks.csr(&key, &common::org_auth_cli_subject()).await?;
        let cert = pki.issue_org_auth_cli(&csr)?;
        ks.import_certificate(&key, &cert).await?;
        anyhow::Ok((ks, cert))
    })?;
    let token_client: Arc<dyn ResolvesClientCert> = Arc::new(TokenCertResolver::new(
        runtime.block_on(ks.certified_key(&key))?,
    ));

    let server_tls = TlsFiles {
        cert: pki.path(&format!("chain-{}.pem", names::SERVER_A)),
        key: pki.path(&format!("{}.key.pem", names::SERVER_A)),
        ca: pki.path(&format!("anchors/{}-bundle.pem", names::ACR_EL)),
    };
    let dovecot = Dovecot::builder()
        .tls(server_tls.clone())
        .client_cert_auth(true)
        // EX_LPS_1200 identifies the structure by the IdNat in OU; the CN
        // ("Authentification MSS") is an uncontrolled label with a space
        // Dovecot refuses in user names.
        .extra_config("ssl_cert_username_field = organizationalUnitName")
        .start()?;
    // Postfix admits exactly the token certificate (permit_tls_clientcerts)
    // and delivers into Dovecot.
    let postfix = Postfix::builder()
        .tls(server_tls)
        .require_client_cert(vec![common::postfix_fingerprint(&cert_path)?])
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    let roots = pki.root_store()?;

    runtime.block_on(async {
        // SMTP: relay permission comes from the token-held certificate.
        let (code, text, mut smtp) =
            smtp_rcpt(postfix.smtp_addr(), &roots, Arc::clone(&token_client)).await?;
        ensure!(
            code == 250,
            "RCPT with the token certificate: {text}\n{}",
            postfix.log_tail(20)
        );
        let (code, text) = smtp.smtp("DATA").await?;
        ensure!(code == 354, "DATA: {text}");
        let (code, text) = smtp
            .smtp("Subject: EX_LPS_1100\r\n\r\nsent with a token-held ORG AUTH_CLI key\r\n.")
            .await?;
        ensure!(code == 250, "message: {text}");
        smtp.smtp("QUIT").await?;

        // Control: the test PKI's own ORG AUTH_CLI certificate (same CA, same
        // subject, software key) is not the appliance's and gets no relay.
        let software = pki.pki.cert(names::ORG_AUTH_CLI)?;
        let software_key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(software.key().pkcs8_der().to_vec()),
        ))?;
        let software_client: Arc<dyn ResolvesClientCert> = Arc::new(TokenlessResolver(Arc::new(
            rustls::sign::CertifiedKey::new(vec![software.der().to_vec().into()], software_key),
        )));
        let (code, text, _) = smtp_rcpt(postfix.smtp_addr(), &roots, software_client).await?;
        ensure!(
            code >= 500,
            "RCPT without the token certificate must be refused: {text}"
        );
        anyhow::Ok(())
    })?;
    dovecot.wait_for_inbox_count("secretariat@passerelle.test", 1, Duration::from_secs(10))?;

    runtime.block_on(async {
        // IMAP: SASL EXTERNAL, the identity being the certificate itself.
        let mut imap = Lines::new(TcpStream::connect(dovecot.imap_addr()).await?);
        let greeting = imap.read_line().await?;
        ensure!(greeting.starts_with("* OK"), "{greeting}");
        let ok = imap.imap("a1", "STARTTLS").await?;
        ensure!(ok.starts_with("a1 OK"), "{ok}");
        let mut imap = Lines::new(starttls(imap.into_inner()?, &roots, token_client).await?);
        let auth = imap.imap("a2", "AUTHENTICATE EXTERNAL =").await?;
        if !auth.starts_with("a2 OK") {
            bail!("AUTHENTICATE EXTERNAL: {auth}\n{}", dovecot.log_tail(60));
        }
        let select = imap.imap("a3", "SELECT INBOX").await?;
        ensure!(select.starts_with("a3 OK"), "{select}");
        imap.imap("a4", "LOGOUT").await?;
        anyhow::Ok(())
    })
}

/// A plain resolver for the control client's software key.
#[derive(Debug)]
struct TokenlessResolver(Arc<rustls::sign::CertifiedKey>);

impl ResolvesClientCert for TokenlessResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}
