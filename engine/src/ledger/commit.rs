//! `commit_batch`: the one place money moves.
//!
//! One transaction per batch: lock every account the batch touches in
//! ascending id order (so concurrent batches cannot deadlock), read which
//! transfer ids already exist, decide every transfer in order in Rust with
//! checked arithmetic (so two debits of one account in one batch see each
//! other), then write transfers, entries, history and balances with one
//! set-based statement each.

use std::collections::{HashMap, hash_map::Entry};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{instrument, warn};

use super::{AccountView, Ledger, LedgerError};
use crate::domain::{Amount, Currency, OwnerId, Reason, Rejection, Status, Submission, TransferId};
use crate::hooks::Decision;

/// How often a batch is retried after losing a race (a concurrent insert of
/// the same id, a deadlock the lock order should already prevent).
const COMMIT_ATTEMPTS_MAX: u32 = 8;
const COMMIT_RETRY_BACKOFF_MS: u64 = 5;

/// What the hooks decided before the ledger looks at balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Move this amount (in the submission's currency), if the accounts allow.
    Apply(Amount),
    /// A policy refused it (an engine rule or a plugin's rejection).
    Reject(Reason),
    /// Something failed while deciding (a plugin trapped, timed out...).
    Fail(Reason),
}

/// One transfer to commit, with what the hooks made of it.
#[derive(Clone, Debug)]
pub struct CommitItem {
    pub submission: Submission,
    pub verdict: Verdict,
    /// The description to store: the description hook's rewrite of the submitted one.
    pub description: Option<String>,
    /// The amount to record when the verdict is not `Apply` (the converted
    /// amount if conversion ran, else the submitted one, else unknown).
    pub amount: Option<Amount>,
    /// What each plugin decided, recorded with the transfer when it is new.
    pub decisions: Vec<Decision>,
}

impl CommitItem {
    /// The amount the ledger records: the one applied, else the one known.
    pub fn recorded_amount(&self) -> Option<Amount> {
        match self.verdict {
            Verdict::Apply(amount) => Some(amount),
            _ => self.amount,
        }
    }

    /// An item that moves the submitted amount as given, with no hooks (deposits, tests).
    pub fn apply_as_submitted(submission: Submission) -> Option<Self> {
        let amount = submission.amount()?;
        let description = submission.description.clone();
        Some(Self { submission, verdict: Verdict::Apply(amount), description, amount: Some(amount), decisions: Vec::new() })
    }
}

/// How this call related to what the ledger already held for the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// First time: this call recorded the outcome.
    New,
    /// Seen before with the same meaning: the stored outcome, nothing changed.
    Duplicate,
    /// Seen before with a different meaning: never applied, the conflict recorded.
    Conflict,
}

/// The outcome of one item. For duplicates and conflicts it is the outcome
/// stored for the id the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub transfer_id: TransferId,
    pub status: Status,
    pub version: i32,
    pub reason: Option<Reason>,
    pub disposition: Disposition,
    pub committed_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
pub struct BatchResult {
    /// One per input item, in input order.
    pub outcomes: Vec<Committed>,
    /// One per account whose balance changed, as it is after the batch.
    pub balances: Vec<AccountView>,
}

/// An account as locked for this batch, with its running balance.
struct LockedAccount {
    account_id: i64,
    balance_minor: i64,
    floor_minor: i64,
    version: i64,
    changed: bool,
}

/// The version a new transfer reaches in one commit: 1 initiated, 2 final.
const FINAL_VERSION_NEW: i32 = 2;

/// Column arrays for the set-based inserts, one entry per new transfer.
#[derive(Default)]
struct NewRows {
    transfer_id: Vec<uuid::Uuid>,
    kind: Vec<&'static str>,
    sender_id: Vec<i64>,
    receiver_id: Vec<i64>,
    debit_account_id: Vec<Option<i64>>,
    credit_account_id: Vec<Option<i64>>,
    currency: Vec<&'static str>,
    amount_minor: Vec<Option<i64>>,
    original_amount_minor: Vec<Option<i64>>,
    original_currency: Vec<Option<&'static str>>,
    description: Vec<Option<String>>,
    status: Vec<&'static str>,
    reason_code: Vec<Option<String>>,
    reason_message: Vec<Option<String>>,
    fingerprint: Vec<Vec<u8>>,
    created_at: Vec<DateTime<Utc>>,
    entry_transfer_id: Vec<uuid::Uuid>,
    entry_account_id: Vec<i64>,
    entry_amount_minor: Vec<i64>,
    conflict_transfer_id: Vec<uuid::Uuid>,
    conflict_fingerprint: Vec<Vec<u8>>,
    /// JSON arrays of plugin decisions (NULL when no plugin ran).
    decisions: Vec<Option<String>>,
    client_id: Vec<Option<uuid::Uuid>>,
}

