//! Returns over IMAP (STARTTLS, LOGIN) from the real Dovecot billing mailbox: the same ARL
//! and service-message handling as POP3, each return handled once (UID bookkeeping), then
//! deleted or flagged as configured.

mod common;

use common::{BILLING, Front, arl, b2, fse_meta, noemie_mail, service_mail};
use passerelle_billing::{AfterHandling, LotId, LotState, ReturnKind, Sender};

async fn sent_lot(seed: &str) -> anyhow::Result<(Front, Sender, LotId, String, Vec<u8>)> {
    let front = Front::start(true)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let content = b2(seed);
    let id = sender
        .intake
        .accept(&fse_meta("F0200"), &content)
        .await?
        .lot_id;
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(1)?;
    let (plain, message_id) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    assert_eq!(plain, content);
    Ok((front, sender, id, message_id, content))
}

async fn state(sender: &Sender, id: &LotId) -> anyhow::Result<LotState> {
    Ok(sender.intake.store.get(id).await?.expect("lot").state)
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_arl_acknowledges_the_lot_once_and_the_return_is_deleted() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("imap-arl").await?;
    let returns = front.returns(&sender);
    let route = front.imap_route(AfterHandling::Delete)?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    let handled = returns.poll_imap(&route).await?;
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].kind, ReturnKind::Arl { positive: true });
    assert!(handled[0].changed);
    assert_eq!(state(&sender, &id).await?, LotState::Acknowledged);
    assert_eq!(
        front.dovecot.inbox_count(BILLING)?,
        0,
        "deleted after handling"
    );

    // Duplicate ARLs (one gzipped): idempotent; nothing handled twice.
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &arl(true))?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE/Z", &gz.finish()?))?;
    let handled = returns.poll_imap(&route).await?;
    assert_eq!(handled.len(), 2);
    assert!(
        handled
            .iter()
            .all(|h| !h.changed && h.lot.as_ref() == Some(&id))
    );
    assert!(returns.poll_imap(&route).await?.is_empty());
    let acks = sender
        .intake
        .store
        .history(&id)
        .await?
        .iter()
        .filter(|t| t.to == LotState::Acknowledged)
        .count();
    assert_eq!(acks, 1);
    assert_eq!(
        std::fs::read_dir(&returns.raw_dir)?.count(),
        3,
        "all kept raw"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_flag_mode_keeps_the_mails_and_handles_each_return_once() -> anyhow::Result<()> {
    let (front, sender, id, mid, content) = sent_lot("imap-flag").await?;
    let returns = front.returns(&sender);
    let route = front.imap_route(AfterHandling::Flag("$PasserelleHandled".into()))?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(false)))?;
    let handled = returns.poll_imap(&route).await?;
    assert_eq!(handled[0].kind, ReturnKind::Arl { positive: false });
    assert_eq!(state(&sender, &id).await?, LotState::Rejected);
    // Kept in the folder, flagged, not handled again.
    assert!(returns.poll_imap(&route).await?.is_empty());
    assert_eq!(front.dovecot.inbox_count(BILLING)?, 1);
    assert_eq!(
        sender.run_once().await?,
        0,
        "a negative ARL never resends by itself"
    );

    // A 4005 about the same send: the same content goes out again.
    front.answer(&service_mail(&mid, 4005, "Pièce jointe chiffrée en erreur"))?;
    let handled = returns.poll_imap(&route).await?;
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].kind, ReturnKind::Service { code: 4005 });
    assert_eq!(state(&sender, &id).await?, LotState::Received);
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(2)?;
    for mail in front.caisse_mails()? {
        assert_eq!(
            front.caisse_decrypt(&mail)?.0,
            content,
            "the same content twice"
        );
    }
    assert!(returns.poll_imap(&route).await?.is_empty());
    assert_eq!(front.dovecot.inbox_count(BILLING)?, 2);
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!((lot.state, lot.sends), (LotState::Sent, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_bad_returns_are_kept_and_noted_without_changing_the_lot() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("imap-bad").await?;
    let returns = front.returns(&sender);
    let route = front.imap_route(AfterHandling::Delete)?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", b"garbage"))?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE/K", &arl(true)))?;
    let two = format!(
        "From: caisse@passerelle.test\r\nTo: facturation@passerelle.test\r\nSubject: ARL\r\n\
         In-Reply-To: {mid}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
         --B\r\nContent-Type: Application/EDI-consent\r\nContent-Description: ARLTEST/NOEMIE\r\n\r\n000A@\r\n\
         --B\r\nContent-Type: Application/EDI-consent\r\nContent-Description: ARLTEST/NOEMIE\r\n\r\n000B@\r\n--B--\r\n"
    );
    front.answer(&two)?;
    let handled = returns.poll_imap(&route).await?;
    let whys: Vec<String> = handled
        .iter()
        .map(|h| match &h.kind {
            ReturnKind::Problem(why) => why.clone(),
            other => panic!("expected a problem, got {other:?}"),
        })
        .collect();
    assert_eq!(whys.len(), 3, "{whys:?}");
    assert!(
        whys[0].contains("corrupt") && whys[0].contains("000"),
        "{whys:?}"
    );
    assert!(whys[1].contains("encrypted return"), "{whys:?}");
    assert!(whys[2].contains("unexpected MIME layout"), "{whys:?}");
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Sent);
    assert!(
        lot.reason.contains("unexpected MIME layout"),
        "{}",
        lot.reason
    );
    assert_eq!(std::fs::read_dir(&returns.raw_dir)?.count(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_refuses_to_log_in_with_a_bad_password_and_says_so() -> anyhow::Result<()> {
    let (front, sender, _, _, _) = sent_lot("imap-login").await?;
    let mut route = front.imap_route(AfterHandling::Delete)?;
    route.password = "wrong".into();
    let err = front
        .returns(&sender)
        .poll_imap(&route)
        .await
        .expect_err("bad password");
    assert!(err.to_string().contains("LOGIN"), "{err}");
    Ok(())
}
