//! TM3.1P: the SMTP server other operators' connectors deliver to (§6.7.1.1, EX_3.1_5030 and
//! the 2015 erratum: no PTR check, certificate + liste blanche only).
//!
//! - STARTTLS only: the engine answers `530 5.7.0` to MAIL before it (step 2).
//! - Step 3: the TLS layer requires the client certificate and validates it with the inbound
//!   trust profile (IGC-Santé Élémentaire Organisations, revocation): no certificate or a bad
//!   chain aborts the handshake.
//! - Step 4 at STARTTLS: the DN must be in the liste blanche.
//! - Steps 5–6 at MAIL FROM: the domain present, listed and mapped to that DN; the null sender
//!   only needs step 4.
//! - The message is in the queue (`connector.inbound`) before `250`.

use std::net::SocketAddr;
use std::sync::Arc;

use passerelle_liste_blanche::ListeBlanche;
use passerelle_queue::NewItem;
use passerelle_smtp::{Envelope as SmtpEnvelope, Handler, MailFrom, Reply, SessionInfo, TlsInfo};
use passerelle_trust::{Dn, TrustStore};

use crate::core::Core;
use crate::item::{self, Envelope, INBOUND_KIND};
use crate::traces::Trace;

pub(crate) struct InboundHandler {
    pub(crate) core: Arc<Core>,
}

fn refuse(code: u16, enhanced: (u8, u16, u16), text: String) -> Reply {
    Reply::new(code, enhanced, text)
}

/// The peer's certificate DN, from the validated TLS session.
fn peer_dn(session: &SessionInfo) -> Option<Dn> {
    let leaf = session.tls.as_ref()?.peer_certificates.first()?;
    TrustStore::subject_of(leaf).ok()
}

impl InboundHandler {
    fn trace(session: &SessionInfo, event: &'static str) -> Trace {
        Trace {
            direction: "inbound",
            event,
            peer: Some(session.peer.to_string()),
            peer_dn: peer_dn(session).map(|d| d.to_string()),
            ..Trace::default()
        }
    }

    async fn refused(&self, mut trace: Trace, reply: Reply, requirement: &'static str) -> Reply {
        trace.decision = "refused";
        trace.reason = Some(reply.to_string());
        trace.requirement = Some(requirement);
        tracing::warn!(peer = ?trace.peer, peer_dn = ?trace.peer_dn, requirement, reply = %reply, "TM3.1P refusal");
        self.core.traces.record(trace).await;
        reply
    }

    fn list(&self) -> Result<Arc<ListeBlanche>, Reply> {
        self.core.list()
    }
}

impl Handler for InboundHandler {
    async fn on_connect(&self, peer: SocketAddr) -> Result<(), Reply> {
        if let Err(reply) = self.list() {
            let trace = Trace {
                direction: "inbound",
                event: "session",
                peer: Some(peer.to_string()),
                ..Trace::default()
            };
            return Err(self.refused(trace, reply, "EX_2.2_5010").await);
        }
        Ok(())
    }

