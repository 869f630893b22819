//! The inbox worker: leases mirrored messages and delivers them into the local Dovecot by
//! LMTP; the queue item is acked only after Dovecot's per-recipient `250` (the message is
//! then durable in the local mailbox), and only then may the operator copy be deleted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use passerelle_queue::{Leased, NewItem, Queue, RetryHint, SqliteStore};
use passerelle_smtp::{ClientConfig, Envelope, MailFrom, SmtpClient};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::MirrorDb;

/// Queue kind of mirrored messages.
pub const INBOX_KIND: &str = "imap-inbox";
const LEASE: Duration = Duration::from_secs(300);
const BATCH: u32 = 32;
/// Longest header line of a payload (addresses and a folder name).
const MAX_HEADER: usize = 2048;

/// Where a mirrored message came from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) bal: String,
    pub(crate) folder: String,
    pub(crate) uidvalidity: u32,
    pub(crate) uid: u32,
    pub(crate) local_rcpt: String,
}

impl Origin {
    /// BAL + folder + UIDVALIDITY + UID: the same message fetched twice is one item.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.bal, self.folder, self.uidvalidity, self.uid
        )
    }

    pub(crate) fn item(&self, raw: &[u8]) -> NewItem {
        let mut payload = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.bal, self.folder, self.uidvalidity, self.uid, self.local_rcpt
        )
        .into_bytes();
        payload.extend_from_slice(raw);
        NewItem::new(INBOX_KIND, self.key(), payload)
    }

    fn parse(payload: &[u8]) -> Option<(Self, &[u8])> {
        let nl = payload.iter().take(MAX_HEADER).position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&payload[..nl]).ok()?;
        let mut f = header.split('\t');
        let origin = Self {
            bal: f.next()?.to_owned(),
            folder: f.next()?.to_owned(),
            uidvalidity: f.next()?.parse().ok()?,
            uid: f.next()?.parse().ok()?,
            local_rcpt: f.next()?.to_owned(),
        };
        f.next().is_none().then_some((origin, &payload[nl + 1..]))
    }
}

#[derive(Clone)]
pub(crate) struct Deliverer {
    pub(crate) queue: Queue<SqliteStore>,
    pub(crate) db: MirrorDb,
    pub(crate) lmtp: SocketAddr,
    pub(crate) work: Arc<Notify>,
    /// BALs with `delete_after_mirror`: their deliveries are recorded (one commit each)
    /// and their session woken to delete upstream. Others skip both.
    pub(crate) delivered: Arc<std::collections::HashMap<String, Arc<Notify>>>,
    /// Applicative BALs: their mail is examined for notices (EX_GBM_4430).
    pub(crate) app_bals: Arc<std::collections::HashSet<String>>,
    pub(crate) counters: Arc<crate::Counters>,
}

