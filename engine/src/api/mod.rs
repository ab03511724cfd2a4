//! The HTTP API (axum), one file per resource:
//! - `transfers`: submit (publish to Kafka) and read transfers.
//! - `accounts`: open accounts, read balances and an account's transfers; deposits and withdrawals (admin).
//! - `admin`: plugins: upload, list, activate (rollback), deactivate, validation order.
//! - `health`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//! - `error`: the JSON error shape and the body extractor.

mod accounts;
mod admin;
pub mod error;
mod health;
mod openapi;
pub mod transfers;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Router, extract::DefaultBodyLimit};
use subtle::ConstantTimeEq;

use crate::cache::Cache;
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::metrics::{Metrics, RequestLabels};
pub use error::ApiError;
pub use openapi::ApiDoc;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub ledger: Ledger,
    pub cache: Cache,
    pub publisher: crate::kafka::Publisher,
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<crate::plugins::Registry>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.request_body_bytes_max;
    Router::new()
        .route("/v1/transfers", post(transfers::submit))
        .route("/v1/transfers/{id}", get(transfers::get))
        .route("/v1/accounts", post(accounts::create))
        .route("/v1/accounts/{owner_id}/{currency}", get(accounts::get))
        .route("/v1/accounts/{owner_id}/{currency}/transfers", get(accounts::transfers))
        .route("/v1/deposits", post(accounts::deposit))
        .route("/v1/withdrawals", post(accounts::withdraw))
        .route(
            "/v1/admin/plugins",
            get(admin::list).post(admin::upload).layer(DefaultBodyLimit::max(admin::upload_body_bytes_max(&state.settings))),
        )
        .route("/v1/admin/plugins/{name}/activate", post(admin::activate))
        .route("/v1/admin/plugins/{name}/deactivate", post(admin::deactivate))
        .route("/v1/admin/validation-order", axum::routing::put(admin::set_validation_order))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        // After every route: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
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
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state.metrics.http_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Checks `Authorization: Bearer <admin token>` in constant time.
///
/// The scheme is matched without regard to case (RFC 7235 section 2.1: `bearer`
/// is the same scheme) and may be followed by several spaces (`1*SP`); the
/// token is compared exactly. A request with more than one `Authorization`
/// header carries ambiguous credentials and is refused rather than judged by
/// whichever header comes first. The token is read from this header only:
/// never from the query string (it would end up in access logs) nor from any
/// other header.
pub fn require_admin(settings: &Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = settings.admin_token.as_ref() else {
        return Err(ApiError::Unauthorized);
    };
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized);
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '))
        .ok_or(ApiError::Unauthorized)?;
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) { Ok(()) } else { Err(ApiError::Unauthorized) }
}

/// Proof that a request carries the admin token. An extractor rather than a
/// call inside the handler so that it runs before the body extractor: an
/// unauthenticated request is refused before its body is read or validated,
/// so it learns nothing about the schema and cannot make the engine buffer
/// a large upload.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        require_admin(&state.settings, &parts.headers).map(|()| Admin)
    }
}
