//! The ledger's invariants, checked by queries over bounded chunks of the
//! ledger. Used by the tests after every scenario and by `transfer-engine audit`.

use std::collections::HashMap;

use super::{Ledger, LedgerError};
use crate::cache::{self, Cache, CacheError, CachedKind};
use crate::domain::TransferId;

/// One invariant and the rows that break it (empty when it holds).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    /// Up to `VIOLATIONS_SHOWN_MAX` offending rows, rendered as text.
    pub violations: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditReport {
    pub transfers: i64,
    pub accounts: i64,
    /// How many acknowledged ids were checked, when a list was given.
    pub acknowledged: Option<i64>,
    pub checks: Vec<Check>,
    /// Checks that could not run (Redis away), with why.
    pub skipped: Vec<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.violations.is_empty())
    }
}

const VIOLATIONS_SHOWN_MAX: i64 = 20;

/// Transfers (and accounts) per chunk: each chunk is checked in its own
/// short read-only snapshot, so the audit never holds one snapshot over
/// whole tables (which would stop vacuum on the hottest table for its whole
/// duration, and grows with the ledger).
const AUDIT_ROWS_PER_CHUNK: i64 = 10_000;

/// Transfers `t` whose history rows are all still in the table: both rows'
/// times (`created_at` for version 1, `committed_at` for the final one) are
/// at or after the end of the newest month that retention detached.
/// Detached months are always the oldest ones (`Ledger::detach_history`), so
/// no retained row lies before that end.
macro_rules! retained {
    () => {
        "least(t.created_at, coalesce(t.committed_at, t.created_at)) >= (SELECT coalesce(max(to_at), '-infinity')
            FROM transfer_status_history_partitions WHERE detached_at IS NOT NULL)"
    };
}

/// Invariants of single transfers, checked per chunk of transfer ids: `$1`
/// and `$2` bound the chunk (`transfer_id > $1 AND transfer_id <= $2`). A
/// transfer, its entries and its history are written in one transaction, so
/// each chunk's snapshot sees every transfer whole or not at all.
const TRANSFER_CHECKS: &[(&str, &str)] = &[
    (
        "entries_of_each_transfer_sum_to_zero",
        "SELECT transfer_id::text FROM ledger_entries WHERE transfer_id > $1 AND transfer_id <= $2
          GROUP BY transfer_id HAVING sum(amount_minor) <> 0 OR count(*) <> 2",
    ),
    (
        "completed_transfers_and_only_they_have_entries",
        "SELECT t.transfer_id::text || ' ' || t.status FROM transfers t
          WHERE t.transfer_id > $1 AND t.transfer_id <= $2
            AND (t.status = 'completed') <> EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = t.transfer_id)",
    ),
    (
        "status_versions_rise_by_one_from_initiated",
        concat!(
            "SELECT t.transfer_id::text FROM transfers t
           JOIN (SELECT transfer_id, count(*) AS n, max(version) AS top, min(version) AS bottom FROM transfer_status_history
                  WHERE transfer_id > $1 AND transfer_id <= $2 GROUP BY transfer_id) h
             USING (transfer_id)
          WHERE ",
            retained!(),
            " AND (h.n <> h.top OR h.bottom <> 1 OR h.top <> t.status_version
             OR NOT EXISTS (SELECT 1 FROM transfer_status_history x WHERE x.transfer_id = t.transfer_id AND x.version = 1 AND x.status = 'initiated')
             OR NOT EXISTS (SELECT 1 FROM transfer_status_history x WHERE x.transfer_id = t.transfer_id AND x.version = t.status_version AND x.status = t.status))"
        ),
    ),
    (
        "every_transfer_has_a_status_history",
        concat!(
            "SELECT t.transfer_id::text FROM transfers t WHERE t.transfer_id > $1 AND t.transfer_id <= $2 AND ",
            retained!(),
            " AND NOT EXISTS (SELECT 1 FROM transfer_status_history h WHERE h.transfer_id = t.transfer_id)"
        ),
    ),
    (
        "every_recorded_transfer_is_final",
        "SELECT transfer_id::text FROM transfers WHERE transfer_id > $1 AND transfer_id <= $2 AND status = 'initiated'",
    ),
];

/// Invariants of single accounts, per chunk of account ids (`$1`, `$2` as
/// above). A balance and the entries that move it are written in one
/// transaction, so a chunk's snapshot sees them agree.
const ACCOUNT_CHECKS: &[(&str, &str)] = &[
    (
        "each_balance_equals_the_sum_of_its_entries",
        "SELECT a.account_id::text || ' balance ' || a.balance_minor || ' entries ' || coalesce(e.total, 0) FROM accounts a
           LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM ledger_entries
                       WHERE account_id > $1 AND account_id <= $2 GROUP BY account_id) e USING (account_id)
          WHERE a.account_id > $1 AND a.account_id <= $2 AND a.balance_minor <> coalesce(e.total, 0)",
    ),
    (
        "no_balance_under_its_floor",
        "SELECT account_id::text FROM accounts WHERE account_id > $1 AND account_id <= $2 AND balance_minor < floor_minor",
    ),
];