impl Deliverer {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let leased = match self.queue.lease(INBOX_KIND, BATCH, LEASE).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "inbox lease failed");
                    Vec::new()
                }
            };
            if leased.is_empty() {
                let wait = match self.queue.next_due(INBOX_KIND).await {
                    Ok(Some(due)) => due
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default()
                        .min(Duration::from_secs(60)),
                    _ => Duration::from_secs(60),
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.work.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            match self.deliver_batch(&leased).await {
                Ok(()) => failures = 0,
                Err(why) => {
                    failures += 1;
                    tracing::warn!(lmtp = %self.lmtp, why, "local LMTP delivery failed; items retried");
                    for item in &leased {
                        let _ = self
                            .queue
                            .retry(
                                item,
                                RetryHint {
                                    retry_after: Some(Duration::from_secs(
                                        2u64.pow(failures.min(6)),
                                    )),
                                    reason: why.clone(),
                                },
                            )
                            .await;
                    }
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One LMTP session for the batch; a connection failure retries the undelivered rest.
    async fn deliver_batch(&self, leased: &[Leased]) -> Result<(), String> {
        let mut config = ClientConfig::new("passerelle.local");
        config.lmtp = true;
        // Loopback to the appliance's own Dovecot: no TLS on that hop.
        config.require_tls = false;
        let mut lmtp = SmtpClient::connect(self.lmtp, config)
            .await
            .map_err(|e| e.to_string())?;
        lmtp.ehlo().await.map_err(|e| e.to_string())?;
        let mut acks = tokio::task::JoinSet::new();
        for (n, item) in leased.iter().enumerate() {
            let Some((origin, raw)) = Origin::parse(item.payload()) else {
                let _ = self
                    .queue
                    .fail_permanent(item, "unreadable inbox payload header")
                    .await;
                continue;
            };
            let envelope = Envelope {
                mail_from: MailFrom {
                    address: String::new(),
                    size: None,
                    eight_bit: true,
                },
                recipients: vec![origin.local_rcpt.clone()],
            };
            let result = match lmtp.send(&envelope, raw).await {
                Ok(r) => r,
                Err(e) => {
                    // The rest of the batch: leased items are retried by the caller.
                    for rest in &leased[n..] {
                        let _ = self
                            .queue
                            .retry(
                                rest,
                                RetryHint {
                                    retry_after: Some(Duration::from_secs(1)),
                                    reason: e.to_string(),
                                },
                            )
                            .await;
                    }
                    while acks.join_next().await.is_some() {}
                    return Ok(());
                }
            };
            let reply = result.recipients.first().map(|r| r.reply.clone());
            match reply {
                Some(r) if r.is_positive() => {
                    if self.app_bals.contains(&origin.bal) {
                        self.note(&origin, raw).await;
                    }
                    self.delivered_locally(&origin, item, &mut acks).await;
                }
                Some(r) if r.code >= 500 => {
                    tracing::error!(bal = %origin.bal, uid = origin.uid, code = r.code, "local mailbox refused a mirrored message");
                    let _ = self
                        .queue
                        .fail_permanent(item, &format!("local LMTP: {r}"))
                        .await;
                }
                other => {
                    let reason = other.map_or_else(
                        || "no LMTP reply".to_owned(),
                        |r| format!("local LMTP: {r}"),
                    );
                    let _ = self
                        .queue
                        .retry(
                            item,
                            RetryHint {
                                retry_after: None,
                                reason,
                            },
                        )
                        .await;
                }
            }
        }
        let _ = lmtp.quit().await;
        while acks.join_next().await.is_some() {}
        Ok(())
    }

    /// Durable locally: record it where deletion depends on it, then ack. The ack commits
    /// while the next message goes over LMTP, and shares the queue's group commit with the
    /// other workers' acks; the caller waits for `acks` before its batch ends.
    async fn delivered_locally(
        &self,
        origin: &Origin,
        item: &Leased,
        acks: &mut tokio::task::JoinSet<()>,
    ) {
        let deleting = self.delivered.get(&origin.bal);
        if deleting.is_some()
            && let Err(e) = self
                .db
                .mark(
                    &origin.bal,
                    &origin.folder,
                    origin.uidvalidity,
                    &[origin.uid],
                    "delivered",
                )
                .await
        {
            tracing::error!(error = %e, "mirror state update failed");
        }
        let (queue, item, deleting) = (self.queue.clone(), item.clone(), deleting.cloned());
        acks.spawn(async move {
            if let Err(e) = queue.ack(&item).await {
                tracing::error!(error = %e, item = %item.id(), "inbox ack failed; it will be delivered again");
            }
            if let Some(n) = deleting {
                n.notify_one();
            }
        });
    }

    /// EX_GBM_4430: a mailbox-full DSN or an automatic reply received by an applicative
    /// BAL is recorded for the business software and the web admin, and raised as an alert
    /// line. The message itself is delivered like any other: nothing is withheld.
    async fn note(&self, origin: &Origin, raw: &[u8]) {
        let Some(notice) = passerelle_smtp::classify_notice(raw) else {
            return;
        };
        match self.db.record_notice(origin, &notice).await {
            Ok(true) => {
                self.counters
                    .notices
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(
                    requirement = "EX_GBM_4430",
                    bal = %origin.bal,
                    kind = notice.kind(),
                    "applicative BAL received a notice"
                );
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, requirement = "EX_GBM_4430", "recording a notice failed");
            }
        }
    }
}
