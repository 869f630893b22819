//! TM3.2P and the two-operator exchange: connector A (key in memory) and connector B (key in a
//! SoftHSM2 token), each with its own Dovecot behind it, MX records served by a loopback DNS
//! server. Both domains resolve to 127.0.0.1, so each instance's `outbound.smtp_port` is the
//! other's inbound port (25 in production).

use std::net::Ipv4Addr;
use std::time::Duration;

use passerelle_harness::{Dovecot, Postfix};
use passerelle_liste_blanche::ListeBlancheHandle;
use passerelle_smtp::{ClientConfig, SmtpClient};
use passerelle_testpki::names;

use crate::common::{
    DN_A, DN_B, DOMAIN_A, DOMAIN_B, DOMAIN_C, HOPITAL_A, Instance, InstanceSpec, Listeners,
    TokenIdentity, World, envelope, message, token_identity,
};
use crate::dns::{DnsServer, Zone};

const ALICE: &str = "alice@operateur-a.mssante.fr";
const BOB: &str = "bob@operateur-b.mssante.fr";
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct Pair {
    _world: World,
    _dns: DnsServer,
    dovecot_a: Dovecot,
    dovecot_b: Dovecot,
    a: Instance,
    b: Instance,
    _token: TokenIdentity,
}

fn zone() -> Zone {
    Zone::default()
        .mx(DOMAIN_A, 10, "mx.operateur-a.mssante.fr")
        .mx(DOMAIN_B, 10, "mx.operateur-b.mssante.fr")
        .a("mx.operateur-a.mssante.fr", LOOPBACK)
        .a("mx.operateur-b.mssante.fr", LOOPBACK)
}

/// A's list is `list_a`; B uses the standard list.
async fn pair(
    zone: Zone,
    list_a: impl FnOnce(&World) -> anyhow::Result<ListeBlancheHandle>,
) -> anyhow::Result<Pair> {
    let world = World::new()?;
    let dns = DnsServer::start(zone).await?;
    let dovecot_a = Dovecot::builder().user(ALICE, "secret").start()?;
    let dovecot_b = Dovecot::builder().user(BOB, "secret").start()?;
    let (la, lb) = (Listeners::bind().await?, Listeners::bind().await?);
    let (port_a, port_b) = (la.inbound_port(), lb.inbound_port());
    let token = token_identity(&world).await?;
    let a = Instance::start(
        &world,
        &InstanceSpec {
            hostname: "mail.operateur-a.mssante.fr",
            domains: &[DOMAIN_A, HOPITAL_A],
            internal: dovecot_a.lmtp_addr(),
            lmtp: true,
            nameserver: Some(dns.addr),
            peer_port: port_b,
            relay_clients: &["127.0.0.1/32"],
        },
        world.memory_identity(names::SERVER_A)?,
        list_a(&world)?,
        la,
    )
    .await?;
    let b = Instance::start(
        &world,
        &InstanceSpec {
            hostname: "mail.operateur-b.mssante.fr",
            domains: &[DOMAIN_B],
            internal: dovecot_b.lmtp_addr(),
            lmtp: true,
            nameserver: Some(dns.addr),
            peer_port: port_a,
            relay_clients: &["127.0.0.1/32"],
        },
        token.certified.clone(),
        world.standard_list()?,
        lb,
    )
    .await?;
    Ok(Pair {
        _world: world,
        _dns: dns,
        dovecot_a,
        dovecot_b,
        a,
        b,
        _token: token,
    })
}

/// The internal server of `domain`: Postfix relaying every non-local domain to the connector's
/// relay listener, local mail to its Dovecot.
fn postfix(
    domain: &str,
    relay: std::net::SocketAddr,
    dovecot: &Dovecot,
) -> anyhow::Result<Postfix> {
    Ok(Postfix::builder()
        .domain(domain)
        .hostname(format!("smtp.{domain}"))
        .deliver_to_lmtp(dovecot.lmtp_addr())
        .main_cf("mynetworks = 127.0.0.0/8")
        .main_cf(format!(
            "default_transport = smtp:[{}]:{}",
            relay.ip(),
            relay.port()
        ))
        .main_cf(format!(
            "relay_transport = smtp:[{}]:{}",
            relay.ip(),
            relay.port()
        ))
        .start()?)
}

