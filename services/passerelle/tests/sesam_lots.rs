//! `passerelle sesam lots` lists the billing lots with their states and reasons.

use std::process::Command;

use passerelle_billing::{Intake, LotMeta, LotState, LotStore, RecipientKind};
use passerelle_queue::{Queue, QueueConfig};
use passerelle_sesam::{Env, Flow};

#[tokio::test]
async fn sesam_lots_lists_states_and_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
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
    intake
        .store
        .transition(&id, LotState::Blocked, "[CE2] no CRL installed")
        .await?;
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["sesam", "lots", "--history", "--state-dir"])
        .arg(dir.path())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(id.as_str()) && text.contains("blocked"),
        "{text}"
    );
    assert!(text.contains("[CE2] no CRL installed"), "{text}");
    assert!(
        text.contains("- -> received") && text.contains("received -> blocked"),
        "{text}"
    );
    let only_sent = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["sesam", "lots", "--state", "sent", "--state-dir"])
        .arg(dir.path())
        .output()?;
    assert!(only_sent.status.success() && only_sent.stdout.is_empty());
    Ok(())
}
