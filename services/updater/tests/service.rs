//! The daemon loop: polls the vendor, installs, arms, reports; reports a fallback at start.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Vendor, serve};
use passerelle_updater::boot::{EntryTemplate, Slot, Slots as _, SystemdBoot};
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
    let (_commands, commands_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::serve(
        config,
        "1.0.0".parse().unwrap(),
        slots,
        tx,
        commands_rx,
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

#[tokio::test]
async fn release_that_fell_back_is_never_retried_and_reboot_now_reboots_into_a_newer_one() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 100_000).await;
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
    // 1.1.0 was armed in slot B and used up its tries: systemd-boot came back to A.
    slots.arm("1.1.0".parse().unwrap(), 1).unwrap();
    let entries = esp.join("loader/entries");
    std::fs::rename(
        entries.join("passerelle-b+1-0.conf"),
        entries.join("passerelle-b+0-1.conf"),
    )
    .unwrap();
    let reboot = dev.dir.path().join("reboot");
    let config: UpdaterConfig = serde_json::from_value(serde_json::json!({
        "vendor_url": server.url.to_string(),
        "board": common::BOARD,
        "trusted_root": dev.cfg.trusted_root,
        "datastore": dev.cfg.datastore,
        "staging": dev.cfg.staging,
        "interval_secs": 3600,
        "jitter_secs": 0,
        "reboot": "manual",
        "reboot_request": reboot,
    }))
    .unwrap();
    let (tx, mut rx) = watch::channel(UpdateStatus::Idle);
    let (commands, commands_rx) = tokio::sync::mpsc::channel(4);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::serve(
        config,
        "1.0.0".parse().unwrap(),
        slots,
        tx,
        commands_rx,
        async {
            let _ = stop_rx.await;
        },
    ));
    let wait = |rx: &mut watch::Receiver<UpdateStatus>, f: fn(&UpdateStatus) -> bool| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), rx.wait_for(f))
                .await
                .unwrap()
                .unwrap()
                .clone()
        }
    };
    let fell_back = wait(&mut rx, |s| matches!(s, UpdateStatus::FellBack(_))).await;
    let UpdateStatus::FellBack(f) = fell_back else {
        unreachable!()
    };
    assert_eq!(f.version, Some("1.1.0".parse().unwrap()));
    commands.send(service::Command::CheckNow).await.unwrap();
    wait(&mut rx, |s| *s == UpdateStatus::UpToDate).await;
    assert!(
        dev.slot_untouched(),
        "the release that failed is not installed again"
    );

    vendor.publish("1.2.0", 100_000).await;
    commands.send(service::Command::CheckNow).await.unwrap();
    let pending = wait(&mut rx, |s| matches!(s, UpdateStatus::RebootPending { .. })).await;
    assert_eq!(
        pending,
        UpdateStatus::RebootPending {
            version: "1.2.0".parse().unwrap()
        }
    );
    assert!(!reboot.exists(), "manual: no reboot before asked");
    commands.send(service::Command::RebootNow).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reboot.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "reboot never requested"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[tokio::test]
async fn corrupt_entry_of_the_inactive_slot_is_removed_and_updates_go_on() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 100_000).await;
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
    let corrupt = esp.join("loader/entries/passerelle-b+x-y.conf");
    std::fs::write(&corrupt, "title Passerelle 9.9.9 (slot b)\nversion 9.9").unwrap();
    let config: UpdaterConfig = serde_json::from_value(serde_json::json!({
        "vendor_url": server.url.to_string(),
        "board": common::BOARD,
        "trusted_root": dev.cfg.trusted_root,
        "datastore": dev.cfg.datastore,
        "staging": dev.cfg.staging,
        "interval_secs": 0,
        "jitter_secs": 0,
        "reboot": "manual",
    }))
    .unwrap();
    let (tx, mut rx) = watch::channel(UpdateStatus::Idle);
    let (_commands, commands_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::serve(
        config,
        "1.0.0".parse().unwrap(),
        slots,
        tx,
        commands_rx,
        async {
            let _ = stop_rx.await;
        },
    ));
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| matches!(s, UpdateStatus::RebootPending { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!corrupt.exists());
    assert!(esp.join("loader/entries/passerelle-b+3-0.conf").exists());
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
