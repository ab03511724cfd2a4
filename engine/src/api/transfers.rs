//! `POST /v1/transfers` and `GET /v1/transfers/{id}`.
//!
//! Submitting does only cheap work: validate, claim the id in Redis (so a
//! retry publishes nothing) and read both accounts' cached balances in the
//! same round trip, a primary-key read of PostgreSQL when Redis cannot vouch
//! for the id, an advisory balance pre-check, then publish to Kafka and
//! answer 202 once the broker has acknowledged. The processor's check under
//! lock in PostgreSQL is the truth. Each stage's time is observed in
//! `submit_stage_seconds` (`metrics::SubmitStage`).
//!
//! `GET /v1/admin/transfer-conflicts` lists the ids reused with another
//! meaning that got past the API (two engines racing) and that the ledger refused.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;

use super::auth::{Authorized, TransfersRead, TransfersWrite, require_owner};
use super::error::{ErrorBody, JsonBody, PathParams, QueryParams};
use super::openapi::{BadRequest, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType};
use super::schema::{self, CurrencyCode, DecimalAmount, OwnerIdSchema};
use super::{Admin, ApiError, AppState, whole};
use crate::cache::{self, CacheError, CachedBalance};
use crate::domain::{
    Amount, Currency, METADATA_KEY_CHARS_MAX, METADATA_KEYS_MAX, Metadata, MetadataError, Money, OwnerId, Rejection, Requested, Submission,
    TransferId, TransferKind,
};
use crate::kafka::{self, TransferRecord};
use crate::metrics::SubmitStage;
use crate::views::TransferStatusView;

/// A transfer request. Give either `amount` (in `currency`) or
/// `original_amount` with `original_currency` (converted by the conversion
/// hook), not a mix (422 `amount_missing`, `amount_ambiguous`). A field
/// given as null is the same as a field left out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sender_id": 1, "receiver_id": 2, "amount": "12.34", "currency": "EUR", "description": "rent",
    "metadata": {"channel": "web"}}))]
pub struct SubmitTransfer {
    /// Optional client-chosen id (UUID, not version 5: 422 `transfer_id_reserved`); else the `Idempotency-Key` header; else generated.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub transfer_id: Option<uuid::Uuid>,
    /// The owner of the debit account.
    #[serde(deserialize_with = "whole::i64")]
    #[schema(value_type = OwnerIdSchema)]
    pub sender_id: i64,
    /// The owner of the credit account; another owner than the sender (422 `accounts_must_be_different`).
    #[serde(deserialize_with = "whole::i64")]
    #[schema(value_type = OwnerIdSchema)]
    pub receiver_id: i64,
    #[schema(value_type = Option<DecimalAmount>)]
    pub amount: Option<serde_json::Value>,
    /// The currency of both accounts.
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
    #[schema(schema_with = schema::transfer_description)]
    pub description: Option<String>,
    /// An amount in `original_currency`, converted into `currency` by the conversion hook.
    #[schema(value_type = Option<DecimalAmount>)]
    pub original_amount: Option<serde_json::Value>,
    #[schema(value_type = Option<CurrencyCode>)]
    pub original_currency: Option<String>,
    // Part of what the transfer means: a retry under the same id must carry
    // the same metadata. Any JSON here, checked by `metadata`.
    #[schema(schema_with = schema::metadata_optional)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitAccepted {
    #[schema(value_type = String, format = Uuid)]
    pub transfer_id: uuid::Uuid,
    pub status: crate::domain::Status,
    pub version: i32,
}

/// Reads a JSON string or number as exact decimal text (numbers keep their
/// original text: serde_json's `arbitrary_precision` is on, so 12.10 stays "12.10").
pub fn decimal_text(value: &serde_json::Value, field: &str) -> Result<String, ApiError> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::invalid("amount_invalid", format!("`{field}` must be a decimal string or number"))),
    }
}

/// Reads an optional `metadata` field: absent or null is none, else as `metadata`.
pub(super) fn metadata_or_none(value: Option<serde_json::Value>) -> Result<Metadata, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Metadata::default()),
        Some(value) => metadata(value),
    }
}

