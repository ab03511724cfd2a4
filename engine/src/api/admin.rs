//! Admin endpoints for plugins (bearer admin token): upload a version,
//! list, activate a version (activating an earlier one is the rollback),
//! deactivate, and set the order validators run in. Every change reaches
//! every engine within about a second, between two batches.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ErrorBody, JsonBody, PathParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::schema::{self, PluginNameSchema};
use super::{Admin, ApiError, AppState, whole};
use crate::config::Settings;
use crate::plugins::registry::ShadowReport;
use crate::plugins::rollback::FaultRate;
use crate::plugins::{LimitsRequest, PluginError, PluginInfo, PluginKind, valid_name};

/// Plugin uploads in progress at once; one more answers `503 overloaded`.
pub const UPLOADS_CONCURRENT_MAX: usize = 4;

/// The upload route's body limit: the component, base64-encoded, plus its JSON envelope.
pub fn upload_body_bytes_max(settings: &Settings) -> usize {
    settings.plugin_upload_bytes_max / 3 * 4 + 64 * 1024
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let message = e.to_string();
        match e {
            PluginError::AdvisoryNotValidator(_) => ApiError::invalid("plugin_advisory_not_validator", message),
            PluginError::Invalid(_) => ApiError::invalid("plugin_invalid", message),
            PluginError::ConfigRefused(_) => ApiError::invalid("plugin_config_refused", message),
            PluginError::LimitsInvalid(_) => ApiError::invalid("plugin_limits_invalid", message),
            PluginError::BadName => ApiError::invalid("plugin_name_invalid", message),
            PluginError::NotFound(_) => ApiError::NotFound { code: "plugin_not_found", message },
            PluginError::KindAlreadyActive { .. } => ApiError::Conflict { code: "plugin_kind_already_active", message },
            PluginError::Rollout { refusal, .. } => ApiError::Conflict { code: refusal.code(), message },
            PluginError::PercentInvalid(_) => ApiError::invalid("canary_percent_invalid", message),
            PluginError::Database(ref db) if crate::ledger::is_unavailable(db) => ApiError::database_unavailable(),
            PluginError::Sandbox(_) | PluginError::Database(_) => ApiError::Unexpected(anyhow::Error::from(e)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPlugin {
    #[schema(value_type = PluginNameSchema)]
    pub name: String,
    /// Detected from the component's exports when absent.
    pub kind: Option<PluginKind>,
    /// The plugin's configuration (any JSON; absent or null: `{}`), passed to its `configure`.
    #[serde(default)]
    pub config: serde_json::Value,
    #[schema(schema_with = schema::plugin_component)]
    pub component: String,
    /// Activate the new version at once.
    #[serde(default)]
    pub activate: bool,
    /// Validators only, never the default: shadow mode. The validator's
    /// rejections and faults are recorded in each transfer's decisions (with
    /// `advisory: true`) but do not stop it. A describer or converter always
    /// binds: asking is `422 plugin_advisory_not_validator`.
    #[serde(default)]
    pub advisory: bool,
    /// This version's memory and fuel, each optional. Absent: the defaults
    /// for the component's size (a Python or JavaScript component, 2 MiB or
    /// more, gets more of both than a compiled one). Past a ceiling:
    /// `422 plugin_limits_invalid`.
    #[serde(default)]
    pub limits: LimitsRequest,
}

#[utoipa::path(post, path = "/v1/admin/plugins", operation_id = "upload_plugin", tag = "plugins", request_body = UploadPlugin,
    security(("bearer" = [])),
    responses(
        (status = 201, body = PluginInfo, description = "Stored as the name's next version (and activated if asked)",
            links(
                ("activate" = (operation_id = "activate_plugin", parameters(("name" = "$response.body#/name")))),
                ("deactivate" = (operation_id = "deactivate_plugin", parameters(("name" = "$response.body#/name")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 409, body = ErrorBody, description = "`plugin_kind_already_active` (with `activate`): another converter or \
            describer is active"),
        (status = 413, body = ErrorBody, description = "`body_too_large`: the body is past the route's limit (the component's \
            base64 at `plugin_upload_bytes_max`, 32 MiB by default, plus 64 KiB); `plugin_too_large`: the decoded component is \
            past `plugin_upload_bytes_max`"),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `plugin_name_invalid`, `plugin_invalid` (not base64, \
            not a component, the wrong world, or not the given `kind`), `plugin_config_refused` (its `configure` said no) or \
            `plugin_advisory_not_validator` (`advisory` asked for a describer or converter) or `plugin_limits_invalid` (a limit \
            past its ceiling)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<UploadPlugin>,
) -> Result<(StatusCode, Json<PluginInfo>), ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.component.as_bytes())
        .map_err(|e| ApiError::invalid("plugin_invalid", format!("`component` is not base64: {e}")))?;
    // The body limit lets the JSON envelope through; the component itself is held to the setting exactly.
    let upload_bytes_max = state.settings.plugin_upload_bytes_max;
    if bytes.len() > upload_bytes_max {
        return Err(ApiError::Invalid {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "plugin_too_large",
            message: format!(
                "the component is {} bytes; the largest accepted is {upload_bytes_max} (plugin_upload_bytes_max)",
                bytes.len()
            ),
        });
    }
    let config = if req.config.is_null() { "{}".to_owned() } else { req.config.to_string() };
    let mut info = state.plugins.upload(&req.name, req.kind, config, bytes, req.advisory, req.limits).await?;
    if req.activate {
        state.plugins.activate(&info.name, info.version, false).await?;
        info.active = true;
    }
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    /// Every version of every plugin, by name then version.
    pub plugins: Vec<PluginInfo>,
}

#[utoipa::path(get, path = "/v1/admin/plugins", operation_id = "list_plugins", tag = "plugins", security(("bearer" = [])),
    responses(
        (status = 200, body = PluginList),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 503, response = Unavailable),
    ))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList { plugins: state.plugins.list().await? }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// A stored version of the plugin.
    #[serde(deserialize_with = "whole::i32")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub version: i32,
}

/// Makes a version the active one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateVersion {
    /// A stored version of the plugin.
    #[serde(deserialize_with = "whole::i32")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub version: i32,
    /// A describer or converter: take the place of the one active under
    /// another name, in the same step (no batch runs with neither). Without
    /// it, another one active is `409 plugin_kind_already_active`.
    #[serde(default)]
    pub replace: bool,
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/activate", operation_id = "activate_plugin", tag = "plugins",
    request_body = ActivateVersion, security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "Active (the name's other version, if one was active, is not); every engine follows within about a second"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found`: no such name and version (a name outside the pattern names none)"),
        (status = 409, body = ErrorBody, description = "`plugin_kind_already_active`: another converter or describer is active \
            (and `replace` was not asked)"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn activate(
    State(state): State<AppState>,
    _: Admin,
    PathParams(name): PathParams<String>,
    JsonBody(req): JsonBody<ActivateVersion>,
) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    state.plugins.activate(&name, req.version, req.replace).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/deactivate", operation_id = "deactivate_plugin", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "No version of it is active (deactivating an inactive plugin changes nothing)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found` (a name outside the pattern names none)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn deactivate(State(state): State<AppState>, _: Admin, PathParams(name): PathParams<String>) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    state.plugins.deactivate(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/shadow", operation_id = "shadow_plugin", tag = "plugins",
    request_body = Activate, security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "The version runs in shadow beside the active one, in place of any earlier shadow: its decisions \
            are recorded with role `shadow`, never enforced; every engine follows within about a second"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found`: no such name and version (a name outside the pattern names none)"),
        (status = 409, body = ErrorBody, description = "`plugin_not_active`: no version of the name is active; `plugin_kind_mismatch`: \
            not a validator beside an active validator; `plugin_version_active`: the version is the active one"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn shadow(
    State(state): State<AppState>,
    _: Admin,
    PathParams(name): PathParams<String>,
    JsonBody(req): JsonBody<Activate>,
) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    state.plugins.shadow(&name, req.version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/admin/plugins/{name}/shadow", operation_id = "unshadow_plugin", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "No version of it runs in shadow (stopping where none runs changes nothing); its decisions stay for the report"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found` (a name outside the pattern names none)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn unshadow(State(state): State<AppState>, _: Admin, PathParams(name): PathParams<String>) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    state.plugins.unshadow(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a canary.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCanary {
    /// A stored version of the plugin, not the active one.
    #[serde(deserialize_with = "whole::i32")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub version: i32,
    /// Of senders, 1 to 100; 100 makes the version the active one.
    #[serde(deserialize_with = "whole::i64")]
    #[schema(minimum = 1, maximum = 100)]
    pub percent: i64,
    /// The share of faulted calls over the sliding window
    /// (`plugin_rollback_window_s`) past which the canary is withdrawn
    /// automatically, as decimal text from "0" to "1". Absent: the engine's
    /// `plugin_rollback_fault_rate_max_ppm`.
    #[serde(default)]
    #[schema(example = "0.05", pattern = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$")]
    pub max_fault_rate: Option<String>,
}

#[utoipa::path(post, path = "/v1/admin/plugins/{name}/canary", operation_id = "canary_plugin", tag = "plugins",
    request_body = StartCanary, security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "The version decides in place of the active one for `percent` of senders (the same senders for \
            as long as it runs), in place of any earlier canary; its decisions are recorded with role `canary`. At 100 it is the \
            active version. Every engine follows within about a second"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found`: no such name and version (a name outside the pattern names none)"),
        (status = 409, body = ErrorBody, description = "`plugin_not_active`: no version of the name is active; `plugin_kind_mismatch`: \
            not a validator beside an active validator; `plugin_version_active`: the version is the active one"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`; `canary_percent_invalid`: not from 1 to 100; \
            `fault_rate_invalid`: not decimal text from 0 to 1 with at most 6 decimals"),
        (status = 503, response = Unavailable),
    ))]
pub async fn canary(
    State(state): State<AppState>,
    _: Admin,
    PathParams(name): PathParams<String>,
    JsonBody(req): JsonBody<StartCanary>,
) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    let max_fault_rate = req
        .max_fault_rate
        .as_deref()
        .map(FaultRate::parse)
        .transpose()
        .map_err(|message| ApiError::invalid("fault_rate_invalid", message))?;
    state.plugins.canary(&name, req.version, req.percent, max_fault_rate).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/admin/plugins/{name}/canary", operation_id = "uncanary_plugin", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path)),
    responses(
        (status = 204, description = "The active version decides for every sender again (withdrawing where no canary runs changes nothing)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found` (a name outside the pattern names none)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn uncanary(State(state): State<AppState>, _: Admin, PathParams(name): PathParams<String>) -> Result<StatusCode, ApiError> {
    let name = existing_name(name)?;
    state.plugins.uncanary(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/admin/plugins/{name}/versions/{version}/report", operation_id = "report_plugin", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = PluginNameSchema, Path), ("version" = i32, Path, description = "A stored version of the plugin")),
    responses(
        (status = 200, body = ShadowReport, description = "How the version compared with the active one while in shadow (all zero if it never ran in shadow)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found`: no such name and version"),
        (status = 503, response = Unavailable),
    ))]
pub async fn report(
    State(state): State<AppState>,
    _: Admin,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<ShadowReport>, ApiError> {
    let name = existing_name(name)?;
    let version: i32 = version.parse().map_err(|_| PluginError::NotFound(format!("{name} v{}", bounded(&version))))?;
    Ok(Json(state.plugins.report(&name, version).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationOrder {
    #[schema(schema_with = schema::plugin_names)]
    pub names: Vec<String>,
}

#[utoipa::path(put, path = "/v1/admin/validation-order", operation_id = "set_validation_order", tag = "plugins",
    request_body = ValidationOrder, security(("bearer" = [])),
    responses(
        (status = 204, description = "The new order; every engine follows within about a second"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 404, body = ErrorBody, description = "`plugin_not_found`: a listed name is no stored validator"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, or `validation_order_invalid`: a name is listed twice"),
        (status = 503, response = Unavailable),
    ))]
pub async fn set_validation_order(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<ValidationOrder>,
) -> Result<StatusCode, ApiError> {
    // The registry writes the order with one `INSERT .. ON CONFLICT DO UPDATE`,
    // which PostgreSQL refuses (a 500) when a name comes twice; a repeated name
    // has no meaning anyway.
    let mut seen = std::collections::HashSet::with_capacity(req.names.len());
    if let Some(name) = req.names.iter().find(|name| !seen.insert(name.as_str())) {
        return Err(ApiError::invalid("validation_order_invalid", format!("`{}` is listed more than once", bounded(name))));
    }
    state.plugins.set_validation_order(&req.names).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A plugin name from the path, if it could name a stored plugin. A name the
/// registry would refuse names no plugin (404), and is checked here because
/// the lookup would otherwise send it to PostgreSQL, which refuses text with
/// NUL (`/v1/admin/plugins/%00/deactivate` answered 500).
fn existing_name(name: String) -> Result<String, ApiError> {
    if valid_name(&name) { Ok(name) } else { Err(PluginError::NotFound(bounded(&name)).into()) }
}

/// Client text quoted in a message, cut to a readable length.
fn bounded(text: &str) -> String {
    const QUOTED_CHARS_MAX: usize = 64;
    text.chars().take(QUOTED_CHARS_MAX).collect()
}
