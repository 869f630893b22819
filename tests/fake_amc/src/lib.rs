//! A fake AMC rights service (the Visiodroits "Demande / Fournit les droits" exchange) for
//! tests and benches: the real protocol over real sockets.
//!
//! - HTTPS, TLS 1.2, HTTP/1.1 keep-alive; a server certificate from a throw-away "public CA"
//!   ([`PublicCa`]) the client must be configured with, as the seed says the OCT stores the
//!   public CA chain.
//! - Client authentication required: a certificate chaining to the test CPS root (`acr-fo` →
//!   `aci-fo-pp`) and not revoked in the test CRLs, checked by `passerelle_trust` with a
//!   `cps` profile ([`cps_trust_store`]).
//! - Each SOAP 1.2 request `…<idDemande>N</idDemande>…` is answered with a canned rights
//!   response echoing `N` and a dossier number.
//! - Counts connections and full vs resumed handshakes, and can be switched off
//!   ([`FakeAmc::set_down`]) to play an upstream outage.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use passerelle_testpki::{TestPki, names};
use passerelle_trust::{ProfileClientVerifier, TrustStore, sha256_hex};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Largest request the fake reads.
const MAX_REQUEST: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FakeAmcError {
    #[error("fake AMC: {0}")]
    Setup(String),
    #[error("fake AMC: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn setup(e: impl std::fmt::Display) -> FakeAmcError {
    FakeAmcError::Setup(e.to_string())
}

/// A throw-away public CA and a `localhost` server certificate under it.
#[derive(Debug)]
pub struct PublicCa {
    /// The CA certificate, PEM: the "public CA bundle" the proxy is configured with.
    pub ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl PublicCa {
    pub fn generate() -> Result<Self, FakeAmcError> {
        let ca_key = rcgen::KeyPair::generate().map_err(setup)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example Public TLS CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(setup)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().map_err(setup)?;
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(setup)?;
        let server = params.signed_by(&key, &issuer).map_err(setup)?;
        Ok(Self {
            ca_pem: ca.pem(),
            server_chain: vec![server.der().clone(), ca.der().clone()],
            server_key: key.serialize_der(),
        })
    }
}

impl PublicCa {
    /// The `localhost` certificate chain and its key, e.g. for another local test server.
    pub fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            self.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
        )
    }
}

/// A trust store whose `cps` profile accepts CPS authentication certificates of the test PKI
/// (`acr-fo` → `aci-fo-pp`), with the full CRLs of both CAs installed. Files go under `dir`.
pub fn cps_trust_store(pki: &TestPki, dir: &Path) -> Result<TrustStore, FakeAmcError> {
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors).map_err(|source| FakeAmcError::Io {
        what: "mkdir anchors",
        source,
    })?;
    let mut pins = String::new();
    for name in [names::ACR_FO, names::ACI_FO_PP] {
        let der = pki.cert(name).map_err(setup)?.der().to_vec();
        std::fs::write(anchors.join(format!("{name}.der")), &der).map_err(|source| {
            FakeAmcError::Io {
                what: "write anchor",
                source,
            }
        })?;
        let _ = writeln!(pins, "{}  {name}.der", sha256_hex(&der));
    }
    std::fs::write(dir.join("pins.sha256"), pins).map_err(|source| FakeAmcError::Io {
        what: "write pins",
        source,
    })?;
    // TOML literal strings: temp paths hold no quote.
    let text = format!(
        "anchors_dir = '{}'\npins_file = '{}'\ncrl_cache_dir = '{}'\n\
         [profiles.cps]\nrole = \"tls-client\"\nanchors = [\"{}.der\"]\nallowed_issuers = [\"{}.der\"]\n",
        anchors.display(),
        dir.join("pins.sha256").display(),
        dir.join("crl").display(),
        names::ACR_FO,
        names::ACI_FO_PP,
    );
    let config = toml::from_str(&text).map_err(setup)?;
    let store = TrustStore::load(&config).map_err(setup)?;
    for name in [names::ACR_FO, names::ACI_FO_PP] {
        let crl = pki.full_crl(name).map_err(setup)?;
        store.install_crl(crl.der(), name).map_err(setup)?;
    }
    Ok(store)
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
    requests: AtomicU64,
    refused_handshakes: AtomicU64,
    client_subjects: Mutex<Vec<Vec<u8>>>,
}