/// Reads a `metadata` field: a JSON object of strings within `Metadata`'s
/// bounds. Read from a JSON value rather than derived, so that a wrong shape
/// (null, an array, a number as a value) is refused as `metadata_invalid`,
/// the code of every other metadata rule, and not as the generic `invalid_body`.
pub(super) fn metadata(value: serde_json::Value) -> Result<Metadata, ApiError> {
    use serde_json::Value;
    let invalid = |message: String| ApiError::invalid("metadata_invalid", message);
    let Value::Object(object) = value else {
        return Err(invalid("`metadata` must be a JSON object whose values are strings".into()));
    };
    // The size first, as `Metadata::new` checks it: an object of too many
    // keys is refused for that, whatever its values are.
    if object.len() > METADATA_KEYS_MAX {
        return Err(invalid(MetadataError::TooManyKeys { count: object.len() }.to_string()));
    }
    let mut entries = BTreeMap::new();
    for (key, value) in object {
        let Value::String(text) = value else {
            // A key can be anything a client sent: keep what is echoed short, as `MetadataError` does.
            let key: String = key.chars().take(METADATA_KEY_CHARS_MAX + 1).collect();
            return Err(invalid(format!("metadata value of {key:?} must be a string")));
        };
        entries.insert(key, text);
    }
    Metadata::new(entries).map_err(|e| invalid(e.to_string()))
}

pub(super) fn owner(id: i64, field: &str) -> Result<OwnerId, ApiError> {
    OwnerId::new(id).map_err(|e| ApiError::invalid("owner_id_invalid", format!("`{field}`: {e}")))
}

/// The id from the body, else the `Idempotency-Key` header, else a new one.
fn transfer_id(body: Option<uuid::Uuid>, headers: &HeaderMap) -> Result<TransferId, ApiError> {
    let header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| ApiError::invalid("idempotency_key_invalid", "Idempotency-Key must be a UUID"))?;
            Some(
                uuid::Uuid::parse_str(text.trim())
                    .map_err(|_| ApiError::invalid("idempotency_key_invalid", "Idempotency-Key must be a UUID"))?,
            )
        }
    };
    let id = match (body, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::invalid("idempotency_key_mismatch", "transfer_id and Idempotency-Key differ"));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Ok(TransferId::generate()),
    };
    if is_reserved(id) {
        return Err(ApiError::invalid(
            "transfer_id_reserved",
            "version 5 UUIDs are reserved for deposits and withdrawals; use a random (v4) or time-ordered (v7) UUID",
        ));
    }
    Ok(TransferId(id))
}

/// Deposits and withdrawals take UUIDv5 ids derived from their reference
/// (`TransferId::for_reference`). A hash cannot say which namespace made an id,
/// so every v5 id is kept from clients: otherwise whoever guesses a wire
/// reference could take its id first, and the real deposit would be refused
/// as a conflict. Stored ids keep working (a deposit retried with its
/// reference derives the same id); a v5 id a client submitted before this
/// rule can still be read, not submitted again.
fn is_reserved(id: uuid::Uuid) -> bool {
    id.get_version_num() == 5
}

/// Validates a request into a submission: every rule that needs no I/O.
pub fn validate(req: SubmitTransfer, headers: &HeaderMap, description_chars_max: usize) -> Result<Submission, ApiError> {
    let id = transfer_id(req.transfer_id, headers)?;
    let sender = owner(req.sender_id, "sender_id")?;
    let receiver = owner(req.receiver_id, "receiver_id")?;
    let currency = Currency::parse(&req.currency)?;
    if sender == receiver {
        return Err(Rejection::AccountsMustBeDifferent.into());
    }
    let requested = match (&req.amount, &req.original_amount, &req.original_currency) {
        (Some(amount), None, None) => Requested::Amount(Amount::parse_decimal(&decimal_text(amount, "amount")?, currency)?),
        (None, Some(amount), Some(code)) => {
            let original_currency = Currency::parse(code)?;
            let amount = Amount::parse_decimal(&decimal_text(amount, "original_amount")?, original_currency)?;
            Requested::Original(Money { amount, currency: original_currency })
        }
        (None, None, None) => {
            return Err(ApiError::invalid("amount_missing", "give `amount`, or `original_amount` with `original_currency`"));
        }
        _ => {
            return Err(ApiError::invalid(
                "amount_ambiguous",
                "give either `amount`, or `original_amount` with `original_currency`, not a mix",
            ));
        }
    };
    if let Some(d) = &req.description {
        if d.chars().count() > description_chars_max {
            return Err(ApiError::invalid(
                "description_too_long",
                format!("the description is longer than {description_chars_max} characters"),
            ));
        }
        // PostgreSQL text cannot hold NUL: once published, such a transfer would
        // fail its batch's INSERT on every retry and stall its partition.
        if d.contains('\0') {
            return Err(ApiError::invalid("description_invalid", "the description must not contain NUL characters"));
        }
    }
    let metadata = metadata_or_none(req.metadata)?;
    Ok(Submission {
        id,
        kind: TransferKind::Transfer,
        sender,
        receiver,
        currency,
        requested,
        description: req.description,
        submitted_at: Utc::now(),
        client_id: None,
        metadata,
    })
}

