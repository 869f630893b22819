//! Delivery into the appliance's own Dovecot by IMAP `APPEND`: a batch of mirrored messages
//! for one local mailbox is one MULTIAPPEND (RFC 3502) with non-synchronising literals
//! (LITERAL+, RFC 7888), which Dovecot saves in one transaction — all or none, one index
//! update and one sync for the batch, where LMTP costs a delivery each. The mirror logs in
//! as Dovecot's master user with SASL PLAIN, the local user as authorization identity.
//!
//! The hop is loopback to the appliance's own Dovecot: no TLS, and the master password
//! comes from a 0600 file.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use passerelle_imap_starttls::printable;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Longest response line read from the local Dovecot.
const MAX_LINE: u64 = 64 * 1024;
/// Longest literal skipped inside an untagged response.
const MAX_LITERAL: u64 = 1024 * 1024;

/// How to reach and log in to the local Dovecot.
pub(crate) struct LocalStore {
    pub(crate) addr: SocketAddr,
    pub(crate) master_user: String,
    pub(crate) master_password: Zeroizing<String>,
    pub(crate) timeout: Duration,
}

/// What went wrong talking to the local Dovecot: the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
#[error("local IMAP {addr}, {step}: {why}")]
pub(crate) struct LocalError {
    addr: SocketAddr,
    step: &'static str,
    why: String,
}

/// A tagged answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    /// `NO` or `BAD`, with the response code (`TRYCREATE`, `OVERQUOTA`, …) when given and
    /// the server's text.
    Refused {
        code: Option<String>,
        text: String,
    },
}

impl Answer {
    /// Worth trying again later: the mailbox is over quota, busy or the server failed.
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(self, Self::Refused { code: Some(c), .. }
            if ["OVERQUOTA", "INUSE", "UNAVAILABLE", "SERVERBUG", "LIMIT"].contains(&c.as_str()))
    }

    pub(crate) fn code_is(&self, wanted: &str) -> bool {
        matches!(self, Self::Refused { code: Some(c), .. } if c == wanted)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("OK"),
            Self::Refused { text, .. } => f.write_str(text),
        }
    }
}

/// One logged-in session, acting as one local user.
pub(crate) struct LocalSession {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
    timeout: Duration,
    tag: u32,
}

impl LocalStore {
    /// Connects and logs in as `user` through the master user.
    pub(crate) async fn session(&self, user: &str) -> Result<LocalSession, LocalError> {
        let err = |step, why: String| LocalError {
            addr: self.addr,
            step,
            why,
        };
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| err("connect", "timed out".into()))?
            .map_err(|e| err("connect", e.to_string()))?;
        let mut session = LocalSession {
            stream: BufReader::new(tcp),
            addr: self.addr,
            timeout: self.timeout,
            tag: 0,
        };
        let greeting = session.line("greeting").await?;
        if !greeting.starts_with("* OK") {
            return Err(err("greeting", printable(&greeting)));
        }
        let mut sasl = Zeroizing::new(Vec::new());
        sasl.extend_from_slice(user.as_bytes());
        sasl.push(0);
        sasl.extend_from_slice(self.master_user.as_bytes());
        sasl.push(0);
        sasl.extend_from_slice(self.master_password.as_bytes());
        let command = Zeroizing::new(format!("AUTHENTICATE PLAIN {}", B64.encode(&*sasl)));
        let (answer, _) = session.command("login", &command).await?;
        if answer != Answer::Ok {
            return Err(err("login", format!("as {user}: {answer}")));
        }
        let (answer, untagged) = session.command("capability", "CAPABILITY").await?;
        let capabilities = untagged
            .iter()
            .find_map(|l| l.strip_prefix("* CAPABILITY "))
            .unwrap_or_default()
            .to_ascii_uppercase();
        let has = |c: &str| capabilities.split(' ').any(|x| x == c);
        if answer != Answer::Ok || !has("MULTIAPPEND") || !has("LITERAL+") {
            return Err(err(
                "capability",
                "the local Dovecot must offer MULTIAPPEND and LITERAL+".into(),
            ));
        }
        Ok(session)
    }
}

