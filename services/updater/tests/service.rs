//! The daemon loop: polls the vendor, installs, arms, reports; reports a fallback at start.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Vendor, serve};
use passerelle_updater::boot::{EntryTemplate, Slot, SystemdBoot};
use passerelle_updater::service::{self, UpdateStatus, UpdaterConfig};
use tokio::sync::watch;

#[tokio::test]
async fn service_installs_arms_and_reports_reboot_pending() {
    let vendor = Vendor::new().await;
    let image = vendor.publish("1.1.0", 200_000).await;
    let server = serve(vendor.repo()).await;
    let dev = common::Device::new(&vendor, &server.url, "1.0.0");
    let esp = dev.dir.path().join("esp");
    let slots = SystemdBoot::new(
        &esp,
        Slot::A,
        [dev.dir.path().join("slot-a"), dev.slot.clone()],
        EntryTemplate::standard(),
    );
    slots.install(Slot::A, "1.0.0".parse().unwrap()).unwrap();
    let config: UpdaterConfig = serde_json::from_value(serde_json::json!({
        "vendor_url": server.url.to_string(),
        "board": common::BOARD,
        "trusted_root": dev.cfg.trusted_root,
        "datastore": dev.cfg.datastore,
        "interval_secs": 0,
        "jitter_secs": 0,
    }))
    .unwrap();
    let (tx, mut rx) = watch::channel(UpdateStatus::Idle);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::serve(
        config,
        "1.0.0".parse().unwrap(),
        slots,
        tx,
        async {
            let _ = stop_rx.await;
        },
    ));
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| matches!(s, UpdateStatus::RebootPending { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(
        status,
        UpdateStatus::RebootPending {
            version: "1.1.0".parse().unwrap()
        }
    );
    assert_eq!(&dev.slot_bytes()[..image.len()], &image[..]);
    assert!(esp.join("loader/entries/passerelle-b+3-0.conf").exists());
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
