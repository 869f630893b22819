//! Application state, the route table and the guards every request passes.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::auth::{self, CSRF_FIELD, ClientAddr, PRE_COOKIE, SESSION_COOKIE, Session};
use crate::config::WebadminConfig;
use crate::db::{AuditEntry, Db, now};
use crate::i18n::{Lang, cookie};
use crate::services::AdminServices;
use crate::{assets, billing, mail, pages, updates};

/// Who may reach a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the login form and the static assets of the login page.
    Public,
    /// Only while the first-run setup is not done; afterwards it redirects to the login.
    SetupOnly,
    /// A valid session, after setup.
    Authenticated,
}

/// One row of the route table.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    /// axum path syntax; `{x}` segments are parameters.
    pub path: &'static str,
    pub method: &'static str,
    pub access: Access,
}

/// Largest form body (the certificate upload has its own, larger limit).
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Largest certificate upload (a leaf and its chain in PEM fit comfortably).
pub const MAX_CERT_UPLOAD_BYTES: usize = 64 * 1024;

/// Every route, once. The router is built from this table and the route-guard test walks it,
/// so a route cannot be added without its access class.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/static/app.css",
        method: "GET",
        access: Access::Public,
    },
    RouteSpec {
        path: "/static/app.js",
        method: "GET",
        access: Access::Public,
    },
    RouteSpec {
        path: "/login",
        method: "GET",
        access: Access::Public,
    },
    RouteSpec {
        path: "/login",
        method: "POST",
        access: Access::Public,
    },
    RouteSpec {
        path: "/setup",
        method: "GET",
        access: Access::SetupOnly,
    },
    RouteSpec {
        path: "/setup",
        method: "POST",
        access: Access::SetupOnly,
    },
    RouteSpec {
        path: "/logout",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/events",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/messagerie",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/messagerie/test",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/messagerie/psc",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/messagerie/psc/callback",
        method: "GET",
        access: Access::Public,
    },
    RouteSpec {
        path: "/messagerie/psc/fin",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/messagerie/bal",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/facturation",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/facturation/renvoyer",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cartes",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cartes/pin",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cles",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cles/generer",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cles/csr",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/cles/certificat",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/liste-blanche",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/annuaire",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/mises-a-jour",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/mises-a-jour/verifier",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/mises-a-jour/installer",
        method: "POST",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/mises-a-jour/progression",
        method: "GET",
        access: Access::Authenticated,
    },
    RouteSpec {
        path: "/journal",
        method: "GET",
        access: Access::Authenticated,
    },
];

