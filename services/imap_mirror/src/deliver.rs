//! The inbox worker: leases mirrored messages and saves them into the local Dovecot with
//! IMAP `APPEND` (see `local`); a queue item is acked only after Dovecot's tagged `OK` (the
//! message is then durable in the local mailbox), and only then may the operator copy be
//! deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use passerelle_queue::{ItemId, Leased, NewItem, Queue, RetryHint, SqliteStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::MirrorDb;
use crate::local::{Answer, LocalSession, LocalStore};

/// Queue kind of mirrored messages.
pub const INBOX_KIND: &str = "imap-inbox";
const LEASE: Duration = Duration::from_secs(300);
const BATCH: u32 = 32;
/// Bytes of one `APPEND` command (a chunk holds at least one message).
const APPEND_BYTES: usize = 8 * 1024 * 1024;
/// Longest header line of a payload (addresses and a folder name).
const MAX_HEADER: usize = 2048;

/// Where a mirrored message came from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) bal: String,
    pub(crate) folder: String,
    pub(crate) uidvalidity: u32,
    pub(crate) uid: u32,
    pub(crate) local_user: String,
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
            self.bal, self.folder, self.uidvalidity, self.uid, self.local_user
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
            local_user: f.next()?.to_owned(),
        };
        f.next().is_none().then_some((origin, &payload[nl + 1..]))
    }
}

#[derive(Clone)]
pub(crate) struct Deliverer {
    pub(crate) queue: Queue<SqliteStore>,
    pub(crate) db: MirrorDb,
    pub(crate) local: Arc<LocalStore>,
    pub(crate) work: Arc<Notify>,
    /// BALs with `delete_after_mirror`: their deliveries are recorded (one commit each)
    /// and their session woken to delete upstream. Others skip both.
    pub(crate) delivered: Arc<std::collections::HashMap<String, Arc<Notify>>>,
    /// Applicative BALs: their mail is examined for notices (EX_GBM_4430).
    pub(crate) app_bals: Arc<HashSet<String>>,
    pub(crate) counters: Arc<crate::Counters>,
}

/// A leased message on its way into one local mailbox.
struct Pending<'a> {
    origin: Origin,
    item: &'a Leased,
    raw: &'a [u8],
}

/// Acks under way and the items of the batch already settled (acked, retried or failed).
#[derive(Default)]
struct Settling {
    acks: tokio::task::JoinSet<()>,
    settled: HashSet<ItemId>,
}

