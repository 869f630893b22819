//! Transmission: the worker that takes queued lots, encrypts each at send time with the
//! current valid recipient certificate, and mails it over the caisse/OCT SMTP route (TLS
//! required, passerelle-smtp client).
//!
//! - The certificate is checked at send time (digest §8 #16): [CE1]/[CE2] put the lot in
//!   `blocked` with the rule's message and the queue item is retried later; nothing is ever
//!   sent unencrypted.
//! - `250` for the recipient: the lot is `sent` with its Message-ID (returns refer to it).
//! - Temporary trouble (connection, TLS, `4xx`): the queue retries with its backoff; the lot
//!   stays `encrypted` and is re-encrypted at the next attempt (fresh key, current
//!   certificate).
//! - `5xx`: the lot is `rejected` with the caisse route's reply; the operator decides.
//!
//! The message is built in memory; lots are bounded by `max_lot_bytes` (B2 files are a few
//! hundred kB at most; the streaming encryptor of passerelle-sesam keeps the CMS step flat).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_queue::{Leased, RetryHint, RetryOutcome};
use passerelle_sesam::{LotMessage, Recipient, RecipientCertificates, SesamError, write_message};
use passerelle_smtp::{ClientConfig, ErrorKind, MailFrom, SmtpClient, SmtpError};
use passerelle_trust::TrustStore;
use rustls_pki_types::{ServerName, UnixTime};

use crate::error::BillingError;
use crate::intake::{Intake, RecipientKind};
use crate::lot_file::LotId;
use crate::lots::{Lot, LotState};

/// The SMTP route to the caisse (or the OCT).
#[derive(Clone, Debug)]
pub struct Route {
    pub addr: SocketAddr,
    /// The name the server certificate must carry.
    pub server_name: ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    /// `AUTH PLAIN` user and password, after STARTTLS.
    pub auth: Option<(String, String)>,
    pub helo: String,
    /// The billing mailbox address (returns come back to it).
    pub from: String,
    /// The AMO and AMC addresses (digest §8 #2: configured, never derived from certificates).
    pub to_amo: String,
    pub to_amc: String,
}

/// Everything the worker needs.
#[derive(Clone, Debug)]
pub struct Sender {
    pub intake: Intake,
    pub certs: Arc<Mutex<RecipientCertificates>>,
    pub trust: Arc<TrustStore>,
    pub route: Route,
    pub compress: bool,
    /// Where the lot is staged under its LPS file name while its message is built.
    pub work_dir: PathBuf,
}

/// How long one send may hold its queue item.
const LEASE: Duration = Duration::from_secs(600);

/// What became of one leased lot.
enum Outcome {
    Sent,
    Retry(String),
    Permanent(String),
    /// The item no longer matches a lot waiting to be sent (acknowledged meanwhile…).
    Stale,
}

impl Sender {
    /// Send every due lot; returns how many were sent.
    pub async fn run_once(&self) -> Result<usize, BillingError> {
        let leased = self
            .intake
            .queue
            .lease(crate::QUEUE_KIND, 16, LEASE)
            .await?;
        let mut sent = 0;
        for item in leased {
            match self.send_one(&item).await? {
                Outcome::Sent => {
                    sent += 1;
                    self.intake.queue.ack(&item).await?;
                }
                Outcome::Stale => self.intake.queue.ack(&item).await?,
                Outcome::Retry(reason) => {
                    let outcome = self
                        .intake
                        .queue
                        .retry(
                            &item,
                            RetryHint {
                                retry_after: None,
                                reason: reason.clone(),
                            },
                        )
                        .await?;
                    if outcome == RetryOutcome::Dead
                        && let Some(id) = std::str::from_utf8(item.payload())
                            .ok()
                            .and_then(LotId::parse)
                    {
                        // The queue gave up (lifetime): the lot says so; the operator resends.
                        let why = format!("not sent within the queue lifetime: {reason}");
                        tracing::error!(lot = %id, reason = %reason, "lot not sent: queue lifetime over");
                        self.intake.store.note(&id, &why).await?;
                    }
                }
                Outcome::Permanent(reason) => {
                    self.intake.queue.fail_permanent(&item, &reason).await?;
                }
            }
        }
        Ok(sent)
    }

    /// OCT profile: mail the returns queued for practices (kind
    /// [`OCT_RETURN_KIND`](crate::oct::OCT_RETURN_KIND)) over the same route; returns how
    /// many went out.
    pub async fn forward_returns(&self) -> Result<usize, BillingError> {
        let queue = &self.intake.queue;
        let leased = queue.lease(crate::oct::OCT_RETURN_KIND, 16, LEASE).await?;
        let mut sent = 0;
        for item in leased {
            let payload = item.payload();
            let Some(split) = payload.iter().position(|&b| b == b'\n') else {
                queue
                    .fail_permanent(&item, "forwarded return without its recipient")
                    .await?;
                continue;
            };
            let to = String::from_utf8_lossy(&payload[..split]).into_owned();
            match self.deliver(&to, &payload[split + 1..]).await {
                Ok(()) => {
                    queue.ack(&item).await?;
                    sent += 1;
                }
                Err(e) if e.kind() == ErrorKind::Temporary => {
                    let hint = RetryHint {
                        retry_after: None,
                        reason: e.to_string(),
                    };
                    queue.retry(&item, hint).await?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a return could not be forwarded to its practice");
                    queue.fail_permanent(&item, &e.to_string()).await?;
                }
            }
        }
        Ok(sent)
    }

