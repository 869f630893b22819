//! The updater service of the daemon: polls the vendor repository (interval + jitter),
//! installs into the inactive slot and arms it; reports progress and a fallback from the
//! last attempt to the web admin through a `watch` channel.
//!
//! [`run`] is the whole device side as the daemon starts it: a boot on trial is committed
//! once `/healthz` answers, or a reboot is requested so the boot counter takes the box back;
//! only a committed slot checks for updates; an armed update is rebooted into as
//! [`Reboot`] says. The daemon runs unprivileged, so a reboot is a request file that a root
//! unit (`passerelle-reboot.path`) acts on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::boot::{EntryTemplate, Fallback, Slot, Slots, SystemdBoot, commit_when_healthy};
use crate::device::{CheckOutcome, DeviceUpdateConfig, MetadataLimits, check_and_install};
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
    /// The image is downloaded and verified here before it touches the slot (data partition).
    #[serde(default = "default_staging")]
    pub staging: PathBuf,
    /// The running image's version is its `IMAGE_VERSION=` (written by firmware/build-image.sh).
    #[serde(default = "default_os_release")]
    pub os_release: PathBuf,
    /// Where the ESP is mounted (systemd-boot entries).
    #[serde(default = "default_esp")]
    pub esp: PathBuf,
    #[serde(default = "default_slot_a")]
    pub slot_a: PathBuf,
    #[serde(default = "default_slot_b")]
    pub slot_b: PathBuf,
    /// When to reboot into an armed update.
    #[serde(default)]
    pub reboot: Reboot,
    /// Created to ask for a reboot (watched by `passerelle-reboot.path`, which runs as root).
    #[serde(default = "default_reboot_request")]
    pub reboot_request: PathBuf,
    /// Health check of a boot on trial; the daemon's status endpoint when unset.
    pub health_url: Option<String>,
    /// A boot on trial not healthy within this is abandoned (reboot, the counter falls back).
    #[serde(default = "default_health_deadline")]
    pub health_deadline_secs: u64,
}

/// When the box reboots into an armed update.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reboot {
    /// Only when someone reboots the box (web admin, operator).
    Manual,
    /// As soon as the update is armed.
    Immediately,
    /// At the next `HH:MM` (UTC), e.g. `reboot = { at = "03:30" }`.
    At(String),
}

impl Default for Reboot {
    fn default() -> Self {
        Self::At("03:30".into())
    }
}

