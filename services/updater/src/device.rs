//! Device side: verify the vendor's TUF repository against the root shipped in the image and
//! stream the newest image for this board into the inactive slot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tough::{ExpirationEnforcement, Limits, RepositoryLoader};
use url::Url;

use crate::error::{UpdateError, chain};
use crate::manifest::{ImageInfo, Version};
use crate::slot::stream_into_slot;
use crate::transport::HttpTransport;

/// Size limits on every metadata file and on the image (TUF "endless data" protection).
#[derive(Debug, Clone, Copy)]
pub struct MetadataLimits {
    pub max_root_size: u64,
    pub max_targets_size: u64,
    pub max_snapshot_size: u64,
    pub max_timestamp_size: u64,
    pub max_root_updates: u64,
    pub max_image_size: u64,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        // Our metadata lists a handful of images: kilobytes. Generous but bounded.
        Self {
            max_root_size: 64 * 1024,
            max_targets_size: 1024 * 1024,
            max_snapshot_size: 64 * 1024,
            max_timestamp_size: 16 * 1024,
            max_root_updates: 32,
            max_image_size: 4 << 30,
        }
    }
}

/// What the device needs to check for an update.
#[derive(Debug, Clone)]
pub struct DeviceUpdateConfig {
    /// Base URL of the vendor repository; metadata under `metadata/`, images under `targets/`.
    pub vendor_url: Url,
    /// This box's board name, as in the signed target's `board` field.
    pub board: String,
    /// The running version; only strictly newer targets are installed (rollback protection).
    pub current_version: Version,
    /// The `root.json` shipped in the image (the trust anchor).
    pub trusted_root: PathBuf,
    /// Persistent directory where tough keeps the last-seen root/timestamp/snapshot, so an
    /// older (replayed) release is refused even after a reboot.
    pub datastore: PathBuf,
    /// File the image is downloaded into and verified in before it touches the slot (on the
    /// data partition: it needs the image's size free).
    pub staging: PathBuf,
    /// Versions never to install (their boot on trial failed on this box).
    pub refused: Vec<Version>,
    pub limits: MetadataLimits,
    /// Bound on connecting, on headers, and between body chunks.
    pub fetch_timeout: Duration,
}

/// Result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// No signed target for this board is newer than the running version.
    UpToDate,
    /// The image was written into the slot, verified while writing and read back.
    Written(ImageInfo),
}

/// Verifies the vendor repository and reports the image that would be installed, without
/// downloading it.
pub async fn check(cfg: &DeviceUpdateConfig) -> Result<Option<ImageInfo>, UpdateError> {
    Ok(load_and_select(cfg).await?.map(|(_, _, info)| info))
}

/// Loads and verifies the repository, selects the newest target for this board strictly
/// newer than the running version, and streams it into `inactive_slot`.
///
/// Nothing is written to the slot unless the metadata and the image verified (the image is
/// staged first, see [`crate::slot`]).
pub async fn check_and_download(
    cfg: &DeviceUpdateConfig,
    inactive_slot: &Path,
) -> Result<CheckOutcome, UpdateError> {
    check_and_install(cfg, inactive_slot, || Ok(())).await
}

/// [`check_and_download`], running `before_copy` once the image verified and before the
/// slot's first byte changes (see [`crate::boot::Slots::retire_inactive`]).
pub async fn check_and_install(
    cfg: &DeviceUpdateConfig,
    inactive_slot: &Path,
    before_copy: impl FnOnce() -> Result<(), UpdateError>,
) -> Result<CheckOutcome, UpdateError> {
    let Some((repo, name, info)) = load_and_select(cfg).await? else {
        return Ok(CheckOutcome::UpToDate);
    };
    tracing::info!(target = %info.target, version = %info.version, size = info.size, "downloading into the inactive slot");
    let stream = repo
        .read_target(&name)
        .await
        .map_err(|e| UpdateError::Download {
            target: info.target.clone(),
            reason: chain(&e),
        })?
        .ok_or_else(|| UpdateError::Target {
            target: info.target.clone(),
            reason: "listed but not downloadable".into(),
        })?;
    stream_into_slot(
        Box::pin(stream),
        inactive_slot,
        &cfg.staging,
        &info.target,
        info.size,
        info.sha256,
        before_copy,
    )
    .await?;
    Ok(CheckOutcome::Written(info))
}

async fn load_and_select(
    cfg: &DeviceUpdateConfig,
) -> Result<Option<(tough::Repository, tough::TargetName, ImageInfo)>, UpdateError> {
    let root = std::fs::read(&cfg.trusted_root).map_err(|e| UpdateError::TrustedRoot {
        path: cfg.trusted_root.clone(),
        reason: e.to_string(),
    })?;
    std::fs::create_dir_all(&cfg.datastore).map_err(|e| UpdateError::io(&cfg.datastore, e))?;
    let metadata_url = join(&cfg.vendor_url, "metadata/")?;
    let targets_url = join(&cfg.vendor_url, "targets/")?;
    let l = cfg.limits;
    let repo = RepositoryLoader::new(&root, metadata_url.clone(), targets_url)
        .transport(HttpTransport::new(cfg.fetch_timeout))
        .datastore(&cfg.datastore)
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .limits(Limits {
            max_root_size: l.max_root_size,
            max_targets_size: l.max_targets_size,
            max_timestamp_size: l.max_timestamp_size,
            max_snapshot_size: l.max_snapshot_size,
            max_root_updates: l.max_root_updates,
        })
        .load()
        .await
        .map_err(|e| UpdateError::Metadata {
            url: metadata_url.to_string(),
            reason: chain(&e),
        })?;

    let mut best: Option<(tough::TargetName, ImageInfo)> = None;
    for (name, target) in repo.all_targets() {
        let info = ImageInfo::from_target(name.raw(), target)?;
        if info.board != cfg.board || info.version <= cfg.current_version {
            continue;
        }
        if cfg.refused.contains(&info.version) {
            tracing::info!(version = %info.version, "skipping a release that failed its boot here");
            continue;
        }
        if best.as_ref().is_none_or(|(_, b)| info.version > b.version) {
            best = Some((name.clone(), info));
        }
    }
    let Some((name, info)) = best else {
        tracing::info!(board = %cfg.board, current = %cfg.current_version, "no newer signed image");
        return Ok(None);
    };
    if info.size > l.max_image_size {
        return Err(UpdateError::TooLarge {
            target: info.target,
            size: info.size,
            limit: l.max_image_size,
            what: "max_image_size",
        });
    }
    Ok(Some((repo, name, info)))
}

fn join(base: &Url, path: &str) -> Result<Url, UpdateError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join(path).map_err(|e| UpdateError::Metadata {
        url: base.to_string(),
        reason: e.to_string(),
    })
}
