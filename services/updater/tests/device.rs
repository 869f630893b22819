//! Device side against real TUF repositories served over HTTP on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, Vendor, in_days, serve};
use passerelle_updater::{CheckOutcome, UpdateError, check_and_download};

const LEN: usize = (2 << 20) + 12_345;

async fn check(dev: &Device) -> Result<CheckOutcome, UpdateError> {
    check_and_download(&dev.cfg, &dev.slot).await
}

/// A metadata rejection: clear reason containing `needle`, slot not touched at all.
fn assert_metadata_rejected(r: Result<CheckOutcome, UpdateError>, dev: &Device, needle: &str) {
    match r {
        Err(UpdateError::Metadata { reason, .. }) => assert!(
            reason.to_lowercase().contains(needle),
            "reason {reason:?} should mention {needle:?}"
        ),
        other => panic!("expected a metadata rejection mentioning {needle:?}, got {other:?}"),
    }
    assert!(dev.slot_untouched(), "no byte may be written to the slot");
}

#[tokio::test]
async fn update_is_streamed_into_the_inactive_slot_and_verified() {
    let vendor = Vendor::new().await;
    let image = vendor.publish("1.1.0", LEN).await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let CheckOutcome::Written(info) = check(&dev).await.unwrap() else {
        panic!("expected an update")
    };
    assert_eq!(info.version.to_string(), "1.1.0");
    assert_eq!(info.size, LEN as u64);
    let slot = dev.slot_bytes();
    assert_eq!(&slot[..LEN], &image[..]);
    assert!(
        slot[LEN..].iter().all(|b| *b == 0xAA),
        "nothing written past the image"
    );
    assert!(dev.staging_gone(), "the staging copy goes once installed");
}

#[tokio::test]
async fn newest_image_for_this_board_is_chosen_and_current_version_is_up_to_date() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 10_000).await;
    let newest = vendor.publish("1.2.0", 20_000).await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let CheckOutcome::Written(info) = check(&dev).await.unwrap() else {
        panic!("expected an update")
    };
    assert_eq!(info.version.to_string(), "1.2.0");
    assert_eq!(&dev.slot_bytes()[..newest.len()], &newest[..]);

    let current = Device::new(&vendor, &server.url, "1.2.0");
    assert_eq!(check(&current).await.unwrap(), CheckOutcome::UpToDate);
    assert!(current.slot_untouched());
}

#[tokio::test]
async fn target_whose_hash_differs_is_rejected_with_the_slot_byte_for_byte_untouched() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", LEN).await;
    // Same length, one byte changed on the server after signing.
    let path = vendor.target_file("1.1.0");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[LEN / 2] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let err = check(&dev).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            UpdateError::HashMismatch { .. } | UpdateError::Download { .. }
        ) && msg.to_lowercase().contains("hash"),
        "{msg}"
    );
    assert!(
        dev.slot_untouched(),
        "the image is verified in staging before any byte reaches the slot"
    );
    assert!(dev.staging_gone(), "a refused image leaves no staging file");
}

#[tokio::test]
async fn expired_timestamp_is_rejected_as_a_freeze_attack() {
    let vendor = Vendor::new().await;
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    vendor
        .publish_with("1.1.0", 10_000, &vendor.online(), past)
        .await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    assert_metadata_rejected(check(&dev).await, &dev, "expired");
}

#[tokio::test]
async fn older_release_is_refused_as_a_rollback() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 10_000).await;
    let old_meta: Vec<_> = ["timestamp.json", "snapshot.json", "targets.json"]
        .iter()
        .map(|f| (vendor.meta(f), std::fs::read(vendor.meta(f)).unwrap()))
        .collect();
    vendor.publish("1.2.0", 10_000).await;
    let server = serve(vendor.repo()).await;

    // An image older than (or equal to) the running one is never installed.
    let newer_box = Device::new(&vendor, &server.url, "1.3.0");
    assert_eq!(check(&newer_box).await.unwrap(), CheckOutcome::UpToDate);
    assert!(newer_box.slot_untouched());

    // A box that saw release 2 is then served the replayed release 1 metadata.
    let dev = Device::new(&vendor, &server.url, "1.2.0");
    assert_eq!(check(&dev).await.unwrap(), CheckOutcome::UpToDate);
    for (path, bytes) in &old_meta {
        std::fs::write(path, bytes).unwrap();
    }
    assert_metadata_rejected(check(&dev).await, &dev, "version");
}

