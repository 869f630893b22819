//! Upstream side: mutual TLS with the card, keep-alive pool, session resumption, flush.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use passerelle_cards::{CardCertResolver, CardError, CardEvent, CardService, PinState};
use rustls::ClientConfig;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{RightsConfig, RightsError};

/// TLS 1.2 sessions kept for resumption (one upstream, a few connections).
const SESSION_CACHE: usize = 32;
/// How long a card failure is watched for turning into a removal (the card monitor polls
/// every 250 ms by default).
const REMOVAL_CONFIRMATION: Duration = Duration::from_secs(1);
/// Largest CA bundle read.
const MAX_CA_BUNDLE: u64 = 1024 * 1024;

/// How the upstream connection is authenticated.
#[derive(Clone)]
pub enum ClientAuth {
    /// Direct APDUs to the active CPS card ([`CardCertResolver`]): requests need a card with
    /// its PIN verified.
    Card,
    /// The card's PKCS#11 module (e.g. [`passerelle_cards::pkcs11_cert_resolver`]), which
    /// manages its own login.
    Pkcs11(Arc<dyn ResolvesClientCert>),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Card => "Card",
            Self::Pkcs11(_) => "Pkcs11",
        })
    }
}

/// Connection generation under [`ClientAuth::Pkcs11`]: there is no card insertion to track.
const PKCS11_GENERATION: u64 = 0;

struct Pooled {
    sender: SendRequest<Full<Bytes>>,
    /// The card insertion that authenticated this connection.
    generation: u64,
}

/// Relays SOAP requests to the rights service. Share it in an `Arc`.
pub struct RightsProxy {
    cards: CardService,
    client_auth: ClientAuth,
    config: RightsConfig,
    host: String,
    port: u16,
    path: String,
    server_name: ServerName<'static>,
    roots: Arc<rustls::RootCertStore>,
    /// Rebuilt on flush: a fresh config is a fresh session cache.
    tls: Mutex<Arc<ClientConfig>>,
    idle: Mutex<Vec<Pooled>>,
}

