//! The HTTP API (axum), one file per resource:
//! - `transfers`: submit (publish to Kafka) and read transfers.
//! - `accounts`: open accounts, read balances, replace their metadata, list an account's transfers; deposits and withdrawals (admin).
//! - `admin`: plugins: upload, list, activate (rollback), deactivate, validation order.
//! - `clients`: API clients (admin): create (the key is shown once), list, revoke.
//! - `health`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (no credential).
//! - `auth`: the credential extractors every `/v1/*` handler takes.
//! - `error`: the JSON error shape and the body extractor.
//! - `openapi`, `schema`: the OpenAPI document and the request schemas a derive cannot state.
//! - `whole`: integer body fields read as JSON defines integers (`7.0` is 7).
//! - `unread`: a body answered before it was read is read and discarded after the answer.

mod accounts;
mod admin;
mod auth;
mod clients;
pub mod error;
mod health;
mod openapi;
pub(crate) mod schema;
pub mod transfers;
mod unread;
mod webhooks;
mod whole;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Router, extract::DefaultBodyLimit};

use crate::auth::ClientStore;
use crate::cache::Cache;
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::metrics::{Metrics, RequestLabels};
pub use auth::{Admin, Authorized};
pub use error::ApiError;
pub use openapi::ApiDoc;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub ledger: Ledger,
    pub cache: Cache,
    pub publisher: crate::kafka::Publisher,
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<crate::plugins::Registry>,
    pub clients: Arc<ClientStore>,
    /// Whether this process's processor is alive and progressing (`/readyz`).
    pub processor: Arc<crate::processor::watchdog::ProcessorHealth>,
}

/// What an HTTP listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The API, health, and `/metrics` unless it has its own listener.
    Api { metrics: bool },
    /// Health and metrics only (the processor role): no route that moves or reads money.
    HealthOnly { metrics: bool },
    /// `/metrics` alone, on the operators' own address.
    MetricsOnly,
}

pub fn router(state: AppState, surface: Surface) -> Router {
    let body_limit = state.settings.request_body_bytes_max;
    let unread_bytes_max = unread_body_bytes_max(&state.settings);
    let mut router = match surface {
        Surface::Api { .. } => api_routes(&state),
        Surface::HealthOnly { .. } | Surface::MetricsOnly => Router::new(),
    };
    if matches!(surface, Surface::Api { .. } | Surface::HealthOnly { .. }) {
        router = router.route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    }
    if matches!(surface, Surface::Api { .. }) {
        router = router.route("/openapi.json", get(health::openapi));
    }
    if matches!(surface, Surface::Api { metrics: true } | Surface::HealthOnly { metrics: true } | Surface::MetricsOnly) {
        router = router.route("/metrics", get(health::metrics));
    }
    router
        // After every route: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        // Outermost, so every route, extractor and refusal sees the wrapped body (see `unread`).
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            next.run(request.map(|body| unread::DrainOnDrop::wrap(body, unread_bytes_max)))
        }))
        .with_state(state)
}

