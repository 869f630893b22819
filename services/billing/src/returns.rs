//! Returns from the caisse: ARL, RSP (NOEMIE) and service messages, read from the billing
//! mailbox over POP3 with STLS, all unencrypted (A4 §1).
//!
//! What is in our sources and what is not (digest §3.3, §8 #4, #11, #23): the codes and the
//! required actions of service messages 4005/4015/4025 are; their layout, the ARL/NOEMIE
//! format and the ARL positive/negative semantics are not. So parsing is tolerant and the
//! choices are documented here:
//! - **Kind** by the attachment's `Content-Description` (`ARL…/NOEMIE[/Z]` → ARL, `RSP…` →
//!   RSP; test/demo variants included); otherwise a service message when a code
//!   (`4005`, `4015`, `4025`) stands as a word in the Subject or the text; `multipart/report`
//!   is a DSN.
//! - **ARL content**: gunzipped when gzip (`/Z`), then it must start with a NOEMIE `000`
//!   header (anchors §1.3); otherwise it is a corrupt ARL. **Polarity**: negative when the
//!   ARL or its Subject says `NEGATIF` or `REJET` (public practice: a negative ARL asks for
//!   the file to be sent again), positive otherwise.
//! - **Matching** (digest §8 #11): the `In-Reply-To`/`References` Message-IDs, and any
//!   `<…@…>` quoted in the text, against the Message-ID of the lot's last send; else the
//!   lot's Subject reference quoted in the return. A reference to an older send of a lot
//!   that was sent again since matches nothing: no action (digest §7 case 31, 34).
//! - **Actions**: ARL positive → `acknowledged` (a duplicate changes nothing); negative →
//!   `rejected`, flagged for resend; 4005 and 4025 → the same content back to `received`
//!   and queued again (re-encrypted at send time) plus a certificate refresh; 4015 → a
//!   refresh, no resend; RSP → written for the LPS into the returns folder; a DSN →
//!   `rejected` (non-delivery). A corrupt ARL, an encrypted return or an unexpected MIME
//!   layout leaves the lot's state alone and records the problem on it.
//! - **Nothing lost**: every return is first written raw, durably, to `raw/`; the mail is
//!   deleted from the mailbox only after that and after its effect committed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use passerelle_sesam::{Directory, RecipientCertificates};
use passerelle_trust::TrustStore;
use rustls_pki_types::{ServerName, UnixTime};

use crate::error::BillingError;
use crate::intake::Intake;
use crate::lots::{Lot, LotState};
use crate::pop3::Pop3Client;

/// What a return mail is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReturnKind {
    Arl {
        positive: bool,
    },
    Rsp,
    /// A service message with its code (4005, 4015, 4025; 4000/4010/4020 are the old
    /// transport-encryption codes, kept for the log).
    Service {
        code: u16,
    },
    Dsn,
    /// Not one of the above, or unusable; the reason.
    Problem(String),
}

/// A return mail, classified.
#[derive(Clone, Debug)]
pub struct Classified {
    pub kind: ReturnKind,
    /// Message-IDs it refers to.
    pub refs: Vec<String>,
    /// Subject and text, to find a lot's Subject reference in.
    pub text: String,
    /// The NOEMIE file (ARL, RSP), decompressed.
    pub file: Option<Vec<u8>>,
    pub content_description: Option<String>,
}

/// Largest decompressed NOEMIE file.
const MAX_NOEMIE: u64 = 16 << 20;
/// Most MIME parts in a return (ARL/RSP mails carry one file).
const MAX_PARTS: usize = 16;
/// Most characters of text kept for matching.
const MAX_TEXT: usize = 64 * 1024;

fn service_code(text: &str) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|c| matches!(c, 4000 | 4005 | 4010 | 4015 | 4020 | 4025))
}

fn message_ids(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let candidate = &rest[start..=start + len];
        if candidate.contains('@') && !candidate.contains(char::is_whitespace) && len < 250 {
            out.push(candidate.to_owned());
        }
        rest = &rest[start + len + 1..];
        if out.len() > 32 {
            break;
        }
    }
}

fn gunzip_if_needed(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_NOEMIE + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip: {e}"))?;
    if out.len() as u64 > MAX_NOEMIE {
        return Err(format!("above {MAX_NOEMIE} bytes decompressed"));
    }
    Ok(out)
}

