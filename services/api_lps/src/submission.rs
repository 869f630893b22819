//! The LAN submission listener's decisions: local accounts (argon2), which BAL sends, the
//! MSSanté recipient policy, the header rewrite, and `250` only once the outbox holds the
//! message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use passerelle_queue::{NewItem, Queue, SqliteStore};
use passerelle_smtp::{
    AuthDecision, AuthMechanism, Envelope, Handler, MailFrom, Reply, ServerConfig, SessionInfo,
};

use crate::config::{LocalAccount, PracticeMailConfig};
use crate::outbox::{self, OutboxEnvelope};
use crate::{ApiLpsError, Wakers, policy};

/// The [`Handler`] of the LAN submission listener.
#[derive(Debug)]
pub struct Submission {
    accounts: HashMap<String, LocalAccount>,
    /// BAL name → address.
    bals: HashMap<String, String>,
    nil: String,
    hostname: String,
    queue: Arc<Queue<SqliteStore>>,
    wakers: Wakers,
}

impl Submission {
    pub fn new(
        config: &PracticeMailConfig,
        queue: Arc<Queue<SqliteStore>>,
        wakers: Wakers,
    ) -> Result<Self, ApiLpsError> {
        if !policy::valid_nil(&config.x_mss_nil) {
            return Err(ApiLpsError::Config(
                "x_mss_nil must be 1 to 255 printable ASCII characters (Réf. #2 2.3)".into(),
            ));
        }
        let bals: HashMap<String, String> = config
            .bals
            .iter()
            .map(|b| (b.name.clone(), b.address.clone()))
            .collect();
        for account in &config.accounts {
            PasswordHash::new(&account.password_hash).map_err(|e| {
                ApiLpsError::Config(format!("account {}: password_hash: {e}", account.user))
            })?;
            if account.bals.is_empty() {
                return Err(ApiLpsError::Config(format!(
                    "account {}: no BAL to send from",
                    account.user
                )));
            }
            if let Some(missing) = account.bals.iter().find(|b| !bals.contains_key(*b)) {
                return Err(ApiLpsError::Config(format!(
                    "account {}: unknown BAL {missing}",
                    account.user
                )));
            }
        }
        Ok(Self {
            accounts: config
                .accounts
                .iter()
                .map(|a| (a.user.clone(), a.clone()))
                .collect(),
            bals,
            nil: config.x_mss_nil.clone(),
            hostname: config.hostname.clone(),
            queue,
            wakers,
        })
    }

    /// Listener settings from the configuration (STARTTLS required before AUTH and mail).
    pub fn server_config(
        config: &PracticeMailConfig,
        tls: Arc<rustls::ServerConfig>,
    ) -> ServerConfig {
        let mut server = ServerConfig::new(config.hostname.clone());
        server.tls = Some(tls);
        server.require_tls_before_mail = true;
        server.require_auth = true;
        server.auth_mechanisms = vec![AuthMechanism::Plain, AuthMechanism::Login];
        server.max_message_size = config.limits.max_message_size;
        server.max_recipients = config.limits.max_recipients;
        server.max_sessions = config.limits.max_sessions;
        server
    }

    /// The BAL that sends for this account and reverse path: one of the account's BAL
    /// addresses, or its local mailbox (then its first BAL).
    fn sending_bal(
        &self,
        session: &SessionInfo,
        from: &str,
    ) -> Result<(&LocalAccount, String), Reply> {
        let account = session
            .authenticated
            .as_deref()
            .and_then(|u| self.accounts.get(u))
            .ok_or_else(|| Reply::new(530, (5, 7, 0), "Authentication required"))?;
        if from.eq_ignore_ascii_case(&account.mailbox) {
            return Ok((account, account.bals[0].clone()));
        }
        account
            .bals
            .iter()
            .find(|b| {
                self.bals
                    .get(*b)
                    .is_some_and(|a| a.eq_ignore_ascii_case(from))
            })
            .map(|b| (account, b.clone()))
            .ok_or_else(|| {
                Reply::new(
                    553,
                    (5, 7, 1),
                    "Sender is not a BAL this account may send from",
                )
            })
    }
}

impl Handler for Submission {
    async fn on_auth(
        &self,
        session: &SessionInfo,
        mechanism: AuthMechanism,
        _authzid: &str,
        authcid: &str,
        secret: &str,
    ) -> AuthDecision {
        let refused = || {
            AuthDecision::Refuse(Reply::new(
                535,
                (5, 7, 8),
                "Authentication credentials invalid",
            ))
        };
        if mechanism == AuthMechanism::XOAuth2 {
            return refused();
        }
        let Some(account) = self.accounts.get(authcid) else {
            tracing::info!(peer = %session.peer, "submission: unknown local account");
            return refused();
        };
        let (hash, secret) = (account.password_hash.clone(), secret.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if ok {
            AuthDecision::Accept
        } else {
            tracing::info!(peer = %session.peer, user = authcid, "submission: wrong password");
            refused()
        }
    }

    async fn on_mail_from(&self, session: &SessionInfo, from: &MailFrom) -> Result<(), Reply> {
        self.sending_bal(session, &from.address).map(|_| ())
    }

    async fn on_rcpt(
        &self,
        session: &SessionInfo,
        _from: &MailFrom,
        to: &str,
    ) -> Result<(), Reply> {
        policy::check_recipient(to).inspect_err(|r| {
            tracing::info!(peer = %session.peer, reply = %r, "submission: recipient refused");
        })
    }

    async fn on_data(&self, session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        let (account, bal) = match self.sending_bal(session, &envelope.mail_from.address) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let prepared = match policy::prepare(&message, &self.nil, &self.hostname, now) {
            Ok(p) => p,
            Err(reply) => {
                tracing::info!(peer = %session.peer, reply = %reply, "submission: message refused");
                return reply;
            }
        };
        let key = policy::idempotency_key(&bal, &prepared.message_id, &envelope.recipients);
        let item = OutboxEnvelope {
            from: self.bals.get(&bal).cloned().unwrap_or_default(),
            bal: bal.clone(),
            recipients: envelope.recipients,
            sender_mailbox: account.mailbox.clone(),
            message_id: prepared.message_id,
            eight_bit: prepared.eight_bit || envelope.mail_from.eight_bit,
        };
        let payload = outbox::encode(&item, &prepared.message);
        match self
            .queue
            .enqueue(NewItem::new(outbox::kind_for(&bal), key, payload))
            .await
        {
            Ok(outcome) => {
                tracing::info!(
                    peer = %session.peer,
                    bal,
                    item_id = %outcome.id,
                    duplicate = outcome.duplicate,
                    recipients = item.recipients.len(),
                    size = prepared.message.len(),
                    "submission: queued"
                );
                self.wakers.wake(&bal);
                Reply::new(250, (2, 0, 0), format!("Queued as {}", outcome.id))
            }
            Err(e) => {
                tracing::error!(peer = %session.peer, bal, error = %e, "submission: outbox refused the message");
                Reply::new(451, (4, 3, 0), "Cannot queue the message now, try again")
            }
        }
    }
}
