//! Reads: a transfer with its status history, an account's transfers, the recorded id conflicts.

use chrono::{DateTime, Utc};

use super::{Ledger, LedgerError};
use crate::domain::{ClientId, Currency, Metadata, OwnerId, Reason, Status, TransferId, TransferKind};
use crate::hooks::Decision;

/// One status a transfer had; also what clients see in its `history`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub version: i32,
    pub status: Status,
    pub reason: Option<Reason>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferView {
    pub transfer_id: TransferId,
    /// Position in the ledger's insertion order; the pagination cursor.
    pub seq: i64,
    pub kind: TransferKind,
    pub sender_id: OwnerId,
    pub receiver_id: OwnerId,
    pub currency: Currency,
    pub amount_minor: Option<i64>,
    pub original_amount_minor: Option<i64>,
    pub original_currency: Option<Currency>,
    pub description: Option<String>,
    pub status: Status,
    pub version: i32,
    pub reason: Option<Reason>,
    pub created_at: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
    /// sha256 of what the transfer means (see `Submission::fingerprint`).
    pub fingerprint: Vec<u8>,
    /// Oldest first. Empty in listings, which do not load it.
    pub history: Vec<HistoryEntry>,
    /// What each plugin decided, in order.
    pub decisions: Vec<Decision>,
    /// The API client that submitted it, if one did.
    pub client_id: Option<ClientId>,
    /// What the client attached; empty when the row holds NULL.
    pub metadata: Metadata,
}

#[derive(Clone, Debug)]
pub struct TransferPage {
    /// Newest first.
    pub transfers: Vec<TransferView>,
    /// Pass as `before` to get the next (older) page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// Most transfers (or conflicts) one page may return.
pub const PAGE_SIZE_MAX: i64 = 200;

/// A transfer id that arrived again with another meaning, and the transfer
/// the ledger holds under it. The refused submission was never applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictView {
    /// Insertion order; the pagination cursor.
    pub conflict_id: i64,
    /// sha256 of what the refused submission meant (see `Submission::fingerprint`).
    pub fingerprint: Vec<u8>,
    pub at: DateTime<Utc>,
    /// What the id stands for. Its history is not loaded.
    pub transfer: TransferView,
}

#[derive(Clone, Debug)]
pub struct ConflictPage {
    /// Newest first.
    pub conflicts: Vec<ConflictView>,
    /// Pass as `before` to get the next (older) page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// (version, status, reason_code, reason_message, at)
type HistoryRow = (i32, String, Option<String>, Option<String>, DateTime<Utc>);

#[derive(sqlx::FromRow)]
struct TransferRow {
    transfer_id: uuid::Uuid,
    seq: i64,
    kind: String,
    sender_id: i64,
    receiver_id: i64,
    currency: String,
    amount_minor: Option<i64>,
    original_amount_minor: Option<i64>,
    original_currency: Option<String>,
    description: Option<String>,
    status: String,
    status_version: i32,
    reason_code: Option<String>,
    reason_message: Option<String>,
    created_at: DateTime<Utc>,
    committed_at: Option<DateTime<Utc>>,
    fingerprint: Vec<u8>,
    decisions: Option<String>,
    client_id: Option<uuid::Uuid>,
    metadata: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ConflictRow {
    conflict_id: i64,
    refused_fingerprint: Vec<u8>,
    refused_at: DateTime<Utc>,
    #[sqlx(flatten)]
    transfer: TransferRow,
}

const TRANSFER_COLUMNS: &str = "transfer_id, seq, kind, sender_id, receiver_id, currency, amount_minor,
    original_amount_minor, original_currency, description, status, status_version, reason_code,
    reason_message, created_at, committed_at, fingerprint, decisions::text AS decisions, client_id, metadata::text AS metadata";

fn corrupt(what: &str, value: &str) -> LedgerError {
    LedgerError::Corrupt(format!("{what} {value:?}"))
}

fn transfer_from_row(row: TransferRow) -> Result<TransferView, LedgerError> {
    let currency_of = |c: &str| Currency::parse(c).map_err(|_| corrupt("currency", c));
    Ok(TransferView {
        transfer_id: TransferId(row.transfer_id),
        seq: row.seq,
        kind: TransferKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
        sender_id: OwnerId::from_stored(row.sender_id),
        receiver_id: OwnerId::from_stored(row.receiver_id),
        currency: currency_of(&row.currency)?,
        amount_minor: row.amount_minor,
        original_amount_minor: row.original_amount_minor,
        original_currency: row.original_currency.as_deref().map(currency_of).transpose()?,
        description: row.description,
        status: Status::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
        version: row.status_version,
        reason: row.reason_code.map(|code| Reason { code, message: row.reason_message.unwrap_or_default() }),
        created_at: row.created_at,
        committed_at: row.committed_at,
        fingerprint: row.fingerprint,
        history: Vec::new(),
        decisions: match row.decisions {
            Some(json) => serde_json::from_str(&json).map_err(|e| corrupt("decisions", &e.to_string()))?,
            None => Vec::new(),
        },
        client_id: row.client_id.map(ClientId),
        metadata: match row.metadata {
            Some(json) => serde_json::from_str(&json).map_err(|e| corrupt("metadata", &e.to_string()))?,
            None => Metadata::default(),
        },
    })
}

impl Ledger {
    /// A transfer with its full status history, or `None` if the ledger has never seen the id.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<TransferView>, LedgerError> {
        let row: Option<TransferRow> = sqlx::query_as(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut view = transfer_from_row(row)?;
        let history: Vec<HistoryRow> = sqlx::query_as(
            "SELECT version, status, reason_code, reason_message, at
               FROM transfer_status_history WHERE transfer_id = $1 ORDER BY version",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        for (version, status, code, message, at) in history {
            let status = Status::parse(&status).ok_or_else(|| corrupt("status", &status))?;
            let reason = code.map(|code| Reason { code, message: message.unwrap_or_default() });
            view.history.push(HistoryEntry { version, status, reason, at });
        }
        rebuild_retired_history(&mut view);
        Ok(Some(view))
    }

