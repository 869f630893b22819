//! Lots in from the LPS, durable before the LPS is answered.
//!
//! Every path ends in [`Intake::accept`]: the lot is checked ([`check_lot`]), its content
//! written durably to the lot store, its row committed (`received`), then a queue item
//! (kind [`QUEUE_KIND`](crate::QUEUE_KIND), key = lot id) enqueued; only then does the caller
//! answer. The same content offered again is the same lot id: nothing is duplicated.
//!
//! - **Spool folder** ([`scan_spool`]): the LPS writes `NAME.tmp` and renames it to `NAME`,
//!   and the same for the metadata sidecar `NAME.meta.json` (`{"flow":"fse","env":"test",
//!   "recipient":"amo","subject":"SV140610/…"}`), sidecar first. A lot is picked up once
//!   both complete names exist; after `accept` both move to `done/`, or to `refused/` with
//!   `NAME.reason` when the input is not a lot. A crash between `accept` and the move picks
//!   the file up again: same content, same lot id, no duplicate.
//! - **HTTP API** ([`api_router`]): `POST /lots?flow=fse&env=test&recipient=amo&subject=…&name=…`
//!   with the lot as the body answers `201 Created` with `{"lot_id": …}` after the enqueue,
//!   `422` with the reason for input that is not a lot; `GET /lots/{id}` shows its state.
//!   The API listens on the LAN side only (the address comes from the configuration).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use passerelle_queue::{NewItem, Queue, SqliteStore};
use passerelle_sesam::{Env, Flow, check_subject};
use serde::Deserialize;

use crate::error::BillingError;
use crate::lot_file::{LotId, check_lot};
use crate::lots::{LotState, LotStore};

/// Which AM organisation the lot goes to (selects the certificate and the route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientKind {
    Amo,
    Amc,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amo => "amo",
            Self::Amc => "amc",
        }
    }
}

impl FromStr for RecipientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "amo" => Ok(Self::Amo),
            "amc" => Ok(Self::Amc),
            _ => Err(format!("recipient {s:?}: expected amo or amc")),
        }
    }
}

pub(crate) fn parse_flow(s: &str) -> Result<Flow, String> {
    match s {
        "fse" => Ok(Flow::Fse),
        "dre" => Ok(Flow::Dre),
        _ => Err(format!("flow {s:?}: expected fse or dre")),
    }
}

pub(crate) fn parse_env(s: &str) -> Result<Env, String> {
    match s {
        "real" => Ok(Env::Real),
        "test" => Ok(Env::Test),
        "demo" => Ok(Env::Demo),
        _ => Err(format!("env {s:?}: expected real, test or demo")),
    }
}

/// What the LPS says about a lot besides its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotMeta {
    pub flow: Flow,
    pub env: Env,
    pub recipient: RecipientKind,
    /// The Subject, starting with the Formater_Lot reference (never made up here).
    pub subject: String,
    /// The lot's file name (the `.pkcs7` entity is named after it).
    pub file_name: String,
}

/// The metadata as the LPS writes it (sidecar JSON, API query string).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaIn {
    pub flow: String,
    pub env: String,
    pub recipient: String,
    pub subject: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Longest Subject or file name accepted from the LPS.
const MAX_FIELD: usize = 200;

impl MetaIn {
    pub(crate) fn check(self, default_name: &str) -> Result<LotMeta, BillingError> {
        let bad = |why: String| BillingError::NotALot { why };
        let flow = parse_flow(&self.flow).map_err(bad)?;
        let env = parse_env(&self.env).map_err(bad)?;
        let recipient: RecipientKind = self.recipient.parse().map_err(bad)?;
        match (flow, recipient) {
            (Flow::Fse, RecipientKind::Amo) | (Flow::Dre, RecipientKind::Amc) => {}
            _ => {
                return Err(bad(format!(
                    "flow {} goes to the {}",
                    flow.as_str(),
                    if flow == Flow::Fse { "amo" } else { "amc" }
                )));
            }
        }
        if self.subject.len() > MAX_FIELD {
            return Err(bad(format!("subject longer than {MAX_FIELD} bytes")));
        }
        check_subject(flow, &self.subject).map_err(|e| bad(e.to_string()))?;
        let file_name = self.name.unwrap_or_else(|| default_name.to_owned());
        if file_name.is_empty()
            || file_name.len() > MAX_FIELD
            || !file_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || file_name.starts_with('.')
        {
            return Err(bad(format!(
                "file name {file_name:?}: letters, digits, . _ - only"
            )));
        }
        Ok(LotMeta {
            flow,
            env,
            recipient,
            subject: self.subject,
            file_name,
        })
    }
}

