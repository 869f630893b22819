//! Vendor side: development keys, the root of trust, root rotation, and publishing an image as
//! a TUF repository (`<repo>/metadata/{N.root,root,targets,snapshot,timestamp}.json`,
//! `<repo>/targets/<image>`), all with tough's editor.
//!
//! File keys are for development only: their file names must end in [`DEV_KEY_SUFFIX`] and a
//! root trusting one carries `"passerelle_dev_keys": true` (signed), so a production build can
//! tell. Release keys live in a PKCS#11 token: [`crate::token::TokenKeySource`].

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Target};

use crate::error::UpdateError;
use crate::manifest::{ImageInfo, Version};

/// Required file-name suffix of development signing keys (PKCS#8 Ed25519, DER).
pub const DEV_KEY_SUFFIX: &str = ".dev-only.pk8";
const SPEC_VERSION: &str = "1.0.0";

/// Generates an Ed25519 development key at `path` (which must end in [`DEV_KEY_SUFFIX`]).
pub fn generate_dev_key(path: &Path) -> Result<(), UpdateError> {
    dev_key_name(path)?;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|e| UpdateError::vendor("keygen", e))?;
    std::fs::write(path, pkcs8.as_ref()).map_err(|e| UpdateError::io(path, e))
}

/// A development key file as a tough key source (refused unless named as development key).
pub fn dev_key(path: &Path) -> Result<Box<dyn KeySource>, UpdateError> {
    dev_key_name(path)?;
    Ok(Box::new(LocalKeySource {
        path: path.to_owned(),
    }))
}

fn dev_key_name(path: &Path) -> Result<(), UpdateError> {
    if path.to_string_lossy().ends_with(DEV_KEY_SUFFIX) {
        Ok(())
    } else {
        Err(UpdateError::Vendor {
            step: "key",
            reason: format!(
                "{} is a file key: file keys are for development only and must be named *{DEV_KEY_SUFFIX}",
                path.display()
            ),
        })
    }
}

/// Which keys sign which role. Threshold 1 for every role.
#[derive(Debug)]
pub struct RootKeys<'a> {
    pub root: &'a [Box<dyn KeySource>],
    /// Signs targets, snapshot and timestamp (the online roles).
    pub online: &'a [Box<dyn KeySource>],
    /// Any of them is a file key: the signed root says so (`passerelle_dev_keys`).
    pub development: bool,
}

async fn build_root(
    keys: &RootKeys<'_>,
    version: NonZeroU64,
    expires: jiff::Timestamp,
) -> Result<Root, UpdateError> {
    let mut root = Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: false,
        version,
        expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: if keys.development {
            HashMap::from([("passerelle_dev_keys".to_owned(), true.into())])
        } else {
            HashMap::new()
        },
    };
    for (role_types, sources) in [
        (&[RoleType::Root][..], keys.root),
        (
            &[RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp][..],
            keys.online,
        ),
    ] {
        let mut ids = Vec::new();
        for source in sources {
            let key = source
                .as_sign()
                .await
                .map_err(|e| UpdateError::Vendor {
                    step: "load key",
                    reason: e.to_string(),
                })?
                .tuf_key();
            let id = key.key_id().map_err(|e| UpdateError::vendor("key id", e))?;
            root.keys.insert(id.clone(), key);
            ids.push(id);
        }
        for role in role_types {
            root.roles.insert(
                *role,
                RoleKeys {
                    keyids: ids.clone(),
                    threshold: NonZeroU64::MIN,
                    _extra: HashMap::new(),
                },
            );
        }
    }
    Ok(root)
}

/// Creates `metadata/1.root.json` (and `root.json`, the copy shipped in images).
pub async fn init_root(
    repo: &Path,
    keys: &RootKeys<'_>,
    expires: jiff::Timestamp,
) -> Result<PathBuf, UpdateError> {
    let root = build_root(keys, NonZeroU64::MIN, expires).await?;
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        keys.root,
        &SystemRandom::new(),
    )
    .await
    .map_err(|e| UpdateError::vendor("sign root", e))?;
    write_root(repo, &signed).await
}

/// Writes root version N+1 trusting `new_keys`, signed by the current root keys
/// (`old_root_keys`) and by the new root keys, as TUF requires for rotation.
pub async fn rotate_root(
    repo: &Path,
    old_root_keys: &[Box<dyn KeySource>],
    new_keys: &RootKeys<'_>,
    expires: jiff::Timestamp,
) -> Result<PathBuf, UpdateError> {
    let current = current_root(repo)?;
    let version = current
        .version
        .checked_add(1)
        .ok_or_else(|| UpdateError::Vendor {
            step: "rotate root",
            reason: "root version overflow".into(),
        })?;
    let new_root = build_root(new_keys, version, expires).await?;
    let rng = SystemRandom::new();
    let by_old = SignedRole::new(
        new_root.clone(),
        &KeyHolder::Root(current),
        old_root_keys,
        &rng,
    )
    .await
    .map_err(|e| UpdateError::vendor("sign new root with the old keys", e))?;
    let signed = SignedRole::new(
        new_root.clone(),
        &KeyHolder::Root(new_root),
        new_keys.root,
        &rng,
    )
    .await
    .map_err(|e| UpdateError::vendor("sign new root with the new keys", e))?
    .add_old_signatures(by_old.signed().signatures.clone())
    .map_err(|e| UpdateError::vendor("merge root signatures", e))?;
    write_root(repo, &signed).await
}

