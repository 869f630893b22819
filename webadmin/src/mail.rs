//! Messagerie: per-BAL status (delivery state, PSC session, queue), the connection test, the
//! Pro Santé Connect sign-in of a personal/organisational BAL, and the applicative BALs added
//! from here (kept in the practice mail service's overlay file, applied on the next restart).
//!
//! The sign-in is an authorization-code flow with PKCE S256, `state` and `nonce`
//! (`passerelle_psc`). The session cookie is `SameSite=Strict`, so the browser does not send it
//! on PSC's cross-site redirect back: `/messagerie/psc/callback` is public and only bounces to
//! `/messagerie/psc/fin` from this origin, which has the session; there the `state` must be
//! one this session started, at most [`PENDING_LIFETIME`] ago, used once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use passerelle_api_lps::{
    BalConfig, BalKind, BalOverlay, BalState, Endpoint, OverlayBal, valid_bal_address,
    valid_bal_name,
};
use passerelle_psc::{AuthorizationRequest, SessionState};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{CSRF_FIELD, ClientAddr, Session};
use crate::i18n::Lang;
use crate::pages::{Errors, coming, field_error, format_age, format_ts, layout};

/// A sign-in not finished within this is forgotten.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// Sign-ins pending at once (over all sessions).
const MAX_PENDING: usize = 32;

/// A sign-in started by a session, waiting for PSC's redirect back.
pub struct PendingLogin {
    session: String,
    bal: String,
    redirect_uri: String,
    request: AuthorizationRequest,
    started: Instant,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("bal", &self.bal)
            .finish_non_exhaustive()
    }
}

pub type Pending = std::sync::Mutex<HashMap<String, PendingLogin>>;

fn pending(state: &AppState) -> std::sync::MutexGuard<'_, HashMap<String, PendingLogin>> {
    state
        .psc_pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a POST left to show.
#[derive(Default)]
struct View {
    notice: Option<String>,
    failure: Option<String>,
    errors: Errors,
    form: AddForm,
}

#[derive(Default)]
struct AddForm {
    name: String,
    address: String,
    key: String,
    host: String,
    port: String,
    accounts: Vec<String>,
}