    async fn send_one(&self, item: &Leased) -> Result<Outcome, BillingError> {
        let store = &self.intake.store;
        let Some(id) = std::str::from_utf8(item.payload())
            .ok()
            .and_then(LotId::parse)
        else {
            return Ok(Outcome::Permanent("queue item without a lot id".into()));
        };
        let Some(lot) = store.get(&id).await? else {
            return Ok(Outcome::Permanent(format!("lot {id} unknown")));
        };
        if !matches!(
            lot.state,
            LotState::Received | LotState::Blocked | LotState::Encrypted
        ) {
            return Ok(Outcome::Stale);
        }
        let message = match self.build(&lot).await {
            Ok(m) => m,
            Err(e) => {
                // [CE1]/[CE2] (and a lot that cannot be encrypted): blocked, retried by the
                // queue once the certificate or CRL is fixed; never sent unencrypted.
                let why = e.to_string();
                tracing::warn!(lot = %id, error = %why, rule_blocks = e.blocks_sending(), "lot blocked: not sent");
                store.transition(&id, LotState::Blocked, &why).await?;
                return Ok(Outcome::Retry(why));
            }
        };
        let (bytes, message_id, cert_note) = message;
        store
            .transition(&id, LotState::Encrypted, &cert_note)
            .await?;
        let to = match lot.meta.recipient {
            RecipientKind::Amo => &self.route.to_amo,
            RecipientKind::Amc => &self.route.to_amc,
        };
        match self.deliver(to, &bytes).await {
            Ok(()) => {
                store.mark_sent(&id, &message_id).await?;
                Ok(Outcome::Sent)
            }
            Err(e) if e.kind() == ErrorKind::Temporary => {
                tracing::info!(lot = %id, error = %e, "caisse route unavailable; the lot waits");
                Ok(Outcome::Retry(e.to_string()))
            }
            Err(e) => {
                let why = format!("the caisse route refused the lot: {e}");
                store.transition(&id, LotState::Rejected, &why).await?;
                Ok(Outcome::Permanent(why))
            }
        }
    }

    /// The complete message for `lot`, encrypted for the current valid certificate.
    async fn build(&self, lot: &Lot) -> Result<(Vec<u8>, String, String), SesamError> {
        let (flow, env) = (lot.meta.flow, lot.meta.env);
        let der = {
            let certs = self.certs.lock().map_err(|_| SesamError::Certificate {
                why: "certificate store lock poisoned".into(),
            })?;
            certs.for_sending(&self.trust, flow, env, UnixTime::now())?;
            certs
                .stored(flow, env)
                .map(<[u8]>::to_vec)
                .ok_or(SesamError::NoCertificate {
                    flow: flow.as_str(),
                    env: env.as_str(),
                })?
        };
        let content =
            self.intake
                .store
                .content(&lot.id)
                .await
                .map_err(|e| SesamError::Certificate {
                    why: format!("lot content unavailable: {e}"),
                })?;
        let msg = LotMessage {
            flow,
            env,
            compress: self.compress,
            subject: lot.meta.subject.clone(),
            from: self.route.from.clone(),
            to: match lot.meta.recipient {
                RecipientKind::Amo => self.route.to_amo.clone(),
                RecipientKind::Amc => self.route.to_amc.clone(),
            },
            max_lot_bytes: self.intake.max_lot_bytes,
        };
        let stage = self.work_dir.join(lot.id.as_str());
        let file_name = lot.meta.file_name.clone();
        tokio::task::spawn_blocking(move || {
            let io = |source| SesamError::Io {
                path: stage.clone(),
                source,
            };
            std::fs::create_dir_all(&stage).map_err(io)?;
            let path = stage.join(&file_name);
            std::fs::write(&path, &content).map_err(io)?;
            let recipient = Recipient::from_der(&der)?;
            let mut out = Vec::new();
            let written = write_message(&recipient, &path, &msg, &mut out);
            let _ = std::fs::remove_dir_all(&stage);
            let written = written?;
            let serial = x509_serial(&der);
            Ok((
                out,
                written.message_id,
                format!(
                    "encrypted for the {} {} certificate serial {serial}",
                    flow.as_str(),
                    env.as_str()
                ),
            ))
        })
        .await
        .map_err(|e| SesamError::Certificate {
            why: format!("encryption task: {e}"),
        })?
    }

    async fn deliver(&self, to: &str, message: &[u8]) -> Result<(), SmtpError> {
        let route = &self.route;
        let mut client = SmtpClient::connect(route.addr, ClientConfig::new(&route.helo)).await?;
        client
            .starttls(route.tls.clone(), route.server_name.clone())
            .await?;
        if let Some((user, password)) = &route.auth {
            client.auth_plain("", user, password).await?;
        }
        let envelope = passerelle_smtp::Envelope {
            mail_from: MailFrom {
                address: route.from.clone(),
                size: None,
                eight_bit: false,
            },
            recipients: vec![to.to_owned()],
        };
        let delivery = client.send(&envelope, message).await?;
        let _ = client.quit().await;
        match delivery.recipients.into_iter().next() {
            Some(r) if r.delivered() => Ok(()),
            Some(r) => Err(SmtpError::Refused {
                peer: route.addr,
                command: "RCPT",
                reply: r.reply,
            }),
            None => Err(SmtpError::Refused {
                peer: route.addr,
                command: "DATA",
                reply: passerelle_smtp::Reply::new(451, (4, 4, 0), "no recipient result"),
            }),
        }
    }
}

/// The certificate's serial in hex, for the lot's history (which certificate encrypted it).
fn x509_serial(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map_or_else(|_| "?".into(), |(_, c)| c.raw_serial_as_string())
}
