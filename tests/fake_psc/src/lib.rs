//! A fake Pro Santé Connect for tests: the real protocol over real sockets (HTTPS/1.1 on
//! loopback, a test-PKI server certificate), Keycloak paths of the `esante-wallet` realm.
//!
//! - token endpoint: `refresh_token` grant with `client_secret_post`, RS256 JWT access
//!   tokens (claims shaped like the EX_LPS_0900 example), optional refresh-token rotation,
//!   `invalid_grant` for unknown/revoked refresh tokens, `invalid_client` for bad secrets;
//! - authorize endpoint (`/auth`): a tiny consent page whose button approves, then a redirect
//!   to the client's `redirect_uri` with `code` and `state`; the token endpoint exchanges the
//!   code (`authorization_code` grant) only with the matching `redirect_uri` and PKCE S256
//!   verifier, once, and answers a refresh token and an ID token carrying the `nonce`;
//! - JWKS (`/certs`) with the RS256 public key;
//! - userinfo returning `SubjectNameID` for a valid bearer, 401 otherwise;
//! - token introspection (RFC 7662, form POST) for Dovecot's `oauth2` passdb: `active`,
//!   `username` = the BAL the practitioner's session was opened for, `SubjectNameID`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use passerelle_testpki::{IssuedCert, LeafSpec, TestPki, dns_san, names};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::RsaKeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::TcpListener;

pub mod env;

/// Name of the fake's certificate in the test PKI.
pub const CERT_NAME: &str = "fake-psc";
/// Realm prefix of every endpoint (PSC runs Keycloak).
pub const REALM: &str = "/auth/realms/esante-wallet";
/// Default client credentials.
pub const CLIENT_ID: &str = "passerelle-test";
pub const CLIENT_SECRET: &str = "secret-de-test";

const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FakePscError {
    #[error("fake PSC certificate: {0}")]
    Pki(String),
    #[error("fake PSC TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("fake PSC listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Issues the fake's server certificate (SAN `localhost` and `127.0.0.1`) under the
/// IGC-Santé ORG CA of `pki`, so that a `mssante-server` trust profile accepts it.
pub fn issue_cert(pki: &mut TestPki) -> Result<&IssuedCert, FakePscError> {
    let pki_err = |e: passerelle_testpki::TestPkiError| FakePscError::Pki(e.to_string());
    let spec = LeafSpec::mssante_server(
        CERT_NAME,
        "localhost",
        "318751275100020",
        "AGENCE DU NUMERIQUE EN SANTE",
        "Paris (75)",
    )
    .map_err(pki_err)?
    .with_sans(vec![
        dns_san("localhost").map_err(pki_err)?,
        rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ]);
    pki.issue_leaf(names::ACI_EL_ORG, spec).map_err(pki_err)
}

#[derive(Debug, Clone)]
struct Session {
    bal: String,
    subject: String,
}

#[derive(Debug, Clone)]
struct Access {
    session: Session,
    exp: u64,
}

/// A code the authorize endpoint issued, waiting for its exchange.
#[derive(Debug, Clone)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    session: Session,
    expires: u64,
}

#[derive(Debug)]
struct State {
    codes: HashMap<String, PendingCode>,
    /// Who the next interactive login is (BAL, practitioner IdNat).
    next_login: Session,
    client_id: String,
    client_secret: String,
    refresh: HashMap<String, Session>,
    access: HashMap<String, Access>,
    access_lifetime: Duration,
    rotate: bool,
    unavailable: bool,
    introspection_refuses: bool,
}

#[derive(Debug, Default)]
struct Counters {
    token_requests: AtomicUsize,
    code_exchanges: AtomicUsize,
    introspections: AtomicUsize,
    userinfo: AtomicUsize,
}

struct Shared {
    state: Mutex<State>,
    counters: Counters,
    key: RsaKeyPair,
    base: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The running fake; its accept loop stops on drop.
#[derive(Debug)]
pub struct FakePsc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    SystemRandom::new().fill(&mut b).unwrap_or_default();
    format!("{prefix}{}", B64URL.encode(b))
}

