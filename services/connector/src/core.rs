//! What the listeners and workers share, and the [`Connector`] that runs them.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use passerelle_liste_blanche::{ListeBlanche, ListeBlancheHandle, ListeBlancheState};
use passerelle_queue::{Queue, SqliteStore};
use passerelle_smtp::{Reply, ServerConfig};
use passerelle_trust::{ProfileClientVerifier, TrustStore, mssante_server_config};
use rustls::sign::CertifiedKey;
use rustls_pki_types::UnixTime;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{ConnectorConfig, IpNet};
use crate::error::ConnectorError;
use crate::inbound::InboundHandler;
use crate::relay::RelayHandler;
use crate::traces::Traces;

pub(crate) struct Core {
    pub(crate) config: ConnectorConfig,
    pub(crate) queue: Queue<SqliteStore>,
    pub(crate) trust: Arc<TrustStore>,
    pub(crate) liste_blanche: ListeBlancheHandle,
    pub(crate) traces: Traces,
    pub(crate) identity: Arc<CertifiedKey>,
    pub(crate) allowed_clients: Vec<IpNet>,
    pub(crate) domains: Vec<String>,
    pub(crate) resolver: TokioResolver,
    pub(crate) inbound_ready: Notify,
    pub(crate) outbound_ready: Notify,
}

impl Core {
    /// The verified list, or the cold-start refusal (EX_2.2_5010/5035: no MSSanté exchange
    /// before a first verified list).
    pub(crate) fn list(&self) -> Result<Arc<ListeBlanche>, Reply> {
        match self.liste_blanche.state(UnixTime::now()) {
            ListeBlancheState::Verified { list, .. } => Ok(list),
            ListeBlancheState::NoVerifiedList => Err(Reply::new(
                421,
                (4, 3, 0),
                "No verified MSSante liste blanche yet: exchange refused, try again later",
            )),
        }
    }

    /// One of our own domains.
    pub(crate) fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The connector: both listeners and both delivery workers.
pub struct Connector {
    core: Arc<Core>,
    inbound: TcpListener,
    relay: TcpListener,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("hostname", &self.core.config.hostname)
            .field("inbound", &self.inbound.local_addr().ok())
            .field("relay", &self.relay.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Bind the listeners of `config`.
    pub async fn bind(
        config: ConnectorConfig,
        queue: Queue<SqliteStore>,
        identity: Arc<CertifiedKey>,
        trust: Arc<TrustStore>,
        liste_blanche: ListeBlancheHandle,
    ) -> Result<Self, ConnectorError> {
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ConnectorError::Listen { addr, source })
        };
        let inbound = listen(config.inbound.listen).await?;
        let relay = listen(config.relay.listen).await?;
        Self::with_listeners(
            config,
            queue,
            identity,
            trust,
            liste_blanche,
            inbound,
            relay,
        )
    }

    /// With listeners bound by the caller (tests bind first to learn the ports).
    pub fn with_listeners(
        config: ConnectorConfig,
        queue: Queue<SqliteStore>,
        identity: Arc<CertifiedKey>,
        trust: Arc<TrustStore>,
        liste_blanche: ListeBlancheHandle,
        inbound: TcpListener,
        relay: TcpListener,
    ) -> Result<Self, ConnectorError> {
        for (profile, what) in [
            (&config.inbound_profile, "inbound_profile"),
            (&config.outbound_profile, "outbound_profile"),
        ] {
            trust
                .profile(profile)
                .map_err(|e| ConnectorError::Config(format!("{what}: {e}")))?;
        }
        if config.domains.is_empty() {
            return Err(ConnectorError::Config("domains: at least one".to_owned()));
        }
        let allowed_clients = config
            .relay
            .allowed_clients
            .iter()
            .map(|n| IpNet::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let traces = Traces::open(&config.traces)?;
        let resolver = resolver(&config);
        let domains = config
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        Ok(Self {
            core: Arc::new(Core {
                config,
                queue,
                trust,
                liste_blanche,
                traces,
                identity,
                allowed_clients,
                domains,
                resolver,
                inbound_ready: Notify::new(),
                outbound_ready: Notify::new(),
            }),
            inbound,
            relay,
        })
    }

    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.local_addr().ok()
    }

    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.local_addr().ok()
    }

    /// Serve until `shutdown`: the TM3.1P listener, the relay listener, the delivery workers.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ConnectorError> {
        let core = self.core;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let resolver = Arc::new(passerelle_keystore::TokenCertResolver::new(Arc::clone(
            &core.identity,
        )));
        let verifier = Arc::new(ProfileClientVerifier::new(
            Arc::clone(&core.trust),
            &core.config.inbound_profile,
        )?);
        let tls = mssante_server_config(resolver, verifier, core.trust.tls_options())?;
        let mut inbound_cfg = ServerConfig::new(core.config.hostname.clone());
        inbound_cfg.tls = Some(Arc::new(tls));
        inbound_cfg.require_tls_before_mail = true;
        inbound_cfg.max_message_size = core.config.inbound.max_message_size;
        inbound_cfg.max_sessions = core.config.inbound.max_sessions;
        let mut relay_cfg = ServerConfig::new(core.config.hostname.clone());
        relay_cfg.max_message_size = core.config.relay.max_message_size;

        let inbound = passerelle_smtp::serve(
            self.inbound,
            Arc::new(InboundHandler {
                core: Arc::clone(&core),
            }),
            inbound_cfg,
            stopped(stop_rx.clone()),
        );
        let relay = passerelle_smtp::serve(
            self.relay,
            Arc::new(RelayHandler {
                core: Arc::clone(&core),
            }),
            relay_cfg,
            stopped(stop_rx.clone()),
        );
        let internal = crate::delivery::internal_worker(Arc::clone(&core), stop_rx.clone());
        let outbound = crate::delivery::outbound_worker(Arc::clone(&core), stop_rx.clone());
        let stop = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (inbound, relay, (), (), ()) = tokio::join!(inbound, relay, internal, outbound, stop);
        inbound?;
        relay?;
        Ok(())
    }
}

fn resolver(config: &ConnectorConfig) -> TokioResolver {
    let provider = TokioConnectionProvider::default();
    if config.outbound.nameservers.is_empty() {
        match TokioResolver::builder(provider.clone()) {
            Ok(b) => return b.build(),
            Err(e) => tracing::warn!(error = %e, "no system resolver configuration; using none"),
        }
        return TokioResolver::builder_with_config(ResolverConfig::new(), provider).build();
    }
    let ips: Vec<_> = config
        .outbound
        .nameservers
        .iter()
        .map(SocketAddr::ip)
        .collect();
    let mut group = NameServerConfigGroup::new();
    for ns in &config.outbound.nameservers {
        group.merge(NameServerConfigGroup::from_ips_clear(
            &[ns.ip()],
            ns.port(),
            true,
        ));
    }
    tracing::debug!(?ips, "MX lookups through the configured nameservers");
    TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], group), provider)
        .build()
}
