//! One refresh: read every enabled bulk source, then replace the cache atomically.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cache::{Cache, CacheStatus, LoadInfo};
use crate::config::AnnuaireConfig;
use crate::entry::Entry;
use crate::error::{AnnuaireError, Result};
use crate::extraction::{self, Limits, Rejected};

/// What a refresh did.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    pub status: CacheStatus,
    /// Rows of the extraction that were not loaded (the first ones, with their reason).
    pub rejected: Vec<Rejected>,
}

/// Refresh the cache from the configured sources. Any failure leaves the old cache serving.
pub async fn refresh(config: &AnnuaireConfig, cache: &Cache) -> Result<RefreshReport> {
    let limits = Limits::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut sources = Vec::new();
    let mut rejected = Vec::new();
    let mut rejected_count = 0;
    if let Some(source) = &config.extraction {
        let data = read_source(&source.url, &config.ca_bundle, source.timeout, &limits).await?;
        let parsed = extraction::parse(&source.url, &data, &limits)?;
        tracing::info!(url = %source.url, rows = parsed.rows, rejected = parsed.rejected_count, "extraction parsed");
        rejected_count += parsed.rejected_count;
        rejected = parsed.rejected;
        entries = parsed.entries;
        sources.push("extraction");
    }
    if let Some(fhir) = &config.fhir {
        let key = std::fs::read_to_string(&fhir.api_key_file)
            .map_err(|e| AnnuaireError::io(&fhir.api_key_file, "read FHIR API key", e))?;
        let mut seen: std::collections::HashSet<String> = entries
            .iter()
            .map(|e| e.mail.to_ascii_lowercase())
            .collect();
        for entry in crate::fhir::fetch(fhir, key.trim(), &config.ca_bundle).await? {
            // The extraction and the API describe the same mailboxes; keep one of each.
            if seen.insert(entry.mail.to_ascii_lowercase()) {
                entries.push(entry);
            }
        }
        sources.push("fhir");
    }
    if sources.is_empty() {
        return Err(AnnuaireError::NoSource);
    }
    let info = LoadInfo {
        sources: sources.join("+"),
        rejected: rejected_count,
        sanity_floor_percent: config.sanity_floor_percent,
    };
    let status = cache.replace(&entries, &info).await?;
    Ok(RefreshReport { status, rejected })
}

/// The daemon's task: refresh now, then every `refresh_every`. A failed refresh is logged
/// and the old cache keeps serving (EX_2.1.3_5020); a cache older than `stale_after` (or
/// empty) is reported at warning level after each round, for the operator's alerting.
pub async fn refresh_loop(config: AnnuaireConfig, cache: Arc<Cache>) {
    let mut every = tokio::time::interval(config.refresh_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let outcome = refresh(&config, &cache).await;
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "annuaire refresh failed; the previous cache keeps serving");
        }
        match cache.status() {
            None => tracing::warn!("annuaire cache is empty: no refresh has succeeded yet"),
            Some(s) if s.is_stale(config.stale_after) => tracing::warn!(
                refreshed_at = %s.refreshed_at,
                stale_after = ?config.stale_after,
                "annuaire cache is stale"
            ),
            Some(_) => {}
        }
    }
}

async fn read_source(
    url: &str,
    ca_bundle: &std::path::Path,
    timeout: Duration,
    limits: &Limits,
) -> Result<Vec<u8>> {
    let max = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    if let Some(path) = url.strip_prefix("file://") {
        let path = std::path::Path::new(path);
        let len = std::fs::metadata(path)
            .map_err(|e| AnnuaireError::io(path, "stat extraction", e))?
            .len();
        if len > limits.max_file_bytes {
            return Err(AnnuaireError::ExtractionRefused {
                source_name: url.to_owned(),
                reason: format!("{len} bytes exceeds the limit of {}", limits.max_file_bytes),
            });
        }
        return std::fs::read(path).map_err(|e| AnnuaireError::io(path, "read extraction", e));
    }
    Ok(
        crate::http::get("extraction", url, &[], ca_bundle, timeout, max)
            .await?
            .to_vec(),
    )
}
