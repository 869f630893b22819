//! Pro Santé Connect client for the practice profile: the appliance plays the "serveur
//! intermédiaire" of §6.8.4.2 (Figure 35). For each personal/organisational BAL it keeps
//! one PSC refresh token, obtained once by an interactive CPS/e-CPS login, and turns it
//! into short-lived access tokens (JWT, ~60 s) for SASL XOAUTH2 on the operator's API LPS
//! (EX_LPS_0700/0900, Réf. #2 1.6).
//!
//! - Refresh tokens are stored **encrypted at rest** (AES-256-GCM, key derived in the
//!   PKCS#11 token: see [`store`](crate) docs in `store.rs`) and never logged (OA-09).
//! - [`Psc::access_token`] returns a cached access token while more than
//!   `refresh_margin` of its life is left, else runs the `refresh_token` grant (one at a
//!   time per BAL), storing a rotated refresh token before answering.
//! - [`Psc::evict`] drops a cached access token: a caller whose token was refused by the
//!   operator (`NO Authentication failed`, `535 5.7.8`, EX_LPS_0710) evicts, retries once
//!   with a fresh token, and on a second refusal calls [`Psc::mark_reauth_required`].
//! - A refresh token refused by PSC (`invalid_grant`) marks the BAL "re-auth required"
//!   ([`SessionState::ReauthRequired`], kept in the store for the web admin) until
//!   [`Psc::set_refresh_token`] stores a new one (OA-07). Mail for it stays queued.
//!
//! Client authentication is `client_secret_post` (client id + secret file).
//! `private_key_jwt` is not implemented: it needs the signing key's registration with PSC,
//! which the ANS raccordement decides; it would sign the assertion with a token key.

mod config;
mod endpoint;
mod error;
mod login;
mod store;

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use passerelle_keystore::Keystore;
use passerelle_trust::TrustStore;
use zeroize::Zeroizing;

pub use config::PscConfig;
pub use error::PscError;
pub use login::{AuthorizationRequest, pkce_challenge};

use endpoint::{Refusal, TokenEndpoint};
use store::{Entry, Reauth, StoreFile, StoreKey};

/// Longest BAL address accepted as a key (RFC 5321 path limit).
const MAX_BAL_LEN: usize = 256;

/// A PSC access token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct AccessToken {
    secret: Arc<Zeroizing<String>>,
    expires_at: SystemTime,
}

