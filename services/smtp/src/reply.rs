//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes (RFC 2034).

use std::fmt;
use std::fmt::Write as _;

/// One SMTP reply: a three-digit code, an optional enhanced status code and text
/// (several lines joined by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic reply code (`250`, `452`, `550`, …).
    pub code: u16,
    /// Enhanced status code `class.subject.detail` (`(5, 7, 1)` for `5.7.1`).
    pub enhanced: Option<(u8, u16, u16)>,
    /// Human-readable text; lines separated by `\n`.
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (banners, `354`, `334`).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// `2xx` / `3xx`.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `4xx`: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// `5xx`: do not retry as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced code as text (`5.7.1`), if any.
    pub fn enhanced_text(&self) -> Option<String> {
        self.enhanced.map(|(c, s, d)| format!("{c}.{s}.{d}"))
    }

    /// The reply on the wire: one line per text line, `-` continuation, CRLF endings.
    /// Control characters in the text are replaced so a handler's text can never forge
    /// extra reply lines.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.split('\n').collect()
        };
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(out, "{}{sep}", self.code);
            if let Some(e) = self.enhanced_text() {
                out.push_str(&e);
                if !line.is_empty() {
                    out.push(' ');
                }
            }
            out.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
            out.push_str("\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced_text() {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text.replace('\n', " / "))?;
        }
        Ok(())
    }
}

/// Parses `d.d{1,3}.d{1,3} ` at the start of a reply line whose class matches `code`.
pub(crate) fn split_enhanced(code: u16, line: &str) -> (Option<(u8, u16, u16)>, &str) {
    let (head, rest) = match line.split_once(' ') {
        Some((h, r)) => (h, r),
        None => (line, ""),
    };
    let mut parts = head.split('.');
    let parsed = (|| {
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || u16::from(class) != code / 100 || subject > 999 || detail > 999
        {
            return None;
        }
        Some((class, subject, detail))
    })();
    match parsed {
        Some(e) => (Some(e), rest),
        None => (None, line),
    }
}

/// Accumulates reply lines from a peer, with limits.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<(u8, u16, u16)>,
    lines: Vec<String>,
}

/// What a reply line did to the parser.
pub(crate) enum Parsed {
    More,
    Done(Reply),
}

impl ReplyParser {
    /// Feeds one line (without CRLF). Errors name what is wrong with the line.
    pub(crate) fn feed(&mut self, line: &str, max_lines: usize) -> Result<Parsed, String> {
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("reply line without a code: {:?}", truncate(line)));
        }
        let code: u16 = line[..3].parse().map_err(|_| "bad code".to_owned())?;
        if !(200..600).contains(&code) && code / 100 != 1 {
            return Err(format!("reply code out of range: {code}"));
        }
        if self.code.is_some_and(|c| c != code) {
            return Err(format!(
                "reply code changed inside a multiline reply: {code}"
            ));
        }
        self.code = Some(code);
        let (last, rest) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(format!("bad reply separator: {:?}", truncate(line))),
        };
        let (enhanced, text) = split_enhanced(code, rest);
        if self.lines.is_empty() {
            self.enhanced = enhanced;
        }
        self.lines.push(text.to_owned());
        if last {
            return Ok(Parsed::Done(Reply {
                code,
                enhanced: self.enhanced,
                text: std::mem::take(&mut self.lines).join("\n"),
            }));
        }
        if self.lines.len() >= max_lines {
            return Err(format!("multiline reply longer than {max_lines} lines"));
        }
        Ok(Parsed::More)
    }
}

fn truncate(line: &str) -> &str {
    let mut end = line.len().min(80);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_text_cannot_inject_reply_lines() {
        let r = Reply::new(550, (5, 7, 1), "no\r\n250 ok");
        assert_eq!(r.to_wire(), "550-5.7.1 no \r\n550 5.7.1 250 ok\r\n");
    }
    #[test]
    fn wire_format_round_trips_multiline_with_enhanced_codes() {
        let r = Reply::new(250, (2, 0, 0), "first\nsecond");
        assert_eq!(r.to_wire(), "250-2.0.0 first\r\n250 2.0.0 second\r\n");
        let mut p = ReplyParser::default();
        assert!(matches!(p.feed("250-2.0.0 first", 10), Ok(Parsed::More)));
        let Ok(Parsed::Done(back)) = p.feed("250 2.0.0 second", 10) else {
            panic!("reply not complete");
        };
        assert_eq!(back, r);
    }

    #[test]
    fn parser_rejects_garbage_and_overlong_replies() {
        let mut p = ReplyParser::default();
        assert!(p.feed("hello", 10).is_err());
        let mut p = ReplyParser::default();
        assert!(p.feed("250-a", 2).is_ok());
        assert!(p.feed("251 b", 2).is_err());
        let mut p = ReplyParser::default();
        assert!(p.feed("250-a", 2).is_ok());
        assert!(p.feed("250-b", 2).is_err());
        let mut p = ReplyParser::default();
        let Ok(Parsed::Done(r)) = p.feed("550 4.0.0 class mismatch", 2) else {
            panic!("reply not complete");
        };
        assert_eq!(r.enhanced, None);
    }
}
