//! The mirror against real peers: a harness Dovecot as the operator's IMAP front
//! (STARTTLS, XOAUTH2 introspected at the fake PSC), the fault proxy between, a second
//! Dovecot as the appliance's local mailbox (IMAP APPEND in as its master user, counted in
//! its maildir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use passerelle_fake_psc::FakePsc;
use passerelle_fake_psc::env::{OPERATOR_NAME, TestEnv, secret_file};
use passerelle_faultproxy::FaultProxy;
use passerelle_harness::Dovecot;
use passerelle_imap_mirror::{Counters, MirrorConfig, run_mirror};
use passerelle_keystore::{KeyAlgorithm, Keystore};
use passerelle_psc::{Psc, PscConfig};
use passerelle_queue::{Queue, QueueConfig};
use tokio_util::sync::CancellationToken;

const BAL: &str = "jean.dupond@medecin.mssante.fr";
const LOCAL: &str = "medecin@cabinet.local";

/// The appliance's local Dovecot with the mirror's master user, and the `[mirror]` lines
/// that reach it.
fn local_store(dir: &std::path::Path) -> anyhow::Result<(Dovecot, String)> {
    let local = Dovecot::builder()
        .user(LOCAL, "local-password")
        .master_user("passerelle", "mot-de-passe-maitre")
        .start()?;
    let password = secret_file(dir, "dovecot-master", "mot-de-passe-maitre")?;
    let lines = format!(
        "local_imap = '{}'\nlocal_master_user = 'passerelle'\nlocal_master_password_file = '{}'\n",
        local.imap_addr(),
        password.display()
    );
    Ok((local, lines))
}

struct World {
    env: TestEnv,
    fake: FakePsc,
    psc: Psc,
    operator: Dovecot,
    local: Dovecot,
    local_lines: String,
    proxy: FaultProxy,
}

async fn world() -> anyhow::Result<World> {
    let env = TestEnv::new()?;
    let fake = FakePsc::start(&env.pki).await?;
    let keystore = Keystore::open(&env.keystore).await?;
    keystore
        .generate("psc-store", KeyAlgorithm::Rsa2048)
        .await?;
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
            store_file: env.dir.path().join("psc.json"),
            store_key_label: "psc-store".to_owned(),
            refresh_margin: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        },
        Arc::clone(&env.trust),
        &keystore,
    )
    .await?;
    psc.set_refresh_token(BAL, &fake.login(BAL, "899700218896"))
        .await?;
    let operator = Dovecot::builder()
        .tls(env.operator_tls())
        .user(BAL, "unused-password")
        .extra_config(env.dovecot_oauth2(&fake)?)
        .start()?;
    let (local, local_lines) = local_store(env.dir.path())?;
    let proxy = FaultProxy::start(operator.imap_addr()).await?;
    Ok(World {
        env,
        fake,
        psc,
        operator,
        local,
        local_lines,
        proxy,
    })
}

fn mirror_config(w: &World, idle: Duration, delete: bool) -> anyhow::Result<MirrorConfig> {
    let text = format!(
        "state_db = '{}'\n{}idle_reissue = '{}ms'\nreconnect_min = '100ms'\nreconnect_max = '1s'\ntimeout = '10s'\n\
         [[bals]]\nbal = '{BAL}'\nauth = {{ method = 'xoauth2' }}\nimap_host = '{OPERATOR_NAME}'\nimap_addr = '{}'\n\
         local_user = '{LOCAL}'\ndelete_after_mirror = {delete}\n",
        w.env.dir.path().join("mirror.db").display(),
        w.local_lines,
        idle.as_millis(),
        w.proxy.local_addr(),
    );
    Ok(toml::from_str(&text)?)
}

struct Running {
    counters: Arc<Counters>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), passerelle_imap_mirror::MirrorError>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

async fn start(w: &World, config: MirrorConfig) -> anyhow::Result<Running> {
    let queue = Queue::open_sqlite(w.env.dir.path().join("inbox"), QueueConfig::default()).await?;
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_mirror(
        config,
        queue,
        Some(w.psc.clone()),
        Arc::clone(&w.env.trust),
        None,
        Arc::clone(&counters),
        stop.clone(),
    ));
    Ok(Running {
        counters,
        stop,
        task,
    })
}

fn message(n: usize) -> String {
    format!(
        "From: <secretariat@clinique.mssante.fr>\r\nTo: <{BAL}>\r\nSubject: compte rendu {n}\r\n\
         Message-ID: <cr-{n}@clinique.mssante.fr>\r\n\r\nCompte rendu numero {n}.\r\n"
    )
}

