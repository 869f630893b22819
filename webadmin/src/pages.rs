//! Handlers and their server-rendered pages (maud escapes every interpolated value).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Multipart, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use passerelle_keystore::{KeyAlgorithm, KeyRef, Subject};
use serde::Deserialize;

use crate::app::{AppState, MAX_CERT_UPLOAD_BYTES, found};
use crate::auth::{self, CSRF_FIELD, ClientAddr, PRE_COOKIE, Session};
use crate::charts;
use crate::db::{AuditFilter, SetupRecord, now};
use crate::i18n::{Lang, cookie};

/// Field name → catalogue key of its error.
pub(crate) type Errors = BTreeMap<&'static str, &'static str>;

const NAV: &[(&str, &str)] = &[
    ("/", "nav.dashboard"),
    ("/messagerie", "nav.mail"),
    ("/facturation", "nav.billing"),
    ("/cartes", "nav.cards"),
    ("/cles", "nav.keys"),
    ("/liste-blanche", "nav.liste_blanche"),
    ("/annuaire", "nav.annuaire"),
    ("/mises-a-jour", "nav.updates"),
    ("/journal", "nav.journal"),
];

fn lang_switch(lang: Lang) -> Markup {
    html! {
        span.lang {
            @if lang == Lang::Fr { a href="?lang=en" hreflang="en" lang="en" { "English" } }
            @else { a href="?lang=fr" hreflang="fr" lang="fr" { "Français" } }
        }
    }
}

fn document(lang: Lang, title: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — " (lang.t("app")) }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body { (body) }
        }
    }
}

pub(crate) fn layout(lang: Lang, current: &str, session: &Session, body: &Markup) -> Html<String> {
    let title = NAV
        .iter()
        .find(|(p, _)| *p == current)
        .map_or("", |(_, k)| lang.t(k));
    Html(
        document(
            lang,
            title,
            &html! {
                header {
                    span.brand { (lang.t("app")) }
                    span.right {
                        (lang_switch(lang))
                        span.muted { (session.user) }
                        form method="post" action="/logout" {
                            input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                            button type="submit" id="logout" { (lang.t("logout")) }
                        }
                    }
                }
                div.layout {
                    nav {
                        @for (path, key) in NAV {
                            a href=(path) class=[(*path == current).then_some("current")] { (lang.t(key)) }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            },
        )
        .into_string(),
    )
}

pub(crate) fn field_error(lang: Lang, errors: &Errors, name: &str) -> Markup {
    html! {
        @if let Some(key) = errors.get(name) {
            p.error id={ "err-" (name) } { (lang.t(key)) }
        }
    }
}

pub(crate) fn coming(lang: Lang, what: &str) -> Markup {
    html! { p.notice { (lang.t("coming")) " " (lang.t(what)) } }
}

pub(crate) fn format_ts(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs).map_or_else(
        |_| secs.to_string(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

pub(crate) fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

/// The pre-session CSRF token of the request, or a fresh one to set.
fn pre_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, PRE_COOKIE) {
        Some(t) if t.len() == 43 => (t, false),
        _ => (auth::random_token(), true),
    }
}

// ---------------------------------------------------------------- setup

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetupForm {
    user: String,
    password: String,
    password2: String,
    profile: String,
    network: String,
    address: String,
    gateway: String,
    dns: String,
    ntp: String,
    pin: String,
}

const PROFILES: &[(&str, &str)] = &[
    ("practice", "profile.practice"),
    ("operator", "profile.operator"),
    ("oct", "profile.oct"),
];

fn setup_page(lang: Lang, csrf: &str, form: &SetupForm, errors: &Errors) -> Markup {
    let profile = if form.profile.is_empty() {
        "practice"
    } else {
        form.profile.as_str()
    };
    let network = if form.network.is_empty() {
        "dhcp"
    } else {
        form.network.as_str()
    };
    document(
        lang,
        lang.t("setup.title"),
        &html! {
            header { span.brand { (lang.t("app")) } span.right { (lang_switch(lang)) } }
            main.login {
                h1 { (lang.t("setup.title")) }
                p.muted { (lang.t("setup.intro")) }
                form.stack method="post" action="/setup" novalidate {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    fieldset {
                        legend { (lang.t("setup.account")) }
                        label for="user" { (lang.t("login.user")) }
                        input type="text" id="user" name="user" value=(form.user) autocomplete="username";
                        (field_error(lang, errors, "user"))
                        label for="password" { (lang.t("login.password")) }
                        input type="password" id="password" name="password" autocomplete="new-password";
                        (field_error(lang, errors, "password"))
                        label for="password2" { (lang.t("setup.password2")) }
                        input type="password" id="password2" name="password2" autocomplete="new-password";
                        (field_error(lang, errors, "password2"))
                    }
                    fieldset {
                        legend { (lang.t("setup.profile")) }
                        select id="profile" name="profile" {
                            @for (value, key) in PROFILES {
                                option value=(value) selected[*value == profile] { (lang.t(key)) }
                            }
                        }
                        (field_error(lang, errors, "profile"))
                    }
                    fieldset {
                        legend { (lang.t("setup.network")) }
                        select id="network" name="network" {
                            option value="dhcp" selected[network == "dhcp"] { (lang.t("net.dhcp")) }
                            option value="static" selected[network == "static"] { (lang.t("net.static")) }
                        }
                        (field_error(lang, errors, "network"))
                        label for="address" { (lang.t("net.address")) }
                        input type="text" id="address" name="address" value=(form.address);
                        (field_error(lang, errors, "address"))
                        label for="gateway" { (lang.t("net.gateway")) }
                        input type="text" id="gateway" name="gateway" value=(form.gateway);
                        (field_error(lang, errors, "gateway"))
                        label for="dns" { (lang.t("net.dns")) }
                        input type="text" id="dns" name="dns" value=(form.dns);
                        (field_error(lang, errors, "dns"))
                    }
                    fieldset {
                        legend { (lang.t("setup.ntp")) }
                        input type="text" id="ntp" name="ntp" value=(form.ntp) placeholder="ntp1.example.fr ntp2.example.fr";
                        (field_error(lang, errors, "ntp"))
                    }
                    fieldset {
                        legend { (lang.t("setup.pin")) }
                        input type="password" id="pin" name="pin" inputmode="numeric" autocomplete="off";
                        (field_error(lang, errors, "pin"))
                    }
                    button.primary type="submit" id="setup-submit" { (lang.t("setup.submit")) }
                }
            }
        },
    )
}

pub async fn setup_form(Extension(lang): Extension<Lang>, headers: HeaderMap) -> Response {
    let (token, fresh) = pre_token(&headers);
    let page = Html(setup_page(lang, &token, &SetupForm::default(), &Errors::new()).into_string())
        .into_response();
    if fresh {
        with_cookie(page, &auth::pre_cookie(&token))
    } else {
        page
    }
}

fn valid_user(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn valid_host(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

fn valid_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(ip, prefix)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p))
    })
}

