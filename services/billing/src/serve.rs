//! The daemon entry point: spool scan, HTTP API, sender, returns poller and the ARL deadline
//! check, until shutdown.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use passerelle_queue::{Queue, SqliteStore};
use passerelle_sesam::{Directory, RecipientCertificates, SesamConfig};
use passerelle_trust::TrustStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;

use crate::config::{AfterConfig, BillingConfig, OctConfig, ReturnsProtocol};
use crate::crl::CrlWatch;
use crate::error::BillingError;
use crate::imap::{AfterHandling, ImapRoute};
use crate::intake::{Intake, api_router, scan_spool};
use crate::oct::OctIntake;
use crate::relay::LotRelay;
use crate::returns::{Pop3Route, Returns};
use crate::sender::{Route, Sender};
use crate::status::{BillingStatus, PollReport};
use passerelle_keystore::{KeyRef, Keystore, TokenCertResolver};

/// How often sent lots are checked against the ARL deadline.
const OVERDUE_CHECK: Duration = Duration::from_secs(60);

fn read_secret(path: &Path) -> Result<String, BillingError> {
    let text = std::fs::read_to_string(path).map_err(BillingError::io(path))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn tls_roots(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, BillingError> {
    let pem = std::fs::read(ca_file).map_err(BillingError::io(ca_file))?;
    let mut roots = rustls::RootCertStore::empty();
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let block =
            block.map_err(|e| BillingError::Returns(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(CertificateDer::from(block.contents))
            .map_err(|e| BillingError::Returns(format!("{}: {e}", ca_file.display())))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BillingError::Returns(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, BillingError> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(BillingError::io(host))?
        .next()
        .ok_or_else(|| BillingError::Returns(format!("{host}: no address")))
}

fn server_name(name: &str) -> Result<ServerName<'static>, BillingError> {
    ServerName::try_from(name.to_owned()).map_err(|e| BillingError::Returns(format!("{name}: {e}")))
}

/// The billing mailbox as configured.
enum Mailbox {
    Pop3(Pop3Route),
    Imap(ImapRoute),
}

/// The service's parts from the configuration.
async fn build(
    sesam: &SesamConfig,
    config: &BillingConfig,
    intake: Intake,
    trust: Arc<TrustStore>,
) -> Result<(Intake, Sender, Returns, Mailbox), BillingError> {
    let requeued = intake.requeue_received().await?;
    tracing::info!(requeued, "billing service starting");
    let certs = Arc::new(Mutex::new(
        RecipientCertificates::open(&sesam.certificates_dir, sesam.profiles())
            .map_err(|e| BillingError::Returns(e.to_string()))?,
    ));
    let directory = Directory::new(&sesam.directory_url, sesam.directory_timeout).ok();
    let r = &config.route;
    let route = Route {
        addr: resolve(&r.host, r.port).await?,
        server_name: server_name(r.server_name.as_deref().unwrap_or(&r.host))?,
        tls: tls_roots(&r.ca_file)?,
        auth: match (&r.user, &r.password_file) {
            (Some(u), Some(p)) => Some((u.clone(), read_secret(p)?)),
            _ => None,
        },
        helo: r.helo.clone(),
        from: r.from.clone(),
        to_amo: r.to_amo.clone(),
        to_amc: r.to_amc.clone(),
    };
    let sender = Sender {
        intake: intake.clone(),
        certs: Arc::clone(&certs),
        trust: Arc::clone(&trust),
        route,
        compress: config.compress,
        work_dir: config.state_dir.join("work"),
    };
    let rc = &config.returns;
    config.check().map_err(BillingError::Returns)?;
    let (addr, name, tls) = (
        resolve(&rc.host, rc.port()).await?,
        server_name(rc.server_name.as_deref().unwrap_or(&rc.host))?,
        tls_roots(&rc.ca_file)?,
    );
    let password = read_secret(&rc.password_file)?;
    let mailbox = match rc.protocol {
        ReturnsProtocol::Pop3 => Mailbox::Pop3(Pop3Route {
            addr,
            server_name: name,
            tls,
            user: rc.user.clone(),
            password,
            timeout: Duration::from_secs(60),
        }),
        ReturnsProtocol::Imap => Mailbox::Imap(ImapRoute {
            addr,
            server_name: name,
            tls,
            user: rc.user.clone(),
            password,
            folder: rc.folder.clone(),
            after: match rc.after {
                AfterConfig::Delete => AfterHandling::Delete,
                AfterConfig::Flag => AfterHandling::Flag(rc.flag_keyword.clone()),
            },
            timeout: Duration::from_secs(60),
        }),
    };
    let returns = Returns {
        intake: intake.clone(),
        certs,
        trust,
        directory,
        raw_dir: config.state_dir.join("returns/raw"),
        lps_out_dir: rc.lps_out_dir.clone(),
        max_mail_bytes: rc.max_mail_bytes,
    };
    Ok((intake, sender, returns, mailbox))
}

/// Run the billing service until `shutdown`. The queue is the daemon's shared queue (kind
/// [`QUEUE_KIND`](crate::QUEUE_KIND)); `trust` holds the SESAM-Vitale profiles and CRLs.
pub async fn serve(
    sesam: &SesamConfig,
    config: &BillingConfig,
    queue: Queue<SqliteStore>,
    trust: Arc<TrustStore>,
    shutdown: CancellationToken,
) -> Result<(), BillingError> {
    let status = BillingStatus::open(sesam, config, queue).await?;
    serve_with(sesam, config, trust, status, None, shutdown).await
}

/// [`serve`] with a [`BillingStatus`] the caller keeps (the web admin reads it): the loops
/// record the CRL and mailbox state in it. `keystore` is needed by the OCT profile only
/// (`[billing.oct]`; refused without it).
pub async fn serve_with(
    sesam: &SesamConfig,
    config: &BillingConfig,
    trust: Arc<TrustStore>,
    status: BillingStatus,
    keystore: Option<&Keystore>,
    shutdown: CancellationToken,
) -> Result<(), BillingError> {
    let (intake, sender, returns, mailbox) =
        build(sesam, config, status.intake().clone(), trust).await?;
    let mut tasks = Tasks::new();
    if let Some(addr) = config.api_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(BillingError::io(addr.to_string()))?;
        let app = api_router(intake.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(BillingError::io("billing API"))
        });
    }
    if let Some(addr) = config.relay_listen {
        start_relay(&mut tasks, addr, &intake, &shutdown).await?;
    }
    if let Some(oct) = &config.oct {
        let keystore = keystore.ok_or_else(|| {
            BillingError::Returns(
                "[billing.oct] needs [keystore]: the OCT key is in the token".into(),
            )
        })?;
        start_oct(&mut tasks, oct, keystore, &intake, &shutdown).await?;
    }
    let crl = CrlWatch::new(
        Arc::clone(&sender.trust),
        Arc::clone(&sender.certs),
        config.crl_sources.clone(),
        &config.device_id.clone().unwrap_or_else(host_name),
        &config.state_dir,
        status.clone(),
    );
    let stop = shutdown.clone();
    tasks.spawn(async move {
        crl.run(stop).await;
        Ok(())
    });
    spawn_loops(
        &mut tasks, config, &intake, sender, returns, mailbox, &status, &shutdown,
    );
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                return Err(BillingError::Returns(format!("billing task: {e}")));
            }
        }
    }
    Ok(())
}