impl FakePsc {
    /// Serves on an ephemeral loopback port with the certificate [`issue_cert`] made (its
    /// key also signs the JWTs). Call inside a tokio runtime.
    pub async fn start(pki: &TestPki) -> Result<Self, FakePscError> {
        let pki_err = |e: passerelle_testpki::TestPkiError| FakePscError::Pki(e.to_string());
        let leaf = pki.cert(CERT_NAME).map_err(pki_err)?;
        let chain: Vec<CertificateDer<'static>> = pki
            .chain(CERT_NAME)
            .map_err(pki_err)?
            .into_iter()
            .filter(|c| c.issuer().is_some())
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect();
        let pkcs8 = leaf.key().pkcs8_der().to_vec();
        let key = RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| FakePscError::Pki(format!("RSA key: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                codes: HashMap::new(),
                next_login: Session {
                    bal: String::new(),
                    subject: "899700218896".to_owned(),
                },
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.to_owned(),
                refresh: HashMap::new(),
                access: HashMap::new(),
                access_lifetime: Duration::from_secs(60),
                rotate: true,
                unavailable: false,
                introspection_refuses: false,
            }),
            counters: Counters::default(),
            key,
            base: format!("https://127.0.0.1:{}", addr.port()),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("{}{REALM}/protocol/openid-connect/token", self.shared.base)
    }
    pub fn authorize_url(&self) -> String {
        format!("{}{REALM}/protocol/openid-connect/auth", self.shared.base)
    }
    pub fn introspection_url(&self) -> String {
        format!(
            "{}{REALM}/protocol/openid-connect/token/introspect",
            self.shared.base
        )
    }
    pub fn userinfo_url(&self) -> String {
        format!(
            "{}{REALM}/protocol/openid-connect/userinfo",
            self.shared.base
        )
    }
    pub fn jwks_url(&self) -> String {
        format!("{}{REALM}/protocol/openid-connect/certs", self.shared.base)
    }

    /// What an interactive CPS/e-CPS login for `bal` by the practitioner `subject`
    /// (IdNat, e.g. `899700218896`) hands the appliance: a refresh token.
    pub fn login(&self, bal: &str, subject: &str) -> String {
        let rt = random_token("rt-");
        self.state().refresh.insert(
            rt.clone(),
            Session {
                bal: bal.to_owned(),
                subject: subject.to_owned(),
            },
        );
        rt
    }

    /// Who the next interactive login (authorize endpoint) is: the BAL the session is for
    /// (introspection's `username`) and the practitioner's IdNat.
    pub fn set_next_login(&self, bal: &str, subject: &str) {
        self.state().next_login = Session {
            bal: bal.to_owned(),
            subject: subject.to_owned(),
        };
    }

    /// Codes exchanged successfully at the token endpoint.
    pub fn code_exchanges(&self) -> usize {
        self.shared.counters.code_exchanges.load(Ordering::SeqCst)
    }

    /// Ends every PSC session of `bal` (SSO session over): its refresh tokens are refused.
    pub fn end_sessions(&self, bal: &str) {
        self.state().refresh.retain(|_, s| s.bal != bal);
    }

    /// Lifetime of the access tokens issued from now on.
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.state().access_lifetime = lifetime;
    }

    /// Whether each refresh also rotates the refresh token (Keycloak's default: yes).
    pub fn set_rotation(&self, on: bool) {
        self.state().rotate = on;
    }

    /// Answer 503 to everything.
    pub fn set_unavailable(&self, on: bool) {
        self.state().unavailable = on;
    }

    /// Introspection answers `active: false` for every token, as if PSC no longer
    /// recognised the practitioner: the operator refuses even fresh tokens.
    pub fn set_introspection_refuses(&self, on: bool) {
        self.state().introspection_refuses = on;
    }

    /// Makes every issued access token expired (as if their minute had passed).
    pub fn expire_access_tokens(&self) {
        for a in self.state().access.values_mut() {
            a.exp = 0;
        }
    }

    /// An access token minted directly for `bal`, valid for `lifetime`.
    pub fn mint_access_token(&self, bal: &str, subject: &str, lifetime: Duration) -> String {
        mint(
            &self.shared,
            &mut self.state(),
            &Session {
                bal: bal.to_owned(),
                subject: subject.to_owned(),
            },
            lifetime,
        )
    }

    pub fn token_requests(&self) -> usize {
        self.shared.counters.token_requests.load(Ordering::SeqCst)
    }
    pub fn introspections(&self) -> usize {
        self.shared.counters.introspections.load(Ordering::SeqCst)
    }
    pub fn userinfo_requests(&self) -> usize {
        self.shared.counters.userinfo.load(Ordering::SeqCst)
    }

    /// The RS256 public key as JWKS `n`/`e` (base64url), for tests that verify tokens.
    pub fn public_key_components(&self) -> (Vec<u8>, Vec<u8>) {
        let c = components(&self.shared.key);
        (c.n, c.e)
    }
}