    async fn on_tls(&self, session: &SessionInfo, tls: &TlsInfo) -> Result<(), Reply> {
        let trace = Self::trace(session, "tls");
        let list = match self.list() {
            Ok(l) => l,
            Err(reply) => return Err(self.refused(trace, reply, "EX_2.2_5010").await),
        };
        let Some(leaf) = tls.peer_certificates.first() else {
            let reply = refuse(
                530,
                (5, 7, 0),
                "A client certificate is required (EX_3.1_5030 step 3)".to_owned(),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        };
        let dn = match TrustStore::subject_of(leaf) {
            Ok(dn) => dn,
            Err(e) => {
                let reply = refuse(
                    550,
                    (5, 7, 1),
                    format!("Unreadable certificate subject: {e}"),
                );
                return Err(self.refused(trace, reply, "EX_3.1_5030").await);
            }
        };
        if !list.is_dn_listed(&dn) {
            let reply = refuse(
                550,
                (5, 7, 1),
                "Certificate DN not in the MSSante liste blanche (EX_3.1_5030 step 4)".to_owned(),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        }
        let mut trace = Trace {
            peer_dn: Some(dn.to_string()),
            ..trace
        };
        trace.decision = "accepted";
        trace.requirement = Some("EX_3.1_5030");
        self.core.traces.record(trace).await;
        Ok(())
    }

    async fn on_mail_from(&self, session: &SessionInfo, from: &MailFrom) -> Result<(), Reply> {
        let mut trace = Self::trace(session, "mail");
        trace.from = Some(from.address.clone());
        let list = match self.list() {
            Ok(l) => l,
            Err(reply) => return Err(self.refused(trace, reply, "EX_2.2_5010").await),
        };
        let Some(dn) = peer_dn(session) else {
            let reply = refuse(
                530,
                (5, 7, 0),
                "Must issue a STARTTLS command with a client certificate first".to_owned(),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        };
        if !list.is_dn_listed(&dn) {
            let reply = refuse(
                550,
                (5, 7, 1),
                "Certificate DN not in the MSSante liste blanche (EX_3.1_5030 step 4)".to_owned(),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        }
        // Null sender (DSNs, absences): the DN check above is all (§6.7.1.1 remark).
        if from.address.is_empty() {
            return Ok(());
        }
        let Some(domain) = item::domain_of(&from.address) else {
            let reply = refuse(
                550,
                (5, 1, 7),
                "Sender address has no domain (EX_3.1_5030 step 6)".to_owned(),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        };
        if !list.is_domain_listed(&domain) {
            let reply = refuse(
                550,
                (5, 7, 1),
                format!(
                    "Sender domain {domain} is not in the MSSante liste blanche (EX_3.1_5030 step 6)"
                ),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        }
        if !list.dn_allowed_for_domain(&dn, &domain) {
            let reply = refuse(
                550,
                (5, 7, 1),
                format!(
                    "Certificate DN is not recorded for sender domain {domain} in the MSSante liste blanche (EX_3.1_5030 steps 5-6)"
                ),
            );
            return Err(self.refused(trace, reply, "EX_3.1_5030").await);
        }
        Ok(())
    }

    async fn on_rcpt(
        &self,
        session: &SessionInfo,
        _from: &MailFrom,
        to: &str,
    ) -> Result<(), Reply> {
        let served = item::domain_of(to).is_some_and(|d| self.core.serves(&d));
        if served {
            return Ok(());
        }
        let mut trace = Self::trace(session, "rcpt");
        trace.to = vec![to.to_owned()];
        let reply = refuse(
            550,
            (5, 7, 1),
            "Relaying denied: recipient domain not served here".to_owned(),
        );
        Err(self.refused(trace, reply, "EX_3.1_5030").await)
    }

    async fn on_data(
        &self,
        session: &SessionInfo,
        envelope: SmtpEnvelope,
        message: Vec<u8>,
    ) -> Reply {
        let id = item::new_id();
        let mut trace = Self::trace(session, "message");
        trace.id = Some(id.clone());
        trace.from = Some(envelope.mail_from.address.clone());
        trace.to.clone_from(&envelope.recipients);
        trace.size = Some(message.len());
        trace.subject_hmac = self.core.traces.subject_hmac(&message);
        let queued = Envelope {
            id: id.clone(),
            from: envelope.mail_from.address,
            to: envelope.recipients,
            domain: None,
        };
        let payload = item::encode(&queued, &message);
        match self
            .core
            .queue
            .enqueue(NewItem::new(INBOUND_KIND, id.clone(), payload))
            .await
        {
            Ok(_) => {
                self.core.inbound_ready.notify_one();
                trace.decision = "accepted";
                trace.requirement = Some("EX_3.1_5030");
                self.core.traces.record(trace).await;
                Reply::new(250, (2, 0, 0), format!("Ok queued as {id}"))
            }
            Err(e) => {
                tracing::error!(error = %e, %id, "inbound message not stored");
                let reply = Reply::new(451, (4, 3, 0), "Message not stored, try again later");
                self.refused(trace, reply, "EX_3.1_5030").await
            }
        }
    }
}
