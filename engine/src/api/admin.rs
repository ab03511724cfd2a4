//! Admin endpoints for plugins (bearer admin token): upload a version,
//! list, activate a version (activating an earlier one is the rollback),
//! deactivate, and set the order validators run in. Every change reaches
//! every engine within about a second, between two batches.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::JsonBody;
use super::{ApiError, AppState, require_admin};
use crate::config::Settings;
use crate::plugins::{PluginError, PluginInfo, PluginKind};

/// The upload route's body limit: the component, base64-encoded, plus its JSON envelope.
pub fn upload_body_bytes_max(settings: &Settings) -> usize {
    settings.plugin_upload_bytes_max / 3 * 4 + 64 * 1024
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let message = e.to_string();
        match e {
            PluginError::Invalid(_) => ApiError::invalid("plugin_invalid", message),
            PluginError::ConfigRefused(_) => ApiError::invalid("plugin_config_refused", message),
            PluginError::BadName => ApiError::invalid("plugin_name_invalid", message),
            PluginError::NotFound(_) => ApiError::NotFound { code: "plugin_not_found", message },
            PluginError::KindAlreadyActive { .. } => ApiError::Conflict { code: "plugin_kind_already_active", message },
            PluginError::Sandbox(_) | PluginError::Database(_) => ApiError::Unexpected(anyhow::Error::from(e)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPlugin {
    /// 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter.
    pub name: String,
    /// Detected from the component's exports when absent.
    pub kind: Option<PluginKind>,
    /// The plugin's configuration (any JSON), passed to its `configure`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The component bytes, base64 (standard alphabet).
    pub component: String,
    /// Activate the new version at once.
    #[serde(default)]
    pub activate: bool,
}

#[utoipa::path(post, path = "/v1/admin/plugins", request_body = UploadPlugin, security(("admin_token" = [])),
    responses((status = 201, body = PluginInfo), (status = 401, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<UploadPlugin>,
) -> Result<(StatusCode, Json<PluginInfo>), ApiError> {
    require_admin(&state.settings, &headers)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.component.as_bytes())
        .map_err(|e| ApiError::invalid("plugin_invalid", format!("`component` is not base64: {e}")))?;
    let config = if req.config.is_null() { "{}".to_owned() } else { req.config.to_string() };
    let mut info = state.plugins.upload(&req.name, req.kind, config, bytes).await?;
    if req.activate {
        state.plugins.activate(&info.name, info.version).await?;
        info.active = true;
    }
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    /// Every version of every plugin, by name then version.
    pub plugins: Vec<PluginInfo>,
}

#[utoipa::path(get, path = "/v1/admin/plugins", security(("admin_token" = [])),
    responses((status = 200, body = PluginList), (status = 401, body = super::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<PluginList>, ApiError> {
    require_admin(&state.settings, &headers)?;
    Ok(Json(PluginList { plugins: state.plugins.list().await? }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    pub version: i32,
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/activate", request_body = Activate, security(("admin_token" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<Activate>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.settings, &headers)?;
    state.plugins.activate(&name, req.version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/deactivate", security(("admin_token" = [])), params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn deactivate(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    require_admin(&state.settings, &headers)?;
    state.plugins.deactivate(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationOrder {
    /// Validator names, first runs first; unlisted validators run after these.
    pub names: Vec<String>,
}

#[utoipa::path(put, path = "/v1/admin/validation-order", request_body = ValidationOrder, security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn set_validation_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ValidationOrder>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.settings, &headers)?;
    state.plugins.set_validation_order(&req.names).await?;
    Ok(StatusCode::NO_CONTENT)
}