/// The one NOEMIE file of a return: its kind and content, decompressed.
fn classify_file(
    desc: &str,
    part: &mail_parser::MessagePart<'_>,
    subject: &str,
) -> (ReturnKind, Option<Vec<u8>>) {
    let ptype = part
        .content_type()
        .map(|t| t.subtype().unwrap_or("").to_ascii_lowercase())
        .unwrap_or_default();
    if ptype.contains("pkcs7") || desc.ends_with("/K") || desc.ends_with("/ZK") {
        let why = format!("encrypted return ({desc}): returns are expected unencrypted");
        return (ReturnKind::Problem(why), None);
    }
    let is_arl = desc.starts_with("ARL");
    if !is_arl && !desc.starts_with("RSP") {
        return (
            ReturnKind::Problem(format!("unknown Content-Description {desc:?}")),
            None,
        );
    }
    let file = match gunzip_if_needed(part.contents()) {
        Ok(f) => f,
        Err(why) => return (ReturnKind::Problem(format!("corrupt {desc}: {why}")), None),
    };
    if !file.trim_ascii_start().starts_with(b"000") {
        let why = format!("corrupt {desc}: no NOEMIE `000` header");
        return (ReturnKind::Problem(why), None);
    }
    let kind = if is_arl {
        let upper = format!("{}\n{}", String::from_utf8_lossy(&file), subject).to_ascii_uppercase();
        ReturnKind::Arl {
            positive: !(upper.contains("NEGATIF") || upper.contains("REJET")),
        }
    } else {
        ReturnKind::Rsp
    };
    (kind, Some(file))
}

/// Classify a return mail (see the module doc).
pub fn classify(raw: &[u8]) -> Classified {
    let mut c = Classified {
        kind: ReturnKind::Problem("unparsable mail".into()),
        refs: Vec::new(),
        text: String::new(),
        file: None,
        content_description: None,
    };
    let Some(msg) = MessageParser::default().parse(raw) else {
        return c;
    };
    let subject = msg.subject().unwrap_or_default().to_owned();
    for h in [msg.in_reply_to(), msg.references()] {
        for id in h.as_text_list().unwrap_or_default() {
            c.refs.push(format!("<{id}>"));
        }
    }
    let mut text = subject.clone();
    for i in 0..msg.text_body_count().min(4) {
        if let Some(t) = msg.body_text(i) {
            text.push('\n');
            text.push_str(&t);
        }
    }
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    message_ids(&text, &mut c.refs);
    c.text = text;
    if msg.parts.len() > MAX_PARTS {
        c.kind = ReturnKind::Problem(format!("unexpected MIME layout: {} parts", msg.parts.len()));
        return c;
    }
    let root_type = msg
        .content_type()
        .map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or("")).to_ascii_lowercase())
        .unwrap_or_default();
    if root_type == "multipart/report" {
        c.kind = ReturnKind::Dsn;
        // The original's headers are in the report's third part.
        for part in &msg.parts {
            if let Some(body) = part.text_contents() {
                message_ids(body, &mut c.refs);
            } else if let mail_parser::PartType::Message(m) = &part.body
                && let Some(id) = m.message_id()
            {
                c.refs.push(format!("<{id}>"));
            }
        }
        return c;
    }
    // The NOEMIE files: parts carrying a Content-Description (the root when single-part).
    let described: Vec<_> = msg
        .parts
        .iter()
        .filter_map(|p| {
            p.content_description()
                .map(|d| (d.trim().to_ascii_uppercase(), p))
        })
        .collect();
    match described.as_slice() {
        [] => {}
        [(desc, part)] => {
            c.content_description = Some(desc.clone());
            let (kind, file) = classify_file(desc, part, &subject);
            c.kind = kind;
            c.file = file;
            return c;
        }
        more => {
            c.kind = ReturnKind::Problem(format!(
                "unexpected MIME layout: {} files in one return",
                more.len()
            ));
            return c;
        }
    }
    c.kind = match service_code(&c.text) {
        Some(code) => ReturnKind::Service { code },
        None => ReturnKind::Problem("neither ARL, RSP, service message nor DSN".into()),
    };
    c
}

/// The billing mailbox over POP3.
#[derive(Clone, Debug)]
pub struct Pop3Route {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub password: String,
    pub timeout: Duration,
}

use std::net::SocketAddr;

/// The returns processor.
#[derive(Clone, Debug)]
pub struct Returns {
    pub intake: Intake,
    pub certs: Arc<Mutex<RecipientCertificates>>,
    pub trust: Arc<TrustStore>,
    /// Where certificates are refreshed from on 4005/4015/4025 (none: logged only).
    pub directory: Option<Directory>,
    /// Every return, raw, before anything is done with it.
    pub raw_dir: PathBuf,
    /// RSP/NOEMIE files for the LPS (atomic: written then renamed).
    pub lps_out_dir: PathBuf,
    /// Largest return mail read.
    pub max_mail_bytes: usize,
}

