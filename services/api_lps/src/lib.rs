//! Practice profile, outbound: MSSanté mail from the practice's LAN to the operator's API LPS,
//! offline-first (product flow 1).
//!
//! - [`submission::Submission`]: the LAN submission listener's [`passerelle_smtp::Handler`].
//!   STARTTLS with the device certificate, AUTH PLAIN/LOGIN with local accounts (argon2),
//!   recipients on MSSanté domains only (§4.8.1.3: a mixed list loses only its non-MSSanté
//!   recipients), at most 40 recipients (EX_GBM_4420, `452 4.5.3`), messages up to the
//!   configured size (≥ 10 Mo, EX_GBM_4410), `X-MSS-NIL` on every message (Réf. #2 2.3),
//!   `X-MSS-MES`/`X-MSS-INS`/`X-MSS-CODECDA` passed when valid and refused (`554 5.6.0`)
//!   when not, a Message-ID and Date ensured; `250` only once the outbox holds it.
//! - [`outbox`]: the item format (versioned envelope line + message), one queue kind per BAL.
//! - [`autoconfig`]: TM5.1P, DNS SRV with priority as selector (EX_LPS_0300), Mozilla XML
//!   fallback for `*.mssante.fr`.
//! - [`upstream`]: STARTTLS with the MSSanté client profile, AUTH PLAIN + ORG AUTH_CLI for
//!   APP BALs (EX_LPS_1200), XOAUTH2 with [`AccessTokens`] for PER/ORG (EX_LPS_0700/0900);
//!   `535 5.7.8` → evict, retry once, then "re-authentication required" (mail kept).
//! - [`delivery`]: per-BAL sessions with bounded concurrency, reconnect when the server ends
//!   a session (EX_LPS_1000, Réf. #2 1.10), link monitor, DSNs by LMTP into Dovecot.
//!
//! Delivery is at-least-once: a crash between the operator's `250` and the outbox ack sends
//! the message again after the lease expires (the only source of duplicates).

mod admin;
pub mod autoconfig;
pub mod config;
pub mod delivery;
mod error;
pub mod outbox;
pub mod policy;
mod psc;
pub mod submission;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use passerelle_keystore::{KeyRef, Keystore, TokenCertResolver};
use passerelle_queue::{Queue, SqliteStore};
use passerelle_trust::{
    NoClientCertificate, ProfileServerVerifier, TrustStore, mssante_client_config,
};
use rustls::client::ResolvesClientCert;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use admin::{
    BalOverlay, ConnectionReport, MailHandle, OverlayBal, valid_bal_address, valid_bal_name,
};
pub use config::{
    BalConfig, BalKind, DeliveryConfig, DnsConfig, Endpoint, Limits, LocalAccount,
    PracticeMailConfig,
};
pub use delivery::{BalDelivery, BalState, DSN_KIND};
pub use error::ApiLpsError;
pub use upstream::{AccessTokens, EvictFuture, TokenError, TokenFuture};

use autoconfig::Autoconfig;
use delivery::run_dsn_worker;
use submission::Submission;
use upstream::Upstream;

/// Wake-up signals per queue kind owner (a BAL name or [`DSN_KIND`]): producers bump,
/// consumers wait on a change instead of polling.
#[derive(Debug, Clone, Default)]
pub struct Wakers(Arc<Mutex<HashMap<String, watch::Sender<u64>>>>);

impl Wakers {
    fn sender(&self, name: &str) -> watch::Sender<u64> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .clone()
    }

    pub fn wake(&self, name: &str) {
        self.sender(name).send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self, name: &str) -> watch::Receiver<u64> {
        self.sender(name).subscribe()
    }
}

/// The TLS configurations the service runs with (built from the keystore and trust store
/// by [`serve`]; tests build them from the test PKI).
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// LAN listener (device certificate).
    pub listener: Arc<rustls::ServerConfig>,
    /// Per BAL name: the API LPS client configuration.
    pub upstream: HashMap<String, Arc<rustls::ClientConfig>>,
    /// Autoconfig XML over HTTPS.
    pub https: Arc<rustls::ClientConfig>,
}

