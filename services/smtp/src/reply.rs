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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_text_cannot_inject_reply_lines() {
        let r = Reply::new(550, (5, 7, 1), "no\r\n250 ok");
        assert_eq!(r.to_wire(), "550-5.7.1 no \r\n550 5.7.1 250 ok\r\n");
    }
}
