//! Durability and the relay listener's client restriction.

use std::time::Duration;

use passerelle_faultproxy::{FaultProxy, Mode};
use passerelle_harness::Dovecot;
use passerelle_smtp::{ClientConfig, SmtpClient};
use passerelle_testpki::names;

use crate::common::{
    DOMAIN_A, DOMAIN_B, Instance, InstanceSpec, Listeners, World, envelope, message, token_identity,
};

const BOB: &str = "bob@operateur-b.mssante.fr";

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_1_5030_accepted_mail_is_kept_and_retried_while_the_internal_server_is_down()
-> anyhow::Result<()> {
    let world = World::new()?;
    let dovecot = Dovecot::builder().user(BOB, "secret").start()?;
    let proxy = FaultProxy::start(dovecot.lmtp_addr()).await?;
    proxy.set_mode(Mode::Refuse).await?;
    let token = token_identity(&world).await?;
    let b = Instance::start(
        &world,
        &InstanceSpec {
            hostname: "mail.operateur-b.mssante.fr",
            domains: &[DOMAIN_B],
            internal: proxy.local_addr(),
            lmtp: true,
            nameserver: None,
            peer_port: 25,
            relay_clients: &["127.0.0.1/32"],
        },
        token.certified.clone(),
        world.standard_list()?,
        Listeners::bind().await?,
    )
    .await?;
    let mut client = world
        .operator_client(b.inbound, Some(world.memory_identity(names::SERVER_A)?))
        .await?;
    let sender = format!("alice@{DOMAIN_A}");
    let delivery = client
        .send(&envelope(&sender, &[BOB]), &message(&sender, BOB, "panne"))
        .await?;
    assert!(
        delivery.recipients[0].delivered(),
        "250 while Dovecot is unreachable: {delivery:?}"
    );
    b.wait_for_trace("\"decision\":\"deferred\"", Duration::from_secs(10))
        .await?;
    assert_eq!(dovecot.inbox_count(BOB)?, 0);
    proxy.set_mode(Mode::Pass).await?;
    dovecot.wait_for_inbox_count(BOB, 1, Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ex_3_2_5040_relay_listener_refuses_clients_outside_the_internal_networks()
-> anyhow::Result<()> {
    let world = World::new()?;
    let b = Instance::start(
        &world,
        &InstanceSpec {
            hostname: "mail.operateur-b.mssante.fr",
            domains: &[DOMAIN_B],
            internal: "127.0.0.1:9".parse()?,
            lmtp: true,
            nameserver: None,
            peer_port: 25,
            relay_clients: &["10.0.0.0/8", "192.168.1.10"],
        },
        world.memory_identity(names::SERVER_A)?,
        world.standard_list()?,
        Listeners::bind().await?,
    )
    .await?;
    let err = SmtpClient::connect(b.relay, ClientConfig::new("intrus.test"))
        .await
        .expect_err("open relay");
    let reply = err.reply().expect("a reply");
    assert_eq!(
        (reply.code, reply.enhanced),
        (554, Some((5, 7, 1))),
        "{reply}"
    );
    b.wait_for_trace("not an internal client", Duration::from_secs(5))
        .await?;
    Ok(())
}
