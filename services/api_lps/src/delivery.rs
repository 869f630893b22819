//! Delivery workers: per BAL, up to `connections` sessions lease from the BAL's outbox, send
//! through the API LPS and settle each item; a link monitor tells them when the operator is
//! reachable again; DSNs go through their own durable queue into the local mailbox by LMTP.
//!
//! A session is opened *before* anything is leased: while the operator is down or the BAL
//! awaits re-authentication, items are not touched, so their retry schedule does not grow
//! and the outbox drains as soon as the link monitor sees the front again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use passerelle_queue::{Leased, NewItem, Queue, RetryHint, RetryOutcome, SqliteStore};
use passerelle_smtp::{
    ClientConfig, Dsn, DsnAction, DsnRecipient, Envelope, ErrorKind, MailFrom, Reply, SmtpClient,
    SmtpError, build_dsn,
};
use tokio::sync::watch;

use crate::config::{BalKind, DeliveryConfig};
use crate::outbox::{self, OutboxEnvelope};
use crate::upstream::{ConnectError, Upstream};
use crate::{ApiLpsError, Wakers};

/// Queue kind of DSNs waiting for LMTP delivery into the local mailbox.
pub const DSN_KIND: &str = "lps-dsn";

/// State of one BAL as the workers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalState {
    Online,
    /// The front cannot be reached; the monitor probes it.
    Offline,
    /// Credentials refused or PSC session over: mail stays queued (EX_LPS_0710, OA-07).
    ReauthRequired(String),
}

/// Everything a BAL's workers share.
#[derive(Debug)]
pub struct BalDelivery {
    pub upstream: Upstream,
    pub queue: Arc<Queue<SqliteStore>>,
    pub wakers: Wakers,
    pub config: DeliveryConfig,
    pub hostname: String,
    state: watch::Sender<BalState>,
}

impl BalDelivery {
    pub fn new(
        upstream: Upstream,
        queue: Arc<Queue<SqliteStore>>,
        wakers: Wakers,
        config: DeliveryConfig,
        hostname: String,
    ) -> Self {
        Self {
            upstream,
            queue,
            wakers,
            config,
            hostname,
            state: watch::Sender::new(BalState::Online),
        }
    }

    /// Follows the BAL's state (for the web admin and tests).
    pub fn state(&self) -> watch::Receiver<BalState> {
        self.state.subscribe()
    }

    /// A person re-authenticated the BAL (PSC login done): try again at once.
    pub fn reauthenticated(&self) {
        self.state.send_replace(BalState::Online);
    }

    fn name(&self) -> &str {
        &self.upstream.bal().name
    }

