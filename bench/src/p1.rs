//! P1: drain of 10 000 queued 50 KB messages through the API LPS path to one real Postfix
//! sink (STARTTLS, client certificate required, AUTH PLAIN checked by Dovecot, mail
//! discarded after queueing). Ours: passerelle's delivery workers (8 sessions) draining an
//! outbox filled beforehand. Anchor: a Postfix relay holding the same 10 000 messages
//! (held by `defer_transports`, then flushed) relaying with the same client certificate
//! and SASL credentials. Both queues fsync. Throughput in messages/s, from release to the
//! sink's 10 000th acceptance. Goal: ratio ≥ 1.5.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use argon2::password_hash::{PasswordHasher as _, SaltString};
use passerelle_api_lps::autoconfig::Autoconfig;
use passerelle_api_lps::outbox::{self, OutboxEnvelope};
use passerelle_api_lps::{
    BalConfig, BalKind, DeliveryConfig, DnsConfig, Endpoint, Limits, LocalAccount, PracticeMail,
    PracticeMailConfig, TlsSetup,
};
use passerelle_harness::{Dovecot, Postfix, TlsFiles};
use passerelle_queue::{NewItem, Queue, QueueConfig};
use passerelle_smtp::{ClientConfig, Envelope, MailFrom, SmtpClient};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) const MESSAGES: usize = 10_000;
pub(crate) const SIZE: usize = 50 * 1024;
pub(crate) const SERVER_NAME: &str = "mail.operateur-a.mssante.fr";
pub(crate) const BAL: &str = "secretariat@cabinet.medecin.mssante.fr";
pub(crate) const PASSWORD: &str = "bench-bal-pw";
pub(crate) const TO: &str = "dr.house@medecin.mssante.fr";

pub fn run() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(p1())
}

pub(crate) fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {BAL}\r\nTo: {TO}\r\nSubject: p1 {i}\r\nMessage-ID: <p1-{i}@bench>\r\nX-MSS-NIL: B\r\n\r\n"
    )
    .into_bytes();
    while m.len() < SIZE {
        m.extend_from_slice(
            b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5\r\n",
        );
    }
    m
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Messages the sink has accepted so far (its log line per queued message).
pub(crate) fn sink_count(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.matches("status=sent").count())
}

pub(crate) async fn wait_sink(log: &Path, target: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while sink_count(log) < target {
        ensure!(
            Instant::now() < deadline,
            "sink stuck at {}",
            sink_count(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(crate) fn postfix_cmd(conf: &Path, args: &[&str], cmd: &str) -> anyhow::Result<()> {
    let out = Command::new(cmd).arg("-c").arg(conf).args(args).output()?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear scenario: sink, ours, anchor"
)]
async fn p1() -> anyhow::Result<()> {
    let pki = TestPki::generate(&PkiOptions::new(1))?;
    let root = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .to_owned();
    let dir = tempfile::tempdir_in(root)?;
    let pki_dir = dir.path().join("pki");
    pki.write_to(&pki_dir)?;
    let server_files = server_files(&pki_dir);
    let (dovecot, sink) = tokio::task::block_in_place(|| {
        start_sink(
            &server_files,
            vec![fingerprint(pki.cert(names::ORG_AUTH_CLI)?.der())],
        )
    })?;
    let sink_log = sink.log_path().to_owned();

    // Ours: fill the outbox, then start the workers.
    let queue =
        Arc::new(Queue::open_sqlite(dir.path().join("queue"), QueueConfig::default()).await?);
    fill_outbox(&queue).await?;
    let secret = dir.path().join("bal.pw");
    std::fs::write(&secret, PASSWORD)?;
    let config = practice_config(sink.smtp_addr(), &secret, dovecot.lmtp_addr())?;
    let tls = tls_setup(&pki)?;
    let autoconfig = Autoconfig::new(&DnsConfig::default(), Arc::clone(&tls.https))?;
    let before = sink_count(&sink_log);
    let started = Instant::now();
    let ours = PracticeMail::start(
        &config,
        Arc::clone(&queue),
        tls,
        Arc::new(NoTokens),
        autoconfig,
    )
    .await?;
    wait_sink(&sink_log, before + MESSAGES).await?;
    let ours_rate = rate(started.elapsed());
    ours.shutdown().await;

    // Anchor: a Postfix relay holding the same messages.
    let relay =
        tokio::task::block_in_place(|| start_relay(dir.path(), &pki_dir, &server_files, &sink))?;
    fill_relay(relay.smtp_addr()).await?;
    let before = sink_count(&sink_log);
    let started = Instant::now();
    tokio::task::block_in_place(|| release_relay(&relay))?;
    wait_sink(&sink_log, before + MESSAGES).await?;
    let anchor_rate = rate(started.elapsed());
    println!(
        "BENCH P1 drain-10000x50KB ours={ours_rate:.1} anchor={anchor_rate:.1} unit=msg/s ratio={:.2}",
        ours_rate / anchor_rate
    );
    Ok(())
}

fn rate(elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "10 000 fits an f64 exactly")]
    let n = MESSAGES as f64;
    n / elapsed.as_secs_f64()
}

/// The server certificate, key and trusted CA of the operator's front (`server-a`).
pub(crate) fn server_files(pki_dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: pki_dir.join(format!("chain-{}.pem", names::SERVER_A)),
        key: pki_dir.join(format!("{}.key.pem", names::SERVER_A)),
        ca: pki_dir.join(format!("anchors/{}-bundle.pem", names::ACR_EL)),
    }
}

