//! The LAN submission listener: policy replies and the durable outbox, the operator being
//! unreachable (nothing leaves).

mod common;

use std::net::SocketAddr;

use anyhow::ensure;
use common::{APP_BAL, DOCTOR, LAN_MAILBOX, Pki, envelope, lan_client, message, submit};
use passerelle_api_lps::outbox;
use passerelle_queue::{ItemState, ListFilter};
use passerelle_smtp::{ClientConfig, ErrorKind, SmtpClient};

const NOWHERE: &str = "127.0.0.1:9";

struct Fixture {
    pki: Pki,
    mail: passerelle_api_lps::PracticeMail,
    queue: std::sync::Arc<passerelle_queue::Queue<passerelle_queue::SqliteStore>>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let nowhere: SocketAddr = NOWHERE.parse()?;
    let config = common::config(nowhere, nowhere, &common::write_secret(dir.path(), "x")?);
    let resolver = pki.software_org_auth_cli()?;
    let (mail, queue) = common::start(&pki, &config, &dir.path().join("queue"), resolver).await?;
    Ok(Fixture {
        pki,
        mail,
        queue,
        _dir: dir,
    })
}

async fn queued(f: &Fixture) -> anyhow::Result<Vec<Vec<u8>>> {
    let items = f
        .queue
        .list(&ListFilter {
            kind: Some(outbox::kind_for("app")),
            state: None,
            after: None,
            limit: 10_000,
        })
        .await?;
    let mut out = Vec::new();
    for info in items {
        ensure!(
            info.state != ItemState::Done,
            "nothing can have been delivered"
        );
        out.push(vec![0; usize::try_from(info.payload_len)?]);
    }
    Ok(out)
}

