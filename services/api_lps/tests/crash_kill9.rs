//! Crash and link faults: 2 000 messages submitted to a daemon process (submission listener
//! and delivery workers) that is SIGKILLed at random at least 200 times, while the fault proxy
//! between it and the operator's Postfix cuts links at random (mid-DATA among others).
//! Every message acknowledged with `250` reaches Dovecot; duplicates can only come from a
//! kill or a cut between the operator's `250` and the outbox ack, and are counted.
//!
//! The daemon is this very test re-executed (`--exact` on its own name) with
//! `CHILD_ENV` naming its configuration file (a `PracticeMailConfig` in TOML).

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{DOCTOR, Operator, Pki};
use passerelle_api_lps::autoconfig::Autoconfig;
use passerelle_api_lps::{PracticeMail, PracticeMailConfig, TlsSetup};
use passerelle_faultproxy::FaultProxy;
use passerelle_queue::Queue;
use passerelle_testpki::names;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CHILD_ENV: &str = "PASSERELLE_API_LPS_CRASH_CHILD";
const TEST_NAME: &str = "two_thousand_messages_survive_200_sigkills_and_link_cuts";
const MESSAGES: usize = 2000;
const KILLS: u32 = 200;

fn child_main(config_path: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = PathBuf::from(config_path)
            .parent()
            .expect("config dir")
            .to_owned();
        let text = std::fs::read_to_string(config_path).expect("config");
        let config: PracticeMailConfig = toml::from_str(&text).expect("config parses");
        let pki = dir.join("pki");
        let chain = |name: &str| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_file_iter(pki.join(format!("chain-{name}.pem")))
                .expect("chain")
                .collect::<Result<_, _>>()
                .expect("chain pem")
        };
        let key = |name: &str| {
            PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key.pem"))).expect("key")
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let listener = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain(names::SERVER_A), key(names::SERVER_A))
            .expect("listener tls");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                CertificateDer::from_pem_file(pki.join(format!("{}.crt.pem", names::ACR_EL)))
                    .expect("root"),
            )
            .expect("root");
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key(names::ORG_AUTH_CLI)).expect("key");
        let resolver = Arc::new(common::FixedCert::new(rustls::sign::CertifiedKey::new(
            chain(names::ORG_AUTH_CLI),
            signing,
        )));
        let upstream = Arc::new(
            passerelle_trust::mssante_client_config(
                resolver,
                verifier,
                passerelle_trust::TlsOptions::default(),
            )
            .expect("upstream tls"),
        );
        let queue = Arc::new(
            Queue::open_sqlite(dir.join("queue"), common::queue_config())
                .await
                .expect("queue"),
        );
        let tls = TlsSetup {
            listener: Arc::new(listener),
            upstream: [("app".to_owned(), Arc::clone(&upstream))].into(),
            https: Arc::clone(&upstream),
        };
        let autoconfig = Autoconfig::new(&config.dns, upstream).expect("autoconfig");
        let mail = PracticeMail::start(&config, queue, tls, Arc::new(common::NoTokens), autoconfig)
            .await
            .expect("start");
        println!("READY {}", mail.local_addr());
        std::future::pending::<()>().await;
    });
}

struct Daemon {
    child: Child,
    ready: mpsc::Receiver<SocketAddr>,
}

fn spawn(config: &Path, stderr: &Path) -> Daemon {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(CHILD_ENV, config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(stderr)
                .expect("stderr file"),
        )
        .spawn()
        .expect("spawn daemon");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("READY ") {
                let _ = tx.send(addr.parse().expect("READY address"));
            }
        }
    });
    Daemon { child, ready }
}

