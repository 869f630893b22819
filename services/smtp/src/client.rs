//! SMTP/LMTP client: mandatory STARTTLS before AUTH or mail (TLS-05), AUTH PLAIN and
//! XOAUTH2 with SASL-IR (EX_LPS_0700/0900), pipelined envelope, per-recipient results.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::io::{Line, LineIo};
use crate::reply::{Parsed, ReplyParser};
use crate::{Envelope, Reply, SmtpError};

/// Client settings; every phase has its own timeout (RFC 5321 §4.5.3.2 gives the
/// classic values, shorter here because a retry is cheap).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO/LHLO.
    pub helo_name: String,
    /// Speak LMTP (RFC 2033): LHLO, one reply per recipient after DATA.
    pub lmtp: bool,
    /// Refuse to send mail before STARTTLS. AUTH is never sent in clear, whatever this says.
    pub require_tls: bool,
    pub connect_timeout: Duration,
    /// Banner, EHLO, STARTTLS handshake, AUTH, MAIL, RCPT, DATA's 354.
    pub command_timeout: Duration,
    /// Each block of message data written.
    pub data_timeout: Duration,
    /// The reply after the final dot (the server is storing the message).
    pub final_timeout: Duration,
    /// Bytes per reply line (RFC 5321: 512; servers exceed it in EHLO).
    pub max_reply_line: usize,
    /// Lines per multiline reply.
    pub max_reply_lines: usize,
}

impl ClientConfig {
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            lmtp: false,
            require_tls: true,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
            data_timeout: Duration::from_secs(180),
            final_timeout: Duration::from_secs(600),
            max_reply_line: 4096,
            max_reply_lines: 100,
        }
    }
}

/// The server's EHLO/LHLO keywords.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Keyword lines after the greeting line, as sent.
    pub lines: Vec<String>,
}

impl Capabilities {
    fn keyword(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let (k, rest) = l.split_once(' ').unwrap_or((l, ""));
            k.eq_ignore_ascii_case(name).then_some(rest)
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.keyword(name).is_some()
    }

    /// `SIZE n`; `Some(0)` means no fixed limit.
    pub fn size(&self) -> Option<u64> {
        self.keyword("SIZE").and_then(|v| v.trim().parse().ok())
    }

