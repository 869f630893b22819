//! `passerelle vendor …`: the vendor's side of signed updates (issue 9): development keys, the
//! TUF root shipped in images, root rotation, publishing an image. File keys only, named
//! `*.dev-only.pk8` and marked in the signed root; PKCS#11 signing is not wired yet (issue 9).
//! Exit status 0 (done), 2 (usage or any failure, with the reason on stderr).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use passerelle_updater::vendor::{self, Bundle, Expiries, RootKeys};
use passerelle_updater::{UpdateError, Version};

#[derive(Debug, Subcommand)]
pub enum VendorCommand {
    /// Generate an Ed25519 development signing key (file name must end in `.dev-only.pk8`).
    Keygen {
        #[arg(value_name = "KEY")]
        key: PathBuf,
    },
    /// Create `<repo>/metadata/1.root.json` (the `root.json` to ship in images).
    InitRoot {
        #[arg(long)]
        repo: PathBuf,
        /// Root role key(s).
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Key(s) of the targets, snapshot and timestamp roles.
        #[arg(long = "online-key", required = true)]
        online_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 365 * 3)]
        expires_days: i64,
    },
    /// Write root version N+1 trusting new keys, signed by the current and the new root keys.
    RotateRoot {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long = "old-root-key", required = true)]
        old_root_keys: Vec<PathBuf>,
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long = "online-key", required = true)]
        online_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 365 * 3)]
        expires_days: i64,
    },
    /// Add an image to the repository and re-sign targets, snapshot and timestamp.
    Publish {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        board: String,
        #[arg(long)]
        version: Version,
        #[arg(long = "online-key", required = true)]
        online_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 90)]
        targets_expires_days: i64,
        /// Short, so a frozen mirror is noticed quickly; re-publish (or re-sign) before it ends.
        #[arg(long, default_value_t = 7)]
        timestamp_expires_days: i64,
    },
}

pub fn run(cmd: VendorCommand) -> ExitCode {
    let result = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt.block_on(exec(cmd)),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("passerelle vendor: {e}");
            ExitCode::from(2)
        }
    }
}

async fn exec(cmd: VendorCommand) -> Result<String, String> {
    let s = |e: UpdateError| e.to_string();
    match cmd {
        VendorCommand::Keygen { key } => {
            vendor::generate_dev_key(&key).map_err(s)?;
            Ok(format!("development key written: {}", key.display()))
        }
        VendorCommand::InitRoot {
            repo,
            root_keys,
            online_keys,
            expires_days,
        } => {
            let (root, online) = (keys(&root_keys)?, keys(&online_keys)?);
            let keys = RootKeys {
                root: &root,
                online: &online,
                development: true,
            };
            let p = vendor::init_root(&repo, &keys, in_days(expires_days)?)
                .await
                .map_err(s)?;
            Ok(format!("root written: {}", p.display()))
        }
        VendorCommand::RotateRoot {
            repo,
            old_root_keys,
            root_keys,
            online_keys,
            expires_days,
        } => {
            let old = keys(&old_root_keys)?;
            let (root, online) = (keys(&root_keys)?, keys(&online_keys)?);
            let new = RootKeys {
                root: &root,
                online: &online,
                development: true,
            };
            let p = vendor::rotate_root(&repo, &old, &new, in_days(expires_days)?)
                .await
                .map_err(s)?;
            Ok(format!("rotated root written: {}", p.display()))
        }
        VendorCommand::Publish {
            repo,
            image,
            board,
            version,
            online_keys,
            targets_expires_days,
            timestamp_expires_days,
        } => {
            let exp = Expiries {
                targets: in_days(targets_expires_days)?,
                snapshot: in_days(targets_expires_days)?,
                timestamp: in_days(timestamp_expires_days)?,
            };
            let bundle = Bundle {
                image,
                board,
                version,
            };
            let info = vendor::publish(&repo, &bundle, &keys(&online_keys)?, exp)
                .await
                .map_err(s)?;
            Ok(format!(
                "published {} ({} bytes, sha256 {})",
                info.target,
                info.size,
                passerelle_updater::slot::hex(&info.sha256)
            ))
        }
    }
}

fn keys(paths: &[PathBuf]) -> Result<Vec<Box<dyn tough::key_source::KeySource>>, String> {
    paths
        .iter()
        .map(|p: &PathBuf| vendor::dev_key(Path::new(p)).map_err(|e| e.to_string()))
        .collect()
}

fn in_days(days: i64) -> Result<jiff::Timestamp, String> {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .map_err(|e| e.to_string())
}
