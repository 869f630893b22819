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

#[test]
fn reboot_policy_waits_until_the_chosen_time_utc() {
    use service::Reboot;
    let at = |s: &str| Reboot::At(s.into());
    // 2026-01-01T02:00:00Z
    let two_am = 1_767_232_800;
    assert_eq!(
        at("03:30").delay(two_am).unwrap(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        at("01:00").delay(two_am).unwrap(),
        Some(Duration::from_secs(23 * 3600))
    );
    assert_eq!(
        Reboot::Immediately.delay(two_am).unwrap(),
        Some(Duration::ZERO)
    );
    assert_eq!(Reboot::Manual.delay(two_am).unwrap(), None);
    assert!(at("25:00").delay(two_am).is_err());
    assert!(at("3h30").delay(two_am).is_err());
}

#[test]
fn running_version_is_the_image_version_of_os_release() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("os-release");
    std::fs::write(&p, "ID=debian\nIMAGE_ID=passerelle\nIMAGE_VERSION=2.0.1\n").unwrap();
    assert_eq!(
        service::running_version(&p).unwrap(),
        "2.0.1".parse().unwrap()
    );
    std::fs::write(&p, "ID=debian\n").unwrap();
    assert!(service::running_version(&p).is_err());
}

#[test]
fn trial_boot_is_told_from_a_committed_one() {
    use passerelle_updater::boot::Slots as _;
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path();
    let on_a = SystemdBoot::new(
        esp,
        Slot::A,
        [esp.join("a"), esp.join("b")],
        EntryTemplate::standard(),
    );
    on_a.install(Slot::A, "1.0.0".parse().unwrap()).unwrap();
    assert!(!on_a.on_trial().unwrap());
    on_a.arm("1.1.0".parse().unwrap(), 2).unwrap();
    let on_b = SystemdBoot::new(
        esp,
        Slot::B,
        [esp.join("a"), esp.join("b")],
        EntryTemplate::standard(),
    );
    assert!(on_b.on_trial().unwrap());
    on_b.commit().unwrap();
    assert!(!on_b.on_trial().unwrap());
}
