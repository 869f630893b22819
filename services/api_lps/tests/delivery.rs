//! Delivery through the API LPS to a real operator front: Postfix requiring the client
//! certificate (`permit_tls_clientcerts`) and AUTH PLAIN (checked by Dovecot), delivering by
//! LMTP into Dovecot; the fault proxy in between for outages and cuts.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{DOCTOR, DOCTOR2, LAN_MAILBOX, Operator, Pki, lan_client, submit};
use passerelle_api_lps::{BalState, outbox};
use passerelle_faultproxy::{FaultProxy, Mode};
use passerelle_harness::SoftHsm;
use passerelle_keystore::{
    Department, KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Subject, TokenCertResolver,
};
use passerelle_queue::{ItemState, ListFilter, Queue, SqliteStore};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until no item of the BAL's outbox is unsettled.
async fn drained(queue: &Queue<SqliteStore>, within: Duration) -> anyhow::Result<()> {
    let kind = outbox::kind_for("app");
    tokio::time::timeout(within, async {
        loop {
            if queue.next_due(&kind).await?.is_none() {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("outbox not drained in time")?
}

fn message_ids(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .filter_map(|t| {
            t.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(|l| l[11..].trim().to_owned())
        })
        .collect()
}

/// The appliance's ORG AUTH_CLI key generated in SoftHSM2, certified from a CSR signed in
/// the token by the test PKI's `aci-el-org` CA (openssl CLI).
async fn token_org_auth_cli(
    pki: &Pki,
    dir: &std::path::Path,
) -> anyhow::Result<(SoftHsm, Arc<TokenCertResolver>, String)> {
    let hsm = SoftHsm::builder().build()?;
    hsm.set_process_env();
    let pin_file = dir.join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin))?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    let ks = Keystore::open(&KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    })
    .await?;
    let key = KeyRef::from("org-auth-cli");
    ks.generate("org-auth-cli", KeyAlgorithm::Rsa2048).await?;
    let csr = ks
        .csr(
            &key,
            &Subject::OrgAuthCli {
                id_nat_struct: "318751275100020".into(),
                organization: "CABINET MEDICAL".into(),
                department: Department {
                    name: "Paris".into(),
                    code: "75".into(),
                },
            },
        )
        .await?;
    let cert = common::issue_org_auth_cli(pki, &csr)?;
    ks.import_certificate(&key, &cert).await?;
    let fingerprint = common::pem_fingerprint(&cert)?;
    let resolver = Arc::new(TokenCertResolver::new(ks.certified_key(&key).await?));
    Ok((hsm, resolver, fingerprint))
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_1200_app_bal_token_certificate_and_auth_plain_through_real_postfix()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let (_hsm, resolver, fingerprint) = token_org_auth_cli(&pki, dir.path()).await?;
    let operator = Operator::start(&pki, vec![fingerprint])?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &secret,
    );
    let (mail, _queue) =
        common::start(&pki, &config, &dir.path().join("q"), resolver.clone()).await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    let d = submit(&mut client, "1200", &[DOCTOR, DOCTOR2]).await?;
    ensure!(
        d.recipients
            .iter()
            .all(passerelle_smtp::RecipientResult::delivered),
        "{d:?}"
    );
    client.quit().await?;
    operator.wait_inbox(DOCTOR, 1, WAIT)?;
    operator.wait_inbox(DOCTOR2, 1, WAIT)?;
    let log = operator.postfix.log_tail(200);
    ensure!(
        log.contains(&format!("sasl_username={}", common::APP_BAL)),
        "{log}"
    );
    mail.shutdown().await;

    // A wrong APP BAL password: the BAL needs an operator's action, the mail stays queued.
    let wrong = common::write_secret(dir.path(), "not-the-password")?;
    let config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &wrong,
    );
    let (mail, queue) = common::start(&pki, &config, &dir.path().join("q2"), resolver).await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    submit(&mut client, "1200-wrong", &[DOCTOR]).await?;
    let mut state = mail.bal("app").context("bal")?.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, BalState::ReauthRequired(_))),
    )
    .await
    .context("re-auth state")??;
    ensure!(
        queue.next_due(&outbox::kind_for("app")).await?.is_some(),
        "mail kept queued"
    );
    ensure!(operator.inbox(DOCTOR)? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ref2_2_3_x_mss_nil_set_on_every_message() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let operator = Operator::start(&pki, vec![pki.org_auth_cli_fingerprint()?])?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &secret,
    );
    let (mail, _q) = common::start(
        &pki,
        &config,
        &dir.path().join("q"),
        pki.software_org_auth_cli()?,
    )
    .await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    for i in 0..5 {
        let raw = if i % 2 == 0 {
            common::message(&format!("nil{i}"), DOCTOR, "b")
        } else {
            // No Message-ID, a forged NIL: both fixed.
            format!("To: {DOCTOR}\r\nX-MSS-NIL: forged\r\nSubject: {i}\r\n\r\nb\r\n").into_bytes()
        };
        let d = client
            .send(&common::envelope(LAN_MAILBOX, &[DOCTOR]), &raw)
            .await?;
        ensure!(d.recipients[0].delivered(), "{d:?}");
    }
    operator.wait_inbox(DOCTOR, 5, WAIT)?;
    let texts = operator.messages(DOCTOR)?;
    for t in &texts {
        let nils: Vec<&str> = t.lines().filter(|l| l.starts_with("X-MSS-NIL:")).collect();
        ensure!(
            nils == vec![format!("X-MSS-NIL: {}", common::NIL).as_str()],
            "{t}"
        );
    }
    ensure!(message_ids(&texts).len() == 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_5xx_gives_a_dsn_in_the_lan_senders_mailbox() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let operator = Operator::start_with_rejected(
        &pki,
        vec![pki.org_auth_cli_fingerprint()?],
        "nobody@medecin.mssante.fr",
    )?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &secret,
    );
    let (mail, queue) = common::start(
        &pki,
        &config,
        &dir.path().join("q"),
        pki.software_org_auth_cli()?,
    )
    .await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    submit(&mut client, "dsn", &[DOCTOR, "nobody@medecin.mssante.fr"]).await?;
    operator.wait_inbox(DOCTOR, 1, WAIT)?;
    operator.wait_inbox(LAN_MAILBOX, 1, WAIT)?;
    let dsn = operator.messages(LAN_MAILBOX)?.remove(0);
    ensure!(
        dsn.contains("multipart/report") && dsn.contains("message/delivery-status"),
        "{dsn}"
    );
    ensure!(
        dsn.contains("Final-Recipient: rfc822; nobody@medecin.mssante.fr"),
        "{dsn}"
    );
    ensure!(dsn.contains("5.1.1"), "{dsn}");
    drained(&queue, WAIT).await?;
    let dead = queue
        .list(&ListFilter {
            kind: Some(outbox::kind_for("app")),
            state: Some(ItemState::Dead),
            after: None,
            limit: 10,
        })
        .await?;
    ensure!(
        dead.is_empty(),
        "partly delivered item is done, not dead: {dead:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ref2_1_10_server_ends_the_session_and_passerelle_reconnects() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let operator = Operator::start_with_extra(
        &pki,
        vec![pki.org_auth_cli_fingerprint()?],
        &["smtpd_timeout = 2s"],
    )?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let mut config = common::config(
        operator.postfix.smtp_addr(),
        operator.dovecot.lmtp_addr(),
        &secret,
    );
    config.bals[0].connections = 1;
    config.delivery.session_idle = Duration::from_secs(60);
    let (mail, queue) = common::start(
        &pki,
        &config,
        &dir.path().join("q"),
        pki.software_org_auth_cli()?,
    )
    .await?;
    let mut client = lan_client(&pki, mail.local_addr()).await?;
    submit(&mut client, "first", &[DOCTOR]).await?;
    operator.wait_inbox(DOCTOR, 1, WAIT)?;
    // Postfix ends the idle session (its log says so) while passerelle keeps it.
    tokio::time::timeout(WAIT, async {
        while !operator.postfix.log_tail(50).contains("timeout after") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("postfix never timed the session out")?;
    submit(&mut client, "second", &[DOCTOR]).await?;
    operator.wait_inbox(DOCTOR, 2, WAIT)?;
    drained(&queue, WAIT).await?;
    // The second message went on a new session without a retry being scheduled.
    let items = queue
        .list(&ListFilter {
            kind: Some(outbox::kind_for("app")),
            state: None,
            after: None,
            limit: 10,
        })
        .await?;
    ensure!(
        items
            .iter()
            .all(|i| i.attempts == 1 && i.state == ItemState::Done),
        "{items:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_1000_messages_accepted_then_delivered_exactly_once() -> anyhow::Result<()> {
    const N: usize = 1000;
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let operator = Operator::start(&pki, vec![pki.org_auth_cli_fingerprint()?])?;
    let proxy = FaultProxy::start(operator.postfix.smtp_addr()).await?;
    proxy.set_mode(Mode::Refuse).await?;
    let secret = common::write_secret(dir.path(), common::APP_PASSWORD)?;
    let mut config = common::config(proxy.local_addr(), operator.dovecot.lmtp_addr(), &secret);
    config.delivery.command_timeout = Duration::from_secs(3);
    config.bals[0].connections = 4;
    let (mail, queue) = common::start(
        &pki,
        &config,
        &dir.path().join("q"),
        pki.software_org_auth_cli()?,
    )
    .await?;
    let addr = mail.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    let pki = Arc::new(pki);
    for lane in 0..4 {
        let pki = Arc::clone(&pki);
        tasks.spawn(async move {
            let mut client = lan_client(&pki, addr).await?;
            let mut accepted = 0;
            for i in (lane..N).step_by(4) {
                let d = submit(&mut client, &format!("off{i}"), &[DOCTOR]).await?;
                ensure!(d.recipients[0].delivered(), "message {i}: {d:?}");
                accepted += 1;
            }
            client.quit().await?;
            anyhow::Ok(accepted)
        });
        if lane == 1 {
            // Half of the outage the front accepts TCP but never answers.
            proxy.set_mode(Mode::Blackhole).await?;
        }
    }
    let mut accepted = 0;
    while let Some(r) = tasks.join_next().await {
        accepted += r??;
    }
    ensure!(accepted == N, "{accepted} accepted");
    ensure!(
        operator.inbox(DOCTOR)? == 0,
        "nothing can pass while offline"
    );
    proxy.set_mode(Mode::Pass).await?;
    operator.wait_inbox(DOCTOR, N, Duration::from_secs(300))?;
    drained(&queue, WAIT).await?;
    let texts = operator.messages(DOCTOR)?;
    let ids = message_ids(&texts);
    let unique: HashSet<&String> = ids.iter().collect();
    println!(
        "offline test: {} stored, {} unique Message-IDs",
        texts.len(),
        unique.len()
    );
    ensure!(
        texts.len() == N && unique.len() == N,
        "{} stored, {} unique",
        texts.len(),
        unique.len()
    );
    Ok(())
}
