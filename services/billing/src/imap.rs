//! The billing mailbox over IMAP (the second returns route, next to POP3): STARTTLS
//! on the raw stream, then `async-imap` over the TLS stream (as `imap_mirror` does), LOGIN,
//! one folder, and UID bookkeeping so each return is handled once.
//!
//! - **Once**: the folder's `UIDVALIDITY` and the highest UID handled are kept in the lot
//!   store, updated after each return's effect committed; the next poll asks for
//!   `UID last+1:*` only. A crash between a return's effect and the bookkeeping handles it
//!   again, which the handling absorbs (a duplicate ARL changes nothing, a resend is refused
//!   for a lot already put back).
//! - **After handling**: `delete` (flag `\Deleted`, then `UID EXPUNGE` or `EXPUNGE`) or
//!   `flag` (a keyword, default `$PasserelleHandled`, and `\Seen`; the mail stays). A new
//!   `UIDVALIDITY` starts again from UID 1, skipping mails already carrying the keyword.
//! - **Bounded**: the sizes are read first (`RFC822.SIZE`); a mail above `max_mail_bytes` is
//!   not fetched: it is recorded as a problem, left in the folder, and skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use passerelle_imap_starttls::Tls;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::BillingError;
use crate::returns::{Handled, ReturnKind, Returns};

type Session = async_imap::Session<Tls>;

/// Most returns handled in one poll (the rest wait for the next).
const MAX_PER_POLL: usize = 500;

/// What happens to a return in the folder once it is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterHandling {
    Delete,
    /// Set this keyword (and `\Seen`); the mail stays.
    Flag(String),
}

/// The billing mailbox over IMAP.
#[derive(Clone, Debug)]
pub struct ImapRoute {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub password: String,
    pub folder: String,
    pub after: AfterHandling,
    /// Per step.
    pub timeout: Duration,
}

fn failed(route: &ImapRoute, step: &str, why: impl std::fmt::Display) -> BillingError {
    BillingError::Returns(format!("imap {} {step}: {why}", route.addr))
}

async fn timed<T>(
    route: &ImapRoute,
    step: &str,
    f: impl Future<Output = Result<T, async_imap::error::Error>>,
) -> Result<T, BillingError> {
    tokio::time::timeout(route.timeout, f)
        .await
        .map_err(|_| failed(route, step, format!("no answer within {:?}", route.timeout)))?
        .map_err(|e| failed(route, step, e))
}

/// STARTTLS on the raw stream (the shared upgrade: nothing in clear but `STARTTLS`).
async fn starttls(route: &ImapRoute) -> Result<async_imap::Client<Tls>, BillingError> {
    let tcp = TcpStream::connect(route.addr)
        .await
        .map_err(|e| failed(route, "connect", e))?;
    passerelle_imap_starttls::starttls(tcp, Arc::clone(&route.tls), route.server_name.clone())
        .await
        .map_err(|e| failed(route, e.step, e.why))
}

/// Unsolicited responses land in a bounded channel that blocks the session when full.
fn drain(session: &mut Session) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

impl Returns {
    /// Read the billing mailbox folder once over IMAP: every new return is kept raw,
    /// handled, recorded as handled, then deleted or flagged.
    pub async fn poll_imap(&self, route: &ImapRoute) -> Result<Vec<Handled>, BillingError> {
        let client = tokio::time::timeout(route.timeout, starttls(route))
            .await
            .map_err(|_| failed(route, "STARTTLS", "timed out"))??;
        let login = tokio::time::timeout(route.timeout, client.login(&route.user, &route.password))
            .await
            .map_err(|_| failed(route, "LOGIN", "timed out"))?;
        let mut session = login.map_err(|(e, _)| failed(route, "LOGIN", e))?;
        let result = self.read_folder(&mut session, route).await;
        let _ = tokio::time::timeout(route.timeout, session.logout()).await;
        result
    }

