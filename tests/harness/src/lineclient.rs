//! A tiny blocking client for the line protocols the peers speak (SMTP, LMTP, IMAP, POP3),
//! enough for readiness checks, harness helpers and test assertions.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A multi-line SMTP/LMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// A connected line-protocol client; every read times out after 10 s so a silent peer
/// fails the test instead of hanging it.
#[derive(Debug)]
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// One line without its CRLF; end of stream is an error.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Sends `line` followed by CRLF.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()
    }

    /// Reads an SMTP/LMTP reply (all its continuation lines).
    pub fn smtp_reply(&mut self) -> io::Result<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if !more {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    /// Sends a command and reads its reply.
    pub fn smtp_command(&mut self, line: &str) -> io::Result<SmtpReply> {
        self.send(line)?;
        self.smtp_reply()
    }

    /// Sends a message body after `DATA`'s 354: dot-stuffed, CRLF line ends, final dot.
    pub fn smtp_data(&mut self, message: &str) -> io::Result<()> {
        for line in message.lines() {
            if line.starts_with('.') {
                self.writer.write_all(b".")?;
            }
            self.writer.write_all(line.as_bytes())?;
            self.writer.write_all(b"\r\n")?;
        }
        self.send(".")
    }

    /// Sends `<tag> <command>` and returns every line up to and including the tagged one.
    /// Literals are not parsed: enough for CAPABILITY, LOGIN, STATUS, SELECT, LOGOUT.
    pub fn imap_command(&mut self, tag: &str, command: &str) -> io::Result<Vec<String>> {
        self.send(&format!("{tag} {command}"))?;
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }
}