fn current_root(repo: &Path) -> Result<Root, UpdateError> {
    let path = repo.join("metadata/root.json");
    let buf = std::fs::read(&path).map_err(|e| UpdateError::io(&path, e))?;
    let signed: tough::schema::Signed<Root> =
        serde_json::from_slice(&buf).map_err(|e| UpdateError::vendor("parse root.json", e))?;
    Ok(signed.signed)
}

async fn write_root(repo: &Path, signed: &SignedRole<Root>) -> Result<PathBuf, UpdateError> {
    let dir = repo.join("metadata");
    signed
        .write(&dir, false)
        .await
        .map_err(|e| UpdateError::vendor("write root", e))?;
    let latest = dir.join("root.json");
    std::fs::write(&latest, signed.buffer()).map_err(|e| UpdateError::io(&latest, e))?;
    Ok(latest)
}

/// One image to publish.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub image: PathBuf,
    pub board: String,
    pub version: Version,
}

/// Expiry of each online role (timestamp short, to bound freeze attacks).
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    pub targets: jiff::Timestamp,
    pub snapshot: jiff::Timestamp,
    pub timestamp: jiff::Timestamp,
}

/// Publishes `bundle` into `repo`, keeping the images already listed there. The metadata
/// version is one more than the current timestamp's, so every release supersedes the last.
pub async fn publish(
    repo: &Path,
    bundle: &Bundle,
    online_keys: &[Box<dyn KeySource>],
    expiries: Expiries,
) -> Result<ImageInfo, UpdateError> {
    let meta = repo.join("metadata");
    let targets_dir = repo.join("targets");
    std::fs::create_dir_all(&targets_dir).map_err(|e| UpdateError::io(&targets_dir, e))?;
    let name = ImageInfo::target_name(&bundle.board, bundle.version);
    let dest = targets_dir.join(&name);
    std::fs::copy(&bundle.image, &dest).map_err(|e| UpdateError::io(&bundle.image, e))?;

    let mut editor = RepositoryEditor::new(meta.join("root.json"))
        .await
        .map_err(|e| UpdateError::vendor("open root", e))?;
    let previous = read_previous(&meta)?;
    let version = NonZeroU64::new(previous.0 + 1).unwrap_or(NonZeroU64::MIN);
    for (n, t) in previous.1 {
        editor
            .add_target(n, t)
            .map_err(|e| UpdateError::vendor("keep target", e))?;
    }
    let mut target = Target::from_path(&dest)
        .await
        .map_err(|e| UpdateError::vendor("hash image", e))?;
    target.custom = ImageInfo::custom(&bundle.board, bundle.version);
    editor
        .add_target(name.as_str(), target.clone())
        .map_err(|e| UpdateError::vendor("add target", e))?
        .targets_version(version)
        .map_err(|e| UpdateError::vendor("targets version", e))?
        .targets_expires(expiries.targets)
        .map_err(|e| UpdateError::vendor("targets expiry", e))?
        .snapshot_version(version)
        .snapshot_expires(expiries.snapshot)
        .timestamp_version(version)
        .timestamp_expires(expiries.timestamp);
    let signed = editor
        .sign(online_keys)
        .await
        .map_err(|e| UpdateError::vendor("sign", e))?;
    signed
        .write(&meta)
        .await
        .map_err(|e| UpdateError::vendor("write metadata", e))?;
    ImageInfo::from_target(&name, &target)
}

type Previous = (u64, Vec<(tough::TargetName, Target)>);

fn read_previous(meta: &Path) -> Result<Previous, UpdateError> {
    let ts = meta.join("timestamp.json");
    let tg = meta.join("targets.json");
    if !ts.exists() || !tg.exists() {
        return Ok((0, Vec::new()));
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| UpdateError::io(p, e));
    let ts: tough::schema::Signed<tough::schema::Timestamp> =
        serde_json::from_slice(&read(&ts)?)
            .map_err(|e| UpdateError::vendor("parse timestamp", e))?;
    let tg: tough::schema::Signed<tough::schema::Targets> =
        serde_json::from_slice(&read(&tg)?).map_err(|e| UpdateError::vendor("parse targets", e))?;
    Ok((
        ts.signed.version.get(),
        tg.signed.targets.into_iter().collect(),
    ))
}
