//! One bounded HTTPS/1.1 exchange with a server checked by a trust profile: the liste
//! blanche download (EX_2.2_5010), the Pro Santé Connect token endpoint and the MSSanté
//! autoconfiguration file. No connection is kept: each of these runs minutes or days apart.
//! Time is bounded by the caller (a `tokio::time::timeout` around the whole exchange).

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::TrustError;
use crate::store::TrustStore;
use crate::tls::{ProfileServerVerifier, mssante_client_config};

/// A TLS client that presents no certificate: the server is authenticated, we are not (or we
/// are by a token or a password inside the session).
#[derive(Debug)]
pub struct NoClientCertificate;

impl ResolvesClientCert for NoClientCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// `https://host[:port][/path]`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl HttpsUrl {
    /// Refuses anything but `https://` with a host; the reason is for the caller's message.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let rest = url.strip_prefix("https://").ok_or("not https://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "bad port")?),
            None => (authority, 443),
        };
        if host.is_empty() {
            return Err("no host");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: if path.is_empty() { "/" } else { path }.to_owned(),
        })
    }
}

/// Client configuration (MSSanté TLS profile) for servers checked by trust profile
/// `profile`, presenting no client certificate.
pub fn profile_client_config(
    trust: Arc<TrustStore>,
    profile: &str,
) -> Result<Arc<ClientConfig>, TrustError> {
    let options = trust.tls_options();
    let verifier = ProfileServerVerifier::new(trust, profile)?;
    Ok(Arc::new(mssante_client_config(
        Arc::new(NoClientCertificate),
        Arc::new(verifier),
        options,
    )?))
}

/// The status and at most `max_answer` bytes of body of `request` sent to `server_name` over
/// `tcp`. The error says what failed, for the caller's own error type.
pub async fn exchange(
    tls: Arc<ClientConfig>,
    server_name: &str,
    tcp: TcpStream,
    request: hyper::Request<Full<Bytes>>,
    max_answer: usize,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_answer)
            .collect()
            .await
            .map_err(|e| format!("body: {e} (limit {max_answer} bytes)"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_split_and_others_are_refused() {
        assert_eq!(
            HttpsUrl::parse("https://liste.mssante.fr/x/liste.xml"),
            Ok(HttpsUrl {
                host: "liste.mssante.fr".into(),
                port: 443,
                path: "/x/liste.xml".into()
            })
        );
        assert_eq!(
            HttpsUrl::parse("https://h:8443").map(|u| (u.port, u.path)),
            Ok((8443, "/".into()))
        );
        assert_eq!(HttpsUrl::parse("http://h/"), Err("not https://"));
        assert_eq!(HttpsUrl::parse("https://h:x/"), Err("bad port"));
        assert_eq!(HttpsUrl::parse("https:///p"), Err("no host"));
    }
}
