//! API clients (admin token only): create one (its key is shown once),
//! list them (never their keys), revoke one. A revocation reaches every
//! engine within `client_cache_ttl_ms` (see `auth::clients`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorBody, JsonBody, PathParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::{Admin, ApiError, AppState, schema, whole};
use crate::auth::{ClientInfo, NewClient, NewClientError};
use crate::domain::ClientId;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    #[schema(schema_with = schema::client_name)]
    pub name: String,
    #[schema(schema_with = schema::client_scopes)]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "whole::option_vec_i64")]
    #[schema(schema_with = schema::client_owners)]
    pub owners: Option<Vec<i64>>,
}

/// The smallest body limit of the create route. The largest body the
/// document allows (1,000 owner ids of 19 digits, a 128-character name
/// written as `\u` escapes, the four scopes) is about 22 KB, past the API's
/// default 16 KiB: with this, every request the document allows can be read.
const CREATE_BODY_BYTES_MIN: usize = 64 * 1024;

/// The create route's body limit: the API's own, or `CREATE_BODY_BYTES_MIN` if that is larger.
pub fn create_body_bytes_max(settings: &crate::config::Settings) -> usize {
    settings.request_body_bytes_max.max(CREATE_BODY_BYTES_MIN)
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

#[utoipa::path(post, path = "/v1/admin/clients", operation_id = "create_client", tag = "clients", request_body = CreateClient,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CreatedClient, description = "Created; the key is never shown again",
            links(("revoke" = (operation_id = "revoke_client", parameters(("client_id" = "$response.body#/client_id")))))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `client_name_invalid`, `scopes_invalid` or `owners_invalid`"),
        (status = 503, response = Unavailable),
    ))]
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

#[utoipa::path(get, path = "/v1/admin/clients", operation_id = "list_clients", tag = "clients", security(("bearer" = [])),
    responses(
        (status = 200, body = ClientList),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 503, response = Unavailable),
    ))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<ClientList>, ApiError> {
    Ok(Json(ClientList { clients: state.clients.list().await? }))
}

#[utoipa::path(delete, path = "/v1/admin/clients/{client_id}", operation_id = "revoke_client", tag = "clients",
    security(("bearer" = [])),
    params(("client_id" = String, Path, format = Uuid, description = "The client's id (`client_id` in the listing)")),
    responses(
        (status = 204, description = "Revoked (revoking again changes nothing); every engine refuses the key within `client_cache_ttl_ms`"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`client_not_found` (an id that is not a UUID names none)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn revoke(State(state): State<AppState>, _: Admin, PathParams(id): PathParams<String>) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound { code: "client_not_found", message: "no such API client".into() };
    let id = uuid::Uuid::try_parse(&id).map(ClientId).map_err(|_| not_found())?;
    if !state.clients.revoke(id).await? {
        return Err(not_found());
    }
    tracing::info!(client_id = %id, "API client revoked.");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_body_the_document_allows_fits_the_create_routes_limit() {
        let name = "\\udbff\\udfff".repeat(128);
        let owners = vec![i64::MAX.to_string(); 1_000].join(", ");
        let body = format!(
            r#"{{"name": "{name}", "scopes": ["transfers:write", "transfers:read", "accounts:write", "accounts:read"], "owners": [{owners}]}}"#
        );
        let req: CreateClient = serde_json::from_str(&body).unwrap();
        assert!(NewClient::new(&req.name, &req.scopes, req.owners.as_deref()).is_ok());
        let limit = create_body_bytes_max(&crate::config::Settings::default());
        assert!(body.len() * 2 <= limit, "{} bytes, limit {limit}: leave room for indentation", body.len());
    }
}
