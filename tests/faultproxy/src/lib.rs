//! A userspace TCP fault proxy for integration tests.
//!
//! The kernels the tests run on have no `netem`, so delays and mid-stream cuts are produced
//! here: a [`FaultProxy`] listens on an ephemeral loopback port, forwards every connection to
//! an upstream address and applies the current [`Mode`], which the test may switch at any
//! time through a [`ProxyHandle`]. The mode is read again for every chunk, so a switch
//! also affects connections that are already open.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward everything untouched.
    #[default]
    Pass,
    /// Wait this long before forwarding each chunk (both directions).
    Delay(Duration),
    /// Accept and read, but forward nothing and answer nothing: a peer that went silent.
    Blackhole,
    /// Forward this many bytes on a connection (both directions added up), then close both
    /// sides: a link that drops in the middle of a transfer.
    CutAfter(u64),
    /// Close the listening socket so that connects are refused; leaving this mode binds the
    /// same port again. Open connections keep flowing as in [`Mode::Pass`].
    Refuse,
}

/// Errors of the fault proxy, each saying which step failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("fault proxy: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("fault proxy: cannot read the local address: {0}")]
    LocalAddr(std::io::Error),
    #[error("fault proxy: the accept task has stopped")]
    Stopped,
}

/// Traffic counters, cumulative since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Connections accepted from clients.
    pub connections: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_to_client: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    connections: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    counters: AtomicCounters,
    /// Bumped by [`ProxyHandle::cut_all`]; every connection task watches it.
    cut_generation: watch::Sender<u64>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A mode change sent to the accept task, which owns the listener (needed for `Refuse`).
type ModeRequest = (Mode, oneshot::Sender<Result<(), ProxyError>>);

/// A cloneable handle to switch the mode and read the counters of a running proxy.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    requests: mpsc::Sender<ModeRequest>,
    local_addr: SocketAddr,
}

impl ProxyHandle {
    /// The loopback address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The upstream every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches the mode. Returns once the change is in effect: after entering
    /// [`Mode::Refuse`] connects are refused, after leaving it the port is bound again.
    pub async fn set_mode(&self, mode: Mode) -> Result<(), ProxyError> {
        let (ack, done) = oneshot::channel();
        self.requests
            .send((mode, ack))
            .await
            .map_err(|_| ProxyError::Stopped)?;
        done.await.map_err(|_| ProxyError::Stopped)?
    }

    /// Drops every open connection (both sides closed); the listener is untouched.
    pub fn cut_all(&self) {
        self.shared.cut_generation.send_modify(|g| *g += 1);
    }

    /// A snapshot of the traffic counters.
    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        Counters {
            connections: c.connections.load(Ordering::Relaxed),
            bytes_to_upstream: c.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_to_client: c.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

/// A running fault proxy; dropping it stops accepting and cuts every connection.
#[derive(Debug)]
pub struct FaultProxy {
    handle: ProxyHandle,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 toward `upstream`, in [`Mode::Pass`].
    /// Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Result<Self, ProxyError> {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = TcpListener::bind(any)
            .await
            .map_err(|source| ProxyError::Bind { addr: any, source })?;
        let local_addr = listener.local_addr().map_err(ProxyError::LocalAddr)?;
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            counters: AtomicCounters::default(),
            cut_generation: watch::Sender::new(0),
        });
        let (requests, request_rx) = mpsc::channel(8);
        let accept_task = tokio::spawn(accept_loop(
            Some(listener),
            local_addr,
            Arc::clone(&shared),
            request_rx,
        ));
        tracing::debug!(%local_addr, %upstream, "fault proxy started");
        Ok(Self {
            handle: ProxyHandle {
                shared,
                requests,
                local_addr,
            },
            accept_task,
        })
    }

    /// The loopback address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// A handle that can outlive borrows of the proxy (e.g. moved into another task).
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// See [`ProxyHandle::set_mode`].
    pub async fn set_mode(&self, mode: Mode) -> Result<(), ProxyError> {
        self.handle.set_mode(mode).await
    }

    /// See [`ProxyHandle::cut_all`].
    pub fn cut_all(&self) {
        self.handle.cut_all();
    }

    /// See [`ProxyHandle::counters`].
    pub fn counters(&self) -> Counters {
        self.handle.counters()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.handle.cut_all();
    }
}

