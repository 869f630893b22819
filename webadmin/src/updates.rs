//! Mises à jour: running version and slot, the updater's state live (SSE from its `watch`),
//! "Vérifier maintenant" and "Installer" sent to the updater loop, and the history of
//! attempts (every state change the updater reported, recorded by [`record_history`]).

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use passerelle_updater::service::{Command, UpdateStatus};
use tokio::sync::watch;

use crate::app::AppState;
use crate::auth::{CSRF_FIELD, ClientAddr, Session};
use crate::db::Db;
use crate::i18n::Lang;
use crate::pages::{coming, format_ts, layout};

/// (event name for the history, catalogue key, detail, progress percent; `None` while running).
fn describe(status: &UpdateStatus) -> (&'static str, &'static str, String, Option<u8>) {
    match status {
        UpdateStatus::Idle => ("idle", "upd.idle", String::new(), Some(0)),
        UpdateStatus::Checking => ("checking", "upd.checking", String::new(), None),
        UpdateStatus::UpToDate => ("up_to_date", "upd.up_to_date", String::new(), Some(100)),
        UpdateStatus::RebootPending { version } => {
            ("armed", "upd.armed", version.to_string(), Some(100))
        }
        UpdateStatus::Rejected { reason } => ("rejected", "upd.rejected", reason.clone(), Some(0)),
        UpdateStatus::FellBack(f) => (
            "fell_back",
            "upd.fell_back",
            format!(
                "{:?} {} ({} tries)",
                f.slot,
                f.version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
                f.tries_done
            ),
            Some(0),
        ),
    }
}

