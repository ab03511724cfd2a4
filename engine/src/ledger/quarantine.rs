//! The quarantine: records the processor could neither apply nor dead-letter,
//! kept with their raw bytes and source position for an operator to replay.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Ledger, LedgerError};

/// A Kafka record as it was read, and why it is kept aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRecord {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
    pub reason: String,
}

/// A quarantined record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub quarantine_id: i64,
    pub record: KeptRecord,
    pub quarantined_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct StoredHeader {
    key: String,
    value_base64: Option<String>,
}

/// PostgreSQL text cannot hold NUL; a reason or header name must never be what fails to store.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

const QUARANTINED_SELECT: &str = "SELECT quarantine_id, source_topic, source_partition, source_offset, record_key, headers, payload,
        reason, quarantined_at, replayed_at
   FROM quarantined_records";

type QuarantinedRow =
    (i64, String, i32, i64, Option<Vec<u8>>, serde_json::Value, Option<Vec<u8>>, String, DateTime<Utc>, Option<DateTime<Utc>>);

impl Ledger {
    /// Keeps a record in the quarantine. A record already kept (same source
    /// position, e.g. redelivered after a crash) is kept once.
    pub async fn quarantine(&self, record: &KeptRecord) -> Result<(), LedgerError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let headers: Vec<StoredHeader> = record
            .headers
            .iter()
            .map(|(key, value)| StoredHeader { key: storable(key), value_base64: value.as_ref().map(|v| engine.encode(v)) })
            .collect();
        sqlx::query(
            "INSERT INTO quarantined_records (source_topic, source_partition, source_offset, record_key, headers, payload, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING",
        )
        .bind(storable(&record.source_topic))
        .bind(record.source_partition)
        .bind(record.source_offset)
        .bind(&record.key)
        .bind(serde_json::to_value(&headers).map_err(|e| LedgerError::Corrupt(e.to_string()))?)
        .bind(&record.payload)
        .bind(storable(&record.reason))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One quarantined record, replayed or not.
    pub async fn quarantined_record(&self, quarantine_id: i64) -> Result<Option<Quarantined>, LedgerError> {
        let row: Option<QuarantinedRow> = sqlx::query_as(&format!("{QUARANTINED_SELECT} WHERE quarantine_id = $1"))
            .bind(quarantine_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(quarantined_from_row).transpose()
    }

    /// Quarantined records, oldest first, at most `limit`; replayed ones only if asked.
    pub async fn quarantined(&self, include_replayed: bool, limit: i64) -> Result<Vec<Quarantined>, LedgerError> {
        let rows: Vec<QuarantinedRow> =
            sqlx::query_as(&format!("{QUARANTINED_SELECT} WHERE $1 OR replayed_at IS NULL ORDER BY quarantine_id LIMIT $2"))
                .bind(include_replayed)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(quarantined_from_row).collect()
    }

    /// Records not replayed yet with ids in `(after, up_to]`, oldest first, at
    /// most `limit`: one page of a walk over the quarantine that ends at the
    /// id it started from. (A replayed record that fails again is
    /// quarantined again under a new id, past `up_to`: the walk never
    /// replays it twice.)
    pub async fn unreplayed_quarantined(&self, after: i64, up_to: i64, limit: i64) -> Result<Vec<Quarantined>, LedgerError> {
        let rows: Vec<QuarantinedRow> = sqlx::query_as(&format!(
            "{QUARANTINED_SELECT} WHERE replayed_at IS NULL AND quarantine_id > $1 AND quarantine_id <= $2
              ORDER BY quarantine_id LIMIT $3"
        ))
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(quarantined_from_row).collect()
    }

    /// The highest quarantine id so far (0 when the quarantine is empty).
    pub async fn last_quarantine_id(&self) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar("SELECT coalesce(max(quarantine_id), 0) FROM quarantined_records").fetch_one(&self.pool).await?)
    }

    /// Marks a quarantined record as replayed; false if there is no such record.
    pub async fn mark_replayed(&self, quarantine_id: i64) -> Result<bool, LedgerError> {
        let done = sqlx::query("UPDATE quarantined_records SET replayed_at = now() WHERE quarantine_id = $1")
            .bind(quarantine_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn quarantined_from_row(row: QuarantinedRow) -> Result<Quarantined, LedgerError> {
    let (quarantine_id, source_topic, source_partition, source_offset, key, headers, payload, reason, quarantined_at, replayed_at) = row;
    let stored: Vec<StoredHeader> =
        serde_json::from_value(headers).map_err(|e| LedgerError::Corrupt(format!("quarantine headers: {e}")))?;
    let engine = base64::engine::general_purpose::STANDARD;
    let headers = stored
        .into_iter()
        .map(|h| {
            let value = h.value_base64.map(|v| engine.decode(v)).transpose();
            value.map(|v| (h.key, v)).map_err(|e| LedgerError::Corrupt(format!("quarantine header value: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Quarantined {
        quarantine_id,
        record: KeptRecord { source_topic, source_partition, source_offset, key, headers, payload, reason },
        quarantined_at,
        replayed_at,
    })
}
