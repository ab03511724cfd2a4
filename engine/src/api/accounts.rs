//! Accounts, balances, an account's transfers; deposits and withdrawals (admin).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AccountsRead, AccountsWrite, Authorized, require_owner};
use super::error::{ErrorBody, JsonBody, PathParams};
use super::transfers::{balances, decimal_text, owner};
use super::{Admin, ApiError, AppState};
use crate::cache::{self, CachedBalance};
use crate::domain::{Amount, Currency, OwnerId, format_minor};
use crate::ledger::{CreateAccountError, MoveError};
use crate::views::TransferStatusView;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub owner_id: i64,
    pub currency: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountBody {
    pub owner_id: i64,
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
    owner_id
        .parse::<i64>()
        .ok()
        .and_then(|id| OwnerId::new(id).ok())
        .ok_or_else(|| ApiError::invalid("owner_id_invalid", "owner ids are positive integers"))
}

#[utoipa::path(post, path = "/v1/accounts", request_body = CreateAccount, security(("bearer" = [])),
    responses((status = 201, body = AccountBody),
              (status = 401, body = ErrorBody, description = "No valid credential"),
              (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:write) or `owner_not_permitted`"),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/accounts/{owner_id}/{currency}", security(("bearer" = [])),
    params(("owner_id" = i64, Path), ("currency" = String, Path)),
    responses((status = 200, body = AccountBody),
              (status = 401, body = ErrorBody, description = "No valid credential"),
              (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:read) or `owner_not_permitted`"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
pub struct PageQuery {
    /// At most 200; default 50.
    pub limit: Option<i64>,
    /// The `next_before` cursor of the previous page.
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

#[utoipa::path(get, path = "/v1/accounts/{owner_id}/{currency}/transfers", security(("bearer" = [])),
    params(("owner_id" = i64, Path), ("currency" = String, Path), PageQuery),
    responses((status = 200, body = TransferPageBody),
              (status = 401, body = ErrorBody, description = "No valid credential"),
              (status = 403, body = ErrorBody, description = "`scope_missing` (needs accounts:read) or `owner_not_permitted`"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
/// reference again returns the first result; with another amount, 409.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveMoney {
    pub owner_id: i64,
    pub currency: String,
    #[schema(value_type = String, example = "100.00")]
    pub amount: serde_json::Value,
    pub reference: String,
}

/// Longest reference accepted for a deposit or withdrawal.
const REFERENCE_CHARS_MAX: usize = 128;

#[utoipa::path(post, path = "/v1/deposits", request_body = MoveMoney, security(("bearer" = [])),
    responses((status = 201, body = TransferStatusView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deposit(
    State(state): State<AppState>,
    _: Admin,
    body: JsonBody<MoveMoney>,
) -> Result<(StatusCode, Json<TransferStatusView>), ApiError> {
    move_money(state, body, true).await
}

#[utoipa::path(post, path = "/v1/withdrawals", request_body = MoveMoney, security(("bearer" = [])),
    responses((status = 201, body = TransferStatusView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
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
