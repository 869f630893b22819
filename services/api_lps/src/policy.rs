//! What the listener checks before it accepts a message: MSSanté recipients (§4.8.1.3,
//! EX_GBM_4300), and the message's headers (X-MSS-*, Réf. #2 req. 2.3; Message-ID).

use std::fmt::Write as _;

use passerelle_smtp::Reply;
use sha2::{Digest, Sha256};

/// The one non-`mssante.fr` domain of the Espace de Confiance (EX_3.1_5010).
pub const APICRYPT_INTEROP: &str = "interop-mssante.apicrypt.org";
/// Largest header section accepted; beyond it the message is refused, not scanned.
pub const MAX_HEADER_SECTION: usize = 256 * 1024;
/// Longest `X-MSS-NIL` / `X-MSS-CODECDA` value (Ref #1 Tableau 46).
pub const MAX_MSS_VALUE: usize = 255;
/// Longest address accepted (RFC 5321 path limit).
pub const MAX_ADDRESS: usize = 254;

/// `true` for `*.mssante.fr` and `interop-mssante.apicrypt.org` (AC-05).
pub fn is_mssante_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    d.ends_with(".mssante.fr") || d == APICRYPT_INTEROP
}

/// Checks a recipient address: EX_GBM_4300 syntax, then an MSSanté domain. The refusal
/// names the reason; other recipients of the transaction are unaffected.
pub fn check_recipient(address: &str) -> Result<(), Reply> {
    let (local, domain) = split_address(address).ok_or_else(|| {
        Reply::new(
            553,
            (5, 1, 3),
            "Recipient address syntax not allowed (EX_GBM_4300)",
        )
    })?;
    let _ = local;
    if !is_mssante_domain(domain) {
        return Err(Reply::new(
            550,
            (5, 7, 1),
            "Recipient is not on an MSSanté domain (*.mssante.fr, interop-mssante.apicrypt.org; §4.8.1.3)",
        ));
    }
    Ok(())
}

/// Local part of alphanumerics and `. _ - +`, domain of LDH labels (EX_GBM_4300).
fn split_address(address: &str) -> Option<(&str, &str)> {
    if address.len() > MAX_ADDRESS {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    let domain_ok = !domain.is_empty()
        && domain.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    (local_ok && domain_ok).then_some((local, domain))
}

/// The message as it leaves for the operator, and its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    pub message_id: String,
    /// Some byte is 8-bit (body or UTF-8 header): sent with `BODY=8BITMIME`.
    pub eight_bit: bool,
}

fn refuse(text: &str) -> Reply {
    Reply::new(554, (5, 6, 0), text)
}

/// Rewrites the header section: `X-MSS-NIL` replaced by ours (Réf. #2 req. 2.3),
/// `X-MSS-MES`, `X-MSS-INS`, `X-MSS-CODECDA` kept when valid and refused otherwise (the
/// practice software learns of its mistake instead of the statistics being silently
/// wrong), a Message-ID and a Date added when missing (RFC 6409 §8). 8-bit header values
/// must be UTF-8 (RFC 6532).
pub fn prepare(message: &[u8], nil: &str, hostname: &str, now: i64) -> Result<Prepared, Reply> {
    let (head, body) = match find(message, b"\r\n\r\n") {
        Some(i) => (&message[..i + 2], &message[i + 2..]),
        None => (message, &b""[..]),
    };
    if head.len() > MAX_HEADER_SECTION {
        return Err(refuse("Header section too large"));
    }
    if std::str::from_utf8(head).is_err() {
        return Err(refuse(
            "Header section has 8-bit bytes that are not UTF-8 (RFC 6532)",
        ));
    }
    let fields = split_fields(head).ok_or_else(|| refuse("Malformed header section"))?;
    let mut kept: Vec<&[u8]> = Vec::with_capacity(fields.len());
    let mut message_id = None;
    let mut has_date = false;
    let (mut mes, mut ins, mut cda) = (0, 0, 0);
    for field in fields {
        let (name, value) = field_parts(field).ok_or_else(|| refuse("Malformed header field"))?;
        let value = unfold(value);
        match name.to_ascii_lowercase().as_str() {
            "x-mss-nil" => continue,
            "x-mss-mes" => {
                mes += 1;
                if value != "FIN" {
                    return Err(refuse("X-MSS-MES must be exactly FIN"));
                }
            }
            "x-mss-ins" => {
                ins += 1;
                if value != "O" && value != "N" {
                    return Err(refuse("X-MSS-INS must be O or N"));
                }
            }
            "x-mss-codecda" => {
                cda += 1;
                if !valid_codecda(&value) {
                    return Err(refuse(
                        "X-MSS-CODECDA must be comma-separated codes of [A-Za-z0-9._-], at most 255 characters, no ';'",
                    ));
                }
            }
            "message-id" => {
                if message_id.is_some() {
                    return Err(refuse("More than one Message-ID"));
                }
                if value.is_empty() || value.len() > 998 {
                    return Err(refuse("Malformed Message-ID"));
                }
                message_id = Some(value.clone());
            }
            "date" => has_date = true,
            _ => {}
        }
        kept.push(field);
    }
    if mes > 1 || ins > 1 || cda > 1 {
        return Err(refuse("An X-MSS header appears more than once"));
    }
    let mut out = Vec::with_capacity(message.len() + 256);
    out.extend_from_slice(format!("X-MSS-NIL: {nil}\r\n").as_bytes());
    let message_id = if let Some(id) = message_id {
        id
    } else {
        let id = format!("<{:032x}@{hostname}>", fastrand::u128(..));
        out.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
        id
    };
    if !has_date {
        out.extend_from_slice(format!("Date: {}\r\n", rfc2822(now)).as_bytes());
    }
    for field in kept {
        out.extend_from_slice(field);
    }
    out.extend_from_slice(body);
    let eight_bit = out.iter().any(|&b| b >= 0x80);
    Ok(Prepared {
        message: out,
        message_id,
        eight_bit,
    })
}