fn components(key: &RsaKeyPair) -> ring::rsa::PublicKeyComponents<Vec<u8>> {
    ring::rsa::PublicKeyComponents::from(key.public())
}

fn mint(shared: &Shared, state: &mut State, session: &Session, lifetime: Duration) -> String {
    let iat = now();
    let exp = iat + lifetime.as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": CERT_NAME});
    let claims = json!({
        "exp": exp, "iat": iat, "auth_time": iat,
        "jti": random_token(""),
        "iss": format!("{}{REALM}", shared.base),
        "sub": format!("f:fake:{}", session.subject),
        "typ": "Bearer", "azp": state.client_id, "acr": "eidas2",
        "scope": "openid scope_all",
        "preferred_username": session.subject,
    });
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut sig = vec![0u8; shared.key.public().modulus_len()];
    // A fake's own key and buffer sized from it: signing cannot fail here.
    let _ = shared.key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    );
    let jwt = format!("{signing_input}.{}", B64URL.encode(sig));
    state.access.insert(
        jwt.clone(),
        Access {
            session: session.clone(),
            exp,
        },
    );
    jwt
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(answer(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// The token endpoint: `refresh_token` grant with `client_secret_post`.
fn grant(
    shared: &Shared,
    state: &mut State,
    form: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    shared
        .counters
        .token_requests
        .fetch_add(1, Ordering::SeqCst);
    if form.get("client_id") != Some(&state.client_id)
        || form.get("client_secret") != Some(&state.client_secret)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        return code_grant(shared, state, form);
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "refresh_token only",
        );
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    let Some(session) = state.refresh.get(&rt).cloned() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Session not active",
        );
    };
    let lifetime = state.access_lifetime;
    let access = mint(shared, state, &session, lifetime);
    let mut answer = json!({
        "access_token": access, "token_type": "Bearer",
        "expires_in": lifetime.as_secs(), "scope": "openid scope_all",
    });
    if state.rotate {
        state.refresh.remove(&rt);
        let next = random_token("rt-");
        state.refresh.insert(next.clone(), session);
        answer["refresh_token"] = json!(next);
    }
    reply(StatusCode::OK, &answer)
}

/// The `authorization_code` grant: the code once, with its redirect URI and PKCE verifier.
fn code_grant(
    shared: &Shared,
    state: &mut State,
    form: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let code = form.get("code").cloned().unwrap_or_default();
    let Some(pending) = state.codes.remove(&code) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Code not valid");
    };
    if pending.expires <= now()
        || form.get("client_id") != Some(&pending.client_id)
        || form.get("redirect_uri") != Some(&pending.redirect_uri)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Incorrect redirect_uri or expired code",
        );
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let computed = B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    if verifier.len() < 43 || computed != pending.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed: Code verifier not specified or invalid",
        );
    }
    shared
        .counters
        .code_exchanges
        .fetch_add(1, Ordering::SeqCst);
    let lifetime = state.access_lifetime;
    let access = mint(shared, state, &pending.session, lifetime);
    let rt = random_token("rt-");
    state.refresh.insert(rt.clone(), pending.session.clone());
    let iat = now();
    let id_claims = json!({
        "iss": format!("{}{REALM}", shared.base),
        "sub": format!("f:fake:{}", pending.session.subject),
        "aud": pending.client_id, "nonce": pending.nonce,
        "iat": iat, "exp": iat + 300, "auth_time": iat, "acr": "eidas2",
        "SubjectNameID": pending.session.subject,
    });
    let id_token = sign_jwt(shared, &id_claims);
    reply(
        StatusCode::OK,
        &json!({
            "access_token": access, "token_type": "Bearer",
            "expires_in": lifetime.as_secs(), "refresh_token": rt,
            "id_token": id_token, "scope": "openid scope_all",
        }),
    )
}

