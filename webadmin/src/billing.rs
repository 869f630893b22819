//! Facturation: lots with their state, flow, dates and ARL, filtered by state, the history
//! of one lot, the CRL and mailbox-poll state, and the operator's resend of a rejected or
//! overdue lot (`BillingStatus::resend`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use passerelle_billing::{CrlOutcome, LotId, LotState, PollOutcome, RESENDABLE};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{CSRF_FIELD, ClientAddr, Session};
use crate::i18n::Lang;
use crate::pages::{Errors, coming, field_error, format_ts, layout};

/// Most lots listed on one page (the newest).
const MAX_LISTED: usize = 500;

pub(crate) fn ts(t: SystemTime) -> String {
    format_ts(
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    )
}

pub(crate) fn state_key(s: LotState) -> &'static str {
    match s {
        LotState::Received => "lot.received",
        LotState::Blocked => "lot.blocked",
        LotState::Encrypted => "lot.encrypted",
        LotState::Sent => "lot.sent",
        LotState::Acknowledged => "lot.acknowledged",
        LotState::Rejected => "lot.rejected",
        LotState::Overdue => "lot.overdue",
        LotState::Refused => "lot.refused",
    }
}

fn state_class(s: LotState) -> &'static str {
    match s {
        LotState::Acknowledged => "ok",
        LotState::Rejected | LotState::Overdue | LotState::Refused | LotState::Blocked => "bad",
        _ => "",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LotsQuery {
    etat: String,
    lot: String,
}

#[derive(Default)]
struct View {
    notice: Option<String>,
    failure: Option<String>,
    errors: Errors,
}

async fn page(
    state: &AppState,
    lang: Lang,
    session: &Session,
    query: &LotsQuery,
    view: &mut View,
) -> Markup {
    let Some(billing) = &state.services.billing else {
        return coming(lang, "coming.billing");
    };
    let filter = if query.etat.is_empty() {
        None
    } else if let Ok(s) = query.etat.parse::<LotState>() {
        Some(s)
    } else {
        view.errors.insert("etat", "err.choice");
        None
    };
    let lots = billing.lots(filter).await.map_err(|e| e.to_string());
    let counts = billing.counts().await.unwrap_or_default();
    let detail = if query.lot.is_empty() {
        None
    } else if let Some(id) = LotId::parse(&query.lot) {
        billing.lot(&id).await.ok().flatten()
    } else {
        view.errors.insert("lot", "err.lot");
        None
    };
    let crl = billing.crl();
    let poll = billing.last_poll();
    let csrf = &session.csrf;
    html! {
        @if let Some(n) = &view.notice { p.notice id="notice" { (n) } }
        @if let Some(f) = &view.failure { p.alert id="failure" role="alert" { (f) } }
        (summary(billing, lang, &counts, poll.as_ref()))
        (crl_section(lang, &crl))
        @if let Some(d) = &detail { (detail_section(lang, d)) }
        (field_error(lang, &view.errors, "lot"))
        section.card {
            h2 { (lang.t("bill.lots")) }
            form.inline method="get" action="/facturation" id="lot-filter" {
                label { (lang.t("bill.state")) " "
                    select name="etat" id="etat" {
                        option value="" selected[filter.is_none()] { (lang.t("bill.all")) }
                        @for s in LotState::ALL {
                            option value=(s.as_str()) selected[filter == Some(s)] { (lang.t(state_key(s))) }
                        }
                    }
                }
                button.primary type="submit" id="filter-submit" { (lang.t("journal.filter")) }
            }
            (field_error(lang, &view.errors, "etat"))
            @match &lots {
                Err(e) => p.alert { (lang.t("err.service")) " : " (e) },
                Ok(lots) if lots.is_empty() => p { (lang.t("bill.none")) },
                Ok(lots) => table id="lots" {
                    thead { tr {
                        th { (lang.t("bill.lot")) } th { (lang.t("bill.flow")) } th { (lang.t("bill.state")) }
                        th { (lang.t("bill.received")) } th { (lang.t("bill.updated")) } th { (lang.t("bill.sends")) }
                        th { "ARL" } th {}
                    } }
                    tbody {
                        @for lot in lots.iter().rev().take(MAX_LISTED) {
                            tr id={ "lot-" (lot.id) } {
                                td { a.mono href={ "/facturation?lot=" (lot.id) } { (&lot.id.as_str()[..12]) "…" } br; span.muted { (lot.meta.subject) } }
                                td { (lot.meta.flow.as_str().to_uppercase()) " " (lot.meta.recipient.as_str().to_uppercase()) " (" (lot.meta.env.as_str()) ")" }
                                td class=(state_class(lot.state)) { (lang.t(state_key(lot.state))) br; span.muted { (lot.reason) } }
                                td { (ts(lot.received_at)) }
                                td { (ts(lot.updated_at)) }
                                td { (lot.sends) }
                                td {
                                    @match &lot.arl {
                                        Some(a) if a.positive => span.ok { (lang.t("bill.arl_positive")) " " (ts(a.at)) },
                                        Some(a) => span.bad { (lang.t("bill.arl_negative")) " " (ts(a.at)) },
                                        None => span.muted { "—" },
                                    }
                                }
                                td {
                                    @if RESENDABLE.contains(&lot.state) {
                                        form.inline method="post" action="/facturation/renvoyer" {
                                            input type="hidden" name=(CSRF_FIELD) value=(csrf);
                                            input type="hidden" name="lot" value=(lot.id);
                                            button type="submit" id={ "resend-" (lot.id) } { (lang.t("bill.resend")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn summary(
    billing: &passerelle_billing::BillingStatus,
    lang: Lang,
    counts: &[(LotState, u64)],
    poll: Option<&passerelle_billing::PollReport>,
) -> Markup {
    html! {
        section.card {
            h2 { (lang.t("bill.counts")) }
            p id="lot-counts" {
                @for (s, n) in counts {
                    span class={ "count " (state_class(*s)) } { (lang.t(state_key(*s))) " : " strong { (n) } } " "
                }
            }
            p.muted { (lang.t("bill.arl_deadline")) " : " (billing.arl_deadline().as_secs() / 3600) " h" }
            @if let Some(p) = poll {
                p {
                    (lang.t("bill.last_poll")) " (" (p.route) ", " (ts(p.at)) ") : "
                    @match &p.outcome {
                        PollOutcome::Read { returns, changed, problems } => span.ok { (returns) " " (lang.t("bill.returns")) ", " (changed) " " (lang.t("bill.changed")) ", " (problems) " " (lang.t("bill.problems")) },
                        PollOutcome::Failed(why) => span.bad { (why) },
                    }
                }
            }
        }
    }
}

fn crl_section(lang: Lang, crl: &[passerelle_billing::CrlStatus]) -> Markup {
    html! {
        @if !crl.is_empty() {
            section.card {
                h2 { (lang.t("bill.crl")) }
                table id="crl" {
                    thead { tr { th { (lang.t("bill.crl_ca")) } th { (lang.t("bill.crl_next_update")) } th { (lang.t("bill.crl_last")) } th {} } }
                    tbody {
                        @for c in crl {
                            tr {
                                td.mono { (c.ca.as_deref().unwrap_or(&c.source)) }
                                td { (c.next_update.map_or_else(|| "—".to_owned(), ts)) }
                                td {
                                    (c.last_attempt.map_or_else(|| "—".to_owned(), ts)) " "
                                    @match &c.last_outcome {
                                        Some(CrlOutcome::Installed) => span.ok { (lang.t("bill.crl_installed")) },
                                        Some(CrlOutcome::Unchanged) => span { (lang.t("bill.crl_unchanged")) },
                                        Some(CrlOutcome::Failed(why)) => span.bad { (why) },
                                        None => {},
                                    }
                                }
                                td {
                                    @if c.missing { span.bad { (lang.t("bill.crl_missing")) } }
                                    @else if c.alert { span.bad { (lang.t("bill.crl_alert")) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn detail_section(lang: Lang, d: &passerelle_billing::LotDetail) -> Markup {
    html! {
            section.card id="lot-detail" {
                h2 { (lang.t("bill.history")) " " span.mono { (d.lot.id) } }
                p { (d.lot.meta.subject) " — " (d.lot.meta.file_name) }
                table id="history" {
                    thead { tr { th { (lang.t("journal.at")) } th { (lang.t("bill.from")) } th { (lang.t("bill.to")) } th { (lang.t("bill.reason")) } } }
                    tbody {
                        @for t in &d.history {
                            tr {
                                td { (ts(t.at)) }
                                td { (t.from.map_or("—", |s| lang.t(state_key(s)))) }
                                td class=(state_class(t.to)) { (lang.t(state_key(t.to))) }
                                td.mono { (t.reason) }
                            }
                        }
                    }
                }
            }
    }
}

pub async fn facturation(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Query(query): Query<LotsQuery>,
) -> Response {
    let mut view = View::default();
    let body = page(&state, lang, &session, &query, &mut view).await;
    let status = if view.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, layout(lang, "/facturation", &session, &body)).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResendForm {
    lot: String,
}

/// `POST /facturation/renvoyer`: the same content, encrypted again for the current
/// certificate, queued as a new round.
pub async fn resend(
    State(state): State<AppState>,
    Extension(lang): Extension<Lang>,
    Extension(session): Extension<Session>,
    Extension(addr): Extension<ClientAddr>,
    axum::Form(form): axum::Form<ResendForm>,
) -> Response {
    let mut view = View::default();
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    let id = LotId::parse(&form.lot);
    match (&state.services.billing, &id) {
        (None, _) => view.failure = Some(lang.t("not_configured").to_owned()),
        (_, None) => {
            view.errors.insert("lot", "err.lot");
        }
        (Some(billing), Some(id)) => match billing.resend(id).await {
            Ok(r) => {
                state
                    .audit(
                        &session.user,
                        &addr,
                        "lot_resend",
                        &format!("{} from {} round {}", r.lot, r.from, r.round),
                        true,
                    )
                    .await;
                view.notice = Some(format!(
                    "{} {} ({} {}).",
                    lang.t("bill.resent"),
                    r.lot,
                    lang.t("bill.round"),
                    r.round
                ));
                status = StatusCode::OK;
            }
            Err(e) => {
                state
                    .audit(
                        &session.user,
                        &addr,
                        "lot_resend",
                        &format!("{id}: {e}"),
                        false,
                    )
                    .await;
                view.failure = Some(format!("{} : {e}", lang.t("bill.resend_refused")));
            }
        },
    }
    let query = LotsQuery {
        etat: String::new(),
        lot: id.map(|i| i.to_string()).unwrap_or_default(),
    };
    let body = page(&state, lang, &session, &query, &mut view).await;
    (status, layout(lang, "/facturation", &session, &body)).into_response()
}