/// Payloads of every queued item, leased and put back.
async fn payloads(f: &Fixture) -> anyhow::Result<Vec<Vec<u8>>> {
    let leased = f
        .queue
        .lease(
            &outbox::kind_for("app"),
            1000,
            std::time::Duration::from_secs(60),
        )
        .await?;
    Ok(leased.iter().map(|l| l.payload().to_vec()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_gbm_4420_41st_recipient_gets_452_4_5_3() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut client = lan_client(&f.pki, f.mail.local_addr()).await?;
    let rcpts: Vec<String> = (0..41)
        .map(|i| format!("dr{i}@medecin.mssante.fr"))
        .collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let delivery = submit(&mut client, "4420", &refs).await?;
    for r in &delivery.recipients[..40] {
        ensure!(r.delivered(), "{r:?}");
    }
    let last = &delivery.recipients[40];
    ensure!(
        last.reply.code == 452 && last.reply.enhanced == Some((4, 5, 3)),
        "{last:?}"
    );
    client.quit().await?;
    let items = payloads(&f).await?;
    ensure!(items.len() == 1);
    let (env, _) = outbox::decode(&items[0])?;
    ensure!(env.recipients.len() == 40, "{}", env.recipients.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_gbm_4410_ten_mb_message_accepted_larger_refused_552_5_3_4() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut client = lan_client(&f.pki, f.mail.local_addr()).await?;
    // 10 Mo of base64-like lines, as an encoded attachment arrives.
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    let mut big = message("4410", DOCTOR, "");
    while big.len() < 10_000_000 {
        big.extend_from_slice(line.as_bytes());
    }
    let delivery = client.send(&envelope(LAN_MAILBOX, &[DOCTOR]), &big).await?;
    ensure!(delivery.recipients[0].delivered(), "{delivery:?}");
    let mut huge = message("4410b", DOCTOR, "");
    while huge.len() < 12 * 1024 * 1024 {
        huge.extend_from_slice(line.as_bytes());
    }
    let outcome = client.send(&envelope(LAN_MAILBOX, &[DOCTOR]), &huge).await;
    match outcome {
        Err(e) => {
            let reply = e.reply().cloned();
            ensure!(
                reply
                    .as_ref()
                    .is_some_and(|r| r.code == 552 && r.enhanced == Some((5, 3, 4))),
                "{e}"
            );
        }
        Ok(d) => ensure!(
            d.recipients[0].reply.code == 552,
            "oversized message not refused: {d:?}"
        ),
    }
    ensure!(queued(&f).await?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_4_8_1_3_mixed_list_refuses_only_non_mssante_recipients() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut client = lan_client(&f.pki, f.mail.local_addr()).await?;
    let delivery = submit(
        &mut client,
        "mixed",
        &[
            DOCTOR,
            "someone@gmail.com",
            "x@interop-mssante.apicrypt.org",
            "bad space@medecin.mssante.fr",
        ],
    )
    .await?;
    let codes: Vec<_> = delivery
        .recipients
        .iter()
        .map(|r| (r.reply.code, r.reply.enhanced))
        .collect();
    ensure!(codes[0].0 == 250 && codes[2].0 == 250, "{codes:?}");
    ensure!(codes[1] == (550, Some((5, 7, 1))), "{codes:?}");
    ensure!(codes[3].0 >= 500, "{codes:?}");
    let items = payloads(&f).await?;
    let (env, _) = outbox::decode(&items[0])?;
    ensure!(
        env.recipients
            == vec![
                DOCTOR.to_owned(),
                "x@interop-mssante.apicrypt.org".to_owned()
            ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ref2_2_3_x_mss_nil_and_message_id_set_before_queueing() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut client = lan_client(&f.pki, f.mail.local_addr()).await?;
    let raw = format!(
        "From: {APP_BAL}\r\nTo: {DOCTOR}\r\nX-MSS-NIL: forged\r\nX-MSS-INS: O\r\nX-MSS-CODECDA: 34112-3\r\nX-MSS-MES: FIN\r\nSubject: =?utf-8?q?r=C3=A9sultats?= é 8-bit\r\n\r\nbody\r\n"
    );
    let d = client
        .send(&envelope(LAN_MAILBOX, &[DOCTOR]), raw.as_bytes())
        .await?;
    ensure!(d.recipients[0].delivered(), "{d:?}");
    // Invalid X-MSS values are refused with the reason, not silently dropped.
    let bad = format!("From: {APP_BAL}\r\nX-MSS-CODECDA: a;b\r\n\r\nbody\r\n");
    let d = client
        .send(&envelope(LAN_MAILBOX, &[DOCTOR]), bad.as_bytes())
        .await?;
    ensure!(d.recipients[0].reply.code == 554, "{d:?}");
    client.quit().await?;
    let items = payloads(&f).await?;
    ensure!(items.len() == 1);
    let (env, msg) = outbox::decode(&items[0])?;
    let text = String::from_utf8(msg.to_vec())?;
    ensure!(
        text.starts_with(&format!("X-MSS-NIL: {}\r\n", common::NIL)),
        "{text}"
    );
    ensure!(!text.contains("forged"));
    ensure!(
        text.contains("X-MSS-INS: O\r\n")
            && text.contains("X-MSS-CODECDA: 34112-3\r\n")
            && text.contains("X-MSS-MES: FIN\r\n")
    );
    ensure!(text.contains("Message-ID: ") && env.message_id.starts_with('<'));
    ensure!(env.eight_bit && env.from == APP_BAL && env.sender_mailbox == LAN_MAILBOX);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lan_policy_auth_required_and_sender_must_be_the_accounts_bal() -> anyhow::Result<()> {
    let f = fixture().await?;
    // No STARTTLS: AUTH is not even offered, MAIL refused.
    let mut plain = SmtpClient::connect(f.mail.local_addr(), {
        let mut c = ClientConfig::new("lps");
        c.require_tls = false;
        c
    })
    .await?;
    let e = plain
        .send(&envelope(LAN_MAILBOX, &[DOCTOR]), b"x\r\n")
        .await
        .expect_err("mail in clear");
    ensure!(e.reply().is_some_and(|r| r.code == 530), "{e}");
    // Wrong password.
    let mut c = SmtpClient::connect(f.mail.local_addr(), ClientConfig::new("lps")).await?;
    c.starttls(
        f.pki.lan_client_tls()?,
        rustls::pki_types::ServerName::try_from(common::FRONT)?,
    )
    .await?;
    let e = c
        .auth_plain("", common::LAN_USER, "wrong")
        .await
        .expect_err("bad password");
    ensure!(e.kind() == ErrorKind::Authentication, "{e}");
    // A sender that is not one of the account's BALs.
    let mut client = lan_client(&f.pki, f.mail.local_addr()).await?;
    let e = client
        .send(
            &envelope("other@medecin.mssante.fr", &[DOCTOR]),
            &message("s", DOCTOR, "b"),
        )
        .await
        .expect_err("foreign sender");
    ensure!(
        e.reply()
            .is_some_and(|r| r.code == 553 && r.enhanced == Some((5, 7, 1))),
        "{e}"
    );
    // The BAL address itself is fine; the same message twice is stored once.
    for _ in 0..2 {
        let d = client
            .send(&envelope(APP_BAL, &[DOCTOR]), &message("same", DOCTOR, "b"))
            .await?;
        ensure!(d.recipients[0].delivered(), "{d:?}");
    }
    ensure!(queued(&f).await?.len() == 1);
    Ok(())
}
