//! `passerelle run`: opens the durable state, starts the services the configuration names,
//! and stops cleanly on SIGTERM/SIGINT. It only wires services together; what each one does
//! lives in its own crate (see ARCHITECTURE.md).
//!
//! Start-up order is the security order: queue, then keys, then trust, then anything that
//! listens. A service that cannot start stops the daemon with the reason; a listener that
//! fails later stops it too (systemd restarts it), rather than leaving a box that looks up
//! but accepts nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use passerelle_config::Config;
use passerelle_keystore::Keystore;
use passerelle_queue::{Queue, SqliteStore};
use passerelle_trust::TrustStore;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::status;

/// How long services get to finish what they are doing after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("passerelle")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

/// The long-running tasks of the daemon: `services` stop the daemon when they end with an
/// error; `housekeeping` tasks only log.
struct Tasks {
    shutdown: CancellationToken,
    services: JoinSet<anyhow::Result<()>>,
    housekeeping: JoinSet<()>,
}

impl Tasks {
    fn service(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.services
            .spawn(async move { task.await.with_context(|| format!("{name} stopped")) });
    }

    fn housekeeping(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.housekeeping.spawn(task);
    }

    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shutdown.clone().cancelled_owned()
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut tasks = Tasks {
        shutdown: CancellationToken::new(),
        services: JoinSet::new(),
        housekeeping: JoinSet::new(),
    };

    let queue_dir = config.queue_dir();
    std::fs::create_dir_all(&queue_dir)
        .with_context(|| format!("creating the queue directory {}", queue_dir.display()))?;
    let queue = Queue::open_sqlite(&queue_dir, config.queue.clone())
        .await
        .with_context(|| format!("opening the queue in {}", queue_dir.display()))?;
    let queue: Arc<Queue<SqliteStore>> = Arc::new(queue);
    tasks.housekeeping(prune_done_items(Arc::clone(&queue)));

    // Keys and trust come up before any listener: a box whose token or anchors are wrong
    // must not start half-secured (EX_SSI_5100, RE_OPE_5040), and nothing falls back to a
    // software key.
    let keystore = open_keystore(&config).await?;
    let result = run_services(&config, &queue, keystore.as_ref(), tasks).await;
    // The token session is closed before the process exits, on every path: an exit racing
    // the token thread's teardown deadlocks inside the PKCS#11 module.
    if let Some(keystore) = &keystore {
        keystore.close().await;
    }
    result
}

async fn run_services(
    config: &Config,
    queue: &Arc<Queue<SqliteStore>>,
    keystore: Option<&Keystore>,
    mut tasks: Tasks,
) -> anyhow::Result<()> {
    // The device certificate exists before any service that presents it starts (the LAN
    // submission listener, the rights endpoint, the web admin).
    let device = device_certificate(config, keystore).await?;
    let trust = start_trust(config, &mut tasks)?;
    let liste_blanche = start_liste_blanche(config, trust.as_ref(), &mut tasks)?;
    start_connector(
        config,
        queue,
        keystore,
        trust.as_ref(),
        liste_blanche.as_ref(),
        &mut tasks,
    )?;
    let psc = open_psc(config, trust.as_ref(), keystore).await?;
    let mail = start_practice_mail(
        config,
        queue,
        keystore,
        trust.as_ref(),
        psc.clone(),
        &mut tasks,
    )?;
    start_mirror(config, trust.as_ref(), keystore, psc.clone(), &mut tasks).await?;
    let billing = start_billing(config, queue, trust.as_ref(), keystore, &mut tasks).await?;
    let annuaire = start_annuaire(config, &mut tasks).await?;
    let cards = config
        .cards
        .as_ref()
        .map(|cards_config| {
            passerelle_cards::CardService::start(cards_config.clone())
                .context("starting the card service (is pcscd running?)")
        })
        .transpose()?;
    start_rights(config, cards.as_ref(), device.as_ref(), &mut tasks)?;
    let updates = start_updater(config, &mut tasks)?;
    start_webadmin(
        config,
        AdminParts {
            queue,
            keystore,
            device: device.as_ref(),
            liste_blanche: liste_blanche.as_ref(),
            annuaire: annuaire.cache.clone(),
            cards: cards.clone(),
            mail,
            psc,
            billing,
            updates,
        },
        &mut tasks,
    )?;

    start_status(config, queue, annuaire.api, &mut tasks).await?;
    notify_systemd(&mut tasks);

    tracing::info!(
        profile = ?config.general.profile,
        data_dir = %config.general.data_dir.display(),
        status = %config.status.listen,
        version = env!("CARGO_PKG_VERSION"),
        "passerelle started"
    );
    tasks.until_stopped().await
}