impl LocalSession {
    /// Saves `messages` into `mailbox` in one command: all of them or none.
    pub(crate) async fn append(
        &mut self,
        mailbox: &str,
        messages: &[&[u8]],
    ) -> Result<Answer, LocalError> {
        let Some((first, _)) = messages.split_first() else {
            return Ok(Answer::Ok);
        };
        let command = format!(
            "APPEND {} {{{}+}}\r\n",
            quote(&mailbox_name(mailbox)),
            first.len()
        );
        // Each message, then the size line of the next one.
        let literals: Vec<(&[u8], String)> = messages
            .iter()
            .enumerate()
            .map(|(n, m)| {
                let next = messages
                    .get(n + 1)
                    .map(|next| format!(" {{{}+}}\r\n", next.len()))
                    .unwrap_or_default();
                (*m, next)
            })
            .collect();
        let (answer, _) = self.exchange("APPEND", &command, &literals).await?;
        Ok(answer)
    }

    /// Creates `mailbox` (after an `APPEND` answered `[TRYCREATE]`).
    pub(crate) async fn create(&mut self, mailbox: &str) -> Result<Answer, LocalError> {
        let command = format!("CREATE {}", quote(&mailbox_name(mailbox)));
        let (answer, _) = self.command("CREATE", &command).await?;
        // Created meanwhile by another worker: as good as created.
        if answer.code_is("ALREADYEXISTS") {
            return Ok(Answer::Ok);
        }
        Ok(answer)
    }

    /// For each `Message-ID`, whether `mailbox` already holds a message with it (a
    /// redelivery after a crash between Dovecot's `OK` and the queue's ack): one `EXAMINE`,
    /// one `SEARCH` each. All `false` when the mailbox does not exist yet.
    pub(crate) async fn holds(
        &mut self,
        mailbox: &str,
        message_ids: &[&str],
    ) -> Result<Vec<bool>, LocalError> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        let command = format!("EXAMINE {}", quote(&mailbox_name(mailbox)));
        let (answer, _) = self.command("EXAMINE", &command).await?;
        if answer != Answer::Ok {
            return Ok(vec![false; message_ids.len()]);
        }
        let mut held = Vec::with_capacity(message_ids.len());
        for id in message_ids {
            let command = format!("UID SEARCH HEADER Message-ID {}", quote(id));
            let (answer, untagged) = self.command("SEARCH", &command).await?;
            held.push(
                answer == Answer::Ok
                    && untagged.iter().any(|l| {
                        l.strip_prefix("* SEARCH")
                            .is_some_and(|uids| !uids.trim().is_empty())
                    }),
            );
        }
        self.command("UNSELECT", "UNSELECT").await?;
        Ok(held)
    }

    pub(crate) async fn logout(mut self) {
        let _ = self.command("LOGOUT", "LOGOUT").await;
    }

    async fn command(
        &mut self,
        step: &'static str,
        command: &str,
    ) -> Result<(Answer, Vec<String>), LocalError> {
        self.exchange(step, command, &[]).await
    }

    /// Sends `T<n> <command>`, then each literal's bytes followed by its trailing text, and
    /// reads to the tagged answer, bounded by the timeout.
    async fn exchange(
        &mut self,
        step: &'static str,
        command: &str,
        literals: &[(&[u8], String)],
    ) -> Result<(Answer, Vec<String>), LocalError> {
        self.tag += 1;
        let tag = format!("T{}", self.tag);
        let timeout = self.timeout;
        let addr = self.addr;
        let run = async {
            let io = |e: std::io::Error| LocalError {
                addr,
                step,
                why: e.to_string(),
            };
            let w = self.stream.get_mut();
            w.write_all(tag.as_bytes()).await.map_err(io)?;
            w.write_all(b" ").await.map_err(io)?;
            w.write_all(command.as_bytes()).await.map_err(io)?;
            for (bytes, after) in literals {
                w.write_all(bytes).await.map_err(io)?;
                w.write_all(after.as_bytes()).await.map_err(io)?;
            }
            w.write_all(b"\r\n").await.map_err(io)?;
            w.flush().await.map_err(io)?;
            let mut untagged = Vec::new();
            loop {
                let line = self.line(step).await?;
                if let Some(rest) = line.strip_prefix(&tag).and_then(|r| r.strip_prefix(' ')) {
                    return Ok((answer(rest), untagged));
                }
                if line.starts_with("* BYE") {
                    return Err(LocalError {
                        addr,
                        step,
                        why: printable(&line),
                    });
                }
                untagged.push(line);
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| LocalError {
                addr,
                step,
                why: format!("no answer within {timeout:?}"),
            })?
    }

    /// One response line without its CRLF; a literal announced at its end (`{n}`) is
    /// skipped, so that the rest of the response is read as part of the same line.
    async fn line(&mut self, step: &'static str) -> Result<String, LocalError> {
        let err = |why: String| LocalError {
            addr: self.addr,
            step,
            why,
        };
        let mut line = Vec::new();
        loop {
            let start = line.len();
            let n = (&mut self.stream)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| err(e.to_string()))?;
            if n == 0 {
                return Err(err("connection closed".into()));
            }
            if !line.ends_with(b"\n") {
                return Err(err(format!("line longer than {MAX_LINE} bytes")));
            }
            line.truncate(line.len() - 1);
            if line.ends_with(b"\r") {
                line.truncate(line.len() - 1);
            }
            let Some(size) = literal_size(&line[start..]) else {
                break;
            };
            if size > MAX_LITERAL {
                return Err(err(format!("literal of {size} bytes in a response")));
            }
            let mut skip = (&mut self.stream).take(size);
            tokio::io::copy(&mut skip, &mut tokio::io::sink())
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }
}

