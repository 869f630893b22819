//! The local JSON search API (for the web admin's search page and LPS that prefer HTTP):
//! `GET /annuaire/search?q=<text>&limit=<n>` and `GET /annuaire/status`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CacheStatus};
use crate::query::{Query, QueryLimits};

/// Most entries one API search returns.
pub const MAX_LIMIT: usize = 200;

#[derive(Debug, Clone)]
struct ApiState {
    cache: Arc<Cache>,
    stale_after: Duration,
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: String,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct StatusBody {
    status: Option<CacheStatus>,
    stale: bool,
}

/// Routes of the API, to merge into the daemon's loopback/LAN HTTP server.
pub fn router(cache: Arc<Cache>, stale_after: Duration) -> Router {
    Router::new()
        .route("/annuaire/search", get(search))
        .route("/annuaire/status", get(status))
        .with_state(ApiState { cache, stale_after })
}

async fn search(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<SearchParams>,
) -> Response {
    let query = match Query::free_text(&params.q, &QueryLimits::default()) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    let limit = params.limit.unwrap_or(50).min(MAX_LIMIT);
    match state.cache.search(&query, limit).await {
        Ok(found) => Json(found).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "annuaire API search failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"error": "directory unavailable"})),
            )
                .into_response()
        }
    }
}

async fn status(State(api): State<ApiState>) -> Json<StatusBody> {
    let status = api.cache.status();
    let stale = status.as_ref().is_none_or(|s| s.is_stale(api.stale_after));
    Json(StatusBody { status, stale })
}