async fn submit(
    addr: std::net::SocketAddr,
    from: &str,
    to: &[&str],
    subject: &str,
) -> anyhow::Result<passerelle_smtp::Delivery> {
    let mut config = ClientConfig::new("poste.test");
    config.require_tls = false;
    let mut client = SmtpClient::connect(addr, config).await?;
    client.ehlo().await?;
    let delivery = client
        .send(&envelope(from, to), &message(from, to[0], subject))
        .await?;
    client.quit().await?;
    Ok(delivery)
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5050_two_operators_exchange_mail_both_ways_through_postfix_and_dovecot()
-> anyhow::Result<()> {
    let p = pair(zone(), World::standard_list).await?;
    let postfix_a = postfix(DOMAIN_A, p.a.relay, &p.dovecot_a)?;
    let postfix_b = postfix(DOMAIN_B, p.b.relay, &p.dovecot_b)?;

    let d = submit(postfix_a.smtp_addr(), ALICE, &[BOB], "A vers B").await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    p.dovecot_b
        .wait_for_inbox_count(BOB, 1, Duration::from_secs(30))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}\nA traces:\n{}",
                postfix_a.log_tail(30),
                p.a.traces()
            )
        })?;

    let d = submit(postfix_b.smtp_addr(), BOB, &[ALICE], "B vers A").await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    p.dovecot_a
        .wait_for_inbox_count(ALICE, 1, Duration::from_secs(30))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}\nB traces:\n{}",
                postfix_b.log_tail(30),
                p.b.traces()
            )
        })?;

    // Each side traced the other's liste blanche DN, outbound (TM3.2P) and inbound (TM3.1P).
    for (instance, peer) in [(&p.a, DN_B), (&p.b, DN_A)] {
        for direction in ["outbound", "inbound"] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let traces = instance.traces();
                let found = traces.lines().any(|l| {
                    l.contains(&format!("\"direction\":\"{direction}\""))
                        && l.contains(&format!("\"peer_dn\":\"{peer}\""))
                });
                if found {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{direction} {peer}: {traces}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (a, b) = (p.a.traces(), p.b.traces());
    assert!(
        !a.contains("A vers B") && !b.contains("B vers A"),
        "subjects in clear"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5060_non_mssante_recipient_in_a_mixed_list_is_refused() -> anyhow::Result<()> {
    let p = pair(zone(), World::standard_list).await?;
    let d = submit(p.a.relay, ALICE, &[BOB, "someone@gmail.com"], "mixte").await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    let refused = &d.recipients[1].reply;
    assert_eq!(
        (refused.code, refused.enhanced),
        (550, Some((5, 7, 1))),
        "{refused}"
    );
    assert!(refused.text.contains("EX_3.2_5060"), "{refused}");
    p.dovecot_b
        .wait_for_inbox_count(BOB, 1, Duration::from_secs(30))?;
    // A sender outside our whitelisted domains is refused too.
    let err = submit(p.a.relay, "x@gmail.com", &[BOB], "x")
        .await
        .expect_err("sender");
    assert!(err.to_string().contains("EX_3.2_5060"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5050_peer_dn_must_match_the_recipient_domain() -> anyhow::Result<()> {
    // A's list records B's DN for another domain only: B's server is listed, but not for
    // operateur-b.mssante.fr.
    let p = pair(zone(), |w| {
        w.liste_blanche(&[
            (DOMAIN_A, &[DN_A]),
            (DOMAIN_B, &[crate::common::DN_C]),
            ("autre-b.mssante.fr", &[DN_B]),
        ])
    })
    .await?;
    let d = submit(p.a.relay, ALICE, &[BOB], "refus DN").await?;
    assert!(
        d.recipients[0].delivered(),
        "accepted into the outbox: {d:?}"
    );
    // The sender gets a DSN with the reason; nothing reached B.
    p.dovecot_a
        .wait_for_inbox_count(ALICE, 1, Duration::from_secs(30))?;
    let traces =
        p.a.wait_for_trace("EX_3.2_5050 step 6", Duration::from_secs(5))
            .await?;
    assert!(traces.contains("\"event\":\"dsn\""), "{traces}");
    assert_eq!(p.dovecot_b.inbox_count(BOB)?, 0);
    assert!(!p.b.traces().contains("\"event\":\"message\""));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5040_mx_of_another_operator_is_never_used_as_relay() -> anyhow::Result<()> {
    // operateur-c's MX points at operator B's connector: B is an MSSanté operator, listed,
    // but not for operateur-c. A must not hand C's mail to B.
    let zone = zone().mx(DOMAIN_C, 10, "mx.operateur-b.mssante.fr");
    let p = pair(zone, World::standard_list).await?;
    let carol = format!("carol@{DOMAIN_C}");
    let d = submit(p.a.relay, ALICE, &[&carol], "relais").await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    p.dovecot_a
        .wait_for_inbox_count(ALICE, 1, Duration::from_secs(30))?;
    let traces =
        p.a.wait_for_trace(
            &format!("not recorded for {DOMAIN_C}"),
            Duration::from_secs(5),
        )
        .await?;
    assert!(traces.contains("EX_3.2_5050"), "{traces}");
    assert!(
        !p.b.traces().contains("\"event\":\"message\""),
        "B received C's mail"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_unknown_recipient_bounces_back_to_the_sending_operator_with_a_null_sender()
-> anyhow::Result<()> {
    let p = pair(zone(), World::standard_list).await?;
    let nobody = format!("nobody@{DOMAIN_B}");
    let d = submit(p.a.relay, ALICE, &[&nobody], "inconnu").await?;
    assert!(d.recipients[0].delivered(), "{d:?}");
    // B accepts for its domain, its Dovecot refuses the mailbox, B's DSN goes back to A with
    // MAIL FROM:<> (DN check only) and lands in Alice's INBOX.
    p.dovecot_a
        .wait_for_inbox_count(ALICE, 1, Duration::from_secs(30))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nB traces:\n{}\nA traces:\n{}",
                p.b.traces(),
                p.a.traces()
            )
        })?;
    let b = p.b.traces();
    assert!(b.contains("\"event\":\"dsn\""), "{b}");
    let a = p.a.traces();
    assert!(
        a.lines().any(|l| l.contains("\"direction\":\"inbound\"")
            && l.contains("\"event\":\"message\"")
            && l.contains("\"from\":\"\"")),
        "{a}"
    );
    Ok(())
}
