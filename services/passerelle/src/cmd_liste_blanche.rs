//! `passerelle liste-blanche …`: check a liste blanche file by hand (EX_2.2_5040/5050), fetch
//! the configured list once (EX_2.2_5010). One line of output; exit status 0 (valid / fetched),
//! 1 (refused), 2 (usage, configuration or unreadable input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use passerelle_liste_blanche::{
    ADHOC_PROFILE, ListeBlancheConfig, ListeBlancheError, ListeBlancheService, SignerIdentity,
    SignerPolicy, adhoc_trust, verify,
};
use passerelle_trust::{Dn, TrustConfig, TrustStore};
use rustls_pki_types::UnixTime;

/// The ANS structure id seen in the spec's examples (§6.3 of the digest: only a hint), used when
/// neither `--signer-ou` nor `--signer-subject` is given.
const ANS_OU: &str = "318751275100020";

#[derive(Debug, Subcommand)]
pub enum ListeBlancheCommand {
    /// Verify a liste blanche file: XMLDSig under the strict profile, signer certificate
    /// validated to the CAs of `--anchors` (with the CRLs found there) and carrying the ANS
    /// identity. Prints the domain count.
    Verify {
        /// Directory of CA certificates (self-signed ones are the anchors) and `*.crl` files.
        #[arg(long, value_name = "DIR")]
        anchors: PathBuf,
        /// Expected OU of the signer (ANS national structure id).
        #[arg(long, value_name = "ID", conflicts_with = "signer_subject")]
        signer_ou: Option<String>,
        /// Expected subject DN of the signer (RFC 4514), compared after normalisation.
        #[arg(long, value_name = "DN")]
        signer_subject: Option<String>,
        /// The list.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Download the configured list once, verify it and install it when valid.
    Fetch {
        /// Configuration file with `[general]`, `[trust]` and `[liste_blanche]`.
        #[arg(long, value_name = "FILE", default_value = passerelle_config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

pub fn run(cmd: ListeBlancheCommand) -> ExitCode {
    match cmd {
        ListeBlancheCommand::Verify {
            anchors,
            signer_ou,
            signer_subject,
            file,
        } => verify_file(&anchors, signer_ou, signer_subject.as_deref(), &file),
        ListeBlancheCommand::Fetch { config } => fetch(&config),
    }
}

fn verify_file(
    anchors: &Path,
    signer_ou: Option<String>,
    signer_subject: Option<&str>,
    file: &Path,
) -> ExitCode {
    let identity = match signer_subject {
        Some(dn) => match Dn::parse(dn) {
            Ok(dn) => SignerIdentity::Subject(dn),
            Err(e) => return usage_error(&format!("--signer-subject: {e}")),
        },
        None => SignerIdentity::Ou(signer_ou.unwrap_or_else(|| ANS_OU.to_owned())),
    };
    let work = match tempfile::tempdir() {
        Ok(w) => w,
        Err(e) => return usage_error(&format!("temporary directory: {e}")),
    };
    let store = match adhoc_trust(anchors, work.path()) {
        Ok(s) => s,
        Err(e) => return usage_error(&e.to_string()),
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return usage_error(&format!("{}: {e}", file.display())),
    };
    let policy = SignerPolicy {
        trust: &store,
        profile: ADHOC_PROFILE,
        identity: &identity,
    };
    match verify(&bytes, &policy, UnixTime::now()) {
        Ok(list) => {
            println!(
                "ok: {} domains, signed by {}",
                list.liste.domain_count(),
                list.signer
            );
            ExitCode::SUCCESS
        }
        Err(e @ (ListeBlancheError::Io { .. } | ListeBlancheError::Config(_))) => {
            usage_error(&e.to_string())
        }
        Err(e) => {
            println!("refused: {e}");
            ExitCode::from(1)
        }
    }
}

fn fetch(config: &Path) -> ExitCode {
    let (general_data_dir, trust, liste) = match load(config) {
        Ok(parts) => parts,
        Err(e) => return usage_error(&e),
    };
    let store = match TrustStore::load(&trust) {
        Ok(s) => Arc::new(s),
        Err(e) => return usage_error(&e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage_error(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let service = ListeBlancheService::open(&liste, &general_data_dir, store)?;
        service.refresh().await
    });
    match result {
        Ok(meta) => {
            println!(
                "ok: {} domains, signed by {}, sha256 {}",
                meta.domain_count, meta.signer, meta.sha256
            );
            ExitCode::SUCCESS
        }
        Err(e @ ListeBlancheError::Config(_)) => usage_error(&e.to_string()),
        Err(e) => {
            println!("refused: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(why: &str) -> ExitCode {
    println!("error: {why}");
    ExitCode::from(2)
}

/// `general.data_dir`, `[trust]` and `[liste_blanche]` of the configuration file, validated
/// with the rest of it.
fn load(path: &Path) -> Result<(PathBuf, TrustConfig, ListeBlancheConfig), String> {
    let config = passerelle_config::Config::load(path).map_err(|e| e.to_string())?;
    let trust = config
        .trust
        .ok_or_else(|| format!("{}: no [trust] table", path.display()))?;
    let liste = config
        .liste_blanche
        .ok_or_else(|| format!("{}: no [liste_blanche] table", path.display()))?;
    Ok((config.general.data_dir, trust, liste))
}