impl AccessToken {
    /// The bearer token, for the XOAUTH2 initial response only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a BAL's PSC session stands, for the web admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// A refresh token is stored.
    Active,
    /// PSC or the operator refused it; a practitioner must log in again.
    ReauthRequired { reason: String, since: SystemTime },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalSession {
    pub bal: String,
    pub state: SessionState,
}

struct Cached {
    token: AccessToken,
    /// Monotonic expiry: a stepped wall clock must not keep a dead token.
    expires: Instant,
}

struct Inner {
    config: PscConfig,
    client_secret: Zeroizing<String>,
    endpoint: TokenEndpoint,
    key: StoreKey,
    /// The store as last written; every change is saved before it is acted on.
    file: Mutex<StoreFile>,
    cache: Mutex<HashMap<String, Cached>>,
    /// One refresh at a time per BAL: concurrent callers wait and share the result.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises snapshot + save so an older snapshot never overwrites a newer one.
    saving: tokio::sync::Mutex<()>,
}

/// The PSC token manager. Cheap to clone.
#[derive(Clone)]
pub struct Psc {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Psc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Psc")
            .field("token_url", &self.inner.config.token_url)
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the first line of a secret file, refusing one others could read.
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, PscError> {
    let err = |why: String| PscError::SecretFile {
        path: path.to_owned(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| err(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {:o} lets others read it; chmod 600",
            mode & 0o777
        )));
    }
    let mut raw = Zeroizing::new(String::new());
    file.take(64 * 1024)
        .read_to_string(&mut raw)
        .map_err(|e| err(e.to_string()))?;
    let first = raw.lines().next().unwrap_or_default().trim();
    if first.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(Zeroizing::new(first.to_owned()))
}

fn check_bal(bal: &str) -> Result<(), PscError> {
    if bal.is_empty()
        || bal.len() > MAX_BAL_LEN
        || !bal.contains('@')
        || bal.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(PscError::Config(format!("not a BAL address: {bal:?}")));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Psc {
    /// Reads the client secret, derives the store key in the token and loads the store.
    pub async fn open(
        config: &PscConfig,
        trust: Arc<TrustStore>,
        keystore: &Keystore,
    ) -> Result<Self, PscError> {
        let client_secret = read_secret_file(&config.client_secret_file)?;
        let endpoint = TokenEndpoint::new(
            &config.token_url,
            trust,
            &config.https_profile,
            config.timeout,
        )?;
        let key = StoreKey::derive(keystore, &config.store_key_label).await?;
        let path = config.store_file.clone();
        let file = blocking(move || StoreFile::load(&path)).await?;
        // Fail at start, not at the first refresh, if the file is not ours.
        for (bal, entry) in &file.bals {
            if let Some(sealed) = &entry.refresh_token {
                key.open(bal, sealed).map_err(|why| PscError::Store {
                    path: config.store_file.clone(),
                    why: format!("BAL {bal}: {why}"),
                })?;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                client_secret,
                endpoint,
                key,
                file: Mutex::new(file),
                cache: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashMap::new()),
                saving: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Stores the refresh token a CPS/e-CPS login produced for `bal` (encrypted, fsynced)
    /// and clears any "re-auth required" mark.
    pub async fn set_refresh_token(&self, bal: &str, refresh_token: &str) -> Result<(), PscError> {
        check_bal(bal)?;
        let sealed = self
            .inner
            .key
            .seal(bal, refresh_token)
            .map_err(|why| self.store_err(why))?;
        self.update(bal, |e| {
            e.refresh_token = Some(sealed);
            e.reauth = None;
        })
        .await?;
        self.evict(bal);
        tracing::info!(bal, "PSC session stored");
        Ok(())
    }

    /// Starts an interactive login (authorization code + PKCE S256, state, nonce) for this
    /// client: send the browser to the returned URL; keep the rest for
    /// [`Self::complete_login`].
    pub fn authorization_request(
        &self,
        authorize_url: &str,
        redirect_uri: &str,
        scope: &str,
    ) -> Result<AuthorizationRequest, PscError> {
        login::authorization_request(
            authorize_url,
            &self.inner.config.client_id,
            redirect_uri,
            scope,
        )
    }

    /// Ends an interactive login for `bal`: exchanges `code` at the token endpoint with the
    /// PKCE verifier, checks the ID token's nonce, and stores the refresh token (which clears
    /// "re-auth required", OA-07). The caller has matched `state` already.
    pub async fn complete_login(
        &self,
        bal: &str,
        request: &AuthorizationRequest,
        code: &str,
        redirect_uri: &str,
    ) -> Result<(), PscError> {
        check_bal(bal)?;
        if code.is_empty() || code.len() > 4096 {
            return Err(PscError::LoginRefused {
                bal: bal.to_owned(),
                why: "no usable authorization code".into(),
            });
        }
        let granted = self
            .inner
            .endpoint
            .authorization_code(
                &self.inner.config.client_id,
                &self.inner.client_secret,
                code,
                &request.code_verifier,
                redirect_uri,
            )
            .await
            .map_err(|refusal| match refusal {
                Refusal::Grant(why) | Refusal::Client(why) => PscError::LoginRefused {
                    bal: bal.to_owned(),
                    why,
                },
                Refusal::Temporary(why) => PscError::Unavailable {
                    url: self.inner.endpoint.url.clone(),
                    why,
                },
            })?;
        if let Some(id_token) = &granted.id_token {
            login::check_id_token(
                id_token,
                &self.inner.config.client_id,
                &request.nonce,
                unix_now(),
            )
            .map_err(|why| PscError::LoginRefused {
                bal: bal.to_owned(),
                why,
            })?;
        }
        self.set_refresh_token(bal, &granted.refresh_token).await
    }

    /// An access token for `bal` valid for at least `refresh_margin`.
    pub async fn access_token(&self, bal: &str) -> Result<AccessToken, PscError> {
        if let Some(t) = self.cached(bal) {
            return Ok(t);
        }
        let gate = Arc::clone(
            lock(&self.inner.refreshing)
                .entry(bal.to_owned())
                .or_default(),
        );
        let _one_at_a_time = gate.lock().await;
        if let Some(t) = self.cached(bal) {
            return Ok(t);
        }
        let refresh_token = self.refresh_token(bal)?;
        let started = Instant::now();
        match self
            .inner
            .endpoint
            .refresh(
                &self.inner.config.client_id,
                &self.inner.client_secret,
                &refresh_token,
            )
            .await
        {
            Ok(granted) => {
                if let Some(rotated) = &granted.refresh_token {
                    let sealed = self
                        .inner
                        .key
                        .seal(bal, rotated)
                        .map_err(|why| self.store_err(why))?;
                    self.update(bal, |e| e.refresh_token = Some(sealed)).await?;
                }
                // Count the lifetime from before the request: the server's clock started then.
                let life = granted.expires_in;
                let token = AccessToken {
                    secret: Arc::new(granted.access_token),
                    expires_at: SystemTime::now() + life.saturating_sub(started.elapsed()),
                };
                lock(&self.inner.cache).insert(
                    bal.to_owned(),
                    Cached {
                        token: token.clone(),
                        expires: started + life,
                    },
                );
                tracing::debug!(
                    bal,
                    lifetime_s = life.as_secs(),
                    "PSC access token refreshed"
                );
                Ok(token)
            }
            Err(Refusal::Grant(reason)) => {
                self.mark_reauth_required(bal, &format!("PSC refused the refresh token: {reason}"))
                    .await?;
                Err(PscError::ReauthRequired {
                    bal: bal.to_owned(),
                    reason,
                })
            }
            Err(Refusal::Client(why)) => {
                tracing::error!(client_id = %self.inner.config.client_id, why, "PSC refused our client credentials");
                Err(PscError::ClientRefused {
                    client_id: self.inner.config.client_id.clone(),
                    why,
                })
            }
            Err(Refusal::Temporary(why)) => {
                tracing::warn!(bal, why, "PSC token endpoint unavailable");
                Err(PscError::Unavailable {
                    url: self.inner.endpoint.url.clone(),
                    why,
                })
            }
        }
    }

    /// Drops the cached access token of `bal`; the next [`Self::access_token`] refreshes.
    pub fn evict(&self, bal: &str) {
        lock(&self.inner.cache).remove(bal);
    }

    /// Marks `bal` as needing a human PSC login (the refresh token is dropped) and keeps
    /// the reason for the web admin.
    pub async fn mark_reauth_required(&self, bal: &str, reason: &str) -> Result<(), PscError> {
        check_bal(bal)?;
        self.evict(bal);
        let reason: String = reason.chars().take(500).collect();
        let logged = reason.clone();
        self.update(bal, move |e| {
            e.refresh_token = None;
            e.reauth = Some(Reauth {
                reason,
                since: unix_now(),
            });
        })
        .await?;
        tracing::warn!(bal, reason = %logged, "BAL needs a new Pro Santé Connect login (OA-07)");
        Ok(())
    }

    /// Every BAL with a PSC session or a pending re-authentication.
    pub fn sessions(&self) -> Vec<BalSession> {
        lock(&self.inner.file)
            .bals
            .iter()
            .filter_map(|(bal, e)| {
                let state = match (&e.reauth, &e.refresh_token) {
                    (Some(r), _) => SessionState::ReauthRequired {
                        reason: r.reason.clone(),
                        since: UNIX_EPOCH + Duration::from_secs(r.since),
                    },
                    (None, Some(_)) => SessionState::Active,
                    (None, None) => return None,
                };
                Some(BalSession {
                    bal: bal.clone(),
                    state,
                })
            })
            .collect()
    }

    /// `bal`'s state, `None` when it never had a session.
    pub fn session(&self, bal: &str) -> Option<SessionState> {
        self.sessions()
            .into_iter()
            .find(|s| s.bal == bal)
            .map(|s| s.state)
    }

    fn cached(&self, bal: &str) -> Option<AccessToken> {
        let margin = self.inner.config.refresh_margin;
        let mut cache = lock(&self.inner.cache);
        match cache.get(bal) {
            Some(c) if c.expires.saturating_duration_since(Instant::now()) > margin => {
                Some(c.token.clone())
            }
            Some(_) => {
                cache.remove(bal);
                None
            }
            None => None,
        }
    }

    fn refresh_token(&self, bal: &str) -> Result<Zeroizing<String>, PscError> {
        let file = lock(&self.inner.file);
        let entry = file.bals.get(bal).ok_or_else(|| PscError::NoSession {
            bal: bal.to_owned(),
        })?;
        if let Some(r) = &entry.reauth {
            return Err(PscError::ReauthRequired {
                bal: bal.to_owned(),
                reason: r.reason.clone(),
            });
        }
        let sealed = entry
            .refresh_token
            .as_ref()
            .ok_or_else(|| PscError::NoSession {
                bal: bal.to_owned(),
            })?;
        self.inner
            .key
            .open(bal, sealed)
            .map_err(|why| self.store_err(format!("BAL {bal}: {why}")))
    }

    /// Applies `change` to `bal`'s entry and saves the store before returning.
    async fn update(&self, bal: &str, change: impl FnOnce(&mut Entry)) -> Result<(), PscError> {
        let _in_order = self.inner.saving.lock().await;
        let snapshot = {
            let mut file = lock(&self.inner.file);
            change(file.bals.entry(bal.to_owned()).or_default());
            file.clone()
        };
        let path = self.inner.config.store_file.clone();
        blocking(move || snapshot.save(&path)).await
    }

    fn store_err(&self, why: String) -> PscError {
        PscError::Store {
            path: self.inner.config.store_file.clone(),
            why,
        }
    }

    /// The store file (for diagnostics).
    pub fn store_path(&self) -> PathBuf {
        self.inner.config.store_file.clone()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PscError> + Send + 'static,
) -> Result<T, PscError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PscError::Config(format!("blocking task: {e}")))?
}
