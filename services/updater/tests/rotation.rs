//! Root rotation: accepted when the new root is signed by the old and the new root keys.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, Vendor, in_days, serve};
use passerelle_updater::vendor::{self, RootKeys};
use passerelle_updater::{CheckOutcome, UpdateError, check_and_download};

async fn rotate(vendor: &Vendor) -> Vec<Box<dyn tough::key_source::KeySource>> {
    let old_root = vec![vendor::dev_key(&vendor.root_key).unwrap()];
    let new_root = vec![vendor::dev_key(&vendor.key("root2")).unwrap()];
    let new_online = vec![vendor::dev_key(&vendor.key("online2")).unwrap()];
    vendor::rotate_root(
        &vendor.repo(),
        &old_root,
        &RootKeys {
            root: &new_root,
            online: &new_online,
            development: true,
        },
        in_days(365),
    )
    .await
    .unwrap();
    new_online
}

#[tokio::test]
async fn root_rotation_signed_by_old_and_new_keys_is_followed() {
    let vendor = Vendor::new().await;
    let online2 = rotate(&vendor).await;
    let image = vendor
        .publish_with("1.1.0", 50_000, &online2, in_days(1))
        .await;
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    assert!(matches!(
        check_and_download(&dev.cfg, &dev.slot).await.unwrap(),
        CheckOutcome::Written(_)
    ));
    assert_eq!(&dev.slot_bytes()[..image.len()], &image[..]);
}

#[tokio::test]
async fn root_rotation_without_the_old_keys_signature_is_refused() {
    let vendor = Vendor::new().await;
    let online2 = rotate(&vendor).await;
    vendor
        .publish_with("1.1.0", 50_000, &online2, in_days(1))
        .await;
    // Strip the old root key's signature from 2.root.json: only the new keys vouch for it.
    let path = vendor.meta("2.root.json");
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let new_ids = root["signed"]["roles"]["root"]["keyids"].clone();
    root["signatures"]
        .as_array_mut()
        .unwrap()
        .retain(|s| new_ids.as_array().unwrap().contains(&s["keyid"]));
    assert_eq!(root["signatures"].as_array().unwrap().len(), 1);
    std::fs::write(&path, serde_json::to_vec(&root).unwrap()).unwrap();
    let server = serve(vendor.repo()).await;
    let dev = Device::new(&vendor, &server.url, "1.0.0");
    let err = check_and_download(&dev.cfg, &dev.slot).await.unwrap_err();
    assert!(matches!(err, UpdateError::Metadata { .. }), "{err}");
    assert!(err.to_string().contains("root"), "{err}");
    assert!(dev.slot_untouched());
}