/// Leased items not settled when the local Dovecot failed: retried by the caller.
struct Unsettled<'a> {
    why: String,
    items: Vec<&'a Leased>,
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
                Err(Unsettled { why, items }) => {
                    failures += 1;
                    tracing::warn!(local = %self.local.addr, why, "delivery into the local Dovecot failed; items retried");
                    for item in items {
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

    /// The batch grouped by local mailbox, one session per group, one `APPEND` per chunk.
    async fn deliver_batch<'a>(&self, leased: &'a [Leased]) -> Result<(), Unsettled<'a>> {
        let mut groups: Vec<Vec<Pending<'a>>> = Vec::new();
        for item in leased {
            let Some((origin, raw)) = Origin::parse(item.payload()) else {
                let _ = self
                    .queue
                    .fail_permanent(item, "unreadable inbox payload header")
                    .await;
                continue;
            };
            let pending = Pending { origin, item, raw };
            match groups.iter_mut().find(|g| {
                g[0].origin.local_user == pending.origin.local_user
                    && g[0].origin.folder == pending.origin.folder
            }) {
                Some(group) => group.push(pending),
                None => groups.push(vec![pending]),
            }
        }
        let mut settling = Settling::default();
        let mut result = Ok(());
        let mut groups = groups.into_iter();
        for group in groups.by_ref() {
            if let Err(why) = self.deliver_group(&group, &mut settling).await {
                result = Err((why, group));
                break;
            }
        }
        while settling.acks.join_next().await.is_some() {}
        result.map_err(|(why, failed)| Unsettled {
            why,
            items: failed
                .iter()
                .filter(|p| !settling.settled.contains(&p.item.id()))
                .map(|p| p.item)
                .chain(groups.flatten().map(|p| p.item))
                .collect(),
        })
    }

    /// One local user's mailbox: redeliveries already there are acked without a second
    /// copy, the rest appended in chunks; a refused chunk is retried one message at a time
    /// so that one bad message does not hold back the others.
    async fn deliver_group(
        &self,
        group: &[Pending<'_>],
        settling: &mut Settling,
    ) -> Result<(), String> {
        let first = &group[0].origin;
        let mut session = self
            .local
            .session(&first.local_user)
            .await
            .map_err(|e| e.to_string())?;
        // Leased before: a crash may have come between Dovecot's OK and the ack. Those
        // already in the folder are looked up together, in one EXAMINE of it.
        let retried: Vec<(usize, String)> = group
            .iter()
            .enumerate()
            .filter(|(_, p)| p.item.attempt() > 1)
            .filter_map(|(n, p)| message_id(p.raw).map(|id| (n, id)))
            .collect();
        let ids: Vec<&str> = retried.iter().map(|(_, id)| id.as_str()).collect();
        let held = session
            .holds(&first.folder, &ids)
            .await
            .map_err(|e| e.to_string())?;
        let already: HashSet<usize> = retried
            .iter()
            .zip(held)
            .filter_map(|((n, _), held)| held.then_some(*n))
            .collect();
        let mut fresh = Vec::with_capacity(group.len());
        for (n, p) in group.iter().enumerate() {
            if already.contains(&n) {
                self.counters
                    .redeliveries_absorbed
                    .fetch_add(1, Ordering::SeqCst);
                tracing::info!(bal = %p.origin.bal, uid = p.origin.uid, "redelivered message already in the local mailbox; not saved twice");
                self.delivered_locally(p, settling).await;
            } else {
                fresh.push(p);
            }
        }
        for chunk in chunks(&fresh) {
            let answer = self.append(&mut session, &first.folder, chunk).await?;
            if answer == Answer::Ok {
                for p in chunk {
                    self.delivered_locally(p, settling).await;
                }
                continue;
            }
            for p in chunk {
                let answer = if chunk.len() == 1 {
                    answer.clone()
                } else {
                    self.append(&mut session, &first.folder, &[p]).await?
                };
                self.settle_one(p, &answer, settling).await;
            }
        }
        session.logout().await;
        Ok(())
    }

    /// `APPEND`, creating the folder once if Dovecot says it does not exist.
    async fn append(
        &self,
        session: &mut LocalSession,
        folder: &str,
        chunk: &[&Pending<'_>],
    ) -> Result<Answer, String> {
        let raws: Vec<&[u8]> = chunk.iter().map(|p| p.raw).collect();
        let answer = session
            .append(folder, &raws)
            .await
            .map_err(|e| e.to_string())?;
        if !answer.code_is("TRYCREATE") {
            return Ok(answer);
        }
        let created = session.create(folder).await.map_err(|e| e.to_string())?;
        if created != Answer::Ok {
            return Ok(created);
        }
        session
            .append(folder, &raws)
            .await
            .map_err(|e| e.to_string())
    }

    async fn settle_one(&self, p: &Pending<'_>, answer: &Answer, settling: &mut Settling) {
        if *answer == Answer::Ok {
            self.delivered_locally(p, settling).await;
        } else if answer.is_temporary() {
            let _ = self
                .queue
                .retry(
                    p.item,
                    RetryHint {
                        retry_after: None,
                        reason: format!("local IMAP: {answer}"),
                    },
                )
                .await;
            settling.settled.insert(p.item.id());
        } else {
            tracing::error!(bal = %p.origin.bal, uid = p.origin.uid, %answer, "local mailbox refused a mirrored message");
            let _ = self
                .queue
                .fail_permanent(p.item, &format!("local IMAP: {answer}"))
                .await;
            settling.settled.insert(p.item.id());
        }
    }

    /// Durable locally: record it where deletion depends on it, then ack. The acks of a
    /// batch commit together with the other workers' (the queue's group commit); the
    /// caller waits for `acks` before its batch ends.
    async fn delivered_locally(&self, p: &Pending<'_>, settling: &mut Settling) {
        let origin = &p.origin;
        if self.app_bals.contains(&origin.bal) {
            self.note(origin, p.raw).await;
        }
        settling.settled.insert(p.item.id());
        self.counters.delivered.fetch_add(1, Ordering::SeqCst);
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
        let (queue, item, deleting) = (self.queue.clone(), p.item.clone(), deleting.cloned());
        settling.acks.spawn(async move {
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
                self.counters.notices.fetch_add(1, Ordering::SeqCst);
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

/// Consecutive chunks of at most [`APPEND_BYTES`] (a larger message alone).
fn chunks<'p, 'a>(pending: &'p [&'p Pending<'a>]) -> impl Iterator<Item = &'p [&'p Pending<'a>]> {
    let mut rest = pending;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|p| {
                bytes += p.raw.len();
                bytes <= APPEND_BYTES
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// The `Message-ID` of a message, when it has a plain one (searchable as a quoted string).
fn message_id(raw: &[u8]) -> Option<String> {
    let headers = mail_parser::MessageParser::default().parse_headers(raw)?;
    let id = headers.message_id()?;
    (id.is_ascii() && !id.chars().any(|c| c.is_ascii_control())).then(|| format!("<{id}>"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use passerelle_harness::Dovecot;
    use passerelle_queue::{Leased, Queue, QueueConfig};
    use zeroize::Zeroizing;

    use super::{Deliverer, INBOX_KIND, LocalStore, Origin};
    use crate::db::MirrorDb;

    const LOCAL: &str = "medecin@cabinet.local";

    struct Rig {
        _dir: tempfile::TempDir,
        local: Dovecot,
        deliverer: Deliverer,
    }

    async fn rig() -> anyhow::Result<Rig> {
        let dir = tempfile::tempdir()?;
        let local = Dovecot::builder()
            .user(LOCAL, "local-password")
            .master_user("passerelle", "maitre")
            .start()?;
        let deliverer = Deliverer {
            queue: Queue::open_sqlite(dir.path().join("inbox"), QueueConfig::default()).await?,
            db: MirrorDb::open(&dir.path().join("mirror.db")).await?,
            local: Arc::new(LocalStore {
                addr: local.imap_addr(),
                master_user: "passerelle".to_owned(),
                master_password: Zeroizing::new("maitre".to_owned()),
                timeout: Duration::from_secs(10),
            }),
            work: Arc::default(),
            delivered: Arc::default(),
            app_bals: Arc::default(),
            counters: Arc::default(),
        };
        Ok(Rig {
            _dir: dir,
            local,
            deliverer,
        })
    }

    fn origin(folder: &str, uid: u32) -> Origin {
        Origin {
            bal: "jean.dupond@medecin.mssante.fr".to_owned(),
            folder: folder.to_owned(),
            uidvalidity: 1,
            uid,
            local_user: LOCAL.to_owned(),
        }
    }

    fn message(n: u32) -> Vec<u8> {
        format!(
            "From: <secretariat@clinique.mssante.fr>\r\nSubject: compte rendu {n}\r\n\
             Message-ID: <cr-{n}@clinique.mssante.fr>\r\n\r\nCompte rendu {n}.\r\n"
        )
        .into_bytes()
    }

    /// Leases every due inbox item, polling until `want` are due (a lease given up by a
    /// crashed worker comes back once it expires).
    async fn lease(rig: &Rig, want: usize) -> anyhow::Result<Vec<Leased>> {
        let start = Instant::now();
        let mut leased = Vec::new();
        while leased.len() < want {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "items not due");
            leased.extend(
                rig.deliverer
                    .queue
                    .lease(INBOX_KIND, 32, Duration::from_secs(60))
                    .await?,
            );
            tokio::task::yield_now().await;
        }
        Ok(leased)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redelivery_after_a_crash_between_dovecots_ok_and_the_ack_is_not_saved_twice()
    -> anyhow::Result<()> {
        let rig = rig().await?;
        let queue = &rig.deliverer.queue;
        for uid in [1, 2] {
            queue
                .enqueue(origin("INBOX", uid).item(&message(uid)))
                .await?;
        }
        // A worker leases both, saves the first, and dies before any ack: its lease lapses.
        let crashed = queue
            .lease(INBOX_KIND, 32, Duration::from_millis(1))
            .await?;
        anyhow::ensure!(crashed.len() == 2);
        let mut session = rig.deliverer.local.session(LOCAL).await?;
        anyhow::ensure!(session.append("INBOX", &[&message(1)]).await? == super::Answer::Ok);
        session.logout().await;

        let again = lease(&rig, 2).await?;
        anyhow::ensure!(again.iter().all(|l| l.attempt() == 2));
        if rig.deliverer.deliver_batch(&again).await.is_err() {
            anyhow::bail!("delivery failed: {}", rig.local.log_tail(20));
        }
        let counters = &rig.deliverer.counters;
        anyhow::ensure!(
            counters.redeliveries_absorbed() == 1 && counters.delivered() == 2,
            "absorbed {} delivered {}",
            counters.redeliveries_absorbed(),
            counters.delivered()
        );
        // One copy of each, and nothing left to deliver.
        anyhow::ensure!(rig.local.inbox_count(LOCAL)? == 2);
        anyhow::ensure!(queue.next_due(INBOX_KIND).await?.is_none());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_folder_is_created_on_first_use_under_its_modified_utf7_name() -> anyhow::Result<()> {
        let rig = rig().await?;
        for uid in [1, 2, 3] {
            rig.deliverer
                .queue
                .enqueue(origin("Envoyés", uid).item(&message(uid)))
                .await?;
        }
        let leased = lease(&rig, 3).await?;
        if rig.deliverer.deliver_batch(&leased).await.is_err() {
            anyhow::bail!("delivery failed: {}", rig.local.log_tail(20));
        }
        let folder = rig.local.maildir(LOCAL).join(".Envoy&AOk-s");
        let mut saved = 0;
        for sub in ["new", "cur"] {
            saved += std::fs::read_dir(folder.join(sub))?.count();
        }
        anyhow::ensure!(saved == 3, "{saved} messages in {}", folder.display());
        anyhow::ensure!(rig.local.inbox_count(LOCAL)? == 0);
        Ok(())
    }
}
