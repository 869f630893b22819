//! tough's `Transport` over plain HTTP/1.1 (hyper-util), with a connect+headers timeout and an
//! idle timeout between body chunks so a stalled vendor server cannot hang the updater.
//!
//! Plain HTTP is enough: every byte is verified against TUF signatures and hashes, so the
//! transport needs no confidentiality for integrity (the vendor may still front it with TLS via
//! a local proxy).

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// HTTP transport for the vendor repository.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: Client<HttpConnector, http_body_util::Empty<Bytes>>,
    timeout: Duration,
}

impl HttpTransport {
    /// `timeout` bounds connecting + receiving the headers, and each wait for a body chunk.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }
}

#[tough::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() != "http" {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let other = |u: &Url, e: &dyn std::fmt::Display| {
            TransportError::new_with_cause(TransportErrorKind::Other, u.clone(), e.to_string())
        };
        let uri: hyper::Uri = url.as_str().parse().map_err(|e| other(&url, &e))?;
        let resp = tokio::time::timeout(self.timeout, self.client.get(uri))
            .await
            .map_err(|_| other(&url, &"timed out waiting for the response headers"))?
            .map_err(|e| other(&url, &e))?;
        match resp.status().as_u16() {
            200 => {}
            404 | 403 => {
                return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
            }
            s => return Err(other(&url, &format!("HTTP status {s}"))),
        }
        // hyper's body is not Sync, tough's stream must be: a task forwards the chunks.
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, TransportError>>(4);
        let timeout = self.timeout;
        let mut body = resp.into_body();
        tokio::spawn(async move {
            loop {
                let item = match tokio::time::timeout(timeout, body.frame()).await {
                    Err(_) => Err(other(&url, &"timed out waiting for body data")),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => Err(other(&url, &e)),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Ok(data),
                        Err(_) => continue, // trailers carry no content
                    },
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Box::pin(rx))
    }
}
