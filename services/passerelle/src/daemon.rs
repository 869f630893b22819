//! `passerelle run`: opens the durable state, starts the listeners of the configured
//! profile, and stops cleanly on SIGTERM/SIGINT. It only wires services together; what each
//! one does lives in its own crate (see ARCHITECTURE.md).

use std::sync::Arc;

use anyhow::Context as _;
use passerelle_config::Config;
use passerelle_queue::{Queue, SqliteStore};
use tokio::net::TcpListener;

use crate::status;

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("passerelle")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let queue_dir = config.queue_dir();
    std::fs::create_dir_all(&queue_dir)
        .with_context(|| format!("creating the queue directory {}", queue_dir.display()))?;
    let queue = Queue::open_sqlite(&queue_dir, config.queue.clone())
        .await
        .with_context(|| format!("opening the queue in {}", queue_dir.display()))?;
    let queue: Arc<Queue<SqliteStore>> = Arc::new(queue);

    // Keys and trust come up before any listener: a box whose token or anchors are wrong
    // must not start half-secured (EX_SSI_5100, RE_OPE_5040), and nothing falls back to a
    // software key.
    let _keystore = match &config.keystore {
        Some(keystore_config) => Some(
            passerelle_keystore::Keystore::open(keystore_config)
                .await
                .context("opening the PKCS#11 keystore")?,
        ),
        None => None,
    };
    let mut background = vec![tokio::spawn(prune_done_items(Arc::clone(&queue)))];
    if let Some(trust_config) = &config.trust {
        let store = passerelle_trust::TrustStore::load(trust_config)
            .context("loading the pinned trust anchors")?;
        let every = trust_config.crl_refresh_every;
        background.push(tokio::spawn(async move {
            store
                .refresh_periodically(every, std::future::pending::<()>())
                .await;
        }));
    }

    // The address book keeps answering from its cache whatever the link does (EX_2.1.3_5020).
    let mut annuaire_api = None;
    if let Some(annuaire) = &config.annuaire {
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
        background.push(tokio::spawn(passerelle_annuaire::refresh_loop(
            annuaire.clone(),
            Arc::clone(&cache),
        )));
        if let Some(ldap) = &annuaire.ldap_server {
            let server = passerelle_annuaire::ldap_server::LdapServer::bind(
                ldap.clone(),
                Arc::clone(&cache),
            )
            .await
            .context("binding the annuaire LDAP server")?;
            background.push(tokio::spawn(server.run()));
        }
        annuaire_api = Some(passerelle_annuaire::api::router(
            cache,
            annuaire.stale_after,
        ));
    }

    let listener = TcpListener::bind(config.status.listen)
        .await
        .with_context(|| format!("binding the status listener on {}", config.status.listen))?;
    tracing::info!(
        profile = ?config.general.profile,
        data_dir = %config.general.data_dir.display(),
        status = %config.status.listen,
        version = env!("CARGO_PKG_VERSION"),
        "passerelle started"
    );

    let mut app = status::router(status::State {
        queue: Arc::clone(&queue),
        profile: config.general.profile,
    });
    if let Some(api) = annuaire_api {
        app = app.merge(api);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the status endpoint")?;

    for task in background {
        task.abort();
    }
    tracing::info!("passerelle stopped");
    Ok(())
}

/// Done rows keep their idempotency keys for `queue.done_retention`, then go: once an hour
/// is plenty for a retention counted in days.
async fn prune_done_items(queue: Arc<Queue<SqliteStore>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
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