/// Submits messages in order, each until a `250`; returns when all are accepted.
async fn submitter(
    pki: Arc<Pki>,
    addr: tokio::sync::watch::Receiver<Option<SocketAddr>>,
    done: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut i = 0;
    let mut client = None;
    while i < MESSAGES {
        if client.is_none() {
            let Some(a) = *addr.borrow() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            client = common::lan_client(&pki, a).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        match common::submit(c, &format!("crash{i}"), &[DOCTOR]).await {
            Ok(d) if d.recipients[0].delivered() => {
                i += 1;
                done.store(i, std::sync::atomic::Ordering::SeqCst);
            }
            _ => client = None,
        }
    }
}

#[test]
fn two_thousand_messages_survive_200_sigkills_and_link_cuts() -> anyhow::Result<()> {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        child_main(&config);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(parent())
}

async fn parent() -> anyhow::Result<()> {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let pki = Pki::new()?;
    copy_dir(pki.dir.path(), &dir.path().join("pki"))?;
    let operator = Operator::start(&pki, vec![pki.org_auth_cli_fingerprint()?])?;
    let proxy = FaultProxy::start(operator.postfix.smtp_addr()).await?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let mut config = common::config(proxy.local_addr(), operator.dovecot.lmtp_addr(), &secret);
    config.delivery.lease = Duration::from_secs(3);
    config.delivery.command_timeout = Duration::from_secs(5);
    let config_path = dir.path().join("practice-mail.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let stderr = dir.path().join("daemon.stderr");

    let pki = Arc::new(pki);
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(None);
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submit = tokio::spawn(submitter(Arc::clone(&pki), addr_rx, Arc::clone(&accepted)));

    let began = Instant::now();
    let (mut kills, mut cuts) = (0_u32, 0_u32);
    let mut daemon = spawn(&config_path, &stderr);
    loop {
        let ready =
            tokio::task::block_in_place(|| daemon.ready.recv_timeout(Duration::from_secs(30)));
        match ready {
            Ok(a) => {
                addr_tx.send_replace(Some(a));
            }
            Err(_) => anyhow::bail!(
                "daemon never ready:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            ),
        }
        let all_in = accepted.load(std::sync::atomic::Ordering::SeqCst) >= MESSAGES;
        if kills >= KILLS && all_in {
            break;
        }
        // Random life span; some link cuts during it.
        let life = Duration::from_millis(rng.u64(30..250));
        let until = Instant::now() + life;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(rng.u64(5..60))).await;
            if rng.u8(..6) == 0 {
                proxy.cut_all();
                cuts += 1;
            }
        }
        if let Some(status) = daemon.child.try_wait()? {
            anyhow::bail!(
                "daemon exited by itself ({status}):\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        addr_tx.send_replace(None);
        daemon.child.kill()?;
        daemon.child.wait()?;
        kills += 1;
        daemon = spawn(&config_path, &stderr);
    }
    submit.await?;
    println!(
        "all {MESSAGES} accepted after {kills} kills and {cuts} link cuts ({:?})",
        began.elapsed()
    );
    // The last daemon drains the outbox. Wait for every distinct message, not for a count:
    // duplicates arrive too, so a count would stop waiting before the last ones are in.
    let deadline = Instant::now() + Duration::from_secs(600);
    let (texts, per_id, missing) = loop {
        let texts = operator.messages(DOCTOR)?;
        let per_id = count_ids(&texts);
        let missing: Vec<usize> = (0..MESSAGES)
            .filter(|i| !per_id.contains_key(&format!("<crash{i}@cabinet.local>")))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break (texts, per_id, missing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    println!(
        "stored {}, unique {}, lost {}, duplicates {duplicates} (kills {kills}, cuts {cuts})",
        texts.len(),
        per_id.len(),
        missing.len()
    );
    daemon.child.kill()?;
    daemon.child.wait()?;
    anyhow::ensure!(missing.is_empty(), "lost: {missing:?}");
    // Each kill or cut can interrupt at most one transaction per session between the
    // operator's 250 and the ack.
    let sessions = u32::try_from(config.bals[0].connections)?;
    anyhow::ensure!(
        duplicates <= usize::try_from((kills + cuts) * sessions)?,
        "{duplicates} duplicates for {kills} kills and {cuts} cuts"
    );
    Ok(())
}

/// How many stored copies each Message-ID has.
fn count_ids(texts: &[String]) -> HashMap<String, usize> {
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for t in texts {
        if let Some(id) = t
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        {
            *per_id.entry(id[11..].trim().to_owned()).or_default() += 1;
        }
    }
    per_id
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
