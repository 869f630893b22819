//! `passerelle update …`: the device side of signed A/B updates (issue 9), by hand or from a
//! timer: `check` (verify the vendor metadata, report what would be installed), `install`
//! (stream into the inactive slot, verify, arm a one-shot boot), `commit` (after boot, once
//! `/healthz` answers 200), `status` (running slot, boot entries, fallback).
//! Exit status 0 (done / up to date), 1 (update rejected or not healthy), 2 (usage, I/O).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use passerelle_updater::boot::{EntryTemplate, Slot, Slots, SystemdBoot, commit_when_healthy};
use passerelle_updater::{
    CheckOutcome, DeviceUpdateConfig, MetadataLimits, UpdateError, Version, check,
    check_and_install,
};

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify the vendor metadata and say what would be installed (nothing is written).
    Check {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Download and verify into the inactive slot, then arm a one-shot boot with tries.
    Install {
        #[command(flatten)]
        device: DeviceArgs,
        /// Boot attempts of the new slot before systemd-boot falls back.
        #[arg(long, default_value_t = 3)]
        tries: u32,
    },
    /// Commit the running slot once the services answer `/healthz` with 200.
    Commit {
        #[command(flatten)]
        boot: BootArgs,
        #[arg(long, default_value = "http://127.0.0.1:8079/healthz")]
        healthz: hyper::Uri,
        #[arg(long, default_value_t = 300)]
        deadline_secs: u64,
    },
    /// Running slot and a fallback from a failed update, if any (reported once).
    Status {
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Write `loader.conf` and the committed entry of a slot into an ESP directory (used by
    /// firmware/build-image.sh, so images and updates name entries the same way).
    InstallEsp {
        /// ESP directory being assembled.
        #[arg(long)]
        esp: PathBuf,
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        #[arg(long)]
        version: Version,
    },
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    Slot::from_cmdline(&format!("passerelle.slot={s}"))
        .ok_or_else(|| format!("slot {s:?} is not a or b"))
}

#[derive(Debug, Args)]
pub struct BootArgs {
    #[arg(long, default_value = "/boot/efi")]
    esp: PathBuf,
    #[arg(long, default_value = "/dev/disk/by-partlabel/root-a")]
    slot_a: PathBuf,
    #[arg(long, default_value = "/dev/disk/by-partlabel/root-b")]
    slot_b: PathBuf,
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[arg(long)]
    vendor_url: url::Url,
    #[arg(long)]
    board: String,
    /// Running version (the image's VERSION_ID).
    #[arg(long)]
    current_version: Version,
    #[arg(long, default_value = "/usr/share/passerelle/root.json")]
    trusted_root: PathBuf,
    #[arg(long, default_value = "/var/lib/passerelle/tuf")]
    datastore: PathBuf,
    /// The image is verified here before it is copied into the slot (needs its size free).
    #[arg(long, default_value = "/var/lib/passerelle/update/staging.img")]
    staging: PathBuf,
}

pub fn run(cmd: UpdateCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(2, &e.to_string()),
    };
    rt.block_on(exec(cmd))
}

fn systemd_boot(b: &BootArgs) -> Result<SystemdBoot, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| e.to_string())?;
    let current =
        Slot::from_cmdline(&cmdline).ok_or("the kernel command line has no passerelle.slot=a|b")?;
    Ok(SystemdBoot::new(
        &b.esp,
        current,
        [b.slot_a.clone(), b.slot_b.clone()],
        EntryTemplate::standard(),
    ))
}

fn device_config(device: DeviceArgs) -> DeviceUpdateConfig {
    DeviceUpdateConfig {
        vendor_url: device.vendor_url,
        board: device.board,
        current_version: device.current_version,
        trusted_root: device.trusted_root,
        datastore: device.datastore,
        staging: device.staging,
        refused: Vec::new(),
        limits: MetadataLimits::default(),
        fetch_timeout: Duration::from_secs(30),
    }
}

async fn exec(cmd: UpdateCommand) -> ExitCode {
    match cmd {
        UpdateCommand::Check { device } => match check(&device_config(device)).await {
            Ok(None) => {
                println!("up to date");
                ExitCode::SUCCESS
            }
            Ok(Some(info)) => {
                println!("update available: {} ({} bytes)", info.version, info.size);
                ExitCode::SUCCESS
            }
            Err(e) => fail(exit_of(&e), &e.to_string()),
        },
        UpdateCommand::Install { device, tries } => {
            let slots = match systemd_boot(&device.boot) {
                Ok(s) => s,
                Err(e) => return fail(2, &e),
            };
            let cfg = device_config(device);
            let retire = || slots.retire_inactive();
            match check_and_install(&cfg, slots.inactive_path(), retire).await {
                Ok(CheckOutcome::UpToDate) => {
                    println!("up to date: {}", cfg.current_version);
                    ExitCode::SUCCESS
                }
                Ok(CheckOutcome::Written(info)) => match slots.arm(info.version, tries) {
                    Ok(()) => {
                        println!(
                            "installed {} into slot {}, armed with {tries} tries: reboot to try it",
                            info.version,
                            slots.current().other().name()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(2, &e.to_string()),
                },
                Err(e) => fail(exit_of(&e), &e.to_string()),
            }
        }
        UpdateCommand::Commit {
            boot,
            healthz,
            deadline_secs,
        } => {
            let slots = match systemd_boot(&boot) {
                Ok(s) => s,
                Err(e) => return fail(2, &e),
            };
            match commit_when_healthy(&slots, &healthz, Duration::from_secs(deadline_secs)).await {
                Ok(()) => {
                    println!("slot {} committed", slots.current().name());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e.to_string()),
            }
        }
        UpdateCommand::InstallEsp { esp, slot, version } => {
            let boot = SystemdBoot::new(
                &esp,
                slot,
                [PathBuf::new(), PathBuf::new()],
                EntryTemplate::standard(),
            );
            match boot.install(slot, version) {
                Ok(()) => {
                    println!("slot {} entry for {version} written", slot.name());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(2, &e.to_string()),
            }
        }
        UpdateCommand::Status { boot } => {
            let slots = match systemd_boot(&boot) {
                Ok(s) => s,
                Err(e) => return fail(2, &e),
            };
            match slots.take_fallback() {
                Ok(None) => {
                    println!("running slot {}", slots.current().name());
                    ExitCode::SUCCESS
                }
                Ok(Some(f)) => {
                    let v = f.version.map_or_else(|| "?".to_owned(), |v| v.to_string());
                    println!(
                        "running slot {}: update {v} in slot {} failed after {} tries, fell back",
                        slots.current().name(),
                        f.slot.name(),
                        f.tries_done
                    );
                    ExitCode::from(1)
                }
                Err(e) => fail(2, &e.to_string()),
            }
        }
    }
}

fn exit_of(e: &UpdateError) -> u8 {
    match e {
        UpdateError::Io { .. } | UpdateError::TrustedRoot { .. } => 2,
        _ => 1,
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("passerelle update: {msg}");
    ExitCode::from(code)
}