fn sign_jwt(shared: &Shared, claims: &serde_json::Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": CERT_NAME});
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut sig = vec![0u8; shared.key.public().modulus_len()];
    // A fake's own key and buffer sized from it: signing cannot fail here.
    let _ = shared.key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    );
    format!("{signing_input}.{}", B64URL.encode(sig))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /auth`: checks the request and shows a consent page whose button posts it back.
fn authorize_page(state: &State, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != state.client_id
        || !get("redirect_uri").starts_with("https://")
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || get("state").is_empty()
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "response_type=code, client_id, https redirect_uri, state and PKCE S256 required",
        );
    }
    let mut hidden = String::new();
    for k in [
        "client_id",
        "redirect_uri",
        "state",
        "nonce",
        "code_challenge",
    ] {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            html_escape(&get(k))
        );
    }
    let page = format!(
        "<!DOCTYPE html><html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Pro Santé Connect (test)</title></head>\
         <body><h1>Pro Santé Connect (faux, pour les tests)</h1><p>Connexion de {} pour le client {}.</p>\
         <form method=\"post\" action=\"{REALM}/protocol/openid-connect/auth\">{hidden}\
         <button type=\"submit\" id=\"psc-approve\">Autoriser</button></form></body></html>",
        html_escape(&state.next_login.subject),
        html_escape(&state.client_id),
    );
    let mut resp = Response::new(Full::new(Bytes::from(page)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// `POST /auth`: the practitioner approved; redirect to the client with a fresh code.
fn authorize_approve(state: &mut State, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let redirect_uri = get("redirect_uri");
    if get("client_id") != state.client_id || !redirect_uri.starts_with("https://") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "bad client");
    }
    let code = random_token("code-");
    state.codes.insert(
        code.clone(),
        PendingCode {
            client_id: get("client_id"),
            redirect_uri: redirect_uri.clone(),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            session: state.next_login.clone(),
            expires: now() + 60,
        },
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .finish();
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(location) =
        hyper::header::HeaderValue::from_str(&format!("{redirect_uri}{sep}{query}"))
    {
        resp.headers_mut().insert(hyper::header::LOCATION, location);
    }
    resp
}

async fn answer(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Ok(body) = Limited::new(req.into_body(), MAX_REQUEST).collect().await else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "body too large");
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    if state.unavailable {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "maintenance",
        );
    }
    let Some(endpoint) = path.strip_prefix(REALM) else {
        return oauth_error(StatusCode::NOT_FOUND, "not_found", "no such realm");
    };
    match (method, endpoint) {
        (Method::POST, "/protocol/openid-connect/token") => grant(shared, &mut state, &form),
        (Method::GET, "/protocol/openid-connect/auth") => authorize_page(&state, &query),
        (Method::POST, "/protocol/openid-connect/auth") => authorize_approve(&mut state, &form),
        (Method::POST, "/protocol/openid-connect/token/introspect") => {
            shared
                .counters
                .introspections
                .fetch_add(1, Ordering::SeqCst);
            let token = form.get("token").cloned().or(bearer).unwrap_or_default();
            match state.access.get(&token) {
                Some(a) if a.exp > now() && !state.introspection_refuses => reply(
                    StatusCode::OK,
                    &json!({
                        "active": true, "username": a.session.bal,
                        "SubjectNameID": a.session.subject, "exp": a.exp,
                        "scope": "openid scope_all", "token_type": "Bearer",
                    }),
                ),
                _ => reply(StatusCode::OK, &json!({"active": false})),
            }
        }
        (Method::GET, "/protocol/openid-connect/userinfo") => {
            shared.counters.userinfo.fetch_add(1, Ordering::SeqCst);
            match bearer.and_then(|t| state.access.get(&t).cloned()) {
                Some(a) if a.exp > now() => reply(
                    StatusCode::OK,
                    &json!({
                        "sub": format!("f:fake:{}", a.session.subject),
                        "SubjectNameID": a.session.subject,
                        "SubjectRole": ["10^1.2.250.1.213.1.1.5.5"],
                        "preferred_username": a.session.subject,
                    }),
                ),
                _ => oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Token verification failed",
                ),
            }
        }
        (Method::GET, "/protocol/openid-connect/certs") => {
            let c = components(&shared.key);
            reply(
                StatusCode::OK,
                &json!({"keys": [{
                    "kty": "RSA", "kid": CERT_NAME, "use": "sig", "alg": "RS256",
                    "n": B64URL.encode(&c.n),
                    "e": B64URL.encode(&c.e),
                }]}),
            )
        }
        (Method::GET, "/.well-known/wallet-openid-configuration") => reply(
            StatusCode::OK,
            &json!({
                "issuer": format!("{}{REALM}", shared.base),
                "authorization_endpoint": format!("{}{REALM}/protocol/openid-connect/auth", shared.base),
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint": format!("{}{REALM}/protocol/openid-connect/token", shared.base),
                "userinfo_endpoint": format!("{}{REALM}/protocol/openid-connect/userinfo", shared.base),
                "introspection_endpoint": format!("{}{REALM}/protocol/openid-connect/token/introspect", shared.base),
                "jwks_uri": format!("{}{REALM}/protocol/openid-connect/certs", shared.base),
            }),
        ),
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}
