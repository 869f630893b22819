//! `passerelle trust …`: the RE_OPE_5040 anchor check and one-off certificate validation, for an
//! operator at installation time and for the periodic check. One line of output; exit status 0
//! (ok), 1 (mismatch or refused), 2 (usage, configuration or unreadable input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use passerelle_trust::{TrustConfig, TrustError, TrustStore};
use rustls_pki_types::{CertificateDer, UnixTime};

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// RE_OPE_5040: compare every installed CA certificate with its pinned SHA-256 fingerprint.
    CheckAnchors {
        /// Configuration file whose `[trust]` table names the anchors directory and pin list.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a certificate (DER or PEM) with a trust profile: chain from the local store
    /// only, branch restriction, revocation from the cached CRLs.
    VerifyCert {
        /// Configuration file whose `[trust]` table defines the profiles.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Trust profile, e.g. `mssante-server`.
        #[arg(long)]
        profile: String,
        /// The certificate to validate.
        #[arg(value_name = "CERT")]
        cert: PathBuf,
    },
}

/// Largest configuration file read here; the real one is a few KiB.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

pub fn run(cmd: TrustCommand) -> ExitCode {
    match cmd {
        TrustCommand::CheckAnchors { config } => check_anchors(&config),
        TrustCommand::VerifyCert {
            config,
            profile,
            cert,
        } => verify_cert(&config, &profile, &cert),
    }
}

fn check_anchors(config: &Path) -> ExitCode {
    let result = load_config(config).and_then(|c| {
        passerelle_trust::check_anchors(&c.anchors_dir, &c.pins_file).map_err(|e| e.to_string())
    });
    match result {
        Ok(report) if report.is_clean() => {
            println!("ok: {report}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("mismatch: RE_OPE_5040: {report}");
            ExitCode::from(1)
        }
        Err(e) => usage_error(&e),
    }
}

fn verify_cert(config: &Path, profile: &str, cert: &Path) -> ExitCode {
    let store =
        match load_config(config).and_then(|c| TrustStore::load(&c).map_err(|e| e.to_string())) {
            Ok(store) => store,
            Err(e) => return usage_error(&e),
        };
    let der = match passerelle_trust::read_certificate(cert) {
        Ok(der) => CertificateDer::from(der),
        Err(e) => return usage_error(&e.to_string()),
    };
    match store.validate(profile, &der, &[], UnixTime::now()) {
        Ok(validated) => {
            match validated.revocation_unknown {
                None => println!("ok: {}", validated.subject),
                Some(why) => println!("ok: {} (soft-fail: {why})", validated.subject),
            }
            ExitCode::SUCCESS
        }
        Err(e @ TrustError::Refused { .. }) => {
            println!("refused: {e}");
            ExitCode::from(1)
        }
        Err(e) => usage_error(&e.to_string()),
    }
}

fn usage_error(why: &str) -> ExitCode {
    println!("error: {why}");
    ExitCode::from(2)
}

/// The `[trust]` table of the configuration file (the config crate will hand it over instead
/// once it embeds `TrustConfig`).
fn load_config(path: &Path) -> Result<TrustConfig, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let trust = table
        .remove("trust")
        .ok_or_else(|| format!("{}: no [trust] table", path.display()))?;
    trust
        .try_into()
        .map_err(|e| format!("{}: [trust]: {e}", path.display()))
}