impl Reboot {
    /// How long to wait from `now_utc_secs` (seconds since the epoch); `None` for manual.
    pub fn delay(&self, now_utc_secs: u64) -> Result<Option<Duration>, UpdateError> {
        match self {
            Self::Manual => Ok(None),
            Self::Immediately => Ok(Some(Duration::ZERO)),
            Self::At(at) => {
                let bad = || UpdateError::Boot {
                    path: PathBuf::from("updater.reboot.at"),
                    reason: format!("{at:?} is not HH:MM"),
                };
                let (h, m) = at.split_once(':').ok_or_else(bad)?;
                let (h, m): (u64, u64) =
                    (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                if h > 23 || m > 59 {
                    return Err(bad());
                }
                let target = h * 3600 + m * 60;
                let now = now_utc_secs % 86_400;
                let wait = (target + 86_400 - now) % 86_400;
                Ok(Some(Duration::from_secs(wait)))
            }
        }
    }
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
fn default_staging() -> PathBuf {
    "/var/lib/passerelle/update/staging.img".into()
}
fn default_os_release() -> PathBuf {
    "/usr/lib/os-release".into()
}
fn default_esp() -> PathBuf {
    "/boot/efi".into()
}
fn default_slot_a() -> PathBuf {
    "/dev/disk/by-partlabel/root-a".into()
}
fn default_slot_b() -> PathBuf {
    "/dev/disk/by-partlabel/root-b".into()
}
fn default_reboot_request() -> PathBuf {
    "/run/passerelle/reboot".into()
}
fn default_health_deadline() -> u64 {
    300
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
            staging: self.staging.clone(),
            refused: Vec::new(),
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

/// The running image's version: `IMAGE_VERSION=` in an os-release file.
pub fn running_version(os_release: &Path) -> Result<Version, UpdateError> {
    let text = std::fs::read_to_string(os_release).map_err(|e| UpdateError::io(os_release, e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
        .map(|v| v.trim().trim_matches('"').parse::<Version>())
        .ok_or_else(|| "no IMAGE_VERSION=".to_owned())
        .and_then(|r| r)
        .map_err(|reason| UpdateError::Boot {
            path: os_release.to_owned(),
            reason,
        })
}

/// The appliance's slots: the running one from the kernel command line (`passerelle.slot=`).
pub fn appliance_slots(config: &UpdaterConfig, cmdline: &str) -> Result<SystemdBoot, UpdateError> {
    let current = Slot::from_cmdline(cmdline).ok_or_else(|| UpdateError::Boot {
        path: PathBuf::from("/proc/cmdline"),
        reason: "no passerelle.slot=a|b: not booted from an A/B image".into(),
    })?;
    Ok(SystemdBoot::new(
        &config.esp,
        current,
        [config.slot_a.clone(), config.slot_b.clone()],
        EntryTemplate::standard(),
    ))
}

/// Asks the root unit for a reboot (see the module docs).
pub fn request_reboot(path: &Path, reason: &str) -> Result<(), UpdateError> {
    tracing::warn!(reason, "requesting a reboot");
    std::fs::write(path, format!("{reason}\n")).map_err(|e| UpdateError::io(path, e))
}

/// What the web admin can ask of the updater.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Check the vendor repository now (and install into the inactive slot if newer).
    CheckNow,
    /// Reboot into the armed update now (ignored when nothing is armed).
    RebootNow,
}

/// The running updater as the daemon hands it to the web admin.
#[derive(Debug, Clone)]
pub struct Handle {
    pub version: Version,
    pub slot: Slot,
    pub status: watch::Receiver<UpdateStatus>,
    pub commands: tokio::sync::mpsc::Sender<Command>,
}

/// Versions whose boot on trial failed on this box: never installed again (a newer one is).
/// Kept beside the TUF datastore, so a factory reset forgets them with it.
fn refused_path(config: &UpdaterConfig) -> PathBuf {
    config.datastore.join("refused-versions")
}

fn refused_versions(config: &UpdaterConfig) -> Result<Vec<Version>, UpdateError> {
    let path = refused_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(UpdateError::io(path, e)),
    }
}

fn refuse_version(config: &UpdaterConfig, version: Version) -> Result<(), UpdateError> {
    use std::io::Write as _;
    std::fs::create_dir_all(&config.datastore)
        .map_err(|e| UpdateError::io(&config.datastore, e))?;
    let path = refused_path(config);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| UpdateError::io(&path, e))?;
    writeln!(f, "{version}")
        .and_then(|()| f.sync_all())
        .map_err(|e| UpdateError::io(&path, e))
}

/// The device side of the daemon (see the module docs). `healthz` is the daemon's own status
/// endpoint, used unless `health_url` is configured.
pub async fn run(
    config: UpdaterConfig,
    current_version: Version,
    slots: impl Slots + Send + Sync,
    healthz: hyper::Uri,
    status: watch::Sender<UpdateStatus>,
    commands: tokio::sync::mpsc::Receiver<Command>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpdateError> {
    tracing::info!(
        slot = slots.current().name(),
        version = %current_version,
        "updater: running image"
    );
    if slots.on_trial()? {
        let url = match &config.health_url {
            Some(u) => u
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| UpdateError::Boot {
                    path: PathBuf::from("updater.health_url"),
                    reason: e.to_string(),
                })?,
            None => healthz,
        };
        let deadline = Duration::from_secs(config.health_deadline_secs);
        if let Err(e) = commit_when_healthy(&slots, &url, deadline).await {
            tracing::error!(error = %e, slot = slots.current().name(), "boot on trial not healthy");
            status.send_replace(UpdateStatus::Rejected {
                reason: e.to_string(),
            });
            request_reboot(&config.reboot_request, "boot on trial not healthy")?;
            shutdown.await;
            return Ok(());
        }
        tracing::info!(slot = slots.current().name(), version = %current_version, "updater: boot committed");
    }
    serve(config, current_version, slots, status, commands, shutdown).await
}

/// Runs until `shutdown` resolves. Stops checking once an update is armed, and reboots into
/// it as `config.reboot` says or when asked ([`Command::RebootNow`]).
pub async fn serve(
    config: UpdaterConfig,
    current_version: Version,
    slots: impl Slots + Send + Sync,
    status: watch::Sender<UpdateStatus>,
    mut commands: tokio::sync::mpsc::Receiver<Command>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpdateError> {
    match slots.take_fallback() {
        Ok(Some(f)) => {
            if let Some(v) = f.version {
                refuse_version(&config, v)?;
            }
            status.send_replace(UpdateStatus::FellBack(f));
        }
        Ok(None) => {}
        // A torn or foreign entry of the inactive slot: it boots nothing we know of, and the
        // next install replaces it anyway; keeping the updater stopped over it would not help.
        Err(e) => {
            tracing::warn!(error = %e, "inactive slot's boot entry unreadable: removed");
            slots.retire_inactive()?;
        }
    }
    let mut device = config.device(current_version)?;
    device.refused = refused_versions(&config)?;
    tokio::pin!(shutdown);
    let armed = loop {
        let jitter = fastrand::u64(0..=config.jitter_secs.saturating_mul(1000));
        let wait = Duration::from_secs(config.interval_secs) + Duration::from_millis(jitter);
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            Some(cmd) = commands.recv() => if cmd != Command::CheckNow { continue },
        }
        status.send_replace(UpdateStatus::Checking);
        let retire = || slots.retire_inactive();
        match check_and_install(&device, slots.inactive_path(), retire).await {
            Ok(CheckOutcome::UpToDate) => {
                status.send_replace(UpdateStatus::UpToDate);
            }
            Ok(CheckOutcome::Written(info)) => {
                slots.arm(info.version, config.boot_tries)?;
                status.send_replace(UpdateStatus::RebootPending {
                    version: info.version,
                });
                break info.version;
            }
            Err(e) => {
                tracing::warn!(error = %e, "update rejected, nothing armed");
                status.send_replace(UpdateStatus::Rejected {
                    reason: e.to_string(),
                });
            }
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let scheduled = async {
        match config.reboot.delay(now) {
            Ok(Some(wait)) => tokio::time::sleep(wait).await,
            Ok(None) => std::future::pending().await,
            Err(e) => {
                tracing::error!(error = %e, "no reboot time: reboot by hand");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::pin!(scheduled);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = &mut scheduled => break,
            Some(cmd) = commands.recv() => if cmd == Command::RebootNow { break },
        }
    }
    request_reboot(&config.reboot_request, &format!("update {armed} armed"))?;
    shutdown.await;
    Ok(())
}
