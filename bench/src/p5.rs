//! P5: mirror of a 5 000-message BAL from a real Dovecot (the operator's IMAP front,
//! STARTTLS) into the appliance, passerelle's mirror (XOAUTH2 through the fake PSC, each
//! batch fsynced into the inbox queue, then saved by IMAP MULTIAPPEND into a local Dovecot,
//! acked) against `mbsync` (isync, STARTTLS + PLAIN, pulling the same mailbox into a
//! Maildir with its default fsync). Throughput in messages/s from start until the last
//! message is durable locally (ours: Dovecot's `OK` to the last APPEND; mbsync: until it
//! exits). Two lines: the local Dovecot in maildir, mbsync's own format (one file and one
//! fsync per message: like for like), then in mdbox (one sync per APPEND).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use passerelle_fake_psc::FakePsc;
use passerelle_fake_psc::env::{OPERATOR_NAME, TestEnv, secret_file};
use passerelle_harness::Dovecot;
use passerelle_imap_mirror::{Counters, MirrorConfig, run_mirror};
use passerelle_keystore::{KeyAlgorithm, Keystore};
use passerelle_psc::{Psc, PscConfig};
use passerelle_queue::{Queue, QueueConfig};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 5_000;
const BAL: &str = "bench@medecin.mssante.fr";
const PASSWORD: &str = "bench-password";
const LOCAL: &str = "medecin@cabinet.local";

fn message(n: usize) -> String {
    let body = "Compte rendu de consultation, texte de quelques lignes.\r\n".repeat(30);
    format!(
        "From: <secretariat@clinique.mssante.fr>\r\nTo: <{BAL}>\r\nSubject: cr {n}\r\n\
         Message-ID: <p5-{n}@clinique.mssante.fr>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n{body}"
    )
}

/// Fills the operator's maildir directly (LMTP for 5 000 messages would dominate setup):
/// one LMTP delivery creates the maildir, the rest are written into `new/` as Dovecot's
/// own deliveries would be, owned by the mail user.
fn fill(operator: &Dovecot) -> anyhow::Result<()> {
    operator.deliver("secretariat@clinique.mssante.fr", BAL, &message(0))?;
    let maildir = operator.maildir(BAL);
    let owner = std::fs::metadata(&maildir)?;
    let new = maildir.join("new");
    for n in 1..MESSAGES {
        let path = new.join(format!("1700000000.P5Q{n}.bench"));
        std::fs::write(&path, message(n))?;
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))?;
    }
    ensure!(operator.inbox_count(BAL)? == MESSAGES);
    Ok(())
}

fn mbsync(dir: &Path, operator: &Dovecot, cert: &Path) -> anyhow::Result<Duration> {
    let store = dir.join("mbsync-store");
    std::fs::create_dir_all(&store)?;
    let conf = dir.join("mbsyncrc");
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount op\nHost 127.0.0.1\nPort {}\nUser {BAL}\nPass {PASSWORD}\nSSLType STARTTLS\n\
             CertificateFile {}\nAuthMechs PLAIN\n\n\
             IMAPStore op-remote\nAccount op\n\n\
             MaildirStore local\nPath {}/\nInbox {}/INBOX\n\n\
             Channel c\nFar :op-remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n",
            operator.imap_addr().port(),
            cert.display(),
            store.display(),
            store.display(),
        ),
    )?;
    let start = Instant::now();
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(&conf)
        .arg("-q")
        .arg("c")
        .output()
        .context("mbsync (apt-get install -y isync)")?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "mbsync: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    for sub in ["new", "cur"] {
        n += std::fs::read_dir(store.join("INBOX").join(sub))?.count();
    }
    ensure!(n == MESSAGES, "mbsync mirrored {n} of {MESSAGES}");
    Ok(took)
}