    pub fn auth_mechanism(&self, mechanism: &str) -> bool {
        self.keyword("AUTH").is_some_and(|v| {
            v.split_whitespace()
                .any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    pub address: String,
    /// The RCPT refusal, or the reply to the message (DATA, or this recipient's LMTP reply).
    pub reply: Reply,
}

impl RecipientResult {
    pub fn delivered(&self) -> bool {
        self.reply.is_positive()
    }
}

/// The per-recipient outcome of [`SmtpClient::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub recipients: Vec<RecipientResult>,
}

/// `base64("user=<bal>\x01auth=Bearer <token>\x01\x01")`, the XOAUTH2 initial response
/// of EX_LPS_0900.
pub fn xoauth2_initial_response(user: &str, token: &str) -> String {
    B64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// One SMTP or LMTP session toward a server.
#[derive(Debug)]
pub struct SmtpClient {
    io: Option<LineIo>,
    peer: SocketAddr,
    config: ClientConfig,
    banner: Reply,
    capabilities: Option<Capabilities>,
    tls: bool,
}

const CHUNK: usize = 64 * 1024;

impl SmtpClient {
    /// Connects and reads the banner (`220` expected).
    pub async fn connect(peer: SocketAddr, config: ClientConfig) -> Result<Self, SmtpError> {
        let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| SmtpError::Timeout {
                peer,
                command: "connect",
                seconds: config.connect_timeout.as_secs(),
            })?
            .map_err(|source| SmtpError::Io {
                peer,
                command: "connect",
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut client = Self {
            io: Some(LineIo::new(Box::new(tcp))),
            peer,
            config,
            banner: Reply::plain(0, ""),
            capabilities: None,
            tls: false,
        };
        let banner = client.read_reply("banner", None).await?;
        if banner.code != 220 {
            return Err(SmtpError::Refused {
                peer,
                command: "banner",
                reply: banner,
            });
        }
        client.banner = banner;
        Ok(client)
    }

    pub fn banner(&self) -> &Reply {
        &self.banner
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Keywords of the last EHLO/LHLO.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// EHLO (LHLO in LMTP mode).
    pub async fn ehlo(&mut self) -> Result<&Capabilities, SmtpError> {
        let (verb, command) = if self.config.lmtp {
            ("LHLO", "LHLO")
        } else {
            ("EHLO", "EHLO")
        };
        let line = format!("{verb} {}\r\n", self.config.helo_name);
        let reply = self.command(command, &line).await?;
        if reply.code != 250 {
            return Err(self.refused(command, reply));
        }
        let lines = reply.text.split('\n').skip(1).map(str::to_owned).collect();
        Ok(self.capabilities.insert(Capabilities { lines }))
    }

    /// STARTTLS with the caller's TLS configuration (the trust crate's MSSanté profile),
    /// then EHLO again. Fails when the server does not offer it: TLS is never optional.
    pub async fn starttls(
        &mut self,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<(), SmtpError> {
        let peer = self.peer;
        if self.capabilities.is_none() {
            self.ehlo().await?;
        }
        if !self
            .capabilities
            .as_ref()
            .is_some_and(|c| c.has("STARTTLS"))
        {
            return Err(SmtpError::StartTlsNotOffered { peer });
        }
        let reply = self.command("STARTTLS", "STARTTLS\r\n").await?;
        if reply.code != 220 {
            return Err(self.refused("STARTTLS", reply));
        }
        let io = self.io.take().ok_or(SmtpError::Closed {
            peer,
            command: "STARTTLS",
        })?;
        if io.has_buffered_input() {
            // A server that speaks before the handshake is injecting plaintext.
            return Err(SmtpError::Protocol {
                peer,
                command: "STARTTLS",
                detail: "data received in clear after 220".to_owned(),
            });
        }
        let handshake = tokio::time::timeout(
            self.config.command_timeout,
            TlsConnector::from(tls).connect(server_name, io.into_inner()),
        )
        .await
        .map_err(|_| SmtpError::Timeout {
            peer,
            command: "STARTTLS",
            seconds: self.config.command_timeout.as_secs(),
        })?
        .map_err(|source| SmtpError::Tls { peer, source })?;
        self.io = Some(LineIo::new(Box::new(handshake)));
        self.tls = true;
        self.capabilities = None;
        self.ehlo().await?;
        Ok(())
    }

    /// AUTH PLAIN with an initial response (APP BAL: the BAL address as authcid,
    /// EX_LPS_1200).
    pub async fn auth_plain(
        &mut self,
        authzid: &str,
        user: &str,
        password: &str,
    ) -> Result<(), SmtpError> {
        self.auth_allowed("PLAIN")?;
        let ir = B64.encode(format!("{authzid}\0{user}\0{password}"));
        let mut reply = self
            .command("AUTH", &format!("AUTH PLAIN {ir}\r\n"))
            .await?;
        if reply.code == 334 {
            // A server that ignores SASL-IR asks again; RFC 4954 §4 lets us answer.
            reply = self.command("AUTH", &format!("{ir}\r\n")).await?;
        }
        self.auth_result("PLAIN", reply, None)
    }

    /// AUTH XOAUTH2 with SASL-IR (EX_LPS_0700/0900). On a `334` challenge the decoded JSON
    /// is kept in the error, an empty line is sent and the final `535` read.
    pub async fn auth_xoauth2(&mut self, user: &str, token: &str) -> Result<(), SmtpError> {
        self.auth_allowed("XOAUTH2")?;
        let ir = xoauth2_initial_response(user, token);
        let reply = self
            .command("AUTH", &format!("AUTH XOAUTH2 {ir}\r\n"))
            .await?;
        if reply.code == 334 {
            let detail = B64.decode(reply.text.trim()).map_or_else(
                |_| reply.text.clone(),
                |d| String::from_utf8_lossy(&d).into_owned(),
            );
            let last = self.command("AUTH", "\r\n").await?;
            return self.auth_result("XOAUTH2", last, Some(detail));
        }
        self.auth_result("XOAUTH2", reply, None)
    }

    fn auth_allowed(&self, mechanism: &'static str) -> Result<(), SmtpError> {
        if !self.tls {
            return Err(SmtpError::Plaintext {
                peer: self.peer,
                what: "AUTH",
            });
        }
        if !self
            .capabilities
            .as_ref()
            .is_some_and(|c| c.auth_mechanism(mechanism))
        {
            return Err(SmtpError::Usage {
                peer: self.peer,
                what: format!("AUTH {mechanism} not offered by the server"),
            });
        }
        Ok(())
    }

    fn auth_result(
        &self,
        mechanism: &'static str,
        reply: Reply,
        detail: Option<String>,
    ) -> Result<(), SmtpError> {
        if reply.code == 235 {
            tracing::debug!(peer = %self.peer, mechanism, "smtp client: authenticated");
            return Ok(());
        }
        Err(SmtpError::AuthFailed {
            peer: self.peer,
            mechanism,
            reply,
            detail,
        })
    }

    /// One transaction: MAIL, RCPT (pipelined when offered), DATA with dot-stuffing.
    /// Refused recipients are reported, not fatal; the message goes to the others.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivery, SmtpError> {
        if self.config.require_tls && !self.tls {
            return Err(SmtpError::Plaintext {
                peer: self.peer,
                what: "MAIL",
            });
        }
        if self.capabilities.is_none() {
            self.ehlo().await?;
        }
        let caps = self.capabilities.clone().unwrap_or_default();
        let mut mail = format!("MAIL FROM:<{}>", envelope.mail_from.address);
        if caps.has("SIZE") {
            let _ = write!(mail, " SIZE={}", message.len());
        }
        if envelope.mail_from.eight_bit && caps.has("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        let (mail_reply, rcpt_replies) = if caps.has("PIPELINING") {
            self.io()?.queue(mail.as_bytes());
            for r in &rcpts {
                self.io()?.queue(r.as_bytes());
            }
            self.flush("MAIL FROM").await?;
            let m = self.read_reply("MAIL FROM", None).await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                replies.push(self.read_reply("RCPT TO", None).await?);
            }
            (m, replies)
        } else {
            let m = self.command("MAIL FROM", &mail).await?;
            let mut replies = Vec::new();
            if m.is_positive() {
                for r in &rcpts {
                    replies.push(self.command("RCPT TO", r).await?);
                }
            }
            (m, replies)
        };
        if !mail_reply.is_positive() {
            return Err(self.refused("MAIL FROM", mail_reply));
        }
        let mut results: Vec<RecipientResult> = envelope
            .recipients
            .iter()
            .zip(rcpt_replies)
            .map(|(address, reply)| RecipientResult {
                address: address.clone(),
                reply,
            })
            .collect();
        let accepted: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].reply.is_positive())
            .collect();
        if accepted.is_empty() {
            let _ = self.command("RSET", "RSET\r\n").await?;
            return Ok(Delivery {
                recipients: results,
            });
        }
        let go = self.command("DATA", "DATA\r\n").await?;
        if go.code != 354 {
            return Err(self.refused("DATA", go));
        }
        self.write_message(message).await?;
        let finals = if self.config.lmtp { accepted.len() } else { 1 };
        let mut replies = Vec::with_capacity(finals);
        for _ in 0..finals {
            let timeout = Some(self.config.final_timeout);
            replies.push(self.read_reply("end of DATA", timeout).await?);
        }
        for (n, &i) in accepted.iter().enumerate() {
            let reply = if self.config.lmtp {
                replies[n].clone()
            } else {
                replies[0].clone()
            };
            results[i].reply = reply;
        }
        Ok(Delivery {
            recipients: results,
        })
    }

    pub async fn noop(&mut self) -> Result<Reply, SmtpError> {
        self.command("NOOP", "NOOP\r\n").await
    }

    /// QUIT and close; a server that hangs up first is not an error.
    pub async fn quit(mut self) -> Result<(), SmtpError> {
        match self.command("QUIT", "QUIT\r\n").await {
            Ok(_) | Err(SmtpError::Closed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Dot-stuffed, CRLF-normalised (bare LF would let the message end early on some
    /// servers: SMTP smuggling), written in blocks, then `.` CRLF.
    async fn write_message(&mut self, message: &[u8]) -> Result<(), SmtpError> {
        let mut block = Vec::with_capacity(CHUNK + 1024);
        let mut lines = message.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            if last && line.is_empty() {
                break;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                block.push(b'.');
            }
            block.extend_from_slice(line);
            block.extend_from_slice(b"\r\n");
            if block.len() >= CHUNK {
                self.write_block(&block).await?;
                block.clear();
            }
        }
        block.extend_from_slice(b".\r\n");
        self.write_block(&block).await?;
        self.flush("DATA").await
    }

    async fn write_block(&mut self, block: &[u8]) -> Result<(), SmtpError> {
        let peer = self.peer;
        let timeout = self.config.data_timeout;
        let io = self.io()?;
        tokio::time::timeout(timeout, io.write_now(block))
            .await
            .map_err(|_| SmtpError::Timeout {
                peer,
                command: "DATA",
                seconds: timeout.as_secs(),
            })?
            .map_err(|source| SmtpError::Io {
                peer,
                command: "DATA",
                source,
            })
    }

    fn io(&mut self) -> Result<&mut LineIo, SmtpError> {
        self.io.as_mut().ok_or(SmtpError::Closed {
            peer: self.peer,
            command: "session",
        })
    }

    fn refused(&self, command: &'static str, reply: Reply) -> SmtpError {
        SmtpError::Refused {
            peer: self.peer,
            command,
            reply,
        }
    }

    async fn flush(&mut self, command: &'static str) -> Result<(), SmtpError> {
        let peer = self.peer;
        let timeout = self.config.command_timeout;
        let io = self.io()?;
        tokio::time::timeout(timeout, io.flush())
            .await
            .map_err(|_| SmtpError::Timeout {
                peer,
                command,
                seconds: timeout.as_secs(),
            })?
            .map_err(|source| SmtpError::Io {
                peer,
                command,
                source,
            })
    }

    async fn command(&mut self, command: &'static str, line: &str) -> Result<Reply, SmtpError> {
        self.io()?.queue(line.as_bytes());
        self.flush(command).await?;
        self.read_reply(command, None).await
    }

    async fn read_reply(
        &mut self,
        command: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Reply, SmtpError> {
        let peer = self.peer;
        let timeout = timeout.unwrap_or(self.config.command_timeout);
        let (max_line, max_lines) = (self.config.max_reply_line, self.config.max_reply_lines);
        let io = self.io()?;
        let mut parser = ReplyParser::default();
        loop {
            let line = tokio::time::timeout(timeout, io.read_line(max_line))
                .await
                .map_err(|_| SmtpError::Timeout {
                    peer,
                    command,
                    seconds: timeout.as_secs(),
                })?
                .map_err(|source| SmtpError::Io {
                    peer,
                    command,
                    source,
                })?;
            let line = match line {
                None => return Err(SmtpError::Closed { peer, command }),
                Some(Line::TooLong) => {
                    return Err(SmtpError::Protocol {
                        peer,
                        command,
                        detail: format!("reply line longer than {max_line} bytes"),
                    });
                }
                Some(Line::Complete(l)) => l,
            };
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            match parser.feed(text, max_lines) {
                Ok(Parsed::More) => {}
                Ok(Parsed::Done(reply)) => return Ok(reply),
                Err(detail) => {
                    return Err(SmtpError::Protocol {
                        peer,
                        command,
                        detail,
                    });
                }
            }
        }
    }
}