/// The handler of a table row.
fn handler(spec: &RouteSpec) -> MethodRouter<AppState> {
    match (spec.method, spec.path) {
        ("GET", "/static/app.css") => get(assets::css),
        ("GET", "/static/app.js") => get(assets::js),
        ("GET", "/login") => get(pages::login_form),
        ("POST", "/login") => post(pages::login_submit),
        ("GET", "/setup") => get(pages::setup_form),
        ("POST", "/setup") => post(pages::setup_submit),
        ("POST", "/logout") => post(pages::logout),
        ("GET", "/") => get(pages::dashboard),
        ("GET", "/events") => get(pages::events),
        ("GET", "/messagerie") => get(mail::messagerie),
        ("POST", "/messagerie/test") => post(mail::test),
        ("POST", "/messagerie/psc") => post(mail::psc_start),
        ("GET", "/messagerie/psc/callback") => get(mail::psc_callback),
        ("GET", "/messagerie/psc/fin") => get(mail::psc_finish),
        ("POST", "/messagerie/bal") => post(mail::add_bal),
        ("GET", "/facturation") => get(billing::facturation),
        ("POST", "/facturation/renvoyer") => post(billing::resend),
        ("GET", "/cartes") => get(pages::cartes),
        ("POST", "/cartes/pin") => post(pages::cartes_pin),
        ("GET", "/cles") => get(pages::keys),
        ("POST", "/cles/generer") => post(pages::key_generate),
        ("POST", "/cles/csr") => post(pages::key_csr),
        ("POST", "/cles/certificat") => {
            post(pages::key_import).layer(DefaultBodyLimit::max(MAX_CERT_UPLOAD_BYTES + 4096))
        }
        ("GET", "/liste-blanche") => get(pages::liste_blanche),
        ("GET", "/annuaire") => get(pages::annuaire),
        ("GET", "/mises-a-jour") => get(updates::mises_a_jour),
        ("POST", "/mises-a-jour/verifier") => post(updates::check_now),
        ("POST", "/mises-a-jour/installer") => post(updates::install),
        ("GET", "/mises-a-jour/progression") => get(updates::progress),
        ("GET", "/journal") => get(pages::journal),
        (method, path) => unreachable!("route table row without handler: {method} {path}"),
    }
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    pub config: WebadminConfig,
    pub db: Db,
    pub services: AdminServices,
    /// PSC sign-ins waiting for their redirect back, by `state`.
    pub psc_pending: mail::Pending,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Writes one audit line; an audit failure is logged, never hidden.
    pub async fn audit(
        &self,
        actor: &str,
        addr: &ClientAddr,
        action: &str,
        detail: &str,
        ok: bool,
    ) {
        let entry = AuditEntry {
            at: now(),
            actor: actor.to_owned(),
            address: addr.0.ip().to_string(),
            action: action.to_owned(),
            detail: detail.to_owned(),
            outcome: if ok { "ok" } else { "refused" }.to_owned(),
        };
        if let Err(e) = self.db.audit(&entry).await {
            tracing::error!(action, error = %e, "audit log write failed");
        }
    }

    pub async fn setup_done(&self) -> bool {
        match self.db.setup().await {
            Ok(s) => s.is_some(),
            Err(e) => {
                // Unknown state: behave as done, so setup never reopens on a database error.
                tracing::error!(error = %e, "reading setup state");
                true
            }
        }
    }

    pub async fn session_of(&self, headers: &axum::http::HeaderMap) -> Option<Session> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let id_hash = auth::hash_token(&token);
        let idle = i64::try_from(self.config.idle_timeout.as_secs()).unwrap_or(i64::MAX);
        match self.db.session(&id_hash, idle).await {
            Ok(Some(row)) => Some(Session {
                user: row.user,
                csrf: row.csrf,
                id_hash,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "reading session");
                None
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let mr = handler(spec).layer(from_fn_with_state(state.clone(), csrf_guard));
        let mr = match spec.access {
            Access::Public => mr,
            Access::SetupOnly => mr.layer(from_fn_with_state(state.clone(), setup_guard)),
            Access::Authenticated => mr.layer(from_fn_with_state(state.clone(), session_guard)),
        };
        router = router.route(spec.path, mr);
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(from_fn(language))
        .layer(from_fn(security_headers))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404").into_response()
}

/// A 302 to `to` (a fixed local path).
pub fn found(to: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    response
}

async fn setup_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.setup_done().await {
        return found("/login");
    }
    next.run(request).await
}

async fn session_guard(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.setup_done().await {
        return found("/setup");
    }
    match state.session_of(request.headers()).await {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None if request.method() == Method::GET => found("/login"),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// Every state-changing request carries the CSRF token: the session's, or before login the
/// pre-session cookie's (double submit). Form bodies carry it as a field; multipart bodies in
/// the query string. Compared in constant time.
async fn csrf_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let expected = match request.extensions().get::<Session>() {
        Some(session) => Some(session.csrf.clone()),
        None => match state.session_of(request.headers()).await {
            Some(session) => Some(session.csrf),
            None => cookie(request.headers(), PRE_COOKIE),
        },
    };
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let (given, body) = if content_type.starts_with("multipart/form-data") {
        let given = parts
            .uri
            .query()
            .and_then(|q| field(q.as_bytes(), CSRF_FIELD));
        (given, body)
    } else {
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        (field(&bytes, CSRF_FIELD), Body::from(bytes))
    };
    let ok = matches!((&expected, &given), (Some(e), Some(g)) if auth::tokens_equal(e, g));
    if !ok {
        let addr = parts.extensions.get::<ClientAddr>().copied();
        if let Some(addr) = addr {
            state
                .audit("-", &addr, "csrf_refused", parts.uri.path(), false)
                .await;
        }
        let lang = parts.extensions.get::<Lang>().copied().unwrap_or(Lang::Fr);
        return (StatusCode::FORBIDDEN, lang.t("err.csrf")).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

fn field(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Picks the language and, when the switch was used, remembers it in a cookie.
async fn language(mut request: Request, next: Next) -> Response {
    let switch = request
        .uri()
        .query()
        .and_then(|q| field(q.as_bytes(), "lang"))
        .and_then(|l| Lang::parse(&l));
    let lang = Lang::from_request(switch.map(Lang::code), request.headers());
    request.extensions_mut().insert(lang);
    let mut response = next.run(request).await;
    if let Some(lang) = switch {
        let cookie = format!(
            "lang={}; Path=/; Secure; SameSite=Strict; Max-Age=31536000",
            lang.code()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    response
}

/// No inline script or style, nothing from elsewhere, no framing, no caching of admin pages.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