async fn ours(
    env: &TestEnv,
    operator: &Dovecot,
    fake: &FakePsc,
    mdbox: bool,
) -> anyhow::Result<Duration> {
    let name = if mdbox { "ours-mdbox" } else { "ours-maildir" };
    let run = env.dir.path().join(name);
    let store_key = format!("psc-store-{name}");
    std::fs::create_dir(&run)?;
    let keystore = Keystore::open(&env.keystore).await?;
    keystore.generate(&store_key, KeyAlgorithm::Rsa2048).await?;
    let psc = Psc::open(
        &PscConfig {
            token_url: fake.token_url(),
            client_id: passerelle_fake_psc::CLIENT_ID.to_owned(),
            client_secret_file: secret_file(
                env.dir.path(),
                "psc.secret",
                passerelle_fake_psc::CLIENT_SECRET,
            )?,
            https_profile: "mssante-server".to_owned(),
            store_file: run.join("psc.json"),
            store_key_label: store_key.clone(),
            refresh_margin: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        },
        Arc::clone(&env.trust),
        &keystore,
    )
    .await?;
    psc.set_refresh_token(BAL, &fake.login(BAL, "899700218896"))
        .await?;
    let local = Dovecot::builder()
        .user(LOCAL, "local-password")
        .master_user("passerelle", "bench-master")
        .mdbox(mdbox)
        .start()?;
    let master = secret_file(&run, "dovecot-master", "bench-master")?;
    let config: MirrorConfig = toml::from_str(&format!(
        "state_db = '{}'\nlocal_imap = '{}'\nlocal_master_user = 'passerelle'\n\
         local_master_password_file = '{}'\n\
         [[bals]]\nbal = '{BAL}'\nauth = {{ method = 'xoauth2' }}\nimap_host = '{OPERATOR_NAME}'\n\
         imap_addr = '{}'\nlocal_user = '{LOCAL}'\n",
        run.join("mirror.db").display(),
        local.imap_addr(),
        master.display(),
        operator.imap_addr(),
    ))?;
    let queue = Queue::open_sqlite(run.join("inbox"), QueueConfig::default()).await?;
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(run_mirror(
        config,
        queue,
        Some(psc),
        Arc::clone(&env.trust),
        None,
        Arc::clone(&counters),
        stop.clone(),
    ));
    // The counter moves when Dovecot has answered OK to an APPEND: the messages are
    // durable in the local mailbox then.
    while counters.delivered() < MESSAGES as u64 {
        ensure!(
            start.elapsed() < Duration::from_secs(600),
            "mirror stalled at {}",
            counters.delivered()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    stop.cancel();
    task.await??;
    keystore.close().await;
    let held = local.inbox_count(LOCAL)?;
    ensure!(
        held == MESSAGES,
        "the local mailbox holds {held} of {MESSAGES}"
    );
    Ok(took)
}

pub fn run() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fake = runtime.block_on(FakePsc::start(&env.pki))?;
    let operator = Dovecot::builder()
        .tls(env.operator_tls())
        .user(BAL, PASSWORD)
        .extra_config(env.dovecot_oauth2(&fake)?)
        .start()?;
    fill(&operator)?;
    let cert = env.pki_path(&format!("{}.crt.pem", passerelle_testpki::names::SERVER_A));
    // mbsync first: it also makes Dovecot index the maildir, which ours then finds ready.
    let anchor = mbsync(env.dir.path(), &operator, &cert)?;
    let maildir = runtime.block_on(ours(&env, &operator, &fake, false))?;
    let mdbox = runtime.block_on(ours(&env, &operator, &fake, true))?;
    #[allow(clippy::cast_precision_loss)] // 5 000 is exact in f64
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
    let a = rate(anchor);
    for (what, took) in [("", maildir), ("-local-mdbox", mdbox)] {
        let o = rate(took);
        println!(
            "BENCH P5 imap-mirror-{MESSAGES}{what} ours={o:.0} anchor={a:.0} unit=msg/s ratio={:.2}",
            o / a
        );
    }
    Ok(())
}