/// The largest body any route accepts: a refused body is read this far at most.
fn unread_body_bytes_max(settings: &Settings) -> u64 {
    [
        settings.request_body_bytes_max,
        admin::upload_body_bytes_max(settings),
        accounts::metadata_body_bytes_max(settings),
        clients::create_body_bytes_max(settings),
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as u64
}

fn api_routes(state: &AppState) -> Router<AppState> {
    let metadata_body_limit = DefaultBodyLimit::max(accounts::metadata_body_bytes_max(&state.settings));
    let routes = Router::new()
        .route("/v1/transfers", post(transfers::submit).layer(metadata_body_limit))
        .route("/v1/transfers/{id}", get(transfers::get))
        .route("/v1/accounts", post(accounts::create).layer(metadata_body_limit))
        .route("/v1/accounts/{owner_id}/{currency}", get(accounts::get).patch(accounts::update_metadata).layer(metadata_body_limit))
        .route("/v1/accounts/{owner_id}/{currency}/transfers", get(accounts::transfers))
        .route("/v1/deposits", post(accounts::deposit))
        .route("/v1/withdrawals", post(accounts::withdraw))
        .route("/v1/admin/plugins", get(admin::list))
        .route("/v1/admin/plugins/{name}/activate", post(admin::activate))
        .route("/v1/admin/plugins/{name}/deactivate", post(admin::deactivate))
        .route("/v1/admin/plugins/{name}/shadow", post(admin::shadow).delete(admin::unshadow))
        .route("/v1/admin/plugins/{name}/canary", post(admin::canary).delete(admin::uncanary))
        .route("/v1/admin/plugins/{name}/versions/{version}/report", get(admin::report))
        .route("/v1/admin/validation-order", axum::routing::put(admin::set_validation_order))
        .route(
            "/v1/admin/clients",
            get(clients::list).post(clients::create).layer(DefaultBodyLimit::max(clients::create_body_bytes_max(&state.settings))),
        )
        .route("/v1/admin/clients/{client_id}", delete(clients::revoke))
        .route("/v1/admin/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/admin/webhooks/{webhook_id}", delete(webhooks::delete))
        .route("/v1/admin/webhooks/{webhook_id}/deliveries", get(webhooks::deliveries))
        .route("/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/resend", post(webhooks::resend))
        .route("/v1/admin/transfer-conflicts", get(transfers::conflicts));
    // A time limit on each API request and a limit on requests in progress at
    // once (one semaphore shared by all these routes). A request past the
    // concurrency limit is refused at once (`503 overloaded`) rather than
    // queued, so a burst cannot pile up work its clients have given up on; one
    // past its time limit is dropped (`503 request_timeout`) and frees its
    // slot. The time limit starts once the request has a slot, and covers
    // reading its body. Only the API's routes: `/healthz`,
    // `/readyz` and `/metrics` must answer when the API is saturated.
    let settings = &state.settings;
    let limits = |concurrent_max: usize, timeout_ms: u64| {
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(limit_refusal))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(concurrent_max))
            .layer(TimeoutLayer::new(Duration::from_millis(timeout_ms)))
    };
    // An upload compiles its component on the blocking pool: milliseconds for
    // a compiled language, seconds for a Python or JavaScript one. So uploads
    // have their own time limit, and only a few run at once, so that they
    // cannot take every core from the processor. (Merged, the path's GET
    // keeps the shared limits and its POST gets these.)
    let uploads = Router::new()
        .route("/v1/admin/plugins", post(admin::upload).layer(DefaultBodyLimit::max(admin::upload_body_bytes_max(settings))))
        .layer(limits(admin::UPLOADS_CONCURRENT_MAX, settings.plugin_upload_timeout_ms));
    routes.layer(limits(settings.http_requests_concurrent_max, settings.http_request_timeout_ms)).merge(uploads)
}

/// The answer for a request that the limits in `api_routes` stopped.
async fn limit_refusal(e: BoxError) -> ApiError {
    if e.is::<Overloaded>() {
        ApiError::Unavailable { code: "overloaded", message: "the engine is at its limit of requests in progress; retry later".into() }
    } else if e.is::<Elapsed>() {
        ApiError::Unavailable { code: "request_timeout", message: "the request did not finish within its time limit; retry later".into() }
    } else {
        ApiError::Unexpected(anyhow::anyhow!("request limit layer failed: {e}"))
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "not_found", message: "no such route".into() }
}

/// axum's own answer to a known path with another method is a 405 with an
/// empty body; clients get our JSON error shape instead (axum still adds `Allow`).
async fn method_not_allowed() -> ApiError {
    ApiError::Invalid {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this route does not accept that method".into(),
    }
}

/// Counts and times every request by its route template (not its raw path, which would explode label cardinality).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state.metrics.http_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// The request method as a metrics label. HTTP allows any token as a method
/// and the server hands it on, so labelling by the raw method would let any
/// client add label values (and memory, and `/metrics` lines) without limit:
/// the usual methods keep their name, every other one is `other`.
fn method_label(method: &Method) -> &'static str {
    const NAMED: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    NAMED.into_iter().find(|named| *named == method.as_str()).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_method_outside_the_usual_ones_is_labelled_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for token in ["get", "FOO", "X-7f3a", "CONNECT", "TRACE"] {
            assert_eq!(method_label(&Method::from_bytes(token.as_bytes()).unwrap()), "other", "{token}");
        }
    }
}
