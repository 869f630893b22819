//! PER/ORG BALs: SASL XOAUTH2 with a Pro Santé Connect access token from the PSC token
//! manager (passerelle-psc against the fake PSC), to a real Postfix front whose SASL is
//! Dovecot's `oauth2` passdb asking the fake PSC about each token (EX_LPS_0700/0900).

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{DOCTOR, LAN_MAILBOX, Pki, lan_client};
use passerelle_api_lps::autoconfig::Autoconfig;
use passerelle_api_lps::{BalKind, BalState, Endpoint, PracticeMail, TlsSetup, outbox};
use passerelle_fake_psc::env::{OPERATOR_NAME, TestEnv, secret_file};
use passerelle_fake_psc::{CLIENT_ID, CLIENT_SECRET, FakePsc};
use passerelle_harness::{Dovecot, Postfix};
use passerelle_keystore::{KeyAlgorithm, Keystore};
use passerelle_psc::{Psc, PscConfig};
use passerelle_queue::{ItemState, ListFilter, Queue};
use passerelle_trust::{ProfileServerVerifier, mssante_client_config};
use rustls::client::ResolvesClientCert;

const BAL: &str = "jean.dupond@medecin.mssante.fr";
const IDNAT: &str = "899700218896";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct NoCert;
impl ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

struct World {
    env: TestEnv,
    fake: FakePsc,
    psc: Arc<Psc>,
    dovecot: Dovecot,
    postfix: Postfix,
}

async fn world() -> anyhow::Result<World> {
    let env = TestEnv::new()?;
    let fake = FakePsc::start(&env.pki).await?;
    let keystore = Keystore::open(&env.keystore).await?;
    keystore
        .generate("psc-store", KeyAlgorithm::Rsa2048)
        .await?;
    let config = PscConfig {
        token_url: fake.token_url(),
        client_id: CLIENT_ID.to_owned(),
        client_secret_file: secret_file(env.dir.path(), "psc.secret", CLIENT_SECRET)?,
        https_profile: "mssante-server".to_owned(),
        store_file: env.dir.path().join("psc-sessions.json"),
        store_key_label: "psc-store".to_owned(),
        refresh_margin: Duration::from_secs(15),
        timeout: Duration::from_secs(10),
    };
    let psc = Arc::new(Psc::open(&config, Arc::clone(&env.trust), &keystore).await?);
    psc.set_refresh_token(BAL, &fake.login(BAL, IDNAT)).await?;
    let auth_port = common::free_port()?;
    let dovecot = Dovecot::builder()
        .tls(env.operator_tls())
        .user(BAL, "unused-password")
        .user(DOCTOR, "pw")
        .user(LAN_MAILBOX, "pw")
        .extra_config(env.dovecot_oauth2(&fake)?)
        .extra_config(format!(
            "service auth {{\n  inet_listener auth-postfix {{\n    address = 127.0.0.1\n    port = {auth_port}\n  }}\n}}"
        ))
        .start()?;
    // The PSC front: no client certificate, SASL (XOAUTH2 from Dovecot) required to relay.
    let postfix = Postfix::builder()
        .domain("medecin.mssante.fr")
        .hostname(OPERATOR_NAME)
        .tls(env.operator_tls())
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .main_cf("smtpd_sasl_auth_enable = yes")
        .main_cf("smtpd_sasl_type = dovecot")
        .main_cf(format!("smtpd_sasl_path = inet:127.0.0.1:{auth_port}"))
        .main_cf("smtpd_tls_auth_only = yes")
        .main_cf("smtpd_relay_restrictions = permit_sasl_authenticated, reject")
        .main_cf("smtpd_recipient_restrictions = permit_sasl_authenticated, reject")
        .start()?;
    Ok(World {
        env,
        fake,
        psc,
        dovecot,
        postfix,
    })
}

