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

/// The `[trust]` table of the configuration file, validated with the rest of the file.
fn load_config(path: &Path) -> Result<TrustConfig, String> {
    let config = passerelle_config::Config::load(path).map_err(|e| e.to_string())?;
    config
        .trust
        .ok_or_else(|| format!("{}: no [trust] table", path.display()))
}
