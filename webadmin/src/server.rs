//! The HTTPS listener (device key in the token), the HTTP listener that only redirects, the
//! queue sampler, and the device certificate made at first start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::header::{HOST, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use passerelle_keystore::{
    KeyAlgorithm, KeyRef, Keystore, TokenCertResolver, TokenKey, TokenSigningKey,
};
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::app::{AppState, Inner, router};
use crate::auth::ClientAddr;
use crate::config::WebadminConfig;
use crate::db::{Db, Sample, now};
use crate::error::{Result, WebadminError};
use crate::services::AdminServices;

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections (SSE streams) get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound listeners, before they serve (tests read the ephemeral ports here).
#[derive(Debug)]
pub struct Webadmin {
    https: TcpListener,
    http: Option<TcpListener>,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
}

impl Webadmin {
    /// Opens the database and binds both listeners.
    pub async fn bind(
        config: WebadminConfig,
        services: AdminServices,
        cert: Arc<dyn ResolvesServerCert>,
    ) -> Result<Self> {
        let db = Db::open(&config.data_dir).await?;
        let https =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| WebadminError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let http = match config.redirect_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| WebadminError::Listen { addr, source })?,
            ),
            None => None,
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            https,
            http,
            state: AppState {
                inner: Arc::new(Inner {
                    config,
                    db,
                    services,
                    psc_pending: crate::mail::Pending::default(),
                }),
            },
            tls: Arc::new(tls),
        })
    }

    pub fn https_addr(&self) -> Result<SocketAddr> {
        self.https.local_addr().map_err(|source| WebadminError::Io {
            context: "HTTPS listener address".to_owned(),
            source,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let https_addr = self.https_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let sampler = tokio::spawn(sample_loop(self.state.clone(), stop_rx.clone()));
        let update_history = self.state.services.updates.as_ref().map(|u| {
            tokio::spawn(crate::updates::record_history(
                self.state.db.clone(),
                u.status.clone(),
            ))
        });
        let redirect = self.http.map(|listener| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let app = Router::new()
                    .fallback(move |req: Request| async move { redirect(&req, https_addr.port()) });
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        stopped(&mut stop).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "web admin HTTP redirect listener");
                }
            })
        });
        tracing::info!(listen = %https_addr, "web admin listening (HTTPS)");
        let app = router(self.state.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let mut stop = stop_rx.clone();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                accepted = self.https.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "web admin accept");
                            continue;
                        }
                    };
                    connections.spawn(connection(tcp, peer, acceptor.clone(), app.clone(), stop_rx.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
        sampler.abort();
        if let Some(h) = update_history {
            h.abort();
        }
        if let Some(r) = redirect {
            let _ = r.await;
        }
        Ok(())
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "web admin TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "web admin TLS handshake timed out");
            return;
        }
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "web admin connection");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// `http://host/path` → `https://host:port/path`; the host is kept only when it is a plain
/// name or address (no header injection, no redirect elsewhere than this appliance's name).
fn redirect(request: &Request, https_port: u16) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
        })
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        })
        .unwrap_or("localhost")
        .to_owned();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = format!("https://{host}{port}{path}");
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(v) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// Resolves once shutdown is asked (the guard of `wait_for` is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn sample_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(queue) = state.services.queue.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(state.config.sample_interval);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        match queue.metrics().await {
            Ok(m) => {
                let at = now();
                let samples: Vec<Sample> = m
                    .kinds
                    .iter()
                    .map(|k| Sample {
                        at,
                        kind: k.kind.clone(),
                        depth: i64::try_from(k.depth).unwrap_or(i64::MAX),
                        oldest_secs: i64::try_from(k.oldest_age.as_secs()).unwrap_or(i64::MAX),
                    })
                    .collect();
                if let Err(e) = state.db.record_samples(&samples).await {
                    tracing::warn!(error = %e, "recording queue samples");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading queue metrics for the web admin charts"),
        }
    }
}

/// Binds and serves until `shutdown`: what the daemon calls.
pub async fn serve(
    config: WebadminConfig,
    services: AdminServices,
    cert: Arc<dyn ResolvesServerCert>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Webadmin::bind(config, services, cert)
        .await?
        .run(shutdown)
        .await
}

/// rcgen signer over a token key: the self-signed device certificate is signed in the token.
struct TokenRcgenSigner {
    key: TokenKey,
}

impl rcgen::PublicKeyData for TokenRcgenSigner {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key_bits()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TokenRcgenSigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        use rustls::sign::SigningKey as _;
        let signer = TokenSigningKey::new(self.key.clone())
            .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The web admin's TLS identity: key `label` in the token with its certificate. At first start
/// (no such key, or a key without certificate) an EC P-256 key is generated in the token and a
/// self-signed certificate for `name` is signed by it and stored beside it.
pub async fn device_certificate(
    keystore: &Keystore,
    label: &str,
    name: &str,
    organization: &str,
    work_dir: &std::path::Path,
) -> Result<Arc<TokenCertResolver>> {
    let key_ref = KeyRef::Label(label.to_owned());
    if let Ok(certified) = keystore.certified_key(&key_ref).await {
        return Ok(Arc::new(TokenCertResolver::new(certified)));
    }
    let key = if let Ok(k) = keystore.key(&key_ref).await {
        k
    } else {
        keystore.generate(label, KeyAlgorithm::EcP256).await?;
        keystore.key(&key_ref).await?
    };
    if key.algorithm() != KeyAlgorithm::EcP256 {
        return Err(WebadminError::DeviceCertificate(format!(
            "key {label} is not EC P-256"
        )));
    }
    let name = name.to_owned();
    let organization = organization.to_owned();
    let pem = tokio::task::spawn_blocking(move || -> std::result::Result<String, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "FR");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, organization);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let today = time::OffsetDateTime::now_utc();
        params.not_before = today - time::Duration::days(1);
        params.not_after = today + time::Duration::days(3650);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&TokenRcgenSigner { key })?;
        Ok(cert.pem())
    })
    .await
    .map_err(|_| WebadminError::DeviceCertificate("certificate task panicked".to_owned()))?
    .map_err(|e| WebadminError::DeviceCertificate(e.to_string()))?;
    let path = work_dir.join(format!(".{label}.self-signed.pem"));
    std::fs::write(&path, pem).map_err(|source| WebadminError::Io {
        context: format!("write {}", path.display()),
        source,
    })?;
    let imported = keystore.import_certificate(&key_ref, &path).await;
    let _ = std::fs::remove_file(&path);
    imported?;
    tracing::info!(
        key.label = label,
        "web admin device certificate generated in the token (self-signed)"
    );
    Ok(Arc::new(TokenCertResolver::new(
        keystore.certified_key(&key_ref).await?,
    )))
}
