//! API clients (admin token only): create one (its key is shown once),
//! list them (never their keys), revoke one. A revocation reaches every
//! engine within `client_cache_ttl_ms` (see `auth::clients`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorBody, JsonBody, PathParams};
use super::{Admin, ApiError, AppState};
use crate::auth::{ClientInfo, NewClient, NewClientError};
use crate::domain::ClientId;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// What the client is, for people: 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Any of `transfers:write`, `transfers:read`, `accounts:write`, `accounts:read`, each at most once.
    #[schema(min_items = 1, max_items = 4, value_type = Vec<crate::auth::Scope>)]
    pub scopes: Vec<String>,
    /// The owner ids the client may act for. Absent: any owner (a trusted back-end).
    #[schema(min_items = 1, max_items = 1000)]
    pub owners: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedClient {
    /// The API key, shown this once: send it as `Authorization: Bearer <key>`.
    pub key: String,
    #[serde(flatten)]
    pub client: ClientInfo,
}

impl From<NewClientError> for ApiError {
    fn from(e: NewClientError) -> Self {
        let code = match e {
            NewClientError::Name => "client_name_invalid",
            NewClientError::Scopes(_) => "scopes_invalid",
            NewClientError::Owners(_) => "owners_invalid",
        };
        ApiError::invalid(code, e.to_string())
    }
}

#[utoipa::path(post, path = "/v1/admin/clients", request_body = CreateClient, security(("bearer" = [])),
    responses((status = 201, body = CreatedClient, description = "Created; the key is never shown again"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<CreateClient>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let new = NewClient::new(&req.name, &req.scopes, req.owners.as_deref())?;
    let (client, key) = state.clients.create(&new).await?;
    tracing::info!(client_id = %client.client_id, name = %client.name, "API client created.");
    Ok((StatusCode::CREATED, Json(CreatedClient { key, client })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientList {
    /// Every client, oldest first; revoked ones carry `revoked_at`.
    pub clients: Vec<ClientInfo>,
}

#[utoipa::path(get, path = "/v1/admin/clients", security(("bearer" = [])),
    responses((status = 200, body = ClientList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<ClientList>, ApiError> {
    Ok(Json(ClientList { clients: state.clients.list().await? }))
}

#[utoipa::path(delete, path = "/v1/admin/clients/{client_id}", security(("bearer" = [])),
    params(("client_id" = String, Path, format = Uuid)),
    responses((status = 204, description = "Revoked (revoking again changes nothing)"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revoke(State(state): State<AppState>, _: Admin, PathParams(id): PathParams<String>) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound { code: "client_not_found", message: "no such API client".into() };
    let id = uuid::Uuid::try_parse(&id).map(ClientId).map_err(|_| not_found())?;
    if !state.clients.revoke(id).await? {
        return Err(not_found());
    }
    tracing::info!(client_id = %id, "API client revoked.");
    Ok(StatusCode::NO_CONTENT)
}
