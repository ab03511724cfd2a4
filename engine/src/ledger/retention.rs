//! Retention of the status history: `transfer_status_history` is partitioned
//! by month of `at` (migration `20261202000001`). This module makes the months
//! ahead of time, lists them, and detaches and drops the months past
//! retention. The ledger proper (`transfers`, `ledger_entries`) is the record
//! of account and is never removed here.
//!
//! A detached month's rows are not lost to readers: `Ledger::transfer`
//! rebuilds them from the `transfers` row, which holds the same facts.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use super::{Ledger, LedgerError};

/// Months made ahead of the current one, so that the default partition (which
/// any new month would have to be carved out of) stays empty in practice.
pub const HISTORY_MONTHS_AHEAD: u32 = 3;

/// A month is detached only once it ended at least this long ago: recent
/// history is what clients read, and what the audit checks row by row.
pub const HISTORY_RETENTION_DAYS_MIN: i64 = 31;

/// How long a detach waits for its lock. Detaching takes an exclusive lock
/// on the history table (PostgreSQL cannot detach concurrently while a
/// default partition exists); commits queue behind it, so it gives up early
/// and is retried rather than stall them.
const DETACH_LOCK_TIMEOUT_MS: u32 = 2_000;

/// Serialises partition maintenance between engines (any constant, shared by them all).
const MAINTENANCE_LOCK_KEY: i64 = 0x7472_616e_7366_6572; // "transfer"