/// What handling a return did, for the log and the tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub kind: ReturnKind,
    pub lot: Option<crate::lot_file::LotId>,
    /// The lot's state changed.
    pub changed: bool,
}

impl Returns {
    /// Read the billing mailbox once: every mail is kept raw, handled, then deleted.
    pub async fn poll_pop3(&self, route: &Pop3Route) -> Result<Vec<Handled>, BillingError> {
        let pop = |e: crate::pop3::Pop3Error| BillingError::Returns(e.to_string());
        let client = Pop3Client::connect(route.addr, route.timeout)
            .await
            .map_err(pop)?;
        let mut client = client
            .stls(route.tls.clone(), route.server_name.clone())
            .await
            .map_err(pop)?;
        client
            .login(&route.user, &route.password)
            .await
            .map_err(pop)?;
        let mut out = Vec::new();
        for (n, uid) in client.uidl().await.map_err(pop)? {
            let raw = client.retr(n, self.max_mail_bytes).await.map_err(pop)?;
            out.push(self.handle(&uid, &raw).await?);
            client.dele(n).await.map_err(pop)?;
        }
        client.quit().await.map_err(pop)?;
        Ok(out)
    }

    /// Keep `raw` under `uid`, classify it, match it to a lot, act.
    pub async fn handle(&self, uid: &str, raw: &[u8]) -> Result<Handled, BillingError> {
        let name: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .take(100)
            .collect();
        let name = format!("{}-{name}.eml", crate::lot_file::LotId::of(raw));
        let (dir, raw_owned, kept) = (self.raw_dir.clone(), raw.to_vec(), name.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(BillingError::io(&dir))?;
            crate::lots::write_durably(&dir, &kept, &raw_owned)
        })
        .await
        .map_err(|e| BillingError::Returns(format!("keeping the return: {e}")))??;