fn inject(w: &World, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    for n in range {
        w.operator
            .deliver("secretariat@clinique.mssante.fr", BAL, &message(n))?;
    }
    Ok(())
}

/// Polls `what` until it returns `want` or the deadline passes.
async fn wait_for(
    deadline: Duration,
    mut what: impl FnMut() -> anyhow::Result<usize>,
    want: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let n = what()?;
        if n == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            bail!("{n} instead of {want} after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_0700_mirror_delivers_each_message_once_and_idle_brings_new_mail()
-> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..3)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), false)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        3,
    )
    .await
    .with_context(|| w.operator.log_tail(30))?;

    // New mail while the session IDLEs arrives within a couple of seconds.
    inject(&w, 3..4)?;
    let took = wait_for(
        Duration::from_secs(3),
        || Ok(w.local.inbox_count(LOCAL)?),
        4,
    )
    .await?;
    ensure!(took < Duration::from_secs(3), "IDLE latency {took:?}");

    // Exactly once, and left on the operator (deletion is off by default).
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(w.local.inbox_count(LOCAL)? == 4);
    ensure!(w.operator.inbox_count(BAL)? == 4);
    ensure!(run.counters.sessions() == 1);
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ref2_1_10_server_ended_session_reconnects() -> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..2)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), false)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        2,
    )
    .await?;

    // The operator ends the session (15 min idle / 4 h in production).
    w.proxy.cut_all();
    let counters = Arc::clone(&run.counters);
    wait_for(
        Duration::from_secs(10),
        || Ok(usize::from(counters.sessions() >= 2)),
        1,
    )
    .await
    .context("no new session after the cut")?;
    inject(&w, 2..4)?;
    wait_for(
        Duration::from_secs(5),
        || Ok(w.local.inbox_count(LOCAL)?),
        4,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        w.local.inbox_count(LOCAL)? == 4,
        "duplicates after reconnect"
    );
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_1000_idle_is_reissued_before_the_server_cut() -> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..1)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(1), false)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        1,
    )
    .await?;

    // The operator's rule, scaled down: a session silent for 3 s is cut.
    let cut_after = Duration::from_secs(3);
    let mut last = w.proxy.counters().bytes_to_upstream;
    let mut quiet_since = Instant::now();
    let mut cuts = 0;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        let now = w.proxy.counters().bytes_to_upstream;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= cut_after {
            w.proxy.cut_all();
            cuts += 1;
            quiet_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(cuts == 0, "the client stayed silent for {cut_after:?}");
    ensure!(run.counters.sessions() == 1, "the session was never cut");
    ensure!(
        run.counters.idle_reissued() >= 5,
        "IDLE re-issued {} times",
        run.counters.idle_reissued()
    );
    inject(&w, 1..2)?;
    wait_for(
        Duration::from_secs(3),
        || Ok(w.local.inbox_count(LOCAL)?),
        2,
    )
    .await?;
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_02_delete_after_mirror_only_once_delivered_locally() -> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..5)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), true)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        5,
    )
    .await?;
    wait_for(
        Duration::from_secs(10),
        || Ok(w.operator.inbox_count(BAL)?),
        0,
    )
    .await
    .context("operator copies not expunged")?;
    inject(&w, 5..6)?;
    wait_for(
        Duration::from_secs(5),
        || Ok(w.local.inbox_count(LOCAL)?),
        6,
    )
    .await?;
    wait_for(
        Duration::from_secs(10),
        || Ok(w.operator.inbox_count(BAL)?),
        0,
    )
    .await?;
    ensure!(w.local.inbox_count(LOCAL)? == 6);
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_03_uidvalidity_change_remirrors_without_duplicates() -> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..3)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), false)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        3,
    )
    .await?;
    run.stop().await?;

    // The operator rebuilds the mailbox: new UIDVALIDITY, new UIDs, same messages.
    tokio::time::sleep(Duration::from_millis(1100)).await; // UIDVALIDITY is a Unix time
    let maildir = w.operator.maildir(BAL);
    let before = uidvalidity(&maildir)?;
    for entry in std::fs::read_dir(&maildir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("dovecot") {
            std::fs::remove_file(&path)?;
        }
    }
    inject(&w, 3..4)?;
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), false)?).await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        4,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        uidvalidity(&maildir)? != before,
        "UIDVALIDITY did not change"
    );
    ensure!(
        w.local.inbox_count(LOCAL)? == 4,
        "re-mirror duplicated messages"
    );
    ensure!(
        run.counters.mirrored() == 1,
        "only the new message is enqueued"
    );
    run.stop().await
}

