//! The client engine against real Postfix and Dovecot, our server for SASL details, and
//! the fault proxy for cut links.

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use common::{Pki, TestServer, server_name, tls_config};
use passerelle_faultproxy::{FaultProxy, Mode};
use passerelle_harness::{Dovecot, Postfix};
use passerelle_smtp::{
    ClientConfig, Envelope, ErrorKind, MailFrom, ServerConfig, SmtpClient, SmtpError,
    xoauth2_initial_response,
};

const BOB: &str = "bob@passerelle.test";

fn envelope(from: &str, to: &[&str]) -> Envelope {
    Envelope {
        mail_from: MailFrom {
            address: from.to_owned(),
            size: None,
            eight_bit: false,
        },
        recipients: to.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn plaintext_config() -> ClientConfig {
    let mut c = ClientConfig::new("client.passerelle.test");
    c.require_tls = false;
    c
}

const MESSAGE: &[u8] = b"From: a@client.test\r\nTo: bob@passerelle.test\r\nSubject: t\r\n\r\nline\r\n.starts with a dot\r\n";

fn wait_inbox(dovecot: &Dovecot, user: &str, n: usize) -> anyhow::Result<usize> {
    tokio::task::block_in_place(|| {
        Ok(dovecot.wait_for_inbox_count(user, n, Duration::from_secs(30))?)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5070_client_sends_to_real_postfix_in_clear_when_allowed() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder().user(BOB, "pw").start()?;
    let postfix = Postfix::builder()
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    let mut client = SmtpClient::connect(postfix.smtp_addr(), plaintext_config()).await?;
    assert_eq!(client.banner().code, 220);
    let caps = client.ehlo().await?;
    assert!(caps.has("PIPELINING") && caps.size().is_some());
    let delivery = client
        .send(&envelope("a@client.test", &[BOB]), MESSAGE)
        .await?;
    assert!(delivery.recipients[0].delivered(), "{delivery:?}");
    client.quit().await?;
    wait_inbox(&dovecot, BOB, 1)?;
    let stored = std::fs::read_dir(dovecot.maildir(BOB).join("new"))?
        .next()
        .context("no message file")??;
    let text = std::fs::read_to_string(stored.path())?;
    assert!(
        text.contains("\n.starts with a dot"),
        "dot-stuffing undone: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_05_client_starttls_to_real_postfix_with_test_pki() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dovecot = Dovecot::builder().user(BOB, "pw").start()?;
    let postfix = Postfix::builder()
        .tls(pki.server_files())
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    let mut client =
        SmtpClient::connect(postfix.smtp_addr(), ClientConfig::new("client.test")).await?;
    client
        .starttls(pki.rustls_client(false)?, server_name())
        .await?;
    assert!(client.is_tls());
    assert!(!client.capabilities().is_some_and(|c| c.has("STARTTLS")));
    let delivery = client
        .send(&envelope("a@client.test", &[BOB]), MESSAGE)
        .await?;
    assert!(delivery.recipients[0].delivered(), "{delivery:?}");
    client.quit().await?;
    wait_inbox(&dovecot, BOB, 1)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_1200_client_certificate_required_by_real_postfix() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let dovecot = Dovecot::builder().user(BOB, "pw").start()?;
    let postfix = Postfix::builder()
        .tls(pki.server_files())
        .require_client_cert(vec![pki.org_auth_cli_fingerprint()?])
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    // With the ORG AUTH_CLI certificate (in-memory rustls key): relay permitted.
    let mut client =
        SmtpClient::connect(postfix.smtp_addr(), ClientConfig::new("client.test")).await?;
    client
        .starttls(pki.rustls_client(true)?, server_name())
        .await?;
    let delivery = client
        .send(&envelope("a@client.test", &[BOB]), MESSAGE)
        .await?;
    assert!(
        delivery.recipients[0].delivered(),
        "{delivery:?}\n{}",
        postfix.log_tail(20)
    );
    client.quit().await?;
    wait_inbox(&dovecot, BOB, 1)?;

    // Without it: nothing gets through, and it is never reported as delivered.
    let mut client =
        SmtpClient::connect(postfix.smtp_addr(), ClientConfig::new("client.test")).await?;
    let outcome = match client
        .starttls(pki.rustls_client(false)?, server_name())
        .await
    {
        Ok(()) => client
            .send(&envelope("a@client.test", &[BOB]), MESSAGE)
            .await
            .map(|d| d.recipients[0].delivered()),
        Err(e) => Err(e),
    };
    assert!(!matches!(outcome, Ok(true)), "{outcome:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_05_client_never_authenticates_without_starttls() -> anyhow::Result<()> {
    // Our server offers AUTH in clear on purpose: the client must still refuse.
    let mut config = ServerConfig::new("mx.test");
    config.auth_mechanisms = vec![passerelle_smtp::AuthMechanism::Plain];
    config.allow_auth_without_tls = true;
    let server = TestServer::start(config).await?;
    let mut client = SmtpClient::connect(server.addr, ClientConfig::new("client.test")).await?;
    client.ehlo().await?;
    let err = client
        .auth_plain("", "alice", "secret")
        .await
        .expect_err("AUTH in clear");
    assert!(matches!(err, SmtpError::Plaintext { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Policy);
    let err = client
        .auth_xoauth2("alice@medecin.mssante.fr", "tok")
        .await
        .expect_err("XOAUTH2 in clear");
    assert!(matches!(err, SmtpError::Plaintext { .. }), "{err}");
    let err = client
        .send(&envelope("a@b.test", &["c@d.test"]), MESSAGE)
        .await
        .expect_err("mail in clear");
    assert!(matches!(err, SmtpError::Plaintext { .. }), "{err}");
    // STARTTLS not offered: a clear error, never a fallback.
    let pki = Pki::new()?;
    let err = client
        .starttls(pki.rustls_client(false)?, server_name())
        .await
        .expect_err("no STARTTLS offered");
    assert!(matches!(err, SmtpError::StartTlsNotOffered { .. }), "{err}");
    assert!(server.recorder.seen.lock().expect("lock").auths.is_empty());
    assert_eq!(server.recorder.messages(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_0900_xoauth2_sasl_ir_format() -> anyhow::Result<()> {
    let ir = xoauth2_initial_response("jean.dupond@medecin.mssante.fr", "eyJ.a.b");
    let decoded = base64::engine::general_purpose::STANDARD.decode(&ir)?;
    assert_eq!(
        decoded,
        b"user=jean.dupond@medecin.mssante.fr\x01auth=Bearer eyJ.a.b\x01\x01"
    );

    let pki = Pki::new()?;
    let server = TestServer::start(tls_config(&pki)?).await?;
    let mut client = SmtpClient::connect(server.addr, ClientConfig::new("client.test")).await?;
    client
        .starttls(pki.rustls_client(false)?, server_name())
        .await?;
    client
        .auth_xoauth2("jean.dupond@medecin.mssante.fr", "good-token")
        .await?;
    let seen = server.recorder.seen.lock().expect("lock").auths.clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "jean.dupond@medecin.mssante.fr");
    assert_eq!(seen[0].2, "good-token");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_0710_xoauth2_challenge_then_535_5_7_8_exposes_json() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let server = TestServer::start(tls_config(&pki)?).await?;
    let mut client = SmtpClient::connect(server.addr, ClientConfig::new("client.test")).await?;
    client
        .starttls(pki.rustls_client(false)?, server_name())
        .await?;
    let err = client
        .auth_xoauth2("jean.dupond@medecin.mssante.fr", "expired-token")
        .await
        .expect_err("expired token");
    assert_eq!(err.kind(), ErrorKind::Authentication);
    let SmtpError::AuthFailed { reply, detail, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!((reply.code, reply.enhanced), (535, Some((5, 7, 8))));
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.contains(r#""status":"401""#)),
        "{detail:?}"
    );
    // The session is still in step: a retry with a fresh token works.
    client
        .auth_xoauth2("jean.dupond@medecin.mssante.fr", "good-token")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lps_1200_auth_plain_then_per_recipient_results() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut config = tls_config(&pki)?;
    config.require_auth = true;
    let server = TestServer::start(config).await?;
    let mut client = SmtpClient::connect(server.addr, ClientConfig::new("client.test")).await?;
    client
        .starttls(pki.rustls_client(true)?, server_name())
        .await?;
    client
        .auth_plain("", "app@structure.mssante.fr", "secret")
        .await?;
    let delivery = client
        .send(
            &envelope(
                "app@structure.mssante.fr",
                &[
                    "ok@x.mssante.fr",
                    "refused@x.mssante.fr",
                    "later@x.mssante.fr",
                ],
            ),
            MESSAGE,
        )
        .await?;
    let codes: Vec<u16> = delivery.recipients.iter().map(|r| r.reply.code).collect();
    assert_eq!(codes, [250, 550, 450]);
    let seen = server.recorder.seen.lock().expect("lock");
    assert_eq!(seen.messages[0].0.recipients, ["ok@x.mssante.fr"]);
    assert_eq!(
        seen.messages[0].1, MESSAGE,
        "byte-exact after stuffing round trip"
    );
    assert!(
        !seen.tls[0].peer_certificates.is_empty(),
        "client certificate presented"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_delivery_into_real_dovecot() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder().user(BOB, "pw").start()?;
    let mut config = plaintext_config();
    config.lmtp = true;
    let mut client = SmtpClient::connect(dovecot.lmtp_addr(), config).await?;
    client.ehlo().await?;
    let delivery = client
        .send(
            &envelope("a@client.test", &[BOB, "nobody@passerelle.test"]),
            MESSAGE,
        )
        .await?;
    assert!(delivery.recipients[0].delivered(), "{delivery:?}");
    assert!(delivery.recipients[1].reply.is_permanent(), "{delivery:?}");
    client.quit().await?;
    assert_eq!(wait_inbox(&dovecot, BOB, 1)?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_cut_mid_data_is_a_temporary_error_never_success() -> anyhow::Result<()> {
    let dovecot = Dovecot::builder().user(BOB, "pw").start()?;
    let postfix = Postfix::builder()
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .start()?;
    let proxy = FaultProxy::start(postfix.smtp_addr()).await?;
    proxy.set_mode(Mode::CutAfter(64 * 1024)).await?;
    let mut client = SmtpClient::connect(proxy.local_addr(), plaintext_config()).await?;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 2 * 1024 * 1024 {
        big.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn\r\n");
    }
    let err = client
        .send(&envelope("a@client.test", &[BOB]), &big)
        .await
        .expect_err("the link was cut mid-DATA");
    assert_eq!(err.kind(), ErrorKind::Temporary, "{err}");
    ensure!(
        dovecot.inbox_count(BOB)? == 0,
        "a cut message was delivered"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_peer_times_out_as_temporary() -> anyhow::Result<()> {
    let server = TestServer::start(ServerConfig::new("mx.test")).await?;
    let proxy = FaultProxy::start(server.addr).await?;
    proxy.set_mode(Mode::Blackhole).await?;
    let mut config = plaintext_config();
    config.command_timeout = Duration::from_millis(300);
    let err = SmtpClient::connect(proxy.local_addr(), config)
        .await
        .expect_err("no banner");
    assert!(
        matches!(
            err,
            SmtpError::Timeout {
                command: "banner",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Temporary);
    Ok(())
}
