//! RFC 3464 delivery status notifications, built with `mail-builder`: a
//! `multipart/report; report-type=delivery-status` with a French and English explanation,
//! the `message/delivery-status` fields per recipient and the original headers
//! (`text/rfc822-headers`, RFC 6522) — never the original body, which may be health data.

use std::fmt::Write as _;

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

use crate::Reply;

/// Original headers kept in a DSN at most (a bounded copy of outside data).
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// RFC 3464 §2.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Permanent failure: the message is given up for this recipient.
    Failed,
    /// Temporary failure: still being retried.
    Delayed,
}

/// One recipient's line in the report.
#[derive(Debug, Clone)]
pub struct DsnRecipient {
    pub address: String,
    pub action: DsnAction,
    /// The remote server's reply, when there was one (`Diagnostic-Code: smtp; …`).
    pub reply: Option<Reply>,
    /// Status when there is no reply (local refusal, e.g. `5.7.1` not on the liste blanche).
    pub status: Option<(u8, u16, u16)>,
    /// The server that answered (`Remote-MTA: dns; …`).
    pub remote_mta: Option<String>,
    /// A short reason for the human-readable part when there is no reply.
    pub reason: Option<String>,
}

impl DsnRecipient {
    fn status(&self) -> (u8, u16, u16) {
        let default = match self.action {
            DsnAction::Failed => (5, 0, 0),
            DsnAction::Delayed => (4, 0, 0),
        };
        self.reply
            .as_ref()
            .and_then(|r| r.enhanced)
            .or(self.status)
            .unwrap_or(default)
    }

    fn explanation(&self) -> String {
        match (&self.reply, &self.reason) {
            (Some(r), _) => one_line(&r.to_string()),
            (None, Some(reason)) => one_line(reason),
            (None, None) => {
                let (c, s, d) = self.status();
                format!("{c}.{s}.{d}")
            }
        }
    }
}

/// Everything a DSN says.
#[derive(Debug, Clone)]
pub struct Dsn<'a> {
    /// Our host name (`Reporting-MTA: dns; …`).
    pub reporting_mta: &'a str,
    /// The DSN's `From:` (e.g. `MAILER-DAEMON@<host>`).
    pub from: &'a str,
    /// The original envelope sender; a DSN is never sent to the null sender.
    pub to: &'a str,
    /// `Message-ID` of the DSN, without brackets.
    pub message_id: &'a str,
    /// Unix time of the report.
    pub date: i64,
    /// The original message (only its header section is copied).
    pub original: &'a [u8],
    pub recipients: Vec<DsnRecipient>,
}

/// Builds the DSN message (CRLF line ends). `None` when there is nobody to tell:
/// null sender (RFC 5321 §4.5.5, no DSN loops) or no recipient.
pub fn build_dsn(dsn: &Dsn<'_>) -> Option<Vec<u8>> {
    if dsn.to.is_empty() || dsn.recipients.is_empty() {
        return None;
    }
    let all_delayed = dsn
        .recipients
        .iter()
        .all(|r| r.action == DsnAction::Delayed);
    let subject = if all_delayed {
        "Remise retardée / Delayed Mail (still being retried)"
    } else {
        "Échec de remise / Undelivered Mail Returned to Sender"
    };
    let headers = original_headers(dsn.original);
    let eight_bit = !headers.is_ascii();
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                human_text(dsn, all_delayed),
            ),
            // RFC 3464 fields are 7-bit by construction (see `one_line`): sent as is.
            MimePart::new(
                ContentType::new("message/delivery-status"),
                BodyPart::Text(status_fields(dsn).into()),
            )
            .transfer_encoding("7bit"),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                BodyPart::Binary(headers.into()),
            )
            .transfer_encoding(if eight_bit { "8bit" } else { "7bit" }),
        ]),
    );
    MessageBuilder::new()
        .from(dsn.from)
        .to(dsn.to)
        .subject(subject)
        .message_id(dsn.message_id)
        .date(dsn.date)
        // RFC 3834: no automatic answer to this one.
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(body)
        .write_to_vec()
        .ok()
}

fn human_text(dsn: &Dsn<'_>, all_delayed: bool) -> String {
    let mut t = String::new();
    let list = |t: &mut String| {
        for r in &dsn.recipients {
            let _ = write!(t, "  <{}> : {}\r\n", one_line(&r.address), r.explanation());
        }
    };
    let _ = write!(
        t,
        "Ceci est le système de messagerie de {}.\r\n\r\n",
        dsn.reporting_mta
    );
    if all_delayed {
        t.push_str(
            "Votre message n'a pas encore pu être remis aux destinataires suivants ;\r\n\
             de nouvelles tentatives sont en cours, rien n'est à refaire pour l'instant :\r\n\r\n",
        );
    } else {
        t.push_str("Votre message n'a pas pu être remis aux destinataires suivants :\r\n\r\n");
    }
    list(&mut t);
    let _ = write!(
        t,
        "\r\n--\r\n\r\nThis is the mail system at {}.\r\n\r\n",
        dsn.reporting_mta
    );
    if all_delayed {
        t.push_str(
            "Your message could not be delivered yet to the recipients below;\r\n\
             delivery is still being retried, nothing to do for now:\r\n\r\n",
        );
    } else {
        t.push_str("Your message could not be delivered to the recipients below:\r\n\r\n");
    }
    list(&mut t);
    t.push_str(
        "\r\nLe contenu du message n'est pas joint. / The message content is not attached.\r\n",
    );
    t
}

fn status_fields(dsn: &Dsn<'_>) -> String {
    let mut t = format!("Reporting-MTA: dns; {}\r\n", one_line(dsn.reporting_mta));
    for r in &dsn.recipients {
        let (c, s, d) = r.status();
        let action = match r.action {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
        };
        let _ = write!(
            t,
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {c}.{s}.{d}\r\n",
            one_line(&r.address)
        );
        if let Some(mta) = &r.remote_mta {
            let _ = write!(t, "Remote-MTA: dns; {}\r\n", one_line(mta));
        }
        if let Some(reply) = &r.reply {
            let mut text = format!("{} ", reply.code);
            if let Some(e) = reply.enhanced_text() {
                text.push_str(&e);
                text.push(' ');
            }
            text.push_str(&reply.text);
            let _ = write!(
                t,
                "Diagnostic-Code: smtp; {}\r\n",
                one_line(text.trim_end())
            );
        }
    }
    t
}

/// A header-safe single line: no line breaks or controls, 7-bit, bounded.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(char::is_ascii)
        .take(900)
        .collect()
}

/// The header section of `message` (up to the first empty line), bounded on a line
/// boundary, CRLF line ends.
fn original_headers(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || out.len() + line.len() + 2 > MAX_ORIGINAL_HEADERS {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_stop_at_the_body_and_at_the_bound() {
        assert_eq!(
            original_headers(b"A: 1\nB: 2\n\nbody\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        let huge = "X: y\r\n".repeat(20_000);
        assert!(original_headers(huge.as_bytes()).len() <= MAX_ORIGINAL_HEADERS);
    }

    #[test]
    fn no_dsn_to_the_null_sender() {
        let dsn = Dsn {
            reporting_mta: "gw.test",
            from: "MAILER-DAEMON@gw.test",
            to: "",
            message_id: "x@gw.test",
            date: 0,
            original: b"",
            recipients: vec![DsnRecipient {
                address: "a@b".into(),
                action: DsnAction::Failed,
                reply: None,
                status: None,
                remote_mta: None,
                reason: None,
            }],
        };
        assert!(build_dsn(&dsn).is_none());
    }
}