        let c = classify(raw);
        let lot = self.find_lot(&c).await?;
        let store = &self.intake.store;
        let mut changed = false;
        match (&c.kind, &lot) {
            (ReturnKind::Rsp, _) => {
                self.hand_to_lps(uid, c.file.as_deref().unwrap_or_default(), &c)
                    .await?;
            }
            (_, None) => {
                tracing::warn!(kind = ?c.kind, "return matches no open lot; kept raw, no action");
            }
            (ReturnKind::Arl { positive: true }, Some(l)) => {
                store.record_arl(&l.id, true, &name).await?;
                changed = self
                    .move_to(l, LotState::Acknowledged, "positive ARL")
                    .await?;
            }
            (ReturnKind::Arl { positive: false }, Some(l)) => {
                store.record_arl(&l.id, false, &name).await?;
                changed = self
                    .move_to(
                        l,
                        LotState::Rejected,
                        "negative ARL: to be sent again (flagged for resend)",
                    )
                    .await?;
            }
            (
                ReturnKind::Service {
                    code: code @ (4005 | 4025),
                },
                Some(l),
            ) => {
                changed = self.resend_for_service(l, *code).await?;
            }
            (ReturnKind::Service { code: 4015 }, Some(l)) => {
                self.refresh_certificate(l).await;
                store
                    .note(&l.id, "service message 4015 (certificate obsolete): certificate refreshed, no resend")
                    .await?;
            }
            (ReturnKind::Service { code }, Some(l)) => {
                store
                    .note(
                        &l.id,
                        &format!(
                            "service message {code}: not an attachment-encryption code; no action"
                        ),
                    )
                    .await?;
            }
            (ReturnKind::Dsn, Some(l)) => {
                changed = self
                    .move_to(
                        l,
                        LotState::Rejected,
                        "non-delivery notice (DSN): to be sent again",
                    )
                    .await?;
            }
            (ReturnKind::Problem(why), Some(l)) => {
                store
                    .note(&l.id, &format!("return not usable: {why}"))
                    .await?;
            }
        }
        if let Some(l) = &lot {
            self.forward_to_practice(&l.id, &name, raw).await?;
        }
        tracing::info!(kind = ?c.kind, lot = ?lot.as_ref().map(|l| l.id.to_string()), changed, "return handled");
        Ok(Handled {
            kind: c.kind,
            lot: lot.map(|l| l.id),
            changed,
        })
    }

    /// OCT profile: a return about a practice's lot goes back to the practice (queued; the
    /// sender mails it). The raw return's name is the queue key: handled twice, sent once.
    async fn forward_to_practice(
        &self,
        id: &crate::lot_file::LotId,
        kept_as: &str,
        raw: &[u8],
    ) -> Result<(), BillingError> {
        let Some(origin) = self.intake.store.origin(id).await? else {
            return Ok(());
        };
        let header = |v: &str| v.replace(['\r', '\n'], " ");
        let mut payload = format!("{}\n", header(&origin.return_to)).into_bytes();
        payload.extend_from_slice(
            format!(
                "X-Passerelle-Lot: {id}\r\nX-Passerelle-Practice-Message-ID: {}\r\n",
                header(&origin.message_id)
            )
            .as_bytes(),
        );
        payload.extend_from_slice(raw);
        self.intake
            .queue
            .enqueue(passerelle_queue::NewItem::new(
                crate::oct::OCT_RETURN_KIND,
                format!("{kept_as}>{}", origin.practice),
                payload,
            ))
            .await?;
        tracing::info!(lot = %id, practice = %origin.practice, "return queued for the practice");
        Ok(())
    }

    /// 4005 and 4025: a fresh certificate, then the same content back to `received` and
    /// queued again (a new round).
    async fn resend_for_service(&self, lot: &Lot, code: u16) -> Result<bool, BillingError> {
        self.refresh_certificate(lot).await;
        let why = if code == 4005 {
            "service message 4005 (encrypted attachment in error): resending the same content re-encrypted"
        } else {
            "service message 4025 (attachment not encrypted): resending the same content encrypted"
        };
        let from = [LotState::Sent, LotState::Overdue, LotState::Rejected];
        match self.intake.store.reopen(&lot.id, &from, why).await? {
            Ok(round) => {
                self.intake.enqueue(&lot.id, round).await?;
                Ok(true)
            }
            Err(state) => {
                tracing::warn!(lot = %lot.id, state = %state, "service message for a lot in a state it does not apply to; no action");
                Ok(false)
            }
        }
    }

    /// A transition driven by a return: refused transitions (a closed lot) are logged, not
    /// errors, since returns are outside data.
    async fn move_to(&self, lot: &Lot, to: LotState, why: &str) -> Result<bool, BillingError> {
        match self.intake.store.transition(&lot.id, to, why).await {
            Ok(prev) => Ok(prev.is_some()),
            Err(BillingError::Transition { from, .. }) => {
                tracing::warn!(lot = %lot.id, from, to = %to, "return for a lot in a state it does not apply to; no action");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn find_lot(&self, c: &Classified) -> Result<Option<Lot>, BillingError> {
        let store = &self.intake.store;
        for r in &c.refs {
            if let Some(lot) = store.by_message_id(r).await? {
                return Ok(Some(lot));
            }
        }
        if !c.refs.is_empty() {
            // It names sends, none current: an older send of a lot resent since, or not ours.
            return Ok(None);
        }
        for state in [LotState::Sent, LotState::Overdue, LotState::Rejected] {
            for lot in store.list(Some(state)).await? {
                if lot.meta.subject.len() >= 8 && c.text.contains(&lot.meta.subject) {
                    return Ok(Some(lot));
                }
            }
        }
        Ok(None)
    }

    /// 4005/4015/4025 ask for a fresh certificate (A4 §6.3.2).
    async fn refresh_certificate(&self, lot: &Lot) {
        let (flow, env) = (lot.meta.flow, lot.meta.env);
        let Some(directory) = &self.directory else {
            tracing::warn!(
                flow = flow.as_str(),
                env = env.as_str(),
                "certificate refresh asked by a service message; no directory configured"
            );
            return;
        };
        let candidates = match directory.fetch_certificates(flow, env).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "certificate refresh failed; sending stays on the stored certificate");
                return;
            }
        };
        let Ok(mut certs) = self.certs.lock() else {
            return;
        };
        if let Err(e) = certs.offer(&self.trust, &candidates, flow, env, UnixTime::now()) {
            tracing::warn!(error = %e, "no valid certificate in the directory");
        }
    }

    async fn hand_to_lps(
        &self,
        uid: &str,
        file: &[u8],
        c: &Classified,
    ) -> Result<(), BillingError> {
        let desc = c
            .content_description
            .as_deref()
            .unwrap_or("RSP")
            .replace('/', "_");
        let name = format!(
            "{desc}-{}.noemie",
            crate::lot_file::LotId::of(uid.as_bytes())
        );
        let (dir, file) = (self.lps_out_dir.clone(), file.to_vec());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(BillingError::io(&dir))?;
            crate::lots::write_durably(&dir, &name, &file)
        })
        .await
        .map_err(|e| BillingError::Returns(format!("handing the RSP to the LPS: {e}")))?
    }
}
