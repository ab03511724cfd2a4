//! The event outbox in PostgreSQL: the rows commits write (`ledger::commit`),
//! claimed by a relay, turned into events, marked sent, deleted after retention.
//!
//! A claim holds its rows locked (`FOR UPDATE SKIP LOCKED`) in an open
//! transaction while their events are published, so relays on several
//! engines share the rows without publishing one twice; a relay that dies
//! mid-claim releases its rows with its connection, and another publishes
//! them again, with the same event ids.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::{PgPool, Postgres, Transaction};

use super::{Event, SCHEMA_VERSION, event_id, event_type};
use crate::domain::{Status, TransferKind};
use crate::ledger::LedgerError;

/// Outbox rows locked by one relay, in the open transaction that holds them.
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    rows: Vec<OutboxRow>,
}

/// (outbox_id, transfer_ids, from_version, to_version, written_at)
type OutboxRow = (i64, Vec<uuid::Uuid>, i32, i32, DateTime<Utc>);

/// (transfer_id, kind, sender_id, receiver_id, amount_minor, currency, original_amount_minor,
///  original_currency, status, status_version, reason_code, reason_message, metadata, created_at, committed_at)
type TransferRow = (
    uuid::Uuid,
    String,
    i64,
    i64,
    Option<i64>,
    String,
    Option<i64>,
    Option<String>,
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// (transfer_id, version, status, reason_code, reason_message, at)
type HistoryRow = (uuid::Uuid, i32, String, Option<String>, Option<String>, DateTime<Utc>);

/// Claims up to `rows_max` unsent rows, oldest first, that no other relay
/// holds; `None` when there is none to claim.
pub async fn claim(pool: &PgPool, rows_max: i64) -> Result<Option<Claim>, LedgerError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT outbox_id, transfer_ids, from_version, to_version, written_at
           FROM event_outbox WHERE sent_at IS NULL
          ORDER BY outbox_id LIMIT $1
            FOR UPDATE SKIP LOCKED",
    )
    .bind(rows_max)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(None);
    }
    Ok(Some(Claim { tx, rows }))
}