#[tokio::test]
async fn snapshot_and_targets_from_different_releases_are_rejected() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 10_000).await;
    let old_targets = std::fs::read(vendor.meta("targets.json")).unwrap();
    vendor.publish("1.2.0", 10_000).await;
    std::fs::write(vendor.meta("targets.json"), old_targets).unwrap();
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    assert_metadata_rejected(check(&dev).await, &dev, "targets");
}

#[tokio::test]
async fn metadata_larger_than_its_limit_is_rejected_as_endless_data() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 10_000).await;
    let server = serve(vendor.repo()).await;
    let mut dev = Device::new(&vendor, &server.url, "1.0.0");
    let ts_len = std::fs::metadata(vendor.meta("timestamp.json"))
        .unwrap()
        .len();
    dev.cfg.limits.max_timestamp_size = ts_len - 1;
    assert_metadata_rejected(check(&dev).await, &dev, "maximum size");
}

#[tokio::test]
async fn bundle_signed_by_a_key_the_root_does_not_trust_is_rejected() {
    let vendor = Vendor::new().await;
    let rogue = vendor.key("rogue");
    let rogue_keys = vec![passerelle_updater::vendor::dev_key(&rogue).unwrap()];
    // The editor itself refuses to sign with keys the root does not list…
    let image = vendor.dir.path().join("x.img");
    std::fs::write(&image, b"x").unwrap();
    let bundle = passerelle_updater::vendor::Bundle {
        image,
        board: common::BOARD.into(),
        version: "1.1.0".parse().unwrap(),
    };
    let exp = passerelle_updater::vendor::Expiries {
        targets: in_days(1),
        snapshot: in_days(1),
        timestamp: in_days(1),
    };
    assert!(
        passerelle_updater::vendor::publish(&vendor.repo(), &bundle, &rogue_keys, exp)
            .await
            .is_err()
    );
    // …so the attacker publishes from their own root: same layout, keys unknown to the box.
    let attacker = Vendor::new().await;
    attacker.publish("1.1.0", 10_000).await;
    let server = serve(attacker.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    assert_metadata_rejected(check(&dev).await, &dev, "signature");
}

#[tokio::test]
async fn truncated_download_is_rejected_with_the_slot_untouched() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", LEN).await;
    let server = serve(vendor.repo()).await;
    *server.cut.lock().unwrap() = Some((".img".into(), LEN / 2));
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let err = check(&dev).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Download { .. } | UpdateError::Length { .. }
        ),
        "{err}"
    );
    assert!(dev.slot_untouched());
    assert!(dev.staging_gone());
}

#[tokio::test]
async fn check_reports_the_update_without_touching_the_slot() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", 10_000).await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let info = passerelle_updater::check(&dev.cfg).await.unwrap().unwrap();
    assert_eq!(info.version.to_string(), "1.1.0");
    assert!(dev.slot_untouched());
}

#[tokio::test]
async fn slot_entries_are_retired_only_once_the_image_verified_and_before_the_slot_changes() {
    let vendor = Vendor::new().await;
    vendor.publish("1.1.0", LEN).await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let called = std::cell::Cell::new(false);
    let out = passerelle_updater::check_and_install(&dev.cfg, &dev.slot, || {
        assert!(dev.slot_untouched(), "the hook runs before the first byte");
        called.set(true);
        Ok(())
    })
    .await
    .unwrap();
    assert!(matches!(out, CheckOutcome::Written(_)));
    assert!(called.get());

    let bad_vendor = Vendor::new().await;
    bad_vendor.publish("1.1.0", LEN).await;
    let path = bad_vendor.target_file("1.1.0");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
    let server = serve(bad_vendor.repo()).await;
    let dev = Device::new(&bad_vendor, &server.url, "1.0.0");
    let err = passerelle_updater::check_and_install(&dev.cfg, &dev.slot, || {
        panic!("a bad image must not retire the slot's entries")
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::HashMismatch { .. } | UpdateError::Download { .. }
        ) && err.to_string().to_lowercase().contains("hash"),
        "{err}"
    );
    assert!(dev.slot_untouched());
}
