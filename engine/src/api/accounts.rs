//! Accounts, balances, their metadata, an account's transfers; deposits and withdrawals (admin).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AccountsRead, AccountsWrite, Authorized, require_owner};
use super::error::{ErrorBody, JsonBody, PathParams, QueryParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::schema::{self, CurrencyCode, DecimalAmount, OwnerIdSchema};
use super::transfers::{decimal_text, metadata, metadata_or_none, owner};
use super::{Admin, ApiError, AppState, whole};
use crate::cache;
use crate::config::Settings;
use crate::domain::{Amount, Currency, Metadata, OwnerId, format_minor};
use crate::ledger::{AccountWithMetadata, CreateAccountError, MoveError};
use crate::views::TransferStatusView;

/// The smallest body limit of the routes that take metadata (opening an
/// account, replacing its metadata, submitting a transfer). The largest body
/// the document allows holds 16 values of 256 characters, which a JSON
/// encoder that escapes every non-ASCII character writes as 12 bytes each
/// (`\ud83d\ude00`): about 52 KB with the keys and the other fields, past the
/// API's default 16 KiB. With this, every request the document allows can be read.
const METADATA_BODY_BYTES_MIN: usize = 64 * 1024;

/// The body limit of the routes that take metadata: the API's own, or `METADATA_BODY_BYTES_MIN` if that is larger.
pub fn metadata_body_bytes_max(settings: &Settings) -> usize {
    settings.request_body_bytes_max.max(METADATA_BODY_BYTES_MIN)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"owner_id": 3, "currency": "EUR", "metadata": {"kyc_tier": "verified"}}))]
pub struct CreateAccount {
    #[serde(deserialize_with = "whole::i64")]
    #[schema(value_type = OwnerIdSchema)]
    pub owner_id: i64,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
    // Any JSON here, checked by `transfers::metadata_or_none` (a wrong shape is `metadata_invalid`).
    #[schema(schema_with = schema::metadata_optional)]
    pub metadata: Option<serde_json::Value>,
}

