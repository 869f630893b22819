//! The OCT profile (issue item 7; digest §4, §8 #19): the box concentrates the lots of many
//! practices. Each practice's LPS encrypts its lot for the **OCT certificate** (the reference
//! command with the OCT's certificate instead of the AM's) and mails it to the OCT intake;
//! the OCT opens it with its private key in the PKCS#11 token, takes the plain lot through the
//! normal intake (checked, durable, queued), the sender encrypts it again for the AMO/AMC
//! certificate and sends it on the caisse route, and every return matched to that lot (ARL,
//! service message, DSN) is forwarded to the practice it came from.
//!
//! - **Which practice**: the envelope sender (`MAIL FROM`) must be one of a configured
//!   practice's `senders`; anything else gets `550 5.7.1`. The lot remembers its practice
//!   and the practice's Message-ID (`lot_origins` in the lot store).
//! - **What comes in**: one file with a Content-Description of an FSE or DRE lot carrying
//!   `K` (`FSE/B2/K`, `DRETEST/DR/ZK`…): the DER CMS EnvelopedData. Not encrypted, not for
//!   our certificate, not decryptable, not a lot: `554` with the reason (`5.7.5` for the
//!   cryptographic failures, one message for unwrap and content failures), nothing taken.
//! - **Key**: the content key is unwrapped in the token (`CKM_RSA_PKCS`,
//!   [`passerelle_keystore::TokenKey::decrypt_rsa_pkcs1`]); the private key never leaves it.
//! - **Returns**: forwarded unchanged but for two headers prepended
//!   (`X-Passerelle-Lot`, `X-Passerelle-Practice-Message-ID`, so the practice's LPS can match
//!   the return to what it sent), queued (kind [`OCT_RETURN_KIND`]) and mailed to the
//!   practice's `return_to` over the same SMTP route as the lots.
//!
//! The mixed FSE+DRE profile of A5 §7.1 is missing from the source (digest §8 #20): a file
//! mixing both is refused by the lot check like any file whose header does not fit its flow.

use mail_parser::MessageParser;
use passerelle_keystore::TokenKey;
use passerelle_sesam::{Envelope, SesamError};
use passerelle_smtp::{Envelope as SmtpEnvelope, Handler, Reply, SessionInfo};

use crate::error::BillingError;
use crate::intake::{Intake, MetaIn};
use crate::lot_file::LotId;
use crate::relay::{LotPart, gunzip};

/// The queue kind of returns forwarded to practices; payload `"<to>\n"` + the mail.
pub const OCT_RETURN_KIND: &str = "sesam-oct-return";

/// A practice the OCT serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Practice {
    /// A short name for logs and the lot store.
    pub id: String,
    /// Envelope senders its LPS mails lots from.
    pub senders: Vec<String>,
    /// Where its returns are forwarded.
    pub return_to: String,
}

/// The OCT intake: the SMTP handler practices mail their encrypted lots to.
#[derive(Clone, Debug)]
pub struct OctIntake {
    pub intake: Intake,
    /// The OCT's private key in the token.
    pub key: TokenKey,
    /// The OCT's certificate (DER): envelopes must name it.
    pub certificate: Vec<u8>,
    pub practices: Vec<Practice>,
}

/// A refusal with its SMTP reply.
struct Refused(Reply);

fn not_a_lot(why: impl std::fmt::Display) -> Refused {
    Refused(Reply::new(554, (5, 6, 0), format!("not a lot: {why}")))
}

impl OctIntake {
    fn practice(&self, sender: &str) -> Option<&Practice> {
        self.practices.iter().find(|p| {
            p.senders
                .iter()
                .any(|s| s.eq_ignore_ascii_case(sender.trim()))
        })
    }

    /// Open the practice's lot mail: the metadata and the plain lot.
    async fn open(&self, raw: &[u8]) -> Result<(MetaIn, Vec<u8>, String), Refused> {
        let msg = MessageParser::default()
            .parse(raw)
            .ok_or_else(|| not_a_lot("unparsable mail"))?;
        let message_id = msg
            .message_id()
            .map(|m| format!("<{m}>"))
            .unwrap_or_default();
        let lot = LotPart::find(&msg).map_err(not_a_lot)?;
        let (flow, env) = (lot.flow, lot.env);
        let flags = lot.desc.rsplit('/').next().unwrap_or_default();
        if !flags.ends_with('K') {
            return Err(Refused(Reply::new(
                554,
                (5, 7, 5),
                "the lot is not encrypted for the OCT certificate (Content-Description without K)",
            )));
        }
        let crypto = |e: SesamError| Refused(Reply::new(554, (5, 7, 5), e.to_string()));
        let envelope = Envelope::parse(lot.part.contents()).map_err(crypto)?;
        let wrapped = envelope
            .encrypted_key_for(&self.certificate)
            .map_err(crypto)?;
        let unwrapped = self.key.decrypt_rsa_pkcs1(wrapped).await;
        if let Err(e) = &unwrapped {
            // Logged here, never told to the peer apart from a content failure.
            tracing::debug!(error = %e, "OCT key unwrap failed");
        }
        let mut content = envelope.open(unwrapped).map_err(crypto)?;
        let max = self.intake.max_lot_bytes;
        if flags.contains('Z') {
            content = gunzip(&content, max).map_err(not_a_lot)?;
        }
        let file_name = lot.file_name();
        let meta = MetaIn {
            flow: flow.as_str().into(),
            env: env.as_str().into(),
            recipient: if flow == passerelle_sesam::Flow::Fse {
                "amo".into()
            } else {
                "amc".into()
            },
            subject: lot.subject,
            name: Some(file_name),
        };
        Ok((meta, content, message_id))
    }

    async fn take(&self, envelope: &SmtpEnvelope, raw: &[u8]) -> Result<LotId, Refused> {
        let sender = &envelope.mail_from.address;
        let practice = self.practice(sender).ok_or_else(|| {
            Refused(Reply::new(
                550,
                (5, 7, 1),
                "sender not configured as a practice of this OCT",
            ))
        })?;
        let (meta, content, message_id) = self.open(raw).await?;
        let meta = meta.check("lot").map_err(not_a_lot)?;
        let storage = |e: BillingError| {
            tracing::error!(error = %e, "OCT intake failed");
            Refused(Reply::new(
                451,
                (4, 3, 0),
                "the lot could not be stored; retry",
            ))
        };
        // The practice first: a lot is never queued without where its returns go.
        let id = crate::lot_file::check_lot(&content, meta.flow, self.intake.max_lot_bytes)
            .map_err(not_a_lot)?;
        self.intake
            .store
            .set_origin(&id, &practice.id, &practice.return_to, &message_id)
            .await
            .map_err(storage)?;
        let accepted = match self.intake.accept(&meta, &content).await {
            Ok(a) => a,
            Err(BillingError::NotALot { why }) => return Err(not_a_lot(why)),
            Err(e) => return Err(storage(e)),
        };
        tracing::info!(lot = %accepted.lot_id, practice = %practice.id, "OCT lot received");
        Ok(accepted.lot_id)
    }
}

impl Handler for OctIntake {
    async fn on_data(
        &self,
        session: &SessionInfo,
        envelope: SmtpEnvelope,
        message: Vec<u8>,
    ) -> Reply {
        let _ = session;
        match self.take(&envelope, &message).await {
            Ok(id) => Reply::new(250, (2, 0, 0), format!("lot {id} queued")),
            Err(Refused(reply)) => {
                tracing::warn!(code = reply.code, "OCT lot refused");
                reply
            }
        }
    }
}
