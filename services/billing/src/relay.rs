//! Lot intake (a): the LPS mails the lot as it would to the caisse, to passerelle's LAN
//! SMTP relay ([`passerelle_smtp::serve`] with this [`Handler`]). The lot is the one file
//! of the mail; its `Content-Description` (`FSE/B2`, `FSETEST/B2`, `DRE/DR`, `…/Z` when the
//! LPS gzipped it) gives the flow and the environment, the Subject is the Formater_Lot
//! reference. `250` carries the lot id and is sent only after [`Intake::accept`] — the lot is
//! durable; input that is not a lot gets `554 5.6.0` with the reason, storage trouble
//! `451 4.3.0` (the LPS retries; same content, same lot).

use std::io::Read;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};
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

/// The one lot file of a practice's lot mail and what its `Content-Description` says; shared
/// by this relay and the OCT intake, which receive the same mails (plain or encrypted).
pub(crate) struct LotPart<'m> {
    pub(crate) part: &'m MessagePart<'m>,
    /// Upper case, trimmed (`FSE/B2/Z`, `DRETEST/DR/K`…).
    pub(crate) desc: String,
    pub(crate) flow: Flow,
    pub(crate) env: Env,
    pub(crate) compressed: bool,
    pub(crate) subject: String,
}

impl<'m> LotPart<'m> {
    /// The only part with a `Content-Description`, naming an FSE or DRE lot.
    pub(crate) fn find(msg: &'m Message<'m>) -> Result<Self, String> {
        let files: Vec<_> = msg
            .parts
            .iter()
            .filter(|p| p.content_description().is_some())
            .collect();
        let [part] = files.as_slice() else {
            return Err(format!(
                "expected one lot file with a Content-Description, found {}",
                files.len()
            ));
        };
        let raw = part.content_description().unwrap_or_default();
        let (flow, env, compressed) = flow_env(raw)
            .ok_or_else(|| format!("Content-Description {raw:?} is not an FSE or DRE lot"))?;
        Ok(Self {
            part,
            desc: raw.trim().to_ascii_uppercase(),
            flow,
            env,
            compressed,
            subject: msg.subject().unwrap_or_default().trim().to_owned(),
        })
    }

    /// The attachment's name without the transport suffixes.
    pub(crate) fn file_name(&self) -> String {
        self.part
            .attachment_name()
            .unwrap_or("lot")
            .trim_end_matches(".pkcs7")
            .trim_end_matches(".gz")
            .to_owned()
    }
}

/// Gunzips a lot, refusing more than `max` bytes of output.
pub(crate) fn gunzip(content: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(content)
        .take(max + 1)
        .read_to_end(&mut plain)
        .map_err(|e| format!("bad gzip: {e}"))?;
    Ok(plain)
}

/// The lot and its metadata from the LPS's mail.
fn lot_from_mail(raw: &[u8], max: u64) -> Result<(LotMeta, Vec<u8>), BillingError> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| refuse("unparsable mail"))?;
    let lot = LotPart::find(&msg).map_err(refuse)?;
    if lot.desc.ends_with('K') {
        return Err(refuse(
            "the lot is already encrypted; hand over the plain lot",
        ));
    }
    let mut content = lot.part.contents().to_vec();
    if lot.compressed || content.starts_with(&[0x1f, 0x8b]) {
        content = gunzip(&content, max).map_err(refuse)?;
    }
    let meta = LotMeta {
        flow: lot.flow,
        env: lot.env,
        recipient: if lot.flow == Flow::Fse {
            RecipientKind::Amo
        } else {
            RecipientKind::Amc
        },
        file_name: lot.file_name(),
        subject: lot.subject,
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
