//! The OAuth 2.0 token endpoint (RFC 6749 §6, refresh_token grant) over HTTPS/1.1, the
//! server checked by a trust profile. One connection per exchange: refreshes happen at
//! most once a minute per BAL.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use passerelle_trust::{HttpsUrl, TrustStore, exchange, profile_client_config};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::PscError;

/// Token answers beyond this are refused (a JWT trio is a few KB).
const MAX_ANSWER: usize = 64 * 1024;

/// A successful refresh (RFC 6749 §5.1).
pub(crate) struct Granted {
    pub(crate) access_token: Zeroizing<String>,
    pub(crate) expires_in: Duration,
    /// A rotated refresh token, when PSC issues one (Keycloak does).
    pub(crate) refresh_token: Option<Zeroizing<String>>,
}

/// How the endpoint refused.
pub(crate) enum Refusal {
    /// `invalid_grant`: the refresh token is dead, a human must log in.
    Grant(String),
    /// `invalid_client`/`unauthorized_client`: our credentials.
    Client(String),
    /// Anything temporary: transport, 5xx, garbage.
    Temporary(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A successful code exchange: the refresh token to store, and the ID token to check.
pub(crate) struct CodeGranted {
    pub(crate) refresh_token: Zeroizing<String>,
    pub(crate) id_token: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
struct CodeAnswer {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenEndpoint {
    pub(crate) url: String,
    target: HttpsUrl,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

impl TokenEndpoint {
    pub(crate) fn new(
        url: &str,
        trust: Arc<TrustStore>,
        profile: &str,
        timeout: Duration,
    ) -> Result<Self, PscError> {
        // PSC needs no client certificate.
        let target = HttpsUrl::parse(url)
            .map_err(|why| PscError::Config(format!("token_url {url}: {why}")))?;
        let tls = profile_client_config(trust, profile)
            .map_err(|e| PscError::Config(format!("https_profile {profile}: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            target,
            timeout,
            tls,
        })
    }

    /// `grant_type=refresh_token` with `client_secret_post` client authentication.
    pub(crate) async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<Granted, Refusal> {
        let body = Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token)
                .append_pair("client_id", client_id)
                .append_pair("client_secret", client_secret)
                .finish(),
        );
        let (status, answer) = tokio::time::timeout(self.timeout, self.post(body.as_bytes()))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
            .map_err(Refusal::Temporary)?;
        if status == 200 {
            let t: TokenAnswer = serde_json::from_slice(&answer)
                .map_err(|e| Refusal::Temporary(format!("unreadable token answer: {e}")))?;
            if t.access_token.is_empty() {
                return Err(Refusal::Temporary("empty access_token".into()));
            }
            return Ok(Granted {
                access_token: Zeroizing::new(t.access_token),
                // RFC 6749 makes expires_in optional; PSC tokens live about a minute.
                expires_in: Duration::from_secs(t.expires_in.unwrap_or(60)),
                refresh_token: t
                    .refresh_token
                    .filter(|r| !r.is_empty())
                    .map(Zeroizing::new),
            });
        }
        let error = serde_json::from_slice::<ErrorAnswer>(&answer).ok();
        let why = |e: &ErrorAnswer| {
            let mut s = e.error.chars().take(100).collect::<String>();
            if let Some(d) = &e.error_description {
                s.push_str(": ");
                s.extend(d.chars().take(200));
            }
            s
        };
        match (status, &error) {
            (400 | 401, Some(e)) if e.error == "invalid_grant" => Err(Refusal::Grant(why(e))),
            (400 | 401, Some(e))
                if e.error == "invalid_client" || e.error == "unauthorized_client" =>
            {
                Err(Refusal::Client(why(e)))
            }
            (_, Some(e)) => Err(Refusal::Temporary(format!("HTTP {status}: {}", why(e)))),
            (_, None) => Err(Refusal::Temporary(format!("HTTP {status}"))),
        }
    }

    /// `grant_type=authorization_code` with the PKCE verifier (RFC 7636 §4.5) and
    /// `client_secret_post`: the end of an interactive login.
    pub(crate) async fn authorization_code(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
    ) -> Result<CodeGranted, Refusal> {
        let body = Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_verifier", code_verifier)
                .append_pair("client_id", client_id)
                .append_pair("client_secret", client_secret)
                .finish(),
        );
        let (status, answer) = tokio::time::timeout(self.timeout, self.post(body.as_bytes()))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
            .map_err(Refusal::Temporary)?;
        if status == 200 {
            let t: CodeAnswer = serde_json::from_slice(&answer)
                .map_err(|e| Refusal::Temporary(format!("unreadable token answer: {e}")))?;
            let refresh_token = t
                .refresh_token
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Refusal::Grant("no refresh_token in the answer".into()))?;
            return Ok(CodeGranted {
                refresh_token: Zeroizing::new(refresh_token),
                id_token: t.id_token.map(Zeroizing::new),
            });
        }
        let error = serde_json::from_slice::<ErrorAnswer>(&answer).ok();
        match error {
            Some(e) => {
                let mut why = e.error.chars().take(100).collect::<String>();
                if let Some(d) = &e.error_description {
                    why.push_str(": ");
                    why.extend(d.chars().take(200));
                }
                match e.error.as_str() {
                    "invalid_grant" | "invalid_request" => Err(Refusal::Grant(why)),
                    "invalid_client" | "unauthorized_client" => Err(Refusal::Client(why)),
                    _ => Err(Refusal::Temporary(format!("HTTP {status}: {why}"))),
                }
            }
            None => Err(Refusal::Temporary(format!("HTTP {status}"))),
        }
    }

    async fn post(&self, body: &[u8]) -> Result<(u16, Bytes), String> {
        let HttpsUrl { host, port, path } = &self.target;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let (status, answer) =
            exchange(Arc::clone(&self.tls), host, tcp, request, MAX_ANSWER).await?;
        Ok((status.as_u16(), answer))
    }
}
