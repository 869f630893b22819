//! EX_2.2_5010: the HTTPS download, no authentication, the server certificate validated by a
//! trust profile (IGC-Santé). One HTTP/1.1 GET, bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use passerelle_trust::{ProfileServerVerifier, TrustStore, mssante_client_config};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

use crate::error::ListeBlancheError;
use crate::verify::MAX_LIST_BYTES;

/// Fetching the list needs no client certificate (§6.6).
#[derive(Debug)]
struct NoClientCertificate;

impl ResolvesClientCert for NoClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Downloads the list over HTTPS.
#[derive(Clone, Debug)]
pub struct Fetcher {
    url: String,
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

impl Fetcher {
    /// `url` must be `https://host[:port]/path`; the server is checked with `https_profile`.
    pub fn new(
        url: &str,
        trust: Arc<TrustStore>,
        https_profile: &str,
        timeout: Duration,
    ) -> Result<Self, ListeBlancheError> {
        let bad = |why: &str| ListeBlancheError::Config(format!("url {url}: {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("not https://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, 443),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let options = trust.tls_options();
        let verifier = ProfileServerVerifier::new(trust, https_profile)
            .map_err(|e| ListeBlancheError::Config(e.to_string()))?;
        let config =
            mssante_client_config(Arc::new(NoClientCertificate), Arc::new(verifier), options)
                .map_err(|e| ListeBlancheError::Config(e.to_string()))?;
        Ok(Fetcher {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            timeout,
            tls: Arc::new(config),
        })
    }

    /// The configured URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET the list: the body of a 200 answer, at most [`MAX_LIST_BYTES`].
    pub async fn fetch(&self) -> Result<Vec<u8>, ListeBlancheError> {
        tokio::time::timeout(self.timeout, self.get())
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {:?}", self.timeout)))
            .map_err(|why| ListeBlancheError::Fetch {
                url: self.url.clone(),
                why,
            })
    }

    async fn get(&self) -> Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::get(&self.path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::ACCEPT, "application/xml, text/xml")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            driver.abort();
            return Err(format!("HTTP status {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_LIST_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        driver.abort();
        Ok(body.to_vec())
    }
}