/// The running fake; stops on drop.
#[derive(Debug)]
pub struct FakeAmc {
    addr: SocketAddr,
    stats: Arc<Stats>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for FakeAmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAmc {
    /// Listens on an ephemeral loopback port. Call from a tokio runtime.
    pub async fn start(
        ca: &PublicCa,
        client_verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<Self, FakeAmcError> {
        let (chain, key) = ca.server_identity();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(setup)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(setup)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| FakeAmcError::Io {
                    what: "bind",
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| FakeAmcError::Io {
            what: "local addr",
            source,
        })?;
        let stats = Arc::new(Stats::default());
        let down = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&stats),
            Arc::clone(&down),
            Arc::clone(&delay_ms),
        ));
        Ok(Self {
            addr,
            stats,
            down,
            delay_ms,
            task,
        })
    }

    /// `ProfileClientVerifier` for the `cps` profile of `store`.
    pub fn cps_verifier(store: TrustStore) -> Result<Arc<dyn ClientCertVerifier>, FakeAmcError> {
        Ok(Arc::new(
            ProfileClientVerifier::new(Arc::new(store), "cps").map_err(setup)?,
        ))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>/amc/droits`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/amc/droits", self.addr.port())
    }

    /// While down, connections are closed as soon as accepted.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every answer waits this long first (a slow AMC).
    pub fn set_answer_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn full_handshakes(&self) -> u64 {
        self.stats.full_handshakes.load(Ordering::SeqCst)
    }

    pub fn resumed_handshakes(&self) -> u64 {
        self.stats.resumed_handshakes.load(Ordering::SeqCst)
    }

    pub fn refused_handshakes(&self) -> u64 {
        self.stats.refused_handshakes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// DER of the client certificates presented in full handshakes.
    pub fn client_certificates(&self) -> Vec<Vec<u8>> {
        self.stats
            .client_subjects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    stats: Arc<Stats>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        if down.load(Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let (acceptor, stats, delay_ms) =
            (acceptor.clone(), Arc::clone(&stats), Arc::clone(&delay_ms));
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::info!(error = %e, "fake AMC refused a handshake");
                    stats.refused_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            let (_, conn) = tls.get_ref();
            if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                stats.resumed_handshakes.fetch_add(1, Ordering::SeqCst);
            } else {
                stats.full_handshakes.fetch_add(1, Ordering::SeqCst);
                if let Some(cert) = conn.peer_certificates().and_then(<[_]>::first) {
                    stats
                        .client_subjects
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(cert.to_vec());
                }
            }
            let service = hyper::service::service_fn(move |req| {
                let stats = Arc::clone(&stats);
                let delay = std::time::Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                async move {
                    // The slowness under test, not a readiness wait.
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(answer(req, &stats).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>, stats: &Stats) -> Response<Full<Bytes>> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return soap(StatusCode::BAD_REQUEST, &fault("requête illisible")),
    };
    let id = std::str::from_utf8(&body).ok().and_then(|text| {
        let doc = roxmltree::Document::parse(text).ok()?;
        doc.descendants()
            .find(|n| n.has_tag_name("idDemande"))
            .and_then(|n| n.text())
            .map(str::to_owned)
    });
    match id {
        Some(id) if id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            let envelope = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                 <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\">\
                 <env:Body><dr:fournitDroits xmlns:dr=\"urn:test:visiodroits\">\
                 <dr:idDemande>{id}</dr:idDemande><dr:numeroDossier>D-{id}</dr:numeroDossier>\
                 <dr:droits>ouverts</dr:droits></dr:fournitDroits></env:Body></env:Envelope>"
            );
            soap(StatusCode::OK, &envelope)
        }
        _ => soap(StatusCode::BAD_REQUEST, &fault("idDemande absent")),
    }
}

fn fault(reason: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\"><env:Body>\
         <env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code>\
         <env:Reason><env:Text xml:lang=\"fr\">{reason}</env:Text></env:Reason></env:Fault>\
         </env:Body></env:Envelope>"
    )
}

fn soap(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/soap+xml; charset=utf-8"),
    );
    resp
}
