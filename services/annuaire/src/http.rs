//! A small bounded HTTP/1.1 GET for the sources: `http://` or `https://` (rustls, roots
//! from a PEM bundle), with a time limit on the whole exchange and a body size limit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{AnnuaireError, Result};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// GET `url` with `headers`; the whole exchange must finish within `timeout` and the body
/// must not exceed `max_bytes`. `https://` servers are verified against `ca_bundle`.
pub(crate) async fn get(
    source_name: &'static str,
    url: &str,
    headers: &[(&str, &str)],
    ca_bundle: &Path,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes> {
    let fail = |reason: String| AnnuaireError::Source {
        source_name,
        url: url.to_owned(),
        reason,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(fail(
                "only http:// and https:// URLs are fetched".to_owned(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| fail("URL without a host".to_owned()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), ToString::to_string);
    let path = uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .to_owned();

    let exchange = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let io: Box<dyn Stream> = if https {
            let config = tls_config(ca_bundle).map_err(&fail)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("server name: {e}")))?;
            Box::new(
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS: {e}")))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| fail(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let mut request =
            hyper::Request::get(path.as_str()).header(hyper::header::HOST, &authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        let status = response.status();
        let body = if status.is_success() {
            Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(|e| fail(format!("body (limit {max_bytes} bytes): {e}")))
        } else {
            Err(fail(format!("HTTP status {status}")))
        };
        driver.abort();
        body
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AnnuaireError::Timeout {
            peer: url.to_owned(),
            context: source_name,
            after: timeout,
        })?
}

fn tls_config(ca_bundle: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_bundle)
        .map_err(|e| format!("CA bundle {}: {e}", ca_bundle.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA bundle {}: {e}", ca_bundle.display()))?;
        // A bundle may hold certificates this verifier cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "CA bundle {} holds no usable certificate",
            ca_bundle.display()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