/// A running practice mail service.
#[derive(Debug)]
pub struct PracticeMail {
    local_addr: SocketAddr,
    bals: HashMap<String, Arc<BalDelivery>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl PracticeMail {
    /// Binds the listener and starts the delivery workers.
    pub async fn start(
        config: &PracticeMailConfig,
        queue: Arc<Queue<SqliteStore>>,
        tls: TlsSetup,
        tokens: Arc<dyn AccessTokens>,
        autoconfig: Autoconfig,
    ) -> Result<Self, ApiLpsError> {
        let wakers = Wakers::default();
        let handler = Arc::new(Submission::new(config, Arc::clone(&queue), wakers.clone())?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(ApiLpsError::io(format!("bind {}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(ApiLpsError::io("listener address"))?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let server_config = Submission::server_config(config, Arc::clone(&tls.listener));
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                drop(rx.wait_for(|s| *s).await);
            };
            if let Err(e) = passerelle_smtp::serve(listener, handler, server_config, shutdown).await
            {
                tracing::error!(error = %e, "practice mail: submission listener stopped");
            }
        });
        tasks.spawn(run_dsn_worker(
            Arc::clone(&queue),
            wakers.clone(),
            config.dsn_lmtp,
            config.hostname.clone(),
            stop_rx.clone(),
        ));
        let autoconfig = Arc::new(autoconfig);
        let mut bals = HashMap::new();
        for bal in &config.bals {
            let client_tls = tls.upstream.get(&bal.name).cloned().ok_or_else(|| {
                ApiLpsError::Config(format!("BAL {}: no TLS client configuration", bal.name))
            })?;
            let password = match &bal.password_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(ApiLpsError::io(format!("BAL {} password file", bal.name)))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ),
                None => None,
            };
            let upstream = Upstream::new(
                bal.clone(),
                client_tls,
                password,
                Arc::clone(&tokens),
                Arc::clone(&autoconfig),
                &config.hostname,
                config.delivery.command_timeout,
            );
            let delivery = Arc::new(BalDelivery::new(
                upstream,
                Arc::clone(&queue),
                wakers.clone(),
                config.delivery.clone(),
                config.hostname.clone(),
            ));
            tasks.spawn(Arc::clone(&delivery).run(stop_rx.clone()));
            bals.insert(bal.name.clone(), delivery);
        }
        tracing::info!(listen = %local_addr, bals = bals.len(), "practice mail: started");
        Ok(Self {
            local_addr,
            bals,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn bal(&self, name: &str) -> Option<&Arc<BalDelivery>> {
        self.bals.get(name)
    }

    /// A handle for the web admin on this service's BALs (`config` as it runs).
    pub fn handle(&self, config: &PracticeMailConfig, overlay: Option<PathBuf>) -> MailHandle {
        let handle = MailHandle::default();
        self.fill(&handle, config, overlay);
        handle
    }

    fn fill(&self, handle: &MailHandle, config: &PracticeMailConfig, overlay: Option<PathBuf>) {
        let mut bals: Vec<_> = self.bals.values().cloned().collect();
        bals.sort_by(|a, b| a.upstream.bal().name.cmp(&b.upstream.bal().name));
        handle.set(config.clone(), overlay, bals);
    }

    /// Stops accepting, lets sessions finish their current message, and waits.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The daemon's entry point: TLS from the token (device key for the LAN, ORG AUTH_CLI per
/// BAL) and the trust store (`server_profile` for the operator's fronts), then runs until
/// `shutdown` resolves.
pub async fn serve(
    config: PracticeMailConfig,
    queue: Arc<Queue<SqliteStore>>,
    keystore: &Keystore,
    trust: Arc<TrustStore>,
    tokens: Arc<dyn AccessTokens>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiLpsError> {
    serve_with_handle(
        config,
        queue,
        keystore,
        trust,
        tokens,
        None,
        &MailHandle::default(),
        shutdown,
    )
    .await
}

/// [`serve`] for a daemon with a web admin: the applicative BALs of the `overlay` file (added
/// from the web admin) are merged into `config` first, and `handle` is filled once the
/// service runs.
#[expect(
    clippy::too_many_arguments,
    reason = "serve's arguments plus the two admin ones"
)]
pub async fn serve_with_handle(
    mut config: PracticeMailConfig,
    queue: Arc<Queue<SqliteStore>>,
    keystore: &Keystore,
    trust: Arc<TrustStore>,
    tokens: Arc<dyn AccessTokens>,
    overlay: Option<PathBuf>,
    handle: &MailHandle,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiLpsError> {
    if let Some(path) = &overlay {
        BalOverlay::load(path)?.apply(&mut config)?;
    }
    let device = keystore
        .certified_key(&KeyRef::from(config.device_key_label.as_str()))
        .await?;
    let listener = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ApiLpsError::Config(format!("listener TLS: {e}")))?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(TokenCertResolver::new(device)));
    let verifier = Arc::new(ProfileServerVerifier::new(
        Arc::clone(&trust),
        &config.server_profile,
    )?);
    let options = trust.tls_options();
    let mut upstream = HashMap::new();
    for bal in &config.bals {
        let resolver: Arc<dyn ResolvesClientCert> = match &bal.client_key_label {
            Some(label) => Arc::new(TokenCertResolver::new(
                keystore
                    .certified_key(&KeyRef::from(label.as_str()))
                    .await?,
            )),
            None if bal.kind == BalKind::App => {
                return Err(ApiLpsError::Config(format!(
                    "BAL {}: an applicative BAL needs client_key_label (ORG AUTH_CLI, EX_LPS_1200)",
                    bal.name
                )));
            }
            None => Arc::new(NoClientCertificate),
        };
        let client = mssante_client_config(resolver, verifier.clone(), options)?;
        upstream.insert(bal.name.clone(), Arc::new(client));
    }
    let https = Arc::new(mssante_client_config(
        Arc::new(NoClientCertificate),
        verifier,
        options,
    )?);
    let autoconfig = Autoconfig::new(&config.dns, Arc::clone(&https))?;
    let tls = TlsSetup {
        listener: Arc::new(listener),
        upstream,
        https,
    };
    let running = PracticeMail::start(&config, queue, tls, tokens, autoconfig).await?;
    running.fill(handle, &config, overlay);
    shutdown.await;
    running.shutdown().await;
    Ok(())
}