fn validate_setup(form: &SetupForm) -> Errors {
    let mut errors = Errors::new();
    if !valid_user(&form.user) {
        errors.insert("user", "err.user");
    }
    if form.password.chars().count() < 12 || form.password.len() > 1024 {
        errors.insert("password", "err.password");
    } else if form.password != form.password2 {
        errors.insert("password2", "err.password2");
    }
    if !PROFILES.iter().any(|(v, _)| *v == form.profile) {
        errors.insert("profile", "err.choice");
    }
    match form.network.as_str() {
        "dhcp" => {}
        "static" => {
            if !valid_cidr(form.address.trim()) {
                errors.insert("address", "err.address");
            }
            if form.gateway.trim().parse::<std::net::Ipv4Addr>().is_err() {
                errors.insert("gateway", "err.address");
            }
            let dns: Vec<&str> = form.dns.split_whitespace().collect();
            if dns.is_empty()
                || dns.len() > 4
                || dns.iter().any(|d| d.parse::<std::net::IpAddr>().is_err())
            {
                errors.insert("dns", "err.address");
            }
        }
        _ => {
            errors.insert("network", "err.choice");
        }
    }
    // EX_SDT_5010: the appliance keeps time from NTP; setup cannot finish without a server.
    let ntp: Vec<&str> = form.ntp.split_whitespace().collect();
    if ntp.is_empty() || ntp.len() > 8 || !ntp.iter().all(|h| valid_host(h)) {
        errors.insert("ntp", "err.ntp");
    }
    if !(4..=32).contains(&form.pin.len()) || !form.pin.chars().all(|c| c.is_ascii_digit()) {
        errors.insert("pin", "err.pin");
    }
    errors
}

