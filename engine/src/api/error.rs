//! Every error the API answers is JSON `{"error": {"code", "message"}}` with
//! a status that says whose fault it is. Bad input is always a 4xx.
//! `JsonBody`, `PathParams` and `QueryParams` wrap axum's extractors, whose own
//! rejections are plain text.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::error;

use crate::domain::{AmountError, CurrencyError, Rejection};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A business rule refused the request (422 with the rule's code).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The ledger recorded the request as refused (422 with the recorded code).
    #[error("{}", .0.message)]
    Refused(crate::domain::Reason),
    /// The request itself is malformed or invalid.
    #[error("{message}")]
    Invalid { status: StatusCode, code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("a valid credential is required: `Authorization: Bearer <API key or admin token>`")]
    Unauthorized,
    /// The credential is valid but does not allow this (a missing scope, another owner).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// A dependency is away; the client may retry.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable snake_case code.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { status: StatusCode::UNPROCESSABLE_ENTITY, code, message: message.into() }
    }

    /// PostgreSQL is away or too busy for now: 503, the client may retry.
    pub fn database_unavailable() -> Self {
        Self::Unavailable { code: "database_unavailable", message: "the ledger database is unavailable; retry later".into() }
    }

    pub fn status_and_code(&self) -> (StatusCode, &str) {
        match self {
            Self::Rejected(r) => (StatusCode::UNPROCESSABLE_ENTITY, r.code()),
            Self::Refused(reason) => (StatusCode::UNPROCESSABLE_ENTITY, reason.code.as_str()),
            Self::Invalid { status, code, .. } => (*status, code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unexpected(e) = &self {
            error!(error = ?e, "Request failed unexpectedly.");
        }
        let (status, code) = self.status_and_code();
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: self.to_string() } };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        Self::Invalid { status, code, message: rejection.body_text() }
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        if e.is_unavailable() {
            return Self::database_unavailable();
        }
        Self::Unexpected(e.into())
    }
}

impl From<AmountError> for ApiError {
    fn from(e: AmountError) -> Self {
        Self::Rejected(Rejection::Amount(e))
    }
}

impl From<CurrencyError> for ApiError {
    fn from(e: CurrencyError) -> Self {
        Self::Rejected(Rejection::Currency(e))
    }
}

/// Extracts a JSON body, answering our JSON error shape on any failure.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        // Every request body of this API is a JSON object, but serde's derived
        // `Deserialize` for a struct also reads a JSON array of its fields in
        // order (`[[]]` as `{"names": []}`): a form no schema allows. So the
        // body is checked to be an object before it is read as `T`.
        let Json(raw) = Json::<Box<RawValue>>::from_request(req, state).await?;
        if !raw.get().starts_with('{') {
            return Err(Self::Rejection::Invalid {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_body",
                message: "the body must be a JSON object".into(),
            });
        }
        let Json(value) = Json::<T>::from_bytes(raw.get().as_bytes())?;
        Ok(Self(value))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // axum answers 5xx only for a handler that does not fit its route (a bug
        // of ours, so a 500 is right); every other case is the client's segment,
        // such as a percent-encoded one that is not UTF-8 (`/v1/transfers/%FF`).
        if rejection.status().is_server_error() {
            return Self::Unexpected(anyhow::anyhow!("path parameters do not fit the handler: {}", rejection.body_text()));
        }
        Self::Invalid { status: StatusCode::BAD_REQUEST, code: "invalid_path", message: rejection.body_text() }
    }
}

/// Extracts path parameters, answering our JSON error shape on any failure.
pub struct PathParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid("invalid_query", rejection.body_text())
    }
}

/// Extracts query parameters, answering our JSON error shape (422 `invalid_query`)
/// on any failure, such as a `limit` that is not a number or an unknown parameter.
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerError;

    #[test]
    fn an_unreachable_database_is_a_retryable_503_not_a_500() {
        let away = ApiError::from(LedgerError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(away.status_and_code(), (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"));
        let broken = ApiError::from(LedgerError::Corrupt("status \"lost\"".into()));
        assert_eq!(broken.status_and_code(), (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
    }

    #[test]
    fn business_rejections_answer_422_with_their_stable_code() {
        let e = ApiError::from(Rejection::InsufficientFunds);
        assert_eq!(e.status_and_code(), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"));
    }
}
