//! P2: LAN submission latency, p99 over 50 concurrent clients, passerelle's submission
//! listener (STARTTLS, AUTH PLAIN, MSSanté policy, `250` after the outbox commit with
//! `synchronous=FULL`) against Postfix's smtpd (STARTTLS, `250` after cleanup's fsync of
//! the queue file) on the same machine. Each client keeps one session and sends 40 messages
//! of 10 KB; the latency of a message is MAIL FROM to the final reply. The operator is
//! unreachable for passerelle and Postfix discards after queueing, so only acceptance is
//! measured. Goal: ratio ≤ 1.0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHasher as _, SaltString};
use passerelle_api_lps::autoconfig::Autoconfig;
use passerelle_api_lps::{
    BalConfig, BalKind, DeliveryConfig, DnsConfig, Endpoint, Limits, LocalAccount, PracticeMail,
    PracticeMailConfig, TlsSetup,
};
use passerelle_harness::{Postfix, TlsFiles};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_smtp::{ClientConfig, Envelope, MailFrom, SmtpClient};
use passerelle_testpki::{PkiOptions, TestPki, names};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const CLIENTS: usize = 50;
const PER_CLIENT: usize = 40;
const BODY: usize = 10 * 1024;
const SERVER_NAME: &str = "mail.operateur-a.mssante.fr";
const TO: &str = "dr.house@medecin.mssante.fr";
const FROM: &str = "secretariat@cabinet.medecin.mssante.fr";

pub fn run() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(p2())
}

struct Side {
    addr: SocketAddr,
    auth: Option<(&'static str, &'static str)>,
}

async fn p2() -> anyhow::Result<()> {
    let pki = TestPki::generate(&PkiOptions::new(2))?;
    let root = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .to_owned();
    let dir = tempfile::tempdir_in(root)?;
    pki.write_to(&dir.path().join("pki"))?;
    let chain: Vec<CertificateDer<'static>> = pki
        .chain(names::SERVER_A)?
        .iter()
        .filter(|c| c.issuer().is_some())
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pki.cert(names::SERVER_A)?.key().pkcs8_der().to_vec(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let listener = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(
        pki.cert(names::ACR_EL)?.der().to_vec(),
    ))?;
    let client_tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    // Ours: the operator is unreachable, the outbox only fills.
    let salt = SaltString::encode_b64(b"bench-salt-16byt").map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(b"bench-pw", &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let config = practice_config(hash)?;
    let queue =
        Arc::new(Queue::open_sqlite(dir.path().join("queue"), QueueConfig::default()).await?);
    let tls = TlsSetup {
        listener: Arc::new(listener),
        upstream: [("app".to_owned(), Arc::clone(&client_tls))].into(),
        https: Arc::clone(&client_tls),
    };
    let autoconfig = Autoconfig::new(&DnsConfig::default(), Arc::clone(&client_tls))?;
    let ours = PracticeMail::start(&config, queue, tls, Arc::new(NoTokens), autoconfig).await?;
    let ours_p99 = p99(
        &Side {
            addr: ours.local_addr(),
            auth: Some(("bench", "bench-pw")),
        },
        &client_tls,
    )
    .await?;
    ours.shutdown().await;

    // Anchor: Postfix's smtpd with the same certificate; queued mail is discarded.
    let pki_dir = dir.path().join("pki");
    let postfix = tokio::task::block_in_place(|| {
        Postfix::builder()
            .domain("medecin.mssante.fr")
            .hostname(SERVER_NAME)
            .tls(TlsFiles {
                cert: pki_dir.join(format!("chain-{}.pem", names::SERVER_A)),
                key: pki_dir.join(format!("{}.key.pem", names::SERVER_A)),
                ca: pki_dir.join(format!("anchors/{}-bundle.pem", names::ACR_EL)),
            })
            .main_cf("local_transport = discard:bench")
            .start()
    })?;
    let anchor_p99 = p99(
        &Side {
            addr: postfix.smtp_addr(),
            auth: None,
        },
        &client_tls,
    )
    .await?;
    println!(
        "BENCH P2 submission-p99-50-clients ours={:.2} anchor={:.2} unit=ms ratio={:.2}",
        ms(ours_p99),
        ms(anchor_p99),
        ms(ours_p99) / ms(anchor_p99)
    );
    Ok(())
}

/// One APP BAL whose operator is unreachable: the outbox only fills.
fn practice_config(password_hash: String) -> anyhow::Result<PracticeMailConfig> {
    let nowhere: SocketAddr = "127.0.0.1:9".parse()?;
    Ok(PracticeMailConfig {
        listen: "127.0.0.1:0".parse()?,
        hostname: "passerelle.bench".into(),
        device_key_label: "device".into(),
        x_mss_nil: "PASSERELLE/BENCH/1".into(),
        server_profile: "mssante-server".into(),
        accounts: vec![LocalAccount {
            user: "bench".into(),
            password_hash,
            mailbox: "bench@cabinet.local".into(),
            bals: vec!["app".into()],
        }],
        bals: vec![BalConfig {
            name: "app".into(),
            address: FROM.into(),
            kind: BalKind::App,
            client_key_label: None,
            password_file: None,
            submission: Some(Endpoint {
                host: SERVER_NAME.into(),
                port: 9,
                address: Some(nowhere),
            }),
            connections: 1,
        }],
        limits: Limits::default(),
        dsn_lmtp: nowhere,
        dns: DnsConfig::default(),
        delivery: DeliveryConfig {
            probe_max: Duration::from_secs(600),
            ..DeliveryConfig::default()
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn p99(side: &Side, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<Duration> {
    let mut tasks = tokio::task::JoinSet::new();
    // Every session is set up (TLS, AUTH) before the first message: the figure is the
    // submission latency, not the 50 concurrent password checks of ours (Postfix's side
    // has no AUTH) nor the handshakes.
    let ready = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    for c in 0..CLIENTS {
        let (addr, auth, tls, ready) = (side.addr, side.auth, Arc::clone(tls), Arc::clone(&ready));
        tasks.spawn(async move {
            let mut client = SmtpClient::connect(addr, ClientConfig::new("lps.bench")).await?;
            client
                .starttls(tls, ServerName::try_from(SERVER_NAME)?)
                .await?;
            if let Some((user, pw)) = auth {
                client.auth_plain("", user, pw).await?;
            }
            ready.wait().await;
            let envelope = Envelope {
                mail_from: MailFrom {
                    address: FROM.into(),
                    size: None,
                    eight_bit: false,
                },
                recipients: vec![TO.into()],
            };
            let mut latencies = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let mut message = format!(
                    "From: {FROM}\r\nTo: {TO}\r\nSubject: bench\r\nMessage-ID: <p2-{c}-{i}@bench>\r\n\r\n"
                )
                .into_bytes();
                while message.len() < BODY {
                    message.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n");
                }
                let t0 = Instant::now();
                let d = client.send(&envelope, &message).await?;
                latencies.push(t0.elapsed());
                anyhow::ensure!(d.recipients[0].delivered(), "{d:?}");
            }
            client.quit().await?;
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(CLIENTS * PER_CLIENT);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort();
    let idx = (all.len() * 99).div_ceil(100).saturating_sub(1);
    all.get(idx).copied().context("no samples")
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
