//! EX_2.2_5010: the HTTPS download, no authentication, the server certificate validated by a
//! trust profile (IGC-Santé). One HTTP/1.1 GET, bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use passerelle_trust::{HttpsUrl, TrustStore, exchange, profile_client_config};

use crate::error::ListeBlancheError;
use crate::verify::MAX_LIST_BYTES;

/// Downloads the list over HTTPS; no client certificate (§6.6).
#[derive(Clone, Debug)]
pub struct Fetcher {
    url: String,
    target: HttpsUrl,
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
        let target = HttpsUrl::parse(url)
            .map_err(|why| ListeBlancheError::Config(format!("url {url}: {why}")))?;
        let tls = profile_client_config(trust, https_profile)
            .map_err(|e| ListeBlancheError::Config(e.to_string()))?;
        Ok(Fetcher {
            url: url.to_owned(),
            target,
            timeout,
            tls,
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
        let HttpsUrl { host, port, path } = &self.target;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/xml, text/xml")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) =
            exchange(Arc::clone(&self.tls), host, tcp, request, MAX_LIST_BYTES).await?;
        if status != hyper::StatusCode::OK {
            return Err(format!("HTTP status {status}"));
        }
        Ok(body.to_vec())
    }
}
