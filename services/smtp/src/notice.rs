//! Notices an applicative BAL acts on (EX_GBM_4430): a recipient's mailbox is full, or the
//! recipient is away. They arrive as ordinary mail: a delivery status notification
//! (RFC 3464 `multipart/report; report-type=delivery-status`) whose per-recipient `Status`
//! is `4.2.2` or `5.2.2` (RFC 3463 "mailbox full"), or an automatic reply (RFC 3834
//! `Auto-Submitted: auto-replied`, and the older `X-Autoreply` / `X-Autorespond` /
//! `Precedence: auto_reply` that many servers still send).
//!
//! Only the headers and the delivery-status part are read, within [`MAX_NOTICE_BYTES`]; the
//! body text of an auto-reply is never looked at (it may carry health data).

use mail_parser::{MessageParser, MimeHeaders as _, PartType};

/// Bytes of a message examined; a notice is small, a bigger message is not one.
pub const MAX_NOTICE_BYTES: usize = 256 * 1024;

/// What a received message tells an applicative BAL's sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A DSN reporting the recipient's mailbox full (`4.2.2` temporary, `5.2.2` permanent).
    MailboxFull {
        recipient: String,
        status: String,
        /// `Message-ID` of the message that could not be delivered, when the DSN has it.
        original_message_id: Option<String>,
    },
    /// An automatic reply (out of office).
    OutOfOffice {
        from: String,
        /// `In-Reply-To` of the reply: the message it answers.
        original_message_id: Option<String>,
    },
}

impl Notice {
    /// Short stable name for logs and storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MailboxFull { .. } => "mailbox-full",
            Self::OutOfOffice { .. } => "out-of-office",
        }
    }
}

/// Classifies a received message; `None` when it is not a notice (most mail).
pub fn classify(raw: &[u8]) -> Option<Notice> {
    if raw.len() > MAX_NOTICE_BYTES {
        return None;
    }
    let message = MessageParser::default().parse(raw)?;
    if let Some(notice) = mailbox_full(&message) {
        return Some(notice);
    }
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let auto_replied = header("Auto-Submitted").is_some_and(|v| v.starts_with("auto-replied"))
        || header("X-Autoreply").is_some_and(|v| v == "yes")
        || header("X-Autorespond").is_some()
        || header("Precedence").is_some_and(|v| v == "auto_reply");
    if !auto_replied {
        return None;
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_owned();
    Some(Notice::OutOfOffice {
        from,
        original_message_id: message.in_reply_to().as_text().map(str::to_owned),
    })
}

/// The first mailbox-full recipient of a delivery-status report.
fn mailbox_full(message: &mail_parser::Message<'_>) -> Option<Notice> {
    let content_type = message.content_type()?;
    let is_report = content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        && content_type
            .attribute("report-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"));
    if !is_report {
        return None;
    }
    let mut original_message_id = None;
    let mut status_fields = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let subtype = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                status_fields = Some(part_text(part));
            }
            ("message" | "text", "rfc822-headers" | "rfc822" | "global-headers") => {
                original_message_id = original_message_id.or_else(|| embedded_message_id(part));
            }
            _ => {}
        }
    }
    // Per-recipient groups are separated by blank lines; unfolded field lines suffice.
    let fields = status_fields?;
    for group in fields.replace("\r\n", "\n").split("\n\n") {
        let field = |name: &str| {
            group.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let Some(status) = field("Status") else {
            continue;
        };
        let code = status.split_whitespace().next().unwrap_or_default();
        if code == "5.2.2" || code == "4.2.2" {
            let recipient = field("Final-Recipient")
                .or_else(|| field("Original-Recipient"))
                .map(|r| {
                    r.split_once(';')
                        .map_or(r.as_str(), |(_, address)| address)
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            return Some(Notice::MailboxFull {
                recipient,
                status: code.to_owned(),
                original_message_id,
            });
        }
    }
    None
}

fn part_text(part: &mail_parser::MessagePart<'_>) -> String {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.to_string(),
        PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b).into_owned(),
        PartType::Message(m) => String::from_utf8_lossy(m.raw_message()).into_owned(),
        PartType::Multipart(_) => String::new(),
    }
}

/// `Message-ID` of the returned message or headers part.
fn embedded_message_id(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    if let PartType::Message(m) = &part.body {
        return m.message_id().map(str::to_owned);
    }
    MessageParser::default()
        .parse_headers(part_text(part).as_bytes())
        .and_then(|m| m.message_id().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsn(status: &str) -> String {
        format!(
            "From: MAILER-DAEMON@operateur.mssante.fr\r\nTo: labo.app@labo.mssante.fr\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n\
             --b1\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; mx.operateur.mssante.fr\r\n\r\n\
             Final-Recipient: rfc822; dr.plein@medecin.mssante.fr\r\n\
             Action: failed\r\nStatus: {status}\r\n\
             Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n\
             --b1\r\nContent-Type: text/rfc822-headers\r\n\r\n\
             From: labo.app@labo.mssante.fr\r\nMessage-ID: <resultat-42@labo.mssante.fr>\r\n\r\n\
             --b1--\r\n"
        )
    }

    #[test]
    fn ex_gbm_4430_dsn_with_mailbox_full_status_is_a_notice() {
        for status in ["5.2.2", "4.2.2"] {
            assert_eq!(
                classify(dsn(status).as_bytes()),
                Some(Notice::MailboxFull {
                    recipient: "dr.plein@medecin.mssante.fr".into(),
                    status: status.into(),
                    original_message_id: Some("resultat-42@labo.mssante.fr".into()),
                })
            );
        }
    }

    #[test]
    fn ex_gbm_4430_other_dsn_statuses_and_plain_mail_are_not_notices() {
        assert_eq!(classify(dsn("5.1.1").as_bytes()), None);
        let plain = "From: a@b.mssante.fr\r\nTo: c@d.mssante.fr\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(classify(plain.as_bytes()), None);
        assert_eq!(classify(b"\xff\xfe not a message"), None);
        let mut huge = dsn("5.2.2").into_bytes();
        huge.resize(MAX_NOTICE_BYTES + 1, b'x');
        assert_eq!(classify(&huge), None, "a big message is not examined");
    }

    #[test]
    fn ex_gbm_4430_auto_replies_are_out_of_office_notices() {
        for header in [
            "Auto-Submitted: auto-replied (vacation)",
            "X-Autoreply: yes",
            "Precedence: auto_reply",
        ] {
            let raw = format!(
                "From: Dr Absent <dr.absent@medecin.mssante.fr>\r\nTo: labo.app@labo.mssante.fr\r\n\
                 {header}\r\nIn-Reply-To: <resultat-7@labo.mssante.fr>\r\nSubject: Absence\r\n\r\n\
                 Je suis absent.\r\n"
            );
            assert_eq!(
                classify(raw.as_bytes()),
                Some(Notice::OutOfOffice {
                    from: "dr.absent@medecin.mssante.fr".into(),
                    original_message_id: Some("resultat-7@labo.mssante.fr".into()),
                }),
                "{header}"
            );
        }
        let auto_generated = "From: a@b.mssante.fr\r\nAuto-Submitted: auto-generated\r\n\r\nx\r\n";
        assert_eq!(classify(auto_generated.as_bytes()), None);
    }
}