/// The periodic loops: spool scan, sending, mailbox poll, ARL deadline.
#[allow(clippy::too_many_arguments)] // the service's parts, built once by `build`
fn spawn_loops(
    tasks: &mut Tasks,
    config: &BillingConfig,
    intake: &Intake,
    sender: Sender,
    returns: Returns,
    mailbox: Mailbox,
    status: &BillingStatus,
    shutdown: &CancellationToken,
) {
    let shutdown = shutdown.clone();
    let spool = config.spool_dir.clone();
    let spool_intake = intake.clone();
    every(tasks, config.spool_interval, &shutdown, move || {
        let (spool, intake) = (spool.clone(), spool_intake.clone());
        async move {
            if let Err(e) = scan_spool(&spool, &intake).await {
                tracing::warn!(error = %e, "spool scan");
            }
        }
    });
    every(tasks, config.route.send_interval, &shutdown, move || {
        let sender = sender.clone();
        async move {
            // Lots put back by another process (`passerelle sesam resend`) are queued
            // here; the key of each round makes this idempotent.
            if let Err(e) = sender.intake.requeue_received().await {
                tracing::warn!(error = %e, "requeueing lots to resend");
            }
            if let Err(e) = sender.run_once().await {
                tracing::warn!(error = %e, "lot sending");
            }
            if let Err(e) = sender.forward_returns().await {
                tracing::warn!(error = %e, "forwarding returns to practices");
            }
        }
    });
    let poll_status = status.clone();
    let mailbox = Arc::new(mailbox);
    every(tasks, config.returns.poll_interval, &shutdown, move || {
        let (returns, mailbox, status) =
            (returns.clone(), Arc::clone(&mailbox), poll_status.clone());
        async move {
            let (route, result) = match &*mailbox {
                Mailbox::Pop3(r) => ("pop3", returns.poll_pop3(r).await),
                Mailbox::Imap(r) => ("imap", returns.poll_imap(r).await),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, route, "billing mailbox poll");
            }
            status.set_last_poll(PollReport::of(route, &result));
        }
    });
    let (deadline, store) = (config.arl_deadline, intake.store.clone());
    every(tasks, OVERDUE_CHECK, &shutdown, move || {
        let store = store.clone();
        async move {
            match store.mark_overdue(deadline, SystemTime::now()).await {
                Ok(late) if !late.is_empty() => {
                    tracing::warn!(
                        lots = late.len(),
                        "ARL missing past the deadline: lots overdue"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ARL deadline check"),
            }
        }
    });
}

/// OCT profile: the intake practices mail their encrypted lots to ([`OctIntake`]).
async fn start_oct(
    tasks: &mut Tasks,
    oct: &OctConfig,
    keystore: &Keystore,
    intake: &Intake,
    shutdown: &CancellationToken,
) -> Result<(), BillingError> {
    let bytes = std::fs::read(&oct.certificate).map_err(BillingError::io(&oct.certificate))?;
    let certificate = passerelle_trust::certificate_der(&bytes)
        .map_err(|why| BillingError::Returns(format!("{}: {why}", oct.certificate.display())))?;
    let key = keystore
        .key(&KeyRef::from(oct.key_label.as_str()))
        .await
        .map_err(|e| BillingError::Returns(format!("OCT key {}: {e}", oct.key_label)))?;
    let listener = tokio::net::TcpListener::bind(oct.listen)
        .await
        .map_err(BillingError::io(oct.listen.to_string()))?;
    let mut smtp = passerelle_smtp::ServerConfig::new("passerelle");
    smtp.max_message_size =
        usize::try_from(intake.max_lot_bytes / 3 * 4 + (1 << 20)).unwrap_or(usize::MAX);
    if let Some(label) = &oct.tls_key_label {
        let certified = keystore
            .certified_key(&KeyRef::from(label.as_str()))
            .await
            .map_err(|e| BillingError::Returns(format!("OCT intake TLS key {label}: {e}")))?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| BillingError::Returns(format!("OCT intake TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(TokenCertResolver::new(certified)));
        smtp.tls = Some(Arc::new(tls));
        smtp.require_tls_before_mail = true;
    }
    let handler = Arc::new(OctIntake {
        intake: intake.clone(),
        key,
        certificate,
        practices: oct.practices.clone(),
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        passerelle_smtp::serve(listener, handler, smtp, stop.cancelled_owned())
            .await
            .map_err(|e| BillingError::Returns(format!("OCT intake: {e}")))
    });
    tracing::info!(addr = %oct.listen, practices = oct.practices.len(), "OCT intake listening");
    Ok(())
}

/// The host name (the default CRL slot key).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "passerelle".into())
}

type Tasks = tokio::task::JoinSet<Result<(), BillingError>>;

/// Run `tick` every `period` until `stop`.
fn every<F, Fut>(tasks: &mut Tasks, period: Duration, stop: &CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let stop = stop.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => tick().await,
                () = stop.cancelled() => return Ok(()),
            }
        }
    });
}

/// Intake path (a): the LAN SMTP relay the LPS mails its lots to ([`LotRelay`]). Plain
/// SMTP on the LAN address configured, like the HTTP API; the lot is the mail's one file.
async fn start_relay(
    tasks: &mut Tasks,
    addr: std::net::SocketAddr,
    intake: &Intake,
    shutdown: &CancellationToken,
) -> Result<(), BillingError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(BillingError::io(addr.to_string()))?;
    let mut smtp = passerelle_smtp::ServerConfig::new("passerelle");
    // Base64 makes the mail a third larger than the lot.
    smtp.max_message_size =
        usize::try_from(intake.max_lot_bytes / 3 * 4 + (1 << 20)).unwrap_or(usize::MAX);
    let relay = Arc::new(LotRelay {
        intake: intake.clone(),
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        passerelle_smtp::serve(listener, relay, smtp, stop.cancelled_owned())
            .await
            .map_err(|e| BillingError::Returns(format!("billing LAN relay: {e}")))
    });
    tracing::info!(%addr, "billing LAN relay listening");
    Ok(())
}