    async fn read_folder(
        &self,
        session: &mut Session,
        route: &ImapRoute,
    ) -> Result<Vec<Handled>, BillingError> {
        let store = &self.intake.store;
        let mailbox_key = format!("{}@{}/{}", route.user, route.addr, route.folder);
        let caps = timed(route, "CAPABILITY", session.capabilities()).await?;
        let uidplus = caps.has_str("UIDPLUS");
        drop(caps);
        let mailbox = timed(route, "SELECT", session.select(&route.folder)).await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| failed(route, "SELECT", "no UIDVALIDITY"))?;
        let last = match store.imap_position(&mailbox_key).await? {
            Some((v, uid)) if v == uidvalidity => uid,
            Some((v, _)) => {
                tracing::warn!(
                    folder = %route.folder,
                    old = v,
                    new = uidvalidity,
                    "UIDVALIDITY changed: the folder is read again (handled returns are absorbed)"
                );
                0
            }
            None => 0,
        };
        let mut out = Vec::new();
        if mailbox.exists == 0 {
            store
                .set_imap_position(&mailbox_key, uidvalidity, last)
                .await?;
            return Ok(out);
        }
        let from = last.saturating_add(1);
        let query = match &route.after {
            AfterHandling::Flag(keyword) => format!("UID {from}:* UNKEYWORD {keyword}"),
            AfterHandling::Delete => format!("UID {from}:*"),
        };
        let found = timed(route, "UID SEARCH", session.uid_search(&query)).await?;
        drain(session);
        // `n:*` always matches the highest UID, even below n.
        let mut uids: Vec<u32> = found.into_iter().filter(|&u| u >= from).collect();
        uids.sort_unstable();
        uids.truncate(MAX_PER_POLL);
        let sizes = self.sizes(session, route, &uids).await?;
        let mut done = Vec::new();
        if route.after == AfterHandling::Delete && last > 0 {
            // Handled by an earlier poll that did not get to delete them (a crash, a cut).
            let stale = timed(
                route,
                "UID SEARCH",
                session.uid_search(format!("UID 1:{last}")),
            )
            .await?;
            drain(session);
            done.extend(stale.into_iter().filter(|&u| u <= last));
        }
        for uid in uids {
            let size = sizes.iter().find(|(u, _)| *u == uid).map(|(_, s)| *s);
            let handled = match size {
                Some(s) if s as usize <= self.max_mail_bytes => {
                    match self.fetch(session, route, uid).await? {
                        Some(raw) => {
                            let name = format!("imap-{uidvalidity}-{uid}");
                            Some(self.handle(&name, &raw).await?)
                        }
                        None => None,
                    }
                }
                other => {
                    let why = format!(
                        "return of {} bytes above the limit of {} bytes: left in the folder, not read",
                        other.map_or_else(|| "unknown".into(), |s| s.to_string()),
                        self.max_mail_bytes
                    );
                    tracing::warn!(uid, reason = %why, "billing mailbox");
                    Some(Handled {
                        kind: ReturnKind::Problem(why),
                        lot: None,
                        changed: false,
                    })
                }
            };
            // Recorded before the mail is touched: a crash now leaves a handled mail in
            // the folder, which the next poll skips (and deletes, in delete mode).
            store
                .set_imap_position(&mailbox_key, uidvalidity, uid)
                .await?;
            if let Some(h) = handled {
                done.push(uid);
                out.push(h);
            }
        }
        self.after_handling(session, route, &done, uidplus).await?;
        Ok(out)
    }

    async fn sizes(
        &self,
        session: &mut Session,
        route: &ImapRoute,
        uids: &[u32],
    ) -> Result<Vec<(u32, u32)>, BillingError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let mut sizes = Vec::with_capacity(uids.len());
        let mut stream = timed(
            route,
            "UID FETCH RFC822.SIZE",
            session.uid_fetch(&set, "(UID RFC822.SIZE)"),
        )
        .await?;
        loop {
            let next = tokio::time::timeout(route.timeout, stream.next())
                .await
                .map_err(|_| failed(route, "UID FETCH RFC822.SIZE", "stalled"))?;
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(|e| failed(route, "UID FETCH RFC822.SIZE", e))?;
            if let (Some(uid), Some(size)) = (fetch.uid, fetch.size) {
                sizes.push((uid, size));
            }
        }
        drop(stream);
        drain(session);
        Ok(sizes)
    }

    /// One mail's bytes (`BODY.PEEK[]`: fetching does not mark it read); `None` when it went
    /// away meanwhile.
    async fn fetch(
        &self,
        session: &mut Session,
        route: &ImapRoute,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, BillingError> {
        let mut body = None;
        {
            let mut stream = timed(
                route,
                "UID FETCH",
                session.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])"),
            )
            .await?;
            loop {
                let next = tokio::time::timeout(route.timeout, stream.next())
                    .await
                    .map_err(|_| failed(route, "UID FETCH", "stalled"))?;
                let Some(fetch) = next else { break };
                let fetch = fetch.map_err(|e| failed(route, "UID FETCH", e))?;
                if fetch.uid == Some(uid)
                    && let Some(b) = fetch.body()
                {
                    body = Some(b.to_vec());
                }
            }
        }
        drain(session);
        Ok(body)
    }

    async fn after_handling(
        &self,
        session: &mut Session,
        route: &ImapRoute,
        uids: &[u32],
        uidplus: bool,
    ) -> Result<(), BillingError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let flags = match &route.after {
            AfterHandling::Delete => "+FLAGS.SILENT (\\Deleted)".to_owned(),
            AfterHandling::Flag(keyword) => format!("+FLAGS.SILENT (\\Seen {keyword})"),
        };
        {
            let stream = timed(route, "UID STORE", session.uid_store(&set, &flags)).await?;
            tokio::time::timeout(route.timeout, stream.collect::<Vec<_>>())
                .await
                .map_err(|_| failed(route, "UID STORE", "stalled"))?;
        }
        drain(session);
        if route.after == AfterHandling::Delete {
            if uidplus {
                let stream = timed(route, "UID EXPUNGE", session.uid_expunge(&set)).await?;
                tokio::time::timeout(route.timeout, stream.collect::<Vec<_>>())
                    .await
                    .map_err(|_| failed(route, "UID EXPUNGE", "stalled"))?;
            } else {
                let stream = timed(route, "EXPUNGE", session.expunge()).await?;
                tokio::time::timeout(route.timeout, stream.collect::<Vec<_>>())
                    .await
                    .map_err(|_| failed(route, "EXPUNGE", "stalled"))?;
            }
            drain(session);
        }
        Ok(())
    }
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