pub(crate) fn write_secret(path: &std::path::Path, pin: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("part");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(file, "{pin}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub async fn setup_submit(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Response {
    let errors = validate_setup(&form);
    if !errors.is_empty() {
        let (token, _) = pre_token(&headers);
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(setup_page(lang, &token, &form, &errors).into_string()),
        )
            .into_response();
    }
    let password = form.password.clone();
    let Ok(Ok(phc)) = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(pin_file) = &state.config.token_pin_file
        && let Err(e) = write_secret(pin_file, &form.pin)
    {
        tracing::error!(path = %pin_file.display(), error = %e, "writing the token PIN file");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let network = if form.network == "static" {
        format!(
            "static {} via {} dns {}",
            form.address.trim(),
            form.gateway.trim(),
            form.dns.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    } else {
        "dhcp".to_owned()
    };
    let record = SetupRecord {
        profile: form.profile.clone(),
        network,
        ntp: form.ntp.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    match state.db.complete_setup(&record, &form.user, &phc).await {
        Ok(true) => {
            state
                .audit(
                    &form.user,
                    &addr,
                    "setup",
                    &format!("profile={}", record.profile),
                    true,
                )
                .await;
            found("/login")
        }
        Ok(false) => found("/login"),
        Err(e) => {
            tracing::error!(error = %e, "recording the setup");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

// ---------------------------------------------------------------- login

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    user: String,
    password: String,
}

fn login_page(lang: Lang, csrf: &str, user: &str, message: Option<String>) -> Markup {
    document(
        lang,
        lang.t("login.title"),
        &html! {
            header { span.brand { (lang.t("app")) } span.right { (lang_switch(lang)) } }
            main.login {
                section.card {
                    h1 { (lang.t("login.title")) }
                    @if let Some(message) = message { p.error id="login-error" role="alert" { (message) } }
                    form.stack method="post" action="/login" {
                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                        label for="user" { (lang.t("login.user")) }
                        input type="text" id="user" name="user" value=(user) autocomplete="username" autofocus;
                        label for="password" { (lang.t("login.password")) }
                        input type="password" id="password" name="password" autocomplete="current-password";
                        button.primary type="submit" id="login-submit" { (lang.t("login.submit")) }
                    }
                }
            }
        },
    )
}

pub async fn login_form(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    headers: HeaderMap,
) -> Response {
    if !state.setup_done().await {
        return found("/setup");
    }
    if state.session_of(&headers).await.is_some() {
        return found("/");
    }
    let (token, fresh) = pre_token(&headers);
    let page = Html(login_page(lang, &token, "", None).into_string()).into_response();
    if fresh {
        with_cookie(page, &auth::pre_cookie(&token))
    } else {
        page
    }
}

fn locked_message(lang: Lang, secs: i64) -> String {
    format!(
        "{} {} {}.",
        lang.t("login.locked"),
        (secs + 59) / 60,
        lang.t("minutes")
    )
}

pub async fn login_submit(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.setup_done().await {
        return found("/setup");
    }
    let (token, _) = pre_token(&headers);
    let user_subject = format!("user:{}", form.user);
    let ip_subject = format!("ip:{}", addr.0.ip());
    let refuse = |message: String| {
        (
            StatusCode::UNAUTHORIZED,
            Html(login_page(lang, &token, &form.user, Some(message)).into_string()),
        )
            .into_response()
    };
    let mut locked = None;
    for subject in [&user_subject, &ip_subject] {
        match state.db.locked_for(subject).await {
            Ok(Some(secs)) => locked = Some(locked.unwrap_or(0).max(secs)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "reading lockouts");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    if let Some(secs) = locked {
        state
            .audit(&form.user, &addr, "login_locked", "", false)
            .await;
        return refuse(locked_message(lang, secs));
    }
    let phc = state.db.user_phc(&form.user).await.ok().flatten();
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let ok = auth::verify_password(&password, phc.as_deref().unwrap_or(auth::dummy_phc()));
        known && ok
    })
    .await
    .unwrap_or(false);
    let policy = state.config.lockout;
    if !verified {
        let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
        let lock = i64::try_from(policy.duration.as_secs()).unwrap_or(i64::MAX);
        let mut now_locked = false;
        for subject in [&user_subject, &ip_subject] {
            match state
                .db
                .record_failure(subject, policy.max_failures, window, lock)
                .await
            {
                Ok(l) => now_locked |= l,
                Err(e) => tracing::error!(error = %e, "recording a login failure"),
            }
        }
        state.audit(&form.user, &addr, "login", "", false).await;
        return if now_locked {
            refuse(locked_message(lang, lock))
        } else {
            refuse(lang.t("login.failed").to_owned())
        };
    }
    for subject in [&user_subject, &ip_subject] {
        if let Err(e) = state.db.clear_failures(subject).await {
            tracing::error!(error = %e, "clearing login failures");
        }
    }
    let session_token = auth::random_token();
    let lifetime = state.config.session_lifetime.as_secs();
    let expires = now() + i64::try_from(lifetime).unwrap_or(i64::MAX / 2);
    if let Err(e) = state
        .db
        .create_session(
            &auth::hash_token(&session_token),
            &form.user,
            &auth::random_token(),
            expires,
        )
        .await
    {
        tracing::error!(error = %e, "creating a session");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    state.audit(&form.user, &addr, "login", "", true).await;
    with_cookie(found("/"), &auth::session_cookie(&session_token, lifetime))
}

pub async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
) -> Response {
    if let Err(e) = state.db.delete_session(&session.id_hash).await {
        tracing::error!(error = %e, "deleting a session");
    }
    state.audit(&session.user, &addr, "logout", "", true).await;
    with_cookie(found("/login"), &auth::clear_session_cookie())
}

// ---------------------------------------------------------------- dashboard

pub async fn dashboard(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let metrics = match &state.services.queue {
        Some(q) => match q.metrics().await {
            Ok(m) => Some(Ok(m)),
            Err(e) => Some(Err(e.to_string())),
        },
        None => None,
    };
    let samples = state
        .db
        .samples_since(now() - 86_400)
        .await
        .unwrap_or_default();
    let mut alerts: Vec<String> = Vec::new();
    if let Some(Ok(m)) = &metrics {
        for k in m.kinds.iter().filter(|k| k.dead > 0) {
            alerts.push(format!("{} {} {}", k.dead, lang.t("alert.dead"), k.kind));
        }
    }
    if let Some(anchors) = &state.services.anchors {
        let files = anchors.clone();
        let report = tokio::task::spawn_blocking(move || {
            passerelle_trust::check_anchors(&files.dir, &files.pins_file)
        })
        .await;
        match report {
            Ok(Ok(r)) if r.is_clean() => {}
            Ok(Err(e)) => alerts.push(format!("{} ({e})", lang.t("alert.anchors"))),
            Ok(Ok(_)) | Err(_) => alerts.push(lang.t("alert.anchors").to_owned()),
        }
    }
    if let Some(ks) = &state.services.keystore {
        alerts.extend(certificate_alerts(ks, lang).await);
    }
    if let Some(lb) = &state.services.liste_blanche {
        match lb.state(rustls_pki_types::UnixTime::now()) {
            passerelle_liste_blanche::ListeBlancheState::NoVerifiedList => {
                alerts.push(lang.t("alert.lb_none").to_owned());
            }
            passerelle_liste_blanche::ListeBlancheState::Verified { stale: true, .. } => {
                alerts.push(lang.t("alert.lb_stale").to_owned());
            }
            passerelle_liste_blanche::ListeBlancheState::Verified { .. } => {}
        }
    }
    alerts.extend(service_alerts(&state, lang).await);
    let links = link_rows(&state, lang);
    let total: u64 = match &metrics {
        Some(Ok(m)) => m.kinds.iter().map(|k| k.depth).sum(),
        _ => 0,
    };
    let body = html! {
        section.card {
            h2 { (lang.t("dash.live")) }
            p { (lang.t("dash.total")) " : " strong data-live="total" id="live-total" { (total) } }
            h2 { (lang.t("dash.link")) }
            @if links.is_empty() { p.muted { (lang.t("coming")) " " (lang.t("coming.link")) } }
            @else {
                table id="links" {
                    @for (name, ok, text) in &links {
                        tr { td { (lang.t("dash.upstream")) " — " span.mono { (name) } } td class=(if *ok { "ok" } else { "bad" }) { (text) } }
                    }
                }
            }
        }
        section.card {
            h2 { (lang.t("dash.alerts")) }
            @if alerts.is_empty() { p.ok { (lang.t("dash.no_alerts")) } }
            @for a in &alerts { p.alert { (a) } }
        }
        section.card {
            h2 { (lang.t("dash.queues")) }
            @match &metrics {
                None => p.muted { (lang.t("not_configured")) },
                Some(Err(e)) => p.alert { (lang.t("err.service")) " : " (e) },
                Some(Ok(m)) if m.kinds.is_empty() => p { (lang.t("dash.no_items")) },
                Some(Ok(m)) => table {
                    thead { tr { th { (lang.t("dash.kind")) } th { (lang.t("dash.depth")) } th { (lang.t("dash.oldest")) } th { (lang.t("dash.dead")) } } }
                    tbody {
                        @for k in &m.kinds {
                            tr { td.mono { (k.kind) } td { (k.depth) } td { (format_age(k.oldest_age)) } td { (k.dead) } }
                        }
                    }
                },
            }
            h2 { (lang.t("dash.chart")) }
            @if samples.is_empty() { p.muted { (lang.t("dash.no_samples")) } }
            @else { (charts::depth_chart(&samples, now())) }
            h2 { (lang.t("dash.oldest_chart")) }
            @if samples.is_empty() { p.muted { (lang.t("dash.no_samples")) } }
            @else { (charts::oldest_chart(&samples, now())) }
        }
    };
    layout(lang, "/", &session, &body).into_response()
}

/// Per BAL: whether the operator's front is reachable and usable (API LPS delivery state).
fn link_rows(state: &AppState, lang: Lang) -> Vec<(String, bool, String)> {
    use passerelle_api_lps::BalState;
    let Some(mail) = &state.services.mail else {
        return Vec::new();
    };
    mail.bals()
        .iter()
        .map(|d| {
            let name = d.upstream.bal().name.clone();
            match &*d.state().borrow() {
                BalState::Online => (name, true, lang.t("mail.online").to_owned()),
                BalState::Offline => (name, false, lang.t("mail.offline").to_owned()),
                BalState::ReauthRequired(_) => (name, false, lang.t("mail.reauth").to_owned()),
            }
        })
        .collect()
}

/// Alerts of the mail, PSC, billing and update services.
async fn service_alerts(state: &AppState, lang: Lang) -> Vec<String> {
    let mut alerts = Vec::new();
    let mut reauth: Vec<String> = Vec::new();
    if let Some(psc) = &state.services.psc {
        for s in psc.sessions() {
            if matches!(s.state, passerelle_psc::SessionState::ReauthRequired { .. }) {
                reauth.push(s.bal);
            }
        }
    }
    if let Some(mail) = &state.services.mail {
        for d in mail.bals() {
            let bal = d.upstream.bal();
            match &*d.state().borrow() {
                passerelle_api_lps::BalState::ReauthRequired(_) => {
                    if !reauth.contains(&bal.address) {
                        reauth.push(bal.address.clone());
                    }
                }
                passerelle_api_lps::BalState::Offline => {
                    alerts.push(format!("{} {}", lang.t("alert.bal_offline"), bal.name));
                }
                passerelle_api_lps::BalState::Online => {}
            }
        }
    }
    for bal in reauth {
        alerts.push(format!("{} {bal}", lang.t("alert.reauth")));
    }
    if let Some(billing) = &state.services.billing {
        match billing.overdue().await {
            Ok(lots) if !lots.is_empty() => {
                alerts.push(format!("{} {}", lots.len(), lang.t("alert.arl_overdue")));
            }
            Ok(_) => {}
            Err(e) => alerts.push(format!("{} : {e}", lang.t("err.service"))),
        }
        if billing.crl_alert() {
            alerts.push(lang.t("alert.crl").to_owned());
        }
    }
    if let Some(updates) = &state.services.updates
        && matches!(
            *updates.status.borrow(),
            passerelle_updater::service::UpdateStatus::FellBack(_)
        )
    {
        alerts.push(lang.t("alert.update_fell_back").to_owned());
    }
    alerts
}

/// Token certificates expired or expiring within 30 days.
async fn certificate_alerts(ks: &passerelle_keystore::Keystore, lang: Lang) -> Vec<String> {
    let Ok(keys) = ks.list().await else {
        return Vec::new();
    };
    let mut alerts = Vec::new();
    for key in keys.iter().filter(|k| k.certificate_subject.is_some()) {
        let Ok(certified) = ks.certified_key(&KeyRef::Label(key.label.clone())).await else {
            continue;
        };
        let Some(not_after) = certified.cert.first().and_then(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        }) else {
            continue;
        };
        let now = now();
        if not_after <= now {
            alerts.push(format!("{} {}", lang.t("alert.cert_expired"), key.label));
        } else if not_after - now <= 30 * 86_400 {
            alerts.push(format!(
                "{} {} ({})",
                lang.t("alert.cert_expiring"),
                key.label,
                format_ts(not_after)
            ));
        }
    }
    alerts
}

/// Live status: one `status` event every few seconds with the pending total (and the reader /
/// card count). The stream ends when the session does (logout, expiry, idle timeout).
pub async fn events(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> impl IntoResponse {
    let idle = i64::try_from(state.config.idle_timeout.as_secs()).unwrap_or(i64::MAX);
    let stream = futures::stream::unfold(
        (state, session, true),
        move |(state, session, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if !state
                    .db
                    .session_alive(&session.id_hash, idle)
                    .await
                    .unwrap_or(false)
                {
                    return None;
                }
            }
            let total: u64 = match &state.services.queue {
                Some(q) => q
                    .metrics()
                    .await
                    .map_or(0, |m| m.kinds.iter().map(|k| k.depth).sum()),
                None => 0,
            };
            let mut data = serde_json::json!({ "total": total, "at": now() });
            if let Some(c) = &state.services.cards {
                let (readers, cards) = card_counts(&c.readers());
                data["cards"] = serde_json::json!(format!("{readers} / {cards}"));
            }
            // Each BAL's delivery state, for the Messagerie page's state cells.
            for (name, _, text) in link_rows(&state, lang) {
                data[format!("bal-{name}")] = serde_json::json!(text);
            }
            let event = Event::default().event("status").data(data.to_string());
            Some((Ok::<_, Infallible>(event), (state, session, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What a PIN submission left to show on the Cartes CPS page.
#[derive(Default)]
struct CardsView {
    notice: Option<String>,
    failure: Option<String>,
    errors: Errors,
}

pub async fn cartes(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let Some(cards) = &state.services.cards else {
        return layout(lang, "/cartes", &session, &coming(lang, "coming.cards")).into_response();
    };
    // A card just inserted has not been asked its tries yet; asking spends none, and the
    // confirmation box depends on it.
    if cards
        .active_card()
        .is_some_and(|(_, c)| c.pin == passerelle_cards::PinState::Unknown)
        && let Err(e) = cards.pin_status().await
    {
        tracing::warn!(error = %e, "reading the CPS PIN state");
    }
    let body = cartes_page(cards, lang, &session, &CardsView::default());
    layout(lang, "/cartes", &session, &body).into_response()
}

fn cartes_page(
    cards: &passerelle_cards::CardService,
    lang: Lang,
    session: &Session,
    view: &CardsView,
) -> Markup {
    use passerelle_cards::{CardKind, PinState};
    let readers = cards.readers();
    let (n_readers, n_cards) = card_counts(&readers);
    let active = cards.active_card();
    html! {
        @if let Some(n) = &view.notice { p.notice id="notice" { (n) } }
        @if let Some(f) = &view.failure { p.alert id="failure" { (f) } }
        section.card {
            p { (lang.t("cards.live")) " : " strong data-live="cards" id="live-cards" { (n_readers) " / " (n_cards) } }
            @if readers.is_empty() { p { (lang.t("cards.none")) } }
            @else {
                table id="readers" {
                    thead { tr { th { (lang.t("cards.reader")) } th { (lang.t("cards.card")) } th { (lang.t("cards.holder")) } th { (lang.t("cards.pin")) } } }
                    tbody {
                        @for r in &readers {
                            tr {
                                td.mono { (r.name) }
                                @match &r.card {
                                    None => { td.muted { (lang.t("cards.empty")) } td {} td {} }
                                    Some(card) => {
                                        td { (lang.t(match card.kind {
                                            CardKind::Cps3Contact => "kind.cps3",
                                            CardKind::Cps3Contactless => "kind.cps3cl",
                                            CardKind::Cps4 => "kind.cps4",
                                            CardKind::Vitale => "kind.vitale",
                                            CardKind::Unknown => "kind.unknown",
                                        })) }
                                        td {
                                            @if let Some(id) = &card.identity {
                                                (id.given_name) " " (id.family_name) br; span.muted { (id.profession) " — " (id.national_id) }
                                            }
                                            @if let Some(e) = &card.error { span.bad { (e) } }
                                        }
                                        td id="pin-state" {
                                            @match card.pin {
                                                PinState::Unknown => (lang.t("pin.unknown")),
                                                PinState::NotVerified { tries_left } => { (lang.t("pin.not_verified")) " " (tries_left) }
                                                PinState::Verified => span.ok { (lang.t("pin.verified")) },
                                                PinState::Blocked => span.bad { (lang.t("pin.blocked")) },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // PIN entry only for the card the service signs with (the first CPS card that can
        // sign), and only while its PIN can still be presented.
        @if let Some((reader, card)) = active.filter(|(_, c)| c.kind.can_sign() && !matches!(c.pin, PinState::Blocked | PinState::Verified)) {
            section.card {
                h2 { (lang.t("pin.title")) }
                form.inline method="post" action="/cartes/pin" id="pin-form" {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    input type="hidden" name="reader" value=(reader);
                    input type="hidden" name="generation" value=(card.generation);
                    label { (lang.t("cards.pin")) input type="password" name="pin" id="pin" autocomplete="off" inputmode="numeric" minlength="4" maxlength="8" required; }
                    @if card.pin == (PinState::NotVerified { tries_left: 1 }) {
                        label.warn { input type="checkbox" name="confirm_last_try" id="confirm-last-try" value="1"; " " (lang.t("pin.confirm_last_try")) }
                    }
                    button.primary type="submit" id="pin-submit" { (lang.t("pin.submit")) }
                }
                (field_error(lang, &view.errors, "pin"))
            }
        }
    }
}

/// A form field that never keeps a copy of what was typed: zeroized on drop, never printed.
pub struct Secret(zeroize::Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(zeroize::Zeroizing::new(s)))
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self(zeroize::Zeroizing::new(String::new()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PinForm {
    reader: String,
    generation: u64,
    pin: Secret,
    confirm_last_try: Option<String>,
}

/// `POST /cartes/pin`: presents the PIN to the active CPS card, on this explicit request only.
/// The PIN is not logged, not audited, not echoed; the service refuses to spend the last try
/// without the confirmation box.
pub async fn cartes_pin(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    Form(mut form): Form<PinForm>,
) -> Response {
    use passerelle_cards::{CardError, Pin, PinState};
    let Some(cards) = &state.services.cards else {
        return (StatusCode::NOT_FOUND, "404").into_response();
    };
    let mut view = CardsView::default();
    // The PIN leaves the form here; `Pin::new` consumes the string and zeroizes it.
    let typed = std::mem::take(&mut *form.pin.0);
    let pin = Pin::new(typed);
    let active = cards
        .active_card()
        .filter(|(r, c)| *r == form.reader && c.generation == form.generation);
    let card_name = active.as_ref().map_or_else(
        || form.reader.clone(),
        |(r, c)| {
            c.identity
                .as_ref()
                .map_or_else(|| r.clone(), |id| id.serial.clone())
        },
    );
    let status = match (pin, active) {
        (Err(_), _) => {
            view.errors.insert("pin", "err.pin_format");
            StatusCode::UNPROCESSABLE_ENTITY
        }
        (Ok(_), None) => {
            view.failure = Some(lang.t("pin.card_changed").to_owned());
            StatusCode::CONFLICT
        }
        (Ok(pin), Some(_)) => {
            let result = cards.verify_pin(pin, form.confirm_last_try.is_some()).await;
            let (outcome, ok) = match &result {
                Ok(PinState::Verified) => ("verified".to_owned(), true),
                Ok(other) => (format!("{other:?}"), false),
                Err(CardError::WrongPin { tries_left }) => {
                    (format!("wrong PIN, {tries_left} tries left"), false)
                }
                Err(CardError::PinBlocked) => ("blocked".to_owned(), false),
                Err(CardError::LastTryNeedsConfirmation) => {
                    ("not sent: last try not confirmed".to_owned(), false)
                }
                Err(e) => (e.to_string(), false),
            };
            state
                .audit(
                    &session.user,
                    &addr,
                    "pin_presented",
                    &format!("PIN presented for card {card_name}: {outcome}"),
                    ok,
                )
                .await;
            match result {
                Ok(PinState::Verified) => {
                    view.notice = Some(lang.t("pin.verified_notice").to_owned());
                    StatusCode::OK
                }
                Ok(_) => {
                    view.failure = Some(lang.t("pin.not_verified_notice").to_owned());
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Err(CardError::WrongPin { tries_left }) => {
                    view.failure = Some(format!("{} {tries_left}", lang.t("pin.wrong")));
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Err(CardError::PinBlocked) => {
                    view.failure = Some(lang.t("pin.blocked_notice").to_owned());
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Err(CardError::LastTryNeedsConfirmation) => {
                    view.errors.insert("pin", "pin.confirm_required");
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                Err(e) => {
                    view.failure = Some(format!("{} : {e}", lang.t("err.service")));
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }
    };
    let body = cartes_page(cards, lang, &session, &view);
    (status, layout(lang, "/cartes", &session, &body)).into_response()
}

fn card_counts(readers: &[passerelle_cards::ReaderStatus]) -> (usize, usize) {
    (
        readers.len(),
        readers.iter().filter(|r| r.card.is_some()).count(),
    )
}

// ---------------------------------------------------------------- keys and certificates

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyForm {
    label: String,
    algorithm: String,
    cn: String,
    o: String,
}

fn valid_label(label: &str) -> bool {
    (1..=32).contains(&label.len())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

const ALGORITHMS: &[(&str, KeyAlgorithm)] = &[
    ("ec-p256", KeyAlgorithm::EcP256),
    ("rsa2048", KeyAlgorithm::Rsa2048),
    ("rsa3072", KeyAlgorithm::Rsa3072),
];

struct KeysView<'a> {
    notice: Option<String>,
    failure: Option<String>,
    errors: Errors,
    form: &'a KeyForm,
}

async fn keys_page(state: &AppState, lang: Lang, session: &Session, view: &KeysView<'_>) -> Markup {
    let keys = match &state.services.keystore {
        Some(ks) => Some(ks.list().await.map_err(|e| e.to_string())),
        None => None,
    };
    let anchors = match &state.services.anchors {
        Some(files) => {
            let files = files.clone();
            Some(
                tokio::task::spawn_blocking(move || anchor_rows(&files))
                    .await
                    .unwrap_or_else(|_| Err("anchor check panicked".to_owned())),
            )
        }
        None => None,
    };
    let csrf = &session.csrf;
    let labels: Vec<String> = match &keys {
        Some(Ok(k)) => k.iter().map(|k| k.label.clone()).collect(),
        _ => Vec::new(),
    };
    html! {
        @if let Some(n) = &view.notice { p.notice id="notice" { (n) } }
        @if let Some(f) = &view.failure { p.alert id="failure" { (f) } }
        section.card {
            h2 { (lang.t("keys.title")) }
            @match &keys {
                None => p.muted { (lang.t("not_configured")) },
                Some(Err(e)) => p.alert { (lang.t("err.service")) " : " (e) },
                Some(Ok(k)) if k.is_empty() => p { (lang.t("keys.none")) },
                Some(Ok(k)) => table id="keys" {
                    thead { tr { th { (lang.t("keys.label")) } th { (lang.t("keys.algorithm")) } th { (lang.t("keys.protection")) } th { (lang.t("keys.certificate")) } } }
                    tbody {
                        @for key in k {
                            tr {
                                td.mono { (key.label) }
                                td { (key.algorithm.as_str()) }
                                td { @if key.sensitive && !key.extractable && key.local { span.ok { "✔ sensitive, non-extractable, local" } } @else { span.bad { "sensitive=" (key.sensitive) " extractable=" (key.extractable) } } }
                                td.mono { (key.certificate_subject.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                },
            }
        }
        @if state.services.keystore.is_some() {
            section.card {
                h2 { (lang.t("keys.generate")) }
                form.inline method="post" action="/cles/generer" id="generate" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    label { (lang.t("keys.label")) input type="text" name="label" id="gen-label" value=(view.form.label); }
                    label { (lang.t("keys.algorithm")) select name="algorithm" { @for (v, _) in ALGORITHMS { option value=(v) selected[*v == view.form.algorithm] { (v) } } } }
                    button.primary type="submit" id="generate-submit" { (lang.t("keys.generate")) }
                }
                (field_error(lang, &view.errors, "label"))
                (field_error(lang, &view.errors, "algorithm"))
            }
            section.card {
                h2 { (lang.t("keys.csr")) }
                form.inline method="post" action="/cles/csr" id="csr" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    label { (lang.t("keys.label")) select name="label" id="csr-label" { @for l in &labels { option value=(l) { (l) } } } }
                    label { (lang.t("keys.csr_cn")) input type="text" name="cn" id="csr-cn" value=(view.form.cn); }
                    label { (lang.t("keys.csr_o")) input type="text" name="o" id="csr-o" value=(view.form.o); }
                    button.primary type="submit" id="csr-submit" { (lang.t("keys.csr")) }
                }
                (field_error(lang, &view.errors, "cn"))
                (field_error(lang, &view.errors, "o"))
            }
            section.card {
                h2 { (lang.t("keys.import")) }
                form.inline method="post" action={ "/cles/certificat?" (CSRF_FIELD) "=" (csrf) } enctype="multipart/form-data" id="import" {
                    label { (lang.t("keys.label")) select name="label" { @for l in &labels { option value=(l) { (l) } } } }
                    label { (lang.t("keys.file")) input type="file" name="file" id="import-file" accept=".pem,.crt,.cer,.der"; }
                    button.primary type="submit" id="import-submit" { (lang.t("keys.import")) }
                }
                (field_error(lang, &view.errors, "file"))
            }
        }
        section.card {
            h2 { (lang.t("keys.anchors")) }
            @match &anchors {
                None => p.muted { (lang.t("not_configured")) },
                Some(Err(e)) => p.alert { (lang.t("err.service")) " : " (e) },
                Some(Ok(rows)) => table id="anchors" {
                    thead { tr { th { "Fichier" } th { (lang.t("keys.fingerprint")) } th { "" } } }
                    tbody {
                        @for (name, fp, status) in rows {
                            tr {
                                td.mono { (name) }
                                td.mono { (fp) }
                                td class=(if *status == "keys.anchor_ok" { "ok" } else { "bad" }) { (lang.t(status)) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// (file, SHA-256 fingerprint, status key) of every anchor, pinned or present.
fn anchor_rows(
    files: &crate::services::AnchorFiles,
) -> Result<Vec<(String, String, &'static str)>, String> {
    let report =
        passerelle_trust::check_anchors(&files.dir, &files.pins_file).map_err(|e| e.to_string())?;
    let fingerprint = |name: &str| -> String {
        let path = files.dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() <= 256 * 1024 => std::fs::read(&path)
                .ok()
                .and_then(|b| crate::certs::certificates(&b).ok())
                .and_then(|c| c.into_iter().next())
                .map_or_else(|| "—".to_owned(), |der| crate::certs::fingerprint(&der)),
            _ => "—".to_owned(),
        }
    };
    let mut rows = Vec::new();
    for name in &report.matched {
        rows.push((name.clone(), fingerprint(name), "keys.anchor_ok"));
    }
    for m in &report.mismatched {
        rows.push((m.name.clone(), fingerprint(&m.name), "keys.anchor_bad"));
    }
    for name in &report.missing {
        rows.push((name.clone(), "—".to_owned(), "keys.anchor_missing"));
    }
    for (name, _) in &report.unreadable {
        rows.push((name.clone(), "—".to_owned(), "keys.anchor_unreadable"));
    }
    for name in &report.extra {
        rows.push((name.clone(), fingerprint(name), "keys.anchor_extra"));
    }
    rows.sort();
    Ok(rows)
}

pub async fn keys(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let form = KeyForm {
        algorithm: "ec-p256".to_owned(),
        ..KeyForm::default()
    };
    let view = KeysView {
        notice: None,
        failure: None,
        errors: Errors::new(),
        form: &form,
    };
    let body = keys_page(&state, lang, &session, &view).await;
    layout(lang, "/cles", &session, &body).into_response()
}

pub async fn key_generate(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    Form(form): Form<KeyForm>,
) -> Response {
    let mut errors = Errors::new();
    if !valid_label(&form.label) {
        errors.insert("label", "err.label");
    }
    let algorithm = ALGORITHMS
        .iter()
        .find(|(v, _)| *v == form.algorithm)
        .map(|(_, a)| *a);
    if algorithm.is_none() {
        errors.insert("algorithm", "err.choice");
    }
    let (mut notice, mut failure) = (None, None);
    let status = match (&state.services.keystore, algorithm) {
        (Some(ks), Some(algorithm)) if errors.is_empty() => {
            match ks.generate(&form.label, algorithm).await {
                Ok(info) => {
                    state
                        .audit(
                            &session.user,
                            &addr,
                            "key_generate",
                            &format!("{} {}", info.label, algorithm.as_str()),
                            true,
                        )
                        .await;
                    notice = Some(format!("{} : {}", lang.t("keys.generated"), info.label));
                    StatusCode::OK
                }
                Err(e) => {
                    state
                        .audit(&session.user, &addr, "key_generate", &form.label, false)
                        .await;
                    failure = Some(format!("{} : {e}", lang.t("err.service")));
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            }
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let view = KeysView {
        notice,
        failure,
        errors,
        form: &form,
    };
    let body = keys_page(&state, lang, &session, &view).await;
    (status, layout(lang, "/cles", &session, &body)).into_response()
}

pub async fn key_csr(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    Form(form): Form<KeyForm>,
) -> Response {
    let mut errors = Errors::new();
    if !valid_label(&form.label) {
        errors.insert("label", "err.label");
    }
    for (name, value) in [("cn", &form.cn), ("o", &form.o)] {
        if value.trim().is_empty() || value.len() > 64 {
            errors.insert(name, "err.required");
        }
    }
    let mut failure = None;
    if let (Some(ks), true) = (&state.services.keystore, errors.is_empty()) {
        let subject = Subject::Device {
            name: form.cn.trim().to_owned(),
            organization: form.o.trim().to_owned(),
        };
        match ks.csr(&KeyRef::Label(form.label.clone()), &subject).await {
            Ok(pem) => {
                state
                    .audit(&session.user, &addr, "key_csr", &form.label, true)
                    .await;
                let disposition = format!("attachment; filename=\"{}.csr\"", form.label);
                return (
                    [
                        (CONTENT_TYPE, "application/pkcs10".to_owned()),
                        (CONTENT_DISPOSITION, disposition),
                    ],
                    pem,
                )
                    .into_response();
            }
            Err(e) => {
                state
                    .audit(&session.user, &addr, "key_csr", &form.label, false)
                    .await;
                failure = Some(format!("{} : {e}", lang.t("err.service")));
            }
        }
    }
    let view = KeysView {
        notice: None,
        failure,
        errors,
        form: &form,
    };
    let body = keys_page(&state, lang, &session, &view).await;
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        layout(lang, "/cles", &session, &body),
    )
        .into_response()
}

pub async fn key_import(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    mut multipart: Multipart,
) -> Response {
    let mut label = String::new();
    let mut file: Option<Vec<u8>> = None;
    let mut errors = Errors::new();
    let mut failure = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                match field.bytes().await {
                    Ok(bytes) if name == "label" => {
                        label = String::from_utf8_lossy(&bytes).into_owned();
                    }
                    Ok(bytes) if name == "file" => file = Some(bytes.to_vec()),
                    Ok(_) => {}
                    Err(_) => {
                        errors.insert("file", "err.upload");
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                errors.insert("file", "err.upload");
                break;
            }
        }
    }
    if !valid_label(&label) {
        errors.insert("label", "err.label");
    }
    let certs = match &file {
        Some(bytes) if bytes.len() <= MAX_CERT_UPLOAD_BYTES => {
            match crate::certs::certificates(bytes) {
                Ok(c) => Some(c),
                Err(why) => {
                    failure = Some(format!("{} : {why}", lang.t("err.upload")));
                    errors.insert("file", "err.upload");
                    None
                }
            }
        }
        _ => {
            errors.insert("file", "err.upload");
            None
        }
    };
    let mut notice = None;
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    if let (Some(ks), Some(certs), true) = (&state.services.keystore, certs, errors.is_empty()) {
        // The keystore reads a file: write the checked DER certificates as a PEM bundle.
        let path = state
            .config
            .data_dir
            .join(format!("upload-{}.pem", auth::random_token()));
        let pem: String = certs.iter().map(|der| crate::certs::to_pem(der)).collect();
        let result = match std::fs::write(&path, pem) {
            Ok(()) => ks
                .import_certificate(&KeyRef::Label(label.clone()), &path)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let _ = std::fs::remove_file(&path);
        match result {
            Ok(info) => {
                state
                    .audit(&session.user, &addr, "certificate_import", &label, true)
                    .await;
                notice = Some(format!(
                    "{} : {} ({})",
                    lang.t("keys.imported"),
                    info.label,
                    info.certificate_subject.unwrap_or_default()
                ));
                status = StatusCode::OK;
            }
            Err(e) => {
                state
                    .audit(&session.user, &addr, "certificate_import", &label, false)
                    .await;
                failure = Some(format!("{} : {e}", lang.t("err.service")));
            }
        }
    }
    let form = KeyForm {
        label,
        ..KeyForm::default()
    };
    let view = KeysView {
        notice,
        failure,
        errors,
        form: &form,
    };
    let body = keys_page(&state, lang, &session, &view).await;
    (status, layout(lang, "/cles", &session, &body)).into_response()
}

// ---------------------------------------------------------------- liste blanche, annuaire

pub async fn liste_blanche(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    use passerelle_liste_blanche::ListeBlancheState;
    let body = match &state.services.liste_blanche {
        None => html! { p.muted { (lang.t("not_configured")) } },
        Some(handle) => match handle.state(rustls_pki_types::UnixTime::now()) {
            ListeBlancheState::NoVerifiedList => html! { p.alert { (lang.t("alert.lb_none")) } },
            ListeBlancheState::Verified { meta, stale, .. } => html! {
                section.card {
                    table id="liste-blanche" {
                        tr { th { (lang.t("lb.result")) } td class=(if stale { "bad" } else { "ok" }) { (lang.t(if stale { "lb.stale" } else { "lb.ok" })) } }
                        tr { th { (lang.t("lb.version")) } td.mono { (meta.sha256) } }
                        tr { th { (lang.t("lb.fetched")) } td { (format_ts(i64::try_from(meta.fetched_at).unwrap_or(0))) } }
                        tr { th { (lang.t("lb.verified")) } td { (format_ts(i64::try_from(meta.verified_at).unwrap_or(0))) } }
                        tr { th { (lang.t("lb.domains")) } td { (meta.domain_count) } }
                        tr { th { (lang.t("lb.signer")) } td.mono { (meta.signer) } }
                    }
                }
            },
        },
    };
    layout(lang, "/liste-blanche", &session, &body).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    q: String,
}

pub async fn annuaire(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Query(query): Query<SearchQuery>,
) -> Response {
    let mut errors = Errors::new();
    let mut failure = None;
    let found = match (&state.services.annuaire, query.q.trim()) {
        (Some(cache), q) if !q.is_empty() => {
            let limits = passerelle_annuaire::QueryLimits::default();
            if let Ok(parsed) = passerelle_annuaire::Query::free_text(q, &limits) {
                match cache.search(&parsed, 50).await {
                    Ok(found) => Some(found),
                    Err(e) => {
                        failure = Some(e.to_string());
                        None
                    }
                }
            } else {
                errors.insert("q", "err.required");
                None
            }
        }
        _ => None,
    };
    let body = html! {
        @if state.services.annuaire.is_none() { p.muted { (lang.t("not_configured")) } }
        @else {
            section.card {
                form.inline method="get" action="/annuaire" id="search" {
                    label { (lang.t("ann.search")) input type="text" name="q" id="q" value=(query.q) placeholder=(lang.t("ann.query")); }
                    button.primary type="submit" { (lang.t("ann.search")) }
                }
                (field_error(lang, &errors, "q"))
                @if let Some(f) = failure { p.alert { (lang.t("err.service")) " : " (f) } }
                @if let Some(found) = &found {
                    @if found.entries.is_empty() { p { (lang.t("ann.none")) } }
                    @else {
                        table id="results" {
                            @for e in &found.entries {
                                tr { td.mono { (e.mail) } td { (e.prenom) " " (e.nom) } td { (e.profession) } td { (e.organisation) } td { (e.code_postal) " " (e.ville) } }
                            }
                        }
                        @if found.truncated { p.muted { (lang.t("ann.truncated")) } }
                    }
                }
            }
        }
    };
    layout(lang, "/annuaire", &session, &body).into_response()
}

// ---------------------------------------------------------------- journal

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JournalQuery {
    actor: String,
    action: String,
    since: String,
}

pub async fn journal(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Query(query): Query<JournalQuery>,
) -> Response {
    let mut errors = Errors::new();
    let since = if query.since.trim().is_empty() {
        None
    } else {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(query.since.trim(), &format) {
            Some(d.midnight().assume_utc().unix_timestamp())
        } else {
            errors.insert("since", "err.date");
            None
        }
    };
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = AuditFilter {
        actor: non_empty(&query.actor),
        action: non_empty(&query.action),
        since,
    };
    let entries = state.db.audit_entries(&filter, 500).await;
    let body = html! {
        section.card {
            form.inline method="get" action="/journal" id="journal-filter" {
                label { (lang.t("journal.actor")) input type="text" name="actor" value=(query.actor); }
                label { (lang.t("journal.action")) input type="text" name="action" value=(query.action); }
                label { (lang.t("journal.since")) input type="text" name="since" value=(query.since); }
                button.primary type="submit" { (lang.t("journal.filter")) }
            }
            (field_error(lang, &errors, "since"))
        }
        section.card {
            @match &entries {
                Err(e) => p.alert { (lang.t("err.service")) " : " (e) },
                Ok(entries) => table id="audit" {
                    thead { tr { th { (lang.t("journal.at")) } th { (lang.t("journal.actor")) } th { (lang.t("journal.address")) } th { (lang.t("journal.action")) } th { (lang.t("journal.detail")) } th { (lang.t("journal.outcome")) } } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { (format_ts(e.at)) } td.mono { (e.actor) } td.mono { (e.address) } td.mono { (e.action) } td.mono { (e.detail) }
                                td class=(if e.outcome == "ok" { "ok" } else { "bad" }) { (e.outcome) }
                            }
                        }
                    }
                },
            }
        }
    };
    layout(lang, "/journal", &session, &body).into_response()
}
