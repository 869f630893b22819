//! A small bounded HTTP GET for the sources (time limit, body size limit).

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{AnnuaireError, Result};

/// GET `url` with `headers`; the whole exchange must finish within `timeout` and the body
/// must not exceed `max_bytes`. Only `http://` is spoken here: TLS for the national gateway
/// goes through the trust crate's profiles when the daemon wires this service (issue #10).
pub(crate) async fn get(
    source_name: &'static str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes> {
    let fail = |reason: String| AnnuaireError::Source {
        source_name,
        url: url.to_owned(),
        reason,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail(
            "only http:// URLs are supported by this client".to_owned(),
        ));
    }
    let mut request = hyper::Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("request: {e}")))?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP status {status}")));
        }
        Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|e| fail(format!("body (limit {max_bytes} bytes): {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AnnuaireError::Timeout {
            peer: url.to_owned(),
            context: source_name,
            after: timeout,
        })?
}
