//! `passerelle annuaire refresh|search`: the operator's and the practice's view of the local
//! Annuaire Santé cache (issue #10).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use passerelle_annuaire::config::ExtractionSource;
use passerelle_annuaire::{AnnuaireConfig, Cache, CacheStatus, Query, QueryLimits, refresh};

#[derive(Debug, Subcommand)]
pub enum AnnuaireCommand {
    /// Reload the cache from the configured sources; the old cache stays if anything is wrong.
    Refresh {
        /// Load this extraction file instead of the configured sources (offline appliance).
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Search the local cache: every word must occur (accents and case ignored).
    Search {
        /// Words to look for: name, first name, profession, speciality, structure, town,
        /// postcode, BAL address or type.
        #[arg(required = true)]
        text: Vec<String>,
        /// Most entries shown.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON document instead of one line per entry.
        #[arg(long)]
        json: bool,
    },
}

/// Run one `annuaire` verb: exit 0 on success, 1 when a search finds nothing, 2 on error.
pub fn run(cmd: AnnuaireCommand, config: &AnnuaireConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("passerelle annuaire: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(execute(cmd, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("passerelle annuaire: {e}");
            ExitCode::from(2)
        }
    }
}

async fn execute(
    cmd: AnnuaireCommand,
    config: &AnnuaireConfig,
) -> passerelle_annuaire::Result<ExitCode> {
    let cache = Cache::open(&config.cache_dir).await?;
    match cmd {
        AnnuaireCommand::Refresh { from_file } => {
            let mut config = config.clone();
            if let Some(file) = from_file {
                config.extraction = Some(ExtractionSource {
                    url: format!("file://{}", file.display()),
                    timeout: std::time::Duration::from_secs(300),
                });
                config.fhir = None;
            }
            let report = refresh(&config, &cache).await?;
            println!(
                "annuaire refreshed from {}: {} entries, {} rows rejected",
                report.status.sources, report.status.entries, report.status.rejected
            );
            for rejected in &report.rejected {
                println!("  line {}: {}", rejected.line, rejected.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        AnnuaireCommand::Search { text, limit, json } => {
            let query = Query::free_text(&text.join(" "), &QueryLimits::default())?;
            let found = cache.search(&query, limit).await?;
            let status = cache.status();
            warn_if_stale(status.as_ref(), config);
            if json {
                let body = serde_json::json!({ "status": status, "found": found });
                println!("{body}");
            } else {
                for e in &found.entries {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        e.mail,
                        e.bal_type,
                        e.common_name(),
                        [e.profession.as_str(), e.specialite.as_str()]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.organisation,
                        e.ville
                    );
                }
                if found.truncated {
                    eprintln!("more than {limit} entries match: refine your search");
                }
            }
            Ok(if found.entries.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn warn_if_stale(status: Option<&CacheStatus>, config: &AnnuaireConfig) {
    match status {
        None => eprintln!("the annuaire cache is empty: run `passerelle annuaire refresh`"),
        Some(s) if s.is_stale(config.stale_after) => eprintln!(
            "warning: the annuaire cache is stale (last good refresh {}, {} entries)",
            s.refreshed_at, s.entries
        ),
        Some(_) => {}
    }
}