    /// The transfers debiting or crediting an account, newest first, `limit`
    /// at a time (at most `PAGE_SIZE_MAX`), older than the cursor `before`.
    pub async fn account_transfers(&self, account_id: i64, before: Option<i64>, limit: i64) -> Result<TransferPage, LedgerError> {
        let limit = limit.clamp(1, PAGE_SIZE_MAX);
        let before = before.unwrap_or(i64::MAX);
        // Two index range scans (debit side, credit side) merged, rather than an OR that cannot use either index well.
        let sql = format!(
            "(SELECT {TRANSFER_COLUMNS} FROM transfers WHERE debit_account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3)
             UNION ALL
             (SELECT {TRANSFER_COLUMNS} FROM transfers WHERE credit_account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3)
             ORDER BY seq DESC LIMIT $3"
        );
        let rows: Vec<TransferRow> = sqlx::query_as(&sql).bind(account_id).bind(before).bind(limit + 1).fetch_all(&self.pool).await?;
        let mut transfers = rows.into_iter().map(transfer_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_before = if transfers.len() as i64 > limit {
            transfers.truncate(limit as usize);
            transfers.last().map(|t| t.seq)
        } else {
            None
        };
        Ok(TransferPage { transfers, next_before })
    }

    /// The recorded id conflicts, newest first, `limit` at a time (at most
    /// `PAGE_SIZE_MAX`), older than the cursor `before`.
    pub async fn transfer_conflicts(&self, before: Option<i64>, limit: i64) -> Result<ConflictPage, LedgerError> {
        let limit = limit.clamp(1, PAGE_SIZE_MAX);
        let before = before.unwrap_or(i64::MAX);
        // The transfer's columns through a lateral subquery: both tables have a `fingerprint`.
        let sql = format!(
            "SELECT c.conflict_id, c.fingerprint AS refused_fingerprint, c.at AS refused_at, t.*
               FROM transfer_conflicts c
               CROSS JOIN LATERAL (SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = c.transfer_id) t
              WHERE c.conflict_id < $1
              ORDER BY c.conflict_id DESC
              LIMIT $2"
        );
        let rows: Vec<ConflictRow> = sqlx::query_as(&sql).bind(before).bind(limit + 1).fetch_all(&self.pool).await?;
        let mut conflicts = rows
            .into_iter()
            .map(|row| {
                Ok(ConflictView {
                    conflict_id: row.conflict_id,
                    fingerprint: row.refused_fingerprint,
                    at: row.refused_at,
                    transfer: transfer_from_row(row.transfer)?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let next_before = if conflicts.len() as i64 > limit {
            conflicts.truncate(limit as usize);
            conflicts.last().map(|c| c.conflict_id)
        } else {
            None
        };
        Ok(ConflictPage { conflicts, next_before })
    }
}

/// Puts back the history rows that retention detached (`retention.rs`). The
/// commit writes exactly two versions, both facts of the `transfers` row:
/// version 1 `initiated` at `created_at`, and the final status with its
/// reason at `committed_at`. Anything else is left as stored.
fn rebuild_retired_history(view: &mut TransferView) {
    let has = |history: &[HistoryEntry], version: i32| history.iter().any(|h| h.version == version);
    if view.version != 2 {
        return;
    }
    if !has(&view.history, 1) {
        view.history.insert(0, HistoryEntry { version: 1, status: Status::Initiated, reason: None, at: view.created_at });
    }
    if let Some(committed_at) = view.committed_at
        && !has(&view.history, 2)
    {
        view.history.push(HistoryEntry { version: 2, status: view.status, reason: view.reason.clone(), at: committed_at });
    }
}
