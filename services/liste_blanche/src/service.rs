//! The liste blanche in the daemon: the verified list in use, swapped atomically when a newly
//! downloaded list verifies (EX_2.2_5035), the daily refresh (EX_2.2_5010), the age alert, and
//! the cold-start rule: no MSSanté exchange before a first verified list.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use passerelle_trust::TrustStore;
use rustls_pki_types::UnixTime;

use crate::config::ListeBlancheConfig;
use crate::error::ListeBlancheError;
use crate::fetch::Fetcher;
use crate::list::ListeBlanche;
use crate::store::{LocalCopy, Metadata};
use crate::verify::{SignerIdentity, SignerPolicy};

/// What the connector may rely on.
#[derive(Clone, Debug)]
pub enum ListeBlancheState {
    /// No list has ever verified: every MSSanté exchange is refused.
    NoVerifiedList,
    /// The verified list in use; `stale` when it is older than `stale_after`.
    Verified {
        list: Arc<ListeBlanche>,
        meta: Metadata,
        stale: bool,
    },
}

impl ListeBlancheState {
    /// The list, when there is one (stale or not: a stale verified list is still the last valid
    /// one, EX_2.2_5040).
    pub fn list(&self) -> Option<&Arc<ListeBlanche>> {
        match self {
            ListeBlancheState::NoVerifiedList => None,
            ListeBlancheState::Verified { list, .. } => Some(list),
        }
    }
}

/// The verified list in use and what is known about it.
type InUse = (Arc<ListeBlanche>, Metadata);

/// Cheap handle to the list in use, shared with the SMTP services.
#[derive(Clone, Debug)]
pub struct ListeBlancheHandle {
    current: Arc<RwLock<Option<InUse>>>,
    stale_after: Duration,
}

impl ListeBlancheHandle {
    /// A handle with no list yet.
    pub fn empty(stale_after: Duration) -> Self {
        ListeBlancheHandle {
            current: Arc::new(RwLock::new(None)),
            stale_after,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: UnixTime) -> ListeBlancheState {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match current.as_ref() {
            None => ListeBlancheState::NoVerifiedList,
            Some((list, meta)) => ListeBlancheState::Verified {
                list: Arc::clone(list),
                meta: meta.clone(),
                stale: now.as_secs().saturating_sub(meta.fetched_at) > self.stale_after.as_secs(),
            },
        }
    }

    fn swap(&self, list: ListeBlanche, meta: Metadata) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Arc::new(list), meta));
    }
}

/// Fetch, verify, keep.
#[derive(Debug)]
pub struct ListeBlancheService {
    handle: ListeBlancheHandle,
    local: LocalCopy,
    fetcher: Fetcher,
    trust: Arc<TrustStore>,
    signer_profile: String,
    identity: SignerIdentity,
    refresh_every: Duration,
}

impl ListeBlancheService {
    /// Open the local copy and load it if it still verifies (RE_2.2_5010).
    /// `data_dir` is `general.data_dir`; the copy lives in its `liste_blanche/`.
    pub fn open(
        config: &ListeBlancheConfig,
        data_dir: &Path,
        trust: Arc<TrustStore>,
    ) -> Result<Self, ListeBlancheError> {
        trust
            .profile(&config.signer_profile)
            .map_err(|e| ListeBlancheError::Config(e.to_string()))?;
        let identity = config.identity()?;
        let fetcher = Fetcher::new(
            &config.url,
            Arc::clone(&trust),
            &config.https_profile,
            config.fetch_timeout,
        )?;
        let local = LocalCopy::open(data_dir)?;
        let handle = ListeBlancheHandle::empty(config.stale_after);
        let service = ListeBlancheService {
            handle,
            local,
            fetcher,
            trust,
            signer_profile: config.signer_profile.clone(),
            identity,
            refresh_every: config.refresh_every,
        };
        let policy = service.policy();
        match service.local.load(&policy, UnixTime::now())? {
            Some((verified, meta)) => {
                tracing::info!(domains = meta.domain_count, sha256 = %meta.sha256, "liste blanche loaded from the local copy");
                service.handle.swap(verified.liste, meta);
            }
            None => {
                tracing::warn!(
                    requirement = "EX_2.2_5035",
                    "no verified liste blanche yet: MSSanté exchanges refused until one is fetched"
                );
            }
        }
        Ok(service)
    }

    fn policy(&self) -> SignerPolicy<'_> {
        SignerPolicy {
            trust: &self.trust,
            profile: &self.signer_profile,
            identity: &self.identity,
        }
    }

    /// The handle the connector reads.
    pub fn handle(&self) -> ListeBlancheHandle {
        self.handle.clone()
    }

    /// One download: verify, store, swap. On any failure the list in use stays (EX_2.2_5035).
    pub async fn refresh(&self) -> Result<Metadata, ListeBlancheError> {
        let bytes = self.fetcher.fetch().await?;
        let now = UnixTime::now();
        // Verification is CPU work of tens of milliseconds on a large list: off the runtime.
        let (local, trust, profile, identity) = (
            self.local.clone(),
            Arc::clone(&self.trust),
            self.signer_profile.clone(),
            self.identity.clone(),
        );
        let (verified, meta) = tokio::task::spawn_blocking(move || {
            let policy = SignerPolicy {
                trust: &trust,
                profile: &profile,
                identity: &identity,
            };
            local.install(&bytes, now.as_secs(), &policy, now)
        })
        .await
        .map_err(|e| ListeBlancheError::Config(format!("verification task: {e}")))??;
        tracing::info!(domains = meta.domain_count, sha256 = %meta.sha256, requirement = "EX_2.2_5040", "liste blanche verified and installed");
        self.handle.swap(verified.liste, meta.clone());
        Ok(meta)
    }

    /// RE_2.2_5010: verify the stored copy again; an error means it was altered on disk (or
    /// its signer is no longer valid). The list in memory, verified when it was read, stays.
    pub async fn recheck_local_copy(&self) -> Result<(), ListeBlancheError> {
        let (local, trust, profile, identity) = (
            self.local.clone(),
            Arc::clone(&self.trust),
            self.signer_profile.clone(),
            self.identity.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let policy = SignerPolicy {
                trust: &trust,
                profile: &profile,
                identity: &identity,
            };
            local.recheck(&policy, UnixTime::now()).map(drop)
        })
        .await
        .map_err(|e| ListeBlancheError::Config(format!("verification task: {e}")))?
    }

    /// Refresh every `refresh_every` (the first at once) until `shutdown`; log failures and the
    /// age alert.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.refresh_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.refresh().await {
                        tracing::error!(url = %self.fetcher.url(), error = %e, "liste blanche refresh failed; the last verified list stays in use");
                        if let Err(e) = self.recheck_local_copy().await {
                            tracing::error!(error = %e, requirement = "RE_2.2_5010", "the stored liste blanche no longer verifies");
                        }
                    }
                    match self.handle.state(UnixTime::now()) {
                        ListeBlancheState::NoVerifiedList => tracing::error!(requirement = "EX_2.2_5035", "no verified liste blanche: MSSanté exchanges refused"),
                        ListeBlancheState::Verified { meta, stale: true, .. } => tracing::error!(fetched_at = meta.fetched_at, "liste blanche older than stale_after"),
                        ListeBlancheState::Verified { .. } => {}
                    }
                }
            }
        }
    }
}