async fn start(
    w: &World,
    lan: &Pki,
    dir: &std::path::Path,
) -> anyhow::Result<(PracticeMail, Arc<Queue<passerelle_queue::SqliteStore>>)> {
    let mut config = common::config(
        w.postfix.smtp_addr(),
        w.dovecot.lmtp_addr(),
        &common::write_secret(dir, "unused")?,
    );
    config.accounts[0].bals = vec!["per".into()];
    config.bals[0].name = "per".into();
    config.bals[0].address = BAL.into();
    config.bals[0].kind = BalKind::Per;
    config.bals[0].connections = 1;
    // Each message on a new session, so each authenticates (token checked at AUTH only).
    config.delivery.session_idle = Duration::from_millis(50);
    config.bals[0].client_key_label = None;
    config.bals[0].password_file = None;
    config.bals[0].submission = Some(Endpoint {
        host: OPERATOR_NAME.into(),
        port: w.postfix.smtp_addr().port(),
        address: Some(w.postfix.smtp_addr()),
    });
    let verifier = Arc::new(ProfileServerVerifier::new(
        Arc::clone(&w.env.trust),
        "mssante-server",
    )?);
    let upstream = Arc::new(mssante_client_config(
        Arc::new(NoCert),
        verifier,
        w.env.trust.tls_options(),
    )?);
    let queue = Arc::new(Queue::open_sqlite(dir.join("q"), common::queue_config()).await?);
    let tls = TlsSetup {
        listener: lan.listener_tls()?,
        upstream: [("per".to_owned(), Arc::clone(&upstream))].into(),
        https: Arc::clone(&upstream),
    };
    let autoconfig = Autoconfig::new(&config.dns, upstream)?;
    let tokens: Arc<dyn passerelle_api_lps::AccessTokens> = Arc::clone(&w.psc) as _;
    let mail = PracticeMail::start(&config, Arc::clone(&queue), tls, tokens, autoconfig).await?;
    Ok((mail, queue))
}

async fn submit_per(lan: &Pki, mail: &PracticeMail, id: &str) -> anyhow::Result<()> {
    let mut client = lan_client(lan, mail.local_addr()).await?;
    let d = client
        .send(
            &common::envelope(BAL, &[DOCTOR]),
            &common::message(id, DOCTOR, "b"),
        )
        .await?;
    ensure!(d.recipients[0].delivered(), "{d:?}");
    client.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_0700_0900_per_bal_xoauth2_psc_token_through_real_postfix() -> anyhow::Result<()> {
    let w = world().await?;
    let lan = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let (mail, _q) = start(&w, &lan, dir.path()).await?;
    submit_per(&lan, &mail, "xoauth2").await?;
    tokio::task::block_in_place(|| w.dovecot.wait_for_inbox_count(DOCTOR, 1, WAIT))?;
    let log = w.postfix.log_tail(200);
    ensure!(
        log.contains("sasl_method=XOAUTH2") && log.contains(&format!("sasl_username={BAL}")),
        "{log}"
    );
    ensure!(w.fake.introspections() >= 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_0710_refused_token_evicted_retried_once_then_reauth_keeps_mail()
-> anyhow::Result<()> {
    let w = world().await?;
    let lan = Pki::new()?;
    let dir = tempfile::tempdir()?;
    // Warm the cache, then make the cached token stale at the operator: 535, evict, a
    // refreshed token, delivered.
    w.psc.access_token(BAL).await?;
    w.fake.expire_access_tokens();
    let (mail, queue) = start(&w, &lan, dir.path()).await?;
    submit_per(&lan, &mail, "stale").await?;
    tokio::task::block_in_place(|| w.dovecot.wait_for_inbox_count(DOCTOR, 1, WAIT))?;
    ensure!(w.fake.token_requests() >= 1, "a refresh happened");

    // Passerelle has closed its idle session (every connect has its disconnect).
    tokio::time::timeout(WAIT, async {
        loop {
            let log = w.postfix.log_tail(500);
            if log.matches("]: connect from").count() == log.matches("]: disconnect from").count() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("session never closed")?;

    // The PSC session is over: the cached token is refused, the refresh too: the BAL needs
    // a person, the message stays queued.
    w.fake.end_sessions(BAL);
    w.fake.expire_access_tokens();
    submit_per(&lan, &mail, "after-sso-end").await?;
    let mut state = mail.bal("per").context("bal")?.state();
    let reached = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, BalState::ReauthRequired(_))),
    )
    .await
    .is_ok();
    ensure!(
        reached,
        "state {:?}, inbox {}, postfix: {}",
        *state.borrow(),
        w.dovecot.inbox_count(DOCTOR)?,
        w.postfix.log_tail(30)
    );
    let pending = queue
        .list(&ListFilter {
            kind: Some(outbox::kind_for("per")),
            state: Some(ItemState::Queued),
            after: None,
            limit: 10,
        })
        .await?;
    ensure!(pending.len() == 1, "{pending:?}");
    ensure!(w.dovecot.inbox_count(DOCTOR)? == 1);

    // The practitioner logs in again: the queue drains.
    w.psc
        .set_refresh_token(BAL, &w.fake.login(BAL, IDNAT))
        .await?;
    mail.bal("per").context("bal")?.reauthenticated();
    tokio::task::block_in_place(|| w.dovecot.wait_for_inbox_count(DOCTOR, 2, WAIT))?;
    Ok(())
}