/// The box's LAN certificate, its key generated in the token at first start.
async fn device_certificate(
    config: &Config,
    keystore: Option<&Keystore>,
) -> anyhow::Result<Option<Arc<passerelle_keystore::TokenCertResolver>>> {
    let (Some(keystore), Some(device)) = (keystore, &config.device) else {
        return Ok(None);
    };
    passerelle_webadmin::device_certificate(
        keystore,
        &device.key_label,
        &device.name,
        &device.organization,
        &config.general.data_dir,
    )
    .await
    .map(Some)
    .context("the device certificate in the token")
}

async fn open_keystore(config: &Config) -> anyhow::Result<Option<Keystore>> {
    let Some(keystore_config) = &config.keystore else {
        return Ok(None);
    };
    Keystore::open(keystore_config)
        .await
        .map(Some)
        .context("opening the PKCS#11 keystore")
}

/// Listeners are bound: tell systemd (`Type=notify`), and keep its watchdog fed from the
/// runtime, so a wedged runtime gets the daemon restarted.
fn notify_systemd(tasks: &mut Tasks) {
    crate::sd_notify::send("READY=1");
    if let Some(every) = crate::sd_notify::watchdog_interval() {
        tasks.housekeeping(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                crate::sd_notify::send("WATCHDOG=1");
            }
        });
    }
}