/// The `V` field of Dovecot's maildir uidlist header.
fn uidvalidity(maildir: &std::path::Path) -> anyhow::Result<String> {
    let list = std::fs::read_to_string(maildir.join("dovecot-uidlist"))?;
    list.split_whitespace()
        .find_map(|f| f.strip_prefix('V'))
        .map(str::to_owned)
        .context("no V in dovecot-uidlist")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_0710_refused_token_is_evicted_retried_once_then_reauth_required()
-> anyhow::Result<()> {
    let w = world().await?;
    inject(&w, 0..1)?;
    w.fake.set_introspection_refuses(true);
    let run = start(&w, mirror_config(&w, Duration::from_secs(600), false)?).await?;
    let psc = w.psc.clone();
    wait_for(
        Duration::from_secs(30),
        || {
            Ok(usize::from(matches!(
                psc.session(BAL),
                Some(passerelle_psc::SessionState::ReauthRequired { .. })
            )))
        },
        1,
    )
    .await
    .context("BAL never marked re-auth required")?;
    // One refresh for the first attempt, one after the eviction, none in a loop after.
    ensure!(
        w.fake.token_requests() == 2,
        "{} refreshes",
        w.fake.token_requests()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(w.fake.token_requests() == 2, "no retry loop against PSC");
    ensure!(w.local.inbox_count(LOCAL)? == 0 && w.operator.inbox_count(BAL)? == 1);

    // OA-07: the practitioner logs in again; the mirror resumes by itself.
    w.fake.set_introspection_refuses(false);
    w.psc
        .set_refresh_token(BAL, &w.fake.login(BAL, "899700218896"))
        .await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        1,
    )
    .await?;
    run.stop().await
}

const APP_BAL: &str = "cabinet.app@medecin.mssante.fr";

/// An applicative BAL at a Dovecot operator front: the structure's ORG AUTH_CLI key in the
/// token, certified by the IGC-Santé ORG CA, and the mirror's configuration for it.
struct AppWorld {
    env: TestEnv,
    keystore: Keystore,
    operator: Dovecot,
    local: Dovecot,
    config: MirrorConfig,
}

async fn app_world() -> anyhow::Result<AppWorld> {
    let env = TestEnv::new()?;
    let keystore = Keystore::open(&env.keystore).await?;
    let key = passerelle_keystore::KeyRef::from("org-auth-cli");
    keystore
        .generate("org-auth-cli", KeyAlgorithm::Rsa2048)
        .await?;
    let csr = keystore
        .csr(
            &key,
            &passerelle_keystore::Subject::OrgAuthCli {
                id_nat_struct: "318751275100020".to_owned(),
                organization: "CABINET MEDICAL DU PARC".to_owned(),
                department: passerelle_keystore::Department {
                    name: "Paris".to_owned(),
                    code: "75".to_owned(),
                },
            },
        )
        .await?;
    let cert = issue_org_auth_cli(&env, &csr)?;
    keystore.import_certificate(&key, &cert).await?;

    let operator = Dovecot::builder()
        .tls(env.operator_tls())
        .client_cert_auth(true)
        // EX_LPS_1200 step 3: the BAL comes from the PLAIN login, not from the
        // certificate (whose OU names the structure); the certificate stays required.
        .extra_config("auth_ssl_username_from_cert = no")
        .user(APP_BAL, "mot-de-passe-operateur")
        .start()?;
    let (local, local_lines) = local_store(env.dir.path())?;
    let password = secret_file(env.dir.path(), "app.password", "mot-de-passe-operateur")?;
    let config: MirrorConfig = toml::from_str(&format!(
        "state_db = '{}'\n{local_lines}reconnect_min = '100ms'\n\
         [[bals]]\nbal = '{APP_BAL}'\nimap_host = '{OPERATOR_NAME}'\nimap_addr = '{}'\nlocal_user = '{LOCAL}'\n\
         auth = {{ method = 'certificate', key_label = 'org-auth-cli', password_file = '{}' }}\n",
        env.dir.path().join("mirror.db").display(),
        operator.imap_addr(),
        password.display(),
    ))?;
    Ok(AppWorld {
        env,
        keystore,
        operator,
        local,
        config,
    })
}

impl AppWorld {
    async fn start(&self) -> anyhow::Result<Running> {
        let queue =
            Queue::open_sqlite(self.env.dir.path().join("inbox"), QueueConfig::default()).await?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_mirror(
            self.config.clone(),
            queue,
            None,
            Arc::clone(&self.env.trust),
            Some(self.keystore.clone()),
            Arc::clone(&counters),
            stop.clone(),
        ));
        Ok(Running {
            counters,
            stop,
            task,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_lps_1200_app_bal_mirrors_with_the_org_auth_cli_certificate_and_plain()
-> anyhow::Result<()> {
    let w = app_world().await?;
    w.operator
        .deliver("secretariat@clinique.mssante.fr", APP_BAL, &message(1))?;
    let running = w.start().await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        1,
    )
    .await
    .with_context(|| w.operator.log_tail(30))?;
    w.operator
        .deliver("secretariat@clinique.mssante.fr", APP_BAL, &message(2))?;
    wait_for(
        Duration::from_secs(5),
        || Ok(w.local.inbox_count(LOCAL)?),
        2,
    )
    .await?;
    running.stop.cancel();
    running.task.await??;
    Ok(())
}

/// A mailbox-full DSN and an automatic reply reaching an applicative BAL are recorded as
/// notices naming the full mailbox / absent correspondent and the BAL's message they are
/// about; ordinary mail is not a notice; every message is still delivered locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_gbm_4430_app_bal_records_mailbox_full_and_out_of_office_notices() -> anyhow::Result<()>
{
    let w = app_world().await?;
    let dsn = "From: MAILER-DAEMON@operateur.mssante.fr\r\nTo: <cabinet.app@medecin.mssante.fr>\r\n\
               Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
               Message-ID: <dsn-1@operateur.mssante.fr>\r\n\
               Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
               --b1\r\nContent-Type: text/plain\r\n\r\nMailbox full.\r\n\
               --b1\r\nContent-Type: message/delivery-status\r\n\r\n\
               Reporting-MTA: dns; mx.operateur.mssante.fr\r\n\r\n\
               Final-Recipient: rfc822; dr.plein@medecin.mssante.fr\r\n\
               Action: failed\r\nStatus: 5.2.2\r\n\r\n\
               --b1\r\nContent-Type: text/rfc822-headers\r\n\r\n\
               From: cabinet.app@medecin.mssante.fr\r\nMessage-ID: <resultat-42@medecin.mssante.fr>\r\n\r\n\
               --b1--\r\n";
    let vacation = "From: Dr Absent <dr.absent@medecin.mssante.fr>\r\nTo: <cabinet.app@medecin.mssante.fr>\r\n\
                    Auto-Submitted: auto-replied (vacation)\r\nIn-Reply-To: <resultat-7@medecin.mssante.fr>\r\n\
                    Message-ID: <auto-1@medecin.mssante.fr>\r\nSubject: Absence\r\n\r\nAbsent.\r\n";
    w.operator.deliver("", APP_BAL, dsn)?;
    w.operator
        .deliver("dr.absent@medecin.mssante.fr", APP_BAL, vacation)?;
    w.operator
        .deliver("secretariat@clinique.mssante.fr", APP_BAL, &message(1))?;
    let running = w.start().await?;
    wait_for(
        Duration::from_secs(20),
        || Ok(w.local.inbox_count(LOCAL)?),
        3,
    )
    .await
    .with_context(|| w.operator.log_tail(30))?;
    let counters = Arc::clone(&running.counters);
    wait_for(
        Duration::from_secs(5),
        || Ok(usize::try_from(counters.notices())?),
        2,
    )
    .await?;
    running.stop.cancel();
    running.task.await??;

    let mut notices = passerelle_imap_mirror::notices(&w.config.state_db, 10).await?;
    notices.sort_by(|a, b| a.kind.cmp(&b.kind));
    ensure!(notices.len() == 2, "{notices:?}");
    let (full, away) = (&notices[0], &notices[1]);
    ensure!(
        full.bal == APP_BAL && full.kind == "mailbox-full",
        "{full:?}"
    );
    ensure!(full.address == "dr.plein@medecin.mssante.fr", "{full:?}");
    ensure!(full.status.as_deref() == Some("5.2.2"), "{full:?}");
    ensure!(
        full.original_message_id.as_deref() == Some("resultat-42@medecin.mssante.fr"),
        "{full:?}"
    );
    ensure!(away.kind == "out-of-office", "{away:?}");
    ensure!(away.address == "dr.absent@medecin.mssante.fr", "{away:?}");
    ensure!(
        away.original_message_id.as_deref() == Some("resultat-7@medecin.mssante.fr"),
        "{away:?}"
    );
    Ok(())
}

/// The ORG AUTH_CLI certificate for `csr_pem`, signed by the test PKI's ORG CA.
fn issue_org_auth_cli(env: &TestEnv, csr_pem: &str) -> anyhow::Result<std::path::PathBuf> {
    let cert = env.dir.path().join("org.crt.pem");
    passerelle_testpki::openssl_issue(
        &env.pki_path(""),
        passerelle_testpki::names::ACI_EL_ORG,
        csr_pem,
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n",
        0x4f52_4731,
        &cert,
    )?;
    Ok(cert)
}
