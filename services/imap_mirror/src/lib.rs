//! The inbound half of the practice profile (product flow 2): each configured BAL is
//! mirrored from the operator's API LPS IMAP front (TM5.3P with PSC XOAUTH2, TM5.4P with
//! the ORG AUTH_CLI certificate) into the appliance's local Dovecot, which LAN mail clients
//! read, also offline.
//!
//! The straight line, per message: `UID FETCH BODY.PEEK[]` → **durable enqueue** in the
//! inbox queue (idempotency key BAL/folder/UIDVALIDITY/UID) → IMAP `APPEND` of a batch into
//! the local Dovecot (one transaction, `local`) → tagged `OK` → the queue items are acked →
//! only then, if `delete_after_mirror`, `UID STORE \Deleted` + (`UID`) `EXPUNGE` on the
//! operator (seed 002). A crash anywhere re-fetches or re-delivers; the key absorbs
//! re-fetches, and a redelivery after a crash between Dovecot's `OK` and the ack is looked
//! up by Message-ID in the local folder first, so it is not saved twice.
//!
//! Bookkeeping (`state_db`): per folder the UIDVALIDITY and highest mirrored UID; per
//! message its SHA-256 and state. A UIDVALIDITY change re-mirrors the folder and matches
//! messages already mirrored by content, so none is delivered twice (IM-03).
//!
//! Sessions: STARTTLS on 143 done by hand (async-imap has no STARTTLS; the TLS stream is
//! handed to it afterwards), TLS with the MSSanté client profile, SASL-IR. IDLE is ended
//! and re-issued every `idle_reissue` (< 14 min, EX_LPS_1000); a session ended by the
//! server is reopened at once with a fresh token (Réf. #2 1.10), one older than
//! `session_max` is closed before the operator's 4 h limit. A refused token is evicted and
//! retried once, then the BAL is marked "re-auth required" in the PSC store (OA-03/07).
//! Servers without IDLE are polled; without UIDPLUS, deletion uses `EXPUNGE` (IM-01).

mod config;
mod db;
mod deliver;
mod error;
mod local;
mod session;

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use passerelle_keystore::{KeyRef, Keystore, TokenCertResolver};
use passerelle_psc::Psc;
use passerelle_queue::{Queue, SqliteStore};
use passerelle_trust::{
    NoClientCertificate, ProfileServerVerifier, TrustStore, mssante_client_config,
};
use rustls::client::ResolvesClientCert;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

pub use config::{BalAuth, BalMirror, MirrorConfig};
pub use db::RecordedNotice;
pub use deliver::INBOX_KIND;
pub use error::MirrorError;

/// Counters of a running mirror (status page, tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Authenticated IMAP sessions opened.
    pub sessions: AtomicU64,
    /// Messages enqueued into the inbox (not counting re-fetches absorbed by the key).
    pub mirrored: AtomicU64,
    /// IDLE commands ended by our own timer and re-issued (EX_LPS_1000).
    pub idle_reissued: AtomicU64,
    /// Mailbox-full and out-of-office notices recorded for applicative BALs (EX_GBM_4430).
    pub notices: AtomicU64,
    /// Messages saved into the local mailboxes (durable there).
    pub delivered: AtomicU64,
    /// Redeliveries found already in the local mailbox (a crash between Dovecot's `OK`
    /// and the ack) and not saved twice.
    pub redeliveries_absorbed: AtomicU64,
}

impl Counters {
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::SeqCst)
    }
    pub fn mirrored(&self) -> u64 {
        self.mirrored.load(Ordering::SeqCst)
    }
    pub fn idle_reissued(&self) -> u64 {
        self.idle_reissued.load(Ordering::SeqCst)
    }
    pub fn notices(&self) -> u64 {
        self.notices.load(Ordering::SeqCst)
    }
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }
    pub fn redeliveries_absorbed(&self) -> u64 {
        self.redeliveries_absorbed.load(Ordering::SeqCst)
    }
}

