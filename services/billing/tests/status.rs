//! The status handle the web admin reads, and the operator's resend: a rejected lot goes out
//! again through the real Postfix with the same content; states where a resend makes no
//! sense are refused with the reason.

mod common;

use std::time::Duration;

use common::{Front, arl, b2, fse_meta, noemie_mail};
use passerelle_billing::{BillingError, BillingStatus, LotState};

#[tokio::test(flavor = "multi_thread")]
async fn resend_after_a_negative_arl_sends_the_same_content_and_the_status_shows_it()
-> anyhow::Result<()> {
    let front = Front::start(true)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let status = BillingStatus::new(sender.intake.clone(), Duration::from_secs(86_400));
    let content = b2("resend");
    let id = sender
        .intake
        .accept(&fse_meta("F0300"), &content)
        .await?
        .lot_id;

    // Waiting to be sent: a resend makes no sense.
    let err = status.resend(&id).await.expect_err("received");
    assert!(
        matches!(
            &err,
            BillingError::ResendRefused {
                state: "received",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(1)?;
    let (_, mid) = front.caisse_decrypt(&front.caisse_mails()?[0])?;
    let err = status.resend(&id).await.expect_err("sent");
    assert!(err.to_string().contains("ARL is awaited"), "{err}");

    front.answer(&noemie_mail(&mid, "ARL", "ARLTEST/NOEMIE", &arl(false)))?;
    let returns = front.returns(&sender);
    returns.poll_pop3(&front.pop3_route()?).await?;
    let detail = status.lot(&id).await?.expect("lot");
    assert_eq!(detail.lot.state, LotState::Rejected);
    let receipt = detail.lot.arl.clone().expect("ARL recorded on the lot");
    assert!(!receipt.positive);
    assert!(returns.raw_dir.join(&receipt.return_file).exists());
    let counts = status.counts().await?;
    assert_eq!(counts.len(), LotState::ALL.len());
    assert!(counts.contains(&(LotState::Rejected, 1)), "{counts:?}");

    let resent = status.resend(&id).await?;
    assert_eq!((resent.from, resent.round), (LotState::Rejected, 1));
    assert_eq!(
        status.lot(&id).await?.expect("lot").lot.state,
        LotState::Received
    );
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(2)?;
    // The resend is the mail that is not the first send.
    let mut resent = Vec::new();
    for mail in front.caisse_mails()? {
        let (plain, m) = front.caisse_decrypt(&mail)?;
        if m != mid {
            resent.push((plain, m));
        }
    }
    assert_eq!(resent.len(), 1);
    let (plain, mid2) = resent.remove(0);
    assert_eq!(plain, content, "the same content, encrypted again");

    // Positive ARL for the resend: acknowledged, and then a resend is refused.
    front.answer(&noemie_mail(&mid2, "ARL", "ARLTEST/NOEMIE", &arl(true)))?;
    returns.poll_pop3(&front.pop3_route()?).await?;
    let detail = status.lot(&id).await?.expect("lot");
    assert_eq!(
        (detail.lot.state, detail.lot.sends),
        (LotState::Acknowledged, 2)
    );
    assert!(detail.lot.arl.as_ref().is_some_and(|a| a.positive));
    let steps: Vec<_> = detail.history.iter().map(|t| t.to).collect();
    assert_eq!(
        steps,
        [
            LotState::Received,
            LotState::Encrypted,
            LotState::Sent,
            LotState::Rejected,
            LotState::Received,
            LotState::Encrypted,
            LotState::Sent,
            LotState::Acknowledged
        ]
    );
    let err = status.resend(&id).await.expect_err("acknowledged");
    assert!(err.to_string().contains("acknowledged"), "{err}");
    let unknown = passerelle_billing::LotId::of(b"nothing");
    assert!(matches!(
        status.resend(&unknown).await,
        Err(BillingError::UnknownLot { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn overdue_lots_are_listed_and_can_be_resent() -> anyhow::Result<()> {
    let front = Front::start(true)?;
    let sender = front.sender(front.postfix.smtp_addr()).await?;
    let status = BillingStatus::new(sender.intake.clone(), Duration::from_secs(60));
    let id = sender
        .intake
        .accept(&fse_meta("F0301"), &b2("late"))
        .await?
        .lot_id;
    assert_eq!(sender.run_once().await?, 1);
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    sender
        .intake
        .store
        .mark_overdue(status.arl_deadline(), later)
        .await?;
    let overdue = status.overdue().await?;
    assert_eq!(overdue.iter().map(|l| &l.id).collect::<Vec<_>>(), [&id]);
    let resent = status.resend(&id).await?;
    assert_eq!(resent.from, LotState::Overdue);
    assert_eq!(sender.run_once().await?, 1);
    front.wait_caisse(2)?;
    assert!(status.overdue().await?.is_empty());
    assert_eq!(status.lot(&id).await?.expect("lot").lot.sends, 2);
    Ok(())
}