    /// Runs the BAL's sessions and its link monitor until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for slot in 0..self.upstream.bal().connections.max(1) {
            tasks.spawn(Arc::clone(&self).session_loop(slot, shutdown.clone()));
        }
        tasks.spawn(Arc::clone(&self).monitor(shutdown.clone()));
        while tasks.join_next().await.is_some() {}
    }

    /// The connectivity monitor: while the BAL is offline, probe the front (banner `220`)
    /// with a doubling interval; when it answers, mark the BAL online, which wakes the
    /// sessions.
    async fn monitor(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut state = self.state.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if *state.borrow_and_update() != BalState::Offline {
                tokio::select! {
                    _ = state.changed() => continue,
                    _ = shutdown.changed() => continue,
                }
            }
            let mut interval = self.config.probe_min;
            loop {
                if self.upstream.probe().await {
                    tracing::info!(bal = %self.name(), "api lps: operator reachable again");
                    self.state.send_if_modified(|s| {
                        let was = *s == BalState::Offline;
                        if was {
                            *s = BalState::Online;
                        }
                        was
                    });
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => return,
                }
                interval = (interval * 2).min(self.config.probe_max);
            }
        }
    }

    /// Waits until there may be due work and the BAL is usable.
    async fn wait_for_work(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let kind = outbox::kind_for(self.name());
        let mut wake = self.wakers.subscribe(self.name());
        let mut state = self.state.subscribe();
        loop {
            if *shutdown.borrow() {
                return false;
            }
            let current = state.borrow_and_update().clone();
            match current {
                BalState::Offline => {
                    tokio::select! {
                        _ = state.changed() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                BalState::ReauthRequired(_) => {
                    tokio::select! {
                        _ = state.changed() => {}
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(self.config.reauth_retry) => {
                            self.state.send_replace(BalState::Online);
                        }
                    }
                    continue;
                }
                BalState::Online => {}
            }
            wake.borrow_and_update();
            let due = match self.queue.next_due(&kind).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(bal = %self.name(), error = %e, "api lps: outbox unreadable");
                    Some(SystemTime::now() + Duration::from_secs(5))
                }
            };
            let sleep = match due {
                Some(at) => match at.duration_since(SystemTime::now()) {
                    Err(_) => return true,
                    Ok(d) => d,
                },
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                _ = wake.changed() => {}
                _ = state.changed() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn session_loop(self: Arc<Self>, slot: usize, mut shutdown: watch::Receiver<bool>) {
        let kind = outbox::kind_for(self.name());
        while self.wait_for_work(&mut shutdown).await {
            let mut session = match self.upstream.connect().await {
                Ok(s) => s,
                Err(ConnectError::Unreachable(detail)) => {
                    tracing::warn!(bal = %self.name(), slot, detail, "api lps: operator unreachable, mail kept queued");
                    self.state.send_if_modified(|s| {
                        let online = *s == BalState::Online;
                        if online {
                            *s = BalState::Offline;
                        }
                        online
                    });
                    continue;
                }
                Err(ConnectError::Reauth(detail)) => {
                    tracing::error!(bal = %self.name(), detail, "api lps: re-authentication required, mail kept queued");
                    self.state.send_replace(BalState::ReauthRequired(detail));
                    continue;
                }
            };
            let opened = Instant::now();
            let mut sent = 0_u32;
            let mut wake = self.wakers.subscribe(self.name());
            loop {
                if *shutdown.borrow() || opened.elapsed() >= self.config.max_session_age {
                    break;
                }
                let items = match self.queue.lease(&kind, 1, self.config.lease).await {
                    Ok(items) => items,
                    Err(e) => {
                        tracing::error!(bal = %self.name(), error = %e, "api lps: lease failed");
                        break;
                    }
                };
                let Some(item) = items.into_iter().next() else {
                    // Keep the session a little for the next message; the server may end
                    // it meanwhile, which the next send notices (Réf. #2 1.10).
                    wake.borrow_and_update();
                    tokio::select! {
                        _ = wake.changed() => continue,
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(self.config.session_idle) => break,
                    }
                };
                match self.deliver(&mut session, &item, sent > 0).await {
                    Ok(Some(fresh)) => {
                        session = fresh;
                        sent = 1;
                    }
                    Ok(None) => sent += 1,
                    Err(e) => {
                        tracing::warn!(bal = %self.name(), error = %e, "api lps: session ended");
                        break;
                    }
                }
            }
            drop(session.quit().await);
        }
    }

    /// Sends one item and settles it. `Ok(Some(session))` when the session had to be
    /// reopened; `Err` when the session is unusable (the item is settled for retry).
    async fn deliver(
        &self,
        session: &mut SmtpClient,
        item: &Leased,
        reused: bool,
    ) -> Result<Option<SmtpClient>, ApiLpsError> {
        let (envelope, message) = match outbox::decode(item.payload()) {
            Ok(x) => x,
            Err(e) => {
                self.queue.fail_permanent(item, &e.to_string()).await?;
                return Ok(None);
            }
        };
        let smtp_envelope = Envelope {
            mail_from: MailFrom {
                address: envelope.from.clone(),
                size: None,
                eight_bit: envelope.eight_bit,
            },
            recipients: envelope.recipients.clone(),
        };
        let mut fresh = None;
        let mut result = session.send(&smtp_envelope, message).await;
        // The server ended an idle session (EX_LPS_1000, Réf. #2 1.10): reopen and resend
        // once; nothing was accepted on a session that was already closed.
        if reused && matches!(&result, Err(e) if closed_before_data(e)) {
            tracing::info!(bal = %self.name(), "api lps: session ended by the server, reconnecting (Réf. #2 1.10)");
            match self.upstream.connect().await {
                Ok(mut s) => {
                    result = s.send(&smtp_envelope, message).await;
                    fresh = Some(s);
                }
                Err(e) => {
                    self.retry_soon(item, &e.to_string()).await?;
                    return Err(ApiLpsError::Smtp {
                        bal: self.name().to_owned(),
                        source: Box::new(SmtpError::Usage {
                            peer: session.peer(),
                            what: e.to_string(),
                        }),
                    });
                }
            }
        }
        let delivery = match result {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::Permanent => {
                let reply = e.reply().cloned();
                let failed: Vec<(String, Option<Reply>)> = envelope
                    .recipients
                    .iter()
                    .map(|r| (r.clone(), reply.clone()))
                    .collect();
                self.report(item, &envelope, message, &failed).await?;
                self.queue.fail_permanent(item, &e.to_string()).await?;
                return Ok(fresh);
            }
            Err(e) => {
                let transport = e.reply().is_none();
                if transport {
                    self.retry_soon(item, &e.to_string()).await?;
                    return Err(ApiLpsError::Smtp {
                        bal: self.name().to_owned(),
                        source: Box::new(e),
                    });
                }
                self.retry(item, &envelope, message, &e.to_string()).await?;
                return Ok(fresh);
            }
        };
        self.settle(item, &envelope, message, &delivery).await?;
        Ok(fresh)
    }

    /// Settles an item from its per-recipient results: delivered ones are done, refused
    /// ones get a DSN, deferred ones continue (as this item, or as a new one for the rest).
    async fn settle(
        &self,
        item: &Leased,
        envelope: &OutboxEnvelope,
        message: &[u8],
        delivery: &passerelle_smtp::Delivery,
    ) -> Result<(), ApiLpsError> {
        let mut failed = Vec::new();
        let mut deferred = Vec::new();
        let mut delivered = 0;
        for r in &delivery.recipients {
            if r.delivered() {
                delivered += 1;
            } else if r.reply.is_permanent() {
                failed.push((r.address.clone(), Some(r.reply.clone())));
            } else {
                deferred.push((r.address.clone(), r.reply.clone()));
            }
            if self.upstream.bal().kind == BalKind::App && mailbox_full(&r.reply) {
                // EX_GBM_4430 at submission time; the same notice arriving later as a DSN is
                // recorded by the mirror (passerelle_smtp::notice).
                tracing::warn!(requirement = "EX_GBM_4430", bal = %self.name(), message_id = %envelope.message_id, reply = %r.reply, "api lps: recipient mailbox full");
            }
        }
        if !failed.is_empty() {
            self.report(item, envelope, message, &failed).await?;
        }
        if deferred.is_empty() {
            if delivered == 0 {
                self.queue
                    .fail_permanent(item, "every recipient refused")
                    .await?;
            } else {
                self.queue.ack(item).await?;
            }
            tracing::info!(bal = %self.name(), item_id = %item.id(), delivered, failed = failed.len(), "api lps: sent");
        } else if delivered == 0 && failed.is_empty() {
            let reason = deferred
                .first()
                .map(|(_, r)| r.to_string())
                .unwrap_or_default();
            self.retry(item, envelope, message, &reason).await?;
        } else {
            // Some recipients are done: the rest continues as its own item.
            let rest = OutboxEnvelope {
                recipients: deferred.iter().map(|(a, _)| a.clone()).collect(),
                ..envelope.clone()
            };
            let key = format!("{}/rest{}", item.idempotency_key(), item.attempt());
            self.queue
                .enqueue(NewItem::new(
                    item.kind(),
                    key,
                    outbox::encode(&rest, message),
                ))
                .await?;
            self.queue.ack(item).await?;
        }
        Ok(())
    }

    async fn retry_soon(&self, item: &Leased, reason: &str) -> Result<(), ApiLpsError> {
        self.queue
            .retry(
                item,
                RetryHint {
                    retry_after: Some(self.config.link_retry),
                    reason: reason.to_owned(),
                },
            )
            .await?;
        Ok(())
    }

    async fn retry(
        &self,
        item: &Leased,
        envelope: &OutboxEnvelope,
        message: &[u8],
        reason: &str,
    ) -> Result<(), ApiLpsError> {
        let outcome = self
            .queue
            .retry(
                item,
                RetryHint {
                    retry_after: None,
                    reason: reason.to_owned(),
                },
            )
            .await?;
        if outcome == RetryOutcome::Dead {
            let failed: Vec<(String, Option<Reply>)> = envelope
                .recipients
                .iter()
                .map(|r| (r.clone(), None))
                .collect();
            self.report(item, envelope, message, &failed).await?;
        }
        Ok(())
    }

    /// Queues the DSN for the LAN sender (durably, key derived from the item, so a crash
    /// between here and the settlement does not send it twice).
    async fn report(
        &self,
        item: &Leased,
        envelope: &OutboxEnvelope,
        message: &[u8],
        failed: &[(String, Option<Reply>)],
    ) -> Result<(), ApiLpsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let from = format!("MAILER-DAEMON@{}", self.hostname);
        let id = format!("{:032x}@{}", fastrand::u128(..), self.hostname);
        let remote = self
            .upstream
            .bal()
            .submission
            .as_ref()
            .map(|e| e.host.clone());
        let dsn = build_dsn(&Dsn {
            reporting_mta: &self.hostname,
            from: &from,
            to: &envelope.sender_mailbox,
            message_id: &id,
            date: now,
            original: message,
            recipients: failed
                .iter()
                .map(|(address, reply)| DsnRecipient {
                    address: address.clone(),
                    action: DsnAction::Failed,
                    reply: reply.clone(),
                    status: Some((5, 4, 7)),
                    remote_mta: remote.clone(),
                    reason: reply
                        .is_none()
                        .then(|| "delivery time expired / délai de remise dépassé".to_owned()),
                })
                .collect(),
        });
        let Some(dsn) = dsn else {
            return Ok(());
        };
        let dsn_envelope = OutboxEnvelope {
            bal: envelope.bal.clone(),
            from: String::new(),
            recipients: vec![envelope.sender_mailbox.clone()],
            sender_mailbox: envelope.sender_mailbox.clone(),
            message_id: id,
            eight_bit: dsn.iter().any(|&b| b >= 0x80),
        };
        let key = format!("{}/dsn{}", item.idempotency_key(), item.attempt());
        self.queue
            .enqueue(NewItem::new(
                DSN_KIND,
                key,
                outbox::encode(&dsn_envelope, &dsn),
            ))
            .await?;
        self.wakers.wake(DSN_KIND);
        tracing::info!(bal = %self.name(), item_id = %item.id(), failed = failed.len(), "api lps: DSN queued for the sender");
        Ok(())
    }
}

fn closed_before_data(e: &SmtpError) -> bool {
    matches!(
        e,
        SmtpError::Closed { command, .. } | SmtpError::Io { command, .. }
            if *command == "MAIL FROM" || *command == "RCPT TO"
    ) || matches!(e, SmtpError::Refused { reply, command, .. } if reply.code == 421 && *command == "MAIL FROM")
}

/// `452 4.2.2` / `552 5.2.2`: the recipient's mailbox is full.
fn mailbox_full(reply: &Reply) -> bool {
    matches!(reply.enhanced, Some((4 | 5, 2, 2)))
}

/// Delivers queued DSNs into the local mailboxes over LMTP (Dovecot on the appliance).
pub async fn run_dsn_worker(
    queue: Arc<Queue<SqliteStore>>,
    wakers: Wakers,
    lmtp: SocketAddr,
    hostname: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wake = wakers.subscribe(DSN_KIND);
    let backoff = Duration::from_secs(5);
    loop {
        if *shutdown.borrow() {
            return;
        }
        wake.borrow_and_update();
        let items = queue.lease(DSN_KIND, 16, Duration::from_secs(120)).await;
        let items = items.unwrap_or_else(|e| {
            tracing::error!(error = %e, "dsn: lease failed");
            Vec::new()
        });
        for item in &items {
            let outcome = deliver_dsn(item, lmtp, &hostname).await;
            let settled = match outcome {
                Ok(()) => queue.ack(item).await,
                Err(reason) => {
                    tracing::warn!(item_id = %item.id(), reason, "dsn: LMTP delivery failed");
                    queue
                        .retry(
                            item,
                            RetryHint {
                                retry_after: Some(backoff),
                                reason,
                            },
                        )
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = settled {
                tracing::error!(item_id = %item.id(), error = %e, "dsn: settle failed");
            }
        }
        if !items.is_empty() {
            continue;
        }
        let sleep = match queue.next_due(DSN_KIND).await {
            Ok(Some(at)) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = wake.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn deliver_dsn(item: &Leased, lmtp: SocketAddr, hostname: &str) -> Result<(), String> {
    let (envelope, message) = outbox::decode(item.payload()).map_err(|e| e.to_string())?;
    let mut config = ClientConfig::new(hostname);
    config.lmtp = true;
    config.require_tls = false;
    let mut client = SmtpClient::connect(lmtp, config)
        .await
        .map_err(|e| e.to_string())?;
    let delivery = client
        .send(
            &Envelope {
                mail_from: MailFrom {
                    address: String::new(),
                    size: None,
                    eight_bit: envelope.eight_bit,
                },
                recipients: envelope.recipients.clone(),
            },
            message,
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client.quit().await);
    match delivery.recipients.iter().find(|r| !r.delivered()) {
        None => Ok(()),
        Some(r) => Err(format!("{}: {}", r.address, r.reply)),
    }
}