fn read_password(path: &std::path::Path) -> Result<Zeroizing<String>, MirrorError> {
    let err = |why: String| MirrorError::Config(format!("password_file {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| err(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(format!("mode {:o}; chmod 600", mode & 0o777)));
    }
    let mut raw = Zeroizing::new(String::new());
    file.take(4096)
        .read_to_string(&mut raw)
        .map_err(|e| err(e.to_string()))?;
    Ok(Zeroizing::new(
        raw.lines().next().unwrap_or_default().to_owned(),
    ))
}

/// The most recent notices received by applicative BALs (EX_GBM_4430), newest first, from
/// the mirror's state database.
pub async fn notices(
    state_db: &std::path::Path,
    limit: u32,
) -> Result<Vec<RecordedNotice>, MirrorError> {
    db::MirrorDb::open(state_db).await?.notices(limit).await
}

/// Runs the mirror of every configured BAL and the inbox worker until `shutdown`.
/// `psc` is needed when a BAL uses XOAUTH2; `keystore` when one uses a certificate.
/// Returns the counters at once through `counters` if given (else a fresh set is used).
pub async fn run_mirror(
    config: MirrorConfig,
    queue: Queue<SqliteStore>,
    psc: Option<Psc>,
    trust: Arc<TrustStore>,
    keystore: Option<Keystore>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<(), MirrorError> {
    config.validate()?;
    let config = Arc::new(config);
    let db = db::MirrorDb::open(&config.state_db).await?;
    let work = Arc::new(Notify::new());
    let mut wake_on_delivery = HashMap::new();
    let mut app_bals = std::collections::HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for bal in &config.bals {
        let (resolver, password): (Arc<dyn ResolvesClientCert>, _) = match &bal.auth {
            BalAuth::Xoauth2 => {
                if psc.is_none() {
                    return Err(MirrorError::Config(format!(
                        "BAL {}: XOAUTH2 needs [psc]",
                        bal.bal
                    )));
                }
                // An XOAUTH2 BAL authenticates with a token, not a certificate.
                (Arc::new(NoClientCertificate), None)
            }
            BalAuth::Certificate {
                key_label,
                password_file,
            } => {
                let ks = keystore.as_ref().ok_or_else(|| {
                    MirrorError::Config(format!(
                        "BAL {}: certificate auth needs the keystore",
                        bal.bal
                    ))
                })?;
                let certified = ks
                    .certified_key(&KeyRef::from(key_label.as_str()))
                    .await
                    .map_err(|e| {
                        MirrorError::Config(format!("BAL {}: key {key_label}: {e}", bal.bal))
                    })?;
                let password = password_file.as_deref().map(read_password).transpose()?;
                app_bals.insert(bal.bal.clone());
                (Arc::new(TokenCertResolver::new(certified)), password)
            }
        };
        let verifier = ProfileServerVerifier::new(Arc::clone(&trust), &config.server_profile)
            .map_err(|e| MirrorError::Config(format!("server_profile: {e}")))?;
        let tls = mssante_client_config(resolver, Arc::new(verifier), trust.tls_options())
            .map_err(|e| MirrorError::Config(e.to_string()))?;
        let notify = Arc::new(Notify::new());
        if bal.delete_after_mirror {
            wake_on_delivery.insert(bal.bal.clone(), Arc::clone(&notify));
        }
        let task = session::BalTask {
            config: Arc::clone(&config),
            bal: bal.clone(),
            tls: Arc::new(tls),
            psc: psc.clone(),
            password,
            queue: queue.clone(),
            db: db.clone(),
            work: Arc::clone(&work),
            delivered: notify,
            counters: Arc::clone(&counters),
        };
        tasks.spawn(task.run(shutdown.clone()));
    }
    let local = local::LocalStore {
        addr: config.local_imap,
        master_user: config.local_master_user.clone(),
        master_password: read_password(&config.local_master_password_file)?,
        timeout: config.timeout,
    };
    let inbox_worker = deliver::Deliverer {
        queue,
        db,
        local: Arc::new(local),
        work,
        delivered: Arc::new(wake_on_delivery),
        app_bals: Arc::new(app_bals),
        counters: Arc::clone(&counters),
    };
    // Several sessions in parallel: each APPEND waits for Dovecot's sync, and those of
    // different sessions overlap.
    for _ in 1..config.inbox_workers {
        tasks.spawn(inbox_worker.clone().run(shutdown.clone()));
    }
    tasks.spawn(inbox_worker.run(shutdown.clone()));
    while tasks.join_next().await.is_some() {}
    Ok(())
}
