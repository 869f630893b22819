//! Returns against real peers: the lot goes out through a real Postfix to the fake caisse;
//! the caisse answers ARLs and service messages into the billing mailbox of a real Dovecot,
//! which passerelle reads over POP3 with STLS.

mod common;

use std::time::{Duration, SystemTime};

use common::{Front, arl, b2, fse_meta, noemie_mail, service_mail};
use passerelle_billing::{LotId, LotState, ReturnKind, Sender};
use passerelle_sesam::{Directory, Env, Flow};

/// One lot sent and received by the caisse: (front, sender, lot id, Message-ID, content).
async fn sent_lot(seed: &str) -> anyhow::Result<(Front, Sender, LotId, String, Vec<u8>)> {
    let front = Front::start(true)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let content = b2(seed);
    let id = sender
        .intake
        .accept(&fse_meta("F0100"), &content)
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
async fn duplicate_arl_is_idempotent() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("arl").await?;
    let returns = front.returns(&sender);
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].kind, ReturnKind::Arl { positive: true });
    assert!(handled[0].changed);
    assert_eq!(state(&sender, &id).await?, LotState::Acknowledged);

    // The same ARL twice more (one of them gzipped, `/Z`): no change, no regression.
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &arl(true))?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE/Z", &gz.finish()?))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled.len(), 2);
    assert!(
        handled
            .iter()
            .all(|h| !h.changed && h.lot.as_ref() == Some(&id)),
        "{handled:?}"
    );
    assert_eq!(state(&sender, &id).await?, LotState::Acknowledged);
    let acks = sender
        .intake
        .store
        .history(&id)
        .await?
        .iter()
        .filter(|t| t.to == LotState::Acknowledged)
        .count();
    assert_eq!(acks, 1);
    // The mailbox is emptied only after handling; nothing is lost: all three kept raw.
    assert!(returns.poll_pop3(&front.pop3_route()?).await?.is_empty());
    assert_eq!(std::fs::read_dir(&returns.raw_dir)?.count(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_arl_rejects_the_lot_flagged_for_resend() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("neg").await?;
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(false)))?;
    front
        .returns(&sender)
        .poll_pop3(&front.pop3_route()?)
        .await?;
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Rejected);
    assert!(lot.reason.contains("negative ARL"), "{}", lot.reason);
    // Never resent automatically without a 4005/4025 (digest §8 #9).
    assert_eq!(sender.run_once().await?, 0);
    Ok(())
}

