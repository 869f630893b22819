//! A virtual smart card speaking the vpcd protocol.
//!
//! Frames are a 2-byte big-endian length and a payload. A 1-byte payload is a control code
//! (0 power off, 1 power on, 2 reset, 4 get ATR, answered with the ATR); anything else is a
//! C-APDU, answered with R-APDU + SW1 SW2. Closing the socket removes the card.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::{HarnessError, Result};

const PEER: &str = "virtual card";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The card's behaviour; [`crate::CpsCard`] is the virtual CPS card.
pub trait ApduHandler: Send + 'static {
    /// The Answer To Reset.
    fn atr(&self) -> Vec<u8>;
    /// Handles a C-APDU and returns R-APDU + SW1 SW2.
    fn transmit(&mut self, capdu: &[u8]) -> Vec<u8>;
    /// The reader cut the power.
    fn power_off(&mut self) {}
    /// The reader powered the card.
    fn power_on(&mut self) {}
    /// Warm reset.
    fn reset(&mut self) {}
}

#[derive(Debug)]
struct Inserted {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// A virtual card for one vpcd reader of a [`crate::Pcscd`]; removed on drop.
#[derive(Debug)]
pub struct VirtualCard<H> {
    netns: Arc<File>,
    addr: SocketAddr,
    reader: String,
    handler: Arc<Mutex<H>>,
    inserted: Option<Inserted>,
}

impl<H: ApduHandler> VirtualCard<H> {
    pub(crate) fn new(netns: File, addr: SocketAddr, reader: String, handler: H) -> Self {
        Self {
            netns: Arc::new(netns),
            addr,
            reader,
            handler: Arc::new(Mutex::new(handler)),
            inserted: None,
        }
    }

    /// The PC/SC name of the reader this card goes into.
    pub fn reader_name(&self) -> &str {
        &self.reader
    }

    /// The handler, e.g. to inspect what the card received.
    pub fn handler(&self) -> MutexGuard<'_, H> {
        self.handler.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_inserted(&self) -> bool {
        self.inserted.is_some()
    }

    /// Puts the card in the reader: connects to vpcd and serves it from a thread. Returns
    /// once connected; pcscd notices the card on its next poll.
    pub fn insert(&mut self) -> Result<()> {
        if self.inserted.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel();
        let (netns, addr, handler) = (
            Arc::clone(&self.netns),
            self.addr,
            Arc::clone(&self.handler),
        );
        let thread = std::thread::Builder::new()
            .name("virtual-card".to_owned())
            .spawn(move || {
                // vpcd listens inside pcscd's private network namespace; only this thread
                // joins it, and the thread ends with the card.
                let connected =
                    move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))
                        .map_err(|e| {
                            HarnessError::io(PEER, "enter pcscd's network namespace", e.into())
                        })
                        .and_then(|()| connect(addr));
                let stream = match connected.and_then(|s| {
                    s.try_clone()
                        .map(|c| (s, c))
                        .map_err(|e| HarnessError::io(PEER, "dup socket", e))
                }) {
                    Ok((stream, clone)) => {
                        let _ = tx.send(Ok(clone));
                        stream
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                if let Err(e) = serve(stream, &handler) {
                    tracing::debug!("virtual card session ended: {e}");
                }
            })
            .map_err(|e| HarnessError::io(PEER, "spawn card thread", e))?;
        let stream = rx
            .recv()
            .map_err(|_| HarnessError::protocol(PEER, "insert", "card thread died"))??;
        tracing::debug!(reader = %self.reader, "virtual card inserted");
        self.inserted = Some(Inserted { stream, thread });
        Ok(())
    }
}

impl<H> VirtualCard<H> {
    /// Takes the card out: closes the connection, which vpcd reports as a removal.
    pub fn remove(&mut self) {
        if let Some(Inserted { stream, thread }) = self.inserted.take() {
            let _ = stream.shutdown(Shutdown::Both);
            let _ = thread.join();
            tracing::debug!(reader = %self.reader, "virtual card removed");
        }
    }
}

impl<H> Drop for VirtualCard<H> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// vpcd's listener appears while pcscd loads its readers: retry briefly.
fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > CONNECT_TIMEOUT => {
                return Err(HarnessError::io(
                    PEER,
                    format!("connect to vpcd at {addr}"),
                    e,
                ))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

fn serve<H: ApduHandler>(mut stream: TcpStream, handler: &Mutex<H>) -> io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut payload)?;
        let mut h = handler.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = match payload.as_slice() {
            [0] => {
                h.power_off();
                None
            }
            [1] => {
                h.power_on();
                None
            }
            [2] => {
                h.reset();
                None
            }
            [4] => Some(h.atr()),
            [code] => {
                tracing::warn!(code, "virtual card: unknown vpcd control code");
                None
            }
            capdu => Some(h.transmit(capdu)),
        };
        drop(h);
        if let Some(reply) = reply {
            let len = u16::try_from(reply.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "reply over 64 KiB"))?;
            stream.write_all(&len.to_be_bytes())?;
            stream.write_all(&reply)?;
        }
    }
}