/// Conservation needs every account of a currency at one instant: one
/// statement (its own snapshot) over `accounts`, which holds one row per
/// (owner, currency) and stays far smaller than the transfers.
const CURRENCY_CHECK: (&str, &str) = (
    "balances_of_each_currency_sum_to_zero",
    "SELECT currency || ' ' || sum(balance_minor) FROM accounts GROUP BY currency HAVING sum(balance_minor) <> 0",
);

/// A chunk's upper bound: the key `AUDIT_ROWS_PER_CHUNK` rows after `after`,
/// or None when fewer rows remain (the last chunk is open-ended).
const TRANSFER_CHUNK_END: &str = "SELECT transfer_id FROM transfers WHERE transfer_id > $1 ORDER BY transfer_id OFFSET $2 LIMIT 1";
const ACCOUNT_CHUNK_END: &str = "SELECT account_id FROM accounts WHERE account_id > $1 ORDER BY account_id OFFSET $2 LIMIT 1";

/// The violations found so far, one entry per check (listed also when it
/// finds nothing), capped at `VIOLATIONS_SHOWN_MAX` each.
struct Findings(Vec<Check>);

impl Findings {
    fn add(&mut self, name: &'static str, rows: Vec<(Option<String>,)>) {
        let check = self.0.iter_mut().find(|c| c.name == name).expect("every check is listed up front");
        for (v,) in rows {
            if check.violations.len() < VIOLATIONS_SHOWN_MAX as usize {
                check.violations.push(v.unwrap_or_default());
            }
        }
    }
}

