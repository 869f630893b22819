//! A small POP3 client (RFC 1939, STLS of RFC 2595): the billing mailbox is read over POP3
//! with STLS, as Annexe 4 names it. No maintained async POP3 crate fits (the ones on
//! crates.io are small single-author crates without STLS on tokio-rustls); the subset needed
//! — STLS, USER/PASS, UIDL, RETR, DELE, QUIT — is short and bounded here: every line is
//! limited, every message is limited, every reply waits under a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest line accepted from the server (RFC 1939 responses are ≤ 512; lines of mail ≤ 998).
const MAX_LINE: usize = 8192;
/// Most UIDL entries read.
const MAX_LISTING: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("pop3 {peer}: {step}: {source}")]
    Io {
        peer: SocketAddr,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("pop3 {peer}: {step}: no answer within {timeout:?}")]
    Timeout {
        peer: SocketAddr,
        step: &'static str,
        timeout: Duration,
    },
    #[error("pop3 {peer}: {step}: server said {reply:?}")]
    Refused {
        peer: SocketAddr,
        step: &'static str,
        reply: String,
    },
    #[error("pop3 {peer}: {step}: {why}")]
    Protocol {
        peer: SocketAddr,
        step: &'static str,
        why: String,
    },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One POP3 session.
pub struct Pop3Client {
    io: BufReader<Box<dyn Io>>,
    peer: SocketAddr,
    timeout: Duration,
    tls: bool,
}

impl std::fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Client")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Pop3Client {
    /// Connect and read the greeting.
    pub async fn connect(peer: SocketAddr, timeout: Duration) -> Result<Self, Pop3Error> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| Pop3Error::Timeout {
                peer,
                step: "connect",
                timeout,
            })?
            .map_err(|source| Pop3Error::Io {
                peer,
                step: "connect",
                source,
            })?;
        let mut c = Self {
            io: BufReader::new(Box::new(tcp)),
            peer,
            timeout,
            tls: false,
        };
        c.ok("greeting").await?;
        Ok(c)
    }

    /// `STLS`, then the TLS handshake; the password is never sent before this.
    pub async fn stls(
        mut self,
        tls: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, Pop3Error> {
        self.command("STLS", "STLS").await?;
        let peer = self.peer;
        // Nothing may be buffered past the STLS reply (no pipelining before TLS).
        if !self.io.buffer().is_empty() {
            return Err(Pop3Error::Protocol {
                peer,
                step: "STLS",
                why: "data after the STLS reply".into(),
            });
        }
        let inner = self.io.into_inner();
        let stream =
            tokio::time::timeout(self.timeout, TlsConnector::from(tls).connect(name, inner))
                .await
                .map_err(|_| Pop3Error::Timeout {
                    peer,
                    step: "TLS handshake",
                    timeout: self.timeout,
                })?
                .map_err(|source| Pop3Error::Io {
                    peer,
                    step: "TLS handshake",
                    source,
                })?;
        Ok(Self {
            io: BufReader::new(Box::new(stream)),
            peer,
            timeout: self.timeout,
            tls: true,
        })
    }

    /// `USER`/`PASS`; refused before TLS.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Pop3Error> {
        if !self.tls {
            return Err(Pop3Error::Protocol {
                peer: self.peer,
                step: "PASS",
                why: "refusing to send the password before STLS".into(),
            });
        }
        self.command(&format!("USER {user}"), "USER").await?;
        self.command(&format!("PASS {password}"), "PASS").await?;
        Ok(())
    }

    /// `UIDL`: (message number, unique id) of every message.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.command("UIDL", "UIDL").await?;
        let mut out = Vec::new();
        for line in self.multiline("UIDL", MAX_LINE * MAX_LISTING).await? {
            let text = String::from_utf8_lossy(&line);
            let mut parts = text.split_whitespace();
            let (Some(n), Some(uid)) = (parts.next().and_then(|n| n.parse().ok()), parts.next())
            else {
                return Err(self.protocol("UIDL", format!("bad listing line {text:?}")));
            };
            if out.len() == MAX_LISTING {
                break;
            }
            out.push((n, uid.to_owned()));
        }
        Ok(out)
    }

    /// `RETR n`: the message, dot-unstuffed, CRLF line ends, at most `max` bytes.
    pub async fn retr(&mut self, n: u32, max: usize) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("RETR {n}"), "RETR").await?;
        let mut out = Vec::new();
        for line in self.multiline("RETR", max).await? {
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }

    pub async fn dele(&mut self, n: u32) -> Result<(), Pop3Error> {
        self.command(&format!("DELE {n}"), "DELE").await.map(drop)
    }

    /// `QUIT`: the deletions take effect (UPDATE state).
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.command("QUIT", "QUIT").await.map(drop)
    }

    fn protocol(&self, step: &'static str, why: String) -> Pop3Error {
        Pop3Error::Protocol {
            peer: self.peer,
            step,
            why,
        }
    }

    async fn command(&mut self, line: &str, step: &'static str) -> Result<String, Pop3Error> {
        let peer = self.peer;
        let io = |source| Pop3Error::Io { peer, step, source };
        let w = self.io.get_mut();
        w.write_all(line.as_bytes()).await.map_err(io)?;
        w.write_all(b"\r\n").await.map_err(io)?;
        w.flush().await.map_err(io)?;
        self.ok(step).await
    }

    async fn ok(&mut self, step: &'static str) -> Result<String, Pop3Error> {
        let line = self.line(step).await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        if text.starts_with("+OK") {
            Ok(text)
        } else {
            Err(Pop3Error::Refused {
                peer: self.peer,
                step,
                reply: text.chars().take(200).collect(),
            })
        }
    }

    /// Lines until the lone `.`, dot-unstuffed, at most `max` bytes in all.
    async fn multiline(
        &mut self,
        step: &'static str,
        max: usize,
    ) -> Result<Vec<Vec<u8>>, Pop3Error> {
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let mut line = self.line(step).await?;
            if line == b"." {
                return Ok(lines);
            }
            if line.first() == Some(&b'.') {
                line.remove(0);
            }
            total += line.len() + 2;
            if total > max {
                return Err(self.protocol(step, format!("answer above {max} bytes")));
            }
            lines.push(line);
        }
    }

    /// One line without its CRLF, at most [`MAX_LINE`] bytes.
    async fn line(&mut self, step: &'static str) -> Result<Vec<u8>, Pop3Error> {
        let peer = self.peer;
        let timeout = self.timeout;
        let mut buf = Vec::new();
        let read = async {
            loop {
                let chunk = self.io.fill_buf().await?;
                if chunk.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                if let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&chunk[..pos]);
                    self.io.consume(pos + 1);
                    break;
                }
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                self.io.consume(n);
                if buf.len() > MAX_LINE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line above {MAX_LINE} bytes"),
                    ));
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| Pop3Error::Timeout {
                peer,
                step,
                timeout,
            })?
            .map_err(|source| Pop3Error::Io { peer, step, source })?;
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.len() > MAX_LINE {
            return Err(self.protocol(step, format!("line above {MAX_LINE} bytes")));
        }
        Ok(buf)
    }
}