/// The value of the NIL itself must fit the header (Tableau 46).
pub fn valid_nil(nil: &str) -> bool {
    !nil.is_empty() && nil.len() <= MAX_MSS_VALUE && nil.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn valid_codecda(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_MSS_VALUE
        && value.split(',').all(|code| {
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The outbox idempotency key: BAL, Message-ID and the recipient set (a client that
/// splits a large recipient list into several transactions keeps one Message-ID).
pub fn idempotency_key(bal: &str, message_id: &str, recipients: &[String]) -> String {
    let mut sorted: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    sorted.sort();
    let digest = Sha256::digest(sorted.join("\n").as_bytes());
    let short = digest[..8].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let id: String = message_id.chars().take(900).collect();
    format!("{bal}|{id}|{short}")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Header fields with their continuation lines, each ending in CRLF.
fn split_fields(head: &[u8]) -> Option<Vec<&[u8]>> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end = find(&head[i..], b"\r\n").map_or(head.len(), |p| i + p + 2);
        let line = &head[i..end];
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if continuation {
            if fields.is_empty() && start == i {
                return None;
            }
        } else if i > start {
            fields.push(&head[start..i]);
            start = i;
        }
        i = end;
    }
    if i > start {
        fields.push(&head[start..i]);
    }
    Some(fields)
}

fn field_parts(field: &[u8]) -> Option<(String, &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = &field[..colon];
    if name.is_empty() || !name.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return None;
    }
    Some((
        String::from_utf8_lossy(name).into_owned(),
        &field[colon + 1..],
    ))
}

fn unfold(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .replace("\r\n", "")
        .trim()
        .to_owned()
}

/// RFC 5322 date in UTC (`Mon, 23 Nov 2026 16:24:22 +0000`).
pub fn rfc2822(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mssante_domains() {
        assert!(is_mssante_domain("medecin.mssante.fr"));
        assert!(is_mssante_domain("patient.MSSANTE.fr."));
        assert!(is_mssante_domain(APICRYPT_INTEROP));
        assert!(!is_mssante_domain("mssante.fr.evil.com"));
        assert!(!is_mssante_domain("gmail.com"));
        assert!(!is_mssante_domain("apicrypt.org"));
    }

    #[test]
    fn ex_gbm_4300_address_syntax() {
        assert!(check_recipient("jean.dupond+x_y-z@medecin.mssante.fr").is_ok());
        let r = check_recipient("jean dupond@medecin.mssante.fr").expect_err("must fail");
        assert_eq!(r.enhanced, Some((5, 1, 3)));
        assert!(check_recipient("jean\"@medecin.mssante.fr").is_err());
        let r = check_recipient("a@example.com").expect_err("must fail");
        assert_eq!((r.code, r.enhanced), (550, Some((5, 7, 1))));
    }

    #[test]
    fn nil_replaced_message_id_and_date_added() {
        let msg = b"From: a@b.mssante.fr\r\nX-MSS-NIL: forged\r\nSubject: caf\xc3\xa9\r\n folded\r\n\r\nbody\r\n";
        let p = prepare(msg, "ANO/S01/1.0", "gw.test", 0).expect("must succeed");
        let text = String::from_utf8(p.message.clone()).expect("must succeed");
        assert!(text.starts_with("X-MSS-NIL: ANO/S01/1.0\r\nMessage-ID: <"));
        assert!(!text.contains("forged"));
        assert!(text.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        assert!(text.contains("Subject: caf\u{e9}\r\n folded\r\n\r\nbody\r\n"));
        assert!(p.eight_bit);
        assert!(p.message_id.ends_with("@gw.test>"));
    }

    #[test]
    fn x_mss_headers_validated() {
        let ok = b"Message-ID: <1@x>\r\nX-MSS-MES: FIN\r\nX-MSS-INS: O\r\nX-MSS-CODECDA: PRESC-BIO,15508-5\r\n\r\nb";
        let p = prepare(ok, "NIL", "h", 0).expect("must succeed");
        assert_eq!(p.message_id, "<1@x>");
        let text = String::from_utf8(p.message).expect("must succeed");
        assert!(text.contains("X-MSS-CODECDA: PRESC-BIO,15508-5\r\n"));
        for bad in [
            &b"X-MSS-MES: fin\r\n\r\n"[..],
            b"X-MSS-INS: yes\r\n\r\n",
            b"X-MSS-CODECDA: 34112-3;x\r\n\r\n",
            b"X-MSS-INS: O\r\nX-MSS-INS: N\r\n\r\n",
            b"Subject: \xff\xfe\r\n\r\n",
        ] {
            let r = prepare(bad, "NIL", "h", 0).expect_err("must fail");
            assert_eq!(r.enhanced, Some((5, 6, 0)), "{r:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(1_795_451_062), "Mon, 23 Nov 2026 16:24:22 +0000");
    }

    #[test]
    fn keys_depend_on_recipient_set_not_order() {
        let a = idempotency_key(
            "b",
            "<1@x>",
            &["x@a.mssante.fr".into(), "y@a.mssante.fr".into()],
        );
        let b = idempotency_key(
            "b",
            "<1@x>",
            &["y@a.mssante.fr".into(), "X@a.mssante.fr".into()],
        );
        let c = idempotency_key("b", "<1@x>", &["z@a.mssante.fr".into()]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