/// A month (or the legacy range) of the status history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryPartition {
    pub name: String,
    /// `None`: unbounded below (the rows stored before partitioning).
    pub from_at: Option<DateTime<Utc>>,
    pub to_at: DateTime<Utc>,
    pub detached_at: Option<DateTime<Utc>>,
    pub dropped_at: Option<DateTime<Utc>>,
    /// PostgreSQL's estimate (`reltuples`, -1 before the first analyze), while the table exists.
    pub rows_estimate: Option<i64>,
    /// With indexes and TOAST, while the table exists.
    pub bytes: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("the cut-off {before} is less than {HISTORY_RETENTION_DAYS_MIN} days ago; only history older than that can be detached")]
    TooRecent { before: DateTime<Utc> },
    #[error("{0} is not a detached history partition (detach it first: transfer-engine history detach --before ...)")]
    NotDetached(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<sqlx::Error> for RetentionError {
    fn from(e: sqlx::Error) -> Self {
        Self::Ledger(e.into())
    }
}

/// The first instant of the month `months` after the one holding `at`, in UTC.
fn month_start(at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).expect("the first of a month exists");
    let first = first.checked_add_months(Months::new(months)).expect("a month within chrono's range");
    first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

fn month_name(start: DateTime<Utc>) -> String {
    format!("transfer_status_history_{:04}_{:02}", start.year(), start.month())
}

/// A timestamp as a SQL literal, for DDL (which takes no parameters). Only
/// ever given instants this module computed, never input.
fn literal(at: DateTime<Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S+00"))
}

type PartitionRow = (String, Option<DateTime<Utc>>, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<i64>, Option<i64>);

impl Ledger {
    /// Makes the history partitions for the month holding `now` and the
    /// `months_ahead` after it, where none covers them yet; returns the names
    /// made. Rows already in the default partition for a new month move into
    /// it. Safe to run from several engines at once, and often.
    pub async fn prepare_history_partitions(&self, now: DateTime<Utc>, months_ahead: u32) -> Result<Vec<String>, LedgerError> {
        let mut made = Vec::new();
        for i in 0..=months_ahead {
            let (from_at, to_at) = (month_start(now, i), month_start(now, i + 1));
            let name = month_name(from_at);
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MAINTENANCE_LOCK_KEY).execute(&mut *tx).await?;
            let covered: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM transfer_status_history_partitions
                                 WHERE (from_at IS NULL OR from_at < $2) AND to_at > $1)",
            )
            .bind(from_at)
            .bind(to_at)
            .fetch_one(&mut *tx)
            .await?;
            if covered {
                continue;
            }
            sqlx::query(&format!("CREATE TABLE {name} (LIKE transfer_status_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
                .execute(&mut *tx)
                .await?;
            // The default partition must not hold rows of the new range when it
            // is attached; moving them is the trigger's one sanctioned delete.
            sqlx::query("SELECT set_config('transfer_engine.moving_history', 'on', true)").execute(&mut *tx).await?;
            sqlx::query(&format!(
                "WITH moved AS (DELETE FROM transfer_status_history_default WHERE at >= $1 AND at < $2 RETURNING *)
                 INSERT INTO {name} SELECT * FROM moved"
            ))
            .bind(from_at)
            .bind(to_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT set_config('transfer_engine.moving_history', 'off', true)").execute(&mut *tx).await?;
            sqlx::query(&format!(
                "ALTER TABLE transfer_status_history ATTACH PARTITION {name} FOR VALUES FROM ({}) TO ({})",
                literal(from_at),
                literal(to_at)
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO transfer_status_history_partitions (name, from_at, to_at) VALUES ($1, $2, $3)")
                .bind(&name)
                .bind(from_at)
                .bind(to_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            made.push(name);
        }
        Ok(made)
    }

    /// Every history partition the engine made, oldest first.
    pub async fn history_partitions(&self) -> Result<Vec<HistoryPartition>, LedgerError> {
        let rows: Vec<PartitionRow> = sqlx::query_as(
            "SELECT p.name, p.from_at, p.to_at, p.detached_at, p.dropped_at, c.reltuples::bigint, pg_total_relation_size(c.oid)
               FROM transfer_status_history_partitions p
               LEFT JOIN pg_class c ON c.oid = to_regclass(p.name)
              ORDER BY p.to_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, from_at, to_at, detached_at, dropped_at, rows_estimate, bytes)| HistoryPartition {
                name,
                from_at,
                to_at,
                detached_at,
                dropped_at,
                rows_estimate,
                bytes,
            })
            .collect())
    }

    /// Rows in the default partition: dates no month covers (a clock far off).
    /// Non-zero is worth a look; `prepare_history_partitions` moves them once
    /// their month is made.
    pub async fn history_rows_unpartitioned(&self) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM transfer_status_history_default").fetch_one(&self.pool).await?)
    }

    /// Detaches, oldest first, every attached history partition whose range
    /// ends on or before `before`, which must be at least
    /// `HISTORY_RETENTION_DAYS_MIN` days before `now`. A detached partition is
    /// a plain table, to archive (`pg_dump -t NAME`) and then drop.
    pub async fn detach_history(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<HistoryPartition>, RetentionError> {
        if before > now - TimeDelta::days(HISTORY_RETENTION_DAYS_MIN) {
            return Err(RetentionError::TooRecent { before });
        }
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM transfer_status_history_partitions WHERE detached_at IS NULL AND to_at <= $1 ORDER BY to_at",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        for name in &due {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MAINTENANCE_LOCK_KEY).execute(&mut *tx).await?;
            sqlx::query(&format!("SET LOCAL lock_timeout = {DETACH_LOCK_TIMEOUT_MS}")).execute(&mut *tx).await?;
            sqlx::query(&format!("ALTER TABLE transfer_status_history DETACH PARTITION {name}")).execute(&mut *tx).await?;
            sqlx::query("UPDATE transfer_status_history_partitions SET detached_at = now() WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        let all = self.history_partitions().await?;
        Ok(all.into_iter().filter(|p| due.contains(&p.name)).collect())
    }

    /// Drops the table of a detached history partition (archive it first).
    pub async fn drop_detached_history(&self, name: &str) -> Result<(), RetentionError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MAINTENANCE_LOCK_KEY).execute(&mut *tx).await?;
        // The name comes from the registry, never from the caller, into the DDL.
        let known: Option<String> = sqlx::query_scalar(
            "SELECT name FROM transfer_status_history_partitions WHERE name = $1 AND detached_at IS NOT NULL AND dropped_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(known) = known else {
            return Err(RetentionError::NotDetached(name.to_owned()));
        };
        sqlx::query(&format!("DROP TABLE IF EXISTS {known}")).execute(&mut *tx).await?;
        sqlx::query("UPDATE transfer_status_history_partitions SET dropped_at = now() WHERE name = $1")
            .bind(&known)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn months_start_at_midnight_utc_on_the_first_and_roll_over_the_year() {
        let now = at("2026-11-30T23:59:59Z");
        assert_eq!(month_start(now, 0), at("2026-11-01T00:00:00Z"));
        assert_eq!(month_start(now, 2), at("2027-01-01T00:00:00Z"));
        assert_eq!(month_name(month_start(now, 2)), "transfer_status_history_2027_01");
        assert_eq!(literal(month_start(now, 1)), "'2026-12-01 00:00:00+00'");
    }
}
