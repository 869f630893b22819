//! The updater service of the daemon: polls the vendor repository (interval + jitter),
//! installs into the inactive slot and arms it; reports progress and a fallback from the
//! last attempt to the web admin through a `watch` channel. Rebooting into the armed slot (at
//! the chosen time or on admin request) is the daemon's decision, not this loop's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::boot::{Fallback, Slots};
use crate::device::{CheckOutcome, DeviceUpdateConfig, MetadataLimits, check_and_download};
use crate::error::UpdateError;
use crate::manifest::Version;

/// The `[updater]` table of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdaterConfig {
    /// Vendor repository base URL (`metadata/` and `targets/` below it).
    pub vendor_url: String,
    /// This box's board, e.g. `qemu-x86_64`.
    pub board: String,
    #[serde(default = "default_trusted_root")]
    pub trusted_root: PathBuf,
    #[serde(default = "default_datastore")]
    pub datastore: PathBuf,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// A random delay up to this is added to every interval, so a fleet does not hit the
    /// vendor at the same second.
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
    #[serde(default = "default_tries")]
    pub boot_tries: u32,
    #[serde(default = "default_timeout")]
    pub fetch_timeout_secs: u64,
}

fn default_trusted_root() -> PathBuf {
    "/usr/share/passerelle/root.json".into()
}
fn default_datastore() -> PathBuf {
    "/var/lib/passerelle/tuf".into()
}
fn default_interval() -> u64 {
    6 * 3600
}
fn default_jitter() -> u64 {
    3600
}
fn default_tries() -> u32 {
    3
}
fn default_timeout() -> u64 {
    30
}

impl UpdaterConfig {
    /// The device-side settings for one check; fails on a malformed URL.
    pub fn device(&self, current_version: Version) -> Result<DeviceUpdateConfig, UpdateError> {
        Ok(DeviceUpdateConfig {
            vendor_url: self.vendor_url.parse().map_err(|e: url::ParseError| {
                UpdateError::Metadata {
                    url: self.vendor_url.clone(),
                    reason: e.to_string(),
                }
            })?,
            board: self.board.clone(),
            current_version,
            trusted_root: self.trusted_root.clone(),
            datastore: self.datastore.clone(),
            limits: MetadataLimits::default(),
            fetch_timeout: Duration::from_secs(self.fetch_timeout_secs),
        })
    }
}

/// What the web admin shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    Idle,
    Checking,
    UpToDate,
    /// Written, verified and armed: the next reboot tries it.
    RebootPending {
        version: Version,
    },
    /// The last check or download failed; nothing was armed.
    Rejected {
        reason: String,
    },
    /// An armed update never became healthy and the box came back by itself.
    FellBack(Fallback),
}

/// Runs until `shutdown` resolves. Stops checking once an update is armed (until reboot).
pub async fn serve(
    config: UpdaterConfig,
    current_version: Version,
    slots: impl Slots + Send + Sync,
    status: watch::Sender<UpdateStatus>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpdateError> {
    let device = config.device(current_version)?;
    if let Some(f) = slots.take_fallback()? {
        status.send_replace(UpdateStatus::FellBack(f));
    }
    tokio::pin!(shutdown);
    loop {
        let jitter = fastrand::u64(0..=config.jitter_secs.saturating_mul(1000));
        let wait = Duration::from_secs(config.interval_secs) + Duration::from_millis(jitter);
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        status.send_replace(UpdateStatus::Checking);
        match check_and_download(&device, slots.inactive_path()).await {
            Ok(CheckOutcome::UpToDate) => {
                status.send_replace(UpdateStatus::UpToDate);
            }
            Ok(CheckOutcome::Written(info)) => {
                slots.arm(info.version, config.boot_tries)?;
                status.send_replace(UpdateStatus::RebootPending {
                    version: info.version,
                });
                shutdown.await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "update rejected, nothing armed");
                status.send_replace(UpdateStatus::Rejected {
                    reason: e.to_string(),
                });
            }
        }
    }
}