impl Ledger {
    /// Runs every invariant check, in chunks of `AUDIT_ROWS_PER_CHUNK`
    /// transfers or accounts, each chunk in its own read-only snapshot. Safe
    /// on a live ledger: every check is one that a single snapshot of its
    /// chunk can decide, so a commit between chunks cannot fake a violation
    /// (transfers committed meanwhile are checked if their chunk comes later).
    pub async fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.audit_in_chunks(AUDIT_ROWS_PER_CHUNK).await
    }

    /// `audit` with another chunk size (tests use tiny ones to cross many chunk boundaries).
    pub async fn audit_in_chunks(&self, rows_per_chunk: i64) -> Result<AuditReport, LedgerError> {
        assert!(rows_per_chunk >= 1, "a chunk holds at least one row");
        let every = TRANSFER_CHECKS.iter().chain(ACCOUNT_CHECKS).chain([&CURRENCY_CHECK]);
        let mut findings = Findings(every.map(|(name, _)| Check { name, violations: Vec::new() }).collect());
        let (transfers,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers").fetch_one(&self.pool).await?;
        let (accounts,): (i64,) = sqlx::query_as("SELECT count(*) FROM accounts").fetch_one(&self.pool).await?;

        let (nil, max) = (uuid::Uuid::nil(), uuid::Uuid::max());
        self.check_in_chunks(TRANSFER_CHUNK_END, TRANSFER_CHECKS, (nil, max), rows_per_chunk, &mut findings).await?;
        self.check_in_chunks(ACCOUNT_CHUNK_END, ACCOUNT_CHECKS, (i64::MIN, i64::MAX), rows_per_chunk, &mut findings).await?;

        let (name, sql) = CURRENCY_CHECK;
        let rows = sqlx::query_as(&format!("{sql} LIMIT {VIOLATIONS_SHOWN_MAX}")).fetch_all(&self.pool).await?;
        findings.add(name, rows);
        Ok(AuditReport { transfers, accounts, acknowledged: None, checks: findings.0, skipped: Vec::new() })
    }

    /// Runs `checks` over a table's keys from `keys.0` (exclusive) to `keys.1`
    /// (inclusive, the highest key there can be), chunk by chunk.
    async fn check_in_chunks<K>(
        &self,
        chunk_end: &str,
        checks: &[(&'static str, &str)],
        keys: (K, K),
        rows_per_chunk: i64,
        findings: &mut Findings,
    ) -> Result<(), LedgerError>
    where
        K: for<'q> sqlx::Encode<'q, sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + Copy
            + PartialEq
            + Send
            + Sync
            + Unpin,
    {
        let (mut after, last) = keys;
        loop {
            let end: Option<(K,)> = sqlx::query_as(chunk_end).bind(after).bind(rows_per_chunk - 1).fetch_optional(&self.pool).await?;
            // No key after this chunk's `rows_per_chunk`: the last chunk runs to the end.
            let until = end.map_or(last, |(key,)| key);
            self.check_chunk(checks, after, until, findings).await?;
            if until == last {
                return Ok(());
            }
            after = until;
        }
    }

    /// Runs `checks` over one chunk in one short read-only snapshot.
    async fn check_chunk<K>(&self, checks: &[(&'static str, &str)], after: K, until: K, findings: &mut Findings) -> Result<(), LedgerError>
    where
        K: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Copy + Send + Sync,
    {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        for (name, sql) in checks {
            let rows = sqlx::query_as(&format!("{sql} LIMIT {VIOLATIONS_SHOWN_MAX}")).bind(after).bind(until).fetch_all(&mut *tx).await?;
            findings.add(name, rows);
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Ids looked up per query when comparing against a list.
const IDS_PER_QUERY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CacheAuditError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn capped(mut violations: Vec<String>) -> Vec<String> {
    violations.truncate(VIOLATIONS_SHOWN_MAX as usize);
    violations
}

impl Ledger {
    /// Every id a client was answered 202 for has exactly one final status:
    /// its row is final and its history holds exactly one final entry.
    pub async fn audit_acknowledged(&self, ids: &[TransferId]) -> Result<Check, LedgerError> {
        let mut violations = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let chunk: Vec<uuid::Uuid> = chunk.iter().map(|id| id.0).collect();
            let rows: Vec<(Option<String>,)> = sqlx::query_as(concat!(
                "SELECT a.id::text || ' ' || coalesce(t.status, 'missing') || ' finals ' || coalesce(h.finals, 0)
                   FROM UNNEST($1::uuid[]) AS a(id)
                   LEFT JOIN transfers t ON t.transfer_id = a.id
                   LEFT JOIN (SELECT transfer_id, count(*) AS finals FROM transfer_status_history
                               WHERE transfer_id = ANY($1) AND status <> 'initiated' GROUP BY transfer_id) h ON h.transfer_id = a.id
                  WHERE t.transfer_id IS NULL OR t.status = 'initiated' OR (",
                retained!(),
                " AND coalesce(h.finals, 0) <> 1)"
            ))
            .bind(&chunk)
            .fetch_all(&self.pool)
            .await?;
            violations.extend(rows.into_iter().map(|(v,)| v.unwrap_or_default()));
        }
        Ok(Check { name: "every_acknowledged_transfer_has_exactly_one_final_status", violations: capped(violations) })
    }

    /// Redis never runs ahead of PostgreSQL: no cached status has a higher
    /// version than the ledger's (version 1 without a row is a submission not
    /// yet committed), and no cached balance a higher version than its
    /// account, nor another balance at the same version.
    pub async fn audit_cache(&self, cache: &Cache) -> Result<Vec<Check>, CacheAuditError> {
        let statuses = cache.cached_versions(CachedKind::Transfer).await?;
        let mut ledger_versions: HashMap<uuid::Uuid, i32> = HashMap::with_capacity(statuses.len());
        let mut ids = Vec::with_capacity(statuses.len());
        let mut violations = Vec::new();
        for (suffix, version, _) in &statuses {
            match uuid::Uuid::parse_str(suffix) {
                Ok(id) => ids.push((id, *version)),
                Err(_) => violations.push(format!("unreadable key transfer:{suffix}")),
            }
        }
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let chunk: Vec<uuid::Uuid> = chunk.iter().map(|(id, _)| *id).collect();
            let rows: Vec<(uuid::Uuid, i32)> =
                sqlx::query_as("SELECT transfer_id, status_version FROM transfers WHERE transfer_id = ANY($1)")
                    .bind(&chunk)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(LedgerError::from)?;
            ledger_versions.extend(rows);
        }
        for (id, cached) in &ids {
            let stored = ledger_versions.get(id).copied().unwrap_or(0);
            if *cached > i64::from(stored.max(1)) {
                violations.push(format!("{id} cached version {cached} ledger version {stored}"));
            }
        }
        let status_check = Check { name: "redis_status_never_ahead_of_postgresql", violations: capped(violations) };

        let balances = cache.cached_versions(CachedKind::Balance).await?;
        let (account_ids, cached): (Vec<i64>, Vec<_>) = balances
            .iter()
            .filter_map(|(suffix, version, body)| cache::parse_balance(*version, body).map(|b| (b.account_id, (suffix, b))))
            .unzip();
        let mut accounts: HashMap<i64, (i64, i64)> = HashMap::with_capacity(account_ids.len());
        for chunk in account_ids.chunks(IDS_PER_QUERY) {
            let rows: Vec<(i64, i64, i64)> =
                sqlx::query_as("SELECT account_id, balance_minor, version FROM accounts WHERE account_id = ANY($1)")
                    .bind(chunk)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(LedgerError::from)?;
            accounts.extend(rows.into_iter().map(|(id, balance, version)| (id, (balance, version))));
        }
        let mut violations = Vec::new();
        for (suffix, b) in cached {
            match accounts.get(&b.account_id) {
                None => violations.push(format!("balance:{suffix} names unknown account {}", b.account_id)),
                Some(&(balance, version)) if b.version > version || (b.version == version && b.balance_minor != balance) => violations
                    .push(format!(
                        "balance:{suffix} cached {} at version {} ledger {balance} at version {version}",
                        b.balance_minor, b.version
                    )),
                Some(_) => {}
            }
        }
        let balance_check = Check { name: "redis_balances_never_ahead_of_postgresql", violations: capped(violations) };
        Ok(vec![status_check, balance_check])
    }
}
