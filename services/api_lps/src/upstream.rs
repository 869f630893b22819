//! One BAL's way to the operator's API LPS submission front: endpoint (configured or
//! autoconfigured, TM5.1P), STARTTLS with the MSSanté client profile (Réf. #2 req. 1.2), then
//! AUTH PLAIN with the ORG AUTH_CLI certificate for an APP BAL (EX_LPS_1200) or XOAUTH2 with
//! a Pro Santé Connect token for a PER/ORG BAL (EX_LPS_0700/0900, Réf. #2 req. 1.6).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use passerelle_smtp::{ClientConfig, ErrorKind, SmtpClient, SmtpError};
use rustls_pki_types::ServerName;

use crate::autoconfig::Autoconfig;
use crate::config::{BalConfig, BalKind, Endpoint};

/// Future returned by [`AccessTokens::token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;
/// Future returned by [`AccessTokens::evict`].
pub type EvictFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The PSC session is over (refresh refused): a person must log in again (OA-07).
    #[error("re-authentication required: {0}")]
    ReauthRequired(String),
    /// PSC unreachable or answered badly: try again later.
    #[error("token service unavailable: {0}")]
    Unavailable(String),
}

/// Pro Santé Connect access tokens per BAL address, kept fresh by the PSC token manager:
/// `token` returns one valid for at least the next few seconds (OA-05), `evict` forgets it
/// after the operator refused it (`535 5.7.8`), so the next `token` refreshes;
/// `reauth_required` records that a fresh token was refused too (OA-03/OA-07).
pub trait AccessTokens: Send + Sync + fmt::Debug {
    fn token<'a>(&'a self, bal: &'a str) -> TokenFuture<'a>;
    fn evict<'a>(&'a self, bal: &'a str) -> EvictFuture<'a>;
    fn reauth_required<'a>(&'a self, bal: &'a str, reason: &'a str) -> EvictFuture<'a> {
        let _ = (bal, reason);
        Box::pin(async {})
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Network, DNS, TLS, timeout or a `4xx`: the operator is unreachable for now.
    #[error("operator unreachable: {0}")]
    Unreachable(String),
    /// Credentials refused twice or the PSC session is over: mail stays queued until a
    /// person acts (EX_LPS_0710, OA-03/OA-07).
    #[error("re-authentication required: {0}")]
    Reauth(String),
}

/// The endpoint, TLS and credentials of one BAL.
#[derive(Debug)]
pub struct Upstream {
    bal: BalConfig,
    tls: Arc<rustls::ClientConfig>,
    password: Option<String>,
    tokens: Arc<dyn AccessTokens>,
    autoconfig: Arc<Autoconfig>,
    client: ClientConfig,
}

impl Upstream {
    pub fn new(
        bal: BalConfig,
        tls: Arc<rustls::ClientConfig>,
        password: Option<String>,
        tokens: Arc<dyn AccessTokens>,
        autoconfig: Arc<Autoconfig>,
        helo: &str,
        command_timeout: Duration,
    ) -> Self {
        let mut client = ClientConfig::new(helo);
        client.command_timeout = command_timeout;
        client.connect_timeout = command_timeout.min(Duration::from_secs(30));
        client.data_timeout = command_timeout;
        Self {
            bal,
            tls,
            password,
            tokens,
            autoconfig,
            client,
        }
    }

    pub fn bal(&self) -> &BalConfig {
        &self.bal
    }

    /// The submission front: configured, or from DNS SRV / autoconfig XML (TM5.1P).
    pub async fn endpoint(&self) -> Result<(Endpoint, SocketAddr), ConnectError> {
        let endpoint = match &self.bal.submission {
            Some(e) => e.clone(),
            None => self
                .autoconfig
                .submission(&self.bal)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?,
        };
        let addr = match endpoint.address {
            Some(a) => a,
            None => self
                .autoconfig
                .resolve(&endpoint.host, endpoint.port)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?,
        };
        Ok((endpoint, addr))
    }

    /// Reaches the front as far as its banner (the connectivity probe).
    pub async fn probe(&self) -> bool {
        let Ok((_, addr)) = self.endpoint().await else {
            return false;
        };
        match SmtpClient::connect(addr, self.client.clone()).await {
            Ok(c) => {
                let ok = c.banner().code == 220;
                drop(c.quit().await);
                ok
            }
            Err(_) => false,
        }
    }

    /// A session ready for mail: connected, STARTTLS, authenticated.
    pub async fn connect(&self) -> Result<SmtpClient, ConnectError> {
        let name = &self.bal.name;
        let mut last = None;
        for attempt in 0..2 {
            let mut client = self.open().await?;
            let result = match self.bal.kind {
                BalKind::App => {
                    let password = self.password.as_deref().unwrap_or("");
                    client.auth_plain("", &self.bal.address, password).await
                }
                BalKind::Per | BalKind::Org => {
                    let token =
                        self.tokens
                            .token(&self.bal.address)
                            .await
                            .map_err(|e| match e {
                                TokenError::ReauthRequired(d) => ConnectError::Reauth(d),
                                TokenError::Unavailable(d) => ConnectError::Unreachable(d),
                            })?;
                    client.auth_xoauth2(&self.bal.address, &token).await
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(bal = %name, peer = %client.peer(), kind = ?self.bal.kind, "api lps: authenticated");
                    return Ok(client);
                }
                Err(e) if e.kind() == ErrorKind::Authentication => {
                    tracing::warn!(bal = %name, attempt, error = %e, "api lps: credentials refused (EX_LPS_0710)");
                    drop(client.quit().await);
                    if self.bal.kind == BalKind::App {
                        // A certificate/BAL mismatch or a wrong password does not heal by retrying.
                        return Err(ConnectError::Reauth(e.to_string()));
                    }
                    self.tokens.evict(&self.bal.address).await;
                    last = Some(e);
                }
                Err(e) => return Err(unreachable(&e)),
            }
        }
        let reason = last.map_or_else(String::new, |e| e.to_string());
        self.tokens
            .reauth_required(&self.bal.address, &reason)
            .await;
        Err(ConnectError::Reauth(reason))
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub(crate) fn tokens(&self) -> &dyn AccessTokens {
        self.tokens.as_ref()
    }

    pub(crate) async fn open(&self) -> Result<SmtpClient, ConnectError> {
        let (endpoint, addr) = self.endpoint().await?;
        let server_name = ServerName::try_from(endpoint.host.clone())
            .map_err(|e| ConnectError::Unreachable(format!("bad host {}: {e}", endpoint.host)))?;
        let mut client = SmtpClient::connect(addr, self.client.clone())
            .await
            .map_err(|e| unreachable(&e))?;
        client
            .starttls(Arc::clone(&self.tls), server_name)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(client)
    }
}

fn unreachable(e: &SmtpError) -> ConnectError {
    ConnectError::Unreachable(e.to_string())
}