/// Records every state the updater reports, until its sender goes.
pub async fn record_history(db: Db, mut status: watch::Receiver<UpdateStatus>) {
    loop {
        let (event, _, detail, _) = describe(&status.borrow_and_update());
        if event != "idle"
            && let Err(e) = db.record_update_event(event, &detail).await
        {
            tracing::warn!(error = %e, "recording an update event");
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

fn status_markup(lang: Lang, status: &UpdateStatus) -> Markup {
    let (_, key, detail, percent) = describe(status);
    html! {
        p { strong id="update-state" data-update="text" { (lang.t(key)) @if !detail.is_empty() { " : " (detail) } } }
        @match percent {
            Some(p) => progress id="update-progress" data-update="progress" max="100" value=(p) { (p) " %" },
            None => progress id="update-progress" data-update="progress" max="100" {},
        }
    }
}

async fn page(state: &AppState, lang: Lang, session: &Session, notice: Option<String>) -> Markup {
    let Some(updates) = &state.services.updates else {
        return coming(lang, "coming.updates");
    };
    let status = updates.status.borrow().clone();
    let history = state.db.update_events(50).await.unwrap_or_default();
    let armed = matches!(status, UpdateStatus::RebootPending { .. });
    let busy = matches!(status, UpdateStatus::Checking);
    html! {
        @if let Some(n) = &notice { p.notice id="notice" { (n) } }
        section.card {
            table id="update-info" {
                tr { th { (lang.t("upd.version")) } td.mono id="update-version" { (updates.version) } }
                tr { th { (lang.t("upd.slot")) } td.mono { (updates.slot.name()) } }
                tr { th { (lang.t("upd.last_check")) } td {
                    (history.iter().find(|e| e.event != "requested").map_or_else(|| "—".to_owned(), |e| format_ts(e.at)))
                } }
            }
            div id="update-live" data-update-source="/mises-a-jour/progression" {
                (status_markup(lang, &status))
            }
            {
                form.inline method="post" action="/mises-a-jour/verifier" {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    button.primary type="submit" id="update-check" disabled[busy] { (lang.t("upd.check")) }
                }
                form.inline method="post" action="/mises-a-jour/installer" {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    button type="submit" id="update-install" disabled[!armed] { (lang.t("upd.install")) }
                }
            }
        }
        section.card {
            h2 { (lang.t("upd.history")) }
            @if history.is_empty() { p.muted { (lang.t("upd.no_history")) } }
            @else {
                table id="update-history" {
                    thead { tr { th { (lang.t("journal.at")) } th { (lang.t("journal.action")) } th { (lang.t("journal.detail")) } } }
                    tbody {
                        @for e in &history {
                            tr { td { (format_ts(e.at)) } td.mono { (e.event) } td.mono { (e.detail) } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn mises_a_jour(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let body = page(&state, lang, &session, None).await;
    layout(lang, "/mises-a-jour", &session, &body).into_response()
}

async fn command(
    state: &AppState,
    lang: Lang,
    session: &Session,
    addr: &ClientAddr,
    command: Command,
) -> Response {
    let sender = state.services.updates.as_ref().map(|u| u.commands.clone());
    let Some(sender) = sender else {
        return (StatusCode::NOT_FOUND, "404").into_response();
    };
    let armed = state
        .services
        .updates
        .as_ref()
        .is_some_and(|u| matches!(*u.status.borrow(), UpdateStatus::RebootPending { .. }));
    let (action, notice_key) = match command {
        Command::CheckNow => ("update_check", "upd.check_sent"),
        Command::RebootNow => ("update_install", "upd.install_sent"),
    };
    if command == Command::RebootNow && !armed {
        state
            .audit(&session.user, addr, action, "nothing armed", false)
            .await;
        let body = page(
            state,
            lang,
            session,
            Some(lang.t("upd.nothing_armed").to_owned()),
        )
        .await;
        return (
            StatusCode::CONFLICT,
            layout(lang, "/mises-a-jour", session, &body),
        )
            .into_response();
    }
    // A full channel means a request is already waiting: one is enough.
    let sent = sender.try_send(command).is_ok();
    state.audit(&session.user, addr, action, "", sent).await;
    if let Err(e) = state.db.record_update_event("requested", action).await {
        tracing::warn!(error = %e, "recording an update request");
    }
    let notice = lang
        .t(if sent { notice_key } else { "upd.busy" })
        .to_owned();
    let body = page(state, lang, session, Some(notice)).await;
    let status = if sent {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    (status, layout(lang, "/mises-a-jour", session, &body)).into_response()
}

pub async fn check_now(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
) -> Response {
    command(&state, lang, &session, &addr, Command::CheckNow).await
}

pub async fn install(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
) -> Response {
    command(&state, lang, &session, &addr, Command::RebootNow).await
}

/// The updater's state as `update` events: `{"text": …, "progress": 0-100 or null}`. Ends
/// with the session or when the updater goes.
pub async fn progress(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
) -> Response {
    let Some(updates) = &state.services.updates else {
        return (StatusCode::NOT_FOUND, "404").into_response();
    };
    let idle = i64::try_from(state.config.idle_timeout.as_secs()).unwrap_or(i64::MAX);
    let rx = updates.status.clone();
    let stream = futures::stream::unfold(
        (state, session, rx, true),
        move |(state, session, mut rx, first)| async move {
            if !first {
                // Wake on a change, or every 30 s to notice the session's end.
                let changed =
                    tokio::time::timeout(std::time::Duration::from_secs(30), rx.changed()).await;
                if matches!(changed, Ok(Err(_))) {
                    return None;
                }
                if !state
                    .db
                    .session_alive(&session.id_hash, idle)
                    .await
                    .unwrap_or(false)
                {
                    return None;
                }
            }
            let (_, key, detail, percent) = describe(&rx.borrow_and_update());
            let mut text = lang.t(key).to_owned();
            if !detail.is_empty() {
                text.push_str(" : ");
                text.push_str(&detail);
            }
            let data = serde_json::json!({ "text": text, "progress": percent });
            let event = Event::default().event("update").data(data.to_string());
            Some((Ok::<_, Infallible>(event), (state, session, rx, false)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