/// Postfix's `smtpd_tls_fingerprint_digest = sha256` form of a certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The sink: the operator's SMTP front (client certificate among `fingerprints` required,
/// AUTH PLAIN checked by Dovecot), discarding after queueing. Blocking.
pub(crate) fn start_sink(
    server_files: &TlsFiles,
    fingerprints: Vec<String>,
) -> anyhow::Result<(Dovecot, Postfix)> {
    let auth_port = free_port()?;
    let dovecot = Dovecot::builder()
        .user(BAL, PASSWORD)
        .extra_config(format!(
            "service auth {{\n  inet_listener auth-postfix {{\n    address = 127.0.0.1\n    port = {auth_port}\n  }}\n}}"
        ))
        .start()?;
    let sink = Postfix::builder()
        .domain("medecin.mssante.fr")
        .hostname(SERVER_NAME)
        .tls(server_files.clone())
        .require_client_cert(fingerprints)
        .main_cf("smtpd_sasl_auth_enable = yes")
        .main_cf("smtpd_sasl_type = dovecot")
        .main_cf(format!("smtpd_sasl_path = inet:127.0.0.1:{auth_port}"))
        .main_cf("local_transport = discard:bench")
        .main_cf("message_size_limit = 20971520")
        .start()?;
    Ok((dovecot, sink))
}

/// A Postfix relay to the sink (the ORG AUTH_CLI certificate and the BAL's SASL
/// credentials), holding what it receives until [`release_relay`]. Blocking.
pub(crate) fn start_relay(
    dir: &Path,
    pki_dir: &Path,
    server_files: &TlsFiles,
    sink: &Postfix,
) -> anyhow::Result<Postfix> {
    let relay_conf = dir.join("relay-sasl");
    std::fs::write(
        &relay_conf,
        format!("[127.0.0.1]:{} {BAL}:{PASSWORD}\n", sink.smtp_addr().port()),
    )?;
    Ok(Postfix::builder()
        .domain("relay.bench")
        .main_cf("mynetworks = 127.0.0.0/8")
        .main_cf(format!(
            "relayhost = [127.0.0.1]:{}",
            sink.smtp_addr().port()
        ))
        .main_cf("default_transport = smtp")
        .main_cf("relay_transport = smtp")
        .main_cf("defer_transports = smtp")
        .main_cf("smtp_tls_security_level = encrypt")
        .main_cf(format!(
            "smtp_tls_cert_file = {}",
            pki_dir
                .join(format!("chain-{}.pem", names::ORG_AUTH_CLI))
                .display()
        ))
        .main_cf(format!(
            "smtp_tls_key_file = {}",
            pki_dir
                .join(format!("{}.key.pem", names::ORG_AUTH_CLI))
                .display()
        ))
        .main_cf(format!("smtp_tls_CAfile = {}", server_files.ca.display()))
        .main_cf("smtp_sasl_auth_enable = yes")
        .main_cf("smtp_sasl_security_options = noanonymous")
        .main_cf(format!(
            "smtp_sasl_password_maps = texthash:{}",
            relay_conf.display()
        ))
        .main_cf("message_size_limit = 20971520")
        .start()?)
}

/// Lets the relay deliver what it holds, now. Blocking.
pub(crate) fn release_relay(relay: &Postfix) -> anyhow::Result<()> {
    postfix_cmd(relay.config_dir(), &["-e", "defer_transports="], "postconf")?;
    postfix_cmd(relay.config_dir(), &["reload"], "postfix")?;
    postfix_cmd(relay.config_dir(), &["-f"], "postqueue")
}