fn answer(rest: &str) -> Answer {
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if status.eq_ignore_ascii_case("OK") {
        return Answer::Ok;
    }
    let code = text
        .strip_prefix('[')
        .and_then(|t| t.split_once(']'))
        .map(|(c, _)| c.split(' ').next().unwrap_or_default().to_ascii_uppercase());
    Answer::Refused {
        code,
        text: printable(rest),
    }
}

/// `{123}` at the end of a response line.
fn literal_size(line: &[u8]) -> Option<u64> {
    let open = line.strip_suffix(b"}")?;
    let at = open.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&open[at + 1..]).ok()?.parse().ok()
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// A mailbox name as IMAP4rev1 spells it: modified UTF-7 (RFC 3501 §5.1.3) for anything
/// outside printable ASCII, `&` as `&-`.
pub(crate) fn mailbox_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if wide.is_empty() {
            return;
        }
        let bytes: Vec<u8> = wide.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&MUTF7.encode(bytes));
        out.push('-');
        wide.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut wide, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            wide.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut wide, &mut out);
    out
}

/// Modified base64 of RFC 3501: `,` for `/`, no padding.
const MUTF7: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    base64::engine::general_purpose::NO_PAD,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_in_modified_utf7() {
        // RFC 3501 §5.1.3's own example and a French folder name.
        assert_eq!(
            mailbox_name("~peter/mail/日本語/台北"),
            "~peter/mail/&ZeVnLIqe-/&U,BTFw-"
        );
        assert_eq!(mailbox_name("Envoyés"), "Envoy&AOk-s");
        assert_eq!(mailbox_name("A&B"), "A&-B");
        assert_eq!(mailbox_name("INBOX"), "INBOX");
    }

    #[test]
    fn tagged_answers_and_codes() {
        assert_eq!(answer("OK [APPENDUID 1 2:3] Append completed."), Answer::Ok);
        let no = answer("NO [TRYCREATE] Mailbox doesn't exist: X");
        assert!(no.code_is("TRYCREATE"));
        assert!(!no.is_temporary());
        assert!(answer("NO [OVERQUOTA] Quota exceeded").is_temporary());
        assert!(!answer("BAD Error in IMAP command").is_temporary());
    }

    #[test]
    fn literal_sizes_at_line_end() {
        assert_eq!(literal_size(b"* 1 FETCH (BODY[] {42}"), Some(42));
        assert_eq!(literal_size(b"* OK done"), None);
        assert_eq!(literal_size(b"* OK {x}"), None);
    }
}
