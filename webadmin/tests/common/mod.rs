//! A web admin on ephemeral loopback ports with the test PKI's device certificate, and a small
//! HTTPS client that keeps cookies and reads the CSRF token from pages.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod fixtures;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use passerelle_testpki::{PkiOptions, TestPki, names};
use passerelle_webadmin::{AdminServices, LockoutPolicy, Webadmin, WebadminConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

pub struct TestServer {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    pub ca_der: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(services: AdminServices, lockout: LockoutPolicy) -> anyhow::Result<Self> {
        Self::start_with(services, move |c| c.lockout = lockout).await
    }

    /// A server whose configuration `adjust` may change (timeouts, sampling).
    pub async fn start_with(
        services: AdminServices,
        adjust: impl FnOnce(&mut WebadminConfig),
    ) -> anyhow::Result<Self> {
        let pki = TestPki::generate(&PkiOptions::new(8))?;
        let device = pki.cert(names::DEVICE_WEBADMIN)?;
        let ca = pki.cert(names::DEVICE_CA)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(device.key().pkcs8_der().to_vec()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let certified = CertifiedKey::new(
            vec![device.der().to_vec().into(), ca.der().to_vec().into()],
            signing,
        );
        let dir = tempfile::tempdir()?;
        let mut config = WebadminConfig::new("127.0.0.1:0".parse()?, dir.path().join("data"));
        config.redirect_listen = Some("127.0.0.1:0".parse()?);
        config.token_pin_file = Some(dir.path().join("token.pin"));
        adjust(&mut config);
        let admin =
            Webadmin::bind(config, services, Arc::new(FixedCert(Arc::new(certified)))).await?;
        let https = admin.https_addr()?;
        let http = admin
            .http_addr()
            .ok_or_else(|| anyhow!("no redirect listener"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            if let Err(e) = admin
                .run(async move {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("web admin: {e}");
            }
        });
        Ok(Self {
            https,
            http,
            dir,
            ca_der: ca.der().to_vec(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn client(&self) -> Client {
        Client::new(self)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub fn default_lockout() -> LockoutPolicy {
    LockoutPolicy::default()
}

/// One response, body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The value of the hidden `csrf` field (or of the multipart form's `?csrf=`).
    pub fn csrf(&self) -> anyhow::Result<String> {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).context("no csrf field in page")? + marker.len();
        let end = self.body[start..].find('"').context("unterminated csrf")? + start;
        Ok(self.body[start..end].to_owned())
    }
}

/// HTTPS client trusting the device CA, with a cookie jar.
pub struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    pub cookies: BTreeMap<String, String>,
    pub extra_headers: Vec<(String, String)>,
}

impl Client {
    fn new(server: &TestServer) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(server.ca_der.clone().into())
            .unwrap_or_else(|e| panic!("device CA: {e}"));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            addr: server.https,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            cookies: BTreeMap::new(),
            extra_headers: Vec::new(),
        }
    }

    /// A TLS connection to the server, for streaming reads (SSE).
    pub async fn connect(
        &self,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        Ok(self
            .tls
            .connect(ServerName::try_from("passerelle.local")?, tcp)
            .await?)
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let tls = self
            .tls
            .connect(ServerName::try_from("passerelle.local")?, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "passerelle.local");
        if !self.cookies.is_empty() {
            let jar = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header("cookie", jar);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in &self.extra_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let response = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        let reply = Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for cookie in reply.set_cookies() {
            let pair = cookie.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || cookie.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok(reply)
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.send("GET", path, None, Vec::new()).await
    }

    pub async fn post_form(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            body.into_bytes(),
        )
        .await
    }

    /// The first-run setup with valid values.
    pub async fn setup(&mut self) -> anyhow::Result<Reply> {
        let page = self.get("/setup").await?;
        if page.status != StatusCode::OK {
            bail!("GET /setup: {}", page.status);
        }
        let csrf = page.csrf()?;
        self.post_form("/setup", &setup_fields(&csrf)).await
    }

    /// Logs in; returns the CSRF token of the session.
    pub async fn login(&mut self, user: &str, password: &str) -> anyhow::Result<Reply> {
        let page = self.get("/login").await?;
        let csrf = page.csrf()?;
        self.post_form(
            "/login",
            &[("csrf", &csrf), ("user", user), ("password", password)],
        )
        .await
    }

    pub async fn session_csrf(&mut self) -> anyhow::Result<String> {
        self.get("/").await?.csrf()
    }
}

pub fn setup_fields(csrf: &str) -> Vec<(&str, &str)> {
    vec![
        ("csrf", csrf),
        ("user", ADMIN),
        ("password", PASSWORD),
        ("password2", PASSWORD),
        ("profile", "practice"),
        ("network", "dhcp"),
        ("ntp", "ntp1.example.fr 192.0.2.123"),
        ("pin", "1234"),
    ]
}

/// A set-up server and a logged-in client.
pub async fn logged_in(services: AdminServices) -> anyhow::Result<(TestServer, Client)> {
    let server = TestServer::start(services, default_lockout()).await?;
    let mut client = server.client();
    let r = client.setup().await?;
    anyhow::ensure!(
        r.status == StatusCode::FOUND,
        "setup: {} {}",
        r.status,
        r.body
    );
    let r = client.login(ADMIN, PASSWORD).await?;
    anyhow::ensure!(
        r.status == StatusCode::FOUND && r.location() == Some("/"),
        "login: {} {}",
        r.status,
        r.body
    );
    Ok((server, client))
}