#[utoipa::path(post, path = "/v1/transfers", operation_id = "submit_transfer", tag = "transfers", request_body = SubmitTransfer,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, format = Uuid, nullable = false,
            description = "The transfer id, if the body has no `transfer_id` (422 `idempotency_key_mismatch` if it has another)")),
    responses(
        (status = 202, body = SubmitAccepted, description = "Accepted and published; the processor decides it (poll `GET /v1/transfers/{id}`)",
            links(("status" = (operation_id = "get_transfer", parameters(("id" = "$response.body#/transfer_id")))))),
        (status = 200, body = SubmitAccepted, description = "The same transfer was submitted before under this id: its current state",
            headers(("idempotent-replayed" = String, description = "Always `true`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs transfers:write) or `owner_not_permitted` (the sender)"),
        (status = 409, body = ErrorBody, description = "`idempotency_conflict`: this id was used for a different transfer"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, body = ErrorBody, description = "The body does not fit the schema (`invalid_body`), or a rule refused it: \
            `owner_id_invalid`, `currency_not_supported`, `accounts_must_be_different`, `amount_missing`, `amount_ambiguous`, \
            `amount_invalid`, `amount_must_be_positive`, `amount_precision_exceeded`, `amount_out_of_range`, \
            `description_too_long`, `description_invalid`, `metadata_invalid`, `idempotency_key_invalid`, `idempotency_key_mismatch`, \
            `transfer_id_reserved` (a version 5 UUID: those are deposits' and withdrawals' ids); \
            or the advisory check before publishing: `account_not_found`, `insufficient_funds`"),
        (status = 503, response = Unavailable),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TransfersWrite>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SubmitTransfer>,
) -> Result<Response, ApiError> {
    let mut submission = validate(req, &headers, state.settings.description_chars_max)?;
    require_owner(&caller, submission.sender)?;
    submission.client_id = caller.client_id;
    let initiated = TransferStatusView::initiated(&submission);
    let fingerprint = initiated.fingerprint.clone();

    // 1. Idempotency: claim the id, or find what it already is. Redis answers
    //    alone only for what it knows reached the broker or the ledger. The
    //    same round trip reads both accounts' cached balances for step 3
    //    (wasted when the id turns out to be taken: two small HMGETs).
    let initiated_body = serde_json::to_string(&initiated).map_err(anyhow::Error::from)?;
    let accounts = [(submission.sender, submission.currency), (submission.receiver, submission.currency)];
    let started = Instant::now();
    let read = state.cache.claim_with_balances(submission.id, &initiated_body, &accounts).await;
    state.metrics.observe_submit_stage(SubmitStage::RedisClaim, started);
    let claim = read.claim;
    // A claim Redis says was published but is not final yet: the ledger may
    // be ahead of it (the processor writes Redis after its commit, best
    // effort), so PostgreSQL is asked below; if it has nothing yet, this
    // answer stands and nothing is published again.
    let mut published_claim = None;
    let fresh = match &claim {
        Ok(None) => true,
        Ok(Some(existing)) => {
            let view: TransferStatusView = serde_json::from_str(&existing.body).context("unreadable status view in Redis")?;
            if view.fingerprint != fingerprint {
                return Err(conflict());
            }
            if existing.version > 1 {
                return Ok(replayed(&view));
            }
            if existing.published {
                published_claim = Some(view);
            }
            // Claimed but not acknowledged by the broker (in flight, a claimant
            // that died, or a publish that failed): publishing again is harmless,
            // the ledger applies an id once. PostgreSQL is asked first, below.
            false
        }
        Err(e) => {
            cache::warn_unavailable(e, "transfer claim");
            false
        }
    };

    // 2. The truth. A fresh claim proves nothing: the claim may have expired
    //    (`status_cache_ttl_s`), or Redis was flushed or failed over, long after
    //    the ledger recorded the id. One primary-key read, before the balance
    //    pre-check (which could refuse a payment that already completed).
    //    PostgreSQL away: fail closed with 503. Publishing unchecked could
    //    answer 202 for an id the ledger holds with another meaning (a conflict
    //    recorded silently); the client retries with the same id instead.
    let started = Instant::now();
    let stored = state.ledger.transfer(submission.id).await;
    state.metrics.observe_submit_stage(SubmitStage::LedgerRead, started);
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            if let Some(view) = &published_claim {
                return Ok(replayed(view));
            }
            if fresh {
                release_claim(&state, submission.id).await;
            }
            return Err(e.into());
        }
    };
    if let Some(stored) = stored {
        let view = TransferStatusView::from_ledger(&stored);
        if claim.is_ok() {
            // Replace our claim (which may hold the other body) with the truth,
            // so that Redis answers the next retry or conflict by itself.
            let body = serde_json::to_string(&view).map_err(anyhow::Error::from)?;
            if let Err(e) = state.cache.replace_claim(submission.id, i64::from(view.version), &body).await {
                cache::warn_unavailable(&e, "claim refresh");
            }
        }
        return if view.fingerprint == fingerprint { Ok(replayed(&view)) } else { Err(conflict()) };
    }
    if let Some(view) = published_claim {
        return Ok(replayed(&view));
    }

    // 3. Advisory pre-check on the balances read with the claim: a refusal
    //    publishes nothing, so a fresh claim is released.
    let started = Instant::now();
    let checked = precheck(&state, &submission, accounts, read.balances).await;
    state.metrics.observe_submit_stage(SubmitStage::PrecheckFill, started);
    if let Err(e) = checked {
        if fresh {
            release_claim(&state, submission.id).await;
        }
        return Err(e);
    }

    // 4. Publish. On failure the claim is kept, whatever it was: a publish
    //    that timed out may still be delivered by librdkafka, so the id is
    //    taken (another body gets 409) and `GET` answers `initiated` from the
    //    claim until the ledger has it. A retry with the same body publishes
    //    again and answers 202.
    let record = serde_json::to_vec(&TransferRecord::from_submission(&submission)).map_err(anyhow::Error::from)?;
    let key = kafka::record_key(submission.sender, submission.currency);
    let started = Instant::now();
    let published = state.publisher.publish(&state.settings.topic, &key, &record, kafka::record_headers(&submission)).await;
    state.metrics.observe_submit_stage(SubmitStage::Publish, started);
    if let Err(e) = published {
        warn!(transfer_id = %submission.id, error = %e, "The broker did not acknowledge a transfer.");
        return Err(ApiError::Unavailable {
            code: "broker_unavailable",
            message: "the broker did not acknowledge the transfer; retry with the same id".into(),
        });
    }
    let started = Instant::now();
    let marked = state.cache.mark_published(submission.id).await;
    state.metrics.observe_submit_stage(SubmitStage::MarkPublished, started);
    if let Err(e) = marked {
        cache::warn_unavailable(&e, "claim publish mark");
    }
    let accepted = SubmitAccepted { transfer_id: submission.id.0, status: crate::domain::Status::Initiated, version: 1 };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Gives up a claim under which nothing was published, so that the id stays free.
async fn release_claim(state: &AppState, id: TransferId) {
    if let Err(e) = state.cache.release_unpublished(id).await {
        cache::warn_unavailable(&e, "claim release");
    }
}

fn conflict() -> ApiError {
    ApiError::Conflict { code: "idempotency_conflict", message: "this transfer id was already used for a different transfer".into() }
}

fn replayed(view: &TransferStatusView) -> Response {
    let body = SubmitAccepted { transfer_id: view.transfer_id, status: view.status, version: view.version };
    (StatusCode::OK, [("idempotent-replayed", "true")], Json(body)).into_response()
}

/// Both accounts exist and the sender's cached balance covers the amount.
/// Advisory only: a stale cache can let a transfer through that the ledger then rejects.
/// `cached` is what Redis held for `accounts` (sender, receiver), read with the claim.
async fn precheck(
    state: &AppState,
    s: &Submission,
    accounts: [(OwnerId, Currency); 2],
    cached: Result<Vec<Option<CachedBalance>>, CacheError>,
) -> Result<(), ApiError> {
    let [sender, receiver] = fill_balances(state, accounts, cached).await?;
    for (found, owner) in [(&sender, s.sender), (&receiver, s.receiver)] {
        if found.is_none() {
            return Err(Rejection::AccountNotFound { owner_id: owner.get(), currency: s.currency.code().into() }.into());
        }
    }
    if let (Some(sender), Some(amount)) = (sender, s.amount()) {
        let covered = sender.balance_minor.checked_sub(amount.minor()).is_some_and(|after| after >= sender.floor_minor);
        if !covered {
            return Err(Rejection::InsufficientFunds.into());
        }
    }
    Ok(())
}

/// `cached` (what Redis answered for `keys`, one per key), with each miss
/// read from PostgreSQL and written back to Redis; when Redis failed, every
/// key is read from PostgreSQL. A key PostgreSQL has no account for is `None`.
async fn fill_balances<const N: usize>(
    state: &AppState,
    keys: [(OwnerId, Currency); N],
    cached: Result<Vec<Option<CachedBalance>>, CacheError>,
) -> Result<[Option<CachedBalance>; N], ApiError> {
    let mut found = match cached {
        Ok(cached) => cached,
        Err(e) => {
            cache::warn_unavailable(&e, "balance read");
            vec![None; N]
        }
    };
    let mut fills = Vec::new();
    for (slot, (owner, currency)) in found.iter_mut().zip(keys) {
        if slot.is_some() {
            continue;
        }
        if let Some(account) = state.ledger.account(owner, currency).await? {
            let balance = CachedBalance::from(&account);
            *slot = Some(balance);
            fills.push((owner, currency, balance));
        }
    }
    if let Err(e) = state.cache.put_balances(&fills).await {
        cache::warn_unavailable(&e, "balance fill");
    }
    Ok(found.try_into().expect("one answer per key"))
}

#[utoipa::path(get, path = "/v1/transfers/{id}", operation_id = "get_transfer", tag = "transfers", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "The transfer id")),
    responses(
        (status = 200, body = TransferStatusView, description = "The transfer. `initiated` until the processor decides it; \
            also after a submit answered 503 `broker_unavailable`, whose record may still be delivered (resubmit the same \
            body under the same id, never a new id)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing` (needs transfers:read)"),
        (status = 404, body = ErrorBody, description = "`transfer_not_found`: no such transfer, or none this credential may read"),
        (status = 422, body = ErrorBody, description = "`transfer_id_invalid`: the id is not a UUID"),
        (status = 503, response = Unavailable),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<TransfersRead>,
    PathParams(id): PathParams<String>,
) -> Result<Json<TransferStatusView>, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map(TransferId)
        .map_err(|_| ApiError::invalid("transfer_id_invalid", "the transfer id must be a UUID"))?;
    let cached = match state.cache.status(id).await {
        Ok(cached) => cached.and_then(|(_, body)| serde_json::from_str::<TransferStatusView>(&body).ok()),
        Err(e) => {
            cache::warn_unavailable(&e, "status read");
            None
        }
    };
    // A final status in Redis is as good as PostgreSQL's; an initiated one may
    // be behind it (Redis was away when the processor finished), so ask the truth.
    let view = match cached {
        Some(view) if view.status.is_final() => Some(view),
        cached => match state.ledger.transfer(id).await? {
            Some(stored) => Some(TransferStatusView::from_ledger(&stored)),
            None => cached,
        },
    };
    // A transfer this caller may not read answers exactly as one that does
    // not exist, so a bound client cannot probe other owners' transfer ids.
    let visible = |v: &TransferStatusView| caller.may_see_transfer(OwnerId::from_stored(v.sender_id), OwnerId::from_stored(v.receiver_id));
    let view =
        view.filter(visible).ok_or_else(|| ApiError::NotFound { code: "transfer_not_found", message: format!("no transfer {id}") })?;
    Ok(Json(view.for_caller(caller.is_admin())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConflictPageQuery {
    /// How many conflicts: 1 to 200, default 50 (a value outside 1..200 is clamped to it).
    #[param(required = false, value_type = i64)]
    pub limit: Option<i64>,
    /// The `next_before` cursor of the previous page.
    #[param(required = false, value_type = i64)]
    pub before: Option<i64>,
}

/// A transfer id that arrived again with another meaning and was refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictBody {
    /// Rises with every conflict recorded; the pagination cursor.
    pub conflict_id: i64,
    #[schema(value_type = String, format = Uuid)]
    pub transfer_id: uuid::Uuid,
    /// When the ledger refused it.
    pub at: chrono::DateTime<Utc>,
    /// sha256 (hex) of what the refused submission meant; the transfer's own is another.
    pub fingerprint: String,
    /// The transfer the id stands for, which the refused submission did not change (no `history`).
    pub transfer: TransferStatusView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictPageBody {
    /// Newest first.
    pub conflicts: Vec<ConflictBody>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

const CONFLICT_PAGE_SIZE_DEFAULT: i64 = 50;

/// Conflicts reach the ledger only when the API could not see them: two
/// engines claiming one id at once, or PostgreSQL behind the record. Each one
/// is also counted as outcome `conflict` in `transfer_engine_transfers_total`.
#[utoipa::path(get, path = "/v1/admin/transfer-conflicts", operation_id = "list_transfer_conflicts", tag = "transfers",
    security(("bearer" = [])),
    params(ConflictPageQuery),
    responses(
        (status = 200, body = ConflictPageBody),
        (status = 401, response = Unauthorized),
        (status = 403, body = ErrorBody, description = "`scope_missing`: the admin token only"),
        (status = 422, body = ErrorBody, description = "`invalid_query`: `limit` or `before` is not a 64-bit integer, \
            or another parameter was given"),
        (status = 503, response = Unavailable),
    ))]
pub async fn conflicts(
    State(state): State<AppState>,
    _: Admin,
    QueryParams(query): QueryParams<ConflictPageQuery>,
) -> Result<Json<ConflictPageBody>, ApiError> {
    let page = state.ledger.transfer_conflicts(query.before, query.limit.unwrap_or(CONFLICT_PAGE_SIZE_DEFAULT)).await?;
    let conflicts = page
        .conflicts
        .iter()
        .map(|c| ConflictBody {
            conflict_id: c.conflict_id,
            transfer_id: c.transfer.transfer_id.0,
            at: c.at,
            fingerprint: hex::encode(&c.fingerprint),
            transfer: TransferStatusView::from_ledger(&c.transfer).for_caller(true),
        })
        .collect();
    Ok(Json(ConflictPageBody { conflicts, next_before: page.next_before }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The code and message a metadata field is refused with.
    fn refusal(value: serde_json::Value) -> (String, String) {
        let e = metadata(value).expect_err("refused");
        (e.status_and_code().1.to_owned(), e.to_string())
    }

    #[test]
    fn metadata_that_breaks_a_rule_is_refused_as_metadata_invalid_naming_the_rule() {
        let many: serde_json::Map<_, _> = (0..=METADATA_KEYS_MAX).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!(many), "17 keys"),
            (json!({"Country": "DE"}), "must be 1 to 64 characters"),
            (json!({"k": "v".repeat(257)}), "257 characters"),
            (json!({"k": "a\u{0}b"}), "NUL"),
            (json!({"k": 1}), "must be a string"),
            (json!({"k": null}), "must be a string"),
            (json!({"k": {"nested": "v"}}), "must be a string"),
            (json!(["k", "v"]), "must be a JSON object"),
            (json!("k=v"), "must be a JSON object"),
            (json!(null), "must be a JSON object"),
        ];
        for (value, rule) in cases {
            let (code, message) = refusal(value.clone());
            assert_eq!(code, "metadata_invalid", "{value}");
            assert!(message.contains(rule), "{value}: {message:?} does not say {rule:?}");
        }
    }

    #[test]
    fn a_refused_key_is_echoed_short() {
        let key = "x".repeat(10_000);
        let (_, message) = refusal(serde_json::Value::Object([(key, json!(1))].into_iter().collect()));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn absent_or_null_metadata_is_none_and_valid_metadata_is_kept() {
        assert_eq!(metadata_or_none(None).unwrap(), Metadata::default());
        assert_eq!(metadata_or_none(Some(json!(null))).unwrap(), Metadata::default());
        let kept = metadata_or_none(Some(json!({"kyc_tier": "verified", "country": "DE"}))).unwrap();
        assert_eq!((kept.get("kyc_tier"), kept.get("country"), kept.len()), (Some("verified"), Some("DE"), 2));
    }

    #[test]
    fn a_submission_carries_the_metadata_of_its_request_and_a_cli_line_reads_it() {
        let line = r#"{"sender_id": 1, "receiver_id": 2, "amount": "5", "currency": "EUR", "metadata": {"channel": "web"}}"#;
        let req: SubmitTransfer = serde_json::from_str(line).unwrap();
        let submission = validate(req, &HeaderMap::new(), 280).unwrap();
        assert_eq!(submission.metadata.get("channel"), Some("web"));
        let refused: SubmitTransfer =
            serde_json::from_str(r#"{"sender_id": 1, "receiver_id": 2, "amount": "5", "currency": "EUR", "metadata": {"n": 1}}"#).unwrap();
        assert_eq!(validate(refused, &HeaderMap::new(), 280).unwrap_err().status_and_code().1, "metadata_invalid");
    }
}
