//! Transmission against real peers: lots go through a real Postfix (STARTTLS) into the fake
//! caisse's Dovecot mailbox, where the caisse decrypts them with the AMO test key; lots wait
//! while the route is down; [CE2] blocks a lot and nothing is sent.

mod common;

use std::time::{Duration, Instant};

use common::{Front, b2, fse_meta};
use passerelle_billing::LotState;
use passerelle_faultproxy::{FaultProxy, Mode};

#[tokio::test(flavor = "multi_thread")]
async fn lot_goes_out_through_postfix_and_the_caisse_decrypts_the_same_bytes() -> anyhow::Result<()>
{
    let env = Front::start(true)?;
    let sender = env.sender(env.postfix.smtp_addr()).await?;
    let lot = b2("transmission");
    let id = sender.intake.accept(&fse_meta("F0001"), &lot).await?.lot_id;

    assert_eq!(sender.run_once().await?, 1);
    env.wait_caisse(1)?;
    let mails = env.caisse_mails()?;
    let raw = String::from_utf8_lossy(&mails[0]).into_owned();
    assert!(raw.contains("Content-Description: FSETEST/B2/K"), "{raw}");
    assert!(raw.contains("F0001.pkcs7"), "{raw}");
    let (plain, message_id) = env.caisse_decrypt(&mails[0])?;
    assert_eq!(plain, lot, "decrypts to the original lot");

    let stored = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(stored.state, LotState::Sent);
    assert_eq!(stored.message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(stored.sends, 1);
    let steps: Vec<_> = sender
        .intake
        .store
        .history(&id)
        .await?
        .iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        steps,
        [LotState::Received, LotState::Encrypted, LotState::Sent]
    );
    // Nothing left to send.
    assert_eq!(sender.run_once().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lots_wait_while_the_route_is_down_and_go_out_once_it_is_back() -> anyhow::Result<()> {
    let env = Front::start(true)?;
    let proxy = FaultProxy::start(env.postfix.smtp_addr()).await?;
    proxy.set_mode(Mode::Refuse).await?;
    let sender = env.sender(proxy.local_addr()).await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let meta = fse_meta(&format!("F000{n}"));
        ids.push(
            sender
                .intake
                .accept(&meta, &b2(&format!("offline{n}")))
                .await?
                .lot_id,
        );
    }
    assert_eq!(sender.run_once().await?, 0, "offline: nothing sent");
    for id in &ids {
        let lot = sender.intake.store.get(id).await?.expect("lot");
        assert_eq!(
            lot.state,
            LotState::Encrypted,
            "waits, encrypted again at the next try"
        );
    }
    proxy.set_mode(Mode::Pass).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while sent < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "lots not sent after the link came back"
        );
        sent += sender.run_once().await?;
        tokio::task::yield_now().await;
    }
    env.wait_caisse(3)?;
    let mut plains: Vec<Vec<u8>> = env
        .caisse_mails()?
        .iter()
        .map(|m| env.caisse_decrypt(m).map(|(p, _)| p))
        .collect::<Result<_, _>>()?;
    plains.sort();
    let mut expected: Vec<Vec<u8>> = (0..3).map(|n| b2(&format!("offline{n}"))).collect();
    expected.sort();
    assert_eq!(plains, expected, "each lot exactly once");
    for id in &ids {
        assert_eq!(
            sender.intake.store.get(id).await?.expect("lot").state,
            LotState::Sent
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ce2_lot_blocked_without_crl_and_nothing_is_sent() -> anyhow::Result<()> {
    let env = Front::start(false)?;
    let sender = env.sender(env.postfix.smtp_addr()).await?;
    let id = sender
        .intake
        .accept(&fse_meta("F0002"), &b2("ce2"))
        .await?
        .lot_id;
    assert_eq!(sender.run_once().await?, 0);
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Blocked);
    assert!(lot.reason.starts_with("[CE2]"), "{}", lot.reason);
    assert!(
        env.caisse_mails()?.is_empty(),
        "nothing sent, encrypted or not"
    );
    Ok(())
}
