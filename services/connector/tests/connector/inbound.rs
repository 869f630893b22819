//! TM3.1P: operator B's connector (key in a SoftHSM2 token) receiving from other operators.

use std::process::Command;
use std::time::Duration;

use passerelle_harness::Dovecot;
use passerelle_liste_blanche::ListeBlancheHandle;
use passerelle_smtp::{ClientConfig, ErrorKind, SmtpClient};
use passerelle_testpki::names;

use crate::common::{
    DN_A, DN_B, DN_C, DOMAIN_A, DOMAIN_B, DOMAIN_C, HOPITAL_A, Instance, InstanceSpec, Listeners,
    TokenIdentity, World, envelope, message, token_identity,
};

struct Receiver {
    world: World,
    dovecot: Dovecot,
    b: Instance,
    _token: TokenIdentity,
}

const BOB: &str = "bob@operateur-b.mssante.fr";

async fn receiver_with(
    list: impl FnOnce(&World) -> anyhow::Result<ListeBlancheHandle>,
) -> anyhow::Result<Receiver> {
    let world = World::new()?;
    let list = list(&world)?;
    let dovecot = Dovecot::builder().user(BOB, "secret").start()?;
    let token = token_identity(&world).await?;
    let b = Instance::start(
        &world,
        &InstanceSpec {
            hostname: "mail.operateur-b.mssante.fr",
            domains: &[DOMAIN_B],
            internal: dovecot.lmtp_addr(),
            lmtp: true,
            nameserver: None,
            peer_port: 25,
            relay_clients: &["127.0.0.1/32"],
        },
        token.certified.clone(),
        list,
        Listeners::bind().await?,
    )
    .await?;
    Ok(Receiver {
        world,
        dovecot,
        b,
        _token: token,
    })
}

