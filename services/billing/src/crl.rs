//! The AC-FACTURATION CRL downloads (A4 §6.3.3, [CE2], [CP2]) on the schedule of
//! [`passerelle_sesam::crl_schedule`]: weekly in this installation's slot between 02:00 and
//! 22:00 UTC, daily after a failure or when the same CRL is served again, an alert when
//! downloads keep failing and the installed CRL expires within two days (or has expired).
//! A CRL valid for less than a week is fetched again in the slot three days before its
//! nextUpdate, so a new one is in place before it expires.
//!
//! - **Sources**: the URLs configured (`crl_sources`), else the CRL distribution points of
//!   the stored recipient certificates (A4 §6.3.3: the location comes from the certificate).
//!   Each download is one short connection (the trust crate's LDAP/HTTP sources).
//! - **Verification and use**: the bytes go to [`TrustStore::install_crl`], which verifies the
//!   signature against the pinned CAs and keeps the newer CRL; the sender's certificate check
//!   then applies [CE2] (no CRL: blocked) and [CP2] (expired CRL: not blocking) at send time.
//! - **No CRL yet**: a source without any CRL read is downloaded at once (at start and then
//!   daily), not at the weekly slot: without it nothing can be sent ([CE2]).
//! - **State**: kept in `state_dir/crl-schedule.json` (next download, last outcome, the CRL's
//!   issuer and nextUpdate) so a restart keeps the weekly rhythm, and published to
//!   [`BillingStatus::crl`](crate::BillingStatus::crl).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use passerelle_sesam::RecipientCertificates;
use passerelle_sesam::crl_schedule::{ALERT_BEFORE, CrlSchedule, Outcome, alert_due};
use passerelle_trust::{CrlSource, HttpCrlSource, LdapCrlSource, TrustStore};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::BillingError;
use crate::status::{BillingStatus, CrlOutcome, CrlStatus};

/// Time limit of one download.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest state file read.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// One source's persisted state (Unix seconds).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SourceState {
    ca: Option<String>,
    next_update: Option<i64>,
    last_attempt: Option<i64>,
    /// `installed`, `unchanged`, or the failure.
    last_outcome: Option<String>,
    next_download: Option<i64>,
}

