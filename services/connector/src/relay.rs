//! The LAN relay listener: the internal mail server hands over mail for other MSSanté domains
//! (TM3.2P). No AUTH: only the configured internal addresses may connect. EX_3.2_5060 is
//! checked at MAIL and RCPT (a non-MSSanté recipient is refused there, with the reason, and
//! the internal server bounces it to its user), and again by the delivery worker before
//! sending. Accepted mail is split by recipient domain into `connector.outbound` items, stored
//! before `250`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use passerelle_queue::NewItem;
use passerelle_smtp::{Envelope as SmtpEnvelope, Handler, MailFrom, Reply, SessionInfo};

use crate::core::Core;
use crate::item::{self, Envelope, OUTBOUND_KIND};
use crate::traces::Trace;

pub(crate) struct RelayHandler {
    pub(crate) core: Arc<Core>,
}

impl RelayHandler {
    fn trace(session_peer: SocketAddr, event: &'static str) -> Trace {
        Trace {
            direction: "relay",
            event,
            peer: Some(session_peer.to_string()),
            ..Trace::default()
        }
    }

    async fn refused(&self, mut trace: Trace, reply: Reply, requirement: &'static str) -> Reply {
        trace.decision = "refused";
        trace.reason = Some(reply.to_string());
        trace.requirement = Some(requirement);
        tracing::warn!(peer = ?trace.peer, requirement, reply = %reply, "relay refusal");
        self.core.traces.record(trace).await;
        reply
    }
}

impl Handler for RelayHandler {
    async fn on_connect(&self, peer: SocketAddr) -> Result<(), Reply> {
        let trace = Self::trace(peer, "session");
        if !self
            .core
            .allowed_clients
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            let reply = Reply::new(
                554,
                (5, 7, 1),
                "Relay access denied: not an internal client",
            );
            return Err(self.refused(trace, reply, "EX_3.2_5040").await);
        }
        if let Err(reply) = self.core.list() {
            return Err(self.refused(trace, reply, "EX_2.2_5010").await);
        }
        Ok(())
    }

    async fn on_mail_from(&self, session: &SessionInfo, from: &MailFrom) -> Result<(), Reply> {
        // The internal server's own DSNs go out with the null sender.
        if from.address.is_empty() {
            return Ok(());
        }
        let mut trace = Self::trace(session.peer, "mail");
        trace.from = Some(from.address.clone());
        let list = match self.core.list() {
            Ok(l) => l,
            Err(reply) => return Err(self.refused(trace, reply, "EX_2.2_5010").await),
        };
        let domain = item::domain_of(&from.address).unwrap_or_default();
        if !list.is_domain_listed(&domain) || !self.core.serves(&domain) {
            let reply = Reply::new(
                550,
                (5, 7, 1),
                format!(
                    "Sender domain {domain} is not one of our MSSante domains in the liste blanche: not sent (EX_3.2_5060)"
                ),
            );
            return Err(self.refused(trace, reply, "EX_3.2_5060").await);
        }
        Ok(())
    }

    async fn on_rcpt(&self, session: &SessionInfo, from: &MailFrom, to: &str) -> Result<(), Reply> {
        let mut trace = Self::trace(session.peer, "rcpt");
        trace.from = Some(from.address.clone());
        trace.to = vec![to.to_owned()];
        let list = match self.core.list() {
            Ok(l) => l,
            Err(reply) => return Err(self.refused(trace, reply, "EX_2.2_5010").await),
        };
        let domain = item::domain_of(to).unwrap_or_default();
        if !list.is_domain_listed(&domain) {
            let reply = Reply::new(
                550,
                (5, 7, 1),
                format!(
                    "Recipient domain {domain} is not in the MSSante liste blanche: not sent (EX_3.2_5060)"
                ),
            );
            return Err(self.refused(trace, reply, "EX_3.2_5060").await);
        }
        Ok(())
    }

    async fn on_data(
        &self,
        session: &SessionInfo,
        envelope: SmtpEnvelope,
        message: Vec<u8>,
    ) -> Reply {
        let id = item::new_id();
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rcpt in &envelope.recipients {
            by_domain
                .entry(item::domain_of(rcpt).unwrap_or_default())
                .or_default()
                .push(rcpt.clone());
        }
        let mut trace = Self::trace(session.peer, "message");
        trace.id = Some(id.clone());
        trace.from = Some(envelope.mail_from.address.clone());
        trace.to.clone_from(&envelope.recipients);
        trace.size = Some(message.len());
        trace.subject_hmac = self.core.traces.subject_hmac(&message);
        for (n, (domain, to)) in by_domain.into_iter().enumerate() {
            let part = Envelope {
                id: format!("{id}.{n}"),
                from: envelope.mail_from.address.clone(),
                to,
                domain: Some(domain),
            };
            let payload = item::encode(&part, &message);
            if let Err(e) = self
                .core
                .queue
                .enqueue(NewItem::new(OUTBOUND_KIND, part.id.clone(), payload))
                .await
            {
                // Parts already stored are sent; the internal server retries the whole
                // message, so those recipients may get it twice: at-least-once, never lost.
                tracing::error!(error = %e, %id, "outbound message not stored");
                let reply = Reply::new(451, (4, 3, 0), "Message not stored, try again later");
                return self.refused(trace, reply, "EX_3.2_5060").await;
            }
        }
        self.core.outbound_ready.notify_one();
        trace.decision = "accepted";
        trace.requirement = Some("EX_3.2_5060");
        self.core.traces.record(trace).await;
        Reply::new(250, (2, 0, 0), format!("Ok queued as {id}"))
    }
}