async fn receiver() -> anyhow::Result<Receiver> {
    receiver_with(World::standard_list).await
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_listed_operator_mail_is_queued_then_relayed_to_dovecot_over_lmtp()
-> anyhow::Result<()> {
    let r = receiver().await?;
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity(names::SERVER_A)?))
        .await?;
    let sender = format!("alice@{DOMAIN_A}");
    let delivery = client
        .send(
            &envelope(&sender, &[BOB]),
            &message(&sender, BOB, "Resultats biologie"),
        )
        .await?;
    assert!(delivery.recipients[0].delivered(), "{delivery:?}");
    assert!(delivery.recipients[0].reply.text.contains("queued as"));
    client.quit().await?;
    r.dovecot
        .wait_for_inbox_count(BOB, 1, Duration::from_secs(20))?;
    let traces =
        r.b.wait_for_trace("\"decision\":\"delivered\"", Duration::from_secs(10))
            .await?;
    assert!(
        traces.contains(&format!("\"peer_dn\":\"{DN_A}\"")),
        "{traces}"
    );
    assert!(traces.contains("subject_hmac"));
    assert!(!traces.contains("biologie"), "subject in clear: {traces}");
    assert!(!traces.contains("Compte rendu"), "body in traces");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_mail_before_starttls_gets_530() -> anyhow::Result<()> {
    let r = receiver().await?;
    let mut config = ClientConfig::new("mail.operateur-a.mssante.fr");
    config.require_tls = false;
    let mut client = SmtpClient::connect(r.b.inbound, config).await?;
    client.ehlo().await?;
    let sender = format!("alice@{DOMAIN_A}");
    let err = client
        .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "x"))
        .await
        .expect_err("plaintext MAIL");
    let reply = err.reply().expect("a reply");
    assert_eq!(
        (reply.code, reply.enhanced),
        (530, Some((5, 7, 0))),
        "{reply}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_no_client_certificate_is_refused() -> anyhow::Result<()> {
    let r = receiver().await?;
    let sender = format!("alice@{DOMAIN_A}");
    let result = async {
        let mut client = r.world.operator_client(r.b.inbound, None).await?;
        client
            .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "x"))
            .await?;
        anyhow::Ok(())
    }
    .await;
    assert!(
        result.is_err(),
        "a session without client certificate went through"
    );
    assert_eq!(r.dovecot.inbox_count(BOB)?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_dn_not_listed_is_refused_with_the_reason() -> anyhow::Result<()> {
    let r = receiver().await?;
    let err = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity("server-x")?))
        .await
        .expect_err("unlisted DN");
    let err = err.downcast::<passerelle_smtp::SmtpError>()?;
    let reply = err.reply().expect("a reply");
    assert_eq!(
        (reply.code, reply.enhanced),
        (550, Some((5, 7, 1))),
        "{reply}"
    );
    assert!(reply.text.contains("liste blanche"), "{reply}");
    r.b.wait_for_trace("EX_3.1_5030", Duration::from_secs(5))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_dn_listed_for_another_domain_is_refused() -> anyhow::Result<()> {
    let r = receiver().await?;
    // Operator C's certificate, MAIL FROM operator A's domain.
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity("server-c")?))
        .await?;
    let sender = format!("alice@{DOMAIN_A}");
    let err = client
        .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "x"))
        .await
        .expect_err("DN of another domain");
    let reply = err.reply().expect("a reply");
    assert_eq!(
        (reply.code, reply.enhanced),
        (550, Some((5, 7, 1))),
        "{reply}"
    );
    assert!(
        reply.text.contains("not recorded for sender domain"),
        "{reply}"
    );
    assert_eq!(err.kind(), ErrorKind::Permanent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_mail_from_domain_not_listed_is_refused() -> anyhow::Result<()> {
    let r = receiver().await?;
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity(names::SERVER_A)?))
        .await?;
    let sender = "someone@gmail.com";
    let err = client
        .send(&envelope(sender, &[BOB]), &message(sender, BOB, "x"))
        .await
        .expect_err("unlisted sender domain");
    let reply = err.reply().expect("a reply");
    assert_eq!(
        (reply.code, reply.enhanced),
        (550, Some((5, 7, 1))),
        "{reply}"
    );
    assert!(
        reply
            .text
            .contains("gmail.com is not in the MSSante liste blanche"),
        "{reply}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_null_sender_is_accepted_with_the_dn_check_only() -> anyhow::Result<()> {
    let r = receiver().await?;
    // C's DN is listed (for C's domain only): a DSN from it needs nothing more. No PTR record
    // exists for 127.0.0.1 in any zone here either (2015 erratum: no PTR check).
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity("server-c")?))
        .await?;
    let delivery = client
        .send(
            &envelope("", &[BOB]),
            &message(&format!("MAILER-DAEMON@{DOMAIN_C}"), BOB, "Undelivered"),
        )
        .await?;
    assert!(delivery.recipients[0].delivered(), "{delivery:?}");
    r.dovecot
        .wait_for_inbox_count(BOB, 1, Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_relaying_to_a_domain_not_served_is_refused() -> anyhow::Result<()> {
    let r = receiver().await?;
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity(names::SERVER_A)?))
        .await?;
    let sender = format!("alice@{DOMAIN_A}");
    let to = format!("carol@{DOMAIN_C}");
    let delivery = client
        .send(&envelope(&sender, &[&to]), &message(&sender, &to, "x"))
        .await?;
    let reply = &delivery.recipients[0].reply;
    assert_eq!(
        (reply.code, reply.enhanced),
        (550, Some((5, 7, 1))),
        "{reply}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_lbl_5010_domains_and_dns_are_many_to_many() -> anyhow::Result<()> {
    // DN_A serves two domains; hopital-a is served by two DNs (A and C).
    let r = receiver_with(|w| {
        w.liste_blanche(&[
            (DOMAIN_A, &[DN_A]),
            (HOPITAL_A, &[DN_A, DN_C]),
            (DOMAIN_B, &[DN_B]),
            (DOMAIN_C, &[DN_C]),
        ])
    })
    .await?;
    let send = |identity: &'static str, sender: String| {
        let world = &r.world;
        let addr = r.b.inbound;
        async move {
            let mut client = world
                .operator_client(addr, Some(world.memory_identity(identity)?))
                .await?;
            let d = client
                .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "x"))
                .await;
            anyhow::Ok(d.is_ok_and(|d| d.recipients[0].delivered()))
        }
    };
    assert!(
        send(names::SERVER_A, format!("a@{DOMAIN_A}")).await?,
        "A for its first domain"
    );
    assert!(
        send(names::SERVER_A, format!("a@{HOPITAL_A}")).await?,
        "A for its second domain"
    );
    assert!(
        send("server-c", format!("c@{HOPITAL_A}")).await?,
        "the second DN of hopital-a"
    );
    assert!(
        !send("server-c", format!("c@{DOMAIN_A}")).await?,
        "C is not recorded for A's domain"
    );
    r.dovecot
        .wait_for_inbox_count(BOB, 3, Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_ope_5020_certificates_outside_the_organisations_branch_or_revoked_are_refused()
-> anyhow::Result<()> {
    let r = receiver().await?;
    for name in [
        names::SERVER_A_BY_EL_PP,
        names::SERVER_A_REVOKED,
        names::SERVER_A_EXPIRED,
        names::SERVER_A_ROGUE,
    ] {
        let result = r
            .world
            .operator_client(r.b.inbound, Some(r.world.memory_identity(name)?))
            .await;
        assert!(result.is_err(), "{name} accepted");
    }
    // The same DN from the right branch is accepted: the refusals are about the chain.
    r.world
        .operator_client(r.b.inbound, Some(r.world.memory_identity(names::SERVER_A)?))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_2_2_5010_cold_start_without_a_verified_list_refuses_exchange() -> anyhow::Result<()> {
    let r = receiver_with(|_| Ok(ListeBlancheHandle::empty(Duration::from_hours(72)))).await?;
    for addr in [r.b.inbound, r.b.relay] {
        let err = SmtpClient::connect(addr, ClientConfig::new("mail.operateur-a.mssante.fr"))
            .await
            .expect_err("banner");
        let reply = err.reply().expect("a reply");
        assert_eq!(
            (reply.code, reply.enhanced),
            (421, Some((4, 3, 0))),
            "{reply}"
        );
        assert!(reply.text.contains("liste blanche"), "{reply}");
    }
    r.b.wait_for_trace("EX_2.2_5010", Duration::from_secs(5))
        .await?;
    Ok(())
}

/// `openssl s_client -starttls smtp` with operator A's certificate and extra arguments; the
/// output, and whether a cipher was agreed.
fn s_client(r: &Receiver, extra: &[&str]) -> anyhow::Result<(String, bool)> {
    // `timeout`: s_client must not hang the test whatever the server does.
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-starttls", "smtp", "-connect"])
        .arg(r.b.inbound.to_string())
        .arg("-cert")
        .arg(r.world.pki_file("server-a.crt.pem"))
        .arg("-key")
        .arg(r.world.pki_file("server-a.key.pem"))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let agreed = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    Ok((text, agreed))
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_ope_5010_tls_1_2_with_a_listed_suite_is_the_control_case() -> anyhow::Result<()> {
    let r = receiver().await?;
    let (text, agreed) = tokio::task::block_in_place(|| s_client(&r, &["-tls1_2"]))?;
    assert!(agreed, "{text}");
    assert!(text.contains("ECDHE-RSA-AES256-GCM-SHA384"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_ope_5010_tls_1_1_is_refused_by_the_inbound_listener() -> anyhow::Result<()> {
    let r = receiver().await?;
    let (text, agreed) = tokio::task::block_in_place(|| {
        s_client(&r, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
    })?;
    assert!(!agreed, "{text}");
    assert!(text.contains("alert"), "the server did not refuse: {text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_ope_5010_non_listed_cipher_is_refused_by_the_inbound_listener() -> anyhow::Result<()> {
    let r = receiver().await?;
    for cipher in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ] {
        let (text, agreed) =
            tokio::task::block_in_place(|| s_client(&r, &["-tls1_2", "-cipher", cipher]))?;
        assert!(!agreed, "{cipher}: {text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5040_oversized_lines_and_pipelined_injection_are_refused_and_the_listener_keeps_serving()
-> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let r = receiver().await?;
    let stream = tokio::net::TcpStream::connect(r.b.inbound).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let banner = lines.next_line().await?.unwrap_or_default();
    assert!(banner.starts_with("220 "), "{banner}");
    write
        .write_all(format!("EHLO {}\r\n", "x".repeat(5000)).as_bytes())
        .await?;
    let reply = lines.next_line().await?.unwrap_or_default();
    assert!(reply.starts_with("500 5.5.2"), "{reply}");
    // Commands smuggled behind STARTTLS in the same packet are never run in TLS.
    write
        .write_all(b"EHLO a.test\r\nSTARTTLS\r\nMAIL FROM:<alice@operateur-a.mssante.fr>\r\n")
        .await?;
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await
    {
        seen.push(line);
    }
    assert!(!seen.iter().any(|l| l.starts_with("250 2.1.0")), "{seen:?}");
    // The listener still serves a well-behaved operator.
    let mut client = r
        .world
        .operator_client(r.b.inbound, Some(r.world.memory_identity(names::SERVER_A)?))
        .await?;
    let sender = format!("alice@{DOMAIN_A}");
    let d = client
        .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "x"))
        .await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    Ok(())
}
