//! The loopback-only status endpoint: `/healthz` for the updater's post-boot health check
//! and `/metrics` (Prometheus text) for queue depth and oldest age per kind. No health data
//! is served here; the web admin (issue #8) is the authenticated surface.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use passerelle_config::Profile;
use passerelle_queue::{Queue, SqliteStore};

#[derive(Clone)]
pub struct State {
    pub queue: Arc<Queue<SqliteStore>>,
    pub profile: Profile,
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(Extract(state): Extract<State>) -> Response {
    // Healthy means the queue answers a read: the store is open and not wedged.
    match state.queue.metrics().await {
        Ok(_) => axum::Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "profile": state.profile,
        }))
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "health check: queue unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "queue unavailable" })),
            )
                .into_response()
        }
    }
}

async fn metrics(Extract(state): Extract<State>) -> Response {
    let metrics = match state.queue.metrics().await {
        Ok(metrics) => metrics,
        Err(err) => {
            tracing::error!(error = %err, "metrics: queue unavailable");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let kinds = &metrics.kinds;
    let mut body = String::new();
    body.push_str("# HELP passerelle_queue_depth Items accepted and not yet done, per kind.\n");
    body.push_str("# TYPE passerelle_queue_depth gauge\n");
    for kind in kinds {
        let _ = writeln!(
            body,
            "passerelle_queue_depth{{kind=\"{}\"}} {}",
            kind.kind, kind.depth
        );
    }
    body.push_str(
        "# HELP passerelle_queue_oldest_age_seconds Age of the oldest item not yet done.\n",
    );
    body.push_str("# TYPE passerelle_queue_oldest_age_seconds gauge\n");
    for kind in kinds {
        let age = kind.oldest_age.as_secs_f64();
        let _ = writeln!(
            body,
            "passerelle_queue_oldest_age_seconds{{kind=\"{}\"}} {age:.3}",
            kind.kind
        );
    }
    body.push_str(
        "# HELP passerelle_queue_dead Items given up on (their senders were told), per kind.\n",
    );
    body.push_str("# TYPE passerelle_queue_dead gauge\n");
    for kind in kinds {
        let _ = writeln!(
            body,
            "passerelle_queue_dead{{kind=\"{}\"}} {}",
            kind.kind, kind.dead
        );
    }
    body.push_str("# HELP passerelle_queue_quarantined Corrupt rows moved aside.\n");
    body.push_str("# TYPE passerelle_queue_quarantined gauge\n");
    let _ = writeln!(body, "passerelle_queue_quarantined {}", metrics.quarantined);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
