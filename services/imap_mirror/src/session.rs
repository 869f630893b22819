//! One BAL's IMAP side: STARTTLS by hand (async-imap speaks IMAP over an established
//! stream only), XOAUTH2 with SASL-IR or client certificate + PLAIN, per-folder
//! UIDVALIDITY/UID sync into the durable inbox, deletion after local delivery, IDLE
//! re-issued before the operator's inactivity cut, reconnection when the server ends
//! the session (EX_LPS_1000, Réf. #2 1.10).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use passerelle_imap_starttls::Tls;
use passerelle_psc::Psc;
use passerelle_queue::{Queue, SqliteStore};
use rustls_pki_types::ServerName;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::MirrorError;
use crate::config::{BalAuth, BalMirror, MirrorConfig};
use crate::db::{FolderState, MirrorDb};
use crate::deliver::Origin;
use crate::local::mailbox_name;

type Session = async_imap::Session<Tls>;

/// Answers any SASL challenge with an empty response: XOAUTH2 servers send a JSON error
/// challenge before the final NO (OA-04), which the client must acknowledge so.
struct EmptyResponse;
impl async_imap::Authenticator for EmptyResponse {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

/// Fetched bytes held before they are made durable together: bounded so that a batch of
/// large messages does not sit in memory.
const MIRROR_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Messages fetched and not yet enqueued.
#[derive(Debug, Default)]
struct Pending {
    messages: Vec<(u32, Vec<u8>)>,
    bytes: usize,
}

impl Pending {
    fn push(&mut self, uid: u32, body: &[u8]) {
        self.bytes += body.len();
        self.messages.push((uid, body.to_vec()));
    }
}

pub(crate) struct BalTask {
    pub(crate) config: Arc<MirrorConfig>,
    pub(crate) bal: BalMirror,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) psc: Option<Psc>,
    pub(crate) password: Option<Zeroizing<String>>,
    pub(crate) queue: Queue<SqliteStore>,
    pub(crate) db: MirrorDb,
    /// Wakes the inbox worker after an enqueue.
    pub(crate) work: Arc<Notify>,
    /// Woken by the inbox worker after a local delivery of this BAL's mail.
    pub(crate) delivered: Arc<Notify>,
    pub(crate) counters: Arc<crate::Counters>,
}

fn upstream(bal: &str, step: &'static str, why: impl std::fmt::Display) -> MirrorError {
    MirrorError::Upstream {
        bal: bal.to_owned(),
        step,
        why: why.to_string(),
    }
}