/// The CRL download schedule of the billing service.
#[derive(Debug)]
pub struct CrlWatch {
    trust: Arc<TrustStore>,
    certs: Arc<Mutex<RecipientCertificates>>,
    configured: Vec<String>,
    schedule: CrlSchedule,
    state_file: PathBuf,
    state: BTreeMap<String, SourceState>,
    status: BillingStatus,
}

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn from_secs(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The URIs of the CRL distribution points of `der`.
fn distribution_points(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for point in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                    for name in names {
                        if let GeneralName::URI(uri) = name
                            && (uri.starts_with("ldap://") || uri.starts_with("http://"))
                        {
                            out.push(standard_ldap_url(uri));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A4 §6.3.3 writes the SESAM-Vitale CRL location as `ldap://host/<dn>/certificateRevocationList`
/// (digest §8 #12); RFC 4516 names the attribute after `?`.
fn standard_ldap_url(uri: &str) -> String {
    match uri.strip_suffix("/certificateRevocationList") {
        Some(base) if uri.starts_with("ldap://") => {
            format!("{base}?certificateRevocationList;binary")
        }
        _ => uri.to_owned(),
    }
}

/// The issuer and nextUpdate of CRL bytes already verified by the trust store.
fn crl_facts(bytes: &[u8]) -> (Option<String>, Option<i64>) {
    match x509_parser::parse_x509_crl(bytes) {
        Ok((_, crl)) => (
            Some(crl.issuer().to_string()),
            crl.next_update().map(|t| t.timestamp()),
        ),
        Err(_) => (None, None),
    }
}

impl CrlWatch {
    /// `configured`: CRL URLs (`ldap://host/<dn>[?attr]`, `http://…`); empty → the stored
    /// certificates' distribution points. `device_id` picks this installation's slot.
    pub fn new(
        trust: Arc<TrustStore>,
        certs: Arc<Mutex<RecipientCertificates>>,
        configured: Vec<String>,
        device_id: &str,
        state_dir: &std::path::Path,
        status: BillingStatus,
    ) -> Self {
        let state_file = state_dir.join("crl-schedule.json");
        let state = std::fs::metadata(&state_file)
            .ok()
            .filter(|m| m.len() <= MAX_STATE_BYTES)
            .and_then(|_| std::fs::read(&state_file).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            trust,
            certs,
            configured,
            schedule: CrlSchedule::for_device(device_id),
            state_file,
            state,
            status,
        }
    }

    fn sources(&self) -> Vec<String> {
        let mut urls = self.configured.clone();
        if urls.is_empty()
            && let Ok(certs) = self.certs.lock()
        {
            for flow in [passerelle_sesam::Flow::Fse, passerelle_sesam::Flow::Dre] {
                for env in [
                    passerelle_sesam::Env::Real,
                    passerelle_sesam::Env::Test,
                    passerelle_sesam::Env::Demo,
                ] {
                    if let Some(der) = certs.stored(flow, env) {
                        urls.extend(distribution_points(der));
                    }
                }
            }
        }
        urls.sort();
        urls.dedup();
        urls
    }

    /// Download every source that is due at `now`, then publish the state. Returns when
    /// the next download is due (`None`: no source known yet).
    pub async fn tick(&mut self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let sources = self.sources();
        self.state.retain(|url, _| sources.contains(url));
        for url in &sources {
            let st = self.state.entry(url.clone()).or_default();
            let due = match st.next_download {
                Some(at) => at <= secs(now),
                // Never downloaded: at once when no CRL was ever read ([CE2] blocks sending),
                // else at the first slot.
                None if st.next_update.is_none() => true,
                None => {
                    st.next_download = Some(secs(self.schedule.first(now)));
                    false
                }
            };
            if due {
                let outcome = self.download(url).await;
                let st = self.state.entry(url.clone()).or_default();
                st.last_attempt = Some(secs(now));
                let (label, schedule_as) = match outcome {
                    Ok((true, ca, next_update)) => {
                        st.ca = ca.or(st.ca.take());
                        st.next_update = next_update.or(st.next_update);
                        ("installed".to_owned(), Outcome::NewCrl)
                    }
                    Ok((false, ca, next_update)) => {
                        st.ca = ca.or(st.ca.take());
                        st.next_update = next_update.or(st.next_update);
                        ("unchanged".to_owned(), Outcome::Failed)
                    }
                    Err(why) => (why, Outcome::Failed),
                };
                tracing::info!(source = %url, outcome = %label, "CRL download");
                st.last_outcome = Some(label);
                let mut next = self.schedule.next(now, schedule_as);
                if let Some(expiry) = st.next_update {
                    // A CRL valid for less than the weekly rhythm is fetched again in time:
                    // in the slot three days before it expires, never before tomorrow's.
                    let early = self
                        .schedule
                        .first(from_secs(expiry) - ALERT_BEFORE - time::Duration::days(1))
                        .max(self.schedule.next(now, Outcome::Failed));
                    next = next.min(early);
                }
                st.next_download = Some(secs(next));
            }
        }
        self.save();
        self.publish(now);
        self.state
            .values()
            .filter_map(|s| s.next_download)
            .min()
            .map(from_secs)
    }

    /// `(changed, issuer, nextUpdate)` of a verified CRL, or why it failed.
    async fn download(&self, url: &str) -> Result<(bool, Option<String>, Option<i64>), String> {
        let bytes = if url.starts_with("ldap://") {
            let source = LdapCrlSource::new(url, FETCH_TIMEOUT).map_err(|e| e.to_string())?;
            source.fetch().await
        } else {
            let source = HttpCrlSource::new(url, FETCH_TIMEOUT).map_err(|e| e.to_string())?;
            source.fetch().await
        }
        .map_err(|e| e.to_string())?;
        let update = self
            .trust
            .install_crl(&bytes, url)
            .map_err(|e| e.to_string())?;
        let (ca, next_update) = crl_facts(&bytes);
        Ok((update.changed, ca, next_update))
    }

    fn save(&self) {
        let Ok(json) = serde_json::to_vec_pretty(&self.state) else {
            return;
        };
        let Some(dir) = self.state_file.parent() else {
            return;
        };
        let name = self
            .state_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(dir)
            .map_err(BillingError::io(dir))
            .and_then(|()| crate::lots::write_durably(dir, &name, &json))
        {
            tracing::warn!(error = %e, "could not keep the CRL schedule");
        }
    }

    fn publish(&self, now: OffsetDateTime) {
        let list = self
            .state
            .iter()
            .map(|(url, st)| {
                let last_outcome = st.last_outcome.as_deref().map(|o| match o {
                    "installed" => CrlOutcome::Installed,
                    "unchanged" => CrlOutcome::Unchanged,
                    why => CrlOutcome::Failed(why.to_owned()),
                });
                let failing = !matches!(last_outcome, Some(CrlOutcome::Installed));
                let alert = st.next_update.is_some_and(|n| {
                    alert_due(
                        if failing {
                            Outcome::Failed
                        } else {
                            Outcome::NewCrl
                        },
                        from_secs(n),
                        now,
                    ) || n < secs(now)
                });
                if alert {
                    tracing::warn!(source = %url, "CRL alert: downloads fail and the CRL expires soon or has expired; call the vendor (A4 §6.3.3)");
                }
                CrlStatus {
                    source: url.clone(),
                    ca: st.ca.clone(),
                    next_update: st.next_update.map(system_time),
                    last_attempt: st.last_attempt.map(system_time),
                    last_outcome,
                    next_download: st.next_download.map(system_time),
                    alert,
                    missing: st.next_update.is_none(),
                }
            })
            .collect();
        self.status.set_crl(list);
    }

    /// Run until `stop`: a tick at once, then at each due time (checked at least hourly, so
    /// a clock change or a newly stored certificate is noticed).
    pub async fn run(mut self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let now = OffsetDateTime::now_utc();
            let next = self.tick(now).await;
            let wait = next
                .map_or(Duration::from_secs(3600), |n| {
                    Duration::try_from(n - now).unwrap_or(Duration::ZERO)
                })
                .clamp(Duration::from_secs(1), Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_spec_s_crl_location_becomes_a_standard_ldap_url() {
        assert_eq!(
            super::standard_ldap_url(
                "ldap://annuaire.sesam-vitale.fr/cn=AC-FACTURATION,o=sesam-vitale,c=fr/certificateRevocationList"
            ),
            "ldap://annuaire.sesam-vitale.fr/cn=AC-FACTURATION,o=sesam-vitale,c=fr?certificateRevocationList;binary"
        );
        assert_eq!(
            super::standard_ldap_url("http://crl.example/a.crl"),
            "http://crl.example/a.crl"
        );
    }
}
