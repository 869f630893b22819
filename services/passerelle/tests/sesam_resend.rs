//! `passerelle sesam resend` on the lot store a daemon uses: a rejected lot is put back to
//! `received` with a new round (the daemon's sender queues it); other states are refused
//! with the reason.

use std::process::Command;

use passerelle_billing::{Intake, LotMeta, LotState, LotStore, RecipientKind};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_sesam::{Env, Flow};

fn resend(dir: &std::path::Path, id: &str) -> anyhow::Result<(bool, Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["sesam", "resend", id, "--state-dir"])
        .arg(dir)
        .output()?;
    Ok((
        out.status.success(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn sesam_resend_puts_a_rejected_lot_back_and_refuses_other_states() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The daemon's side stays open while the CLI writes the same store.
    let intake = Intake {
        store: LotStore::open(&dir.path().join("lots")).await?,
        queue: Queue::open_sqlite(dir.path().join("queue"), QueueConfig::default()).await?,
        max_lot_bytes: 1 << 20,
    };
    let mut lot = format!("{:<128}", "000TE12345678901234CP  B2128").into_bytes();
    lot.extend_from_slice(b"\r\n");
    let meta = LotMeta {
        flow: Flow::Fse,
        env: Env::Test,
        recipient: RecipientKind::Amo,
        subject: "SV140610/00000001".into(),
        file_name: "F0001".into(),
    };
    let id = intake.accept(&meta, &lot).await?.lot_id;

    let (ok, code, text) = resend(dir.path(), id.as_str())?;
    assert!(!ok && code == Some(1), "{text}");
    assert!(text.contains("already waiting to be sent"), "{text}");

    let store = &intake.store;
    store.transition(&id, LotState::Encrypted, "test").await?;
    store.mark_sent(&id, "<m1@passerelle.test>").await?;
    store
        .transition(&id, LotState::Rejected, "negative ARL")
        .await?;
    let (ok, _, text) = resend(dir.path(), id.as_str())?;
    assert!(ok, "{text}");
    assert!(text.contains("round 1"), "{text}");
    let after = store.get(&id).await?.expect("lot");
    assert_eq!((after.state, after.round), (LotState::Received, 1));
    // What the daemon's sender does at its next pass: the new round is queued once.
    assert_eq!(intake.requeue_received().await?, 1);
    let leased = intake
        .queue
        .lease(
            passerelle_billing::QUEUE_KIND,
            16,
            std::time::Duration::from_secs(60),
        )
        .await?;
    assert_eq!(leased.len(), 2, "the first round and the resend");

    let (ok, code, text) = resend(dir.path(), "not-a-lot")?;
    assert!(!ok && code == Some(1), "{text}");
    let (ok, _, text) = resend(dir.path(), &"0".repeat(32))?;
    assert!(!ok && text.contains("unknown"), "{text}");
    Ok(())
}