impl std::fmt::Debug for RightsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RightsProxy")
            .field("upstream", &self.config.upstream_url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RightsProxy {
    /// Parses the upstream URL and loads the public-CA bundle; the card signs by APDUs.
    pub fn new(config: RightsConfig, cards: CardService) -> Result<Arc<Self>, RightsError> {
        Self::with_client_auth(config, cards, ClientAuth::Card)
    }

    /// As [`Self::new`], with the client authentication chosen.
    pub fn with_client_auth(
        config: RightsConfig,
        cards: CardService,
        client_auth: ClientAuth,
    ) -> Result<Arc<Self>, RightsError> {
        let bad = |what: &str| RightsError::Config(format!("rights.upstream_url: {what}"));
        let uri: Uri = config.upstream_url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("must be https://"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let server_name = ServerName::try_from(host.clone()).map_err(|_| bad("bad host"))?;
        let roots = Arc::new(load_roots(&config)?);
        let tls = Mutex::new(client_config(&roots, &cards, &client_auth)?);
        Ok(Arc::new(Self {
            cards,
            client_auth,
            config,
            host,
            port,
            path,
            server_name,
            roots,
            tls,
            idle: Mutex::new(Vec::new()),
        }))
    }

    pub fn max_request_bytes(&self) -> usize {
        self.config.max_request_bytes
    }

    /// Closes the idle connections and forgets the TLS sessions.
    pub fn flush(&self) {
        let dropped = std::mem::take(&mut *lock(&self.idle)).len();
        match client_config(&self.roots, &self.cards, &self.client_auth) {
            Ok(c) => *lock(&self.tls) = c,
            Err(e) => tracing::error!(error = %e, "rebuilding the rights TLS client failed"),
        }
        tracing::info!(
            connections = dropped,
            "rights proxy: connections and TLS sessions flushed"
        );
    }

    /// Flushes on every card removal, until the card service stops.
    pub fn watch_card_removals(self: &Arc<Self>) -> JoinHandle<()> {
        let mut events = self.cards.subscribe();
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    // Missed events may have held a removal.
                    Ok(CardEvent::CardRemoved { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => proxy.flush(),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// Relays one SOAP request; `content_type` is the LPS's (it carries the SOAP action).
    pub async fn forward(
        &self,
        body: Bytes,
        content_type: HeaderValue,
    ) -> Result<Response<Full<Bytes>>, RightsError> {
        let generation = self.card_ready()?;
        let started = Instant::now();
        // An idle connection may have been closed by the server meanwhile: such a request
        // was never sent, so it is retried once on a new connection.
        if let Some(pooled) = self.take_idle(generation) {
            match self.send(pooled, body.clone(), content_type.clone()).await {
                Err(SendError::NotSent) => {}
                Err(SendError::Failed(e)) => return Err(e),
                Ok(resp) => {
                    tracing::info!(reused = true, status = %resp.status(), elapsed_ms = started.elapsed().as_millis(), "rights request relayed");
                    return Ok(resp);
                }
            }
        }
        let pooled = self.connect(generation).await?;
        match self.send(pooled, body, content_type).await {
            Ok(resp) => {
                tracing::info!(reused = false, status = %resp.status(), elapsed_ms = started.elapsed().as_millis(), "rights request relayed");
                Ok(resp)
            }
            Err(SendError::NotSent) => Err(RightsError::UpstreamDown {
                peer: self.peer(),
                detail: "connection closed before the request was sent".into(),
            }),
            Err(SendError::Failed(e)) => Err(e),
        }
    }

    /// The active card's insertion number, if it can authenticate a connection now.
    fn card_ready(&self) -> Result<u64, RightsError> {
        if let ClientAuth::Pkcs11(_) = self.client_auth {
            return Ok(PKCS11_GENERATION);
        }
        let (_, card) = self.cards.active_card().ok_or(RightsError::NoCard)?;
        if !card.kind.can_sign() || card.auth_certificate.is_none() {
            return Err(RightsError::NoCard);
        }
        match card.pin {
            PinState::Verified => Ok(card.generation),
            PinState::Blocked => Err(RightsError::PinBlocked),
            PinState::Unknown | PinState::NotVerified { .. } => Err(RightsError::PinNotVerified),
        }
    }

    fn take_idle(&self, generation: u64) -> Option<Pooled> {
        let mut idle = lock(&self.idle);
        while let Some(p) = idle.pop() {
            if p.generation == generation && !p.sender.is_closed() {
                return Some(p);
            }
        }
        None
    }

    fn peer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn connect(&self, generation: u64) -> Result<Pooled, RightsError> {
        let limit = self.config.upstream_timeout;
        let timeout = |step| RightsError::UpstreamTimeout {
            peer: self.peer(),
            step,
            millis: limit.as_millis(),
        };
        let down = |detail: String| RightsError::UpstreamDown {
            peer: self.peer(),
            detail,
        };
        let tcp = tokio::time::timeout(limit, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| timeout("connect"))?
            .map_err(|e| down(e.to_string()))?;
        let config = Arc::clone(&lock(&self.tls));
        // A stale reason from an earlier failure must not be blamed on this handshake.
        let _ = self.cards.take_last_sign_error();
        let handshake =
            tokio_rustls::TlsConnector::from(config).connect(self.server_name.clone(), tcp);
        let tls = match tokio::time::timeout(limit, handshake).await {
            Err(_) => return Err(timeout("TLS handshake")),
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(self.handshake_failure(generation, &e).await),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| down(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "rights upstream connection ended");
            }
        });
        Ok(Pooled { sender, generation })
    }

    /// A failed handshake: the card's reason if the card failed, else the upstream's.
    async fn handshake_failure(&self, generation: u64, e: &std::io::Error) -> RightsError {
        let still_there = || {
            matches!(self.client_auth, ClientAuth::Pkcs11(_))
                || self
                    .cards
                    .active_card()
                    .is_some_and(|(_, c)| c.generation == generation)
        };
        match self.cards.take_last_sign_error() {
            // A card pulled mid-exchange can first show as a transport error or a garbled
            // answer; the card monitor confirms a removal within its poll interval.
            Some(card @ (CardError::Pcsc { .. } | CardError::Malformed { .. })) => {
                let deadline = Instant::now() + REMOVAL_CONFIRMATION;
                while Instant::now() < deadline {
                    if !still_there() {
                        return RightsError::CardRemoved;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                card.into()
            }
            Some(card) => card.into(),
            None if !still_there() => RightsError::CardRemoved,
            None => RightsError::UpstreamDown {
                peer: self.peer(),
                detail: format!("TLS handshake: {e}"),
            },
        }
    }

    async fn send(
        &self,
        mut pooled: Pooled,
        body: Bytes,
        content_type: HeaderValue,
    ) -> Result<Response<Full<Bytes>>, SendError> {
        let limit = self.config.upstream_timeout;
        let timeout = |step| {
            SendError::Failed(RightsError::UpstreamTimeout {
                peer: self.peer(),
                step,
                millis: limit.as_millis(),
            })
        };
        if tokio::time::timeout(limit, pooled.sender.ready())
            .await
            .map_err(|_| timeout("connection ready"))?
            .is_err()
        {
            return Err(SendError::NotSent);
        }
        let host = if self.port == 443 {
            self.host.clone()
        } else {
            self.peer()
        };
        let req = Request::post(self.path.as_str())
            .header(HOST, host)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| SendError::Failed(RightsError::BadRequest(e.to_string())))?;
        let resp = match tokio::time::timeout(limit, pooled.sender.send_request(req)).await {
            Err(_) => return Err(timeout("answer")),
            Ok(Err(e)) if e.is_canceled() => return Err(SendError::NotSent),
            Ok(Err(e)) => {
                return Err(SendError::Failed(RightsError::UpstreamDown {
                    peer: self.peer(),
                    detail: e.to_string(),
                }));
            }
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        let max = self.config.max_response_bytes;
        let body = match tokio::time::timeout(limit, Limited::new(body, max).collect()).await {
            Err(_) => return Err(timeout("answer body")),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(SendError::Failed(RightsError::UpstreamTooLarge {
                    peer: self.peer(),
                    limit: max,
                }));
            }
            Ok(Err(e)) => {
                return Err(SendError::Failed(RightsError::UpstreamDown {
                    peer: self.peer(),
                    detail: e.to_string(),
                }));
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
        let mut out = Response::new(Full::new(body));
        *out.status_mut() = parts.status;
        if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
            out.headers_mut().insert(CONTENT_TYPE, ct.clone());
        }
        let keep = self.card_ready().ok() == Some(pooled.generation);
        let mut idle = lock(&self.idle);
        if keep && !pooled.sender.is_closed() && idle.len() < self.config.pool_max_idle {
            idle.push(pooled);
        }
        Ok(out)
    }
}

enum SendError {
    /// The connection closed before the request left: safe to send again.
    NotSent,
    Failed(RightsError),
}

fn load_roots(config: &RightsConfig) -> Result<rustls::RootCertStore, RightsError> {
    let path = &config.ca_bundle;
    let bad =
        |what: String| RightsError::Config(format!("rights.ca_bundle {}: {what}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_CA_BUNDLE {
        return Err(bad(format!("over {MAX_CA_BUNDLE} bytes")));
    }
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate".into()));
    }
    Ok(roots)
}

/// TLS 1.2 only (see the crate docs), the card as client identity, session resumption on.
fn client_config(
    roots: &Arc<rustls::RootCertStore>,
    cards: &CardService,
    client_auth: &ClientAuth,
) -> Result<Arc<ClientConfig>, RightsError> {
    let resolver: Arc<dyn ResolvesClientCert> = match client_auth {
        ClientAuth::Card => Arc::new(CardCertResolver::new(cards.clone())),
        ClientAuth::Pkcs11(r) => Arc::clone(r),
    };
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(|e| RightsError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(roots))
            .with_client_cert_resolver(resolver);
    config.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
    Ok(Arc::new(config))
}
