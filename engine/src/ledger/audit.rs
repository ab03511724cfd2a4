//! The ledger's invariants, each checked by one query over the whole ledger.
//! Used by the tests after every scenario and by `transfer-engine audit`.

use super::{Ledger, LedgerError};

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
    pub checks: Vec<Check>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.violations.is_empty())
    }
}

const VIOLATIONS_SHOWN_MAX: i64 = 20;

/// (name, query returning one text column per violation).
const CHECKS: &[(&str, &str)] = &[
    (
        "entries_of_each_transfer_sum_to_zero",
        "SELECT transfer_id::text FROM ledger_entries GROUP BY transfer_id HAVING sum(amount_minor) <> 0 OR count(*) <> 2",
    ),
    (
        "completed_transfers_and_only_they_have_entries",
        "SELECT t.transfer_id::text || ' ' || t.status FROM transfers t
          WHERE (t.status = 'completed') <> EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = t.transfer_id)",
    ),
    (
        "each_balance_equals_the_sum_of_its_entries",
        "SELECT a.account_id::text || ' balance ' || a.balance_minor || ' entries ' || coalesce(e.total, 0) FROM accounts a
           LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM ledger_entries GROUP BY account_id) e USING (account_id)
          WHERE a.balance_minor <> coalesce(e.total, 0)",
    ),
    (
        "balances_of_each_currency_sum_to_zero",
        "SELECT currency || ' ' || sum(balance_minor) FROM accounts GROUP BY currency HAVING sum(balance_minor) <> 0",
    ),
    ("no_balance_under_its_floor", "SELECT account_id::text FROM accounts WHERE balance_minor < floor_minor"),
    (
        "status_versions_rise_by_one_from_initiated",
        "SELECT t.transfer_id::text FROM transfers t
           JOIN (SELECT transfer_id, count(*) AS n, max(version) AS top, min(version) AS bottom FROM transfer_status_history GROUP BY transfer_id) h
             USING (transfer_id)
          WHERE h.n <> h.top OR h.bottom <> 1 OR h.top <> t.status_version
             OR NOT EXISTS (SELECT 1 FROM transfer_status_history x WHERE x.transfer_id = t.transfer_id AND x.version = 1 AND x.status = 'initiated')
             OR NOT EXISTS (SELECT 1 FROM transfer_status_history x WHERE x.transfer_id = t.transfer_id AND x.version = t.status_version AND x.status = t.status)",
    ),
    (
        "every_transfer_has_a_status_history",
        "SELECT t.transfer_id::text FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM transfer_status_history h WHERE h.transfer_id = t.transfer_id)",
    ),
    ("every_recorded_transfer_is_final", "SELECT transfer_id::text FROM transfers WHERE status = 'initiated'"),
];

impl Ledger {
    /// Runs every invariant check. Read-only; safe on a live ledger (each
    /// query sees its own snapshot, so run it on a quiet ledger for a strict verdict).
    pub async fn audit(&self) -> Result<AuditReport, LedgerError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for all checks, so a commit in between cannot fake a violation.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let (transfers,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers").fetch_one(&mut *tx).await?;
        let (accounts,): (i64,) = sqlx::query_as("SELECT count(*) FROM accounts").fetch_one(&mut *tx).await?;
        let mut checks = Vec::with_capacity(CHECKS.len());
        for (name, sql) in CHECKS {
            let rows: Vec<(Option<String>,)> = sqlx::query_as(&format!("{sql} LIMIT {VIOLATIONS_SHOWN_MAX}")).fetch_all(&mut *tx).await?;
            let violations = rows.into_iter().map(|(v,)| v.unwrap_or_default()).collect();
            checks.push(Check { name, violations });
        }
        tx.commit().await?;
        Ok(AuditReport { transfers, accounts, checks })
    }
}