/// Signed A/B updates (issue #9): commits a boot on trial once `/healthz` answers (or asks
/// for a reboot so the boot counter falls back), then polls the vendor. Returns the handle the
/// web admin shows and commands (version, slot, status, check now / reboot now). Runs as
/// housekeeping: a broken update path must not stop the mail service.
fn start_updater(
    config: &Config,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<passerelle_updater::service::Handle>> {
    use passerelle_updater::boot::Slots as _;
    use passerelle_updater::service;
    let Some(updater) = &config.updater else {
        return Ok(None);
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let slots = service::appliance_slots(updater, &cmdline).context("[updater]")?;
    let version = service::running_version(&updater.os_release).context("[updater]")?;
    let healthz: hyper::Uri = format!("http://{}/healthz", config.status.listen)
        .parse()
        .context("the status endpoint's /healthz URL")?;
    let (status, receiver) = tokio::sync::watch::channel(service::UpdateStatus::Idle);
    let (commands, commands_rx) = tokio::sync::mpsc::channel(4);
    let handle = service::Handle {
        version,
        slot: slots.current(),
        status: receiver,
        commands,
    };
    let (updater, stopping) = (updater.clone(), tasks.stopping());
    tasks.housekeeping(async move {
        let run = service::run(
            updater,
            version,
            slots,
            healthz,
            status,
            commands_rx,
            stopping,
        );
        if let Err(err) = run.await {
            tracing::error!(error = %err, "the updater stopped");
        }
    });
    Ok(Some(handle))
}

fn start_connector(
    config: &Config,
    queue: &Arc<Queue<SqliteStore>>,
    keystore: Option<&Keystore>,
    trust: Option<&Arc<TrustStore>>,
    liste_blanche: Option<&Arc<passerelle_liste_blanche::ListeBlancheService>>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let Some(connector) = &config.connector else {
        return Ok(());
    };
    let (Some(keystore), Some(trust), Some(liste_blanche)) = (keystore, trust, liste_blanche)
    else {
        bail!("[connector] needs [keystore], [trust] and [liste_blanche]");
    };
    let (connector, queue, keystore, trust) = (
        connector.clone(),
        (**queue).clone(),
        keystore.clone(),
        Arc::clone(trust),
    );
    let handle = liste_blanche.handle();
    let stopping = tasks.stopping();
    tasks.service("the MSSanté connector", async move {
        passerelle_connector::serve(connector, queue, &keystore, trust, handle, stopping)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(())
}

/// The rights endpoint the LPS posts to is HTTPS with the device key (issue #7).
fn start_rights(
    config: &Config,
    cards: Option<&passerelle_cards::CardService>,
    device: Option<&Arc<passerelle_keystore::TokenCertResolver>>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let Some(rights) = &config.rights else {
        return Ok(());
    };
    let (Some(cards), Some(device)) = (cards, device) else {
        bail!("[rights] needs [cards], and [keystore] with [device] for its HTTPS endpoint");
    };
    let tls = Arc::new(
        // An explicit provider: the binary links both ring and aws-lc-rs (tough needs it),
        // so there is no process-wide default to fall back on.
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("the rights endpoint's TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(device) as Arc<dyn ResolvesServerCert>),
    );
    let (rights, cards) = (rights.clone(), cards.clone());
    let stopping = tasks.stopping();
    tasks.service("the rights proxy", async move {
        passerelle_rights::run(
            rights,
            cards,
            passerelle_rights::ClientAuth::Card,
            tls,
            stopping,
        )
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(())
}

/// What the web admin shows and operates, as far as it is configured.
struct AdminParts<'a> {
    queue: &'a Arc<Queue<SqliteStore>>,
    keystore: Option<&'a Keystore>,
    device: Option<&'a Arc<passerelle_keystore::TokenCertResolver>>,
    liste_blanche: Option<&'a Arc<passerelle_liste_blanche::ListeBlancheService>>,
    annuaire: Option<Arc<passerelle_annuaire::Cache>>,
    cards: Option<passerelle_cards::CardService>,
    mail: Option<passerelle_api_lps::MailHandle>,
    psc: Option<passerelle_psc::Psc>,
    billing: Option<passerelle_billing::BillingStatus>,
    updates: Option<passerelle_updater::service::Handle>,
}

fn start_webadmin(config: &Config, parts: AdminParts<'_>, tasks: &mut Tasks) -> anyhow::Result<()> {
    let Some(webadmin) = &config.webadmin else {
        return Ok(());
    };
    let (Some(keystore), Some(device)) = (parts.keystore, parts.device) else {
        bail!(
            "[webadmin] needs [keystore] and [device]: it serves HTTPS with the token's device key only"
        );
    };
    let services = passerelle_webadmin::AdminServices {
        queue: Some(Arc::clone(parts.queue) as Arc<dyn passerelle_webadmin::QueueMetricsSource>),
        keystore: Some(keystore.clone()),
        anchors: config
            .trust
            .as_ref()
            .map(|t| passerelle_webadmin::AnchorFiles {
                dir: t.anchors_dir.clone(),
                pins_file: t.pins_file.clone(),
            }),
        liste_blanche: parts.liste_blanche.map(|service| service.handle()),
        annuaire: parts.annuaire,
        cards: parts.cards,
        mail: parts.mail,
        psc: parts.psc,
        billing: parts.billing,
        updates: parts.updates,
    };
    let (webadmin, cert) = (
        webadmin.clone(),
        Arc::clone(device) as Arc<dyn ResolvesServerCert>,
    );
    let stopping = tasks.stopping();
    tasks.service("the web admin", async move {
        passerelle_webadmin::serve(webadmin, services, cert, stopping)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(())
}

async fn open_psc(
    config: &Config,
    trust: Option<&Arc<TrustStore>>,
    keystore: Option<&Keystore>,
) -> anyhow::Result<Option<passerelle_psc::Psc>> {
    let Some(psc_config) = &config.psc else {
        return Ok(None);
    };
    let (Some(trust), Some(keystore)) = (trust, keystore) else {
        bail!("[psc] needs [trust] and [keystore]");
    };
    passerelle_psc::Psc::open(psc_config, Arc::clone(trust), keystore)
        .await
        .map(Some)
        .context("opening the Pro Santé Connect token store")
}

/// Billing lots (issue #6): spool, HTTP and LAN SMTP intake, encryption at send time,
/// returns over POP3 or IMAP, the SESAM-Vitale CRL downloads, and the OCT concentrator when
/// `[billing.oct]` is set. Returns the status the web admin's Facturation page shows.
async fn start_billing(
    config: &Config,
    queue: &Arc<Queue<SqliteStore>>,
    trust: Option<&Arc<TrustStore>>,
    keystore: Option<&Keystore>,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<passerelle_billing::BillingStatus>> {
    let Some(billing) = &config.billing else {
        return Ok(None);
    };
    let (Some(sesam), Some(trust)) = (&config.sesam, trust) else {
        bail!("[billing] needs [sesam] (recipient certificates) and [trust]");
    };
    if billing.oct.is_some() && keystore.is_none() {
        bail!("[billing.oct] needs [keystore]: the OCT key is opened in the token only");
    }
    let status = passerelle_billing::BillingStatus::open(sesam, billing, (**queue).clone())
        .await
        .context("opening the billing lot store")?;
    let (sesam, billing, trust, keystore, running) = (
        sesam.clone(),
        billing.clone(),
        Arc::clone(trust),
        keystore.cloned(),
        status.clone(),
    );
    let shutdown = tasks.shutdown.clone();
    tasks.service("the billing service", async move {
        passerelle_billing::serve_with(
            &sesam,
            &billing,
            trust,
            running,
            keystore.as_ref(),
            shutdown,
        )
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(Some(status))
}

/// Practice profile, outbound (issue #4): the LAN submission listener and the API LPS
/// delivery workers over the shared outbox.
fn start_practice_mail(
    config: &Config,
    queue: &Arc<Queue<SqliteStore>>,
    keystore: Option<&Keystore>,
    trust: Option<&Arc<TrustStore>>,
    psc: Option<passerelle_psc::Psc>,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<passerelle_api_lps::MailHandle>> {
    let Some(practice_mail) = &config.practice_mail else {
        return Ok(None);
    };
    let (Some(keystore), Some(trust)) = (keystore, trust) else {
        bail!("[practice_mail] needs [keystore] and [trust]");
    };
    let tokens: Arc<dyn passerelle_api_lps::AccessTokens> = match psc {
        Some(psc) => Arc::new(psc),
        // Validated at load: without [psc] every BAL is applicative and asks for no token.
        None => Arc::new(NoPsc),
    };
    let (practice_mail, queue, keystore, trust) = (
        practice_mail.clone(),
        Arc::clone(queue),
        keystore.clone(),
        Arc::clone(trust),
    );
    // Applicative BALs added from the web admin: merged at start (next restart).
    let overlay = config.general.data_dir.join("bal-overlay.json");
    let handle = passerelle_api_lps::MailHandle::default();
    let running = handle.clone();
    let stopping = tasks.stopping();
    tasks.service("the API LPS mail service", async move {
        passerelle_api_lps::serve_with_handle(
            practice_mail,
            queue,
            &keystore,
            trust,
            tokens,
            Some(overlay),
            &running,
            stopping,
        )
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(Some(handle))
}

/// Token source of a practice with applicative BALs only.
#[derive(Debug)]
struct NoPsc;

impl passerelle_api_lps::AccessTokens for NoPsc {
    fn token<'a>(&'a self, bal: &'a str) -> passerelle_api_lps::TokenFuture<'a> {
        Box::pin(async move {
            Err(passerelle_api_lps::TokenError::ReauthRequired(format!(
                "{bal}: no Pro Santé Connect configured ([psc])"
            )))
        })
    }

    fn evict<'a>(&'a self, _bal: &'a str) -> passerelle_api_lps::EvictFuture<'a> {
        Box::pin(async {})
    }
}

/// The operator's BALs mirrored into the local mailboxes, through their own inbox queue
/// (issue #4): mail stays readable when the link is down.
async fn start_mirror(
    config: &Config,
    trust: Option<&Arc<TrustStore>>,
    keystore: Option<&Keystore>,
    psc: Option<passerelle_psc::Psc>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let Some(mirror) = &config.mirror else {
        return Ok(());
    };
    let Some(trust) = trust else {
        bail!("[mirror] needs [trust] to validate the operator's IMAP server");
    };
    let inbox_dir = config.general.data_dir.join("inbox");
    let inbox = Queue::open_sqlite(&inbox_dir, config.queue.clone())
        .await
        .with_context(|| format!("opening the inbox queue in {}", inbox_dir.display()))?;
    let (mirror, trust, keystore) = (mirror.clone(), Arc::clone(trust), keystore.cloned());
    let shutdown = tasks.shutdown.clone();
    tasks.service("the IMAP mirror", async move {
        passerelle_imap_mirror::run_mirror(
            mirror,
            inbox,
            psc,
            trust,
            keystore,
            Arc::new(passerelle_imap_mirror::Counters::default()),
            shutdown,
        )
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(())
}

/// The loopback status endpoint (`/healthz`, `/metrics`, the annuaire JSON API).
async fn start_status(
    config: &Config,
    queue: &Arc<Queue<SqliteStore>>,
    annuaire_api: Option<axum::Router>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.status.listen)
        .await
        .with_context(|| format!("binding the status listener on {}", config.status.listen))?;
    let mut app = status::router(status::State {
        queue: Arc::clone(queue),
        profile: config.general.profile,
    });
    if let Some(api) = annuaire_api {
        app = app.merge(api);
    }
    let stopping = tasks.stopping();
    tasks.service("the status endpoint", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
            .map_err(anyhow::Error::from)
    });

    Ok(())
}

fn start_trust(config: &Config, tasks: &mut Tasks) -> anyhow::Result<Option<Arc<TrustStore>>> {
    let Some(trust_config) = &config.trust else {
        return Ok(None);
    };
    let store =
        Arc::new(TrustStore::load(trust_config).context("loading the pinned trust anchors")?);
    let refreshing = Arc::clone(&store);
    let every = trust_config.crl_refresh_every;
    let stopping = tasks.stopping();
    tasks.housekeeping(async move { refreshing.refresh_periodically(every, stopping).await });
    Ok(Some(store))
}

/// The verified liste blanche gates every MSSanté exchange of the connector (EX_2.2_5035).
fn start_liste_blanche(
    config: &Config,
    trust: Option<&Arc<TrustStore>>,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<Arc<passerelle_liste_blanche::ListeBlancheService>>> {
    let Some(liste_config) = &config.liste_blanche else {
        return Ok(None);
    };
    let Some(trust) = trust else {
        bail!("[liste_blanche] needs a [trust] table to verify the list");
    };
    let service = Arc::new(
        passerelle_liste_blanche::ListeBlancheService::open(
            liste_config,
            &config.general.data_dir,
            Arc::clone(trust),
        )
        .context("opening the liste blanche")?,
    );
    let running = Arc::clone(&service);
    let stopping = tasks.stopping();
    tasks.housekeeping(async move { running.run(stopping).await });
    Ok(Some(service))
}

#[derive(Default)]
struct Annuaire {
    cache: Option<Arc<passerelle_annuaire::Cache>>,
    api: Option<axum::Router>,
}

/// The address book keeps answering from its cache whatever the link does (EX_2.1.3_5020).
async fn start_annuaire(config: &Config, tasks: &mut Tasks) -> anyhow::Result<Annuaire> {
    let Some(annuaire) = &config.annuaire else {
        return Ok(Annuaire::default());
    };
    let cache = Arc::new(
        passerelle_annuaire::Cache::open(&annuaire.cache_dir)
            .await
            .with_context(|| {
                format!(
                    "opening the annuaire cache in {}",
                    annuaire.cache_dir.display()
                )
            })?,
    );
    tasks.housekeeping(passerelle_annuaire::refresh_loop(
        annuaire.clone(),
        Arc::clone(&cache),
    ));
    if let Some(ldap) = &annuaire.ldap_server {
        let server =
            passerelle_annuaire::ldap_server::LdapServer::bind(ldap.clone(), Arc::clone(&cache))
                .await
                .context("binding the annuaire LDAP server")?;
        tasks.service("the annuaire LDAP server", async move {
            server.run().await;
            Ok(())
        });
    }
    Ok(Annuaire {
        api: Some(passerelle_annuaire::api::router(
            Arc::clone(&cache),
            annuaire.stale_after,
        )),
        cache: Some(cache),
    })
}

impl Tasks {
    /// Runs until SIGTERM/SIGINT or until a service fails, then lets the services finish
    /// what they hold (bounded by `DRAIN`).
    async fn until_stopped(mut self) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            () = shutdown_signal() => Ok(()),
            Some(ended) = self.services.join_next() => match ended {
                Ok(Ok(())) => Err(anyhow::anyhow!("a service ended on its own")),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::Error::from(join).context("a service panicked")),
            },
        };
        crate::sd_notify::send("STOPPING=1");
        self.shutdown.cancel();
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(ended) = self.services.join_next().await {
                if let Ok(Err(err)) = ended {
                    tracing::warn!(error = format!("{err:#}"), "service stopped with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("services still busy after {DRAIN:?}; stopping them");
            self.services.shutdown().await;
        }
        self.housekeeping.shutdown().await;
        tracing::info!("passerelle stopped");
        outcome
    }
}

/// Done rows keep their idempotency keys for `queue.done_retention`, then go: once an hour
/// is plenty for a retention counted in days.
async fn prune_done_items(queue: Arc<Queue<SqliteStore>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match queue.prune_done().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned done queue items past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning done queue items failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