async fn accept_loop(
    mut listener: Option<TcpListener>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<ModeRequest>,
) {
    loop {
        tokio::select! {
            request = requests.recv() => {
                // All handles are gone: nobody can use the proxy any more.
                let Some((mode, ack)) = request else { return };
                let result = apply_mode(&mut listener, local_addr, &shared, mode).await;
                // The caller may have given up waiting; the mode is applied anyway.
                let _ = ack.send(result);
            }
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((client, peer)) => {
                    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "fault proxy: connection accepted");
                    tokio::spawn(serve(client, Arc::clone(&shared)));
                }
                Err(e) => tracing::warn!("fault proxy: accept failed: {e}"),
            },
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn apply_mode(
    listener: &mut Option<TcpListener>,
    local_addr: SocketAddr,
    shared: &Shared,
    mode: Mode,
) -> Result<(), ProxyError> {
    if mode == Mode::Refuse {
        // Dropping the socket closes it: the kernel now answers SYNs with RST.
        *listener = None;
    } else if listener.is_none() {
        let l = TcpListener::bind(local_addr)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: local_addr,
                source,
            })?;
        *listener = Some(l);
    }
    *shared.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    tracing::debug!(?mode, "fault proxy: mode set");
    Ok(())
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum PumpEnd {
    /// The reader reached end of stream (or failed); the other direction may go on.
    Eof,
    /// The byte budget of [`Mode::CutAfter`] is spent: close everything.
    Cut,
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ToUpstream,
    ToClient,
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut cut = shared.cut_generation.subscribe();
    // Connections opened while blackholed never reach the upstream: a silent peer.
    if shared.mode() == Mode::Blackhole {
        tokio::select! {
            () = discard(client) => {}
            _ = cut.changed() => {}
        }
        return;
    }
    let upstream = match TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream = %shared.upstream, "fault proxy: upstream connect failed: {e}");
            return;
        }
    };
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Bytes forwarded on this connection in both directions, for `CutAfter`.
    let forwarded = AtomicU64::new(0);
    let to_upstream = pump(
        client_read,
        upstream_write,
        &shared,
        &forwarded,
        Direction::ToUpstream,
    );
    let to_client = pump(
        upstream_read,
        client_write,
        &shared,
        &forwarded,
        Direction::ToClient,
    );
    tokio::pin!(to_upstream, to_client);
    let (mut up_done, mut client_done) = (false, false);
    while !(up_done && client_done) {
        tokio::select! {
            end = &mut to_upstream, if !up_done => {
                if end == PumpEnd::Cut { break; }
                up_done = true;
            }
            end = &mut to_client, if !client_done => {
                if end == PumpEnd::Cut { break; }
                client_done = true;
            }
            _ = cut.changed() => break,
        }
    }
    // Returning drops all four halves, which closes both sockets.
}

async fn discard(mut client: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    forwarded: &AtomicU64,
    direction: Direction,
) -> PumpEnd {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // Half-close: the other direction may still have data to deliver.
                let _ = to.shutdown().await;
                return PumpEnd::Eof;
            }
            Ok(n) => n,
        };
        let (len, then_cut) = match shared.mode() {
            Mode::Pass | Mode::Refuse => {
                forwarded.fetch_add(n as u64, Ordering::Relaxed);
                (n, false)
            }
            Mode::Delay(d) => {
                tokio::time::sleep(d).await;
                forwarded.fetch_add(n as u64, Ordering::Relaxed);
                (n, false)
            }
            Mode::Blackhole => continue,
            Mode::CutAfter(budget) => {
                // Reserve atomically: both directions draw from the same budget.
                let mut granted = 0;
                let _ = forwarded.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |done| {
                    let left = usize::try_from(budget.saturating_sub(done)).unwrap_or(usize::MAX);
                    granted = n.min(left);
                    Some(done + granted as u64)
                });
                (
                    granted,
                    granted < n || forwarded.load(Ordering::Relaxed) >= budget,
                )
            }
        };
        if len > 0 {
            if to.write_all(&buf[..len]).await.is_err() {
                return PumpEnd::Eof;
            }
            let len = len as u64;
            let counter = match direction {
                Direction::ToUpstream => &shared.counters.bytes_to_upstream,
                Direction::ToClient => &shared.counters.bytes_to_client,
            };
            counter.fetch_add(len, Ordering::Relaxed);
        }
        if then_cut {
            return PumpEnd::Cut;
        }
    }
}
