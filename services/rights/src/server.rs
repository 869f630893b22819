//! Local side: the HTTPS endpoint the LPS posts to.

use std::future::Future;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{ClientAuth, RightsConfig, RightsError, RightsProxy};

/// The daemon's entry point: binds `config.listen`, relays with the card (`client_auth`),
/// flushes on card removal, serves until `shutdown`.
pub async fn run(
    config: RightsConfig,
    cards: passerelle_cards::CardService,
    client_auth: ClientAuth,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RightsError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| RightsError::Config(format!("rights.listen {}: {e}", config.listen)))?;
    let proxy = RightsProxy::with_client_auth(config, cards, client_auth)?;
    let watcher = proxy.watch_card_removals();
    serve(proxy, listener, tls, shutdown).await;
    watcher.abort();
    Ok(())
}

/// Serves the LPS on `listener` with `tls` (the device certificate) until `shutdown`
/// completes.
pub async fn serve(
    proxy: Arc<RightsProxy>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "rights proxy: accept failed");
                    continue;
                }
            },
        };
        let (acceptor, proxy) = (acceptor.clone(), Arc::clone(&proxy));
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::info!(error = %e, "rights proxy: LPS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, std::convert::Infallible>(handle(&proxy, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(proxy: &RightsProxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match relay(proxy, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "rights request refused");
            e.to_response()
        }
    }
}

async fn relay(
    proxy: &RightsProxy,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, RightsError> {
    if req.method() != Method::POST {
        return Err(RightsError::Method(req.method().to_string()));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .ok_or_else(|| RightsError::NotSoap12(String::new()))?;
    let ct = content_type.to_str().unwrap_or_default();
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/soap+xml"))
    {
        return Err(RightsError::NotSoap12(ct.to_owned()));
    }
    let limit = proxy.max_request_bytes();
    // Refused before reading when the length is announced.
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(RightsError::RequestTooLarge { limit });
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(RightsError::RequestTooLarge { limit });
        }
        Err(e) => return Err(RightsError::BadRequest(e.to_string())),
    };
    proxy.forward(body, content_type).await
}