/// The PER/ORG BAL addresses a PSC sign-in may be for.
fn psc_bals(state: &AppState) -> Vec<String> {
    let mut bals: Vec<String> = state
        .services
        .mail
        .as_ref()
        .and_then(passerelle_api_lps::MailHandle::config)
        .map(|c| {
            c.bals
                .iter()
                .filter(|b| b.kind != BalKind::App)
                .map(|b| b.address.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(psc) = &state.services.psc {
        for s in psc.sessions() {
            if !bals.contains(&s.bal) {
                bals.push(s.bal);
            }
        }
    }
    bals
}

fn kind_key(kind: BalKind) -> &'static str {
    match kind {
        BalKind::App => "mail.kind_app",
        BalKind::Per => "mail.kind_per",
        BalKind::Org => "mail.kind_org",
    }
}

/// The keys of the token that have a certificate (an ORG AUTH_CLI candidate).
async fn certified_keys(state: &AppState) -> Vec<String> {
    match &state.services.keystore {
        Some(ks) => ks
            .list()
            .await
            .map(|keys| {
                keys.into_iter()
                    .filter(|k| k.certificate_subject.is_some())
                    .map(|k| k.label)
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

async fn page(state: &AppState, lang: Lang, session: &Session, view: &View) -> Markup {
    let Some(mail) = &state.services.mail else {
        if state.services.psc.is_none() {
            return coming(lang, "coming.mail");
        }
        return html! {
            @if let Some(n) = &view.notice { p.notice id="notice" { (n) } }
            @if let Some(f) = &view.failure { p.alert id="failure" role="alert" { (f) } }
            p.muted { (lang.t("mail.no_service")) }
            (psc_section(state, lang, session))
        };
    };
    let metrics = match &state.services.queue {
        Some(q) => q.metrics().await.ok(),
        None => None,
    };
    let config = mail.config();
    let running = mail.bals();
    let overlay = mail
        .overlay_path()
        .and_then(|p| BalOverlay::load(&p).ok())
        .unwrap_or_default();
    let keys = certified_keys(state).await;
    let accounts: Vec<String> = config
        .as_ref()
        .map(|c| c.accounts.iter().map(|a| a.user.clone()).collect())
        .unwrap_or_default();
    let csrf = &session.csrf;
    html! {
        @if let Some(n) = &view.notice { p.notice id="notice" { (n) } }
        @if let Some(f) = &view.failure { p.alert id="failure" role="alert" { (f) } }
        (bals_section(state, lang, csrf, metrics.as_ref(), &running, &overlay))
        @if state.services.psc.is_some() && state.config.psc_authorize_url.is_none() {
            p.muted { (lang.t("mail.psc_not_configured")) }
        }
        (add_section(lang, csrf, mail.overlay_path().is_some(), &keys, &accounts, view))
        (psc_section(state, lang, session))
    }
}

fn bals_section(
    state: &AppState,
    lang: Lang,
    csrf: &str,
    metrics: Option<&passerelle_queue::QueueMetrics>,
    running: &[std::sync::Arc<passerelle_api_lps::BalDelivery>],
    overlay: &BalOverlay,
) -> Markup {
    html! {
        section.card {
            h2 { (lang.t("mail.bals")) }
            @if running.is_empty() && overlay.bals.is_empty() { p.muted { (lang.t("mail.not_started")) } }
            @else {
                table id="bals" {
                    thead { tr {
                        th { (lang.t("mail.bal")) } th { (lang.t("mail.kind")) } th { (lang.t("mail.state")) }
                        th { (lang.t("dash.depth")) } th { (lang.t("dash.oldest")) } th {}
                    } }
                    tbody {
                        @for delivery in running {
                            @let bal = delivery.upstream.bal();
                            @let kind = passerelle_api_lps::outbox::kind_for(&bal.name);
                            @let queued = metrics.and_then(|m| m.kinds.iter().find(|k| k.kind == kind));
                            tr id={ "bal-" (bal.name) } {
                                td { strong { (bal.name) } br; span.mono { (bal.address) } }
                                td { (lang.t(kind_key(bal.kind))) }
                                td class="bal-state" { (bal_state(state, lang, bal, &delivery.state().borrow())) }
                                td { (queued.map_or(0, |k| k.depth)) }
                                td { (queued.filter(|k| k.depth > 0).map_or_else(|| "—".to_owned(), |k| format_age(k.oldest_age))) }
                                td.actions {
                                    form.inline method="post" action="/messagerie/test" {
                                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                        input type="hidden" name="bal" value=(bal.name);
                                        button type="submit" id={ "test-" (bal.name) } { (lang.t("mail.test")) }
                                    }
                                    @if bal.kind != BalKind::App && state.services.psc.is_some() && state.config.psc_authorize_url.is_some() {
                                        form.inline method="post" action="/messagerie/psc" {
                                            input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                            input type="hidden" name="bal" value=(bal.address);
                                            button.primary type="submit" id={ "psc-" (bal.name) } { (lang.t("mail.psc_sign_in")) }
                                        }
                                    }
                                }
                            }
                        }
                        @for o in overlay.bals.iter().filter(|o| !running.iter().any(|d| d.upstream.bal().name == o.bal.name)) {
                            tr id={ "bal-" (o.bal.name) } {
                                td { strong { (o.bal.name) } br; span.mono { (o.bal.address) } }
                                td { (lang.t(kind_key(o.bal.kind))) }
                                td.muted { (lang.t("mail.next_restart")) }
                                td { "—" } td { "—" } td {}
                            }
                        }
                    }
                }
            }
        }
    }
}

fn add_section(
    lang: Lang,
    csrf: &str,
    has_overlay: bool,
    keys: &[String],
    accounts: &[String],
    view: &View,
) -> Markup {
    html! {
        section.card {
            h2 { (lang.t("mail.add")) }
            @if !has_overlay { p.muted { (lang.t("mail.add_unavailable")) } }
            @else if keys.is_empty() { p.muted { (lang.t("mail.add_no_key")) } }
            @else {
                p.muted { (lang.t("mail.add_intro")) }
                form.stack method="post" action="/messagerie/bal" id="add-bal" novalidate {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    label for="bal-name" { (lang.t("mail.name")) }
                    input type="text" id="bal-name" name="name" value=(view.form.name);
                    (field_error(lang, &view.errors, "name"))
                    label for="bal-address" { (lang.t("mail.address")) }
                    input type="text" id="bal-address" name="address" value=(view.form.address) placeholder="secretariat@cabinet.medecin.mssante.fr";
                    (field_error(lang, &view.errors, "address"))
                    label for="bal-key" { (lang.t("mail.key")) }
                    select id="bal-key" name="key" {
                        @for k in keys { option value=(k) selected[*k == view.form.key] { (k) } }
                    }
                    (field_error(lang, &view.errors, "key"))
                    label for="bal-password" { (lang.t("mail.password")) }
                    input type="password" id="bal-password" name="password" autocomplete="off";
                    (field_error(lang, &view.errors, "password"))
                    label for="bal-host" { (lang.t("mail.host")) }
                    input type="text" id="bal-host" name="host" value=(view.form.host);
                    (field_error(lang, &view.errors, "host"))
                    label for="bal-port" { (lang.t("mail.port")) }
                    input type="text" id="bal-port" name="port" value=(view.form.port) inputmode="numeric";
                    (field_error(lang, &view.errors, "port"))
                    @if !accounts.is_empty() {
                        fieldset {
                            legend { (lang.t("mail.accounts")) }
                            @for a in accounts {
                                label { input type="checkbox" name="accounts" value=(a) checked[view.form.accounts.contains(a)]; " " (a) }
                            }
                        }
                    }
                    (field_error(lang, &view.errors, "accounts"))
                    button.primary type="submit" id="add-bal-submit" { (lang.t("mail.add_submit")) }
                }
            }
        }
    }
}

/// The PSC sessions known to the token store (BALs not in the mail configuration included).
fn psc_section(state: &AppState, lang: Lang, _session: &Session) -> Markup {
    let Some(psc) = &state.services.psc else {
        return html! {};
    };
    let sessions = psc.sessions();
    html! {
        section.card {
            h2 { (lang.t("mail.psc_sessions")) }
            @if sessions.is_empty() { p.muted { (lang.t("mail.psc_none")) } }
            @else {
                table id="psc-sessions" {
                    @for s in &sessions {
                        tr {
                            td.mono { (s.bal) }
                            @match &s.state {
                                SessionState::Active => td.ok { (lang.t("mail.psc_active")) },
                                SessionState::ReauthRequired { reason, since } => td.bad {
                                    (lang.t("mail.reauth")) " — " (reason) " ("
                                    (format_ts(since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))))
                                    ")"
                                },
                            }
                        }
                    }
                }
            }
        }
    }
}

fn bal_state(state: &AppState, lang: Lang, bal: &BalConfig, delivery: &BalState) -> Markup {
    let psc = match (&state.services.psc, bal.kind) {
        (Some(psc), BalKind::Per | BalKind::Org) => Some(psc.session(&bal.address)),
        _ => None,
    };
    html! {
        @let live = format!("bal-{}", bal.name);
        @match delivery {
            BalState::Online => span.ok data-live=(live) { (lang.t("mail.online")) },
            BalState::Offline => span.bad data-live=(live) { (lang.t("mail.offline")) },
            BalState::ReauthRequired(why) => { span.bad data-live=(live) { (lang.t("mail.reauth")) } br; span.muted { (why) } },
        }
        @match psc {
            Some(Some(SessionState::ReauthRequired { .. })) => { br; span.bad { "PSC : " (lang.t("mail.reauth")) } }
            Some(None) => { br; span.bad { "PSC : " (lang.t("mail.psc_none")) } }
            _ => {}
        }
    }
}

pub async fn messagerie(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let body = page(&state, lang, &session, &View::default()).await;
    layout(lang, "/messagerie", &session, &body).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BalForm {
    bal: String,
}

/// `POST /messagerie/test`: one connection to the BAL's front, STARTTLS, one AUTH.
pub async fn test(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    axum::Form(form): axum::Form<BalForm>,
) -> Response {
    let delivery = state.services.mail.as_ref().and_then(|m| m.bal(&form.bal));
    let mut view = View::default();
    let status = match delivery {
        None => {
            view.failure = Some(lang.t("mail.unknown_bal").to_owned());
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Some(delivery) => {
            let result = delivery.test_connection().await;
            let ok = result.is_ok();
            state
                .audit(
                    &session.user,
                    &addr,
                    "bal_test",
                    &format!(
                        "{}: {}",
                        form.bal,
                        match &result {
                            Ok(r) => format!("ok {} {}", r.peer, r.mechanism),
                            Err(e) => e.to_string(),
                        }
                    ),
                    ok,
                )
                .await;
            match result {
                Ok(r) => {
                    view.notice = Some(format!(
                        "{} {} ({}) : {} {} {} {} ms.",
                        lang.t("mail.test_ok"),
                        r.host,
                        r.peer,
                        lang.t("mail.test_ok_auth"),
                        r.mechanism,
                        lang.t("mail.test_ok_in"),
                        r.elapsed.as_millis()
                    ));
                    StatusCode::OK
                }
                Err(passerelle_api_lps::upstream::ConnectError::Reauth(why)) => {
                    view.failure = Some(format!("{} {why}", lang.t("mail.test_auth_refused")));
                    StatusCode::OK
                }
                Err(passerelle_api_lps::upstream::ConnectError::Unreachable(why)) => {
                    view.failure = Some(format!("{} {why}", lang.t("mail.test_unreachable")));
                    StatusCode::OK
                }
            }
        }
    };
    let body = page(&state, lang, &session, &view).await;
    (status, layout(lang, "/messagerie", &session, &body)).into_response()
}

/// The redirect URI PSC sends the browser back to: configured, or this host's callback.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(uri) = &state.config.psc_redirect_uri {
        return Some(uri.clone());
    }
    let host = headers.get(HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 260
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| format!("https://{host}/messagerie/psc/callback"))
}

/// A page that sends the browser on to `url` (meta refresh: no inline script, and unlike a
/// redirect answer to a form it is not bound by the CSP's `form-action`).
fn bounce(lang: Lang, url: &str, link_id: &str) -> Response {
    Html(
        html! {
            (DOCTYPE)
            html lang=(lang.code()) {
                head {
                    meta charset="utf-8";
                    meta http-equiv="refresh" content={ "0;url=" (url) };
                    title { (lang.t("mail.redirecting")) }
                    link rel="stylesheet" href="/static/app.css";
                }
                body { main.login { p { (lang.t("mail.redirecting")) } p { a id=(link_id) href=(url) { (lang.t("mail.continue")) } } } }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// `POST /messagerie/psc`: starts a sign-in for a PER/ORG BAL.
pub async fn psc_start(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<BalForm>,
) -> Response {
    let mut view = View::default();
    let (Some(psc), Some(authorize)) = (&state.services.psc, &state.config.psc_authorize_url)
    else {
        view.failure = Some(lang.t("mail.psc_not_configured").to_owned());
        let body = page(&state, lang, &session, &view).await;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            layout(lang, "/messagerie", &session, &body),
        )
            .into_response();
    };
    if !psc_bals(&state).contains(&form.bal) {
        view.failure = Some(lang.t("mail.unknown_bal").to_owned());
        let body = page(&state, lang, &session, &view).await;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            layout(lang, "/messagerie", &session, &body),
        )
            .into_response();
    }
    let Some(redirect) = redirect_uri(&state, &headers) else {
        return (StatusCode::BAD_REQUEST, lang.t("err.host")).into_response();
    };
    let request = match psc.authorization_request(authorize, &redirect, &state.config.psc_scope) {
        Ok(r) => r,
        Err(e) => {
            view.failure = Some(format!("{} : {e}", lang.t("err.service")));
            let body = page(&state, lang, &session, &view).await;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                layout(lang, "/messagerie", &session, &body),
            )
                .into_response();
        }
    };
    let url = request.url.clone();
    {
        let mut pending = pending(&state);
        pending.retain(|_, p| p.started.elapsed() < PENDING_LIFETIME);
        if pending.len() >= MAX_PENDING {
            return (StatusCode::TOO_MANY_REQUESTS, lang.t("mail.psc_busy")).into_response();
        }
        pending.insert(
            request.state.clone(),
            PendingLogin {
                session: session.id_hash.clone(),
                bal: form.bal.clone(),
                redirect_uri: redirect,
                request,
                started: Instant::now(),
            },
        );
    }
    state
        .audit(&session.user, &addr, "psc_sign_in_started", &form.bal, true)
        .await;
    bounce(lang, &url, "psc-go")
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CallbackQuery {
    code: String,
    state: String,
    error: String,
    error_description: String,
}

fn token_like(s: &str, max: usize) -> bool {
    s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
        })
}

/// `GET /messagerie/psc/callback` (public, see the module docs): bounces to
/// `/messagerie/psc/fin` with the same parameters, checked for shape only.
pub async fn psc_callback(
    Extension(lang): Extension<Lang>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    if !token_like(&q.code, 4096)
        || !token_like(&q.state, 128)
        || q.error.len() > 100
        || q.error_description.len() > 500
    {
        return (StatusCode::BAD_REQUEST, lang.t("mail.psc_bad_callback")).into_response();
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &q.code)
        .append_pair("state", &q.state)
        .append_pair("error", &q.error)
        .append_pair("error_description", &q.error_description)
        .finish();
    bounce(
        lang,
        &format!("/messagerie/psc/fin?{query}"),
        "psc-continue",
    )
}

/// `GET /messagerie/psc/fin`: the state must be one this session started; the code is
/// exchanged and the refresh token stored (clearing "re-auth required", OA-07).
pub async fn psc_finish(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let mut view = View::default();
    let login = {
        let mut pending = pending(&state);
        match pending.get(&q.state) {
            Some(p) if p.session == session.id_hash && p.started.elapsed() < PENDING_LIFETIME => {
                pending.remove(&q.state)
            }
            _ => None,
        }
    };
    let status = match (login, &state.services.psc) {
        (None, _) | (_, None) => {
            state
                .audit(
                    &session.user,
                    &addr,
                    "psc_sign_in",
                    "unknown or expired state",
                    false,
                )
                .await;
            view.failure = Some(lang.t("mail.psc_bad_state").to_owned());
            StatusCode::BAD_REQUEST
        }
        (Some(login), Some(_)) if !q.error.is_empty() => {
            state
                .audit(
                    &session.user,
                    &addr,
                    "psc_sign_in",
                    &format!("{}: {}", login.bal, q.error),
                    false,
                )
                .await;
            view.failure = Some(format!(
                "{} {} {}",
                lang.t("mail.psc_refused"),
                q.error,
                q.error_description
            ));
            StatusCode::OK
        }
        (Some(login), Some(psc)) => {
            match psc
                .complete_login(&login.bal, &login.request, &q.code, &login.redirect_uri)
                .await
            {
                Ok(()) => {
                    // The BAL's workers try again at once instead of at their next retry.
                    if let Some(mail) = &state.services.mail {
                        for d in mail.bals() {
                            if d.upstream.bal().address == login.bal {
                                d.reauthenticated();
                            }
                        }
                    }
                    state
                        .audit(&session.user, &addr, "psc_sign_in", &login.bal, true)
                        .await;
                    view.notice = Some(format!("{} {}", lang.t("mail.psc_done"), login.bal));
                    StatusCode::OK
                }
                Err(e) => {
                    state
                        .audit(
                            &session.user,
                            &addr,
                            "psc_sign_in",
                            &format!("{}: {e}", login.bal),
                            false,
                        )
                        .await;
                    view.failure = Some(format!("{} {e}", lang.t("mail.psc_refused")));
                    StatusCode::OK
                }
            }
        }
    };
    let body = page(&state, lang, &session, &view).await;
    (status, layout(lang, "/messagerie", &session, &body)).into_response()
}

fn valid_port(p: &str) -> Option<u16> {
    p.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

fn parse_add(body: &[u8]) -> (AddForm, zeroize::Zeroizing<String>) {
    let mut form = AddForm::default();
    let mut password = zeroize::Zeroizing::new(String::new());
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "name" => v.trim().clone_into(&mut form.name),
            "address" => v.trim().clone_into(&mut form.address),
            "key" => form.key = v.into_owned(),
            "password" => *password = v.into_owned(),
            "host" => v.trim().clone_into(&mut form.host),
            "port" => v.trim().clone_into(&mut form.port),
            "accounts" if form.accounts.len() < 64 => form.accounts.push(v.into_owned()),
            _ => {}
        }
    }
    (form, password)
}

/// Checks the form's fields; the submission endpoint when one was given.
async fn validate_add(
    state: &AppState,
    form: &AddForm,
    password: &str,
    errors: &mut Errors,
) -> Option<Endpoint> {
    if !valid_bal_name(&form.name) {
        errors.insert("name", "err.bal_name");
    }
    if !valid_bal_address(&form.address) {
        errors.insert("address", "err.bal_address");
    }
    if !certified_keys(state).await.contains(&form.key) {
        errors.insert("key", "err.choice");
    }
    if password.is_empty() || password.len() > 256 || password.contains(['\r', '\n']) {
        errors.insert("password", "err.bal_password");
    }
    if form.host.is_empty() && form.port.is_empty() {
        return None;
    }
    if !crate::pages::valid_host(&form.host) {
        errors.insert("host", "err.address");
    }
    if let Some(port) = valid_port(&form.port) {
        Some(Endpoint {
            host: form.host.clone(),
            port,
            address: None,
        })
    } else {
        errors.insert("port", "err.port");
        None
    }
}

/// `POST /messagerie/bal`: adds an applicative BAL to the overlay (next restart).
pub async fn add_bal(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    let (mut form, password) = parse_add(&body);
    let mut view = View::default();
    let mail = state.services.mail.clone();
    let overlay_path = mail
        .as_ref()
        .and_then(passerelle_api_lps::MailHandle::overlay_path);
    let config = mail
        .as_ref()
        .and_then(passerelle_api_lps::MailHandle::config);
    let (Some(path), Some(config)) = (overlay_path, config) else {
        view.failure = Some(lang.t("mail.add_unavailable").to_owned());
        view.form = form;
        let body = page(&state, lang, &session, &view).await;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            layout(lang, "/messagerie", &session, &body),
        )
            .into_response();
    };
    let mut errors = Errors::new();
    let submission = validate_add(&state, &form, &password, &mut errors).await;
    let mut overlay = match BalOverlay::load(&path) {
        Ok(o) => o,
        Err(e) => {
            view.failure = Some(format!("{} : {e}", lang.t("err.service")));
            BalOverlay::default()
        }
    };
    let password_file = state
        .config
        .data_dir
        .join(format!("bal-{}.password", form.name));
    let new = OverlayBal {
        bal: BalConfig {
            name: form.name.clone(),
            address: form.address.clone(),
            kind: BalKind::App,
            client_key_label: Some(form.key.clone()),
            password_file: Some(password_file.clone()),
            submission,
            connections: 2,
        },
        accounts: form.accounts.clone(),
    };
    if errors.is_empty()
        && view.failure.is_none()
        && let Err(why) = overlay.check(&config, &new)
    {
        if why.contains("account") {
            errors.insert("accounts", "err.choice");
        } else {
            errors.insert("name", "err.bal_taken");
        }
    }
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    if errors.is_empty() && view.failure.is_none() {
        overlay.bals.push(new);
        let saved = crate::pages::write_secret(&password_file, &password)
            .map_err(|e| e.to_string())
            .and_then(|()| overlay.save(&path).map_err(|e| e.to_string()));
        match saved {
            Ok(()) => {
                state
                    .audit(
                        &session.user,
                        &addr,
                        "bal_added",
                        &format!("{} {} key={}", form.name, form.address, form.key),
                        true,
                    )
                    .await;
                view.notice = Some(format!(
                    "{} {} : {}",
                    lang.t("mail.added"),
                    form.name,
                    lang.t("mail.next_restart")
                ));
                status = StatusCode::OK;
                form = AddForm::default();
            }
            Err(e) => {
                state
                    .audit(&session.user, &addr, "bal_added", &form.name, false)
                    .await;
                view.failure = Some(format!("{} : {e}", lang.t("err.service")));
            }
        }
    }
    view.errors = errors;
    view.form = form;
    let body = page(&state, lang, &session, &view).await;
    (status, layout(lang, "/messagerie", &session, &body)).into_response()
}