/// What the ledger already holds for an id (or what this batch decided for it).
#[derive(Clone)]
struct Known {
    fingerprint: Vec<u8>,
    status: Status,
    version: i32,
    reason: Option<Reason>,
    committed_at: DateTime<Utc>,
}

type AccountKey = (i64, &'static str);

/// (transfer_id, fingerprint, status, status_version, reason_code, reason_message, committed_at)
type ExistingRow = (uuid::Uuid, Vec<u8>, String, i32, Option<String>, Option<String>, Option<DateTime<Utc>>);

impl Ledger {
    /// Commits a batch atomically and returns one outcome per item, in order.
    /// Rejections are outcomes; an `Err` means nothing of the batch was written.
    // Failures are WARN: the caller retries them and logs what it does about them.
    #[instrument(name = "ledger.commit", skip_all, fields(batch_size = items.len()), err(level = tracing::Level::WARN))]
    pub async fn commit_batch(&self, items: &[CommitItem]) -> Result<BatchResult, LedgerError> {
        let mut attempt = 1;
        loop {
            match self.try_commit_batch(items).await {
                Err(e) if e.is_retryable_conflict() && attempt < COMMIT_ATTEMPTS_MAX => {
                    warn!(attempt, error = %e, "Batch lost a race; retrying it.");
                    tokio::time::sleep(Duration::from_millis(COMMIT_RETRY_BACKOFF_MS * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_commit_batch(&self, items: &[CommitItem]) -> Result<BatchResult, LedgerError> {
        if items.is_empty() {
            return Ok(BatchResult::default());
        }
        let mut tx = self.pool.begin().await?;

        // 1. Lock every account the batch names, in ascending id order.
        let mut owners = Vec::with_capacity(items.len() * 2);
        let mut currencies = Vec::with_capacity(items.len() * 2);
        for item in items {
            let s = &item.submission;
            for owner in [s.sender, s.receiver] {
                owners.push(owner.get());
                currencies.push(s.currency.code());
            }
        }
        let rows: Vec<(i64, i64, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT account_id, owner_id, currency, balance_minor, floor_minor, version
               FROM accounts
              WHERE (owner_id, currency) IN (SELECT * FROM UNNEST($1::bigint[], $2::text[]))
              ORDER BY account_id
                FOR UPDATE",
        )
        .bind(&owners)
        .bind(&currencies)
        .fetch_all(&mut *tx)
        .await?;
        let mut accounts: HashMap<AccountKey, LockedAccount> = HashMap::with_capacity(rows.len());
        for (account_id, owner_id, currency, balance_minor, floor_minor, version) in rows {
            let currency = Currency::parse(&currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            let account = LockedAccount { account_id, balance_minor, floor_minor, version, changed: false };
            accounts.insert((owner_id, currency.code()), account);
        }

        // 2. Which ids does the ledger already hold? Read after the locks, so a
        //    concurrent batch holding the same accounts has committed by now.
        let ids: Vec<uuid::Uuid> = items.iter().map(|i| i.submission.id.0).collect();
        let existing: Vec<ExistingRow> = sqlx::query_as(
            "SELECT transfer_id, fingerprint, status, status_version, reason_code, reason_message, committed_at
               FROM transfers WHERE transfer_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut known: HashMap<uuid::Uuid, Known> = HashMap::with_capacity(existing.len());
        for (id, fingerprint, status, version, code, message, committed_at) in existing {
            let status = Status::parse(&status).ok_or_else(|| LedgerError::Corrupt(format!("status {status:?}")))?;
            let reason = code.map(|code| Reason { code, message: message.unwrap_or_default() });
            let committed_at = committed_at.unwrap_or_else(Utc::now);
            known.insert(id, Known { fingerprint, status, version, reason, committed_at });
        }

        // 3. Decide each transfer in order.
        let now = Utc::now();
        let mut rows = NewRows::default();
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let s = &item.submission;
            let fingerprint = s.fingerprint().to_vec();
            match known.entry(s.id.0) {
                Entry::Occupied(seen) => {
                    let seen = seen.get();
                    let disposition = if seen.fingerprint == fingerprint {
                        Disposition::Duplicate
                    } else {
                        rows.conflict_transfer_id.push(s.id.0);
                        rows.conflict_fingerprint.push(fingerprint);
                        Disposition::Conflict
                    };
                    outcomes.push(Committed {
                        transfer_id: s.id,
                        status: seen.status,
                        version: seen.version,
                        reason: seen.reason.clone(),
                        disposition,
                        committed_at: seen.committed_at,
                    });
                }
                Entry::Vacant(slot) => {
                    let (status, reason, amount_minor, debit, credit) = decide(item, &mut accounts, &mut rows);
                    rows.transfer_id.push(s.id.0);
                    rows.kind.push(s.kind.as_str());
                    rows.sender_id.push(s.sender.get());
                    rows.receiver_id.push(s.receiver.get());
                    rows.debit_account_id.push(debit);
                    rows.credit_account_id.push(credit);
                    rows.currency.push(s.currency.code());
                    rows.amount_minor.push(amount_minor);
                    rows.original_amount_minor.push(s.original().map(|m| m.amount.minor()));
                    rows.original_currency.push(s.original().map(|m| m.currency.code()));
                    rows.description.push(item.description.clone());
                    rows.status.push(status.as_str());
                    rows.reason_code.push(reason.as_ref().map(|r| r.code.clone()));
                    rows.reason_message.push(reason.as_ref().map(|r| r.message.clone()));
                    rows.fingerprint.push(fingerprint.clone());
                    rows.created_at.push(s.submitted_at);
                    rows.decisions.push(decisions_json(&item.decisions));
                    rows.client_id.push(s.client_id.map(|c| c.0));
                    slot.insert(Known { fingerprint, status, version: FINAL_VERSION_NEW, reason: reason.clone(), committed_at: now });
                    outcomes.push(Committed {
                        transfer_id: s.id,
                        status,
                        version: FINAL_VERSION_NEW,
                        reason,
                        disposition: Disposition::New,
                        committed_at: now,
                    });
                }
            }
        }

        // 4. Write, one statement per table.
        write_rows(&mut tx, &rows, now).await?;
        let mut balances = Vec::new();
        let (mut ids, mut new_balances, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for ((owner_id, currency), account) in &accounts {
            if account.changed {
                ids.push(account.account_id);
                new_balances.push(account.balance_minor);
                versions.push(account.version);
                balances.push(AccountView {
                    account_id: account.account_id,
                    floor_minor: account.floor_minor,
                    owner_id: OwnerId::from_stored(*owner_id),
                    currency: Currency::parse(currency).expect("parsed above"),
                    balance_minor: account.balance_minor,
                    version: account.version,
                });
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE accounts AS a SET balance_minor = u.balance_minor, version = u.version
                   FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(account_id, balance_minor, version)
                  WHERE a.account_id = u.account_id",
            )
            .bind(&ids)
            .bind(&new_balances)
            .bind(&versions)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BatchResult { outcomes, balances })
    }
}

/// Decides one new transfer against the locked balances, applying it to
/// them (and to the entry rows) when it completes.
fn decide(
    item: &CommitItem,
    accounts: &mut HashMap<AccountKey, LockedAccount>,
    rows: &mut NewRows,
) -> (Status, Option<Reason>, Option<i64>, Option<i64>, Option<i64>) {
    let s = &item.submission;
    let debit_key = (s.sender.get(), s.currency.code());
    let credit_key = (s.receiver.get(), s.currency.code());
    let debit_id = accounts.get(&debit_key).map(|a| a.account_id);
    let credit_id = accounts.get(&credit_key).map(|a| a.account_id);
    let amount = match &item.verdict {
        Verdict::Apply(amount) => *amount,
        Verdict::Reject(reason) => {
            return (Status::Rejected, Some(reason.clone()), item.recorded_amount().map(Amount::minor), debit_id, credit_id);
        }
        Verdict::Fail(reason) => {
            return (Status::Failed, Some(reason.clone()), item.recorded_amount().map(Amount::minor), debit_id, credit_id);
        }
    };
    let reject = |r: Rejection| (Status::Rejected, Some(r.to_reason()), Some(amount.minor()), debit_id, credit_id);
    if s.sender == s.receiver {
        return reject(Rejection::AccountsMustBeDifferent);
    }
    let (Some(debit_id), Some(credit_id)) = (debit_id, credit_id) else {
        let missing = if debit_id.is_none() { s.sender } else { s.receiver };
        return reject(Rejection::AccountNotFound { owner_id: missing.get(), currency: s.currency.code().to_owned() });
    };
    let debit = &accounts[&debit_key];
    let Some(new_debit) = debit.balance_minor.checked_sub(amount.minor()).filter(|b| *b >= debit.floor_minor) else {
        return reject(Rejection::InsufficientFunds);
    };
    let credit = &accounts[&credit_key];
    let Some(new_credit) = credit.balance_minor.checked_add(amount.minor()) else {
        return reject(Rejection::BalanceOverflow);
    };
    for (key, balance) in [(debit_key, new_debit), (credit_key, new_credit)] {
        let account = accounts.get_mut(&key).expect("looked up above");
        account.balance_minor = balance;
        account.version += 1;
        account.changed = true;
    }
    rows.entry_transfer_id.extend([s.id.0, s.id.0]);
    rows.entry_account_id.extend([debit_id, credit_id]);
    rows.entry_amount_minor.extend([-amount.minor(), amount.minor()]);
    (Status::Completed, None, Some(amount.minor()), Some(debit_id), Some(credit_id))
}

/// The decision record as stored: a JSON array, or NULL when no plugin ran.
fn decisions_json(decisions: &[Decision]) -> Option<String> {
    if decisions.is_empty() {
        return None;
    }
    Some(serde_json::to_string(decisions).expect("decisions serialise"))
}

async fn write_rows(tx: &mut sqlx::PgConnection, rows: &NewRows, now: DateTime<Utc>) -> Result<(), LedgerError> {
    if !rows.transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO transfers (transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id,
                                    currency, amount_minor, original_amount_minor, original_currency, description,
                                    status, status_version, reason_code, reason_message, fingerprint, created_at, committed_at, decisions,
                                    client_id)
             SELECT t.transfer_id, t.kind, t.sender_id, t.receiver_id, t.debit_account_id, t.credit_account_id,
                    t.currency, t.amount_minor, t.original_amount_minor, t.original_currency, t.description,
                    t.status, $17, t.reason_code, t.reason_message, t.fingerprint, t.created_at, $18, t.decisions::jsonb,
                    t.client_id
               FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                           $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
                           $12::text[], $13::text[], $14::text[], $15::bytea[], $16::timestamptz[], $19::text[], $20::uuid[])
                    AS t(transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id,
                         currency, amount_minor, original_amount_minor, original_currency, description,
                         status, reason_code, reason_message, fingerprint, created_at, decisions, client_id)",
        )
        .bind(&rows.transfer_id)
        .bind(&rows.kind)
        .bind(&rows.sender_id)
        .bind(&rows.receiver_id)
        .bind(&rows.debit_account_id)
        .bind(&rows.credit_account_id)
        .bind(&rows.currency)
        .bind(&rows.amount_minor)
        .bind(&rows.original_amount_minor)
        .bind(&rows.original_currency)
        .bind(&rows.description)
        .bind(&rows.status)
        .bind(&rows.reason_code)
        .bind(&rows.reason_message)
        .bind(&rows.fingerprint)
        .bind(&rows.created_at)
        .bind(FINAL_VERSION_NEW)
        .bind(now)
        .bind(&rows.decisions)
        .bind(&rows.client_id)
        .execute(&mut *tx)
        .await?;

        // Version 1 'initiated' at submission time, version 2 the final status now.
        sqlx::query(
            "INSERT INTO transfer_status_history (transfer_id, version, status, reason_code, reason_message, at)
             SELECT t.transfer_id, 1, 'initiated', NULL, NULL, t.created_at
               FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(transfer_id, created_at)
             UNION ALL
             SELECT t.transfer_id, 2, t.status, t.reason_code, t.reason_message, $6
               FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[]) AS t(transfer_id, status, reason_code, reason_message)",
        )
        .bind(&rows.transfer_id)
        .bind(&rows.created_at)
        .bind(&rows.status)
        .bind(&rows.reason_code)
        .bind(&rows.reason_message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if !rows.entry_transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (transfer_id, account_id, amount_minor)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[])",
        )
        .bind(&rows.entry_transfer_id)
        .bind(&rows.entry_account_id)
        .bind(&rows.entry_amount_minor)
        .execute(&mut *tx)
        .await?;
    }
    if !rows.conflict_transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO transfer_conflicts (transfer_id, fingerprint, at)
             SELECT t.transfer_id, t.fingerprint, $3 FROM UNNEST($1::uuid[], $2::bytea[]) AS t(transfer_id, fingerprint)",
        )
        .bind(&rows.conflict_transfer_id)
        .bind(&rows.conflict_fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
