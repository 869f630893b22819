//! Buffered line I/O over a plain or TLS stream, with a line-length limit that
//! never buffers more than the limit.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream that may be upgraded to TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One line read from the peer.
#[derive(Debug)]
pub(crate) enum Line {
    /// The line including its terminator (`\r\n`, or a bare `\n`).
    Complete(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded up to the terminator.
    TooLong,
}

const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct LineIo {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
}

impl std::fmt::Debug for LineIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineIo")
            .field("buffered", &(self.buf.len() - self.pos))
            .finish_non_exhaustive()
    }
}

impl LineIo {
    pub(crate) fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            out: Vec::new(),
        }
    }

    /// Queues bytes for the peer; they go out at the next [`Self::flush`] or before the
    /// next read that has to wait (so pipelined replies leave in one segment).
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
    }

    /// Writes bytes now, bypassing the queue (large DATA payloads).
    pub(crate) async fn write_now(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        self.io.write_all(bytes).await
    }

    /// Whether the peer already sent more than we have consumed.
    pub(crate) fn has_buffered_input(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Drops unread input: at STARTTLS, anything the peer sent in clear after the command
    /// must never be executed inside the TLS session (CVE-2011-0411).
    pub(crate) fn discard_buffered_input(&mut self) -> usize {
        let n = self.buf.len() - self.pos;
        self.buf.clear();
        self.pos = 0;
        n
    }

    /// Gives the raw stream back (for the TLS handshake). Unread input is discarded.
    pub(crate) fn into_inner(mut self) -> Box<dyn Io> {
        self.discard_buffered_input();
        self.io
    }

    /// Reads one line of at most `max` bytes including its terminator. `Ok(None)` at a
    /// clean or unclean end of stream.
    pub(crate) async fn read_line(&mut self, max: usize) -> io::Result<Option<Line>> {
        let mut discarding = false;
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                self.pos += i + 1;
                if discarding || i + 1 > max {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Complete(self.buf[start..self.pos].to_vec())));
            }
            if self.buf.len() - self.pos > max {
                // Keep memory bounded: forget the overlong line and skip to its end.
                discarding = true;
                self.buf.clear();
                self.pos = 0;
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.flush().await?;
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let n = self.io.read(&mut self.buf[len..]).await;
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                return Ok(None);
            }
        }
    }
}
