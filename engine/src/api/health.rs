use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::processor::watchdog::ProcessorState;

/// How long readiness waits for each dependency.
const READINESS_PROBE_TIMEOUT_MS: u64 = 1_000;

/// The process is alive (no dependency is checked).
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// PostgreSQL, Redis and the broker are reachable, and the processor (when
/// this process runs one) is alive and progressing; 503 naming what is not.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_millis(READINESS_PROBE_TIMEOUT_MS);
    let postgres = async { sqlx::query("SELECT 1").execute(state.ledger.pool()).await.map(|_| ()).map_err(|e| e.to_string()) };
    let redis = async { state.cache.ping().await.map_err(|e| e.to_string()) };
    let publisher = state.publisher.clone();
    let topic = state.settings.topic.clone();
    let broker = async move {
        // A broker that answers metadata requests but refuses our records is
        // not ready either: the last publish failing says so.
        if !publisher.healthy() {
            return Err("the last publish was not acknowledged".to_owned());
        }
        let producer = publisher.producer();
        // fetch_metadata blocks its thread: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.client().fetch_metadata(Some(&topic), timeout).map(|_| ()).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let (postgres, redis, broker) = tokio::join!(bounded(timeout, postgres), bounded(timeout, redis), bounded(timeout, broker));
    let processor_state = state.processor.state();
    state.metrics.record_processor_state(processor_state);
    let processor = match processor_state {
        ProcessorState::NotRunning | ProcessorState::Running | ProcessorState::Stopped => Ok(()),
        ProcessorState::Dead => Err("the processor stopped unexpectedly".to_owned()),
        ProcessorState::Stalled { since_progress_ms, lag_records } => {
            Err(format!("no batch finished for {since_progress_ms} ms while {lag_records} records wait"))
        }
    };
    let checks = [("postgres", postgres), ("redis", redis), ("broker", broker), ("processor", processor)];
    let failing: Vec<&str> = checks.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
    let detail: serde_json::Map<String, serde_json::Value> =
        checks.iter().map(|(n, r)| (n.to_string(), json!(r.as_ref().err().map_or("ok".to_owned(), |e| e.clone())))).collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready", "checks": detail})))
    } else {
        let message = format!("not ready: {} failing", failing.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "not_ready", "message": message}, "checks": detail})))
    }
}

async fn bounded(timeout: Duration, probe: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(timeout, probe).await.unwrap_or_else(|_| Err("timed out".to_owned()))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.record_processor_state(state.processor.state());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

/// The document as this engine serves it (its configured limits filled in).
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    Json(super::openapi::document(&state.settings))
}