/// What [`Intake::accept`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub lot_id: LotId,
    /// The same content was already stored: nothing changed.
    pub duplicate: bool,
}

/// The common end of every intake path.
#[derive(Clone, Debug)]
pub struct Intake {
    pub store: LotStore,
    pub queue: Queue<SqliteStore>,
    pub max_lot_bytes: u64,
}

impl Intake {
    /// Check, store and enqueue a lot; returns once all of it is durable.
    pub async fn accept(&self, meta: &LotMeta, content: &[u8]) -> Result<Accepted, BillingError> {
        let lot_id = check_lot(content, meta.flow, self.max_lot_bytes)?;
        let inserted = self.store.insert_received(&lot_id, meta, content).await?;
        // Enqueued even when the row existed: a crash may have come between the row and the
        // enqueue; the key absorbs the repeat.
        self.enqueue(&lot_id, 0).await?;
        if inserted {
            tracing::info!(lot = %lot_id, flow = meta.flow.as_str(), env = meta.env.as_str(), bytes = content.len(), "lot received");
        }
        Ok(Accepted {
            lot_id,
            duplicate: !inserted,
        })
    }

    /// Queue lot `id` for (re)sending; `round` ([`crate::Lot::round`]) distinguishes a resend
    /// (4005, 4025, operator) from the first send, since the queue keeps keys of done and
    /// dead items.
    pub async fn enqueue(&self, id: &LotId, round: u32) -> Result<(), BillingError> {
        self.queue
            .enqueue(NewItem::new(
                crate::QUEUE_KIND,
                format!("{id}#{round}"),
                id.as_str().as_bytes().to_vec(),
            ))
            .await?;
        Ok(())
    }

    /// Re-queue every `received` lot (a crash between row and enqueue, or a resend that was
    /// decided but not queued). Idempotent.
    pub async fn requeue_received(&self) -> Result<usize, BillingError> {
        let lots = self.store.list(Some(LotState::Received)).await?;
        for lot in &lots {
            self.enqueue(&lot.id, lot.round).await?;
        }
        Ok(lots.len())
    }
}

/// Sidecar suffix of a spooled lot's metadata.
pub const META_SUFFIX: &str = ".meta.json";
/// Largest sidecar read.
const MAX_META_BYTES: u64 = 4096;

/// Pick up every complete lot in `spool` (see the module doc). Returns the lots accepted or
/// refused in this pass. Errors of one file do not stop the others; an I/O error on the
/// folder itself is returned.
pub async fn scan_spool(spool: &Path, intake: &Intake) -> Result<Vec<LotId>, BillingError> {
    let done = spool.join("done");
    let refused = spool.join("refused");
    for d in [&done, &refused] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(BillingError::io(d))?;
    }
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(spool)
        .await
        .map_err(BillingError::io(spool))?;
    while let Some(e) = entries
        .next_entry()
        .await
        .map_err(BillingError::io(spool))?
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().await.is_ok_and(|t| t.is_file());
        // The protocol's suffixes are ours, written lowercase by the LPS.
        let in_progress = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tmp"));
        if is_file && !in_progress && !name.ends_with(META_SUFFIX) && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let lot = spool.join(&name);
        let meta_path = spool.join(format!("{name}{META_SUFFIX}"));
        if !tokio::fs::try_exists(&meta_path).await.unwrap_or(false) {
            // The sidecar comes first by protocol; a lot without one is not complete yet.
            continue;
        }
        match pick_up(&name, &lot, &meta_path, intake).await {
            Ok((id, dest)) => {
                for (from, to) in [
                    (&lot, dest.join(&name)),
                    (&meta_path, dest.join(format!("{name}{META_SUFFIX}"))),
                ] {
                    tokio::fs::rename(from, &to)
                        .await
                        .map_err(BillingError::io(from))?;
                }
                let d = dest.clone();
                let _ = tokio::task::spawn_blocking(move || crate::lots::sync_dir(&d)).await;
                out.push(id);
            }
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "spooled lot left in place; retried at the next pass");
            }
        }
    }
    Ok(out)
}