impl BalTask {
    fn err(&self, step: &'static str) -> impl Fn(async_imap::error::Error) -> MirrorError + '_ {
        move |e| upstream(&self.bal.bal, step, e)
    }

    async fn timed<T>(
        &self,
        step: &'static str,
        f: impl Future<Output = Result<T, MirrorError>>,
    ) -> Result<T, MirrorError> {
        tokio::time::timeout(self.config.timeout, f)
            .await
            .map_err(|_| {
                upstream(
                    &self.bal.bal,
                    step,
                    format!("no answer within {:?}", self.config.timeout),
                )
            })?
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.reconnect_min;
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.session(&shutdown) => r,
            };
            match outcome {
                Ok(()) => {
                    backoff = self.config.reconnect_min;
                    continue;
                }
                Err((was_up, e)) => {
                    if was_up {
                        // Réf. #2 1.10: the server ended a working session (15 min idle,
                        // 4 h, restart): reopen at once with a fresh token.
                        backoff = self.config.reconnect_min;
                        tracing::info!(bal = %self.bal.bal, why = %e, "IMAP session ended; reconnecting");
                    } else {
                        tracing::warn!(bal = %self.bal.bal, error = %e, retry_in = ?backoff, "IMAP connection failed");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            if backoff < self.config.reconnect_max {
                backoff = (backoff * 2).min(self.config.reconnect_max);
            }
        }
    }

    /// One authenticated session until it ends. `Err((true, _))`: it had been working.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), (bool, MirrorError)> {
        let session = self.login().await.map_err(|e| (false, e))?;
        self.counters
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(bal = %self.bal.bal, "IMAP session open");
        let mut session = self
            .work_session(session, shutdown)
            .await
            .map_err(|e| (true, e))?;
        let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
        Ok(())
    }

    async fn work_session(
        &self,
        mut session: Session,
        shutdown: &CancellationToken,
    ) -> Result<Session, MirrorError> {
        let started = Instant::now();
        let caps = self
            .timed("CAPABILITY", async {
                session.capabilities().await.map_err(self.err("CAPABILITY"))
            })
            .await?;
        // IM-01: no IDLE → polling; no UIDPLUS → STORE + EXPUNGE.
        let idle = caps.has_str("IDLE");
        let uidplus = caps.has_str("UIDPLUS");
        drop(caps);
        loop {
            for folder in &self.bal.folders {
                let uidvalidity = self.sync_folder(&mut session, folder).await?;
                if self.bal.delete_after_mirror {
                    self.delete_delivered(&mut session, folder, uidvalidity, uidplus)
                        .await?;
                }
            }
            if self.bal.folders.len() > 1 {
                let first = &self.bal.folders[0];
                self.timed("SELECT", async {
                    session
                        .select(mailbox_name(first))
                        .await
                        .map_err(self.err("SELECT"))
                })
                .await?;
            }
            drain(&mut session);
            if started.elapsed() >= self.config.session_max {
                tracing::info!(bal = %self.bal.bal, "closing the session before the operator's 4 h limit");
                return Ok(session);
            }
            if idle {
                session = self.idle(session, shutdown).await?;
            } else {
                let poll = self.config.idle_reissue.min(Duration::from_secs(60));
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(session),
                    () = self.delivered.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
                self.timed("NOOP", async {
                    session.noop().await.map_err(self.err("NOOP"))
                })
                .await?;
            }
            if shutdown.is_cancelled() {
                return Ok(session);
            }
        }
    }

    /// IDLE until the server reports something, a local delivery asks for a deletion
    /// pass, or `idle_reissue` elapses (EX_LPS_1000: DONE + a new command well before
    /// the operator's 15-minute inactivity cut).
    async fn idle(
        &self,
        session: Session,
        shutdown: &CancellationToken,
    ) -> Result<Session, MirrorError> {
        let mut handle = session.idle();
        self.timed("IDLE", async {
            handle.init().await.map_err(self.err("IDLE"))
        })
        .await?;
        let wake = self.bal.delete_after_mirror;
        let result = {
            let (fut, stop) = handle.wait_with_timeout(self.config.idle_reissue);
            tokio::pin!(fut);
            let mut stop = Some(stop);
            tokio::select! {
                r = &mut fut => r,
                () = self.delivered.notified(), if wake => { stop.take(); fut.await }
                () = shutdown.cancelled() => { stop.take(); fut.await }
            }
        };
        match result {
            Ok(IdleResponse::Timeout) => {
                self.counters
                    .idle_reissued
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(IdleResponse::NewData(_) | IdleResponse::ManualInterrupt) => {}
            Err(e) => return Err(upstream(&self.bal.bal, "IDLE", e)),
        }
        self.timed("DONE", async {
            handle.done().await.map_err(self.err("DONE"))
        })
        .await
    }

    /// Fetches every UID above the recorded one into the inbox queue; returns the
    /// folder's UIDVALIDITY.
    async fn sync_folder(&self, session: &mut Session, folder: &str) -> Result<u32, MirrorError> {
        let bal = &self.bal.bal;
        let mailbox = self
            .timed("SELECT", async {
                session
                    .select(mailbox_name(folder))
                    .await
                    .map_err(self.err("SELECT"))
            })
            .await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| upstream(bal, "SELECT", "no UIDVALIDITY"))?;
        let mut state = match self.db.folder(bal, folder).await? {
            Some(s) if s.uidvalidity == uidvalidity => s,
            Some(old) => {
                // IM-03: every UID is new; content already mirrored is matched, not re-delivered.
                let until = mailbox.uid_next.map_or(u32::MAX, |n| n.saturating_sub(1));
                tracing::warn!(
                    bal,
                    folder,
                    old = old.uidvalidity,
                    new = uidvalidity,
                    "UIDVALIDITY changed; re-mirroring the folder without duplicates"
                );
                let s = FolderState {
                    uidvalidity,
                    last_uid: 0,
                    dedup_until_uid: until,
                };
                self.db.set_folder(bal, folder, s).await?;
                s
            }
            None => FolderState {
                uidvalidity,
                last_uid: 0,
                dedup_until_uid: 0,
            },
        };
        if mailbox.exists == 0 {
            self.db.set_folder(bal, folder, state).await?;
            return Ok(uidvalidity);
        }
        let from = state.last_uid.saturating_add(1);
        let found: HashSet<u32> = self
            .timed("UID SEARCH", async {
                session
                    .uid_search(format!("UID {from}:*"))
                    .await
                    .map_err(self.err("UID SEARCH"))
            })
            .await?;
        drain(session);
        // `n:*` always matches the highest UID, even below n.
        let mut uids: Vec<u32> = found.into_iter().filter(|&u| u >= from).collect();
        uids.sort_unstable();
        for chunk in uids.chunks(self.config.fetch_batch as usize) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut highest = state.last_uid;
            let mut pending = Pending::default();
            {
                let mut stream = self
                    .timed("UID FETCH", async {
                        session
                            .uid_fetch(&set, "(UID BODY.PEEK[])")
                            .await
                            .map_err(self.err("UID FETCH"))
                    })
                    .await?;
                loop {
                    let next = tokio::time::timeout(self.config.timeout, stream.next())
                        .await
                        .map_err(|_| upstream(bal, "UID FETCH", "stalled"))?;
                    let Some(fetch) = next else { break };
                    let fetch = fetch.map_err(self.err("UID FETCH"))?;
                    let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else {
                        continue; // a flag update mixed into the answer
                    };
                    pending.push(uid, body);
                    highest = highest.max(uid);
                    if pending.bytes >= MIRROR_BATCH_BYTES {
                        self.mirror_many(folder, &state, &mut pending).await?;
                    }
                }
            }
            self.mirror_many(folder, &state, &mut pending).await?;
            drain(session);
            state.last_uid = highest;
            self.db.set_folder(bal, folder, state).await?;
        }
        Ok(uidvalidity)
    }