/// Puts the messages in an outbox, for the BAL named `app`.
pub(crate) async fn fill_outbox(
    queue: &Queue<passerelle_queue::SqliteStore>,
) -> anyhow::Result<()> {
    for i in 0..MESSAGES {
        let envelope = OutboxEnvelope {
            bal: "app".into(),
            from: BAL.into(),
            recipients: vec![TO.into()],
            sender_mailbox: "bench@cabinet.local".into(),
            message_id: format!("<p1-{i}@bench>"),
            eight_bit: false,
        };
        queue
            .enqueue(NewItem::new(
                outbox::kind_for("app"),
                format!("p1-{i}"),
                outbox::encode(&envelope, &message(i)),
            ))
            .await?;
    }
    Ok(())
}

/// Submits the messages to the relay with 8 sessions (they stay deferred).
pub(crate) async fn fill_relay(addr: SocketAddr) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        tasks.spawn(async move {
            let mut config = ClientConfig::new("bench");
            config.require_tls = false;
            let mut client = SmtpClient::connect(addr, config).await?;
            let envelope = Envelope {
                mail_from: MailFrom {
                    address: BAL.into(),
                    size: None,
                    eight_bit: false,
                },
                recipients: vec![TO.into()],
            };
            for i in (lane..MESSAGES).step_by(8) {
                let d = client.send(&envelope, &message(i)).await?;
                ensure!(d.recipients[0].delivered(), "{d:?}");
            }
            client.quit().await?;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

fn tls_setup(pki: &TestPki) -> anyhow::Result<TlsSetup> {
    let chain = |name: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        Ok(pki
            .chain(name)?
            .iter()
            .filter(|c| c.issuer().is_some())
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect())
    };
    let key = |name: &str| -> anyhow::Result<PrivateKeyDer<'static>> {
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            pki.cert(name)?.key().pkcs8_der().to_vec(),
        )))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let listener = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain(names::SERVER_A)?, key(names::SERVER_A)?)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(
        pki.cert(names::ACR_EL)?.der().to_vec(),
    ))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key(names::ORG_AUTH_CLI)?)?;
    let resolver = Arc::new(FixedCert(Arc::new(rustls::sign::CertifiedKey::new(
        chain(names::ORG_AUTH_CLI)?,
        signing,
    ))));
    let upstream = Arc::new(passerelle_trust::mssante_client_config(
        resolver,
        verifier,
        passerelle_trust::TlsOptions::default(),
    )?);
    Ok(TlsSetup {
        listener: Arc::new(listener),
        upstream: [("app".to_owned(), Arc::clone(&upstream))].into(),
        https: upstream,
    })
}

fn practice_config(
    sink: SocketAddr,
    secret: &Path,
    lmtp: SocketAddr,
) -> anyhow::Result<PracticeMailConfig> {
    let salt = SaltString::encode_b64(b"bench-salt-16byt").map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(b"unused", &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    Ok(PracticeMailConfig {
        listen: "127.0.0.1:0".parse()?,
        hostname: "passerelle.bench".into(),
        device_key_label: "device".into(),
        x_mss_nil: "PASSERELLE/BENCH/1".into(),
        server_profile: "mssante-server".into(),
        accounts: vec![LocalAccount {
            user: "bench".into(),
            password_hash: hash,
            mailbox: "bench@cabinet.local".into(),
            bals: vec!["app".into()],
        }],
        bals: vec![BalConfig {
            name: "app".into(),
            address: BAL.into(),
            kind: BalKind::App,
            client_key_label: None,
            password_file: Some(secret.to_owned()),
            submission: Some(Endpoint {
                host: SERVER_NAME.into(),
                port: sink.port(),
                address: Some(sink),
            }),
            connections: 8,
        }],
        limits: Limits::default(),
        dsn_lmtp: lmtp,
        dns: DnsConfig::default(),
        delivery: DeliveryConfig::default(),
    })
}

#[derive(Debug)]
struct NoTokens;

impl passerelle_api_lps::AccessTokens for NoTokens {
    fn token<'a>(&'a self, _bal: &'a str) -> passerelle_api_lps::TokenFuture<'a> {
        Box::pin(async {
            Err(passerelle_api_lps::TokenError::ReauthRequired(
                "no PSC in the bench".into(),
            ))
        })
    }
    fn evict<'a>(&'a self, _bal: &'a str) -> passerelle_api_lps::EvictFuture<'a> {
        Box::pin(async {})
    }
}

/// The ORG AUTH_CLI certificate with its software key.
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedCert {
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
