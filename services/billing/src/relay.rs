//! Lot intake (a): the LPS mails the lot as it would to the caisse, to passerelle's LAN
//! SMTP relay ([`passerelle_smtp::serve`] with this [`Handler`]). The lot is the one file
//! of the mail; its `Content-Description` (`FSE/B2`, `FSETEST/B2`, `DRE/DR`, `…/Z` when the
//! LPS gzipped it) gives the flow and the environment, the Subject is the Formater_Lot
//! reference. `250` carries the lot id and is sent only after [`Intake::accept`] — the lot is
//! durable; input that is not a lot gets `554 5.6.0` with the reason, storage trouble
//! `451 4.3.0` (the LPS retries; same content, same lot).

use std::io::Read;

use mail_parser::{MessageParser, MimeHeaders};
use passerelle_sesam::{Env, Flow};
use passerelle_smtp::{Envelope, Handler, Reply, SessionInfo};

use crate::error::BillingError;
use crate::intake::{Intake, LotMeta, RecipientKind};

/// The LAN relay's handler for lot mails.
#[derive(Clone, Debug)]
pub struct LotRelay {
    pub intake: Intake,
}

/// Flow and environment from a Content-Description (`FSE/B2`, `DRETEST/DR/Z`…).
pub(crate) fn flow_env(desc: &str) -> Option<(Flow, Env, bool)> {
    let desc = desc.trim().to_ascii_uppercase();
    let mut fields = desc.split('/');
    let first = fields.next()?;
    let compressed = fields.any(|f| f.contains('Z'));
    let (flow, rest) = if let Some(r) = first.strip_prefix("FSE") {
        (Flow::Fse, r)
    } else if let Some(r) = first.strip_prefix("DRE") {
        (Flow::Dre, r)
    } else {
        return None;
    };
    let env = match rest {
        "" => Env::Real,
        "TEST" => Env::Test,
        "DEMO" => Env::Demo,
        _ => return None,
    };
    Some((flow, env, compressed))
}

fn refuse(why: impl Into<String>) -> BillingError {
    BillingError::NotALot { why: why.into() }
}

/// The lot and its metadata from the LPS's mail.
fn lot_from_mail(raw: &[u8], max: u64) -> Result<(LotMeta, Vec<u8>), BillingError> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| refuse("unparsable mail"))?;
    let subject = msg.subject().unwrap_or_default().trim().to_owned();
    let files: Vec<_> = msg
        .parts
        .iter()
        .filter(|p| p.content_description().is_some())
        .collect();
    let [part] = files.as_slice() else {
        return Err(refuse(format!(
            "expected one lot file with a Content-Description, found {}",
            files.len()
        )));
    };
    let desc = part.content_description().unwrap_or_default();
    let (flow, env, compressed) = flow_env(desc).ok_or_else(|| {
        refuse(format!(
            "Content-Description {desc:?} is not an FSE or DRE lot"
        ))
    })?;
    if desc.trim().to_ascii_uppercase().ends_with('K') {
        return Err(refuse(
            "the lot is already encrypted; hand over the plain lot",
        ));
    }
    let mut content = part.contents().to_vec();
    if compressed || content.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(content.as_slice())
            .take(max + 1)
            .read_to_end(&mut plain)
            .map_err(|e| refuse(format!("bad gzip: {e}")))?;
        content = plain;
    }
    let file_name = part
        .attachment_name()
        .unwrap_or("lot")
        .trim_end_matches(".gz")
        .to_owned();
    let meta = LotMeta {
        flow,
        env,
        recipient: if flow == Flow::Fse {
            RecipientKind::Amo
        } else {
            RecipientKind::Amc
        },
        subject,
        file_name,
    };
    Ok((meta, content))
}

impl Handler for LotRelay {
    async fn on_data(&self, session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        let _ = (session, envelope);
        let checked =
            lot_from_mail(&message, self.intake.max_lot_bytes).and_then(|(meta, content)| {
                crate::intake::MetaIn {
                    flow: meta.flow.as_str().into(),
                    env: meta.env.as_str().into(),
                    recipient: meta.recipient.as_str().into(),
                    subject: meta.subject,
                    name: Some(meta.file_name),
                }
                .check("lot")
                .map(|m| (m, content))
            });
        let result = match checked {
            Ok((meta, content)) => self.intake.accept(&meta, &content).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(a) => Reply::new(250, (2, 0, 0), format!("lot {} queued", a.lot_id)),
            Err(BillingError::NotALot { why }) => {
                tracing::warn!(reason = %why, "lot mail refused");
                Reply::new(554, (5, 6, 0), format!("not a lot: {why}"))
            }
            Err(e) => {
                tracing::error!(error = %e, "lot intake failed");
                Reply::new(451, (4, 3, 0), "the lot could not be stored; retry")
            }
        }
    }
}