    /// Makes the fetched messages durable together: their enqueues run concurrently and so
    /// share the queue's group commit (one synced write for the lot instead of one each).
    /// `last_uid` moves only after every one of them is durable.
    async fn mirror_many(
        &self,
        folder: &str,
        state: &FolderState,
        pending: &mut Pending,
    ) -> Result<(), MirrorError> {
        let messages = std::mem::take(pending).messages;
        futures::future::try_join_all(
            messages
                .iter()
                .map(|(uid, body)| self.mirror_one(folder, state, *uid, body)),
        )
        .await?;
        Ok(())
    }

    /// The durable step: the message is in the inbox queue before anything else happens.
    async fn mirror_one(
        &self,
        folder: &str,
        state: &FolderState,
        uid: u32,
        body: &[u8],
    ) -> Result<(), MirrorError> {
        let bal = &self.bal.bal;
        let sha: [u8; 32] = Sha256::digest(body).into();
        if uid <= state.dedup_until_uid
            && let Some(seen) = self.db.seen_content(bal, folder, &sha).await?
        {
            self.db
                .record(bal, folder, state.uidvalidity, uid, &sha, &seen)
                .await?;
            return Ok(());
        }
        let origin = Origin {
            bal: bal.clone(),
            folder: folder.to_owned(),
            uidvalidity: state.uidvalidity,
            uid,
            local_user: self.bal.local_user.clone(),
        };
        // Row first (the worker marks it delivered), then the durable enqueue; a crash in
        // between leaves last_uid behind, so the UID is fetched and enqueued again.
        self.db
            .record(bal, folder, state.uidvalidity, uid, &sha, "queued")
            .await?;
        match self.queue.enqueue(origin.item(body)).await {
            Ok(_) => {}
            Err(passerelle_queue::QueueError::PayloadTooLarge { len, max }) => {
                tracing::error!(
                    bal,
                    folder,
                    uid,
                    len,
                    max,
                    "message larger than the inbox accepts; left on the operator"
                );
                self.db
                    .record(bal, folder, state.uidvalidity, uid, &sha, "deleted")
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.counters
            .mirrored
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.work.notify_one();
        Ok(())
    }

    /// Seed 002: expunge from the operator what is durable in the local mailbox.
    async fn delete_delivered(
        &self,
        session: &mut Session,
        folder: &str,
        uidvalidity: u32,
        uidplus: bool,
    ) -> Result<(), MirrorError> {
        let bal = &self.bal.bal;
        let uids = self.db.delivered(bal, folder, uidvalidity).await?;
        if uids.is_empty() {
            return Ok(());
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.timed("UID STORE", async {
            let stream = session
                .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                .await
                .map_err(self.err("UID STORE"))?;
            stream.collect::<Vec<_>>().await;
            Ok(())
        })
        .await?;
        self.timed("EXPUNGE", async {
            if uidplus {
                let stream = session
                    .uid_expunge(&set)
                    .await
                    .map_err(self.err("UID EXPUNGE"))?;
                stream.collect::<Vec<_>>().await;
            } else {
                let stream = session.expunge().await.map_err(self.err("EXPUNGE"))?;
                stream.collect::<Vec<_>>().await;
            }
            Ok(())
        })
        .await?;
        drain(session);
        self.db
            .mark(bal, folder, uidvalidity, &uids, "deleted")
            .await?;
        tracing::info!(
            bal,
            folder,
            count = uids.len(),
            "deleted from the operator after local delivery (seed 002)"
        );
        Ok(())
    }

    async fn login(&self) -> Result<Session, MirrorError> {
        let bal = &self.bal.bal;
        match &self.bal.auth {
            BalAuth::Xoauth2 => {
                let psc = self.psc.as_ref().ok_or_else(|| {
                    MirrorError::Config(format!("BAL {bal}: XOAUTH2 needs [psc]"))
                })?;
                let mut refused = String::new();
                // EX_LPS_0710: evict the refused token and retry once with a fresh one.
                for _ in 0..2 {
                    let token = psc
                        .access_token(bal)
                        .await
                        .map_err(|source| MirrorError::Psc {
                            bal: bal.clone(),
                            source,
                        })?;
                    let ir = passerelle_smtp::xoauth2_initial_response(bal, token.secret());
                    match self.authenticate(&format!("XOAUTH2 {ir}")).await {
                        Err(MirrorError::AuthRefused { reply, .. }) => {
                            psc.evict(bal);
                            refused = reply;
                        }
                        other => return other,
                    }
                }
                let reason = format!("the operator refused two fresh access tokens: {refused}");
                psc.mark_reauth_required(bal, &reason)
                    .await
                    .map_err(|source| MirrorError::Psc {
                        bal: bal.clone(),
                        source,
                    })?;
                Err(MirrorError::AuthRefused {
                    bal: bal.clone(),
                    reply: refused,
                })
            }
            BalAuth::Certificate { .. } => {
                let password = self.password.as_ref().map_or("", |p| p.as_str());
                let ir = Zeroizing::new(B64.encode(format!("\0{bal}\0{password}")));
                self.authenticate(&format!("PLAIN {}", ir.as_str())).await
            }
        }
    }

    /// STARTTLS, then AUTHENTICATE with the initial response (SASL-IR, EX_LPS_0700).
    async fn authenticate(&self, mechanism_and_ir: &str) -> Result<Session, MirrorError> {
        let bal = &self.bal.bal;
        let client = self.timed("STARTTLS", self.starttls()).await?;
        let auth = self
            .timed("AUTHENTICATE", async {
                Ok(client.authenticate(mechanism_and_ir, EmptyResponse).await)
            })
            .await?;
        match auth {
            Ok(session) => Ok(session),
            Err((
                async_imap::error::Error::No(reply) | async_imap::error::Error::Bad(reply),
                _,
            )) => {
                let reply: String = reply.chars().take(200).collect();
                tracing::warn!(bal, reply, "operator refused AUTHENTICATE (EX_LPS_0710)");
                Err(MirrorError::AuthRefused {
                    bal: bal.clone(),
                    reply,
                })
            }
            Err((e, _)) => Err(upstream(bal, "AUTHENTICATE", e)),
        }
    }

    async fn starttls(&self) -> Result<async_imap::Client<Tls>, MirrorError> {
        let bal = &self.bal.bal;
        let addr = match self.bal.imap_addr {
            Some(a) => a,
            None => tokio::net::lookup_host((self.bal.imap_host.as_str(), self.bal.imap_port))
                .await
                .map_err(|e| upstream(bal, "resolve", e))?
                .next()
                .ok_or_else(|| upstream(bal, "resolve", "no address"))?,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| upstream(bal, "connect", e))?;
        let name = ServerName::try_from(self.bal.imap_host.clone())
            .map_err(|e| MirrorError::Config(format!("imap_host {}: {e}", self.bal.imap_host)))?;
        passerelle_imap_starttls::starttls(tcp, Arc::clone(&self.tls), name)
            .await
            .map_err(|e| upstream(bal, e.step, e.why))
    }
}

/// Unsolicited responses land in a bounded channel that blocks the session when full.
fn drain(session: &mut Session) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}