/// 4005 and 4025: the same content goes out again, encrypted for the current certificate.
async fn resend_case(code: u16, label: &str) -> anyhow::Result<()> {
    let (front, sender, id, mid, content) = sent_lot(&format!("sv{code}")).await?;
    let slapd = front.directory()?;
    let mut returns = front.returns(&sender);
    returns.directory = Some(Directory::new(slapd.url(), Duration::from_secs(10))?);
    front.answer(&service_mail(&mid, code, label))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled[0].kind, ReturnKind::Service { code });
    assert_eq!(state(&sender, &id).await?, LotState::Received);
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(2)?;
    // The certificate was refreshed from the directory first (digest §7 case 31): only the
    // resent mail opens with the renewed key, and it holds the same content.
    let mut resent = Vec::new();
    for mail in front.caisse_mails()? {
        if let Ok(plain) = front.caisse_decrypt_renewed(&mail) {
            resent.push(plain);
        }
    }
    assert_eq!(
        resent,
        [content],
        "the same content, re-encrypted for the renewed certificate"
    );
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!((lot.state, lot.sends), (LotState::Sent, 2));

    // The same service message again about the first send: the lot was already sent again,
    // so nothing is resent (digest §3.2, §7 case 31/34).
    front.answer(&service_mail(&mid, code, label))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled[0].lot, None);
    assert_eq!(sender.run_once().await?, 0);
    assert_eq!(front.caisse_mails()?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sv_4005_resends_the_same_content_re_encrypted() -> anyhow::Result<()> {
    resend_case(4005, "Pièce jointe chiffrée en erreur").await
}

#[tokio::test(flavor = "multi_thread")]
async fn sv_4025_resends_the_same_content_encrypted() -> anyhow::Result<()> {
    resend_case(4025, "Pièce jointe non chiffrée").await
}

#[tokio::test(flavor = "multi_thread")]
async fn sv_4015_refreshes_the_certificate_without_resend() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("sv4015").await?;
    let slapd = front.directory()?;
    let mut returns = front.returns(&sender);
    returns.directory = Some(Directory::new(slapd.url(), Duration::from_secs(10))?);
    front.answer(&service_mail(&mid, 4015, "Pièce jointe chiffrée warning"))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled[0].kind, ReturnKind::Service { code: 4015 });
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Sent);
    assert!(lot.reason.contains("4015"), "{}", lot.reason);
    assert_eq!(sender.run_once().await?, 0, "no resend");
    assert_eq!(front.caisse_mails()?.len(), 1);

    // The renewed certificate was fetched from the directory: the next lot uses it.
    let renewed = front.pki.cert(common::SV_AMO_TEST_RENEWED)?.der().to_vec();
    let stored = sender
        .certs
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .stored(Flow::Fse, Env::Test)
        .map(<[u8]>::to_vec);
    assert_eq!(stored, Some(renewed));
    let next = b2("after4015");
    sender.intake.accept(&fse_meta("F0101"), &next).await?;
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(2)?;
    let mut decrypted = Vec::new();
    for mail in front.caisse_mails()? {
        if let Ok(plain) = front.caisse_decrypt_renewed(&mail) {
            decrypted.push(plain);
        }
    }
    assert_eq!(
        decrypted,
        [next],
        "only the new lot, for the renewed certificate"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_arl_past_its_deadline_makes_the_lot_overdue() -> anyhow::Result<()> {
    let (front, sender, id, mid, _) = sent_lot("overdue").await?;
    let store = &sender.intake.store;
    let deadline = Duration::from_secs(3 * 86_400);
    assert!(
        store
            .mark_overdue(deadline, SystemTime::now())
            .await?
            .is_empty()
    );
    let later = SystemTime::now() + deadline + Duration::from_secs(60);
    assert_eq!(store.mark_overdue(deadline, later).await?, vec![id.clone()]);
    let lot = store.get(&id).await?.expect("lot");
    assert_eq!(lot.state, LotState::Overdue);
    assert!(lot.reason.contains("no ARL"), "{}", lot.reason);
    // The late ARL still closes it.
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    front
        .returns(&sender)
        .poll_pop3(&front.pop3_route()?)
        .await?;
    assert_eq!(state(&sender, &id).await?, LotState::Acknowledged);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_returns_are_kept_and_noted_on_the_lot_without_changing_its_state() -> anyhow::Result<()>
{
    let (front, sender, id, mid, _) = sent_lot("bad").await?;
    let returns = front.returns(&sender);
    // Corrupt ARL: no NOEMIE header.
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", b"garbage"))?;
    // Encrypted return (returns are unencrypted).
    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE/K", &arl(true)))?;
    // Unexpected MIME layout: two NOEMIE files in one mail.
    let two = format!(
        "From: caisse@passerelle.test\r\nTo: facturation@passerelle.test\r\nSubject: ARL\r\n\
         In-Reply-To: {mid}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
         --B\r\nContent-Type: Application/EDI-consent\r\nContent-Description: ARLTEST/NOEMIE\r\n\r\n000A@\r\n\
         --B\r\nContent-Type: Application/EDI-consent\r\nContent-Description: ARLTEST/NOEMIE\r\n\r\n000B@\r\n--B--\r\n"
    );
    front.answer(&two)?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    let whys: Vec<String> = handled
        .iter()
        .map(|h| match &h.kind {
            ReturnKind::Problem(why) => why.clone(),
            other => panic!("expected a problem, got {other:?}"),
        })
        .collect();
    assert!(
        whys[0].contains("corrupt") && whys[0].contains("000"),
        "{whys:?}"
    );
    assert!(whys[1].contains("encrypted return"), "{whys:?}");
    assert!(whys[2].contains("unexpected MIME layout"), "{whys:?}");
    let lot = sender.intake.store.get(&id).await?.expect("lot");
    assert_eq!(
        lot.state,
        LotState::Sent,
        "no state change on unusable returns"
    );
    assert!(
        lot.reason.contains("unexpected MIME layout"),
        "{}",
        lot.reason
    );
    assert_eq!(
        std::fs::read_dir(&returns.raw_dir)?.count(),
        3,
        "all kept raw"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rsp_files_are_handed_to_the_lps() -> anyhow::Result<()> {
    let (front, sender, _, mid, _) = sent_lot("rsp").await?;
    let returns = front.returns(&sender);
    let rsp = b"000CP0000000000001TE12345678901234RSP@100@".to_vec();
    front.answer(&noemie_mail(&mid, "RSP", "RSPTEST/NOEMIE", &rsp))?;
    let handled = returns.poll_pop3(&front.pop3_route()?).await?;
    assert_eq!(handled[0].kind, ReturnKind::Rsp);
    let files: Vec<_> = std::fs::read_dir(&returns.lps_out_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0])?, rsp);
    Ok(())
}
