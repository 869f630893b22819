//! Where CRLs come from: HTTP here, LDAP in [`crate::LdapCrlSource`]. The CAs publish CRLs over
//! plain HTTP or LDAP, which is enough because a CRL is only installed after its signature
//! verified against a pinned CA.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::crl::{CrlUpdate, MAX_CRL_BYTES};
use crate::error::TrustError;

/// A boxed future, so sources of different kinds can sit in one list.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, TrustError>> + Send + 'a>>;

/// Something that yields the current bytes of one CRL.
pub trait CrlSource: Send + Sync {
    /// Name for logs and reports (the URL).
    fn name(&self) -> String;
    /// Fetch the CRL, at most [`MAX_CRL_BYTES`].
    fn fetch(&self) -> FetchFuture<'_>;
}

/// What one [`crate::TrustStore::refresh`] did.
#[derive(Clone, Debug, Default)]
pub struct RefreshReport {
    /// CRLs newer than the cached ones, now installed.
    pub changed: Vec<CrlUpdate>,
    /// CRLs identical to the cached ones.
    pub unchanged: Vec<CrlUpdate>,
    /// (source, why) for sources that failed or served an unusable CRL; the cached CRL stays.
    pub failed: Vec<(String, String)>,
}

/// A CRL at an `http://` URL.
#[derive(Debug)]
pub struct HttpCrlSource {
    uri: hyper::Uri,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl HttpCrlSource {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, TrustError> {
        let bad = |why: &str| TrustError::Config(format!("CRL source {url:?}: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(bad(
                "only http:// URLs are supported (CRLs are signed; HTTPS adds nothing here)",
            ));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpCrlSource {
            uri,
            timeout,
            client,
        })
    }
}

impl CrlSource for HttpCrlSource {
    fn name(&self) -> String {
        self.uri.to_string()
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let err = |why: String| TrustError::CrlFetch {
                source_name: self.uri.to_string(),
                why,
            };
            let download = async {
                let response = self
                    .client
                    .get(self.uri.clone())
                    .await
                    .map_err(|e| err(format!("request failed: {e}")))?;
                if response.status() != hyper::StatusCode::OK {
                    return Err(err(format!("HTTP status {}", response.status())));
                }
                let limit = usize::try_from(MAX_CRL_BYTES).unwrap_or(usize::MAX);
                let body = Limited::new(response.into_body(), limit)
                    .collect()
                    .await
                    .map_err(|e| err(format!("body: {e} (limit {MAX_CRL_BYTES} bytes)")))?;
                Ok(body.to_bytes().to_vec())
            };
            tokio::time::timeout(self.timeout, download)
                .await
                .map_err(|_| err(format!("no complete answer within {:?}", self.timeout)))?
        })
    }
}
