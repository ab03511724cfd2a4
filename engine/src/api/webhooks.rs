//! Webhooks (admin token only): create one (its secret is shown once), list
//! them, delete one, read its recent deliveries, and send a delivery again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorBody, JsonBody, PathParams, QueryParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::{Admin, ApiError, AppState, schema};
use crate::events::webhooks::{self, DeliveryInfo, ResendError, TargetError, WebhookInfo};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(schema_with = schema::webhook_url)]
    pub url: String,
    #[schema(schema_with = schema::webhook_events)]
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The signing secret, shown this once (`whsec_` and the base64 key, as
    /// Standard Webhooks libraries take it).
    pub secret: String,
    #[serde(flatten)]
    pub webhook: WebhookInfo,
}

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        let code = match e {
            TargetError::Url => "webhook_url_invalid",
            TargetError::HostNotAllowed(_) => "webhook_host_not_allowed",
        };
        ApiError::invalid(code, e.to_string())
    }
}

fn webhook_not_found() -> ApiError {
    ApiError::NotFound { code: "webhook_not_found", message: "no such webhook".into() }
}

/// A path's webhook id; one that is not a UUID names none.
fn webhook_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(id).map_err(|_| webhook_not_found())
}

#[utoipa::path(post, path = "/v1/admin/webhooks", operation_id = "create_webhook", tag = "webhooks", request_body = CreateWebhook,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CreatedWebhook, description = "Created; the secret is never shown again. Events committed from now on are delivered.",
            links(("deliveries" = (operation_id = "list_webhook_deliveries", parameters(("webhook_id" = "$response.body#/webhook_id")))))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `webhook_url_invalid`, `webhook_host_not_allowed` or `events_invalid`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let url = webhooks::check_target(&req.url, state.settings.webhook_allow_list().as_ref())?;
    let events = webhooks::check_event_types(&req.events).map_err(|e| ApiError::invalid("events_invalid", e.to_string()))?;
    let (webhook, key) = webhooks::create(state.ledger.pool(), &url, &events).await?;
    tracing::info!(webhook_id = %webhook.webhook_id, url = %webhook.url, "Webhook created.");
    Ok((StatusCode::CREATED, Json(CreatedWebhook { secret: key.secret(), webhook })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// Every webhook not deleted, oldest first.
    pub webhooks: Vec<WebhookInfo>,
}

#[utoipa::path(get, path = "/v1/admin/webhooks", operation_id = "list_webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, body = WebhookList),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 503, response = Unavailable),
    ))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<WebhookList>, ApiError> {
    Ok(Json(WebhookList { webhooks: webhooks::list(state.ledger.pool()).await? }))
}

#[utoipa::path(delete, path = "/v1/admin/webhooks/{webhook_id}", operation_id = "delete_webhook", tag = "webhooks",
    security(("bearer" = [])),
    params(("webhook_id" = String, Path, format = Uuid, description = "The webhook's id")),
    responses(
        (status = 204, description = "Deleted: no new deliveries, pending ones cancelled; the webhook and its deliveries answer 404 from now on"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found` (also for one already deleted, or an id that is not a UUID)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn delete(State(state): State<AppState>, _: Admin, PathParams(id): PathParams<String>) -> Result<StatusCode, ApiError> {
    let id = webhook_id(&id)?;
    if !webhooks::delete(state.ledger.pool(), id).await? {
        return Err(webhook_not_found());
    }
    tracing::info!(webhook_id = %id, "Webhook deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// How many deliveries, newest first: 1 to 500, default 50 (a value outside is clamped).
    #[param(required = false, value_type = i64)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first, each with its latest attempts (at most 20).
    pub deliveries: Vec<DeliveryInfo>,
}

const DELIVERIES_PAGE_SIZE_DEFAULT: i64 = 50;

#[utoipa::path(get, path = "/v1/admin/webhooks/{webhook_id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    security(("bearer" = [])),
    params(("webhook_id" = String, Path, format = Uuid, description = "The webhook's id"), DeliveriesQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`webhook_not_found` (also for a deleted one)"),
        (status = 422, body = ErrorBody, description = "`invalid_query`: `limit` is not a 64-bit integer, or another parameter was given"),
        (status = 503, response = Unavailable),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    _: Admin,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = webhook_id(&id)?;
    let limit = query.limit.unwrap_or(DELIVERIES_PAGE_SIZE_DEFAULT);
    let deliveries = webhooks::deliveries(state.ledger.pool(), id, limit).await?.ok_or_else(webhook_not_found)?;
    Ok(Json(DeliveryList { deliveries }))
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/resend", operation_id = "resend_webhook_delivery",
    tag = "webhooks", security(("bearer" = [])),
    params(
        ("webhook_id" = String, Path, format = Uuid, description = "The webhook's id"),
        ("delivery_id" = i64, Path, description = "The delivery's id (`delivery_id` in the listing)"),
    ),
    responses(
        (status = 202, description = "Due now, with a new retry window; sent again with the same `webhook-id` even if it was delivered"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`delivery_not_found`: no such delivery of this webhook (or the webhook was deleted)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn resend(
    State(state): State<AppState>,
    _: Admin,
    PathParams((id, delivery)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound { code: "delivery_not_found", message: "no such delivery of this webhook".into() };
    let id = uuid::Uuid::try_parse(&id).map_err(|_| not_found())?;
    let delivery: i64 = delivery.parse().map_err(|_| not_found())?;
    let window = state.settings.webhook_retry_policy().window;
    match webhooks::resend(state.ledger.pool(), id, delivery, window).await {
        Ok(()) => {
            tracing::info!(webhook_id = %id, delivery_id = delivery, "Webhook delivery sent again.");
            Ok(StatusCode::ACCEPTED)
        }
        Err(ResendError::NotFound) => Err(not_found()),
        Err(ResendError::Ledger(e)) => Err(e.into()),
    }
}