impl Claim {
    /// Marks the claimed rows sent, in the claim's transaction, and ends it.
    pub async fn mark_sent(mut self) -> Result<(), LedgerError> {
        let outbox_ids: Vec<i64> = self.rows.iter().map(|r| r.0).collect();
        sqlx::query("UPDATE event_outbox SET sent_at = now() WHERE outbox_id = ANY($1)").bind(&outbox_ids).execute(&mut *self.tx).await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Ends the claim without marking its rows, releasing their locks at once
    /// so that this or another relay can claim them again.
    pub async fn release(self) {
        if let Err(e) = self.tx.rollback().await {
            // The connection is broken: PostgreSQL ends its session and with it the locks.
            tracing::debug!(error = %e, "Could not roll back an outbox claim.");
        }
    }

    /// The claimed rows: their count, and the transaction that holds them.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    pub fn transaction(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// The claimed rows' events, in the order to publish them, each with when
    /// its commit wrote it: read back from the transfers the rows name.
    pub async fn read_events(&mut self) -> Result<Vec<(Event, DateTime<Utc>)>, LedgerError> {
        let (tx, rows) = (&mut self.tx, &self.rows);
        let ids: Vec<uuid::Uuid> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
        let transfers: Vec<TransferRow> = sqlx::query_as(
            "SELECT transfer_id, kind, sender_id, receiver_id, amount_minor, currency, original_amount_minor,
                original_currency, status, status_version, reason_code, reason_message, metadata::text, created_at, committed_at
           FROM transfers WHERE transfer_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        let transfers: HashMap<uuid::Uuid, TransferRow> = transfers.into_iter().map(|t| (t.0, t)).collect();
        // A transfer's first and latest versions are on its row; any other
        // version (none today: a transfer is decided in the commit that
        // records it) is read from the history.
        let between: Vec<uuid::Uuid> = rows
            .iter()
            .flat_map(|r| r.1.iter().map(move |id| (id, r.2, r.3)))
            .filter(|(id, from, to)| transfers.get(id).is_some_and(|t| (*from..=*to).any(|v| v != 1 && v != t.9)))
            .map(|(id, _, _)| *id)
            .collect();
        let history: HashMap<(uuid::Uuid, i32), HistoryRow> = if between.is_empty() {
            HashMap::new()
        } else {
            let rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT transfer_id, version, status, reason_code, reason_message, at FROM transfer_status_history WHERE transfer_id = ANY($1)",
        )
        .bind(&between)
        .fetch_all(&mut **tx)
        .await?;
            rows.into_iter().map(|h| ((h.0, h.1), h)).collect()
        };
        let mut events = Vec::with_capacity(ids.len() * 2);
        for (_, transfer_ids, from_version, to_version, written_at) in rows {
            for id in transfer_ids {
                let Some(transfer) = transfers.get(id) else {
                    // The commit that wrote the row inserted the transfer; only a
                    // hand-made row names one that is not there. Its other events go out.
                    tracing::error!(transfer_id = %id, "An event outbox row names a transfer the ledger does not hold; its events are skipped.");
                    continue;
                };
                for version in *from_version..=*to_version {
                    match build(transfer, version, &history) {
                        Ok(event) => events.push((event, *written_at)),
                        Err(e) => tracing::error!(transfer_id = %id, version, error = %e, "An event could not be built; it is skipped."),
                    }
                }
            }
        }
        Ok(events)
    }
}

fn build(t: &TransferRow, version: i32, history: &HashMap<(uuid::Uuid, i32), HistoryRow>) -> Result<Event, LedgerError> {
    let corrupt = |what: &str| LedgerError::Corrupt(format!("transfer {} {what}", t.0));
    let kind = TransferKind::parse(&t.1).ok_or_else(|| corrupt("has an unknown kind"))?;
    let (status, reason_code, reason_message, occurred_at) = if version == 1 {
        (Status::Initiated, None, None, t.13)
    } else if version == t.9 {
        let status = Status::parse(&t.8).ok_or_else(|| corrupt("has an unknown status"))?;
        (status, t.10.clone(), t.11.clone(), t.14.unwrap_or(t.13))
    } else {
        let h = history.get(&(t.0, version)).ok_or_else(|| corrupt(&format!("has no version {version}")))?;
        let status = Status::parse(&h.2).ok_or_else(|| corrupt("has an unknown status in its history"))?;
        (status, h.3.clone(), h.4.clone(), h.5)
    };
    // `{}` when none was given, as the API's views show it: consumers read one shape.
    let metadata =
        RawValue::from_string(t.12.clone().unwrap_or_else(|| "{}".to_owned())).map_err(|_| corrupt("has metadata that is not JSON"))?;
    Ok(Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(t.0, version),
        event_type: event_type(kind, status).to_owned(),
        transfer_id: t.0,
        version,
        status: status.as_str().to_owned(),
        sender_id: t.2,
        receiver_id: t.3,
        amount_minor: t.4,
        currency: t.5.clone(),
        original_amount_minor: t.6,
        original_currency: t.7.clone(),
        reason_code,
        reason_message,
        metadata,
        occurred_at,
    })
}

/// Rows whose events wait to be published (an unsent row holds a commit's events).
pub async fn unsent_rows(pool: &PgPool) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE sent_at IS NULL").fetch_one(pool).await?)
}

/// Deletes up to `rows_max` rows sent before `before`; returns how many it deleted.
pub async fn delete_sent(pool: &PgPool, before: DateTime<Utc>, rows_max: i64) -> Result<u64, LedgerError> {
    let deleted = sqlx::query(
        "DELETE FROM event_outbox WHERE outbox_id IN
           (SELECT outbox_id FROM event_outbox WHERE sent_at < $1 ORDER BY sent_at LIMIT $2)",
    )
    .bind(before)
    .bind(rows_max)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