/// Accept or refuse one spooled lot; the folder it must move to.
async fn pick_up(
    name: &str,
    lot: &Path,
    meta_path: &Path,
    intake: &Intake,
) -> Result<(LotId, PathBuf), BillingError> {
    let spool = lot.parent().unwrap_or(Path::new("."));
    let size = tokio::fs::metadata(lot)
        .await
        .map_err(BillingError::io(lot))?
        .len();
    let meta_size = tokio::fs::metadata(meta_path)
        .await
        .map_err(BillingError::io(meta_path))?
        .len();
    let content = if size <= intake.max_lot_bytes {
        tokio::fs::read(lot).await.map_err(BillingError::io(lot))?
    } else {
        Vec::new()
    };
    let meta: Result<LotMeta, BillingError> = if meta_size > MAX_META_BYTES {
        Err(BillingError::NotALot {
            why: format!("{name}{META_SUFFIX} above {MAX_META_BYTES} bytes"),
        })
    } else {
        let raw = tokio::fs::read(meta_path)
            .await
            .map_err(BillingError::io(meta_path))?;
        serde_json::from_slice::<MetaIn>(&raw)
            .map_err(|e| BillingError::NotALot {
                why: format!("{name}{META_SUFFIX}: {e}"),
            })
            .and_then(|m| m.check(name))
    };
    let outcome = match (&meta, size > intake.max_lot_bytes) {
        (Ok(_), true) => Err(BillingError::NotALot {
            why: format!(
                "the file is {size} bytes, above the maximum of {} bytes",
                intake.max_lot_bytes
            ),
        }),
        (Ok(m), false) => intake.accept(m, &content).await.map(|a| a.lot_id),
        (Err(BillingError::NotALot { why }), _) => Err(BillingError::NotALot { why: why.clone() }),
        (Err(_), _) => Err(BillingError::NotALot {
            why: "unreadable metadata".into(),
        }),
    };
    match outcome {
        Ok(id) => Ok((id, spool.join("done"))),
        Err(BillingError::NotALot { why }) => {
            // Nothing is lost: the file goes to refused/ with its reason, and the refusal is
            // a lot row the operator sees in `passerelle sesam lots`.
            let id = LotId::of(&[name.as_bytes(), b"\0", &content].concat());
            let meta = meta.unwrap_or(LotMeta {
                flow: Flow::Fse,
                env: Env::Real,
                recipient: RecipientKind::Amo,
                subject: String::new(),
                file_name: name.to_owned(),
            });
            intake.store.insert_refused(&id, &meta, &why).await?;
            let dest = spool.join("refused");
            let reason_path = dest.join(format!("{name}.reason"));
            tokio::fs::write(&reason_path, format!("{why}\n"))
                .await
                .map_err(BillingError::io(&reason_path))?;
            tracing::warn!(file = %name, lot = %id, reason = %why, "spooled file refused");
            Ok((id, dest))
        }
        Err(e) => Err(e),
    }
}

/// The local HTTP API (see the module doc).
pub fn api_router(intake: Intake) -> Router {
    let limit = usize::try_from(intake.max_lot_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/lots", post(post_lot))
        .route("/lots/{id}", get(get_lot))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(intake))
}

async fn post_lot(
    State(intake): State<Arc<Intake>>,
    Query(meta): Query<MetaIn>,
    body: axum::body::Bytes,
) -> Response {
    let result = match meta.check("lot") {
        Ok(m) => intake.accept(&m, &body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(a) => (
            if a.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            axum::Json(
                serde_json::json!({ "lot_id": a.lot_id.as_str(), "duplicate": a.duplicate }),
            ),
        )
            .into_response(),
        Err(BillingError::NotALot { why }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "error": why })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "lot intake failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "error": "the lot could not be stored; retry" })),
            )
                .into_response()
        }
    }
}

async fn get_lot(State(intake): State<Arc<Intake>>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(id) = LotId::parse(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match intake.store.get(&id).await {
        Ok(Some(lot)) => axum::Json(serde_json::json!({
            "lot_id": lot.id.as_str(),
            "state": lot.state.as_str(),
            "reason": lot.reason,
            "sends": lot.sends,
        }))
        .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "lot store");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