/// The whole new metadata of an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"metadata": {"kyc_tier": "verified", "country": "DE"}}))]
pub struct UpdateAccountMetadata {
    // Required (absent is `invalid_body`); any JSON, so that null or another
    // shape is refused as `metadata_invalid` by `transfers::metadata`.
    #[schema(schema_with = schema::metadata_replacement)]
    pub metadata: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountBody {
    pub owner_id: i64,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
    /// Decimal text in the currency's precision, for example "12.34".
    pub balance: String,
    pub balance_minor: i64,
    /// The lowest balance allowed, in minor units (0: no overdraft).
    pub floor_minor: i64,
    #[schema(schema_with = schema::metadata_view)]
    pub metadata: Metadata,
}

fn account_body(found: AccountWithMetadata) -> AccountBody {
    let AccountWithMetadata { account, metadata } = found;
    AccountBody {
        owner_id: account.owner_id.get(),
        currency: account.currency.code().to_owned(),
        balance: format_minor(account.balance_minor, account.currency.exponent()),
        balance_minor: account.balance_minor,
        floor_minor: account.floor_minor,
        metadata,
    }
}

fn account_not_found(owner: OwnerId, currency: Currency) -> ApiError {
    ApiError::NotFound { code: "account_not_found", message: format!("owner {owner} has no {currency} account") }
}

fn path_owner(owner_id: &str) -> Result<OwnerId, ApiError> {
    whole::integer_text(owner_id)
        .and_then(|id| OwnerId::new(id).ok())
        .ok_or_else(|| ApiError::invalid("owner_id_invalid", "owner ids are positive integers"))
}

#[utoipa::path(post, path = "/v1/accounts", operation_id = "open_account", tag = "accounts", request_body = CreateAccount,
    security(("bearer" = [])),
    responses(
        (status = 201, body = AccountBody, description = "Opened, with a zero balance",
            links(
                ("balance" = (operation_id = "get_account",
                    parameters(("owner_id" = "$response.body#/owner_id"), ("currency" = "$response.body#/currency")))),
                ("transfers" = (operation_id = "list_account_transfers",
                    parameters(("owner_id" = "$response.body#/owner_id"), ("currency" = "$response.body#/currency")))),
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:write) or `owner_not_permitted`"),
        (status = 409, body = ErrorBody, description = "`account_exists`: the owner already has an account in this currency"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `owner_id_invalid`, `currency_not_supported` or \
            `metadata_invalid`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<AccountsWrite>,
    JsonBody(req): JsonBody<CreateAccount>,
) -> Result<(StatusCode, Json<AccountBody>), ApiError> {
    let owner = owner(req.owner_id, "owner_id")?;
    require_owner(&caller, owner)?;
    let currency = Currency::parse(&req.currency)?;
    let metadata = metadata_or_none(req.metadata)?;
    let account = state.ledger.create_account_with_metadata(owner, currency, 0, &metadata).await.map_err(|e| match e {
        CreateAccountError::Exists { .. } => ApiError::Conflict { code: "account_exists", message: e.to_string() },
        CreateAccountError::Ledger(e) => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(account_body(account))))
}

#[utoipa::path(get, path = "/v1/accounts/{owner_id}/{currency}", operation_id = "get_account", tag = "accounts",
    security(("bearer" = [])),
    params(("owner_id" = OwnerIdSchema, Path), ("currency" = CurrencyCode, Path)),
    responses(
        (status = 200, body = AccountBody),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:read) or `owner_not_permitted`"),
        (status = 404, body = ErrorBody, description = "`account_not_found`"),
        (status = 422, body = ErrorBody, description = "`owner_id_invalid` or `currency_not_supported`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<AccountsRead>,
    PathParams((owner_id, currency)): PathParams<(String, String)>,
) -> Result<Json<AccountBody>, ApiError> {
    let owner = path_owner(&owner_id)?;
    require_owner(&caller, owner)?;
    let currency = Currency::parse(&currency)?;
    // PostgreSQL, not the balance cache: the metadata lives only there (a
    // change of it does not move the version that orders cached balances), and
    // the one primary-key read that brings it brings the balance too, of the
    // same moment and never older than Redis's copy.
    let account = state.ledger.account_with_metadata(owner, currency).await?.ok_or_else(|| account_not_found(owner, currency))?;
    Ok(Json(account_body(account)))
}

#[utoipa::path(patch, path = "/v1/accounts/{owner_id}/{currency}", operation_id = "update_account_metadata", tag = "accounts",
    request_body = UpdateAccountMetadata, security(("bearer" = [])),
    params(("owner_id" = OwnerIdSchema, Path), ("currency" = CurrencyCode, Path)),
    responses(
        (status = 200, body = AccountBody, description = "The account with its new metadata, as `GET` shows it; the balance is unchanged"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:write) or `owner_not_permitted`"),
        (status = 404, body = ErrorBody, description = "`account_not_found`"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `owner_id_invalid`, `currency_not_supported` or \
            `metadata_invalid`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn update_metadata(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<AccountsWrite>,
    PathParams((owner_id, currency)): PathParams<(String, String)>,
    JsonBody(req): JsonBody<UpdateAccountMetadata>,
) -> Result<Json<AccountBody>, ApiError> {
    // Owner 0 (the system accounts) is no valid path owner: refused as `GET` refuses it.
    let owner = path_owner(&owner_id)?;
    require_owner(&caller, owner)?;
    let currency = Currency::parse(&currency)?;
    let metadata = metadata(req.metadata)?;
    let account =
        state.ledger.replace_account_metadata(owner, currency, &metadata).await?.ok_or_else(|| account_not_found(owner, currency))?;
    Ok(Json(account_body(account)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many transfers: 1 to 200, default 50 (a value outside 1..200 is clamped to it).
    #[param(required = false, value_type = i64)]
    pub limit: Option<i64>,
    /// The `next_before` cursor of the previous page.
    #[param(required = false, value_type = i64)]
    pub before: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransferPageBody {
    /// Newest first.
    pub transfers: Vec<TransferStatusView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

const PAGE_SIZE_DEFAULT: i64 = 50;

#[utoipa::path(get, path = "/v1/accounts/{owner_id}/{currency}/transfers", operation_id = "list_account_transfers",
    tag = "accounts", security(("bearer" = [])),
    params(("owner_id" = OwnerIdSchema, Path), ("currency" = CurrencyCode, Path), PageQuery),
    responses(
        (status = 200, body = TransferPageBody),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:read) or `owner_not_permitted`"),
        (status = 404, body = ErrorBody, description = "`account_not_found`"),
        (status = 422, body = ErrorBody, description = "`owner_id_invalid`, `currency_not_supported`, or `invalid_query` \
            (`limit` or `before` is not a 64-bit integer, or another parameter was given)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn transfers(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<AccountsRead>,
    PathParams((owner_id, currency)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<TransferPageBody>, ApiError> {
    let owner = path_owner(&owner_id)?;
    require_owner(&caller, owner)?;
    let currency = Currency::parse(&currency)?;
    let account = state.ledger.account(owner, currency).await?;
    let account = account.ok_or_else(|| account_not_found(owner, currency))?;
    let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT);
    let page = state.ledger.account_transfers(account.account_id, query.before, limit).await?;
    let transfers = page.transfers.iter().map(|t| TransferStatusView::from_ledger(t).for_caller(caller.is_admin())).collect();
    Ok(Json(TransferPageBody { transfers, next_before: page.next_before }))
}

/// A deposit or withdrawal. `reference` makes it idempotent: the same
/// reference again returns the first result; with another amount, 409. A
/// refusal for the balance (`insufficient_funds`, `balance_overflow`) does
/// not use the reference up: calling again with it tries again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"owner_id": 1, "currency": "EUR", "amount": "100.00", "reference": "payout-2024-001"}))]
pub struct MoveMoney {
    #[serde(deserialize_with = "whole::i64")]
    #[schema(value_type = OwnerIdSchema)]
    pub owner_id: i64,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
    #[schema(value_type = DecimalAmount)]
    pub amount: serde_json::Value,
    #[schema(schema_with = schema::move_reference)]
    pub reference: String,
}

/// Longest reference accepted for a deposit or withdrawal.
pub(super) const REFERENCE_CHARS_MAX: usize = 128;

#[utoipa::path(post, path = "/v1/deposits", operation_id = "deposit", tag = "accounts", request_body = MoveMoney,
    security(("bearer" = [])),
    responses(
        (status = 201, body = TransferStatusView, description = "Recorded (completed)",
            links(
                ("transfer" = (operation_id = "get_transfer", parameters(("id" = "$response.body#/transfer_id")))),
                ("balance" = (operation_id = "get_account",
                    parameters(("owner_id" = "$response.body#/receiver_id"), ("currency" = "$response.body#/currency")))),
            )),
        (status = 200, body = TransferStatusView, description = "This reference was used before for the same deposit: the first result"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: only the admin token may move money in or out"),
        (status = 409, body = ErrorBody, description = "`reference_conflict`: this reference was used for a different deposit"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `owner_id_invalid`, `currency_not_supported`, \
            `amount_invalid`, `amount_must_be_positive`, `amount_precision_exceeded`, `amount_out_of_range`, \
            `reference_invalid`, `account_not_found`, or `balance_overflow` (recorded; the reference stays usable for a retry)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn deposit(
    State(state): State<AppState>,
    _: Admin,
    body: JsonBody<MoveMoney>,
) -> Result<(StatusCode, Json<TransferStatusView>), ApiError> {
    move_money(state, body, true).await
}

#[utoipa::path(post, path = "/v1/withdrawals", operation_id = "withdraw", tag = "accounts", request_body = MoveMoney,
    security(("bearer" = [])),
    responses(
        (status = 201, body = TransferStatusView, description = "Recorded (completed)",
            links(
                ("transfer" = (operation_id = "get_transfer", parameters(("id" = "$response.body#/transfer_id")))),
                ("balance" = (operation_id = "get_account",
                    parameters(("owner_id" = "$response.body#/sender_id"), ("currency" = "$response.body#/currency")))),
            )),
        (status = 200, body = TransferStatusView, description = "This reference was used before for the same withdrawal: the first result"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: only the admin token may move money in or out"),
        (status = 409, body = ErrorBody, description = "`reference_conflict`: this reference was used for a different withdrawal"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "`invalid_body`, `owner_id_invalid`, `currency_not_supported`, \
            `amount_invalid`, `amount_must_be_positive`, `amount_precision_exceeded`, `amount_out_of_range`, \
            `reference_invalid`, `account_not_found`, or `insufficient_funds` (recorded; the reference stays usable for a retry)"),
        (status = 503, response = Unavailable),
    ))]
pub async fn withdraw(
    State(state): State<AppState>,
    _: Admin,
    body: JsonBody<MoveMoney>,
) -> Result<(StatusCode, Json<TransferStatusView>), ApiError> {
    move_money(state, body, false).await
}

/// Callers hold `Admin`: the token was checked before the body was read.
async fn move_money(
    state: AppState,
    JsonBody(req): JsonBody<MoveMoney>,
    deposit: bool,
) -> Result<(StatusCode, Json<TransferStatusView>), ApiError> {
    let owner = owner(req.owner_id, "owner_id")?;
    let currency = Currency::parse(&req.currency)?;
    let amount = Amount::parse_decimal(&decimal_text(&req.amount, "amount")?, currency)?;
    // NUL is refused because PostgreSQL text cannot hold it: the ledger's INSERT would fail (a 500).
    if req.reference.is_empty() || req.reference.chars().count() > REFERENCE_CHARS_MAX || req.reference.contains('\0') {
        return Err(ApiError::invalid(
            "reference_invalid",
            format!("the reference must have 1 to {REFERENCE_CHARS_MAX} characters and no NUL"),
        ));
    }
    // Refuse a missing account before anything is recorded, so the reference stays usable.
    if state.ledger.account(owner, currency).await?.is_none() {
        return Err(crate::domain::Rejection::AccountNotFound { owner_id: owner.get(), currency: currency.code().into() }.into());
    }
    let moved = if deposit {
        state.ledger.deposit(owner, currency, amount, &req.reference).await
    } else {
        state.ledger.withdraw(owner, currency, amount, &req.reference).await
    };
    let (committed, updates) = moved.map_err(|e| match e {
        MoveError::ReferenceConflict(_) => ApiError::Conflict { code: "reference_conflict", message: e.to_string() },
        MoveError::Ledger(e) => e.into(),
    })?;
    if let Err(e) = state.cache.put_accounts(&updates).await {
        cache::warn_unavailable(&e, "balance update");
    }
    if let Some(reason) = committed.reason {
        return Err(ApiError::Refused(reason));
    }
    let stored = state.ledger.transfer(committed.transfer_id).await?;
    let view =
        TransferStatusView::from_ledger(&stored.ok_or_else(|| anyhow::anyhow!("committed transfer {} not found", committed.transfer_id))?)
            .for_caller(true);
    let status = if committed.disposition == crate::ledger::Disposition::New { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{METADATA_KEY_CHARS_MAX, METADATA_KEYS_MAX, METADATA_VALUE_CHARS_MAX};

    /// The largest metadata the document allows, every character written as a
    /// `\u` escaped surrogate pair (12 bytes), as encoders that escape all non-ASCII write it.
    fn largest_metadata() -> String {
        let value = "\\udbff\\udfff".repeat(METADATA_VALUE_CHARS_MAX);
        let entries: Vec<String> =
            (0..METADATA_KEYS_MAX).map(|i| format!(r#""{}": "{value}""#, format!("{i:02}").repeat(METADATA_KEY_CHARS_MAX / 2))).collect();
        format!("{{{}}}", entries.join(", "))
    }

    #[test]
    fn the_largest_bodies_the_document_allows_fit_the_metadata_routes_limit() {
        let limit = metadata_body_bytes_max(&Settings::default());
        let metadata = largest_metadata();
        let description = "\\udbff\\udfff".repeat(Settings::default().description_chars_max);
        let transfer = format!(
            r#"{{"transfer_id": "0194f1e2-7a3b-7c4d-8e5f-000000000001", "sender_id": 9223372036854775807, "receiver_id": 9223372036854775806,
                "amount": "92233720368547758.07", "currency": "EUR", "description": "{description}", "metadata": {metadata}}}"#
        );
        let req: crate::api::transfers::SubmitTransfer = serde_json::from_str(&transfer).unwrap();
        let submission = crate::api::transfers::validate(req, &Default::default(), Settings::default().description_chars_max).unwrap();
        assert_eq!(submission.metadata.len(), METADATA_KEYS_MAX, "the body holds the largest valid metadata");
        let account = format!(r#"{{"owner_id": 9223372036854775807, "currency": "EUR", "metadata": {metadata}}}"#);
        let replacement = format!(r#"{{"metadata": {metadata}}}"#);
        for body in [&transfer, &account, &replacement] {
            // Room to spare for an encoder's indentation and spaces.
            assert!(body.len() + body.len() / 8 <= limit, "{} bytes, limit {limit}", body.len());
        }
    }
}
