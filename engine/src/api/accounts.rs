//! Accounts, balances, an account's transfers; deposits and withdrawals (admin).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AccountsRead, AccountsWrite, Authorized, require_owner};
use super::error::{ErrorBody, JsonBody, PathParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::schema::{self, CurrencyCode, DecimalAmount, OwnerIdSchema};
use super::transfers::{balances, decimal_text, owner};
use super::{Admin, ApiError, AppState, whole};
use crate::cache::{self, CachedBalance};
use crate::domain::{Amount, Currency, OwnerId, format_minor};
use crate::ledger::{CreateAccountError, MoveError};
use crate::views::TransferStatusView;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"owner_id": 3, "currency": "EUR"}))]
pub struct CreateAccount {
    #[serde(deserialize_with = "whole::i64")]
    #[schema(value_type = OwnerIdSchema)]
    pub owner_id: i64,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
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
}

fn account_body(owner: OwnerId, currency: Currency, b: &CachedBalance) -> AccountBody {
    AccountBody {
        owner_id: owner.get(),
        currency: currency.code().to_owned(),
        balance: format_minor(b.balance_minor, currency.exponent()),
        balance_minor: b.balance_minor,
        floor_minor: b.floor_minor,
    }
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
        (status = 422, body = ErrorBody, description = "`invalid_body`, `owner_id_invalid` or `currency_not_supported`"),
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
    let account = state.ledger.create_account(owner, currency, 0).await.map_err(|e| match e {
        CreateAccountError::Exists { .. } => ApiError::Conflict { code: "account_exists", message: e.to_string() },
        CreateAccountError::Ledger(e) => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(account_body(owner, currency, &CachedBalance::from(&account)))))
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
    let [balance] = balances(&state, [(owner, currency)]).await?;
    let balance = balance
        .ok_or_else(|| ApiError::NotFound { code: "account_not_found", message: format!("owner {owner} has no {currency} account") })?;
    Ok(Json(account_body(owner, currency, &balance)))
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
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TransferPageBody>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let owner = path_owner(&owner_id)?;
    require_owner(&caller, owner)?;
    let currency = Currency::parse(&currency)?;
    let account = state.ledger.account(owner, currency).await?;
    let account = account
        .ok_or_else(|| ApiError::NotFound { code: "account_not_found", message: format!("owner {owner} has no {currency} account") })?;
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
