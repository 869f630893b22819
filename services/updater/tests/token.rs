//! Release signing with keys in a real SoftHSM2 token (PKCS#11 through passerelle-keystore):
//! the device verifies a repository whose root, targets, snapshot and timestamp were signed
//! by the token, and the signed root carries no development marker.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{BOARD, Device, in_days, serve};
use passerelle_harness::SoftHsm;
use passerelle_keystore::{KeyAlgorithm, KeyRef, Keystore, KeystoreConfig};
use passerelle_updater::token::TokenKeySource;
use passerelle_updater::vendor::{self, Bundle, Expiries, RootKeys};
use passerelle_updater::{CheckOutcome, check_and_download};
use tough::key_source::KeySource;

#[tokio::test]
async fn repository_signed_with_token_keys_is_verified_by_the_device() {
    let hsm = SoftHsm::builder().build().unwrap();
    hsm.set_process_env();
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, format!("{}\n", hsm.token().user_pin)).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ks = Keystore::open(&KeystoreConfig {
        module: hsm.module_path().to_owned(),
        token_label: hsm.token().label.clone(),
        pin_file,
    })
    .await
    .unwrap();
    let mut sources: Vec<Vec<Box<dyn KeySource>>> = Vec::new();
    for label in ["tuf-root", "tuf-online"] {
        ks.generate(label, KeyAlgorithm::EcP256).await.unwrap();
        let key = ks.key(&KeyRef::Label(label.into())).await.unwrap();
        sources.push(vec![Box::new(TokenKeySource::new(key).unwrap())]);
    }
    let rsa = ks.generate("tls-rsa", KeyAlgorithm::Rsa2048).await.unwrap();
    let rsa = ks.key(&KeyRef::Label(rsa.label)).await.unwrap();
    assert!(TokenKeySource::new(rsa).is_err(), "TUF keys are P-256 only");

    let repo = dir.path().join("repo");
    let keys = RootKeys {
        root: &sources[0],
        online: &sources[1],
        development: false,
    };
    vendor::init_root(&repo, &keys, in_days(365)).await.unwrap();
    let root = std::fs::read_to_string(repo.join("metadata/1.root.json")).unwrap();
    assert!(!root.contains("passerelle_dev_keys"));
    let image = common::image_bytes("1.1.0", 100_000);
    let image_path = dir.path().join("image.img");
    std::fs::write(&image_path, &image).unwrap();
    let bundle = Bundle {
        image: image_path,
        board: BOARD.into(),
        version: "1.1.0".parse().unwrap(),
    };
    let exp = Expiries {
        targets: in_days(30),
        snapshot: in_days(30),
        timestamp: in_days(1),
    };
    vendor::publish(&repo, &bundle, &sources[1], exp)
        .await
        .unwrap();

    let server = serve(repo.clone()).await;
    let dev = Device::new_with_root(&repo.join("metadata/1.root.json"), &server.url, "1.0.0");
    let out = check_and_download(&dev.cfg, &dev.slot).await.unwrap();
    assert!(matches!(out, CheckOutcome::Written(_)), "{out:?}");
    assert_eq!(&dev.slot_bytes()[..image.len()], &image[..]);
}
